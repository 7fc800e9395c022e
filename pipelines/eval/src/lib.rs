//! The evaluation harness: the Kubernetes HPA baseline ([`hpa`]), the per-run metrics
//! ([`metrics`]), statistics across replays ([`stats`]), campaigns on the twin ([`runner`]) and
//! their reports: terminal tables, CSV, Parquet and PNG plots ([`report`], [`plot`]).

pub mod error;
pub mod hpa;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod runner;
pub mod stats;
pub mod sweep;

pub use error::{EvalError, Result};
pub use hpa::{Hpa, HpaConfig, HpaController};
pub use metrics::{MetricSettings, RunMetrics};
pub use runner::{Campaign, EvalConfig, Policy, PolicySpec, RunResult, Setup};
