//! Lossless encodings of observation payloads as rows of `u64` (f64 bits, counts, flags), so
//! that they can live in differential collections (which need `Ord`), and decode back to the
//! very values the scrapers sent: the graph job featurizes exactly what the in-process path
//! featurizes.

use graphscaler_schemas::{CallEdgeObs, GlobalObs, NodeObs, ServiceObs, StatefulObs};

/// An encoded payload.
pub type Row = Vec<u64>;

fn f(x: f64) -> u64 {
    x.to_bits()
}

fn g(r: &[u64], i: usize) -> f64 {
    f64::from_bits(r.get(i).copied().unwrap_or(0))
}

fn u(r: &[u64], i: usize) -> u32 {
    r.get(i).copied().unwrap_or(0) as u32
}

/// [`ServiceObs`] without its name (the key).
pub fn service(s: &ServiceObs) -> Row {
    vec![
        u64::from(s.replicas_spec),
        u64::from(s.replicas_ready),
        u64::from(s.replicas_unready),
        f(s.cpu_request_cores),
        f(s.cpu_limit_cores),
        f(s.mem_request_bytes),
        f(s.mem_limit_bytes),
        f(s.cpu_usage_cores),
        f(s.mem_working_set_bytes),
        f(s.rps),
        f(s.p50_ms),
        f(s.p95_ms),
        f(s.p99_ms),
        f(s.error_rate),
        u64::from(s.stateful),
        s.missing_mask(),
    ]
}

/// Inverse of [`service`].
pub fn service_back(name: &str, r: &[u64]) -> ServiceObs {
    ServiceObs {
        name: name.into(),
        replicas_spec: u(r, 0),
        replicas_ready: u(r, 1),
        replicas_unready: u(r, 2),
        cpu_request_cores: g(r, 3),
        cpu_limit_cores: g(r, 4),
        mem_request_bytes: g(r, 5),
        mem_limit_bytes: g(r, 6),
        cpu_usage_cores: g(r, 7),
        mem_working_set_bytes: g(r, 8),
        rps: g(r, 9),
        p50_ms: g(r, 10),
        p95_ms: g(r, 11),
        p99_ms: g(r, 12),
        error_rate: g(r, 13),
        stateful: r.get(14).copied().unwrap_or(0) != 0,
        missing: ServiceObs::missing_from_mask(r.get(15).copied().unwrap_or(0)),
    }
}

/// [`NodeObs`] without its name; the type and CPU model travel as the model id only.
pub fn node(n: &NodeObs) -> Row {
    vec![
        u64::from(n.cpu_model_id),
        f(n.allocatable_cpu_cores),
        f(n.allocatable_mem_bytes),
        f(n.requested_cpu_cores),
        f(n.requested_mem_bytes),
        f(n.cpu_usage_cores),
    ]
}

/// Inverse of [`node`] (names of the type and model are not features and come back empty).
pub fn node_back(name: &str, r: &[u64]) -> NodeObs {
    NodeObs {
        name: name.into(),
        node_type: String::new(),
        cpu_model: String::new(),
        cpu_model_id: u(r, 0),
        allocatable_cpu_cores: g(r, 1),
        allocatable_mem_bytes: g(r, 2),
        requested_cpu_cores: g(r, 3),
        requested_mem_bytes: g(r, 4),
        cpu_usage_cores: g(r, 5),
    }
}

/// [`StatefulObs`] without its service.
pub fn stateful(s: &StatefulObs) -> Row {
    vec![
        u64::from(s.connected_replicas),
        f(s.max_replica_lag_s),
        f(s.mean_replica_lag_s),
        f(s.hit_ratio),
    ]
}

/// Inverse of [`stateful`].
pub fn stateful_back(service: &str, r: &[u64]) -> StatefulObs {
    StatefulObs {
        service: service.into(),
        connected_replicas: u(r, 0),
        max_replica_lag_s: g(r, 1),
        mean_replica_lag_s: g(r, 2),
        hit_ratio: g(r, 3),
    }
}

/// [`CallEdgeObs`] without its ends.
pub fn call(e: &CallEdgeObs) -> Row {
    vec![f(e.rps), f(e.p95_ms), f(e.error_rate)]
}

/// Inverse of [`call`].
pub fn call_back(source: &str, destination: &str, r: &[u64]) -> CallEdgeObs {
    CallEdgeObs {
        source: source.into(),
        destination: destination.into(),
        rps: g(r, 0),
        p95_ms: g(r, 1),
        error_rate: g(r, 2),
    }
}

/// [`GlobalObs`].
pub fn global(x: &GlobalObs) -> Row {
    vec![
        f(x.cluster_cpu_utilization),
        f(x.slo_violation_rate),
        f(x.entry_p95_ms),
        f(x.entry_error_rate),
        f(x.entry_rps),
    ]
}

/// Inverse of [`global`].
pub fn global_back(r: &[u64]) -> GlobalObs {
    GlobalObs {
        cluster_cpu_utilization: g(r, 0),
        slo_violation_rate: g(r, 1),
        entry_p95_ms: g(r, 2),
        entry_error_rate: g(r, 3),
        entry_rps: g(r, 4),
    }
}
