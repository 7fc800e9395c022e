//! Application topologies: services, their resources, the call graph and per-route call trees.
//!
//! The file format is the one of `data/topologies/online-boutique.json` (assembled from the
//! Online Boutique sources, see its `provenance`):
//!
//! * `services[]`: `name`, `language`, `cpu_request_m`, `cpu_limit_m`, `mem_request_mi`,
//!   `mem_limit_mi`, `stateful`, `container_port` (null for a load generator),
//!   `replicas_in_manifest`, and the twin's parameters of the service, each optional (the
//!   configuration's defaults otherwise): `cpu_cost_ms` (CPU per request at speed 1.0),
//!   `app_start_s` (container start to the application answering its probe) and
//!   `readiness_probe` (`{initial_delay_s, period_s}`, as the manifest's `readinessProbe`); for a
//!   stateful service, `engine`: `redis` (the default) or `mysql` — which exporter's series the
//!   twin serves for it (redis_exporter's or mysqld_exporter's).
//! * `calls[]`: `from`, `to`, `protocol`, `rpcs`. In `rpcs`, the words `errors ignored` make the
//!   edge optional (the caller ignores its failures) and `timeout N ms` sets the caller's deadline.
//! * `frontend_endpoint_fanout`: one entry per route of the entry service, a list of call strings
//!   in this grammar (keys starting with `_` are comments):
//!
//!   ```text
//!   call     := service "." method [ "x" count ] [ "(" "->" call ("," call)* ")" | "(" comment ")" ]
//!   count    := integer | parameter-name | "(" text ")"     -- "(…, <=5)" counts 5
//!   ```
//!
//!   Each string is one call, read whole: text the grammar does not read (a second call, words
//!   after the count) is an error naming the route, the string and the byte where it starts.
//!   An entry that starts with `(` is a route without calls. A call with no nested list calls
//!   each of its service's outgoing `calls` edges once (so `cartservice` reaches `redis-cart`).
//!   Parameter names (`N_products`, `cart_items`) come from the file's `parameters` object or the
//!   twin configuration.
//! * optional `entry` (default: the service the load generator calls), optional `user_tasks`
//!   (`{name: {weight, requests: [route, …]}}`, overriding the configured task mix) and optional
//!   `parameters`.
//!
//! Services without a container port and without callers (the load generator) are not
//! simulated: the twin's load model replaces them. Every simulated service needs all four
//! resources, positive: one missing or `null` (a manifest that declares none) is an error naming
//! the service and the field — the twin schedules pods by their requests and throttles them at
//! their limits, and no default would be the cluster's.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::config::ProbeConfig;
use crate::error::{Result, TwinError};

/// One simulated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Deployment name.
    pub name: String,
    /// Implementation language (drives the default start-up delay).
    pub language: String,
    /// CPU request per container, millicores.
    pub cpu_request_m: f64,
    /// CPU limit per container, millicores.
    pub cpu_limit_m: f64,
    /// Memory request, MiB.
    pub mem_request_mi: f64,
    /// Memory limit, MiB.
    pub mem_limit_mi: f64,
    /// Keeps state (a primary with read replicas in the twin).
    pub stateful: bool,
    /// Replicas in the manifest (the starting point).
    pub replicas: u32,
    /// CPU per request, ms at speed 1.0 (`None`: the configuration's `twin.cpu_cost_ms`).
    pub cpu_cost_ms: Option<f64>,
    /// Time from container start until the application answers its readiness probe, s (`None`:
    /// the configuration's `twin.app_start_s`, by language).
    pub app_start_s: Option<f64>,
    /// Its readiness probe (`None`: the configuration's `twin.readiness_probe`).
    pub readiness_probe: Option<ProbeConfig>,
    /// What a stateful service stores with (`None` for a stateless one): which exporter's series
    /// the twin serves for it.
    pub engine: Option<Engine>,
}

/// The store behind a stateful service. The twin simulates both alike (a primary and read
/// replicas, replication lag under writes, a hit ratio); they differ in what they expose:
/// redis_exporter's series for Redis, mysqld_exporter's for MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Redis with replicas (redis_exporter).
    Redis,
    /// MySQL with replicas (mysqld_exporter).
    Mysql,
}

/// A call edge between two simulated services.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSpec {
    /// Caller index.
    pub from: usize,
    /// Callee index.
    pub to: usize,
    /// The caller ignores failures of this edge.
    pub optional: bool,
    /// The caller's deadline on this edge, seconds.
    pub client_timeout_s: Option<f64>,
    /// Wire protocol as the file names it (`grpc`, `http`, `redis`, …).
    pub protocol: String,
}

/// One node of a route's call tree: `count` sequential calls to `service`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallNode {
    /// Callee index.
    pub service: usize,
    /// RPC method name, as written in the file.
    pub method: String,
    /// Calls per parent invocation (a mean where the count varies).
    pub count: f64,
    /// Whether the call writes (matters for stateful stores: writes go to the primary).
    pub write: bool,
    /// Calls this one makes in turn.
    pub children: Vec<CallNode>,
}

/// A route of the entry service (an HTTP endpoint) and the calls it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `METHOD /path`.
    pub name: String,
    /// Calls made, in order, by the entry service while serving the route.
    pub calls: Vec<CallNode>,
}

/// A user task of the load model: a weight and the requests it sends in order.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct UserTask {
    /// Relative weight (Locust's `@task(weight)`).
    pub weight: f64,
    /// Route names, sent one after the other.
    pub requests: Vec<String>,
}

/// A parsed, validated topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Where it came from (a path or `synthetic-N`).
    pub source: String,
    /// Simulated services, in file order.
    pub services: Vec<ServiceSpec>,
    /// Index of the entry service in `services`.
    pub entry: usize,
    /// Call edges between simulated services.
    pub edges: Vec<EdgeSpec>,
    /// Routes of the entry service.
    pub routes: Vec<Route>,
    /// User tasks carried by the file, if any.
    pub user_tasks: Option<BTreeMap<String, UserTask>>,
    /// The cluster's node pools carried by the file (`cluster.node_types`), if any: they replace
    /// the configuration's `twin.cluster.node_types`.
    pub cluster: Option<Vec<crate::config::NodeTypeConfig>>,
}

#[derive(Debug, Deserialize)]
struct RawService {
    name: String,
    #[serde(default)]
    language: String,
    // Options, so that a manifest's `null` (a container declaring no resources) is refused
    // naming its service and field rather than by the JSON reader's type error.
    cpu_request_m: Option<f64>,
    cpu_limit_m: Option<f64>,
    mem_request_mi: Option<f64>,
    mem_limit_mi: Option<f64>,
    #[serde(default)]
    stateful: bool,
    #[serde(default)]
    container_port: Option<u32>,
    #[serde(default = "one")]
    replicas_in_manifest: u32,
    #[serde(default)]
    cpu_cost_ms: Option<f64>,
    #[serde(default)]
    app_start_s: Option<f64>,
    #[serde(default)]
    readiness_probe: Option<ProbeConfig>,
    #[serde(default)]
    engine: Option<String>,
}

fn one() -> u32 {
    1
}

fn grpc() -> String {
    "grpc".into()
}

#[derive(Debug, Deserialize)]
struct RawCall {
    from: String,
    to: String,
    #[serde(default = "grpc")]
    protocol: String,
    #[serde(default)]
    rpcs: String,
}

#[derive(Debug, Deserialize)]
struct RawTopology {
    services: Vec<RawService>,
    calls: Vec<RawCall>,
    frontend_endpoint_fanout: BTreeMap<String, Value>,
    #[serde(default)]
    entry: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, f64>,
    #[serde(default)]
    user_tasks: Option<BTreeMap<String, UserTask>>,
    #[serde(default)]
    cluster: Option<RawCluster>,
}

/// A topology's own node pools.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node_types: Vec<crate::config::NodeTypeConfig>,
}

/// Where a topology's errors point: the file (or source) they name.
#[derive(Clone, Copy)]
struct Located<'a>(&'a str);

impl Located<'_> {
    fn at(self, field: String, message: String) -> TwinError {
        TwinError::Topology {
            path: self.0.to_owned(),
            field,
            message,
        }
    }
}

/// A topology's node pools, checked: at least one node, every figure positive and finite.
fn read_cluster(c: RawCluster, err: Located) -> Result<Vec<crate::config::NodeTypeConfig>> {
    for (i, t) in c.node_types.iter().enumerate() {
        for (field, v) in [
            ("speed", t.speed),
            ("allocatable_cpu_m", t.allocatable_cpu_m),
            ("allocatable_mem_mi", t.allocatable_mem_mi),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(err.at(
                    format!("cluster.node_types[{i}].{field}"),
                    format!("node type `{}`: {v} is not a positive number", t.name),
                ));
            }
        }
    }
    if c.node_types.iter().map(|t| t.count).sum::<u32>() == 0 {
        return Err(err.at(
            "cluster.node_types".into(),
            "the topology's cluster has no node (every count is 0, or no node type)".into(),
        ));
    }
    Ok(c.node_types)
}

/// The simulated services, checked, and the load generators (services that declare no port and
/// nobody calls: they are not simulated).
fn read_services(raw: &RawTopology, err: Located) -> Result<(Vec<ServiceSpec>, Vec<String>)> {
    // Which services are load generators (not simulated)?
    let callee_names: std::collections::HashSet<&str> =
        raw.calls.iter().map(|c| c.to.as_str()).collect();
    let mut services = Vec::new();
    let mut generators = Vec::new();
    for (i, s) in raw.services.iter().enumerate() {
        let field = format!("services[{i}]");
        if s.name.is_empty() {
            return Err(err.at(format!("{field}.name"), "empty service name".into()));
        }
        if services.iter().any(|x: &ServiceSpec| x.name == s.name) || generators.contains(&s.name) {
            return Err(err.at(
                format!("{field}.name"),
                format!("duplicate service `{}`", s.name),
            ));
        }
        if s.container_port.is_none() && !callee_names.contains(s.name.as_str()) {
            generators.push(s.name.clone());
            continue;
        }
        let mut resources = [0.0; 4];
        for (r, (v, f)) in resources.iter_mut().zip([
            (s.cpu_request_m, "cpu_request_m"),
            (s.cpu_limit_m, "cpu_limit_m"),
            (s.mem_request_mi, "mem_request_mi"),
            (s.mem_limit_mi, "mem_limit_mi"),
        ]) {
            *r = match v {
                Some(v) if v.is_finite() && v > 0.0 => v,
                Some(v) => {
                    return Err(err.at(
                        format!("{field}.{f}"),
                        format!("service `{}`: must be a positive number, got {v}", s.name),
                    ))
                }
                None => {
                    return Err(err.at(
                        format!("{field}.{f}"),
                        format!(
                            "service `{}` declares no {f} (missing or null): the twin schedules and throttles by requests and limits, so every simulated service needs all four; write the values the cluster gives it (a LimitRange's defaults, or its observed usage)",
                            s.name
                        ),
                    ))
                }
            };
        }
        let [cpu_request_m, cpu_limit_m, mem_request_mi, mem_limit_mi] = resources;
        if let Some(c) = s.cpu_cost_ms.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(err.at(
                format!("{field}.cpu_cost_ms"),
                format!("service `{}`: must be a positive number, got {c}", s.name),
            ));
        }
        if let Some(a) = s.app_start_s.filter(|a| !(a.is_finite() && *a >= 0.0)) {
            return Err(err.at(
                format!("{field}.app_start_s"),
                format!("service `{}`: must be a number >= 0, got {a}", s.name),
            ));
        }
        if let Some(p) = s.readiness_probe.as_ref().filter(|p| {
            !(p.period_s.is_finite()
                && p.period_s > 0.0
                && p.initial_delay_s.is_finite()
                && p.initial_delay_s >= 0.0)
        }) {
            return Err(err.at(
                format!("{field}.readiness_probe"),
                format!(
                    "service `{}`: needs period_s > 0 and initial_delay_s >= 0, got {} and {}",
                    s.name, p.period_s, p.initial_delay_s
                ),
            ));
        }
        let engine = match (s.stateful, s.engine.as_deref()) {
            (false, None) => None,
            (true, None | Some("redis")) => Some(Engine::Redis),
            (true, Some("mysql")) => Some(Engine::Mysql),
            (true, Some(other)) => {
                return Err(err.at(
                    format!("{field}.engine"),
                    format!(
                        "service `{}`: engine `{other}` is not one the twin simulates (redis or mysql)",
                        s.name
                    ),
                ))
            }
            (false, Some(e)) => {
                return Err(err.at(
                    format!("{field}.engine"),
                    format!(
                        "service `{}`: engine `{e}` is for stateful services; set `stateful: true` or remove it",
                        s.name
                    ),
                ))
            }
        };
        if cpu_limit_m < cpu_request_m {
            return Err(err.at(
                format!("{field}.cpu_limit_m"),
                format!(
                    "service `{}`: limit {cpu_limit_m} m is below the request {cpu_request_m} m",
                    s.name
                ),
            ));
        }
        services.push(ServiceSpec {
            name: s.name.clone(),
            language: s.language.clone(),
            cpu_request_m,
            cpu_limit_m,
            mem_request_mi,
            mem_limit_mi,
            stateful: s.stateful,
            replicas: s.replicas_in_manifest.max(1),
            cpu_cost_ms: s.cpu_cost_ms,
            app_start_s: s.app_start_s,
            readiness_probe: s.readiness_probe.clone(),
            engine,
        });
    }
    if services.is_empty() {
        return Err(err.at("services".into(), "no simulated service".into()));
    }
    Ok((services, generators))
}

fn service_index(services: &[ServiceSpec], name: &str) -> Option<usize> {
    services.iter().position(|s| s.name == name)
}

/// The call edges between simulated services, and the service a load generator calls (the
/// entry, unless the file names one).
fn read_calls(
    raw: &RawTopology,
    services: &[ServiceSpec],
    generators: &[String],
    err: Located,
) -> Result<(Vec<EdgeSpec>, Option<usize>)> {
    let index = |name: &str| service_index(services, name);
    let mut edges = Vec::new();
    let mut entry_from_generator = None;
    for (i, c) in raw.calls.iter().enumerate() {
        if generators.contains(&c.from) {
            let to = index(&c.to).ok_or_else(|| {
                err.at(
                    format!("calls[{i}].to"),
                    format!("unknown service `{}`", c.to),
                )
            })?;
            entry_from_generator = Some(to);
            continue;
        }
        let from = index(&c.from).ok_or_else(|| {
            err.at(
                format!("calls[{i}].from"),
                format!("unknown service `{}`", c.from),
            )
        })?;
        let to = index(&c.to).ok_or_else(|| {
            err.at(
                format!("calls[{i}].to"),
                format!("unknown service `{}`", c.to),
            )
        })?;
        edges.push(EdgeSpec {
            from,
            to,
            optional: c.rpcs.contains("errors ignored"),
            client_timeout_s: parse_timeout_ms(&c.rpcs).map(|ms| ms / 1000.0),
            protocol: c.protocol.clone(),
        });
    }
    Ok((edges, entry_from_generator))
}

/// The entry service: the file's `entry`, else the one a load generator calls, else the only
/// service nobody calls.
fn find_entry(
    raw: &RawTopology,
    services: &[ServiceSpec],
    edges: &[EdgeSpec],
    entry_from_generator: Option<usize>,
    err: Located,
) -> Result<usize> {
    let index = |name: &str| service_index(services, name);
    Ok(match (&raw.entry, entry_from_generator) {
        (Some(name), _) => index(name)
            .ok_or_else(|| err.at("entry".into(), format!("unknown service `{name}`")))?,
        (None, Some(e)) => e,
        (None, None) => {
            let roots: Vec<usize> = (0..services.len())
                .filter(|&i| !edges.iter().any(|e| e.to == i))
                .collect();
            match roots.as_slice() {
                [r] => *r,
                _ => {
                    return Err(err.at(
                        "entry".into(),
                        "cannot tell the entry service: give `entry` or a load generator".into(),
                    ))
                }
            }
        }
    })
}

/// The entry's routes (`frontend_endpoint_fanout`), each call string parsed against the services
/// and `params`, its implicit calls expanded and its edges checked; and `user_tasks`' routes.
fn read_routes(
    raw: &RawTopology,
    services: &[ServiceSpec],
    edges: &[EdgeSpec],
    entry: usize,
    params: &BTreeMap<String, f64>,
    err: Located,
) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    for (name, v) in &raw.frontend_endpoint_fanout {
        if name.starts_with('_') {
            continue;
        }
        let field = format!("frontend_endpoint_fanout[\"{name}\"]");
        let items = v
            .as_array()
            .ok_or_else(|| err.at(field.clone(), "expected a list of call strings".into()))?;
        let mut calls = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let s = item
                .as_str()
                .ok_or_else(|| err.at(format!("{field}[{j}]"), "expected a string".into()))?;
            let s = s.trim();
            if s.starts_with('(') || s.is_empty() {
                continue; // a route without calls: "(no RPC)"
            }
            let mut p = CallParser {
                s: s.as_bytes(),
                pos: 0,
                services,
                params,
            };
            let node = p
                .call()
                .map_err(|m| err.at(format!("{field}[{j}]"), format!("{m} in `{s}`")))?;
            // The whole string is the call: nothing the grammar does not read is dropped.
            p.ws();
            if p.pos < p.s.len() {
                return Err(err.at(
                    format!("{field}[{j}]"),
                    format!(
                        "unexpected `{}` at byte {} in `{s}` (a call is `service[.Method] [x COUNT] [(-> nested calls) or (a note)]`)",
                        String::from_utf8_lossy(&p.s[p.pos..]),
                        p.pos
                    ),
                ));
            }
            calls.push(node);
        }
        for c in &mut calls {
            expand_implicit(c, edges, 0).map_err(|m| err.at(field.clone(), m))?;
            check_edges(entry, c, edges, services).map_err(|m| err.at(field.clone(), m))?;
        }
        routes.push(Route {
            name: name.clone(),
            calls,
        });
    }
    if routes.is_empty() {
        return Err(err.at(
            "frontend_endpoint_fanout".into(),
            "no route of the entry service".into(),
        ));
    }
    if let Some(tasks) = &raw.user_tasks {
        for (t, task) in tasks {
            for r in &task.requests {
                if !routes.iter().any(|x| &x.name == r) {
                    return Err(err.at(
                        format!("user_tasks[\"{t}\"].requests"),
                        format!("unknown route `{r}`"),
                    ));
                }
            }
        }
    }
    Ok(routes)
}

/// Where the compiled-in Online Boutique topology comes from, and the name it goes by in errors
/// and checkpoints (the same as when the file is read from a checkout).
pub const ONLINE_BOUTIQUE_SOURCE: &str = "data/topologies/online-boutique.json";

/// Online Boutique's topology file, compiled in: the default of `twin.topology`, so that every
/// command works from any directory, and what tests and benchmarks start from.
pub const ONLINE_BOUTIQUE_JSON: &str =
    include_str!("../../../data/topologies/online-boutique.json");

impl Topology {
    /// Online Boutique as shipped ([`ONLINE_BOUTIQUE_JSON`]), compiled in.
    pub fn online_boutique(parameters: &BTreeMap<String, f64>) -> Result<Self> {
        Self::from_json_str(ONLINE_BOUTIQUE_JSON, ONLINE_BOUTIQUE_SOURCE, parameters)
    }

    /// Reads and validates a topology file. `parameters` supplies fan-out counts that the file
    /// leaves symbolic (the file's own `parameters` win).
    pub fn from_file(path: &Path, parameters: &BTreeMap<String, f64>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| TwinError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_str(&text, &path.display().to_string(), parameters)
    }

    /// Parses a topology from JSON text; `source` names it in errors.
    pub fn from_json_str(
        text: &str,
        source: &str,
        parameters: &BTreeMap<String, f64>,
    ) -> Result<Self> {
        let raw: RawTopology =
            serde_json::from_str(text).map_err(|e| TwinError::TopologyParse {
                path: source.to_owned(),
                message: e.to_string(),
            })?;
        Self::from_raw(raw, source, parameters)
    }

    fn from_raw(
        raw: RawTopology,
        source: &str,
        parameters: &BTreeMap<String, f64>,
    ) -> Result<Self> {
        let err = Located(source);
        let mut params = parameters.clone();
        params.extend(raw.parameters.clone());
        let (services, generators) = read_services(&raw, err)?;
        let (edges, entry_from_generator) = read_calls(&raw, &services, &generators, err)?;
        let entry = find_entry(&raw, &services, &edges, entry_from_generator, err)?;
        let routes = read_routes(&raw, &services, &edges, entry, &params, err)?;
        let cluster = raw.cluster.map(|c| read_cluster(c, err)).transpose()?;
        Ok(Topology {
            source: source.to_owned(),
            services,
            entry,
            edges,
            routes,
            user_tasks: raw.user_tasks,
            cluster,
        })
    }

    /// Index of service `name`.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        service_index(&self.services, name)
    }

    /// The edge `from → to`, if declared.
    pub fn edge(&self, from: usize, to: usize) -> Option<&EdgeSpec> {
        self.edges.iter().find(|e| e.from == from && e.to == to)
    }

    /// A synthetic layered topology with `n` services in the same file format, for scale tests
    /// and benchmarks: an entry service, about 5% of services in a first layer (one route each),
    /// 20% in a second and the rest in a third; every service has a caller.
    pub fn synthetic_json(n: usize, seed: u64) -> Value {
        use rand::{Rng, SeedableRng};
        let n = n.max(4);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let l1 = ((n as f64 * 0.05).round() as usize).clamp(1, n - 2);
        let l2 = ((n as f64 * 0.20).round() as usize).clamp(1, n - 1 - l1);
        let l3 = n - 1 - l1 - l2;
        let name = |layer: usize, i: usize| format!("svc-l{layer}-{i:04}");
        let langs = ["Go", "Java", "Python", "Node.js", "C#"];
        let mut services = vec![serde_json::json!({
            "name": "entry", "language": "Go", "cpu_request_m": 200, "cpu_limit_m": 400,
            "mem_request_mi": 128, "mem_limit_mi": 256, "stateful": false, "container_port": 8080,
            "replicas_in_manifest": 2
        })];
        let mut calls = vec![];
        for (layer, count) in [(1, l1), (2, l2), (3, l3)] {
            for i in 0..count {
                let req = [100, 100, 200][rng.random_range(0..3)];
                services.push(serde_json::json!({
                    "name": name(layer, i), "language": langs[rng.random_range(0..langs.len())],
                    "cpu_request_m": req, "cpu_limit_m": req * 2, "mem_request_mi": 64,
                    "mem_limit_mi": 128, "stateful": layer == 3 && i % 97 == 0,
                    "container_port": 8080, "replicas_in_manifest": 1
                }));
            }
        }
        let mut children: Vec<Vec<String>> = vec![vec![]; l1 + l2];
        for i in 0..l1 {
            calls.push(serde_json::json!({"from": "entry", "to": name(1, i), "protocol": "grpc", "rpcs": "Call"}));
        }
        for i in 0..l2 {
            let mut parents = vec![i % l1];
            let extra = rng.random_range(0..l1);
            if !parents.contains(&extra) {
                parents.push(extra);
            }
            for p in parents {
                calls.push(serde_json::json!({"from": name(1, p), "to": name(2, i), "protocol": "grpc", "rpcs": "Call"}));
                children[p].push(name(2, i));
            }
        }
        for i in 0..l3 {
            let mut parents = vec![i % l2];
            let extra = rng.random_range(0..l2);
            if !parents.contains(&extra) {
                parents.push(extra);
            }
            for p in parents {
                calls.push(serde_json::json!({"from": name(2, p), "to": name(3, i), "protocol": "grpc", "rpcs": "Call"}));
                children[l1 + p].push(name(3, i));
            }
        }
        let mut fanout = serde_json::Map::new();
        let mut tasks = serde_json::Map::new();
        for i in 0..l1 {
            let route = format!("GET /api/{i:04}");
            fanout.insert(
                route.clone(),
                serde_json::json!([format!("{}.Call x1", name(1, i))]),
            );
            tasks.insert(
                format!("task-{i:04}"),
                serde_json::json!({"weight": 1.0, "requests": [route]}),
            );
        }
        services.push(serde_json::json!({
            "name": "loadgenerator", "language": "Python/Locust", "cpu_request_m": 300,
            "cpu_limit_m": 500, "mem_request_mi": 256, "mem_limit_mi": 512, "stateful": false,
            "container_port": null, "replicas_in_manifest": 1
        }));
        calls.push(serde_json::json!({"from": "loadgenerator", "to": "entry", "protocol": "http", "rpcs": "HTTP"}));
        serde_json::json!({
            "provenance": {"generator": format!("graphscaler synthetic topology, {n} services, seed {seed}")},
            "services": services,
            "calls": calls,
            "frontend_endpoint_fanout": fanout,
            "user_tasks": tasks,
        })
    }

    /// [`Topology::synthetic_json`], parsed.
    pub fn synthetic(n: usize, seed: u64) -> Self {
        let v = Self::synthetic_json(n, seed);
        let raw: RawTopology =
            serde_json::from_value(v).expect("the synthetic generator writes the file format");
        Self::from_raw(raw, &format!("synthetic-{n}"), &BTreeMap::new())
            .expect("the synthetic generator writes a valid topology")
    }
}

fn parse_timeout_ms(rpcs: &str) -> Option<f64> {
    let i = rpcs.find("timeout ")?;
    let rest = &rpcs[i + "timeout ".len()..];
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let after = rest[num.len()..].trim_start();
    if after.starts_with("ms") {
        num.parse().ok()
    } else if after.starts_with('s') {
        num.parse::<f64>().ok().map(|s| s * 1000.0)
    } else {
        None
    }
}

fn is_read_method(method: &str) -> bool {
    ["Get", "List", "Read", "Fetch", "Search"]
        .iter()
        .any(|p| method.starts_with(p))
}

/// Adds the implicit children of calls that list none: each outgoing edge of the callee, once.
fn expand_implicit(
    node: &mut CallNode,
    edges: &[EdgeSpec],
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 32 {
        return Err("call tree deeper than 32 levels (a cycle in `calls`?)".into());
    }
    if node.children.is_empty() {
        for e in edges.iter().filter(|e| e.from == node.service) {
            node.children.push(CallNode {
                service: e.to,
                method: if node.write {
                    "WRITE".into()
                } else {
                    "READ".into()
                },
                count: 1.0,
                write: node.write,
                children: vec![],
            });
        }
    }
    for c in &mut node.children {
        expand_implicit(c, edges, depth + 1)?;
    }
    Ok(())
}

fn check_edges(
    parent: usize,
    node: &CallNode,
    edges: &[EdgeSpec],
    services: &[ServiceSpec],
) -> std::result::Result<(), String> {
    if !edges
        .iter()
        .any(|e| e.from == parent && e.to == node.service)
    {
        return Err(format!(
            "{} calls {}, but `calls` has no edge {} -> {}",
            services[parent].name,
            services[node.service].name,
            services[parent].name,
            services[node.service].name
        ));
    }
    for c in &node.children {
        check_edges(node.service, c, edges, services)?;
    }
    Ok(())
}

struct CallParser<'a> {
    s: &'a [u8],
    pos: usize,
    services: &'a [ServiceSpec],
    params: &'a BTreeMap<String, f64>,
}

impl CallParser<'_> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn ident(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
                self.pos += 1;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }
    /// The text inside a balanced pair of parentheses; `pos` is at the `(`.
    fn parenthesised(&mut self) -> std::result::Result<String, String> {
        let start = self.pos + 1;
        let mut depth = 0;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(
                            String::from_utf8_lossy(&self.s[start..self.pos - 1]).into_owned()
                        );
                    }
                }
                _ => {}
            }
        }
        Err("unbalanced parenthesis".into())
    }

    fn call(&mut self) -> std::result::Result<CallNode, String> {
        self.ws();
        let service = self.ident();
        if service.is_empty() {
            return Err(format!("expected a service name at byte {}", self.pos));
        }
        let idx = self
            .services
            .iter()
            .position(|s| s.name == service)
            .ok_or_else(|| format!("unknown service `{service}`"))?;
        let method = if self.peek() == Some(b'.') {
            self.pos += 1;
            self.ident()
        } else {
            String::new()
        };
        self.ws();
        let mut count = 1.0;
        if self.peek() == Some(b'x') {
            let next = self.s.get(self.pos + 1).copied();
            if matches!(next, Some(c) if c.is_ascii_digit() || c == b' ' || c == b'(') {
                self.pos += 1;
                self.ws();
                count = self.count()?;
                self.ws();
            }
        }
        let mut children = Vec::new();
        if self.peek() == Some(b'(') {
            let inner = self.parenthesised()?;
            let t = inner.trim_start();
            if let Some(list) = t.strip_prefix("->") {
                let mut p = CallParser {
                    s: list.as_bytes(),
                    pos: 0,
                    services: self.services,
                    params: self.params,
                };
                loop {
                    children.push(p.call()?);
                    p.ws();
                    match p.peek() {
                        Some(b',') => p.pos += 1,
                        None => break,
                        Some(c) => {
                            return Err(format!("unexpected `{}` in nested calls", c as char))
                        }
                    }
                }
            }
        }
        let write = !is_read_method(&method);
        for c in &mut children {
            if c.method.is_empty() {
                c.write = write;
            }
        }
        Ok(CallNode {
            service: idx,
            method,
            count,
            write,
            children,
        })
    }

    fn count(&mut self) -> std::result::Result<f64, String> {
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_digit() || c == b'.') {
                    self.pos += 1;
                }
                let t = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                t.parse().map_err(|_| format!("bad count `{t}`"))
            }
            Some(b'(') => {
                let text = self.parenthesised()?;
                match text.find("<=") {
                    Some(i) => {
                        let num: String = text[i + 2..]
                            .trim_start()
                            .chars()
                            .take_while(|c| c.is_ascii_digit())
                            .collect();
                        num.parse()
                            .map_err(|_| format!("bad bound in count `({text})`"))
                    }
                    None => Err(format!(
                        "count `({text})` has no `<=N` bound to take as the count"
                    )),
                }
            }
            _ => {
                let name = self.ident();
                self.params.get(&name).copied().ok_or_else(|| {
                    format!("unknown fan-out parameter `{name}` (set it in the topology's `parameters` or in [twin.fanout_parameters])")
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, f64> {
        [("N_products", 9.0), ("cart_items", 2.0), ("items", 2.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn ob() -> Topology {
        Topology::online_boutique(&params()).unwrap()
    }

    /// Every malformed topology of `tests/fixtures/topologies` is refused naming the file, the
    /// field (service or route) and the offending text.
    #[test]
    fn malformed_topologies_are_refused_naming_what_is_wrong() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/topologies");
        for (file, field, what) in [
            (
                "not-the-grammar.json",
                "frontend_endpoint_fanout[\"GET /\"][1]",
                "unexpected `THIS IS NOT THE GRAMMAR x999 (-> no-such-service.Foo x999)` at byte 22",
            ),
            (
                "null-resources.json",
                "services[6].cpu_request_m",
                "service `emailservice` declares no cpu_request_m (missing or null)",
            ),
            (
                "two-calls-in-one-string.json",
                "frontend_endpoint_fanout[\"POST /cart\"][0]",
                "unexpected `, cartservice.GetCart`",
            ),
        ] {
            let msg = Topology::from_file(&dir.join(file), &params())
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(file) && msg.contains(field) && msg.contains(what),
                "{file}: {msg}"
            );
        }
    }

    #[test]
    fn online_boutique_parses_with_the_real_call_trees() {
        let t = ob();
        assert_eq!(t.services.len(), 11, "loadgenerator is not simulated");
        assert_eq!(t.services[t.entry].name, "frontend");
        let home = t.routes.iter().find(|r| r.name == "GET /").unwrap();
        let convert = home
            .calls
            .iter()
            .find(|c| t.services[c.service].name == "currencyservice" && c.method == "Convert")
            .unwrap();
        assert_eq!(convert.count, 9.0);
        // cartservice reaches redis-cart through the implicit edge, as a read for GetCart.
        let cart = home
            .calls
            .iter()
            .find(|c| t.services[c.service].name == "cartservice")
            .unwrap();
        assert_eq!(cart.children.len(), 1);
        assert_eq!(t.services[cart.children[0].service].name, "redis-cart");
        assert!(!cart.children[0].write);
        let checkout = t
            .routes
            .iter()
            .find(|r| r.name == "POST /cart/checkout")
            .unwrap();
        let place = &checkout.calls[0];
        assert_eq!(place.method, "PlaceOrder");
        assert_eq!(place.children.len(), 9);
        let rec_ids = checkout
            .calls
            .iter()
            .find(|c| c.method == "GetProduct")
            .unwrap();
        assert_eq!(rec_ids.count, 5.0, "`(recommended ids, <=5)` counts 5");
        let ad = t
            .edge(t.entry, t.service_index("adservice").unwrap())
            .unwrap();
        assert!(ad.optional);
        assert_eq!(ad.client_timeout_s, Some(0.1));
        let set_currency = t
            .routes
            .iter()
            .find(|r| r.name == "POST /setCurrency")
            .unwrap();
        assert!(set_currency.calls.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let bad = r#"{"services":[{"name":"a","cpu_request_m":100,"cpu_limit_m":50,"mem_request_mi":1,"mem_limit_mi":1,"container_port":1}],
                      "calls":[],"frontend_endpoint_fanout":{"GET /":[]},"entry":"a"}"#;
        let e = Topology::from_json_str(bad, "bad.json", &params()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bad.json") && msg.contains("services[0].cpu_limit_m"),
            "{msg}"
        );

        let bad = r#"{"services":[{"name":"a","cpu_request_m":100,"cpu_limit_m":200,"mem_request_mi":1,"mem_limit_mi":1,"container_port":1}],
                      "calls":[],"frontend_endpoint_fanout":{"GET /":["b.Get x1"]},"entry":"a"}"#;
        let msg = Topology::from_json_str(bad, "t.json", &params())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("frontend_endpoint_fanout[\"GET /\"][0]")
                && msg.contains("unknown service `b`"),
            "{msg}"
        );

        let bad = r#"{"services":[{"name":"a","cpu_request_m":100,"cpu_limit_m":200,"mem_request_mi":1,"mem_limit_mi":1,"container_port":1},
                                  {"name":"b","cpu_request_m":100,"cpu_limit_m":200,"mem_request_mi":1,"mem_limit_mi":1,"container_port":1}],
                      "calls":[],"frontend_endpoint_fanout":{"GET /":["b.Get x nope"]},"entry":"a"}"#;
        let msg = Topology::from_json_str(bad, "t.json", &params())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown fan-out parameter `nope`"), "{msg}");

        let bad = r#"{"services":[{"name":"a","cpu_request_m":100,"cpu_limit_m":200,"mem_request_mi":1,"mem_limit_mi":1,"container_port":1},
                                  {"name":"b","cpu_request_m":100,"cpu_limit_m":200,"mem_request_mi":1,"mem_limit_mi":1,"container_port":1}],
                      "calls":[],"frontend_endpoint_fanout":{"GET /":["b.Get x1"]},"entry":"a"}"#;
        let msg = Topology::from_json_str(bad, "t.json", &params())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no edge a -> b"), "{msg}");

        let truncated = r#"{"services":[{"name":"a","#;
        let msg = Topology::from_json_str(truncated, "cut.json", &params())
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("topology cut.json:") && msg.contains("line 1"),
            "{msg}"
        );
    }

    #[test]
    fn synthetic_topologies_use_the_same_format() {
        let t = Topology::synthetic(1000, 7);
        assert_eq!(t.services.len(), 1000);
        assert_eq!(t.routes.len(), 50);
        // Every service other than the entry has a caller.
        for i in 0..t.services.len() {
            if i != t.entry {
                assert!(t.edges.iter().any(|e| e.to == i), "{}", t.services[i].name);
            }
        }
        assert_eq!(Topology::synthetic(50, 1), Topology::synthetic(50, 1));
    }
}
