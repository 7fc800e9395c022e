//! The Kiali graph API (`GET /api/namespaces/graph?…&graphType=workload`).

use std::collections::HashMap;

use serde_json::Value;

use crate::{ParseError, Parsed};

const TARGET: &str = "kiali graph";

/// The calls between two workloads, every protocol Kiali reported between them merged into one
/// edge (as Kiali's side panel totals them): requests per second over `http` and `grpc`, bytes
/// per second over `tcp`.
#[derive(Debug, Clone, PartialEq)]
pub struct KialiEdge {
    /// Calling workload.
    pub source: String,
    /// Its namespace.
    pub source_namespace: String,
    /// Its cluster (Kiali's node `cluster`; empty when Kiali gives none).
    pub source_cluster: String,
    /// Called workload.
    pub destination: String,
    /// Its namespace.
    pub destination_namespace: String,
    /// Its cluster (empty when Kiali gives none).
    pub destination_cluster: String,
    /// The protocols between the two, sorted (`grpc`, `http`, `tcp`).
    pub protocols: Vec<String>,
    /// Requests per second over `http` and `grpc`.
    pub rps: f64,
    /// Bytes per second over `tcp`.
    pub tcp_bytes_per_s: f64,
    /// Share of the requests that failed (Kiali's `httpPercentErr`/`grpcPercentErr`, or its
    /// error counts, over the summed request rate; 0 without requests).
    pub error_rate: f64,
    /// p95 response time, ms, when the `responseTime` appender ran: the largest over the request
    /// protocols (a p95 of merged traffic cannot be computed from per-protocol p95s; the largest
    /// bounds the slower protocol's).
    pub p95_ms: Option<f64>,
}

impl KialiEdge {
    /// Where it runs: (source cluster, namespace, workload, destination cluster, namespace,
    /// workload).
    fn ends(&self) -> [&str; 6] {
        [
            &self.source_cluster,
            &self.source_namespace,
            &self.source,
            &self.destination_cluster,
            &self.destination_namespace,
            &self.destination,
        ]
    }

    /// Adds `other`'s traffic (between the same ends) to this edge's.
    fn merge(&mut self, other: KialiEdge) {
        let errors = self.error_rate * self.rps + other.error_rate * other.rps;
        self.rps += other.rps;
        self.tcp_bytes_per_s += other.tcp_bytes_per_s;
        self.error_rate = if self.rps > 0.0 {
            (errors / self.rps).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.p95_ms = match (self.p95_ms, other.p95_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for p in other.protocols {
            if !self.protocols.contains(&p) {
                self.protocols.push(p);
            }
        }
        self.protocols.sort();
    }
}

/// Merges edges between the same ends (in the order each pair was first seen).
pub fn merge_edges(edges: impl IntoIterator<Item = KialiEdge>) -> Vec<KialiEdge> {
    let mut out: Vec<KialiEdge> = vec![];
    let mut at: HashMap<[String; 6], usize> = HashMap::new();
    for e in edges {
        let key = e.ends().map(str::to_owned);
        match at.get(&key) {
            Some(&i) => out[i].merge(e),
            None => {
                at.insert(key, out.len());
                out.push(e);
            }
        }
    }
    out
}

fn num(v: Option<&Value>) -> Option<f64> {
    let x = match v? {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// A workload node: (workload, namespace, cluster).
type Workload<'a> = (&'a str, &'a str, &'a str);

/// The graph's nodes: the workloads by id, and every node's type by id.
struct Nodes<'a> {
    workloads: HashMap<&'a str, Workload<'a>>,
    kinds: HashMap<&'a str, &'a str>,
}

fn read_nodes(nodes: &[Value]) -> Result<Nodes<'_>, ParseError> {
    let mut workloads = HashMap::new();
    let mut kinds = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let d = &n["data"];
        let id = d["id"].as_str().ok_or_else(|| {
            ParseError::field(
                TARGET,
                format!("elements.nodes[{i}].data.id"),
                "expected a string",
            )
        })?;
        let kind = d["nodeType"].as_str().unwrap_or("unknown");
        kinds.insert(id, kind);
        if kind == "workload" {
            if let (Some(w), Some(ns)) = (d["workload"].as_str(), d["namespace"].as_str()) {
                let cluster = d["cluster"].as_str().unwrap_or_default();
                workloads.insert(id, (w, ns, cluster));
            }
        }
    }
    Ok(Nodes { workloads, kinds })
}

/// One edge's traffic in `protocol`, from its `traffic.rates`: (requests/s, bytes/s, error
/// share), or why it cannot be read.
fn traffic(protocol: &str, rates: &Value) -> Result<(f64, f64, f64), String> {
    let Some(rate) = num(rates.get(protocol)) else {
        return Err(format!("no readable `{protocol}` rate"));
    };
    let error_rate = match protocol {
        "tcp" => return Ok((0.0, rate, 0.0)),
        "http" | "grpc" => match num(rates.get(format!("{protocol}PercentErr").as_str())) {
            Some(pct) => pct / 100.0,
            None => {
                let errs: f64 = if protocol == "http" {
                    ["http4xx", "http5xx"]
                        .iter()
                        .filter_map(|k| num(rates.get(*k)))
                        .sum()
                } else {
                    num(rates.get("grpcErr")).unwrap_or(0.0)
                };
                if rate > 0.0 {
                    errs / rate
                } else {
                    0.0
                }
            }
        },
        other => return Err(format!("unknown protocol `{other}`")),
    };
    Ok((rate, 0.0, error_rate.clamp(0.0, 1.0)))
}

/// Parses a workload graph (`graphType=workload`; another graph type is an error that says so).
/// Edges whose ends are not both workloads (the `unknown` root, service nodes of unreachable
/// destinations) are rejected with a reason, as are edges with unreadable rates; the edges
/// between the same two workloads of the same clusters are merged across protocols
/// ([`KialiEdge`]). Malformed JSON or a graph without `elements` is an error.
pub fn parse(body: &[u8]) -> Result<Parsed<KialiEdge>, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::json(TARGET, e))?;
    if let Some(t) = v.get("graphType").and_then(Value::as_str) {
        if t != "workload" {
            return Err(ParseError::field(
                TARGET,
                "graphType",
                format!("a `{t}` graph: graphscaler reads workload graphs, ask Kiali for graphType=workload"),
            ));
        }
    }
    let elements = v
        .get("elements")
        .ok_or_else(|| ParseError::field(TARGET, "elements", "missing"))?;
    let nodes = elements
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::field(TARGET, "elements.nodes", "expected a list"))?;
    let edges = match elements.get("edges") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => {
            return Err(ParseError::field(
                TARGET,
                "elements.edges",
                "expected a list",
            ))
        }
    };
    let Nodes { workloads, kinds } = read_nodes(nodes)?;
    let mut out = Parsed::default();
    let mut read = vec![];
    for (i, e) in edges.iter().enumerate() {
        let d = &e["data"];
        let (Some(src), Some(dst)) = (d["source"].as_str(), d["target"].as_str()) else {
            return Err(ParseError::field(
                TARGET,
                format!("elements.edges[{i}].data"),
                "expected `source` and `target`",
            ));
        };
        let (Some(&(sw, sns, sc)), Some(&(dw, dns, dc))) = (workloads.get(src), workloads.get(dst))
        else {
            out.rejected.push(format!(
                "edges[{i}]: {} -> {} is not workload to workload",
                kinds.get(src).unwrap_or(&"missing node"),
                kinds.get(dst).unwrap_or(&"missing node")
            ));
            continue;
        };
        let protocol = d["traffic"]["protocol"].as_str().unwrap_or_default();
        let (rps, tcp_bytes_per_s, error_rate) = match traffic(protocol, &d["traffic"]["rates"]) {
            Ok(t) => t,
            Err(why) => {
                out.rejected.push(format!("edges[{i}] {sw} -> {dw}: {why}"));
                continue;
            }
        };
        read.push(KialiEdge {
            source: sw.into(),
            source_namespace: sns.into(),
            source_cluster: sc.into(),
            destination: dw.into(),
            destination_namespace: dns.into(),
            destination_cluster: dc.into(),
            protocols: vec![protocol.into()],
            rps,
            tcp_bytes_per_s,
            error_rate,
            p95_ms: if protocol == "tcp" {
                None
            } else {
                num(d.get("responseTime"))
            },
        });
    }
    out.items = merge_edges(read);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_workload_graph() {
        let p = parse(&crate::fixture("kiali/test_workload_graph.json")).unwrap();
        // 18 edges: 4 leave the `unknown` root or reach the `unknown` service node.
        assert_eq!(p.items.len(), 14);
        assert_eq!(p.rejected.len(), 4, "{:?}", p.rejected);
        let e = p
            .items
            .iter()
            .find(|e| e.source == "reviews-v2" && e.destination == "ratings-v1")
            .unwrap();
        assert_eq!(
            (e.protocols.clone(), e.rps),
            (vec!["http".to_string()], 30.0)
        );
        assert_eq!(
            (e.source_cluster.as_str(), e.destination_cluster.as_str()),
            ("east", "east")
        );
        assert!((e.error_rate - 0.333).abs() < 1e-9);
        assert_eq!(e.p95_ms, None, "the fixture ran no appender");
        let d = p
            .items
            .iter()
            .find(|e| e.destination == "details-v1")
            .unwrap();
        assert!(
            (d.error_rate - 0.5).abs() < 1e-9,
            "4xx and 5xx count, as in Kiali"
        );
        let g = p
            .items
            .iter()
            .find(|e| e.destination == "deposit-v1")
            .unwrap();
        assert_eq!(
            (
                g.protocols[0].as_str(),
                g.rps,
                g.destination_namespace.as_str()
            ),
            ("grpc", 50.0, "bankapp")
        );
        let t = p
            .items
            .iter()
            .find(|e| e.source == "productpage-v1" && e.destination == "tcp-v1")
            .unwrap();
        assert_eq!(
            (
                t.protocols[0].as_str(),
                t.rps,
                t.tcp_bytes_per_s,
                t.error_rate
            ),
            ("tcp", 0.0, 62.0, 0.0)
        );
    }

    /// The real graph with a second protocol between two of its workloads and a second cluster
    /// whose workloads share their names with the first's.
    fn two_protocols_and_two_clusters() -> Value {
        let mut g: Value =
            serde_json::from_slice(&crate::fixture("kiali/test_workload_graph.json")).unwrap();
        let nodes = g["elements"]["nodes"].as_array().unwrap().clone();
        let node = |w: &str| {
            nodes
                .iter()
                .find(|n| n["data"]["workload"] == w)
                .unwrap()
                .clone()
        };
        let id = |w: &str| node(w)["data"]["id"].clone();
        let edge = |src: Value, dst: Value, protocol: &str, rates: Value| {
            serde_json::json!({"data": {"source": src, "target": dst, "responseTime": "40",
                "traffic": {"protocol": protocol, "rates": rates}}})
        };
        let mut extra = vec![
            // productpage-v1 -> details-v1 also over grpc (20 rps, 10% failing) and tcp.
            edge(
                id("productpage-v1"),
                id("details-v1"),
                "grpc",
                serde_json::json!({"grpc": "20.00", "grpcPercentErr": "10.0"}),
            ),
            edge(
                id("productpage-v1"),
                id("details-v1"),
                "tcp",
                serde_json::json!({"tcp": "4096.00"}),
            ),
        ];
        // A `west` cluster with its own reviews-v2 and ratings-v1.
        let mut west = vec![];
        for w in ["reviews-v2", "ratings-v1"] {
            let mut n = node(w);
            n["data"]["cluster"] = "west".into();
            n["data"]["id"] = format!("west-{w}").into();
            west.push(n);
        }
        extra.push(edge(
            "west-reviews-v2".into(),
            "west-ratings-v1".into(),
            "http",
            serde_json::json!({"http": "7.00"}),
        ));
        g["elements"]["nodes"].as_array_mut().unwrap().extend(west);
        g["elements"]["edges"].as_array_mut().unwrap().extend(extra);
        g
    }

    #[test]
    fn protocols_between_two_workloads_merge_and_clusters_stay_apart() {
        let g = two_protocols_and_two_clusters();
        let p = parse(&serde_json::to_vec(&g).unwrap()).unwrap();
        // 14 real edges, two more protocols on one of them, and one edge in `west`.
        assert_eq!(p.items.len(), 15, "{:#?}", p.items);
        let d: Vec<&KialiEdge> = p
            .items
            .iter()
            .filter(|e| e.source == "productpage-v1" && e.destination == "details-v1")
            .collect();
        assert_eq!(d.len(), 1, "one edge per pair, whatever the protocols");
        let d = d[0];
        assert_eq!(d.protocols, ["grpc", "http", "tcp"]);
        // 80 http + 20 grpc requests per second; 40 + 2 of them failing.
        assert_eq!((d.rps, d.tcp_bytes_per_s), (100.0, 4096.0));
        assert!((d.error_rate - 0.42).abs() < 1e-9, "{}", d.error_rate);
        assert_eq!(
            d.p95_ms,
            Some(40.0),
            "the grpc edge's; the others ran no appender"
        );
        let r: Vec<(&str, f64)> = p
            .items
            .iter()
            .filter(|e| e.source == "reviews-v2" && e.destination == "ratings-v1")
            .map(|e| (e.destination_cluster.as_str(), e.rps))
            .collect();
        assert_eq!(r, [("east", 30.0), ("west", 7.0)]);
    }

    #[test]
    fn another_graph_type_is_refused_naming_the_one_to_ask_for() {
        for (f, t) in [
            ("kiali/test_service_graph.json", "service"),
            ("kiali/test_versioned_app_graph.json", "versionedApp"),
        ] {
            let e = parse(&crate::fixture(f)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{t}` graph")) && e.contains("graphType=workload"),
                "{f}: {e}"
            );
        }
    }

    #[test]
    fn bad_input_is_named() {
        let full = crate::fixture("kiali/test_workload_graph.json");
        let e = parse(&full[..full.len() / 2]).unwrap_err().to_string();
        assert!(
            e.starts_with("kiali graph: malformed JSON") && e.contains("line"),
            "{e}"
        );
        let e = parse(br#"{"timestamp": 1}"#).unwrap_err().to_string();
        assert!(e.contains("`elements`"), "{e}");
        let e = parse(br#"{"elements": {"nodes": [{"data": {}}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("elements.nodes[0].data.id"), "{e}");
        // NaN rates are rejected, not passed on.
        let g = br#"{"elements": {"nodes": [
            {"data": {"id": "a", "nodeType": "workload", "workload": "a", "namespace": "n"}},
            {"data": {"id": "b", "nodeType": "workload", "workload": "b", "namespace": "n"}}],
          "edges": [{"data": {"source": "a", "target": "b", "traffic": {"protocol": "http", "rates": {"http": "NaN"}}}}]}}"#;
        let p = parse(g).unwrap();
        assert!(p.items.is_empty());
        assert!(
            p.rejected[0].contains("no readable `http` rate"),
            "{:?}",
            p.rejected
        );
    }
}
