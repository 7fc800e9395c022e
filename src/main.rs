//! `graphscaler`: the command line, without libtorch (see the library's documentation).

fn main() {
    graphscaler::main_with(None);
}
