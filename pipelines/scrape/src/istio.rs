//! Call edges from Istio's standard metrics, for when Kiali fails: the same edges Kiali would
//! give, from three PromQL results over the same window `w`:
//!
//! ```text
//! sum by (source_cluster, source_workload, …, destination_cluster, destination_workload, …)
//!   (rate(istio_requests_total{reporter="destination"}[w]))
//! sum by (…) (rate(istio_requests_total{reporter="destination",response_code=~"5.."}[w])
//!   or rate(istio_requests_total{reporter="destination",grpc_response_status=~"[1-9][0-9]*"}[w]))
//! histogram_quantile(0.95, sum by (source_cluster, source_workload, destination_cluster,
//!   destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[w])))
//! ```
//!
//! As from Kiali, the protocols between two workloads of the same clusters make one edge, and
//! `source_cluster`/`destination_cluster` (Istio's standard labels; empty where a mesh sets
//! none) keep same-named workloads of two clusters apart.
//!
//! Edges from or to `unknown` (outside the mesh) are left out, as Kiali's workload-to-workload
//! edges are; an edge without a latency sample gets none (`p95_ms` is `None`), never a made-up one.

use std::collections::BTreeMap;

use crate::parse::kiali::KialiEdge;
use crate::parse::prometheus::Sample;

/// The PromQL behind [`edges`], for a window like `1m`.
pub fn queries(window: &str) -> [String; 3] {
    [
        format!("sum by (source_cluster, source_workload, source_workload_namespace, destination_cluster, destination_workload, destination_workload_namespace, request_protocol) (rate(istio_requests_total{{reporter=\"destination\"}}[{window}]))"),
        format!("sum by (source_cluster, source_workload, source_workload_namespace, destination_cluster, destination_workload, destination_workload_namespace, request_protocol) (rate(istio_requests_total{{reporter=\"destination\",response_code=~\"5..\"}}[{window}]) or rate(istio_requests_total{{reporter=\"destination\",grpc_response_status=~\"[1-9][0-9]*\"}}[{window}]))"),
        format!("histogram_quantile(0.95, sum by (source_cluster, source_workload, destination_cluster, destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\"}}[{window}])))"),
    ]
}

/// (source cluster, source workload, destination cluster, destination workload).
type Key = (String, String, String, String);

fn key(s: &Sample) -> Option<Key> {
    let src = s.label("source_workload")?;
    let dst = s.label("destination_workload")?;
    let cluster = |l: &str| s.label(l).unwrap_or_default().to_string();
    (src != "unknown" && dst != "unknown").then(|| {
        (
            cluster("source_cluster"),
            src.to_string(),
            cluster("destination_cluster"),
            dst.to_string(),
        )
    })
}

/// Joins the three results into edges (sorted by source, then destination).
pub fn edges(requests: &[Sample], errors: &[Sample], p95: &[Sample]) -> Vec<KialiEdge> {
    let mut err: BTreeMap<Key, f64> = BTreeMap::new();
    for s in errors {
        if let Some(k) = key(s) {
            *err.entry(k).or_default() += s.value;
        }
    }
    let lat: BTreeMap<Key, f64> = p95
        .iter()
        .filter_map(|s| Some((key(s)?, s.value)))
        .collect();
    let mut out: BTreeMap<Key, KialiEdge> = BTreeMap::new();
    for s in requests {
        let Some(k) = key(s) else { continue };
        let e = out.entry(k.clone()).or_insert_with(|| KialiEdge {
            source: k.1.clone(),
            source_namespace: s
                .label("source_workload_namespace")
                .unwrap_or_default()
                .into(),
            source_cluster: k.0.clone(),
            destination: k.3.clone(),
            destination_namespace: s
                .label("destination_workload_namespace")
                .unwrap_or_default()
                .into(),
            destination_cluster: k.2.clone(),
            protocols: vec![],
            rps: 0.0,
            tcp_bytes_per_s: 0.0,
            error_rate: 0.0,
            p95_ms: lat.get(&k).copied(),
        });
        let protocol = s.label("request_protocol").unwrap_or("http").to_string();
        if !e.protocols.contains(&protocol) {
            e.protocols.push(protocol);
            e.protocols.sort();
        }
        e.rps += s.value;
    }
    for (k, e) in &mut out {
        let errs = err.get(k).copied().unwrap_or(0.0);
        e.error_rate = if e.rps > 0.0 {
            (errs / e.rps).clamp(0.0, 1.0)
        } else {
            0.0
        };
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::prometheus::parse;

    #[test]
    fn joins_rates_errors_and_latency() {
        let req = br#"{"status":"success","data":{"resultType":"vector","result":[
          {"metric":{"source_workload":"frontend","source_workload_namespace":"shop","destination_workload":"cartservice","destination_workload_namespace":"shop","request_protocol":"grpc"},"value":[1,"40"]},
          {"metric":{"source_workload":"unknown","destination_workload":"frontend","request_protocol":"http"},"value":[1,"10"]},
          {"metric":{"source_workload":"cartservice","source_workload_namespace":"shop","destination_workload":"redis-cart","destination_workload_namespace":"shop","request_protocol":"tcp"},"value":[1,"NaN"]}]}}"#;
        let errs = br#"{"status":"success","data":{"resultType":"vector","result":[
          {"metric":{"source_workload":"frontend","destination_workload":"cartservice"},"value":[1,"2"]}]}}"#;
        let p95 = br#"{"status":"success","data":{"resultType":"vector","result":[
          {"metric":{"source_workload":"frontend","destination_workload":"cartservice"},"value":[1,"12.5"]}]}}"#;
        let (r, e, l) = (
            parse(req).unwrap(),
            parse(errs).unwrap(),
            parse(p95).unwrap(),
        );
        assert_eq!(
            r.rejected.len(),
            1,
            "the NaN rate is rejected by the parser, not turned into an edge"
        );
        let out = edges(&r.items, &e.items, &l.items);
        assert_eq!(out.len(), 1, "edges from `unknown` are left out");
        let x = &out[0];
        assert_eq!(
            (
                x.source.as_str(),
                x.destination.as_str(),
                x.protocols.clone()
            ),
            ("frontend", "cartservice", vec!["grpc".to_string()])
        );
        assert_eq!((x.rps, x.error_rate, x.p95_ms), (40.0, 0.05, Some(12.5)));
        assert_eq!(x.destination_namespace, "shop");
        // Without a latency sample, no latency.
        assert_eq!(edges(&r.items, &e.items, &[])[0].p95_ms, None);
        assert!(
            queries("1m")[0].contains("rate(istio_requests_total{reporter=\"destination\"}[1m])")
        );
    }

    /// Two protocols between the same workloads make one edge; two clusters' same-named
    /// workloads stay two.
    #[test]
    fn protocols_merge_and_clusters_stay_apart() {
        let req = br#"{"status":"success","data":{"resultType":"vector","result":[
          {"metric":{"source_cluster":"east","source_workload":"web","destination_cluster":"east","destination_workload":"db","request_protocol":"http"},"value":[1,"10"]},
          {"metric":{"source_cluster":"east","source_workload":"web","destination_cluster":"east","destination_workload":"db","request_protocol":"grpc"},"value":[1,"5"]},
          {"metric":{"source_cluster":"west","source_workload":"web","destination_cluster":"west","destination_workload":"db","request_protocol":"http"},"value":[1,"2"]}]}}"#;
        let r = parse(req).unwrap();
        let out = edges(&r.items, &[], &[]);
        let got: Vec<(&str, f64, Vec<String>)> = out
            .iter()
            .map(|e| (e.destination_cluster.as_str(), e.rps, e.protocols.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("east", 15.0, vec!["grpc".to_string(), "http".to_string()]),
                ("west", 2.0, vec!["http".to_string()])
            ]
        );
    }
}
