//! The contracts between graphscaler's stages.
//!
//! Every stage speaks in these types. The twin produces [`ClusterObservation`]s from its
//! simulated state; the scrapers will produce the very same types from a real cluster (Prometheus,
//! Kiali, the Kubernetes API, exporters). Policies read observations and emit [`Action`]s; whoever
//! applies an action answers with an [`ActionOutcome`].
//!
//! Each field names the real signal it stands for, so that a reader can check what a policy sees
//! against what a real cluster exposes. Units are in the field names (`_cores`, `_bytes`, `_ms`,
//! `_s`, `_rps`). Observations become [`Snapshot`]s of the heterogeneous graph, the encoders'
//! input, through one featurization ([`snapshot`]).
//!
//! ```
//! use graphscaler_schemas::{Action, ActionKind};
//! let a = Action::new("frontend", ActionKind::ChangeReplicas { delta: 2 });
//! assert_eq!(a.service, "frontend");
//! ```

pub mod action;
#[cfg(feature = "arrow")]
pub mod arrow;
pub mod defaults;
pub mod events;
pub mod obs;
pub mod snapshot;
pub mod time;

pub use action::{Action, ActionKind, ActionOutcome, CpuResize, Refusal};
pub use events::{AuditRecord, Envelope, Keyed, PodChange, TelemetryEvent, Topic};
pub use obs::{
    CallEdgeObs, ClusterObservation, GlobalObs, NodeObs, PodObs, PodPhase, ServiceObs, StatefulObs,
};
pub use snapshot::{EdgeSet, Snapshot, SnapshotError, TemporalWindow};

/// Version of the observation and action types. Bumped whenever a field changes meaning, is
/// added or is removed; checkpoints and stored snapshots record it.
pub const SCHEMA_VERSION: u32 = 2;
