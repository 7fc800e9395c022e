//! Records where libtorch is (an rpath), so that the graphscaler binary and its tests run
//! without LD_LIBRARY_PATH. torch-sys reports the directory it linked through its `links`
//! metadata.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.to_string_lossy());
    }
}
