//! The arguments of `graphscaler train` (the training itself is the learning build's).

use std::path::PathBuf;

use clap::Args;

use crate::config::parse_duration;

/// `graphscaler train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// gat, gcn, dysat, tgat or mlp.
    #[arg(long, default_value = "gat")]
    pub encoder: String,
    /// ppo, a2c or sac.
    #[arg(long, default_value = "ppo")]
    pub algo: String,
    /// `mix` (the four shapes), `bursty-mix` (the four, `burst` and the shipped Azure
    /// conversation trace), `recorded` (the entry request rates stored in the `--from`
    /// snapshots, replayed) or comma-separated scenarios. Default: `recorded` when fine-tuning
    /// after `--from`, otherwise `mix`.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Decisions to train for, over all environments.
    #[arg(long, default_value_t = 200_000)]
    pub steps: usize,
    /// Seed (model initialisation, sampling and the environments' runs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Environments (default: learn.train.num_envs).
    #[arg(long)]
    pub envs: Option<usize>,
    /// Episode length (default: learn.train.episode_s).
    #[arg(long, value_parser = parse_duration)]
    pub episode: Option<f64>,
    /// Checkpoint to write, without extension: NAME.safetensors, NAME.json, NAME.csv (default: <learn.checkpoint_dir>/<encoder>-<algo>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Topology file (default: twin.topology). Given more than once (`--topology A --topology
    /// B ...`), the training runs on a distribution of topologies: environment `i` runs topology
    /// `i mod N` (so `--envs` at least N), every batch padded to the largest; graph encoders
    /// under PPO or A2C, the topologies' node types the same list (docs/transfer.md).
    #[arg(long, value_name = "FILE")]
    pub topology: Vec<PathBuf>,
    /// Threads libtorch may use.
    #[arg(long, default_value_t = 1)]
    pub torch_threads: i32,
    /// Start from this checkpoint's weights (the same encoder, sizes and cluster; PPO/A2C):
    /// a second stage of training, e.g. under another reward.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The actor reads the graph alone, not the global scalars (cluster CPU, SLO-violation
    /// rate) the critic reads: the ablation of seed §3.1's state.
    #[arg(long)]
    pub no_actor_global: bool,
    /// Bootstrap from stored transitions first (store files, directories or globs, as
    /// `replay --snapshots` reads them): behaviour cloning of the recorded decisions with the
    /// critic fitted on the recorded rewards, written as `<out>-bc`; then `--steps` decisions of
    /// fine-tuning on the twin from it (`--steps 0`: the clone is the result, written as
    /// `<out>`). PPO or A2C.
    #[arg(long, num_args = 1.., value_name = "FILE_OR_DIR")]
    pub from: Vec<PathBuf>,
    /// Continue the training that `graphscaler train` with the same arguments stopped (a time
    /// limit, a signal, a machine that went away): from the state it saved in `<out>.resume/`
    /// (SAC's with its replay buffer).
    #[arg(long)]
    pub resume: bool,
    /// Save the training's state (`<out>.resume/`) every this many updates (SAC: logged
    /// updates, one per 512 decisions), besides when it stops early; 0: only then.
    #[arg(long, default_value_t = 10)]
    pub save_every: usize,
    /// Stop, having saved the state, after the update during which this much time has passed
    /// (e.g. `50m`); `--resume` continues.
    #[arg(long, value_parser = parse_duration)]
    pub time_limit: Option<f64>,
    /// Also keep the model every this many decisions as a candidate checkpoint,
    /// `<out>-at<decisions>` (.safetensors + .json), to choose one on validation seeds; 0: none.
    #[arg(long, default_value_t = 0)]
    pub keep_every: usize,
    /// Passes over the stored rows (default: learn.bootstrap.epochs).
    #[arg(long)]
    pub bc_epochs: Option<usize>,
    /// Also write the diagnostics as TensorBoard event files under this directory
    /// (`tensorboard --logdir DIR`).
    #[arg(long)]
    pub tensorboard: Option<PathBuf>,
}
