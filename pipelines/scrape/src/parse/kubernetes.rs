//! Kubernetes `NodeList` and `PodList` responses.

use serde_json::Value;

use crate::{ParseError, Parsed};

/// A node's capacity and identity.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `node.kubernetes.io/instance-type` label.
    pub instance_type: Option<String>,
    /// `status.allocatable.cpu`, cores.
    pub allocatable_cpu_cores: f64,
    /// `status.allocatable.memory`, bytes.
    pub allocatable_mem_bytes: f64,
    /// Whether the `Ready` condition is `True`.
    pub ready: bool,
}

/// A pod's placement and requests.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (empty from the kubelet's `/pods`).
    pub namespace: String,
    /// `app` label, or the `app.kubernetes.io/name` label.
    pub app: Option<String>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: String,
    /// The `Ready` condition.
    pub ready: bool,
    /// Σ container CPU requests, cores.
    pub cpu_request_cores: f64,
    /// Σ container memory requests, bytes.
    pub mem_request_bytes: f64,
}

/// Parses a Kubernetes quantity (`7910m`, `8`, `31127824Ki`, `1.5Gi`, `100M`, `1e3`).
pub fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suf, mul) in suffixes {
        if let Some(num) = s.strip_suffix(suf) {
            return num
                .parse::<f64>()
                .ok()
                .map(|x| x * mul)
                .filter(|x| x.is_finite() && *x >= 0.0);
        }
    }
    let s = s
        .strip_suffix('P')
        .map_or(s.to_string(), |n| format!("{n}e15"));
    let s = s.strip_suffix('E').map_or(s.clone(), |n| format!("{n}e18"));
    s.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0)
}

/// The `items` of a `target` list in `body`, each with its `metadata.name`; an error names the
/// body's JSON problem, a missing list or the item without a name.
fn named_items(body: &[u8], target: &'static str) -> Result<Vec<(String, Value)>, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::json(target, e))?;
    let Some(Value::Array(items)) = v.get("items").cloned() else {
        return Err(ParseError::field(target, "items", "expected a list"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    let at = format!("items[{i}].metadata.name");
                    ParseError::field(target, at, "expected a string")
                })?;
            Ok((name.to_owned(), item))
        })
        .collect()
}

fn ready(v: &Value) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Parses a `NodeList`. A node without a readable allocatable CPU or memory is rejected.
pub fn nodes(body: &[u8]) -> Result<Parsed<NodeInfo>, ParseError> {
    const T: &str = "kubernetes nodes";
    let mut out = Parsed::default();
    for (i, (name, n)) in named_items(body, T)?.iter().enumerate() {
        let alloc = |k: &str| {
            n.pointer(&format!("/status/allocatable/{k}"))
                .and_then(Value::as_str)
                .and_then(quantity)
        };
        match (alloc("cpu"), alloc("memory")) {
            (Some(cpu), Some(mem)) => out.items.push(NodeInfo {
                name: name.into(),
                instance_type: n
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get("node.kubernetes.io/instance-type"))
                    .and_then(Value::as_str)
                    .map(Into::into),
                allocatable_cpu_cores: cpu,
                allocatable_mem_bytes: mem,
                ready: ready(n),
            }),
            _ => out.rejected.push(format!(
                "items[{i}] {name}: unreadable status.allocatable cpu or memory"
            )),
        }
    }
    Ok(out)
}

/// Parses a `PodList` (from the API server or the kubelet).
pub fn pods(body: &[u8]) -> Result<Parsed<PodInfo>, ParseError> {
    const T: &str = "kubernetes pods";
    let mut out = Parsed::default();
    for (i, (name, p)) in named_items(body, T)?.iter().enumerate() {
        let labels = p.pointer("/metadata/labels");
        let app = labels
            .and_then(|l| l.get("app").or_else(|| l.get("app.kubernetes.io/name")))
            .and_then(Value::as_str)
            .map(Into::into);
        let mut cpu = 0.0;
        let mut mem = 0.0;
        let mut bad = None;
        for (j, c) in p
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (k, acc) in [("cpu", &mut cpu), ("memory", &mut mem)] {
                if let Some(q) = c.pointer(&format!("/resources/requests/{k}")) {
                    match q.as_str().and_then(quantity) {
                        Some(x) => *acc += x,
                        None => {
                            bad = Some(format!(
                                "items[{i}].spec.containers[{j}].resources.requests.{k}: `{q}`"
                            ))
                        }
                    }
                }
            }
        }
        if let Some(why) = bad {
            out.rejected
                .push(format!("{name}: unreadable quantity {why}"));
            continue;
        }
        out.items.push(PodInfo {
            name: name.into(),
            namespace: p
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            app,
            node: p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .map(Into::into),
            phase: p
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Unknown")
                .into(),
            ready: ready(p),
            cpu_request_cores: cpu,
            mem_request_bytes: mem,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("7910m"), Some(7.91));
        assert_eq!(quantity("8"), Some(8.0));
        assert_eq!(quantity("31127824Ki"), Some(31127824.0 * 1024.0));
        assert_eq!(quantity("1.5Gi"), Some(1.5 * 1073741824.0));
        assert_eq!(quantity("100M"), Some(1e8));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("2k"), Some(2000.0));
        assert_eq!(quantity("lots"), None);
        assert_eq!(quantity("-1"), None);
    }

    #[test]
    fn the_real_node_list() {
        let p = nodes(&crate::fixture("kubernetes/honeycomb-agent-nodes.json")).unwrap();
        assert_eq!(p.items.len(), 2);
        let n = &p.items[0];
        assert_eq!(n.name, "duckboat-01");
        assert_eq!(n.instance_type.as_deref(), Some("m6gd.2xlarge"));
        assert!((n.allocatable_cpu_cores - 7.91).abs() < 1e-12);
        assert_eq!(n.allocatable_mem_bytes, 31127824.0 * 1024.0);
    }

    #[test]
    fn the_real_pod_list() {
        let p = pods(&crate::fixture("kubernetes/honeycomb-agent-pods.json")).unwrap();
        assert_eq!(p.items.len(), 11);
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert!(p
            .items
            .iter()
            .all(|x| x.node.as_deref() == Some("duckboat-01")));
        assert!(p.items.iter().any(|x| x.cpu_request_cores > 0.0));
    }

    #[test]
    fn the_api_fixtures_and_bad_input() {
        // The single-object fixtures are not lists: a clear error, not an empty result.
        let e = nodes(&crate::fixture(
            "kubernetes/k8s-api-testdata-HEAD-core.v1.Node.json",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`items`"), "{e}");
        let e = pods(b"{\"items\": [{\"metadata\": {}}]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("items[0].metadata.name"), "{e}");
        let bad = br#"{"items":[{"metadata":{"name":"p"},"spec":{"containers":[{"resources":{"requests":{"cpu":"fast"}}}]}}]}"#;
        let p = pods(bad).unwrap();
        assert!(p.items.is_empty());
        assert!(p.rejected[0].contains("requests.cpu"), "{:?}", p.rejected);
    }
}
