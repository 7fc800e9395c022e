//! The encoders on a twin snapshot: shapes, gradients, and whether topology reaches them.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::encoder::{Encoder, GatEncoder, GatEncoderConfig, MlpFlat};
use graphscaler_learn::HeteroGraph;
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use tch::nn::VarStore;
use tch::{Device, Kind};

fn snapshot() -> Snapshot {
    let cfg = TwinConfig::default();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let topo = Topology::from_file(
        &root.join("data/topologies/online-boutique.json"),
        &cfg.fanout_parameters,
    )
    .unwrap();
    let mut twin = Twin::new(topo, cfg, SloConfig::default(), Shape::Peak, 600.0, 1).unwrap();
    let mut last = None;
    for _ in 0..10 {
        last = Some(twin.advance().0);
    }
    Snapshot::from_observation(&last.unwrap())
}

#[test]
fn shapes_gradients_and_topology() {
    tch::manual_seed(0);
    let s = snapshot();
    let g = HeteroGraph::from_snapshot(&s, Device::Cpu);
    let vs = VarStore::new(Device::Cpu);
    let gat = GatEncoder::new(&(vs.root() / "gat"), GatEncoderConfig::default());
    let mlp = MlpFlat::new(&(vs.root() / "mlp"), 64);
    let e = gat.encode(&g);
    assert_eq!(e.service.size(), [s.services.len() as i64, 128]);
    assert_eq!(e.node.size(), [s.nodes.len() as i64, 128]);
    assert_eq!(e.pooled.size(), [128]);
    assert_eq!(e.service.isfinite().all().int64_value(&[]), 1);
    let m = mlp.encode(&g);
    assert_eq!(m.service.size(), [s.services.len() as i64, 64]);
    // Gradients reach the input, message and pooling projections of the GAT encoder. (The
    // attention path of a relation whose destinations have one incoming edge each gets none: a
    // softmax over one edge is 1.)
    (e.service.sum(Kind::Float) + e.pooled.sum(Kind::Float)).backward();
    for (name, t) in vs.variables() {
        let message_path = name.ends_with(".lin.weight") || name.ends_with(".lin_src.weight");
        if name.starts_with("gat.in_") || name.starts_with("gat.pool") || message_path {
            assert!(
                t.grad().defined() && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }
    // Without its calls, a service's GAT embedding changes; the flat MLP's does not.
    let mut cut = s.clone();
    cut.calls = Default::default();
    let g2 = HeteroGraph::from_snapshot(&cut, Device::Cpu);
    tch::no_grad(|| {
        let d_gat = (gat.encode(&g).service - gat.encode(&g2).service)
            .abs()
            .max()
            .double_value(&[]);
        let d_mlp = (mlp.encode(&g).service - mlp.encode(&g2).service)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d_gat > 1e-4, "{d_gat}");
        assert_eq!(d_mlp, 0.0);
    });
}
