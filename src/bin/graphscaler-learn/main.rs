//! `graphscaler-learn`: the `graphscaler` command line with the learned policies and training
//! (it links libtorch). `graphscaler` re-executes it for the commands that need them; it can be
//! run directly with the same arguments.

mod train;

use anyhow::Result;
use graphscaler::config::Config;
use graphscaler::{Learning, TrainArgs};
use graphscaler_policy::Learned;
use graphscaler_twin::Topology;

struct Torch;

impl Learning for Torch {
    fn policies(&self, cfg: &Config, topology: Option<&Topology>) -> Box<dyn Learned> {
        Box::new(train::checkpoints(cfg, topology))
    }

    fn train(&self, cfg: &Config, args: TrainArgs) -> Result<()> {
        train::run_train(cfg, args)
    }
}

fn main() {
    graphscaler::main_with(Some(&Torch));
}
