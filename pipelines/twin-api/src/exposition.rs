//! The Prometheus text exposition of the twin: cAdvisor, kube-state-metrics, Istio standard
//! metrics, and for each stateful service redis_exporter's or mysqld_exporter's series (by its
//! topology `engine`), with their real names and labels.
//!
//! The exporters' series carry the labels the documented relabelling adds when Prometheus
//! discovers an exporter through its Kubernetes Service's endpoints
//! (`config/prometheus/exporters.yml`): `namespace`, `pod` and `service` (the Service, named as
//! the workload). Beside them, each series has exactly the exporter's own labels: redis_exporter
//! (`exporter/info.go`) publishes `redis_connected_slaves`, `redis_connected_slave_lag_seconds
//! {slave_ip, slave_port, slave_state}` and the keyspace counters on the primary, and
//! `redis_master_last_io_seconds_ago{master_host, master_port}` on each replica; mysqld_exporter
//! (`collector/slave_status.go`, `collector/global_status.go`) publishes
//! `mysql_slave_status_seconds_behind_master{master_host, master_uuid, channel_name,
//! connection_name}` (and `…_slave_io_running`, `…_slave_sql_running`) on each replica and
//! `mysql_global_status_innodb_buffer_pool_read_requests` / `…_reads` on the primary. A pod's IP
//! is derived from its name (the twin has no network).
//!
//! Counters accumulate from tick to tick as a real exporter's do, so `rate()` over them gives
//! the twin's rates back; a pod's series disappear when the pod does, as cAdvisor's do.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use graphscaler_schemas::{ClusterObservation, PodObs, PodPhase};
use graphscaler_twin::topology::Engine;
use graphscaler_twin::{TickTruth, Topology};

/// Istio's default `istio_request_duration_milliseconds` buckets.
pub const ISTIO_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

#[derive(Debug, Clone, Default)]
struct EdgeCounters {
    protocol: String,
    ok: f64,
    errors: f64,
    sum_ms: f64,
    buckets: [f64; ISTIO_BUCKETS_MS.len()],
}

/// Cumulative counters behind the exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    namespace: String,
    pod_cpu_seconds: BTreeMap<String, f64>,
    pod_working_set: BTreeMap<String, f64>,
    edges: BTreeMap<(String, String), EdgeCounters>,
    stores: BTreeMap<String, Store>,
}

/// A stateful service as its exporters see it.
#[derive(Debug, Clone)]
struct Store {
    engine: Engine,
    /// Cumulative reads served from memory (keyspace hits; buffer-pool reads without disk).
    hits: f64,
    /// Cumulative reads that missed (keyspace misses; buffer-pool reads from disk).
    misses: f64,
    /// The primary's pod, this tick.
    primary: Option<String>,
    /// Each read replica's pod and replication lag, s, this tick.
    replicas: Vec<(String, f64)>,
}

/// A pod's IP, derived from its name (10.244.x.y).
pub fn pod_ip(pod: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(pod.as_bytes());
    format!("10.244.{}.{}", h[0], h[1].max(2))
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

impl Exposition {
    /// Counters for workloads in `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    /// Folds one tick into the counters.
    pub fn update(&mut self, topo: &Topology, obs: &ClusterObservation, truth: &TickTruth) {
        let w = truth.window_s;
        let live: std::collections::HashSet<&str> =
            truth.pods.iter().map(|p| p.name.as_str()).collect();
        self.pod_cpu_seconds
            .retain(|k, _| live.contains(k.as_str()));
        self.pod_working_set
            .retain(|k, _| live.contains(k.as_str()));
        for p in &truth.pods {
            *self.pod_cpu_seconds.entry(p.name.clone()).or_default() += p.cpu_cores * w;
            self.pod_working_set
                .insert(p.name.clone(), p.working_set_bytes);
        }
        for e in &truth.edges {
            let src = e
                .source
                .map_or("unknown".to_string(), |s| topo.services[s].name.clone());
            let dst = topo.services[e.destination].name.clone();
            let protocol = match e.source {
                None => "http".to_string(),
                Some(s) => topo
                    .edge(s, e.destination)
                    .map_or("grpc".into(), |x| x.protocol.clone()),
            };
            let c = self.edges.entry((src, dst)).or_default();
            c.protocol = protocol;
            c.ok += e.requests - e.errors;
            c.errors += e.errors;
            c.sum_ms += e.requests * e.mean_s * 1000.0;
            for (b, le) in c.buckets.iter_mut().zip(ISTIO_BUCKETS_MS) {
                *b += e.requests * e.cdf(le / 1000.0);
            }
        }
        for st in &obs.stateful {
            let reads = obs.service(&st.service).map_or(0.0, |s| s.rps) * w;
            let engine = topo
                .service_index(&st.service)
                .and_then(|i| topo.services[i].engine)
                .unwrap_or(Engine::Redis);
            let r = self.stores.entry(st.service.clone()).or_insert(Store {
                engine,
                hits: 0.0,
                misses: 0.0,
                primary: None,
                replicas: vec![],
            });
            r.hits += reads * st.hit_ratio;
            r.misses += reads * (1.0 - st.hit_ratio);
            r.primary = None;
            r.replicas.clear();
        }
        for p in &truth.pods {
            let Some(r) = self.stores.get_mut(&topo.services[p.service].name) else {
                continue;
            };
            match p.replica_lag_s {
                Some(lag) => r.replicas.push((p.name.clone(), lag)),
                None => r.primary = r.primary.clone().or_else(|| Some(p.name.clone())),
            }
        }
    }

    /// Renders the exposition for the current observation.
    pub fn render(&self, obs: &ClusterObservation) -> String {
        let ns = esc(&self.namespace);
        let mut o = String::with_capacity(64 * 1024);
        self.cadvisor(&mut o, obs, &ns);
        kube_state_metrics(&mut o, obs, &ns);
        self.istio(&mut o, &ns);
        self.exporters(&mut o, obs, &ns);
        o
    }

    /// cAdvisor (kubelet /metrics/cadvisor): one series per running container.
    fn cadvisor(&self, o: &mut String, obs: &ClusterObservation, ns: &str) {
        type PodValue<'a> = Box<dyn Fn(&PodObs) -> f64 + 'a>;
        let cadvisor: [(&str, &str, &str, PodValue); 4] = [
            (
                "container_cpu_usage_seconds_total",
                "counter",
                "Cumulative cpu time consumed in seconds.",
                Box::new(|p| self.pod_cpu_seconds.get(&p.name).copied().unwrap_or(0.0)),
            ),
            (
                "container_memory_working_set_bytes",
                "gauge",
                "Current working set in bytes.",
                Box::new(|p| self.pod_working_set.get(&p.name).copied().unwrap_or(0.0)),
            ),
            (
                "container_spec_cpu_quota",
                "gauge",
                "CPU quota of the container.",
                Box::new(|p| {
                    (obs.service(&p.service).map_or(0.0, |s| s.cpu_limit_cores) * 100_000.0).round()
                }),
            ),
            (
                "container_spec_cpu_period",
                "gauge",
                "CPU period of the container.",
                Box::new(|_| 100_000.0),
            ),
        ];
        for (name, kind, help, value) in &cadvisor {
            head(o, name, kind, help);
            for p in obs.pods.iter().filter(|p| p.node.is_some()) {
                let _ = writeln!(
                    o,
                    "{name}{{container=\"{c}\",namespace=\"{ns}\",pod=\"{p}\",node=\"{n}\"}} {v}",
                    c = esc(&p.service),
                    p = esc(&p.name),
                    n = esc(p.node.as_deref().unwrap_or_default()),
                    v = num(value(p))
                );
            }
        }
    }

    /// Istio standard metrics, reported by the destination sidecar.
    fn istio(&self, o: &mut String, ns: &str) {
        head(o, "istio_requests_total", "counter", "Total requests.");
        for ((src, dst), c) in &self.edges {
            let grpc = c.protocol == "grpc";
            // gRPC failures travel as HTTP 200 with a gRPC status (14, UNAVAILABLE); HTTP ones as 503.
            let rows = [
                ("200", "0", c.ok),
                (if grpc { "200" } else { "503" }, "14", c.errors),
            ];
            for (code, status, v) in rows.into_iter().filter(|r| r.1 == "0" || c.errors > 0.0) {
                let grpc_status = if grpc {
                    format!(",grpc_response_status=\"{status}\"")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "istio_requests_total{{reporter=\"destination\",source_workload=\"{s}\",source_workload_namespace=\"{sns}\",destination_workload=\"{d}\",destination_workload_namespace=\"{ns}\",destination_service=\"{d}.{ns}.svc.cluster.local\",request_protocol=\"{p}\",response_code=\"{code}\"{grpc_status}}} {v}",
                    s = esc(src),
                    sns = if src == "unknown" { "unknown".to_string() } else { ns.to_string() },
                    d = esc(dst),
                    p = esc(&c.protocol),
                    v = num(v)
                );
            }
        }
        head(
            o,
            "istio_request_duration_milliseconds",
            "histogram",
            "Request duration in milliseconds.",
        );
        for ((src, dst), c) in &self.edges {
            let labels = format!(
                "reporter=\"destination\",source_workload=\"{}\",destination_workload=\"{}\",destination_workload_namespace=\"{ns}\",request_protocol=\"{}\"",
                esc(src),
                esc(dst),
                esc(&c.protocol)
            );
            for (b, le) in c.buckets.iter().zip(ISTIO_BUCKETS_MS) {
                let _ = writeln!(
                    o,
                    "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {}",
                    num(*b)
                );
            }
            let total = c.ok + c.errors;
            let _ = writeln!(
                o,
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {}",
                num(total)
            );
            let _ = writeln!(
                o,
                "istio_request_duration_milliseconds_sum{{{labels}}} {}",
                num(c.sum_ms)
            );
            let _ = writeln!(
                o,
                "istio_request_duration_milliseconds_count{{{labels}}} {}",
                num(total)
            );
        }
    }

    /// redis_exporter's and mysqld_exporter's series of every stateful service.
    fn exporters(&self, o: &mut String, obs: &ClusterObservation, ns: &str) {
        let at = |svc: &str, pod: &str| {
            format!(
                "namespace=\"{ns}\",pod=\"{}\",service=\"{}\"",
                esc(pod),
                esc(svc)
            )
        };
        let engine = |e: Engine| {
            self.stores
                .iter()
                .filter(move |(_, r)| r.engine == e)
                .filter_map(|(svc, r)| r.primary.as_ref().map(|p| (svc, r, p)))
        };
        let connected = |svc: &str| {
            obs.stateful
                .iter()
                .find(|s| s.service == svc)
                .map_or(0, |s| s.connected_replicas)
        };
        // redis_exporter: on the primary, then on each replica.
        let series: [(&str, &str, &str); 5] = [
            ("redis_connected_slaves", "gauge", "connected_slaves metric"),
            (
                "redis_connected_slave_lag_seconds",
                "gauge",
                "Lag of connected slave",
            ),
            (
                "redis_keyspace_hits_total",
                "counter",
                "keyspace_hits_total metric",
            ),
            (
                "redis_keyspace_misses_total",
                "counter",
                "keyspace_misses_total metric",
            ),
            (
                "redis_master_last_io_seconds_ago",
                "gauge",
                "master_last_io_seconds_ago metric",
            ),
        ];
        for (name, kind, help) in series {
            head(o, name, kind, help);
            for (svc, r, primary) in engine(Engine::Redis) {
                let l = at(svc, primary);
                match name {
                    "redis_connected_slaves" => {
                        let _ = writeln!(o, "{name}{{{l}}} {}", connected(svc));
                    }
                    "redis_keyspace_hits_total" => {
                        let _ = writeln!(o, "{name}{{{l}}} {}", num(r.hits));
                    }
                    "redis_keyspace_misses_total" => {
                        let _ = writeln!(o, "{name}{{{l}}} {}", num(r.misses));
                    }
                    "redis_connected_slave_lag_seconds" => {
                        for (pod, lag) in &r.replicas {
                            let _ = writeln!(
                                o,
                                "{name}{{{l},slave_ip=\"{}\",slave_port=\"6379\",slave_state=\"online\"}} {}",
                                pod_ip(pod),
                                num(*lag)
                            );
                        }
                    }
                    _ => {
                        for (pod, lag) in &r.replicas {
                            let _ = writeln!(
                                o,
                                "{name}{{{},master_host=\"{}\",master_port=\"6379\"}} {}",
                                at(svc, pod),
                                pod_ip(primary),
                                lag.floor()
                            );
                        }
                    }
                }
            }
        }
        // mysqld_exporter: SHOW SLAVE STATUS on each replica (whole seconds, as MySQL reports
        // them), SHOW GLOBAL STATUS on the primary.
        for (col, help) in [
            (
                "seconds_behind_master",
                "Generic metric from SHOW SLAVE STATUS.",
            ),
            ("slave_io_running", "Generic metric from SHOW SLAVE STATUS."),
            (
                "slave_sql_running",
                "Generic metric from SHOW SLAVE STATUS.",
            ),
        ] {
            let name = format!("mysql_slave_status_{col}");
            head(o, &name, "untyped", help);
            for (svc, r, primary) in engine(Engine::Mysql) {
                for (pod, lag) in &r.replicas {
                    let v = if col == "seconds_behind_master" {
                        lag.floor()
                    } else {
                        1.0
                    };
                    let _ = writeln!(
                        o,
                        "{name}{{channel_name=\"\",connection_name=\"\",master_host=\"{}\",master_uuid=\"{}\",{}}} {v}",
                        pod_ip(primary),
                        crate::kube::uid("mysql", primary),
                        at(svc, pod)
                    );
                }
            }
        }
        for (var, reads) in [
            ("innodb_buffer_pool_read_requests", true),
            ("innodb_buffer_pool_reads", false),
        ] {
            let name = format!("mysql_global_status_{var}");
            head(
                o,
                &name,
                "untyped",
                "Generic metric from SHOW GLOBAL STATUS.",
            );
            for (svc, r, primary) in engine(Engine::Mysql) {
                // Every logical read is a read request; the misses are read from disk.
                let v = if reads { r.hits + r.misses } else { r.misses };
                let _ = writeln!(o, "{name}{{{}}} {}", at(svc, primary), num(v));
            }
        }
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// kube-state-metrics: deployments, pods' resources, readiness and phase, nodes.
fn kube_state_metrics(o: &mut String, obs: &ClusterObservation, ns: &str) {
    head(
        o,
        "kube_deployment_spec_replicas",
        "gauge",
        "Number of desired pods for a deployment.",
    );
    for s in &obs.services {
        let _ = writeln!(
            o,
            "kube_deployment_spec_replicas{{namespace=\"{ns}\",deployment=\"{}\"}} {}",
            esc(&s.name),
            s.replicas_spec
        );
    }
    head(
        o,
        "kube_deployment_status_replicas_ready",
        "gauge",
        "The number of ready replicas per deployment.",
    );
    for s in &obs.services {
        let _ = writeln!(
            o,
            "kube_deployment_status_replicas_ready{{namespace=\"{ns}\",deployment=\"{}\"}} {}",
            esc(&s.name),
            s.replicas_ready
        );
    }
    for (name, help, limit) in [
        (
            "kube_pod_container_resource_requests",
            "The number of requested request resource by a container.",
            false,
        ),
        (
            "kube_pod_container_resource_limits",
            "The number of requested limit resource by a container.",
            true,
        ),
    ] {
        head(o, name, "gauge", help);
        for p in &obs.pods {
            let Some(s) = obs.service(&p.service) else {
                continue;
            };
            let (cpu, mem) = if limit {
                (s.cpu_limit_cores, s.mem_limit_bytes)
            } else {
                (p.cpu_request_cores, s.mem_request_bytes)
            };
            let node = esc(p.node.as_deref().unwrap_or_default());
            let _ = writeln!(o, "{name}{{namespace=\"{ns}\",pod=\"{}\",container=\"{}\",node=\"{node}\",resource=\"cpu\",unit=\"core\"}} {}", esc(&p.name), esc(&p.service), num(cpu));
            let _ = writeln!(o, "{name}{{namespace=\"{ns}\",pod=\"{}\",container=\"{}\",node=\"{node}\",resource=\"memory\",unit=\"byte\"}} {}", esc(&p.name), esc(&p.service), num(mem));
        }
    }
    head(o, "kube_pod_info", "gauge", "Information about pod.");
    for p in &obs.pods {
        let _ = writeln!(
                o,
                "kube_pod_info{{namespace=\"{ns}\",pod=\"{}\",node=\"{}\",created_by_kind=\"ReplicaSet\",created_by_name=\"{}\"}} 1",
                esc(&p.name),
                esc(p.node.as_deref().unwrap_or_default()),
                esc(&p.service)
            );
    }
    head(
        o,
        "kube_pod_status_ready",
        "gauge",
        "Describes whether the pod is ready to serve requests.",
    );
    for p in &obs.pods {
        for (cond, v) in [("true", p.ready), ("false", !p.ready)] {
            let _ = writeln!(
                o,
                "kube_pod_status_ready{{namespace=\"{ns}\",pod=\"{}\",condition=\"{cond}\"}} {}",
                esc(&p.name),
                u8::from(v)
            );
        }
    }
    head(
        o,
        "kube_pod_status_phase",
        "gauge",
        "The pods current phase.",
    );
    for p in &obs.pods {
        for (phase, v) in [
            ("Pending", p.phase == PodPhase::Pending),
            ("Running", p.phase == PodPhase::Running),
        ] {
            let _ = writeln!(
                o,
                "kube_pod_status_phase{{namespace=\"{ns}\",pod=\"{}\",phase=\"{phase}\"}} {}",
                esc(&p.name),
                u8::from(v)
            );
        }
    }
    head(
        o,
        "kube_node_status_allocatable",
        "gauge",
        "The allocatable for different resources of a node that are available for scheduling.",
    );
    for n in &obs.nodes {
        let _ = writeln!(
            o,
            "kube_node_status_allocatable{{node=\"{}\",resource=\"cpu\",unit=\"core\"}} {}",
            esc(&n.name),
            num(n.allocatable_cpu_cores)
        );
        let _ = writeln!(
            o,
            "kube_node_status_allocatable{{node=\"{}\",resource=\"memory\",unit=\"byte\"}} {}",
            esc(&n.name),
            num(n.allocatable_mem_bytes)
        );
    }
    head(
        o,
        "kube_node_labels",
        "gauge",
        "Kubernetes labels converted to Prometheus labels.",
    );
    for n in &obs.nodes {
        let _ = writeln!(
                o,
                "kube_node_labels{{node=\"{}\",label_node_kubernetes_io_instance_type=\"{}\",label_feature_node_kubernetes_io_cpu_model_id=\"{}\"}} 1",
                esc(&n.name),
                esc(&n.node_type),
                n.cpu_model_id
            );
    }
}
