//! Learning in tch. This crate is the only one that links libtorch. Its settings ([`config`]) and
//! the reward ([`reward`]) are `graphscaler-learn-config`'s, which builds without libtorch (the
//! command line reads `[learn]` through it).
//!
//! * [`graph`] — a [`Snapshot`](graphscaler_schemas::Snapshot) as tensors per node type and
//!   relation;
//! * [`gat`], [`gcn`] — graph layers with PyTorch Geometric's semantics and parameter names
//!   (`GATConv`, `GCNConv`), and [`hetero`] — one layer per relation summed per destination type,
//!   as PyG's `HeteroConv(aggr="sum")`. Parity with PyG 2.8.1 is tested on fixtures written by
//!   `scripts/parity_fixtures.py`.

pub mod gat;
pub mod gcn;
pub mod graph;
pub mod hetero;
pub mod policy;
pub mod scatter;

pub use graph::{HeteroGraph, Relation, NODE, SERVICE};
pub use tch;
pub mod a2c;
pub mod agent;
pub mod checkpoint;
pub use graphscaler_learn_config::{config, reward};
pub mod decide;
pub mod dysat;
pub mod encoder;
pub mod envs;
pub mod factory;
pub mod gcn_encoder;
pub mod graph_sac;
pub mod imitate;
pub mod offline;
pub mod online;
pub mod optim;
pub mod ppo;
pub mod resume;
pub mod rollout;
pub mod sac;
pub mod serve;
pub mod tensorboard;
pub mod tgat;
pub mod train;
