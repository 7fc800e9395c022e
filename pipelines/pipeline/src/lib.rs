//! The whole pipeline in one process: the four stage crates wired on the in-process bus, with the
//! twin as the cluster ([`run`], the README's main job, `graphscaler run`).
//!
//! ```text
//! scrape ──telemetry.*──▶ graph ──graph.snapshots──▶ policy ──actions──▶ actuate ──audit──▶
//!   ▲  (Kubernetes, Prometheus, Kiali)                                     │
//!   └──────────────────────── the cluster (or the twin) ◀──────────────────┘
//! ```
//!
//! Each stage is an async loop in its own crate — `graphscaler_scrape::stage`,
//! `graphscaler_graph::stage`, `graphscaler_policy::stage`, `graphscaler_actuate::stage` — over a
//! `graphscaler_bus::transport::Subscriber` and `Publisher`: Kafka when a bootstrap is configured
//! (each stage its own process), or the in-process `MemoryBus` here. A stage commits a message
//! only after what it caused has been published, so a restart resumes without losing anything,
//! and on the in-process bus the loop can run in lock step with the twin.

pub mod run;
pub mod served;
