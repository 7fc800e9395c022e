//! The twin behind a real cluster's interfaces, over HTTP on loopback:
//!
//! * `/metrics` — a Prometheus exposition with cAdvisor, kube-state-metrics, Istio standard
//!   metrics (including the `istio_request_duration_milliseconds` histogram) and redis-exporter
//!   series ([`exposition`]);
//! * `/api/namespaces/graph` — the Kiali graph API in Kiali's response format ([`kiali`]);
//! * `/api/v1/nodes`, `/api/v1/namespaces/{ns}/pods`, `/apis/apps/v1/namespaces/{ns}/deployments`
//!   and the `scale` subresource, with PATCH of replicas, CPU limits and node affinity ([`kube`]);
//!   `?watch=true` on the lists streams watch events ([`watch`]);
//! * `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases` — Leases for leader election: get,
//!   create and replace with optimistic concurrency ([`lease`]).
//!
//! A clock advances the twin one observation period every `tick_every` of wall time.

pub mod exposition;
pub mod kiali;
pub mod kube;
pub mod lease;
pub mod server;
pub mod state;
pub mod watch;

pub use server::{router, serve};
pub use state::{LiveTwin, Shared};
