//! The evaluation harness: campaigns of policies on the twin ([`runner`]), the per-run metrics
//! ([`metrics`]), statistics across replays ([`stats`]) and their reports: terminal tables, CSV,
//! Parquet and PNG plots ([`report`], [`plot`]). The policies themselves are
//! `graphscaler_policy`'s.

pub mod error;
pub mod journal;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod runner;
pub mod stats;
pub mod sweep;

pub use error::{EvalError, Result};
pub use metrics::{MetricSettings, RunMetrics};
pub use runner::{Campaign, EvalConfig, RunResult, Setup};
