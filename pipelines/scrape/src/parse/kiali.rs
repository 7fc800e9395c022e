//! The Kiali graph API (`GET /api/namespaces/graph?…&graphType=workload`).

use std::collections::HashMap;

use serde_json::Value;

use crate::{ParseError, Parsed};

const TARGET: &str = "kiali graph";

/// One edge between two workloads.
#[derive(Debug, Clone, PartialEq)]
pub struct KialiEdge {
    /// Calling workload.
    pub source: String,
    /// Its namespace.
    pub source_namespace: String,
    /// Called workload.
    pub destination: String,
    /// Its namespace.
    pub destination_namespace: String,
    /// `http`, `grpc` or `tcp`.
    pub protocol: String,
    /// Requests per second (bytes per second for `tcp`).
    pub rate: f64,
    /// Share of failed requests (Kiali's `httpPercentErr`/`grpcPercentErr` ÷ 100; 0 for tcp).
    pub error_rate: f64,
    /// p95 response time, ms, when the `responseTime` appender ran.
    pub p95_ms: Option<f64>,
}

fn num(v: Option<&Value>) -> Option<f64> {
    let x = match v? {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// Parses a workload graph. Edges whose ends are not both workloads (the `unknown` root, service
/// nodes of unreachable destinations) are rejected with a reason, as are edges with unreadable
/// rates; malformed JSON or a graph without `elements` is an error.
pub fn parse(body: &[u8]) -> Result<Parsed<KialiEdge>, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::json(TARGET, e))?;
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
    let mut workloads: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut kinds: HashMap<&str, &str> = HashMap::new();
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
                workloads.insert(id, (w, ns));
            }
        }
    }
    let mut out = Parsed::default();
    for (i, e) in edges.iter().enumerate() {
        let d = &e["data"];
        let (Some(src), Some(dst)) = (d["source"].as_str(), d["target"].as_str()) else {
            return Err(ParseError::field(
                TARGET,
                format!("elements.edges[{i}].data"),
                "expected `source` and `target`",
            ));
        };
        let (Some(&(sw, sns)), Some(&(dw, dns))) = (workloads.get(src), workloads.get(dst)) else {
            out.rejected.push(format!(
                "edges[{i}]: {} -> {} is not workload to workload",
                kinds.get(src).unwrap_or(&"missing node"),
                kinds.get(dst).unwrap_or(&"missing node")
            ));
            continue;
        };
        let traffic = &d["traffic"];
        let protocol = traffic["protocol"].as_str().unwrap_or_default().to_string();
        let rates = &traffic["rates"];
        let Some(rate) = num(rates.get(protocol.as_str())) else {
            out.rejected.push(format!(
                "edges[{i}] {sw} -> {dw}: no readable `{protocol}` rate"
            ));
            continue;
        };
        let error_rate = match protocol.as_str() {
            "tcp" => 0.0,
            p => match num(rates.get(format!("{p}PercentErr").as_str())) {
                Some(pct) => pct / 100.0,
                None => {
                    let errs: f64 = if p == "http" {
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
        };
        out.items.push(KialiEdge {
            source: sw.into(),
            source_namespace: sns.into(),
            destination: dw.into(),
            destination_namespace: dns.into(),
            protocol,
            rate,
            error_rate: error_rate.clamp(0.0, 1.0),
            p95_ms: num(d.get("responseTime")),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::fixture(&format!("kiali/{name}"))
    }

    #[test]
    fn the_real_workload_graph() {
        let p = parse(&fixture("test_workload_graph.json")).unwrap();
        // 18 edges: 4 leave the `unknown` root or reach the `unknown` service node.
        assert_eq!(p.items.len(), 14);
        assert_eq!(p.rejected.len(), 4, "{:?}", p.rejected);
        let e = p
            .items
            .iter()
            .find(|e| e.source == "reviews-v2" && e.destination == "ratings-v1")
            .unwrap();
        assert_eq!((e.protocol.as_str(), e.rate), ("http", 30.0));
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
                g.protocol.as_str(),
                g.rate,
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
            (t.protocol.as_str(), t.rate, t.error_rate),
            ("tcp", 62.0, 0.0)
        );
    }

    #[test]
    fn the_other_real_graphs_parse() {
        for f in ["test_service_graph.json", "test_versioned_app_graph.json"] {
            let p = parse(&fixture(f)).unwrap();
            // These graph types have no workload-to-workload edges to give; nothing is invented.
            assert!(
                p.items
                    .iter()
                    .all(|e| e.rate.is_finite() && (0.0..=1.0).contains(&e.error_rate)),
                "{f}"
            );
        }
    }

    #[test]
    fn bad_input_is_named() {
        let full = fixture("test_workload_graph.json");
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
