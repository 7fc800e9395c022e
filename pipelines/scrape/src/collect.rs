//! The scrape stage's collector: one pass over the cluster's interfaces becomes typed telemetry
//! events.
//!
//! * **Kubernetes** (through the `kube` crate): nodes, pods, deployments → node events (free CPU
//!   and memory from every pod's requests, the CPU model label), pod upserts and deletes
//!   (`runs_on`/`hosts`), and the replica counts and resources of service events.
//! * **Prometheus** (PromQL over its HTTP API, [`queries`]): per pod CPU and working set
//!   (cAdvisor), per service request rate, error rate and latency percentiles (Istio, reported
//!   by the destination), the redis exporter's replicas, replica lag and hit ratio, per node CPU,
//!   and the entry service's SLO violation rate over `slo_window`.
//! * **Kiali** (graph API): `calls` edges; when Kiali fails, the same edges from
//!   `istio_requests_total` ([`crate::istio`]).
//!
//! A failed source publishes nothing for what depends on it: service events need both
//! Kubernetes and Prometheus; calls need Kiali or the Istio fallback; nodes and pods need
//! Kubernetes. What is missing is never replaced by zeros, so the graph job lets it go stale and
//! the actuator holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::parse::kiali::KialiEdge;
use crate::parse::prometheus::Sample;
use crate::target::ScrapeError;
use crate::target::{client as http_client, TargetConfig};
use crate::{istio, parse};
use graphscaler_schemas::events::PodChange;
use graphscaler_schemas::{
    CallEdgeObs, Envelope, GlobalObs, NodeObs, PodObs, ServiceObs, StatefulObs, TelemetryEvent,
};
use serde::{Deserialize, Serialize};

use crate::k8s::{self as reader, DeploymentInfo, KubeState};

/// Where the cluster's interfaces are and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Namespace of the managed workloads.
    pub namespace: String,
    /// The managed cluster, as Kiali and Istio name it (`cluster` of Kiali's nodes,
    /// `destination_cluster` of Istio's metrics); empty: the call graph must name one cluster at
    /// most (a graph spanning several is a failure of the pass that asks for this setting).
    pub cluster: String,
    /// Prometheus base URL (`http://prometheus:9090`).
    pub prometheus_url: String,
    /// Kiali base URL (`http://kiali:20001/kiali`); empty: call edges from Istio metrics only.
    pub kiali_url: String,
    /// Kubernetes API URL; empty: in-cluster service account, then kubeconfig.
    pub kubernetes_url: String,
    /// Keep watches on nodes, pods and deployments (true), or list them on every pass (false).
    pub kubernetes_watch: bool,
    /// File holding a bearer token (empty: none).
    pub bearer_token_file: String,
    /// Which endpoints receive the token: `prometheus`, `kiali`; the others get no
    /// `Authorization` header.
    pub bearer_token_targets: Vec<String>,
    /// Send the token over plain `http://` as well (only for a network that protects it, such as
    /// a mesh with mTLS); false: a token target must be `https://`.
    pub allow_plain_http_token: bool,
    /// A PEM CA bundle to trust for Prometheus and Kiali (empty: system roots only).
    pub ca_file: String,
    /// Seconds between passes.
    pub interval_s: f64,
    /// Limit on one request, seconds.
    pub timeout_s: f64,
    /// Range of `rate()` and Kiali's `duration`, seconds.
    pub rate_window_s: u32,
    /// The entry service (whose p95 and errors define the SLO).
    pub entry_service: String,
    /// Range over which the SLO violation rate is averaged, seconds.
    pub slo_window_s: u32,
    /// Bytes per request assumed for Kiali's TCP edges (which report bytes per second).
    pub tcp_bytes_per_request: f64,
}

graphscaler_schemas::default_from!(CollectConfig, "pipeline.collect");

impl CollectConfig {
    /// What is wrong with these settings, one message per problem, each naming its field under
    /// `collect.` (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        use graphscaler_schemas::defaults::is_duration;
        let mut errs = vec![];
        if !is_duration(self.interval_s) || !is_duration(self.timeout_s) || self.rate_window_s == 0
        {
            errs.push(format!(
                "collect.interval_s, timeout_s and rate_window_s must be positive (and at most a year), got {}, {} and {}",
                self.interval_s, self.timeout_s, self.rate_window_s
            ));
        }
        if self.slo_window_s == 0 {
            errs.push("collect.slo_window_s must be positive".into());
        }
        if !(self.tcp_bytes_per_request.is_finite() && self.tcp_bytes_per_request > 0.0) {
            errs.push(format!(
                "collect.tcp_bytes_per_request must be positive, got {}",
                self.tcp_bytes_per_request
            ));
        }
        if self.namespace.is_empty() || self.entry_service.is_empty() {
            errs.push("collect.namespace and collect.entry_service must be set".into());
        }
        if !self.bearer_token_file.is_empty() {
            if self.bearer_token_targets.is_empty() {
                errs.push("collect.bearer_token_file is set but collect.bearer_token_targets names no endpoint to receive it (prometheus, kiali)".into());
            }
            for t in &self.bearer_token_targets {
                let url = match t.as_str() {
                    "prometheus" => &self.prometheus_url,
                    "kiali" => &self.kiali_url,
                    other => {
                        errs.push(format!(
                            "collect.bearer_token_targets: unknown endpoint `{other}` (prometheus, kiali)"
                        ));
                        continue;
                    }
                };
                if !url.starts_with("https://") && !self.allow_plain_http_token {
                    errs.push(format!(
                        "collect.bearer_token_targets sends the token to {t} at `{url}`, not https: use https (ca_file for a private CA), leave {t} out, or set collect.allow_plain_http_token = true where the network protects it"
                    ));
                }
            }
        }
        errs
    }

    /// Whether requests to `target` carry the bearer token.
    pub fn token_for(&self, target: &str) -> bool {
        !self.bearer_token_file.is_empty() && self.bearer_token_targets.iter().any(|t| t == target)
    }
}

/// The PromQL the collector runs, by name, for namespace `ns`, a `rate()` window of `w` seconds,
/// the entry service and the SLO.
pub fn queries(
    cfg: &CollectConfig,
    slo_latency_ms: f64,
    slo_error_rate: f64,
) -> Vec<(&'static str, String)> {
    let ns = &cfg.namespace;
    let w = cfg.rate_window_s;
    let entry = &cfg.entry_service;
    let sw = cfg.slo_window_s;
    let dest = format!("reporter=\"destination\",destination_workload_namespace=\"{ns}\"");
    let errors = format!(
        "rate(istio_requests_total{{{dest},response_code=~\"5..\"}}[{w}s]) or rate(istio_requests_total{{{dest},grpc_response_status=~\"[1-9][0-9]*\"}}[{w}s])"
    );
    let pct = |q: f64| {
        format!("histogram_quantile({q}, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{{{dest}}}[{w}s])))")
    };
    let entry_sel = format!("{dest},destination_workload=\"{entry}\"");
    let lag = |agg: &str| {
        format!("{agg} by (service) (mysql_slave_status_seconds_behind_master) or {agg} by (service) (mysql_replica_status_seconds_behind_source)")
    };
    vec![
        ("pod_cpu", format!("sum by (pod) (rate(container_cpu_usage_seconds_total{{namespace=\"{ns}\",container!=\"\",container!=\"POD\"}}[{w}s]))")),
        ("pod_mem", format!("sum by (pod) (container_memory_working_set_bytes{{namespace=\"{ns}\",container!=\"\",container!=\"POD\"}})")),
        ("node_cpu", format!("sum by (node) (rate(container_cpu_usage_seconds_total{{container!=\"\",container!=\"POD\"}}[{w}s]))")),
        ("svc_rps", format!("sum by (destination_workload) (rate(istio_requests_total{{{dest}}}[{w}s]))")),
        ("svc_err", format!("sum by (destination_workload) ({errors})")),
        ("svc_p50", pct(0.5)),
        ("svc_p95", pct(0.95)),
        ("svc_p99", pct(0.99)),
        // The stores' exporters under their own names (redis_exporter, mysqld_exporter before and
        // after its replica_status rename), by the `service` label the documented relabelling
        // adds (config/prometheus/exporters.yml).
        ("store_replicas", format!("max by (service) (redis_connected_slaves) or {}", lag("count"))),
        ("store_lag_max", format!("max by (service) (redis_connected_slave_lag_seconds) or {}", lag("max"))),
        ("store_lag_mean", format!("avg by (service) (redis_connected_slave_lag_seconds) or {}", lag("avg"))),
        ("store_hits", format!("sum by (service) (rate(redis_keyspace_hits_total[{w}s])) or sum by (service) (rate(mysql_global_status_innodb_buffer_pool_read_requests[{w}s]) - rate(mysql_global_status_innodb_buffer_pool_reads[{w}s]))")),
        ("store_misses", format!("sum by (service) (rate(redis_keyspace_misses_total[{w}s])) or sum by (service) (rate(mysql_global_status_innodb_buffer_pool_reads[{w}s]))")),
        ("slo_violation", format!(
            "avg_over_time((((histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{entry_sel}}}[{w}s]))) > bool {slo_latency_ms}) + ((sum(rate(istio_requests_total{{{entry_sel},response_code=~\"5..\"}}[{w}s]) or rate(istio_requests_total{{{entry_sel},grpc_response_status=~\"[1-9][0-9]*\"}}[{w}s])) or vector(0)) / sum(rate(istio_requests_total{{{entry_sel}}}[{w}s])) > bool {slo_error_rate})) > bool 0)[{sw}s:{w}s])"
        )),
    ]
}

/// One pass's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// Events to publish.
    pub events: Vec<TelemetryEvent>,
    /// Failed sources, with the error.
    pub failures: Vec<(String, String)>,
    /// Items left out (NaN samples, unreadable objects), with why.
    pub rejected: Vec<String>,
    /// What had no data although its sources answered (`service/metric`, `global`): absent
    /// series, empty results and NaN samples. Missing, not zero: the events say so.
    pub missing: Vec<String>,
}

/// The `service/metric` entries of the events' missing metrics, plus `global` when the sources
/// answered (`sources_ok`) and no global scalars could be published.
pub fn missing_of(events: &[TelemetryEvent], sources_ok: bool) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Service(s) => Some(&s.payload),
            _ => None,
        })
        .flat_map(|s| s.missing.iter().map(move |m| format!("{}/{m}", s.name)))
        .collect();
    if sources_ok
        && !events
            .iter()
            .any(|e| matches!(e, TelemetryEvent::Global(_)))
    {
        out.push("global".into());
    }
    out
}

type ByLabel = HashMap<String, (f64, f64)>; // label value -> (value, sample time)

fn by_label(samples: &[Sample], label: &str) -> ByLabel {
    samples
        .iter()
        .filter_map(|s| Some((s.label(label)?.to_string(), (s.value, s.time_s))))
        .collect()
}

/// Reads the cluster's interfaces into telemetry events.
pub struct Collector {
    cfg: CollectConfig,
    slo: (f64, f64),
    http: reqwest::Client,
    /// The client that sends the bearer token, for [`CollectConfig::token_for`]'s targets.
    http_token: Option<reqwest::Client>,
    kube: ::kube::Client,
    watched: Option<reader::Watched>,
    /// Pods published by the last successful Kubernetes read (for deletes).
    last_pods: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("cfg", &self.cfg).finish()
    }
}

impl Collector {
    /// A collector; `slo` is (latency objective ms, error-rate objective).
    pub async fn new(cfg: CollectConfig, slo: (f64, f64)) -> anyhow::Result<Self> {
        let mut t = TargetConfig::new("prometheus", &cfg.prometheus_url);
        t.timeout = Duration::from_secs_f64(cfg.timeout_s);
        if !cfg.ca_file.is_empty() {
            t.ca_cert = Some(cfg.ca_file.clone().into());
        }
        // Two clients: the token goes only to the endpoints configured to receive it.
        let http = http_client(&t)?;
        let http_token = if cfg.bearer_token_file.is_empty() {
            None
        } else {
            let tok = std::fs::read_to_string(&cfg.bearer_token_file)
                .map_err(|e| anyhow::anyhow!("bearer token file {}: {e}", cfg.bearer_token_file))?;
            t.bearer_token = Some(tok);
            Some(http_client(&t)?)
        };
        let url = (!cfg.kubernetes_url.is_empty()).then_some(cfg.kubernetes_url.as_str());
        let kube = reader::client(url).await?;
        let watched = cfg
            .kubernetes_watch
            .then(|| reader::Watched::start(&kube, &cfg.namespace));
        Ok(Self {
            cfg,
            slo,
            http,
            http_token,
            kube,
            watched,
            last_pods: None,
        })
    }

    async fn get(
        &self,
        target: &str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<u8>, ScrapeError> {
        let client = match &self.http_token {
            Some(c) if self.cfg.token_for(target) => c,
            _ => &self.http,
        };
        let resp = client
            .get(url)
            .query(query)
            .send()
            .await
            .map_err(|source| ScrapeError::Request {
                target: target.into(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ScrapeError::Status {
                target: target.into(),
                status: status.as_u16(),
            });
        }
        Ok(resp
            .bytes()
            .await
            .map_err(|source| ScrapeError::Request {
                target: target.into(),
                source,
            })?
            .to_vec())
    }

    async fn promql(
        &self,
        q: &str,
        at: f64,
        rejected: &mut Vec<String>,
    ) -> Result<Vec<Sample>, ScrapeError> {
        let url = format!(
            "{}/api/v1/query",
            self.cfg.prometheus_url.trim_end_matches('/')
        );
        let time = format!("{at:.3}");
        let body = self
            .get("prometheus", &url, &[("query", q), ("time", &time)])
            .await?;
        let p = parse::prometheus::parse(&body)?;
        rejected.extend(p.rejected);
        Ok(p.items)
    }

    async fn kiali(&self) -> Result<Vec<KialiEdge>, ScrapeError> {
        let url = format!(
            "{}/api/namespaces/graph",
            self.cfg.kiali_url.trim_end_matches('/')
        );
        let duration = format!("{}s", self.cfg.rate_window_s);
        let body = self
            .get(
                "kiali",
                &url,
                &[
                    ("namespaces", self.cfg.namespace.as_str()),
                    ("graphType", "workload"),
                    ("duration", duration.as_str()),
                    ("appenders", "responseTime"),
                ],
            )
            .await?;
        Ok(parse::kiali::parse(&body)?.items)
    }

    /// One pass at Unix time `now`.
    pub async fn collect(&mut self, now: f64) -> Collected {
        let mut out = Collected::default();
        let read = match &self.watched {
            Some(w) => w.state(Duration::from_secs_f64(self.cfg.timeout_s)).await,
            None => reader::read(&self.kube, &self.cfg.namespace)
                .await
                .map_err(|e| e.to_string()),
        };
        let kube = match read {
            Ok(k) => {
                out.rejected.extend(k.rejected.iter().cloned());
                Some(k)
            }
            Err(e) => {
                out.failures.push(("kubernetes".into(), e));
                None
            }
        };
        let mut prom: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        let mut prom_ok = true;
        for (name, q) in queries(&self.cfg, self.slo.0, self.slo.1) {
            match self.promql(&q, now, &mut out.rejected).await {
                Ok(s) => {
                    prom.insert(name, s);
                }
                Err(e) => {
                    out.failures
                        .push(("prometheus".into(), format!("{name}: {e}")));
                    prom_ok = false;
                    break;
                }
            }
        }
        let edges = if self.cfg.kiali_url.is_empty() {
            None
        } else {
            match self.kiali().await {
                Ok(e) => Some(e),
                Err(e) => {
                    out.failures.push(("kiali".into(), e.to_string()));
                    None
                }
            }
        };
        let edges = match edges {
            Some(e) => Some(e),
            None => {
                let w = format!("{}s", self.cfg.rate_window_s);
                let mut got = vec![];
                for q in istio::queries(&w) {
                    match self.promql(&q, now, &mut out.rejected).await {
                        Ok(s) => got.push(s),
                        Err(e) => {
                            out.failures.push(("istio".into(), e.to_string()));
                            break;
                        }
                    }
                }
                (got.len() == 3).then(|| istio::edges(&got[0], &got[1], &got[2]))
            }
        };
        let edges = edges.filter(|e| match cluster_problem(&self.cfg, e) {
            Some(why) => {
                out.failures.push(("kiali".into(), why));
                false
            }
            None => true,
        });
        let prom = prom_ok.then_some(prom);
        let sources_ok = prom.is_some() && kube.is_some();
        out.events = assemble(
            &self.cfg,
            &mut self.last_pods,
            now,
            kube.as_ref(),
            prom.as_ref(),
            edges.as_deref(),
        );
        out.missing = missing_of(&out.events, sources_ok);
        out
    }
}

/// The Prometheus answers of one pass, each by the label that names its entity (empty when
/// Prometheus failed).
struct Series<'a> {
    pod_cpu: ByLabel,
    pod_mem: ByLabel,
    node_cpu: ByLabel,
    rps: ByLabel,
    err: ByLabel,
    p50: ByLabel,
    p95: ByLabel,
    p99: ByLabel,
    replicas: ByLabel,
    lag_max: ByLabel,
    lag_mean: ByLabel,
    hits: ByLabel,
    misses: ByLabel,
    slo_violation: &'a [Sample],
}

impl<'a> Series<'a> {
    fn of(prom: Option<&'a BTreeMap<&'static str, Vec<Sample>>>) -> Self {
        let q = |name: &str| {
            prom.and_then(|p| p.get(name))
                .map_or(&[][..], Vec::as_slice)
        };
        let svc = |name: &str| by_label(q(name), "destination_workload");
        let store = |name: &str| by_label(q(name), "service");
        Self {
            pod_cpu: by_label(q("pod_cpu"), "pod"),
            pod_mem: by_label(q("pod_mem"), "pod"),
            node_cpu: by_label(q("node_cpu"), "node"),
            rps: svc("svc_rps"),
            err: svc("svc_err"),
            p50: svc("svc_p50"),
            p95: svc("svc_p95"),
            p99: svc("svc_p99"),
            replicas: store("store_replicas"),
            lag_max: store("store_lag_max"),
            lag_mean: store("store_lag_mean"),
            hits: store("store_hits"),
            misses: store("store_misses"),
            slo_violation: q("slo_violation"),
        }
    }
}

/// `m`'s value for `k`. An absent series (or a NaN sample, which the parser rejects) reads 0 here
/// only beside an entry in the event's `missing`, which says the 0 means nothing.
fn v(m: &ByLabel, k: &str) -> f64 {
    m.get(k).map_or(0.0, |x| x.0)
}

/// Turns what one pass read into events. `last_pods` is the pod set of the previous successful
/// Kubernetes read (for deletes); a source that failed is `None` and publishes nothing.
pub fn assemble(
    cfg: &CollectConfig,
    last_pods: &mut Option<BTreeSet<String>>,
    now: f64,
    kube: Option<&KubeState>,
    prom: Option<&BTreeMap<&'static str, Vec<Sample>>>,
    edges: Option<&[KialiEdge]>,
) -> Vec<TelemetryEvent> {
    let w = f64::from(cfg.rate_window_s);
    let mut ev = edges.map_or_else(Vec::new, |e| call_events(cfg, e, now, w));
    let Some(k) = kube else { return ev };
    let m = Series::of(prom);
    let pods = pod_events(k, &m, prom.is_some(), last_pods, now, w, &mut ev);
    let (used, allocatable) = node_events(k, &m, now, w, &mut ev);
    if prom.is_none() {
        return ev;
    }
    for d in &k.deployments {
        service_events(d, &pods, &m, now, w, &mut ev);
    }
    if let Some(g) = global_obs(cfg, k, &m, used, allocatable) {
        ev.push(TelemetryEvent::Global(Envelope::new(
            "prometheus",
            now,
            w,
            g,
        )));
    }
    ev
}

/// Kiali's (or Istio's) edges into the managed namespace and cluster as `calls` events: the
/// requests per second, TCP bytes per second counted as requests of `tcp_bytes_per_request`
/// bytes. A caller in another cluster is named `<cluster>/<workload>` (a name no Kubernetes
/// workload has), so that it never merges with a same-named workload of the managed cluster.
/// ([`cluster_problem`] refuses edges into several clusters when `cluster` is not set.)
fn call_events(cfg: &CollectConfig, edges: &[KialiEdge], now: f64, w: f64) -> Vec<TelemetryEvent> {
    edges
        .iter()
        .filter(|k| ours(cfg, k))
        .map(|k| {
            let source = if k.source_cluster.is_empty() || k.source_cluster == k.destination_cluster
            {
                k.source.clone()
            } else {
                format!("{}/{}", k.source_cluster, k.source)
            };
            let c = CallEdgeObs {
                source,
                destination: k.destination.clone(),
                rps: k.rps + k.tcp_bytes_per_s / cfg.tcp_bytes_per_request,
                p95_ms: k.p95_ms.unwrap_or(0.0),
                error_rate: k.error_rate,
            };
            TelemetryEvent::Call(Envelope::new("kiali", now, w, c))
        })
        .collect()
}

/// Whether `k` calls into the managed namespace and cluster.
fn ours(cfg: &CollectConfig, k: &KialiEdge) -> bool {
    (k.destination_namespace == cfg.namespace || k.destination_namespace.is_empty())
        && (cfg.cluster.is_empty() || k.destination_cluster == cfg.cluster)
}

/// Why `edges` cannot be read as one cluster's calls: without `cluster` set, edges into the
/// managed namespace of several clusters (their same-named workloads would merge).
pub fn cluster_problem(cfg: &CollectConfig, edges: &[KialiEdge]) -> Option<String> {
    let clusters: BTreeSet<&str> = edges
        .iter()
        .filter(|k| ours(cfg, k))
        .map(|k| k.destination_cluster.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    (cfg.cluster.is_empty() && clusters.len() > 1).then(|| {
        format!(
            "the call graph of namespace {} spans clusters {}: set pipeline.collect.cluster to the one graphscaler manages",
            cfg.namespace,
            clusters.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Deletes of the pods gone since the last read, then an upsert of every pod (with its CPU
/// sample when Prometheus answered); returns the pods.
fn pod_events(
    k: &KubeState,
    m: &Series<'_>,
    prom_ok: bool,
    last_pods: &mut Option<BTreeSet<String>>,
    now: f64,
    w: f64,
    ev: &mut Vec<TelemetryEvent>,
) -> Vec<PodObs> {
    let mut pods: Vec<PodObs> = k.pods.clone();
    if prom_ok {
        for p in &mut pods {
            if let Some((v, t)) = m.pod_cpu.get(&p.name) {
                p.cpu_usage_cores = Some(*v);
                p.metric_time_s = Some(*t);
                p.metric_window_s = w;
            }
        }
    }
    let now_set: BTreeSet<String> = pods.iter().map(|p| p.name.clone()).collect();
    if let Some(prev) = &*last_pods {
        for gone in prev.difference(&now_set) {
            let delete = PodChange::Delete { name: gone.clone() };
            ev.push(TelemetryEvent::Pod(Envelope::new(
                "kubernetes",
                now,
                w,
                delete,
            )));
        }
    }
    *last_pods = Some(now_set);
    for p in &pods {
        let upsert = PodChange::Upsert(p.clone());
        ev.push(TelemetryEvent::Pod(Envelope::new(
            "kubernetes",
            now,
            w,
            upsert,
        )));
    }
    pods
}

/// A node event per node, with its CPU usage; returns the cluster's used and allocatable CPU.
fn node_events(
    k: &KubeState,
    m: &Series<'_>,
    now: f64,
    w: f64,
    ev: &mut Vec<TelemetryEvent>,
) -> (f64, f64) {
    let (mut used, mut allocatable) = (0.0, 0.0);
    for n in &k.nodes {
        let mut n: NodeObs = n.clone();
        n.cpu_usage_cores = v(&m.node_cpu, &n.name);
        used += n.cpu_usage_cores;
        allocatable += n.allocatable_cpu_cores;
        ev.push(TelemetryEvent::Node(Envelope::new("kubernetes", now, w, n)));
    }
    (used, allocatable)
}

/// The service event of deployment `d` (with what is missing named), and its store's event
/// when it is a stateful store.
fn service_events(
    d: &DeploymentInfo,
    pods: &[PodObs],
    m: &Series<'_>,
    now: f64,
    w: f64,
    ev: &mut Vec<TelemetryEvent>,
) {
    let mine: Vec<&PodObs> = pods.iter().filter(|p| p.service == d.name).collect();
    let r = v(&m.rps, &d.name);
    let stateful = m.replicas.contains_key(&d.name);
    let mut missing = vec![];
    // CPU and memory: missing when no ready pod has a sample (a pod that just started has none
    // yet; the others' sum stands for the service).
    let ready: Vec<&&PodObs> = mine.iter().filter(|p| p.ready).collect();
    for (name, series) in [
        ("cpu_usage_cores", &m.pod_cpu),
        ("mem_working_set_bytes", &m.pod_mem),
    ] {
        if !ready.is_empty() && !ready.iter().any(|p| series.contains_key(&p.name)) {
            missing.push(name.to_string());
        }
    }
    // The request rate: missing when Istio's rates are absent altogether (an empty result). A
    // service absent from a non-empty result has no HTTP or gRPC traffic (a TCP store such as
    // redis has no request series at all).
    if m.rps.is_empty() {
        missing.push("rps".into());
    }
    // Latency: undefined without requests; missing when there are requests and no sample. (No
    // error series means no errors: Istio has no 5xx counter until a 5xx happens.)
    if r > 0.0 {
        for (name, series) in [("p50_ms", &m.p50), ("p95_ms", &m.p95), ("p99_ms", &m.p99)] {
            if !series.contains_key(&d.name) {
                missing.push(name.to_string());
            }
        }
    }
    let s = ServiceObs {
        name: d.name.clone(),
        replicas_spec: d.replicas_spec,
        replicas_ready: d.replicas_ready,
        replicas_unready: (mine.len() as u32).saturating_sub(d.replicas_ready),
        cpu_request_cores: d.cpu_request_cores,
        cpu_limit_cores: d.cpu_limit_cores,
        mem_request_bytes: d.mem_request_bytes,
        mem_limit_bytes: d.mem_limit_bytes,
        cpu_usage_cores: mine.iter().map(|p| v(&m.pod_cpu, &p.name)).sum(),
        mem_working_set_bytes: mine.iter().map(|p| v(&m.pod_mem, &p.name)).sum(),
        rps: r,
        p50_ms: v(&m.p50, &d.name),
        p95_ms: v(&m.p95, &d.name),
        p99_ms: v(&m.p99, &d.name),
        error_rate: if r > 0.0 {
            (v(&m.err, &d.name) / r).clamp(0.0, 1.0)
        } else {
            0.0
        },
        stateful,
        missing,
    };
    ev.push(TelemetryEvent::Service(Envelope::new(
        "prometheus",
        now,
        w,
        s,
    )));
    if stateful {
        let (h, miss) = (v(&m.hits, &d.name), v(&m.misses, &d.name));
        let st = StatefulObs {
            service: d.name.clone(),
            connected_replicas: v(&m.replicas, &d.name).round().max(0.0) as u32,
            max_replica_lag_s: v(&m.lag_max, &d.name),
            mean_replica_lag_s: v(&m.lag_mean, &d.name),
            hit_ratio: if h + miss > 0.0 { h / (h + miss) } else { 1.0 },
        };
        ev.push(TelemetryEvent::Stateful(Envelope::new(
            "prometheus",
            now,
            w,
            st,
        )));
    }
}

/// The global scalars. They need every node's CPU, the SLO signal and the entry's request rate
/// (and its p95 when it has requests); without them there are none, and the snapshot's global
/// scalars read as unknown.
fn global_obs(
    cfg: &CollectConfig,
    k: &KubeState,
    m: &Series<'_>,
    used: f64,
    allocatable: f64,
) -> Option<GlobalObs> {
    let entry = &cfg.entry_service;
    let er = v(&m.rps, entry);
    let complete = !k.nodes.is_empty()
        && k.nodes.iter().all(|n| m.node_cpu.contains_key(&n.name))
        && !m.slo_violation.is_empty()
        && !m.rps.is_empty()
        // The entry's p95 is needed only when it has requests.
        && (er <= 0.0 || m.p95.contains_key(entry));
    complete.then(|| GlobalObs {
        cluster_cpu_utilization: if allocatable > 0.0 {
            used / allocatable
        } else {
            0.0
        },
        slo_violation_rate: m
            .slo_violation
            .first()
            .map_or(0.0, |s| s.value.clamp(0.0, 1.0)),
        entry_p95_ms: v(&m.p95, entry),
        entry_error_rate: if er > 0.0 {
            (v(&m.err, entry) / er).clamp(0.0, 1.0)
        } else {
            0.0
        },
        entry_rps: er,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::DeploymentInfo;

    fn sample(label: &str, key: &str, v: f64) -> Sample {
        Sample {
            labels: [(label.to_string(), key.to_string())].into(),
            time_s: 100.0,
            value: v,
        }
    }

    fn kube() -> KubeState {
        let dep = |name: &str, spec, ready| DeploymentInfo {
            name: name.into(),
            replicas_spec: spec,
            replicas_ready: ready,
            cpu_request_cores: 0.1,
            cpu_limit_cores: 0.2,
            mem_request_bytes: 64e6,
            mem_limit_bytes: 128e6,
        };
        KubeState {
            nodes: vec![NodeObs {
                name: "n1".into(),
                node_type: "m".into(),
                cpu_model: String::new(),
                cpu_model_id: 3,
                allocatable_cpu_cores: 4.0,
                allocatable_mem_bytes: 8e9,
                requested_cpu_cores: 0.3,
                requested_mem_bytes: 1e8,
                cpu_usage_cores: 0.0,
            }],
            pods: vec![
                PodObs::placed("web-a", "web", Some("n1"), 0.1),
                PodObs::placed("web-b", "web", Some("n1"), 0.1),
                PodObs::placed("db-a", "db", Some("n1"), 0.1),
            ],
            deployments: vec![dep("db", 1, 1), dep("web", 2, 2)],
            rejected: vec![],
        }
    }

    fn prom() -> BTreeMap<&'static str, Vec<Sample>> {
        let mut m = BTreeMap::new();
        m.insert(
            "pod_cpu",
            vec![sample("pod", "web-a", 0.05), sample("pod", "web-b", 0.07)],
        );
        m.insert("pod_mem", vec![sample("pod", "web-a", 1e6)]);
        m.insert("node_cpu", vec![sample("node", "n1", 0.4)]);
        m.insert("svc_rps", vec![sample("destination_workload", "web", 20.0)]);
        m.insert("svc_err", vec![sample("destination_workload", "web", 1.0)]);
        m.insert("svc_p95", vec![sample("destination_workload", "web", 42.0)]);
        m.insert("store_replicas", vec![sample("service", "db", 2.0)]);
        m.insert("store_lag_max", vec![sample("service", "db", 0.5)]);
        m.insert("store_hits", vec![sample("service", "db", 3.0)]);
        m.insert("store_misses", vec![sample("service", "db", 1.0)]);
        m.insert(
            "slo_violation",
            vec![Sample {
                labels: BTreeMap::new(),
                time_s: 100.0,
                value: 0.25,
            }],
        );
        m
    }

    fn cfg() -> CollectConfig {
        CollectConfig {
            namespace: "boutique".into(),
            entry_service: "web".into(),
            ..CollectConfig::default()
        }
    }

    fn services(ev: &[TelemetryEvent]) -> Vec<&ServiceObs> {
        ev.iter()
            .filter_map(|e| match e {
                TelemetryEvent::Service(s) => Some(&s.payload),
                _ => None,
            })
            .collect()
    }

    /// `source` calling `destination` in namespace `boutique` of no named cluster: `rps` requests
    /// and `tcp` bytes per second.
    fn edge(source: &str, destination: &str, rps: f64, tcp: f64) -> KialiEdge {
        KialiEdge {
            source: source.into(),
            source_namespace: "boutique".into(),
            source_cluster: String::new(),
            destination: destination.into(),
            destination_namespace: "boutique".into(),
            destination_cluster: String::new(),
            protocols: vec![if tcp > 0.0 { "tcp" } else { "http" }.into()],
            rps,
            tcp_bytes_per_s: tcp,
            error_rate: 0.0,
            p95_ms: None,
        }
    }

    #[test]
    fn calls_are_read_for_the_managed_cluster_only() {
        let in_cluster = |c: &str, e: KialiEdge| KialiEdge {
            source_cluster: c.into(),
            destination_cluster: c.into(),
            ..e
        };
        let edges = [
            in_cluster("east", edge("web", "db", 10.0, 0.0)),
            in_cluster("west", edge("web", "db", 3.0, 0.0)),
            // A caller in west calling east's db.
            KialiEdge {
                source_cluster: "west".into(),
                destination_cluster: "east".into(),
                ..edge("web", "db", 2.0, 512.0)
            },
        ];
        // Unset, the two clusters' same-named workloads would merge: the pass says so.
        let e = cluster_problem(&cfg(), &edges).unwrap();
        assert!(
            e.contains("east, west") && e.contains("pipeline.collect.cluster"),
            "{e}"
        );
        let east = CollectConfig {
            cluster: "east".into(),
            ..cfg()
        };
        assert_eq!(cluster_problem(&east, &edges), None);
        let calls: Vec<(String, String, f64)> = call_events(&east, &edges, 0.0, 30.0)
            .into_iter()
            .filter_map(|e| match e {
                TelemetryEvent::Call(c) => {
                    Some((c.payload.source, c.payload.destination, c.payload.rps))
                }
                _ => None,
            })
            .collect();
        // West's own call is not east's; west's caller keeps its cluster in its name; its TCP
        // bytes count as requests of 512 bytes.
        assert_eq!(
            calls,
            [
                ("web".to_string(), "db".to_string(), 10.0),
                ("west/web".to_string(), "db".to_string(), 3.0)
            ]
        );
    }

    #[test]
    fn every_source_becomes_its_events() {
        let edges = [edge("web", "db", 0.0, 1024.0)];
        let ev = assemble(
            &cfg(),
            &mut None,
            100.0,
            Some(&kube()),
            Some(&prom()),
            Some(&edges),
        );
        let s = services(&ev);
        assert_eq!(s.len(), 2);
        let web = s.iter().find(|s| s.name == "web").unwrap();
        assert!((web.cpu_usage_cores - 0.12).abs() < 1e-12);
        assert_eq!(
            (web.replicas_spec, web.replicas_ready, web.rps, web.p95_ms),
            (2, 2, 20.0, 42.0)
        );
        assert!((web.error_rate - 0.05).abs() < 1e-12);
        assert!(!web.stateful);
        let db = s.iter().find(|s| s.name == "db").unwrap();
        assert!(
            db.stateful,
            "a service with redis exporter series is stateful"
        );
        let st: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                TelemetryEvent::Stateful(x) => Some(&x.payload),
                _ => None,
            })
            .collect();
        assert_eq!(st.len(), 1);
        assert_eq!(
            (
                st[0].connected_replicas,
                st[0].max_replica_lag_s,
                st[0].hit_ratio
            ),
            (2, 0.5, 0.75)
        );
        let g = ev
            .iter()
            .find_map(|e| match e {
                TelemetryEvent::Global(x) => Some(&x.payload),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (g.slo_violation_rate, g.cluster_cpu_utilization, g.entry_rps),
            (0.25, 0.1, 20.0)
        );
        let call = ev
            .iter()
            .find_map(|e| match e {
                TelemetryEvent::Call(x) => Some(&x.payload),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (call.rps, call.p95_ms),
            (2.0, 0.0),
            "TCP bytes/s become requests/s; no latency stays 0"
        );
        let pod = ev
            .iter()
            .find_map(|e| match e {
                TelemetryEvent::Pod(x) => match &x.payload {
                    PodChange::Upsert(p) if p.name == "web-a" => Some(p.clone()),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (pod.cpu_usage_cores, pod.metric_time_s),
            (Some(0.05), Some(100.0))
        );
        assert!(ev.iter().all(|e| e.observed_at_s() == 100.0));
    }

    #[test]
    fn a_failed_source_publishes_nothing_that_depends_on_it() {
        // Prometheus down: nodes and pods, but no services, stores or global scalars, and no
        // made-up usage.
        let ev = assemble(&cfg(), &mut None, 100.0, Some(&kube()), None, None);
        assert!(services(&ev).is_empty());
        assert!(ev
            .iter()
            .all(|e| matches!(e, TelemetryEvent::Node(_) | TelemetryEvent::Pod(_))));
        assert!(ev.iter().all(|e| match e {
            TelemetryEvent::Pod(p) =>
                matches!(&p.payload, PodChange::Upsert(p) if p.cpu_usage_cores.is_none()),
            _ => true,
        }));
        // Kubernetes down: nothing but call edges.
        let edges = [KialiEdge {
            source_namespace: String::new(),
            destination_namespace: String::new(),
            error_rate: 0.1,
            p95_ms: Some(3.0),
            ..edge("web", "db", 5.0, 0.0)
        }];
        let ev = assemble(&cfg(), &mut None, 100.0, None, Some(&prom()), Some(&edges));
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], TelemetryEvent::Call(_)));
        // Nothing at all.
        assert!(assemble(&cfg(), &mut None, 100.0, None, None, None).is_empty());
    }

    #[test]
    fn a_pod_that_went_away_is_deleted() {
        let mut last = None;
        let mut k = kube();
        assemble(&cfg(), &mut last, 100.0, Some(&k), None, None);
        k.pods.retain(|p| p.name != "web-b");
        let ev = assemble(&cfg(), &mut last, 115.0, Some(&k), None, None);
        let deletes: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                TelemetryEvent::Pod(p) => match &p.payload {
                    PodChange::Delete { name } => Some(name.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(deletes, ["web-b"]);
        // A failed read in between does not delete anything.
        let ev = assemble(&cfg(), &mut last, 130.0, None, None, None);
        assert!(ev.is_empty());
    }

    #[test]
    fn the_queries_name_the_namespace_and_window() {
        let q = queries(&cfg(), 200.0, 0.01);
        assert_eq!(q.len(), 14);
        assert!(q.iter().all(|(_, x)| !x.contains("{{")));
        let slo = &q.iter().find(|(n, _)| *n == "slo_violation").unwrap().1;
        assert!(
            slo.contains("> bool 200")
                && slo.contains("[300s:60s]")
                && slo.contains("destination_workload=\"web\""),
            "{slo}"
        );
    }
}
