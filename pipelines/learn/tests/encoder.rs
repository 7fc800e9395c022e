//! The encoders on twin snapshots: shapes, gradients, whether topology reaches them, and that a
//! batch (a disjoint union) encodes each graph as it would alone.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::dysat::{Dysat, DysatConfig};
use graphscaler_learn::encoder::{Encoder, GatEncoder, GatEncoderConfig, MlpFlat};
use graphscaler_learn::gcn_encoder::{GcnEncoder, GcnEncoderConfig};
use graphscaler_learn::tgat::{Tgat, TgatConfig};
use graphscaler_learn::HeteroGraph;
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, Twin};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn snapshots(n: usize) -> Vec<Snapshot> {
    let mut twin = Twin::online_boutique(Shape::Rush, 3600.0, 1).unwrap();
    (0..40 + n)
        .map(|_| Snapshot::from_observation(&twin.advance().0))
        .skip(40)
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn shapes_gradients_and_topology() {
    tch::manual_seed(0);
    let s = snapshots(1).remove(0);
    let g = HeteroGraph::from_snapshot(&s, Device::Cpu);
    let vs = VarStore::new(Device::Cpu);
    let gat = GatEncoder::new(&(vs.root() / "gat"), GatEncoderConfig::default());
    let gcn = GcnEncoder::new(&(vs.root() / "gcn"), GcnEncoderConfig::default());
    let mlp = MlpFlat::new(&(vs.root() / "mlp"), 64);
    let (ns, nn) = (s.services.len() as i64, s.nodes.len() as i64);
    let e = gat.encode(&g);
    assert_eq!(e.service.size(), [1, ns, 128]);
    assert_eq!(e.node.size(), [1, nn, 128]);
    assert_eq!(e.pooled.size(), [1, 128]);
    assert_eq!(e.service.isfinite().all().int64_value(&[]), 1);
    assert_eq!(gcn.encode(&g).service.size(), [1, ns, 128]);
    let m = mlp.encode(&g);
    assert_eq!(m.service.size(), [1, ns, 64]);
    // Gradients reach the input, message and pooling projections of the GAT encoder. (The
    // attention path of a relation whose destinations have one incoming edge each gets none: a
    // softmax over one edge is 1.)
    (e.service.sum(Kind::Float) + e.pooled.sum(Kind::Float)).backward();
    for (name, t) in vs.variables() {
        let message_path = name.ends_with(".lin.weight") || name.ends_with(".lin_src.weight");
        if name.starts_with("gat.in_") || name.starts_with("gat.pool") || message_path {
            if !name.starts_with("gat.") {
                continue;
            }
            assert!(
                t.grad().defined() && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }
    // Without its calls, a service's GAT and GCN embeddings change; the flat MLP's do not.
    let mut cut = s.clone();
    cut.calls = Default::default();
    let g2 = HeteroGraph::from_snapshot(&cut, Device::Cpu);
    tch::no_grad(|| {
        let d_gat = max_diff(&gat.encode(&g).service, &gat.encode(&g2).service);
        let d_gcn = max_diff(&gcn.encode(&g).service, &gcn.encode(&g2).service);
        let d_mlp = max_diff(&mlp.encode(&g).service, &mlp.encode(&g2).service);
        assert!(d_gat > 1e-4, "{d_gat}");
        assert!(d_gcn > 1e-4, "{d_gcn}");
        assert_eq!(d_mlp, 0.0);
    });
}

#[test]
fn a_batch_encodes_each_graph_as_alone() {
    tch::manual_seed(1);
    let snaps = snapshots(3);
    let gs: Vec<HeteroGraph> = snaps
        .iter()
        .map(|s| HeteroGraph::from_snapshot(s, Device::Cpu))
        .collect();
    let refs: Vec<&HeteroGraph> = gs.iter().collect();
    let batch = HeteroGraph::batch(&refs).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let encoders: Vec<Box<dyn Encoder>> = vec![
        Box::new(GatEncoder::new(
            &(vs.root() / "gat"),
            GatEncoderConfig::default(),
        )),
        Box::new(GcnEncoder::new(
            &(vs.root() / "gcn"),
            GcnEncoderConfig::default(),
        )),
        Box::new(MlpFlat::new(&(vs.root() / "mlp"), 32)),
        Box::new(Tgat::new(&(vs.root() / "tgat"), TgatConfig::default())),
    ];
    tch::no_grad(|| {
        for enc in &encoders {
            let all = enc.encode(&batch);
            for (i, g) in gs.iter().enumerate() {
                let one = enc.encode(g);
                let i = i as i64;
                // Float sums in another order: 1e-5 of the embeddings' scale.
                let close = |a: &Tensor, b: &Tensor| {
                    let scale = b.abs().max().double_value(&[]).max(1.0);
                    let d = max_diff(a, b);
                    assert!(d < 1e-5 * scale, "{enc:?}: {d:e} at scale {scale}");
                };
                close(&all.service.narrow(0, i, 1), &one.service);
                close(&all.node.narrow(0, i, 1), &one.node);
                close(&all.pooled.narrow(0, i, 1), &one.pooled);
            }
        }
    });
}

#[test]
fn dysat_reads_the_window() {
    tch::manual_seed(2);
    let snaps = snapshots(4);
    let gs: Vec<HeteroGraph> = snaps
        .iter()
        .map(|s| HeteroGraph::from_snapshot(s, Device::Cpu))
        .collect();
    let vs = VarStore::new(Device::Cpu);
    let d = Dysat::new(&vs.root(), DysatConfig::default());
    assert_eq!(d.window(), 4);
    let refs: Vec<&HeteroGraph> = gs.iter().collect();
    let e = d.encode_window(&refs);
    assert_eq!(e.service.size(), [1, snaps[0].services.len() as i64, 128]);
    // An older snapshot changes the embedding (the temporal attention reads it) ...
    let other = [&gs[3], &gs[1], &gs[2], &gs[3]];
    tch::no_grad(|| {
        assert!(max_diff(&d.encode_window(&other).service, &e.service) > 1e-5);
    });
    // ... and gradients reach both the structural and the temporal weights.
    e.pooled.sum(Kind::Float).backward();
    for (name, t) in vs.variables() {
        if name.starts_with("temporal_service.q") || name.starts_with("structural.in_service") {
            assert!(
                t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }
    // A shorter window (the start of an episode) works.
    assert_eq!(d.encode_window(&refs[2..]).pooled.size(), [1, 128]);
}

#[test]
fn tgat_reads_the_window_by_age() {
    tch::manual_seed(3);
    let snaps = snapshots(8);
    let gs: Vec<HeteroGraph> = snaps
        .iter()
        .map(|s| HeteroGraph::from_snapshot(s, Device::Cpu))
        .collect();
    let vs = VarStore::new(Device::Cpu);
    let t = Tgat::new(&vs.root(), TgatConfig::default());
    assert_eq!(t.window(), 4);
    let refs: Vec<&HeteroGraph> = gs[..4].iter().collect();
    let e = t.encode_window(&refs);
    let (ns, nn) = (snaps[0].services.len() as i64, snaps[0].nodes.len() as i64);
    assert_eq!(e.service.size(), [1, ns, 128]);
    assert_eq!(e.node.size(), [1, nn, 128]);
    assert_eq!(e.pooled.size(), [1, 128]);
    assert_eq!(e.service.isfinite().all().int64_value(&[]), 1);
    tch::no_grad(|| {
        // An older snapshot changes the embedding ...
        let other = [&gs[3], &gs[1], &gs[2], &gs[3]];
        assert!(max_diff(&t.encode_window(&other).service, &e.service) > 1e-5);
        // ... and so does its age alone: the same snapshots, the older ones stamped earlier.
        let mut aged: Vec<Snapshot> = snaps[..4].to_vec();
        for (k, s) in aged.iter_mut().enumerate().take(3) {
            s.time_s -= 60.0 * (3 - k) as f64;
        }
        let ag: Vec<HeteroGraph> = aged
            .iter()
            .map(|s| HeteroGraph::from_snapshot(s, Device::Cpu))
            .collect();
        let ar: Vec<&HeteroGraph> = ag.iter().collect();
        assert!(max_diff(&t.encode_window(&ar).service, &e.service) > 1e-5);
        // A Unix time keeps its seconds: the same window stamped 1.7e9 s later encodes the same.
        let mut late: Vec<Snapshot> = snaps[..4].to_vec();
        for s in &mut late {
            s.time_s += 1.7e9;
        }
        let lg: Vec<HeteroGraph> = late
            .iter()
            .map(|s| HeteroGraph::from_snapshot(s, Device::Cpu))
            .collect();
        let lr: Vec<&HeteroGraph> = lg.iter().collect();
        assert!(max_diff(&t.encode_window(&lr).service, &e.service) < 1e-5);
        // Windows batched encode as each alone (graphs of a batch keep their own ages).
        let pair: Vec<HeteroGraph> = (0..4)
            .map(|k| HeteroGraph::batch(&[&gs[k], &ag[k]]).unwrap())
            .collect();
        let pr: Vec<&HeteroGraph> = pair.iter().collect();
        let both = t.encode_window(&pr);
        let alone = t.encode_window(&ar);
        assert!(max_diff(&both.service.narrow(0, 0, 1), &e.service) < 1e-5);
        assert!(max_diff(&both.service.narrow(0, 1, 1), &alone.service) < 1e-5);
        assert!(max_diff(&both.node.narrow(0, 1, 1), &alone.node) < 1e-5);
        assert!(max_diff(&both.pooled.narrow(0, 1, 1), &alone.pooled) < 1e-5);
        // A shorter window (the start of an episode) works; a longer one reads its last T.
        assert_eq!(t.encode_window(&refs[2..]).pooled.size(), [1, 128]);
        let long: Vec<&HeteroGraph> = gs[..6].iter().collect();
        let last4 = t.encode_window(&long[2..]);
        assert!(max_diff(&t.encode_window(&long).service, &last4.service) < 1e-6);
    });
    // Gradients reach the time encoding, every relation's attention and the merge.
    e.pooled.sum(Kind::Float).backward();
    for (name, v) in vs.variables() {
        let read = name == "time.freq"
            || name.starts_with("layer0.calls.k")
            || name.starts_with("layer0.hosts.v")
            || name.starts_with("layer0.service_history.q")
            || name.starts_with("layer1.node_history.v")
            || name.starts_with("layer1.merge_service.fc1");
        if read {
            assert!(
                v.grad().defined() && v.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }
}
