//! The scrape stage: the cluster's interfaces read into typed telemetry events.
//!
//! * [`stage::scrape`] is the one scrape loop: a [`collect::Collector`] pass every interval
//!   (Kubernetes through [`k8s`], PromQL, Kiali), its events published on the bus.
//! * [`target`] is one HTTP target (client, timeout, token, CA) and one scrape of it.
//!
//! Each target has one pure parse function, tested on real response files:
//!
//! * [`parse::kiali`] — the Kiali graph API → call edges (rps, error rate, p95);
//! * [`parse::prometheus`] — the Prometheus HTTP API (`/api/v1/query`, `query_range`) → samples,
//!   rejecting NaN and ±Inf values with a count instead of passing them on;
//! * [`parse::kubernetes`] — `NodeList` and `PodList` → node capacity and pod placement, with
//!   Kubernetes quantities parsed exactly.
//!
//! Every parser reports malformed input as a [`ParseError`] that names the target and the place
//! (line and column for bad JSON, a JSON path for a bad field); nothing it cannot read becomes a
//! value.

pub mod collect;
pub mod error;
pub mod istio;
pub mod k8s;
pub mod parse;
pub mod stage;
pub mod target;

pub use error::ParseError;

/// Items a parser read, and what it rejected (one reason per rejected item).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    /// Items read.
    pub items: Vec<T>,
    /// Items left out, with why.
    pub rejected: Vec<String>,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Self {
            items: vec![],
            rejected: vec![],
        }
    }
}

/// Reads a real response file from `tests/fixtures/` (tests only).
#[cfg(test)]
pub(crate) fn fixture(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
