//! The differential dataflow: entities in, per-relation graph facts out.
//!
//! ```text
//! entities ─┬─ services ──┬─ left join stateful ── featurize μ ────────────────▶ Service(name, μ)
//!           ├─ stateful ──┘
//!           ├─ nodes ─────── featurize ν ──────────────────────────────────────▶ Node(name, ν)
//!           ├─ calls ─────── semijoin services (source) ── semijoin (dest) ────▶ Call(s, d, attr)
//!           ├─ pods ──────── (service, node) ── count ── semijoin services, nodes ▶ RunsOn(s, n, pods)
//!           └─ global ───────────────────────────────────────────────────────────▶ Global(g)
//! ```
//!
//! Features leave the dataflow as `f32` bit patterns, so that outputs stay `Ord` and compare
//! exactly with the in-process featurization.

use differential_dataflow::VecCollection;
use graphscaler_schemas::snapshot::{node_features, service_features};
use serde::{Deserialize, Serialize};

use crate::ingest::{Entity, Id};
use crate::rows;

/// One fact of the maintained graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    /// μ of a service (`f32` bit patterns, one per
    /// [`graphscaler_schemas::snapshot::SERVICE_FEATURES`]), then its spec and ready replicas,
    /// CPU request, whether a metric is missing (1) and CPU limit, at the positions
    /// [`service_fact`] names.
    Service(Id, Vec<u32>),
    /// ν of a node.
    Node(Id, Vec<u32>),
    /// A `calls` edge between two present services, with [rps, p95, error rate].
    Call(Id, Id, Vec<u32>),
    /// A `runs_on` edge (service, node) with its pod count.
    RunsOn(Id, Id, u32),
    /// The global scalars.
    Global(Vec<u32>),
}

/// Positions in a [`Fact::Service`] row after its features.
pub mod service_fact {
    use graphscaler_schemas::snapshot::SERVICE_FEATURES;

    /// `replicas_spec`.
    pub const REPLICAS_SPEC: usize = SERVICE_FEATURES.len();
    /// `replicas_ready`.
    pub const REPLICAS_READY: usize = REPLICAS_SPEC + 1;
    /// `cpu_request_cores` (`f32` bits).
    pub const CPU_REQUEST_CORES: usize = REPLICAS_SPEC + 2;
    /// 1 when a metric is missing.
    pub const MISSING: usize = REPLICAS_SPEC + 3;
    /// `cpu_limit_cores` (`f32` bits).
    pub const CPU_LIMIT_CORES: usize = REPLICAS_SPEC + 4;
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Builds the graph dataflow over a collection of entities.
pub fn graph<'scope>(
    entities: VecCollection<'scope, u64, Entity, isize>,
) -> VecCollection<'scope, u64, Fact, isize> {
    let services = entities.clone().flat_map(|e| match e {
        Entity::Service(k, r) => Some((k, r)),
        _ => None,
    });
    let stateful = entities.clone().flat_map(|e| match e {
        Entity::Stateful(k, r) => Some((k, r)),
        _ => None,
    });
    let nodes = entities.clone().flat_map(|e| match e {
        Entity::Node(k, r) => Some((k, r)),
        _ => None,
    });
    let calls = entities.clone().flat_map(|e| match e {
        Entity::Call(s, d, r) => Some((s, (d, r))),
        _ => None,
    });
    let pods = entities.clone().flat_map(|e| match e {
        Entity::Pod(_, s, Some(n)) => Some((s, n)),
        _ => None,
    });
    let global = entities.flat_map(|e| match e {
        Entity::Global(r) => {
            let g = rows::global_back(&r);
            Some(Fact::Global(bits(&[
                g.cluster_cpu_utilization as f32,
                g.slo_violation_rate as f32,
                g.entry_p95_ms as f32,
                g.entry_error_rate as f32,
                g.entry_rps as f32,
            ])))
        }
        _ => None,
    });

    let service_keys = services.clone().map(|(k, _)| k);
    let node_keys = nodes.clone().map(|(k, _)| k);

    // μ: services left-joined with their stateful figures.
    let with_store = services
        .clone()
        .join(stateful.clone())
        .map(|(k, (s, st))| (k, s, Some(st)));
    let without = services
        .antijoin(stateful.map(|(k, _)| k))
        .map(|(k, s)| (k, s, None));
    let service_facts = with_store.concat(without).map(|(k, s, st)| {
        let obs = rows::service_back("", &s);
        let store = st.map(|r| rows::stateful_back("", &r));
        let mu = service_features(&obs, store.as_ref());
        let mut x = bits(&mu);
        // In the order of the positions in [`service_fact`].
        x.extend([
            obs.replicas_spec,
            obs.replicas_ready,
            (obs.cpu_request_cores as f32).to_bits(),
            u32::from(!obs.is_complete()),
            (obs.cpu_limit_cores as f32).to_bits(),
        ]);
        Fact::Service(k, x)
    });

    let node_facts = nodes.map(|(k, r)| {
        let nu = node_features(&rows::node_back("", &r));
        Fact::Node(k, bits(&nu))
    });

    // calls between services that are present.
    let call_facts = calls
        .semijoin(service_keys.clone())
        .map(|(s, (d, r))| (d, (s, r)))
        .semijoin(service_keys.clone())
        .map(|(d, (s, r))| {
            let e = rows::call_back("", "", &r);
            Fact::Call(
                s,
                d,
                bits(&[e.rps as f32, e.p95_ms as f32, e.error_rate as f32]),
            )
        });

    // runs_on: pods per (service, node), for present services and nodes.
    let runs_on = pods
        .count()
        .map(|((s, n), c)| (s, (n, c)))
        .semijoin(service_keys)
        .map(|(s, (n, c))| (n, (s, c)))
        .semijoin(node_keys)
        .map(|(n, (s, c))| Fact::RunsOn(s, n, c as u32));

    service_facts
        .concat(node_facts)
        .concat(call_facts)
        .concat(runs_on)
        .concat(global)
}
