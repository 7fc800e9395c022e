//! Call edges from Istio's standard metrics, for when Kiali fails: the same edges Kiali would
//! give, from three PromQL results over the same window `w`:
//!
//! ```text
//! sum by (source_workload, destination_workload) (rate(istio_requests_total{reporter="destination"}[w]))
//! sum by (source_workload, destination_workload) (rate(istio_requests_total{reporter="destination",response_code=~"5.."}[w])
//!   or rate(istio_requests_total{reporter="destination",grpc_response_status=~"[1-9][0-9]*"}[w]))
//! histogram_quantile(0.95, sum by (source_workload, destination_workload, le)
//!   (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[w])))
//! ```
//!
//! Edges from or to `unknown` (outside the mesh) are left out, as Kiali's workload-to-workload
//! edges are; an edge without a latency sample gets none (`p95_ms` is `None`), never a made-up one.

use std::collections::BTreeMap;

use crate::parse::kiali::KialiEdge;
use crate::parse::prometheus::Sample;

/// The PromQL behind [`edges`], for a window like `1m`.
pub fn queries(window: &str) -> [String; 3] {
    [
        format!("sum by (source_workload, source_workload_namespace, destination_workload, destination_workload_namespace, request_protocol) (rate(istio_requests_total{{reporter=\"destination\"}}[{window}]))"),
        format!("sum by (source_workload, source_workload_namespace, destination_workload, destination_workload_namespace, request_protocol) (rate(istio_requests_total{{reporter=\"destination\",response_code=~\"5..\"}}[{window}]) or rate(istio_requests_total{{reporter=\"destination\",grpc_response_status=~\"[1-9][0-9]*\"}}[{window}]))"),
        format!("histogram_quantile(0.95, sum by (source_workload, destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\"}}[{window}])))"),
    ]
}

type Key = (String, String);

fn key(s: &Sample) -> Option<Key> {
    let src = s.label("source_workload")?;
    let dst = s.label("destination_workload")?;
    (src != "unknown" && dst != "unknown").then(|| (src.to_string(), dst.to_string()))
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
            source: k.0.clone(),
            source_namespace: s
                .label("source_workload_namespace")
                .unwrap_or_default()
                .into(),
            destination: k.1.clone(),
            destination_namespace: s
                .label("destination_workload_namespace")
                .unwrap_or_default()
                .into(),
            protocol: s.label("request_protocol").unwrap_or("http").into(),
            rate: 0.0,
            error_rate: 0.0,
            p95_ms: lat.get(&k).copied(),
        });
        e.rate += s.value;
    }
    for (k, e) in &mut out {
        let errs = err.get(k).copied().unwrap_or(0.0);
        e.error_rate = if e.rate > 0.0 {
            (errs / e.rate).clamp(0.0, 1.0)
        } else {
            0.0
        };
    }
    out.into_values().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
                x.protocol.as_str()
            ),
            ("frontend", "cartservice", "grpc")
        );
        assert_eq!((x.rate, x.error_rate, x.p95_ms), (40.0, 0.05, Some(12.5)));
        assert_eq!(x.destination_namespace, "shop");
        // Without a latency sample, no latency.
        assert_eq!(edges(&r.items, &e.items, &[])[0].p95_ms, None);
        assert!(
            queries("1m")[0].contains("rate(istio_requests_total{reporter=\"destination\"}[1m])")
        );
    }
}
