//! The cluster twin: a fast, seeded simulation of a microservice application on a small,
//! heterogeneous Kubernetes cluster.
//!
//! It is graphscaler's embedded default, the environment for training and evaluation, and (in
//! the pipeline) a stand-in for a real cluster. It reads any topology in the format of
//! `data/topologies/online-boutique.json` ([`Topology`]), drives it with a Locust-like user model
//! under a load [`Shape`], takes [`Action`](graphscaler_schemas::Action)s and emits
//! [`ClusterObservation`](graphscaler_schemas::ClusterObservation)s — the types the scrapers
//! produce from a real cluster — with a [`TickTruth`] beside them for metrics.
//!
//! ```
//! use graphscaler_twin::{Shape, Topology, Twin, TwinConfig, SloConfig};
//! let topo = Topology::synthetic(20, 1);
//! let mut twin = Twin::new(topo, TwinConfig::default(), SloConfig::default(), Shape::Peak, 300.0, 7).unwrap();
//! while !twin.done() {
//!     let (obs, truth) = twin.advance();
//!     assert_eq!(obs.services.len(), truth.services.len());
//! }
//! ```

pub mod config;
pub mod error;
pub mod fit;
pub mod generate;
pub mod load;
pub mod queue;
pub mod sim;
pub mod topology;

pub use config::{SloConfig, TwinConfig, DEFAULT_TOML};
pub use error::{Result, TwinError};
pub use load::{Shape, Trace};
pub use sim::{EdgeTruth, PodTruth, ResizeError, RouteTruth, ServiceTruth, TickTruth, Twin};
pub use topology::Topology;
