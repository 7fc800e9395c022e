//! The hybrid-action heads: masks hold, the log-probability of a drawn action is the one the
//! update recomputes, and gradients reach the heads.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::encoder::Embeddings;
use graphscaler_learn::policy::{HybridAction, Masks, PolicyHeads};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn emb() -> Embeddings {
    let o = (Kind::Float, Device::Cpu);
    Embeddings {
        service: Tensor::randn([4, 16], o),
        node: Tensor::randn([3, 16], o),
        pooled: Tensor::randn([16], o),
    }
}

#[test]
fn masks_log_probabilities_and_gradients() {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let heads = PolicyHeads::new(&vs.root(), 16, 2, 32);
    let e = emb();
    let types = [0, 1, 1];
    let global = Tensor::from_slice(&[0.4f32, 0.1]);

    // Only (service 2, node type 1) may change; service 2 has 1 replica with a minimum of 1.
    let mut m = Masks::all(4, 2).with_replica_bounds(&[3, 3, 1, 3], 1, 10);
    m.pairs = Tensor::zeros([4, 2], (Kind::Bool, Device::Cpu));
    let _ = m.pairs.get(2).get(1).fill_(1);
    let mut changes = 0;
    for _ in 0..300 {
        let step = tch::no_grad(|| heads.act(&e, &types, &global, &m));
        match step.action {
            HybridAction::Nothing => {}
            HybridAction::Change {
                service,
                node_type,
                delta_replicas,
                delta_cpu,
            } => {
                changes += 1;
                assert_eq!((service, node_type), (2, 1));
                assert!(delta_replicas >= 0, "below the minimum: {delta_replicas}");
                assert!((-1.0..=1.0).contains(&delta_cpu));
            }
        }
        // The update recomputes the same log-probability.
        let (lp, ent, v) = tch::no_grad(|| heads.evaluate(&e, &types, &global, &m, &step.action));
        let diff = (lp.double_value(&[]) - step.logprob.double_value(&[])).abs();
        assert!(diff < 1e-4, "{:?}: {diff}", step.action);
        assert!(ent.double_value(&[]).is_finite() && v.double_value(&[]).is_finite());
    }
    assert!(
        changes > 0 && changes < 300,
        "{changes} changes in 300 draws: both kinds occur"
    );

    // Gradients reach the pair scorer and the conditionals through the log-probability.
    let a = HybridAction::Change {
        service: 2,
        node_type: 1,
        delta_replicas: 1,
        delta_cpu: 0.3,
    };
    let (lp, ent, v) = heads.evaluate(&e, &types, &global, &m, &a);
    (lp + ent * 0.01 + v).backward();
    for (name, t) in vs.variables() {
        if name.starts_with("pair.")
            || name.starts_with("replicas.")
            || name.starts_with("cpu.")
            || name.starts_with("critic.")
        {
            assert!(
                t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }
}
