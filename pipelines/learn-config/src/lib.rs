//! What learning is told and rewarded by, without libtorch: the `[learn]` settings ([`config`])
//! and the reward ([`reward`]). `graphscaler-learn` re-exports both; the command line reads
//! `[learn]` through this crate, so a command that runs no model never loads libtorch.

pub mod config;
pub mod reward;
