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
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};

fn twin(shape: Shape, seed: u64) -> Twin {
    let tcfg = TwinConfig::default();
    let topo = Topology::from_file(
        &common::root().join("data/topologies/online-boutique.json"),
        &tcfg.fanout_parameters,
    )
    .unwrap();
    Twin::new(topo, tcfg, SloConfig::default(), shape, 7200.0, seed).unwrap()
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
