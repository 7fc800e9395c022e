//! Heterogeneous graph snapshots: what the encoders read.
//!
//! Node types and relations follow PyG's `HeteroData` naming, as `(source, relation, destination)`
//! triples:
//!
//! | node type | features |
//! |---|---|
//! | `service` | μᵢ = [cpu %, mem %, p95 ms, stateful flag, RUE, replica lag s, hit ratio] |
//! | `node` | νₖ = [free cpu cores, free memory GiB, cpu model id] |
//!
//! | relation | attributes |
//! |---|---|
//! | `(service, calls, service)` | [rps, p95 ms, error rate] |
//! | `(service, runs_on, node)` | [pods of the service on the node] |
//! | `(node, hosts, service)` | the reverse of `runs_on`, same attribute |
//!
//! plus the global scalars [cluster cpu utilisation, SLO violation rate] that go to the policy
//! directly. Services and nodes are ordered by name, so the same cluster state gives the same
//! snapshot whichever path built it: [`Snapshot::from_observation`] (training, in process) or
//! the streaming graph job (serving). Both use the feature functions of this module.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::obs::{ClusterObservation, NodeObs, ServiceObs, StatefulObs};

/// Features per service.
pub const SERVICE_FEATURES: [&str; 7] = [
    "cpu_pct",
    "mem_pct",
    "p95_ms",
    "stateful",
    "rue",
    "replica_lag_s",
    "hit_ratio",
];
/// Features per node.
pub const NODE_FEATURES: [&str; 3] = ["free_cpu_cores", "free_mem_gib", "cpu_model_id"];
/// Attributes per `calls` edge.
pub const CALL_FEATURES: [&str; 3] = ["rps", "p95_ms", "error_rate"];
/// Global scalars.
pub const GLOBAL_FEATURES: [&str; 2] = ["cluster_cpu_utilization", "slo_violation_rate"];

/// Positions in a row of [`SERVICE_FEATURES`], by name (a test holds them to the list).
pub mod service_feature {
    /// `cpu_pct`.
    pub const CPU_PCT: usize = 0;
    /// `mem_pct`.
    pub const MEM_PCT: usize = 1;
    /// `p95_ms`.
    pub const P95_MS: usize = 2;
    /// `stateful`.
    pub const STATEFUL: usize = 3;
    /// `rue`.
    pub const RUE: usize = 4;
    /// `replica_lag_s`.
    pub const REPLICA_LAG_S: usize = 5;
    /// `hit_ratio`.
    pub const HIT_RATIO: usize = 6;
    /// The row's width.
    pub const COUNT: usize = super::SERVICE_FEATURES.len();
}

/// Positions in a row of [`NODE_FEATURES`], by name.
pub mod node_feature {
    /// `free_cpu_cores`.
    pub const FREE_CPU_CORES: usize = 0;
    /// `free_mem_gib`.
    pub const FREE_MEM_GIB: usize = 1;
    /// `cpu_model_id`.
    pub const CPU_MODEL_ID: usize = 2;
    /// The row's width.
    pub const COUNT: usize = super::NODE_FEATURES.len();
}

/// Positions in a row of [`CALL_FEATURES`], by name.
pub mod call_feature {
    /// `rps`.
    pub const RPS: usize = 0;
    /// `p95_ms`.
    pub const P95_MS: usize = 1;
    /// `error_rate`.
    pub const ERROR_RATE: usize = 2;
    /// The row's width.
    pub const COUNT: usize = super::CALL_FEATURES.len();
}

/// Positions in [`GLOBAL_FEATURES`], by name.
pub mod global_feature {
    /// `cluster_cpu_utilization`.
    pub const CLUSTER_CPU_UTILIZATION: usize = 0;
    /// `slo_violation_rate`.
    pub const SLO_VIOLATION_RATE: usize = 1;
    /// The row's width.
    pub const COUNT: usize = super::GLOBAL_FEATURES.len();
}

/// The edges of one relation, in COO form (PyG's `edge_index` and `edge_attr`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EdgeSet {
    /// Source node indices.
    pub src: Vec<u32>,
    /// Destination node indices.
    pub dst: Vec<u32>,
    /// One attribute row per edge.
    pub attr: Vec<Vec<f32>>,
}

impl EdgeSet {
    /// Number of edges.
    pub fn len(&self) -> usize {
        self.src.len()
    }
    /// Whether there is no edge.
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }
    fn push(&mut self, s: usize, d: usize, attr: Vec<f32>) {
        self.src.push(s as u32);
        self.dst.push(d as u32);
        self.attr.push(attr);
    }
}

/// One windowed snapshot of the heterogeneous graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// [`crate::SCHEMA_VERSION`] of the producer.
    pub schema_version: u32,
    /// End of the window, seconds.
    pub time_s: f64,
    /// Window length, seconds.
    pub window_s: f64,
    /// Service names, sorted; index = service node id.
    pub services: Vec<String>,
    /// μ per service ([`SERVICE_FEATURES`]).
    pub service_x: Vec<[f32; 7]>,
    /// Desired replicas per service (the deployment's `spec.replicas`): not a feature, but what
    /// a policy needs to act in replicas and to mask moves past its bounds.
    pub replicas_spec: Vec<u32>,
    /// Ready replicas per service.
    pub replicas_ready: Vec<u32>,
    /// CPU request per pod per service, cores: not a feature, but what the reward's Slack and
    /// Overshoot weigh by and what the capacity mask needs. Empty in snapshots written before
    /// the field existed (unknown, not zero).
    #[serde(default)]
    pub cpu_request_cores: Vec<f32>,
    /// Node names, sorted; index = machine node id.
    pub nodes: Vec<String>,
    /// ν per node ([`NODE_FEATURES`]).
    pub node_x: Vec<[f32; 3]>,
    /// `(service, calls, service)`.
    pub calls: EdgeSet,
    /// `(service, runs_on, node)`.
    pub runs_on: EdgeSet,
    /// `(node, hosts, service)`.
    pub hosts: EdgeSet,
    /// [`GLOBAL_FEATURES`].
    pub global: [f32; 2],
    /// The entry service's p95 latency (ms) and error rate in this window: what the SLO is
    /// judged on, and the reward's SLO_vio. Not a feature. `None` where unknown (snapshots
    /// written before the field existed).
    #[serde(default)]
    pub entry: Option<[f32; 2]>,
    /// The request rate into the entry service in this window, rps: what a replay of the
    /// recorded load drives the twin with (`graphscaler train --from`'s fine-tuning). Not a
    /// feature. `None` where unknown (with `entry`, and in snapshots written before the field
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_rps: Option<f32>,
    /// CPU limit per pod per service, cores: what an absolute CPU action starts from. Empty in
    /// snapshots written before the field existed (unknown, not zero).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_limit_cores: Vec<f32>,
    /// Per service, whether its features are unknown (a metric the scrape found missing): its
    /// μ row holds zeros that mean nothing, and every policy holds the service. Empty: every
    /// service is known (and snapshots written before the field existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_missing: Vec<bool>,
    /// Whether the global scalars are unknown (nothing refreshed them): `global` then holds
    /// zeros that mean nothing, and `entry` is `None`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global_missing: bool,
}

/// Why a snapshot is not fit for a policy: its parts disagree, an index is out of range or a
/// value is not finite. Such a snapshot is a poison message: it goes to the dead-letter topic
/// with this reason, and no policy sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// A per-service or per-node list has the wrong length.
    #[error("`{field}` has {got} entries for {expected} {of}")]
    Length {
        /// The list.
        field: &'static str,
        /// Its length.
        got: usize,
        /// The length it must have.
        expected: usize,
        /// What it is per (`services`, `nodes`, `edges`).
        of: &'static str,
    },
    /// An edge names a node that is not there.
    #[error("edge {edge} of `{relation}` has {end} index {index}, but there are {count}")]
    Index {
        /// The relation.
        relation: &'static str,
        /// The edge's position.
        edge: usize,
        /// `source` or `destination`.
        end: &'static str,
        /// The index.
        index: u32,
        /// How many nodes of that kind there are.
        count: usize,
    },
    /// An edge attribute row of the wrong width.
    #[error("edge {edge} of `{relation}` has {got} attributes, not {expected}")]
    Width {
        /// The relation.
        relation: &'static str,
        /// The edge's position.
        edge: usize,
        /// Its width.
        got: usize,
        /// The width the relation has.
        expected: usize,
    },
    /// A value is NaN or infinite (or a time or window is not positive).
    #[error("`{field}` of {what} is {value}")]
    NotFinite {
        /// The field.
        field: &'static str,
        /// Which service, node, edge or the snapshot itself.
        what: String,
        /// The value.
        value: f64,
    },
    /// A replica count no cluster has (above [`MAX_REPLICAS`]).
    #[error("`{field}` of service `{service}` is {value}, above the {max} a snapshot may carry")]
    Implausible {
        /// `replicas_spec` or `replicas_ready`.
        field: &'static str,
        /// The service.
        service: String,
        /// The count.
        value: u32,
        /// [`MAX_REPLICAS`].
        max: u32,
    },
    /// A service or node name appears twice.
    #[error("{kind} `{name}` appears twice")]
    Duplicate {
        /// `service` or `node`.
        kind: &'static str,
        /// The name.
        name: String,
    },
}

/// The most replicas of one service a snapshot may carry: a third of the 150,000 pods
/// Kubernetes supports in a whole cluster. A count above it is damage, not a cluster, and is
/// refused before a policy (the HPA reasons pod by pod) tries to hold that many.
pub const MAX_REPLICAS: u32 = 50_000;

impl Snapshot {
    /// Whether service `i`'s features are known (see [`Snapshot::service_missing`]).
    pub fn service_known(&self, i: usize) -> bool {
        !self.service_missing.get(i).copied().unwrap_or(false)
    }

    /// Checks that the parts agree before any policy reads them: every per-service list as long
    /// as `services` (the optional ones empty or as long), `node_x` as long as `nodes`, every
    /// edge's indices in range and its attributes of the relation's width, names unique, and
    /// every number finite, replica counts at most [`MAX_REPLICAS`].
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let n_s = self.services.len();
        let n_n = self.nodes.len();
        let len = |field, got: usize, expected, of, optional: bool| {
            if got == expected || (optional && got == 0) {
                Ok(())
            } else {
                Err(SnapshotError::Length {
                    field,
                    got,
                    expected,
                    of,
                })
            }
        };
        len("service_x", self.service_x.len(), n_s, "services", false)?;
        len(
            "replicas_spec",
            self.replicas_spec.len(),
            n_s,
            "services",
            false,
        )?;
        len(
            "replicas_ready",
            self.replicas_ready.len(),
            n_s,
            "services",
            false,
        )?;
        len(
            "cpu_request_cores",
            self.cpu_request_cores.len(),
            n_s,
            "services",
            true,
        )?;
        len(
            "cpu_limit_cores",
            self.cpu_limit_cores.len(),
            n_s,
            "services",
            true,
        )?;
        len(
            "service_missing",
            self.service_missing.len(),
            n_s,
            "services",
            true,
        )?;
        len("node_x", self.node_x.len(), n_n, "nodes", false)?;
        for (field, counts) in [
            ("replicas_spec", &self.replicas_spec),
            ("replicas_ready", &self.replicas_ready),
        ] {
            if let Some((i, &value)) = counts.iter().enumerate().find(|(_, &c)| c > MAX_REPLICAS) {
                return Err(SnapshotError::Implausible {
                    field,
                    service: self.services[i].clone(),
                    value,
                    max: MAX_REPLICAS,
                });
            }
        }
        for (kind, names) in [("service", &self.services), ("node", &self.nodes)] {
            let mut seen = std::collections::HashSet::with_capacity(names.len());
            for n in names {
                if !seen.insert(n) {
                    return Err(SnapshotError::Duplicate {
                        kind,
                        name: n.clone(),
                    });
                }
            }
        }
        let finite = |field: &'static str, what: &dyn Fn() -> String, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(SnapshotError::NotFinite {
                    field,
                    what: what(),
                    value: v,
                })
            }
        };
        let me = || "the snapshot".to_string();
        finite("time_s", &me, self.time_s)?;
        finite("window_s", &me, self.window_s)?;
        if self.window_s <= 0.0 {
            return Err(SnapshotError::NotFinite {
                field: "window_s",
                what: me(),
                value: self.window_s,
            });
        }
        for (i, x) in self.service_x.iter().enumerate() {
            for (f, v) in SERVICE_FEATURES.iter().zip(x) {
                finite(
                    f,
                    &|| format!("service `{}`", self.services[i]),
                    f64::from(*v),
                )?;
            }
        }
        for (field, xs) in [
            ("cpu_request_cores", &self.cpu_request_cores),
            ("cpu_limit_cores", &self.cpu_limit_cores),
        ] {
            for (i, v) in xs.iter().enumerate() {
                finite(
                    field,
                    &|| format!("service `{}`", self.services[i]),
                    f64::from(*v),
                )?;
            }
        }
        for (i, x) in self.node_x.iter().enumerate() {
            for (f, v) in NODE_FEATURES.iter().zip(x) {
                finite(f, &|| format!("node `{}`", self.nodes[i]), f64::from(*v))?;
            }
        }
        for (f, v) in GLOBAL_FEATURES.iter().zip(&self.global) {
            finite(f, &me, f64::from(*v))?;
        }
        if let Some(e) = self.entry {
            finite("entry.p95_ms", &me, f64::from(e[0]))?;
            finite("entry.error_rate", &me, f64::from(e[1]))?;
        }
        if let Some(r) = self.entry_rps {
            finite("entry_rps", &me, f64::from(r))?;
        }
        for (relation, set, n_src, n_dst, width) in [
            ("calls", &self.calls, n_s, n_s, CALL_FEATURES.len()),
            ("runs_on", &self.runs_on, n_s, n_n, 1),
            ("hosts", &self.hosts, n_n, n_s, 1),
        ] {
            len(relation, set.dst.len(), set.src.len(), "edges", false)?;
            len(relation, set.attr.len(), set.src.len(), "edges", false)?;
            for (edge, ((&s, &d), a)) in set.src.iter().zip(&set.dst).zip(&set.attr).enumerate() {
                for (end, index, count) in [("source", s, n_src), ("destination", d, n_dst)] {
                    if index as usize >= count {
                        return Err(SnapshotError::Index {
                            relation,
                            edge,
                            end,
                            index,
                            count,
                        });
                    }
                }
                if a.len() != width {
                    return Err(SnapshotError::Width {
                        relation,
                        edge,
                        got: a.len(),
                        expected: width,
                    });
                }
                for v in a {
                    finite(
                        "attr",
                        &|| format!("edge {edge} of `{relation}`"),
                        f64::from(*v),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// μ of one service. `stateful` carries the store's replica figures when it has any.
pub fn service_features(s: &ServiceObs, stateful: Option<&StatefulObs>) -> [f32; 7] {
    let ready = s.replicas_ready.max(1) as f64;
    let cpu_pct = if s.cpu_limit_cores > 0.0 {
        100.0 * s.cpu_usage_cores / (s.cpu_limit_cores * ready)
    } else {
        0.0
    };
    let mem_pct = if s.mem_limit_bytes > 0.0 {
        100.0 * s.mem_working_set_bytes / (s.mem_limit_bytes * ready)
    } else {
        0.0
    };
    [
        cpu_pct as f32,
        mem_pct as f32,
        s.p95_ms as f32,
        f32::from(u8::from(s.stateful)),
        s.rue() as f32,
        stateful.map_or(0.0, |x| x.max_replica_lag_s) as f32,
        stateful.map_or(1.0, |x| x.hit_ratio) as f32,
    ]
}

/// ν of one node.
pub fn node_features(n: &NodeObs) -> [f32; 3] {
    [
        n.free_cpu_cores() as f32,
        (n.free_mem_bytes() / (1024.0 * 1024.0 * 1024.0)) as f32,
        n.cpu_model_id as f32,
    ]
}

impl Snapshot {
    /// The snapshot of one observation: the in-process path (training, evaluation).
    pub fn from_observation(obs: &ClusterObservation) -> Self {
        let mut services: Vec<&ServiceObs> = obs.services.iter().collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let mut nodes: Vec<&NodeObs> = obs.nodes.iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let s_idx = |name: &str| {
            services
                .binary_search_by(|s| s.name.as_str().cmp(name))
                .ok()
        };
        let n_idx = |name: &str| nodes.binary_search_by(|n| n.name.as_str().cmp(name)).ok();

        let service_x = services
            .iter()
            .map(|s| service_features(s, obs.stateful.iter().find(|x| x.service == s.name)))
            .collect();
        let node_x = nodes.iter().map(|n| node_features(n)).collect();

        let mut calls: Vec<(usize, usize, Vec<f32>)> = obs
            .edges
            .iter()
            .filter_map(|e| {
                Some((
                    s_idx(&e.source)?,
                    s_idx(&e.destination)?,
                    vec![e.rps as f32, e.p95_ms as f32, e.error_rate as f32],
                ))
            })
            .collect();
        calls.sort_by_key(|c| (c.0, c.1));
        let mut call_set = EdgeSet::default();
        for (s, d, a) in calls {
            call_set.push(s, d, a);
        }

        let mut placements: std::collections::BTreeMap<(usize, usize), u32> = Default::default();
        for p in &obs.pods {
            if let (Some(s), Some(n)) = (s_idx(&p.service), p.node.as_deref().and_then(n_idx)) {
                *placements.entry((s, n)).or_default() += 1;
            }
        }
        let mut runs_on = EdgeSet::default();
        let mut hosts = EdgeSet::default();
        for (&(s, n), &count) in &placements {
            runs_on.push(s, n, vec![count as f32]);
        }
        let mut rev: Vec<_> = placements.iter().map(|(&(s, n), &c)| (n, s, c)).collect();
        rev.sort_unstable();
        for (n, s, count) in rev {
            hosts.push(n, s, vec![count as f32]);
        }

        Snapshot {
            schema_version: crate::SCHEMA_VERSION,
            time_s: obs.time_s,
            window_s: obs.window_s,
            services: services.iter().map(|s| s.name.clone()).collect(),
            service_x,
            replicas_spec: services.iter().map(|s| s.replicas_spec).collect(),
            replicas_ready: services.iter().map(|s| s.replicas_ready).collect(),
            cpu_request_cores: services
                .iter()
                .map(|s| s.cpu_request_cores as f32)
                .collect(),
            nodes: nodes.iter().map(|n| n.name.clone()).collect(),
            node_x,
            calls: call_set,
            runs_on,
            hosts,
            global: [
                obs.global.cluster_cpu_utilization as f32,
                obs.global.slo_violation_rate as f32,
            ],
            entry: Some([
                obs.global.entry_p95_ms as f32,
                obs.global.entry_error_rate as f32,
            ]),
            entry_rps: Some(obs.global.entry_rps as f32),
            cpu_limit_cores: services.iter().map(|s| s.cpu_limit_cores as f32).collect(),
            service_missing: if services.iter().all(|s| s.is_complete()) {
                vec![]
            } else {
                services.iter().map(|s| !s.is_complete()).collect()
            },
            global_missing: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::{CallEdgeObs, GlobalObs, PodObs};

    fn svc(name: &str, usage: f64, ready: u32, stateful: bool) -> ServiceObs {
        ServiceObs {
            name: name.into(),
            replicas_spec: ready,
            replicas_ready: ready,
            replicas_unready: 0,
            cpu_request_cores: 0.1,
            cpu_limit_cores: 0.2,
            mem_request_bytes: 64.0 * 1048576.0,
            mem_limit_bytes: 128.0 * 1048576.0,
            cpu_usage_cores: usage,
            mem_working_set_bytes: 64.0 * 1048576.0 * ready as f64,
            rps: 10.0,
            p50_ms: 5.0,
            p95_ms: 20.0,
            p99_ms: 40.0,
            error_rate: 0.0,
            stateful,
            missing: vec![],
        }
    }

    fn pod(name: &str, service: &str, node: Option<&str>) -> PodObs {
        PodObs::placed(name, service, node, 0.1)
    }

    pub(super) fn small() -> ClusterObservation {
        let node = |name: &str, id: u32| NodeObs {
            name: name.into(),
            node_type: "t".into(),
            cpu_model: "m".into(),
            cpu_model_id: id,
            allocatable_cpu_cores: 4.0,
            allocatable_mem_bytes: 8.0 * 1073741824.0,
            requested_cpu_cores: 1.0,
            requested_mem_bytes: 2.0 * 1073741824.0,
            cpu_usage_cores: 0.5,
        };
        ClusterObservation {
            time_s: 30.0,
            window_s: 15.0,
            // Out of order on purpose: snapshots sort by name.
            services: vec![svc("web", 0.3, 2, false), svc("db", 0.1, 1, true)],
            edges: vec![CallEdgeObs {
                source: "web".into(),
                destination: "db".into(),
                rps: 7.0,
                p95_ms: 3.0,
                error_rate: 0.5,
            }],
            nodes: vec![node("n2", 1), node("n1", 0)],
            pods: vec![
                pod("web-a", "web", Some("n2")),
                pod("web-b", "web", Some("n2")),
                pod("db-a", "db", Some("n1")),
                pod("web-c", "web", None),
            ],
            stateful: vec![StatefulObs {
                service: "db".into(),
                connected_replicas: 1,
                max_replica_lag_s: 2.5,
                mean_replica_lag_s: 2.5,
                hit_ratio: 0.8,
            }],
            global: GlobalObs {
                cluster_cpu_utilization: 0.25,
                slo_violation_rate: 0.1,
                entry_p95_ms: 20.0,
                entry_error_rate: 0.0,
                entry_rps: 10.0,
            },
        }
    }

    #[test]
    fn features_and_edges_by_hand() {
        let obs = small();
        let s = Snapshot::from_observation(&obs);
        assert_eq!(s.services, vec!["db", "web"]);
        assert_eq!(s.nodes, vec!["n1", "n2"]);
        // web: 0.3 cores of 2 × 0.2 → 75 %; working set 2 × 64 MiB of 2 × 128 MiB → 50 %;
        // RUE 0.3 / (2 × 0.1) = 1.5; not stateful: lag 0, hit ratio 1.
        assert_eq!(s.service_x[1], [75.0, 50.0, 20.0, 0.0, 1.5, 0.0, 1.0]);
        // db: 50 %, 50 %, stateful, RUE 1.0, lag 2.5, hit ratio 0.8.
        assert_eq!(s.service_x[0], [50.0, 50.0, 20.0, 1.0, 1.0, 2.5, 0.8]);
        assert_eq!(s.node_x[1], [3.0, 6.0, 1.0]);
        assert_eq!(
            (s.calls.src.clone(), s.calls.dst.clone()),
            (vec![1], vec![0])
        );
        assert_eq!(s.calls.attr, vec![vec![7.0, 3.0, 0.5]]);
        // runs_on: db→n1 (1 pod), web→n2 (2 pods; the Pending pod has no edge); hosts reversed.
        assert_eq!(
            (s.runs_on.src.clone(), s.runs_on.dst.clone()),
            (vec![0, 1], vec![0, 1])
        );
        assert_eq!(s.runs_on.attr, vec![vec![1.0], vec![2.0]]);
        assert_eq!(
            (s.hosts.src.clone(), s.hosts.dst.clone()),
            (vec![0, 1], vec![0, 1])
        );
        assert_eq!(s.global, [0.25, 0.1]);
        // JSON round trip.
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}

/// The temporal window of the last `T` snapshots that DySAT reads, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalWindow {
    capacity: usize,
    snapshots: std::collections::VecDeque<Snapshot>,
}

impl TemporalWindow {
    /// A window holding up to `t` snapshots (at least one).
    pub fn new(t: usize) -> Self {
        Self {
            capacity: t.max(1),
            snapshots: std::collections::VecDeque::with_capacity(t.max(1)),
        }
    }

    /// Adds the newest snapshot, dropping the oldest when full. Snapshots must arrive in time
    /// order; an older or equal one is refused (the error is the newest time held).
    pub fn push(&mut self, s: Snapshot) -> Result<(), f64> {
        if let Some(last) = self.snapshots.back().filter(|last| s.time_s <= last.time_s) {
            return Err(last.time_s);
        }
        if self.snapshots.len() == self.capacity {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back(s);
        Ok(())
    }

    /// The snapshots, oldest first.
    pub fn snapshots(&self) -> impl Iterator<Item = &Snapshot> {
        self.snapshots.iter()
    }

    /// How many it holds.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// Whether it holds `T`.
    pub fn is_full(&self) -> bool {
        self.snapshots.len() == self.capacity
    }
}

#[cfg(test)]
mod feature_position_tests {
    use super::*;

    #[test]
    fn named_positions_are_the_lists_positions() {
        let at = |list: &[&str], name: &str| list.iter().position(|f| *f == name);
        use service_feature as s;
        for (name, i) in [
            ("cpu_pct", s::CPU_PCT),
            ("mem_pct", s::MEM_PCT),
            ("p95_ms", s::P95_MS),
            ("stateful", s::STATEFUL),
            ("rue", s::RUE),
            ("replica_lag_s", s::REPLICA_LAG_S),
            ("hit_ratio", s::HIT_RATIO),
        ] {
            assert_eq!(at(&SERVICE_FEATURES, name), Some(i), "{name}");
        }
        use node_feature as n;
        for (name, i) in [
            ("free_cpu_cores", n::FREE_CPU_CORES),
            ("free_mem_gib", n::FREE_MEM_GIB),
            ("cpu_model_id", n::CPU_MODEL_ID),
        ] {
            assert_eq!(at(&NODE_FEATURES, name), Some(i), "{name}");
        }
        use call_feature as c;
        for (name, i) in [
            ("rps", c::RPS),
            ("p95_ms", c::P95_MS),
            ("error_rate", c::ERROR_RATE),
        ] {
            assert_eq!(at(&CALL_FEATURES, name), Some(i), "{name}");
        }
        use global_feature as g;
        for (name, i) in [
            ("cluster_cpu_utilization", g::CLUSTER_CPU_UTILIZATION),
            ("slo_violation_rate", g::SLO_VIOLATION_RATE),
        ] {
            assert_eq!(at(&GLOBAL_FEATURES, name), Some(i), "{name}");
        }
    }
}

#[cfg(test)]
mod validate_tests {
    use super::tests::small;
    use super::*;

    #[test]
    fn validation_names_what_disagrees() {
        let good = Snapshot::from_observation(&small());
        assert_eq!(good.validate(), Ok(()));
        let bad = |f: &dyn Fn(&mut Snapshot)| {
            let mut s = good.clone();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        // 2 services, 1 feature row (the poison message that wedged the policy stage).
        assert_eq!(
            bad(&|s| {
                s.service_x.pop();
            }),
            "`service_x` has 1 entries for 2 services"
        );
        assert_eq!(
            bad(&|s| s.replicas_spec.clear()),
            "`replicas_spec` has 0 entries for 2 services"
        );
        assert_eq!(
            bad(&|s| s.calls.dst[0] = 7),
            "edge 0 of `calls` has destination index 7, but there are 2"
        );
        assert_eq!(
            bad(&|s| s.calls.attr[0].truncate(1)),
            "edge 0 of `calls` has 1 attributes, not 3"
        );
        assert_eq!(
            bad(&|s| s.runs_on.src[1] = 9),
            "edge 1 of `runs_on` has source index 9, but there are 2"
        );
        assert_eq!(
            bad(&|s| s.service_x[1][2] = f32::NAN),
            "`p95_ms` of service `web` is NaN"
        );
        assert_eq!(
            bad(&|s| s.global[0] = f32::INFINITY),
            "`cluster_cpu_utilization` of the snapshot is inf"
        );
        assert_eq!(
            bad(&|s| s.services[1] = "db".into()),
            "service `db` appears twice"
        );
        assert_eq!(
            bad(&|s| s.service_missing = vec![true]),
            "`service_missing` has 1 entries for 2 services"
        );
        // A replica count no cluster has: the HPA would hold a pod per replica.
        assert_eq!(
            bad(&|s| s.replicas_spec[0] = u32::MAX),
            "`replicas_spec` of service `db` is 4294967295, above the 50000 a snapshot may carry"
        );
        assert_eq!(
            bad(&|s| s.replicas_ready[1] = MAX_REPLICAS + 1),
            "`replicas_ready` of service `web` is 50001, above the 50000 a snapshot may carry"
        );
        // The optional lists may be empty (older snapshots).
        let mut old = good.clone();
        old.cpu_request_cores.clear();
        old.cpu_limit_cores.clear();
        assert_eq!(old.validate(), Ok(()));
    }

    #[test]
    fn a_service_with_a_missing_metric_is_unknown() {
        let mut obs = small();
        obs.services[0].missing = vec!["cpu_usage_cores".into()];
        let s = Snapshot::from_observation(&obs);
        // Sorted by name: db, web; web lacks its CPU.
        assert_eq!(s.service_missing, [false, true]);
        assert!(s.service_known(0) && !s.service_known(1));
        let json = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // Complete observations keep the field out of the JSON.
        let full = serde_json::to_string(&Snapshot::from_observation(&small())).unwrap();
        assert!(!full.contains("service_missing"));
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    fn at(t: f64) -> Snapshot {
        Snapshot {
            schema_version: 1,
            time_s: t,
            window_s: 30.0,
            services: vec![],
            service_x: vec![],
            replicas_spec: vec![],
            replicas_ready: vec![],
            cpu_request_cores: vec![],
            nodes: vec![],
            node_x: vec![],
            calls: EdgeSet::default(),
            runs_on: EdgeSet::default(),
            hosts: EdgeSet::default(),
            global: [0.0; 2],
            entry: None,
            entry_rps: None,
            cpu_limit_cores: vec![],
            service_missing: vec![],
            global_missing: false,
        }
    }

    #[test]
    fn keeps_the_last_t_in_order() {
        let mut w = TemporalWindow::new(3);
        for t in [30.0, 60.0, 90.0, 120.0] {
            w.push(at(t)).unwrap();
        }
        assert!(w.is_full());
        let times: Vec<f64> = w.snapshots().map(|s| s.time_s).collect();
        assert_eq!(times, vec![60.0, 90.0, 120.0]);
        assert!(w.push(at(120.0)).is_err(), "a repeated time is refused");
        assert!(w.push(at(10.0)).is_err(), "an older one is refused");
        assert_eq!(w.len(), 3);
    }
}
