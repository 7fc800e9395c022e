//! The served loop (what `graphscaler eval` and the training environments run) against the
//! streaming loop (`graphscaler run`: the stages on the in-process bus): for the same twin seed,
//! the same ticks, the same SLO-violating ticks, the same CPU, the same decisions — record for
//! record — whether the served loop cuts snapshots with the dataflow or the plain recomputation.

#![allow(clippy::unwrap_used)]

mod common;

use graphscaler_actuate::Guardrails;
use graphscaler_bus::Metrics;
use graphscaler_graph::GraphConfig;
use graphscaler_pipeline::served::{Cut, Served};
use graphscaler_policy::{PolicySpec, SnapshotPolicy};
use graphscaler_twin::{Shape, Twin};

fn twin(shape: Shape, seed: u64) -> Twin {
    Twin::online_boutique(shape, 7200.0, seed).unwrap()
}

fn policy(name: &str) -> Box<dyn SnapshotPolicy> {
    let mut hpa = common::hpa_config();
    hpa.sync_period_s = 15.0;
    PolicySpec::parse(name)
        .unwrap()
        .build_stage(&hpa, None)
        .unwrap()
}

#[test]
fn the_served_loop_decides_what_the_streaming_loop_decides() {
    let graph = GraphConfig::default();
    let rails = Guardrails::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, shape, seed) in [
        ("tuned-hpa", Shape::Rush, 1),
        ("hpa", Shape::Fluctuating, 2),
        ("hpa-40", Shape::Peak, 3),
    ] {
        let metrics = ["scrape", "graph", "policy", "actuate"].map(Metrics::new);
        let streamed = rt
            .block_on(graphscaler_pipeline::run::run(
                twin(shape.clone(), seed),
                graph.clone(),
                policy(name),
                rails.clone(),
                &metrics,
                None,
                None,
            ))
            .unwrap();
        assert!(
            streamed.audit.len() > 10,
            "{name}: the policy acts ({} decisions)",
            streamed.audit.len()
        );
        for cut in [Cut::Dataflow, Cut::Plain] {
            let served = Served::new(twin(shape.clone(), seed), &graph, cut, rails.clone())
                .run(policy(name).as_mut())
                .unwrap();
            let what = format!("{name} on {} seed {seed}, {cut:?}", shape.name());
            assert_eq!(served.counts.ticks, streamed.ticks, "{what}");
            assert_eq!(
                served.counts.slo_violated_ticks, streamed.slo_violated_ticks,
                "{what}"
            );
            assert_eq!(served.counts.events, streamed.events, "{what}");
            assert_eq!(served.counts.snapshots, streamed.graph.snapshots, "{what}");
            assert_eq!(served.ticks.len() as u64, streamed.ticks, "{what}");
            assert_eq!(served.decisions, streamed.audit, "{what}");
            assert!(
                (served.counts.cpu_core_seconds - streamed.cpu_core_seconds).abs() < 1e-6,
                "{what}"
            );
        }
    }
}

/// With a store, both loops record the same transitions: the same snapshots, the same rewards
/// and the same decisions (the streaming loop's graph stage stops before the policy decides on
/// the last window, so that one decision is the served loop's alone).
#[test]
fn both_loops_store_the_same_transitions() {
    use graphscaler_graph::stage::StoreSpec;
    use graphscaler_graph::store::read_paths;
    let graph = GraphConfig::default();
    let rails = Guardrails::default();
    let dir = tempfile::tempdir().unwrap();
    let spec = |name: &str| StoreSpec {
        dir: dir.path().join(name),
        per_file: 50,
        reward: Default::default(),
    };
    let metrics = ["scrape", "graph", "policy", "actuate"].map(Metrics::new);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let streamed = rt
        .block_on(graphscaler_pipeline::run::run(
            twin(Shape::Rush, 4),
            graph.clone(),
            policy("tuned-hpa"),
            rails.clone(),
            &metrics,
            Some(spec("streamed")),
            None,
        ))
        .unwrap();
    let s = spec("served");
    let served = Served::new(twin(Shape::Rush, 4), &graph, Cut::Plain, rails)
        .with_store(s.open().unwrap())
        .run(policy("tuned-hpa").as_mut())
        .unwrap();
    assert_eq!(served.decisions, streamed.audit);
    let a = read_paths(&[spec("streamed").dir]).unwrap();
    let b = read_paths(&[s.dir]).unwrap();
    assert_eq!(a.len() as u64, streamed.graph.snapshots);
    assert_eq!(a.len(), b.len());
    assert_eq!(
        streamed.graph.stored.unwrap().files,
        5,
        "241 windows, 50 a file"
    );
    let n = a.len();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.snapshot, y.snapshot, "row {i}");
        assert_eq!(x.reward, y.reward, "row {i}");
        if i + 1 < n {
            assert_eq!(x.decision, y.decision, "row {i}");
            assert_eq!(x.decision.as_ref().unwrap().by, "policy/hpa-50");
        }
    }
    let acted = b
        .iter()
        .filter(|t| !t.decision.as_ref().unwrap().actions.is_empty())
        .count();
    assert!(acted > 5 && acted < n, "{acted} of {n} windows acted on");
    assert!(b[..n - 1].iter().all(|t| t.reward.is_some()) && b[n - 1].reward.is_none());
}
