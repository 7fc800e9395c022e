//! Observations: what a cluster exposes, as typed values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything observed about the cluster at one scrape instant.
///
/// The twin emits one per observation tick (15 s by default, the usual Prometheus scrape
/// interval and the HPA's sync period). Rates and latencies are over the tick that just ended,
/// as `rate(...[15s])` and `histogram_quantile(0.95, rate(...[15s]))` would give them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterObservation {
    /// Seconds since the start of the run (the twin) or since the Unix epoch (a real cluster).
    pub time_s: f64,
    /// Length of the window the rates and latencies cover, seconds.
    pub window_s: f64,
    /// One entry per workload (Deployment), in topology order.
    pub services: Vec<ServiceObs>,
    /// One entry per observed service→service call edge with traffic in the window.
    pub edges: Vec<CallEdgeObs>,
    /// One entry per Kubernetes node.
    pub nodes: Vec<NodeObs>,
    /// One entry per pod that exists (any phase).
    pub pods: Vec<PodObs>,
    /// One entry per stateful store with replicas (redis exporter).
    pub stateful: Vec<StatefulObs>,
    /// Cluster-wide scalars, fed to the RL policy directly.
    pub global: GlobalObs,
}

impl ClusterObservation {
    /// The observation of service `name`, if present.
    pub fn service(&self, name: &str) -> Option<&ServiceObs> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The pods of service `name`.
    pub fn pods_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PodObs> + 'a {
        self.pods.iter().filter(move |p| p.service == name)
    }
}

/// The metrics of a [`ServiceObs`] that a scrape can find missing, in the order of
/// [`ServiceObs::missing_mask`]'s bits.
pub const SERVICE_METRICS: [&str; 7] = [
    "cpu_usage_cores",
    "mem_working_set_bytes",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "error_rate",
];

/// One workload (a Deployment and the Kubernetes Service in front of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceObs {
    /// Workload name (`deployment` label of kube-state-metrics, `destination_workload` in Istio).
    pub name: String,
    /// `kube_deployment_spec_replicas`.
    pub replicas_spec: u32,
    /// `kube_deployment_status_replicas_ready`.
    pub replicas_ready: u32,
    /// Pods of the deployment that exist but are not ready (Pending or starting).
    pub replicas_unready: u32,
    /// Per-container CPU request, cores (`kube_pod_container_resource_requests{resource="cpu"}`).
    pub cpu_request_cores: f64,
    /// Per-container CPU limit, cores (`container_spec_cpu_quota / container_spec_cpu_period`).
    pub cpu_limit_cores: f64,
    /// Per-container memory request, bytes.
    pub mem_request_bytes: f64,
    /// Per-container memory limit, bytes.
    pub mem_limit_bytes: f64,
    /// Σ over the service's pods of `rate(container_cpu_usage_seconds_total[w])`, cores.
    pub cpu_usage_cores: f64,
    /// Σ over the service's pods of `container_memory_working_set_bytes`.
    pub mem_working_set_bytes: f64,
    /// Inbound request rate, `rate(istio_requests_total{destination_workload=...}[w])`.
    pub rps: f64,
    /// Inbound p50 latency, ms (`istio_request_duration_milliseconds`).
    pub p50_ms: f64,
    /// Inbound p95 latency, ms.
    pub p95_ms: f64,
    /// Inbound p99 latency, ms.
    pub p99_ms: f64,
    /// Share of inbound requests answered with an error (5xx / gRPC status ≠ OK), in [0, 1].
    pub error_rate: f64,
    /// Whether the workload keeps state (topology flag).
    pub stateful: bool,
    /// The metrics the scrape found no sample for (an absent series, an empty result, a NaN
    /// sample), by field name (`cpu_usage_cores`, `rps`, …). Their fields hold 0, which means
    /// nothing: a service with a missing metric is *unknown* in the snapshot and every policy
    /// holds it (as upstream's HPA does on missing metrics). Empty: everything was observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl ServiceObs {
    /// Whether every metric was observed (no [`ServiceObs::missing`] entry).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// [`ServiceObs::missing`] as bits over [`SERVICE_METRICS`]; a name outside that list sets
    /// bit 63, so that it still reads as missing.
    pub fn missing_mask(&self) -> u64 {
        self.missing.iter().fold(0, |m, name| {
            m | SERVICE_METRICS
                .iter()
                .position(|x| x == name)
                .map_or(1 << 63, |i| 1 << i)
        })
    }

    /// The names of a [`ServiceObs::missing_mask`].
    pub fn missing_from_mask(mask: u64) -> Vec<String> {
        let mut out: Vec<String> = SERVICE_METRICS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| (*n).to_string())
            .collect();
        if mask & (1 << 63) != 0 {
            out.push("other".into());
        }
        out
    }

    /// CPU used ÷ CPU requested over ready pods ("RUE", resource utilisation efficiency).
    pub fn rue(&self) -> f64 {
        let req = self.cpu_request_cores * self.replicas_ready.max(1) as f64;
        if req > 0.0 {
            self.cpu_usage_cores / req
        } else {
            0.0
        }
    }
}

/// A service→service call edge, as Kiali's workload graph reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallEdgeObs {
    /// Calling workload.
    pub source: String,
    /// Called workload.
    pub destination: String,
    /// Requests per second on the edge (`traffic.rates.http` or `grpc`, or `tcp` bytes for TCP).
    pub rps: f64,
    /// p95 response time, ms (Kiali `responseTime` appender).
    pub p95_ms: f64,
    /// Share of requests on the edge that failed, in [0, 1].
    pub error_rate: f64,
}

/// A Kubernetes node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeObs {
    /// `metadata.name`.
    pub name: String,
    /// The node type (`node.kubernetes.io/instance-type` label).
    pub node_type: String,
    /// CPU model (`feature.node.kubernetes.io/cpu-model.*` from node-feature-discovery).
    pub cpu_model: String,
    /// Small integer id of the CPU model, stable for a given topology (feature for learning).
    pub cpu_model_id: u32,
    /// `status.allocatable.cpu`, cores.
    pub allocatable_cpu_cores: f64,
    /// `status.allocatable.memory`, bytes.
    pub allocatable_mem_bytes: f64,
    /// Σ CPU requests of pods bound to the node, cores.
    pub requested_cpu_cores: f64,
    /// Σ memory requests of pods bound to the node, bytes.
    pub requested_mem_bytes: f64,
    /// CPU actually used on the node, cores (`node_cpu_seconds_total` non-idle rate).
    pub cpu_usage_cores: f64,
}

impl NodeObs {
    /// Allocatable CPU not yet requested, cores (what the scheduler can still place).
    pub fn free_cpu_cores(&self) -> f64 {
        (self.allocatable_cpu_cores - self.requested_cpu_cores).max(0.0)
    }
    /// Allocatable memory not yet requested, bytes.
    pub fn free_mem_bytes(&self) -> f64 {
        (self.allocatable_mem_bytes - self.requested_mem_bytes).max(0.0)
    }
}

/// Pod lifecycle phase, as in `status.phase`, with `Running` split by readiness elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodPhase {
    /// Not yet bound to a node (nothing fits) or bound and pulling/starting.
    Pending,
    /// Containers started; see [`PodObs::ready`].
    Running,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodObs {
    /// `metadata.name`.
    pub name: String,
    /// Owning workload.
    pub service: String,
    /// `spec.nodeName`; `None` while unschedulable.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: PodPhase,
    /// The `Ready` condition.
    pub ready: bool,
    /// `status.startTime`, seconds (run clock); `None` until bound.
    pub start_time_s: Option<f64>,
    /// `lastTransitionTime` of the `Ready` condition, seconds.
    pub ready_transition_s: Option<f64>,
    /// CPU request, cores.
    pub cpu_request_cores: f64,
    /// CPU limit of the workload's own containers (sidecars injected at admission excluded),
    /// summed over those that have one, cores; `None` when unknown or none has one.
    #[serde(default)]
    pub cpu_limit_cores: Option<f64>,
    /// metrics.k8s.io CPU usage over the last metrics window, cores; `None` while the metrics
    /// pipeline has no sample for the pod (as for a pod that just started).
    pub cpu_usage_cores: Option<f64>,
    /// Timestamp of the CPU sample, seconds.
    pub metric_time_s: Option<f64>,
    /// Width of the metrics window, seconds.
    pub metric_window_s: f64,
}

impl PodObs {
    /// A pod known only by its placement (as a watch event or a stored state gives it): Running
    /// and Ready when bound to a node, Pending otherwise, with no times and no metrics sample.
    pub fn placed(name: &str, service: &str, node: Option<&str>, cpu_request_cores: f64) -> Self {
        PodObs {
            name: name.into(),
            service: service.into(),
            node: node.map(Into::into),
            phase: if node.is_some() {
                PodPhase::Running
            } else {
                PodPhase::Pending
            },
            ready: node.is_some(),
            start_time_s: None,
            ready_transition_s: None,
            cpu_request_cores,
            cpu_limit_cores: None,
            cpu_usage_cores: None,
            metric_time_s: None,
            metric_window_s: 0.0,
        }
    }
}

/// A stateful store with read replicas (redis exporter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatefulObs {
    /// Workload name.
    pub service: String,
    /// `redis_connected_slaves` on the primary.
    pub connected_replicas: u32,
    /// Worst replica lag, seconds (`redis_master_repl_offset - slave_repl_offset` over the
    /// replication throughput). 0 without replicas.
    pub max_replica_lag_s: f64,
    /// Mean replica lag over replicas, seconds.
    pub mean_replica_lag_s: f64,
    /// `rate(redis_keyspace_hits_total) / (rate(hits) + rate(misses))` over the window.
    pub hit_ratio: f64,
}

/// Cluster-wide scalars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GlobalObs {
    /// Σ CPU used ÷ Σ allocatable CPU over nodes, in [0, 1].
    pub cluster_cpu_utilization: f64,
    /// Share of the last `slo_window` observation ticks that violated the SLO, in [0, 1].
    pub slo_violation_rate: f64,
    /// End-to-end p95 latency of the entry service, ms.
    pub entry_p95_ms: f64,
    /// Error rate of the entry service, in [0, 1].
    pub entry_error_rate: f64,
    /// Request rate into the entry service, rps.
    pub entry_rps: f64,
}
