//! The parsers read back what the twin's interfaces serve: the same edges, nodes and pods as
//! the observation behind them. And a short fuzz run: no input makes a parser panic.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use graphscaler_scrape::parse::{kiali, kubernetes, prometheus};
use graphscaler_twin::{Shape, Twin};
use graphscaler_twin_api::kiali::GraphQuery;
use graphscaler_twin_api::kube::{self, Ctx};
use graphscaler_twin_api::LiveTwin;
use proptest::prelude::*;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn live() -> LiveTwin {
    let twin = Twin::online_boutique(Shape::Rush, 3600.0, 4).unwrap();
    let mut t = LiveTwin::new(twin, "boutique", "twin", 1.7e9);
    for _ in 0..20 {
        t.tick();
    }
    t
}

#[test]
fn kiali_round_trip() {
    let t = live();
    let obs = t.observation();
    let q = GraphQuery {
        appenders: Some("responseTime".into()),
        ..GraphQuery::default()
    };
    let g = graphscaler_twin_api::kiali::graph(t.twin().topology(), obs, "twin", "boutique", &q, 0);
    let parsed = kiali::parse(serde_json::to_vec(&g).unwrap().as_slice()).unwrap();
    // Every observed edge comes back (the ingress edge from `unknown` is rejected as not
    // workload-to-workload), with its rate, error rate and p95 to the precision Kiali prints.
    assert_eq!(parsed.items.len(), obs.edges.len());
    assert_eq!(parsed.rejected.len(), 1);
    for e in &obs.edges {
        let p = parsed
            .items
            .iter()
            .find(|x| x.source == e.source && x.destination == e.destination)
            .unwrap();
        assert_eq!(p.destination_namespace, "boutique");
        assert_eq!(
            p.protocols.len(),
            1,
            "the twin serves one protocol per pair"
        );
        if p.protocols[0] == "tcp" {
            let rps = p.tcp_bytes_per_s / graphscaler_twin_api::kiali::TCP_BYTES_PER_REQUEST;
            assert!((rps - e.rps).abs() < 0.01 && p.rps == 0.0);
            continue;
        }
        assert!(
            (p.rps - e.rps).abs() <= 0.005 + 1e-9,
            "{} vs {}",
            p.rps,
            e.rps
        );
        assert!((p.error_rate - e.error_rate).abs() <= 0.0005 + 1e-9);
        assert!((p.p95_ms.unwrap() - e.p95_ms).abs() <= 0.5 + 1e-9);
    }
}

#[test]
fn kubernetes_round_trip() {
    let t = live();
    let obs = t.observation();
    let prefs = HashMap::new();
    let c = Ctx {
        namespace: "boutique",
        epoch_s: t.epoch_s,
        resource_version: 1,
        templates: &prefs,
    };
    let nodes = kube::list(
        "NodeList",
        "v1",
        1,
        (0..obs.nodes.len())
            .map(|i| kube::node(obs, i, &c))
            .collect(),
    );
    let parsed = kubernetes::nodes(serde_json::to_vec(&nodes).unwrap().as_slice()).unwrap();
    assert_eq!(parsed.items.len(), obs.nodes.len());
    for (n, p) in obs.nodes.iter().zip(&parsed.items) {
        assert_eq!(
            (&n.name, p.instance_type.as_deref()),
            (&p.name, Some(n.node_type.as_str()))
        );
        assert!((n.allocatable_cpu_cores - p.allocatable_cpu_cores).abs() < 1e-9);
        assert!((n.allocatable_mem_bytes - p.allocatable_mem_bytes).abs() <= 1024.0 * 1024.0);
    }
    let pods = kube::list(
        "PodList",
        "v1",
        1,
        (0..obs.pods.len()).map(|i| kube::pod(obs, i, &c)).collect(),
    );
    let parsed = kubernetes::pods(serde_json::to_vec(&pods).unwrap().as_slice()).unwrap();
    assert_eq!(parsed.items.len(), obs.pods.len());
    for (o, p) in obs.pods.iter().zip(&parsed.items) {
        assert_eq!(
            (p.app.as_deref(), p.node.as_deref(), p.ready),
            (Some(o.service.as_str()), o.node.as_deref(), o.ready)
        );
        assert!((p.cpu_request_cores - o.cpu_request_cores).abs() < 1e-3);
        assert_eq!(p.namespace, "boutique");
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    let f = root().join("tests/fixtures");
    [
        "kiali/test_workload_graph.json",
        "kiali/test_service_graph.json",
        "kubernetes/honeycomb-agent-nodes.json",
        "kubernetes/honeycomb-agent-pods.json",
        "prometheus/api_v1_query_up.json",
        "prometheus/api_v1_query_range_up.json",
    ]
    .iter()
    .map(|p| std::fs::read(f.join(p)).unwrap())
    .collect()
}

fn all_parsers(b: &[u8]) {
    let _ = kiali::parse(b);
    let _ = prometheus::parse(b);
    let _ = kubernetes::nodes(b);
    let _ = kubernetes::pods(b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Real responses with bytes flipped, cut or spliced: every parser returns, none panics.
    #[test]
    fn mutated_real_responses_never_panic(which in 0usize..6, cuts in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), truncate in any::<usize>()) {
        let mut b = fixtures()[which].clone();
        for (at, byte) in cuts {
            let i = at % b.len();
            b[i] = byte;
        }
        b.truncate(truncate % (b.len() + 1));
        all_parsers(&b);
    }

    /// Arbitrary JSON values of the right outer shape.
    #[test]
    fn odd_json_never_panics(s in "\\{\"(status|elements|items|data)\": ?(\\[|\\{|\"|[0-9]|null|true)[ -~]{0,80}") {
        all_parsers(s.as_bytes());
    }
}
