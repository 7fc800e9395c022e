//! Training on several topologies pads every batch to the largest cluster: a graph decided on in
//! a padded batch gets the same probabilities, value and embeddings as alone, and no action ever
//! names a padding service.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::agent::{AgentSpec, EncoderKind, GraphAgent, Obs};
use graphscaler_learn::decide::ActionRules;
use graphscaler_learn::policy::{ActionTensors, HybridAction, SampleMask};
use graphscaler_learn::HeteroGraph;
use graphscaler_schemas::Snapshot;
use graphscaler_twin::generate::{generate, GenerateOptions};
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// `n` consecutive snapshots of the twin on `topology` under Rush, after a warm-up.
fn snapshots(topology: Topology, n: usize) -> Vec<Snapshot> {
    let mut twin = Twin::new(
        topology,
        TwinConfig::default(),
        SloConfig::default(),
        Shape::Rush,
        3600.0,
        5,
    )
    .unwrap();
    (0..30 + n)
        .map(|_| Snapshot::from_observation(&twin.advance().0))
        .skip(30)
        .collect()
}

fn online_boutique() -> Topology {
    Topology::online_boutique(&TwinConfig::default().fanout_parameters).unwrap()
}

/// A generated application of `services` services on the default node types.
fn generated(services: usize, seed: u64) -> Topology {
    let opts = GenerateOptions {
        peak_rps: 300.0,
        pools: TwinConfig::default().cluster.node_types,
    };
    let v = generate(services, seed, &opts);
    Topology::from_json_str(
        &v.to_string(),
        "generated",
        &TwinConfig::default().fanout_parameters,
    )
    .unwrap()
}

fn obs(window: &[Snapshot]) -> Obs {
    let last = window.last().unwrap();
    let refs: Vec<&Snapshot> = window.iter().collect();
    let mut mask = SampleMask::all(last.services.len(), 2);
    // Something masked, so that padding is not the only masked pair.
    mask.pairs[1] = false;
    Obs::new(&refs, mask)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn graphs_of_different_clusters_batch_with_padding() {
    let small = snapshots(generated(6, 3), 1).remove(0);
    let large = snapshots(online_boutique(), 1).remove(0);
    let (a, b) = (
        HeteroGraph::from_snapshot(&small, Device::Cpu),
        HeteroGraph::from_snapshot(&large, Device::Cpu),
    );
    let (sa, sb) = (small.services.len() as i64, large.services.len() as i64);
    let (na, nb) = (small.nodes.len() as i64, large.nodes.len() as i64);
    assert!(sa < sb, "{sa} {sb}");
    let g = HeteroGraph::batch(&[&a, &b]).unwrap();
    let (s, n) = (sa.max(sb), na.max(nb));
    assert_eq!((g.graphs, g.services, g.nodes), (2, s, n));
    assert_eq!(g.x_service.size(), [2 * s, 7]);
    let valid = g.service_valid.as_ref().unwrap();
    assert_eq!(valid.size(), [2, s]);
    assert_eq!(
        valid.sum(tch::Kind::Float).double_value(&[]),
        (sa + sb) as f64
    );
    // The second graph's edges point into its own rows, after the first's padded block.
    let (_, idx, _) = &g.edges[0];
    let first_edges = a.edges[0].1.size()[1];
    let second_src = idx
        .narrow(1, first_edges, idx.size()[1] - first_edges)
        .min();
    assert!(second_src.int64_value(&[]) >= s);
    // Padding machines have the type one past the last.
    let types = g.node_types(2);
    if na < n {
        assert_eq!(types.int64_value(&[0, n - 1]), 2);
    }
    // One cluster: nothing padded, nothing marked.
    let same = HeteroGraph::batch(&[&b, &b]).unwrap();
    assert!(same.service_valid.is_none() && same.node_valid.is_none());
    // Padding to a size larger than any graph of the batch.
    let wide = HeteroGraph::batch_padded(&[&b], sb + 3, nb + 1).unwrap();
    assert_eq!((wide.services, wide.nodes), (sb + 3, nb + 1));
    // A batch already the size joins single graphs padded to it; a smaller batch of several
    // graphs is not padded again.
    let joined = HeteroGraph::batch(&[&same, &a]).unwrap();
    assert_eq!((joined.graphs, joined.services), (3, sb));
    let pair = HeteroGraph::batch(&[&a, &a]).unwrap();
    let e = HeteroGraph::batch(&[&pair, &b]).unwrap_err().to_string();
    assert!(e.contains("cannot be joined"), "{e}");
}

#[test]
fn a_padded_batch_decides_each_graph_as_alone() {
    let small = snapshots(generated(7, 11), 4);
    let large = snapshots(online_boutique(), 4);
    for enc in [
        EncoderKind::Gat,
        EncoderKind::Gcn,
        EncoderKind::Dysat,
        EncoderKind::Tgat,
        EncoderKind::Mlp,
    ] {
        tch::manual_seed(3);
        let mut spec = AgentSpec::new(
            enc,
            "online-boutique".into(),
            large[0].services.clone(),
            vec!["n2-standard-4".into(), "c2d-standard-8".into()],
            ActionRules::default(),
        );
        spec.dim = 16;
        spec.heads = 2;
        spec.hidden = 16;
        let w = spec.window;
        let vs = VarStore::new(Device::Cpu);
        let mut agent = GraphAgent::new(&vs.root(), spec);
        let (o_small, o_large) = (obs(&small[4 - w..]), obs(&large[4 - w..]));
        let (s_small, s_large) = (
            small[0].services.len() as i64,
            large[0].services.len() as i64,
        );
        // Alone: one change (service 1 on node type 0) and doing nothing.
        let change = HybridAction::Change {
            service: 1,
            node_type: 0,
            delta_replicas: 1,
            delta_cpu: 0.3,
        };
        let pair = [change, HybridAction::Nothing];
        let alone = |o: &Obs, s: i64| {
            let a = ActionTensors::from_actions(&pair, s, 2);
            tch::no_grad(|| agent.evaluate(&[o, o], &a))
        };
        let (lp_small, ent_small, v_small) = alone(&o_small, s_small);
        let (lp_large, _, v_large) = alone(&o_large, s_large);
        // Padded to the larger cluster, then to more than either has.
        for pad in [0, s_large + 5] {
            agent.pad_to(pad as usize, 0);
            let s = s_large.max(pad);
            let a = ActionTensors::from_actions(&[pair, pair].concat(), s, 2);
            let (lp, ent, v) =
                tch::no_grad(|| agent.evaluate(&[&o_small, &o_small, &o_large, &o_large], &a));
            let what = format!("{} padded to {s}", enc.name());
            assert!(
                max_diff(&lp.narrow(0, 0, 2), &lp_small) < 1e-4,
                "{what}: small log π"
            );
            assert!(
                max_diff(&lp.narrow(0, 2, 2), &lp_large) < 1e-4,
                "{what}: large log π"
            );
            assert!(
                max_diff(&v.narrow(0, 0, 2), &v_small) < 1e-4,
                "{what}: small V"
            );
            assert!(
                max_diff(&v.narrow(0, 2, 2), &v_large) < 1e-4,
                "{what}: large V"
            );
            assert!(
                max_diff(&ent.narrow(0, 0, 2), &ent_small) < 1e-3,
                "{what}: entropy"
            );
            // Sampling in the padded batch never names a padding service.
            tch::manual_seed(9);
            for _ in 0..20 {
                let step = tch::no_grad(|| agent.act(&[&o_small, &o_large], false));
                if let HybridAction::Change { service, .. } = step.actions[0] {
                    assert!(service < s_small, "{what}: chose padding service {service}");
                }
            }
        }
        agent.pad_to(0, 0);
    }
}
