//! The Kiali graph API (`/api/namespaces/graph`) in Kiali's response format: a Cytoscape
//! `elements` object of workload nodes and edges with hashed ids, rates as strings under
//! `traffic.rates`, and `responseTime` (p95, ms) when the `responseTime` appender is asked for.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use graphscaler_schemas::ClusterObservation;
use graphscaler_twin::Topology;

/// Query parameters Kiali takes (those the twin honours).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct GraphQuery {
    /// Comma-separated namespaces.
    pub namespaces: Option<String>,
    /// `workload` (the only graph type the twin serves).
    #[serde(rename = "graphType")]
    pub graph_type: Option<String>,
    /// Rate window, e.g. `60s`.
    pub duration: Option<String>,
    /// Comma-separated appenders; `responseTime` adds edge p95.
    pub appenders: Option<String>,
    /// Query time, Unix seconds.
    #[serde(rename = "queryTime")]
    pub query_time: Option<i64>,
}

/// Kiali's node id: a SHA-256 hex digest of what identifies the node.
pub fn node_id(cluster: &str, namespace: &str, workload: &str) -> String {
    hex(&Sha256::digest(
        format!("{cluster}/{namespace}/{workload}").as_bytes(),
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rate(v: f64) -> String {
    format!("{v:.2}")
}

fn pct(v: f64) -> String {
    format!("{v:.1}")
}

/// Kiali's protocol for a topology protocol name.
fn kiali_protocol(p: &str) -> &'static str {
    match p {
        "grpc" => "grpc",
        "http" => "http",
        _ => "tcp",
    }
}

/// Assumed bytes per request on TCP edges (Kiali reports TCP traffic in bytes per second).
pub const TCP_BYTES_PER_REQUEST: f64 = 512.0;

/// The workload graph of `namespace` from the latest observation.
pub fn graph(
    topo: &Topology,
    obs: &ClusterObservation,
    cluster: &str,
    namespace: &str,
    q: &GraphQuery,
    timestamp: i64,
) -> Value {
    let response_time = q
        .appenders
        .as_deref()
        .is_some_and(|a| a.split(',').any(|x| x.trim() == "responseTime"));
    let duration = q
        .duration
        .as_deref()
        .and_then(|d| d.trim_end_matches('s').parse::<i64>().ok())
        .unwrap_or(600);

    let mut nodes = vec![];
    let root = node_id("unknown", "unknown", "unknown");
    let entry = &topo.services[topo.entry].name;
    let entry_rps = obs.service(entry).map_or(0.0, |s| s.rps);
    nodes.push(json!({"data": {
        "id": root, "nodeType": "unknown", "cluster": "unknown", "namespace": "unknown",
        "workload": "unknown", "app": "unknown", "version": "unknown",
        "traffic": [{"protocol": "http", "rates": {"httpOut": rate(entry_rps)}}],
        "healthData": null, "isInaccessible": true, "isRoot": true
    }}));
    for s in &obs.services {
        let mut traffic = vec![];
        let mut add = |proto: &str, key: &str, v: f64| {
            if v <= 0.0 {
                return;
            }
            let proto = kiali_protocol(proto);
            let entry = traffic
                .iter_mut()
                .find(|t: &&mut Value| t["protocol"] == proto);
            let key = format!("{proto}{key}");
            let v = if proto == "tcp" {
                v * TCP_BYTES_PER_REQUEST
            } else {
                v
            };
            match entry {
                Some(t) => {
                    let r = t["rates"].as_object_mut().expect("rates is an object");
                    let old: f64 = r
                        .get(&key)
                        .and_then(Value::as_str)
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0.0);
                    r.insert(key, Value::String(rate(old + v)));
                }
                None => traffic.push(json!({"protocol": proto, "rates": {key: rate(v)}})),
            }
        };
        let idx = topo.service_index(&s.name);
        let inbound_proto = idx
            .and_then(|i| {
                topo.edges
                    .iter()
                    .find(|e| e.to == i)
                    .map(|e| e.protocol.clone())
            })
            .unwrap_or_else(|| "http".into());
        add(&inbound_proto, "In", s.rps);
        for e in obs.edges.iter().filter(|e| e.source == s.name) {
            let proto = idx
                .zip(topo.service_index(&e.destination))
                .and_then(|(a, b)| topo.edge(a, b))
                .map_or("grpc".to_string(), |x| x.protocol.clone());
            add(&proto, "Out", e.rps);
        }
        nodes.push(json!({"data": {
            "id": node_id(cluster, namespace, &s.name), "nodeType": "workload", "cluster": cluster,
            "namespace": namespace, "workload": s.name, "app": s.name, "version": "v1",
            "destServices": [{"cluster": cluster, "namespace": namespace, "name": s.name}],
            "traffic": traffic, "healthData": null
        }}));
    }

    let mut edges = vec![];
    let mut push_edge = |source: String,
                         target_name: &str,
                         proto: &str,
                         rps: f64,
                         err: f64,
                         p95: f64,
                         share: f64| {
        let target = node_id(cluster, namespace, target_name);
        let proto = kiali_protocol(proto);
        let mut rates = Map::new();
        let mut responses = Map::new();
        if proto == "tcp" {
            rates.insert(
                "tcp".into(),
                Value::String(rate(rps * TCP_BYTES_PER_REQUEST)),
            );
            responses.insert(
                "-".into(),
                json!({"flags": {"-": "100.0"}, "hosts": {format!("{target_name}:tcp"): "100.0"}}),
            );
        } else {
            rates.insert(proto.into(), Value::String(rate(rps)));
            if err > 0.0 {
                let (k, code) = if proto == "grpc" {
                    ("grpcErr", "14")
                } else {
                    ("http5xx", "503")
                };
                rates.insert(k.into(), Value::String(rate(rps * err)));
                rates.insert(
                    format!("{proto}PercentErr"),
                    Value::String(pct(100.0 * err)),
                );
                responses.insert(code.into(), json!({"flags": {"-": pct(100.0 * err)}, "hosts": {format!("{target_name}.{namespace}.svc.cluster.local"): pct(100.0 * err)}}));
            }
            rates.insert(
                format!("{proto}PercentReq"),
                Value::String(pct(100.0 * share)),
            );
            let ok_code = if proto == "grpc" { "0" } else { "200" };
            responses.insert(ok_code.into(), json!({"flags": {"-": pct(100.0 * (1.0 - err))}, "hosts": {format!("{target_name}.{namespace}.svc.cluster.local"): pct(100.0 * (1.0 - err))}}));
        }
        let mut data = json!({
            "id": hex(&Sha256::digest(format!("{source}->{target}").as_bytes())),
            "source": source, "target": target,
            "traffic": {"protocol": proto, "rates": rates, "responses": responses}
        });
        if response_time && proto != "tcp" {
            data["responseTime"] = Value::String(format!("{:.0}", p95));
        }
        edges.push(json!({"data": data}));
    };
    if let Some(fe) = obs.service(entry) {
        push_edge(
            root.clone(),
            entry,
            "http",
            fe.rps,
            fe.error_rate,
            fe.p95_ms,
            1.0,
        );
    }
    for e in &obs.edges {
        let out_total: f64 = obs
            .edges
            .iter()
            .filter(|x| x.source == e.source)
            .map(|x| x.rps)
            .sum();
        let proto = topo
            .service_index(&e.source)
            .zip(topo.service_index(&e.destination))
            .and_then(|(a, b)| topo.edge(a, b))
            .map_or("grpc".to_string(), |x| x.protocol.clone());
        let share = if out_total > 0.0 {
            e.rps / out_total
        } else {
            0.0
        };
        push_edge(
            node_id(cluster, namespace, &e.source),
            &e.destination,
            &proto,
            e.rps,
            e.error_rate,
            e.p95_ms,
            share,
        );
    }
    json!({
        "timestamp": q.query_time.unwrap_or(timestamp),
        "duration": duration,
        "graphType": "workload",
        "elements": {"nodes": nodes, "edges": edges}
    })
}
