//! The pipeline's stages and how they are wired:
//!
//! ```text
//! scrape ──telemetry.*──▶ graph ──graph.snapshots──▶ policy ──actions──▶ actuate ──audit──▶
//!   ▲  (Kubernetes, Prometheus, Kiali)                                     │
//!   └──────────────────────── the cluster (or the twin) ◀──────────────────┘
//! ```
//!
//! Each stage is an async loop over a [`transport::Subscriber`] and a [`transport::Publisher`]:
//! Kafka when a bootstrap is configured (each stage its own process), or the in-process
//! [`transport::MemoryBus`] ([`run`], the README's main job). A stage commits a message only after
//! what it caused has been published, so a restart resumes without losing anything, and on the
//! in-process bus the loop can run in lock step with the twin.

pub mod collect;
pub mod kube_io;
pub mod metrics;
pub mod run;
pub mod stage;
pub mod transport;

pub use metrics::Metrics;
pub use stage::{Clock, SnapshotPolicy};
