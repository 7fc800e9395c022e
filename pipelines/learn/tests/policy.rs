//! The hybrid-action heads: masks hold, the log-probability of a drawn action is the one the
//! update recomputes, a batch gives what its rows give alone, and gradients reach the heads.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::encoder::Embeddings;
use graphscaler_learn::policy::{ActionTensors, HybridAction, Masks, PolicyHeads, SampleMask};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn emb(b: i64) -> Embeddings {
    let o = (Kind::Float, Device::Cpu);
    Embeddings {
        service: Tensor::randn([b, 4, 16], o),
        node: Tensor::randn([b, 3, 16], o),
        pooled: Tensor::randn([b, 16], o),
    }
}

fn row(e: &Embeddings, i: i64) -> Embeddings {
    Embeddings {
        service: e.service.narrow(0, i, 1),
        node: e.node.narrow(0, i, 1),
        pooled: e.pooled.narrow(0, i, 1),
    }
}

#[test]
fn masks_log_probabilities_and_gradients() {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let heads = PolicyHeads::new(&vs.root(), 16, 2, 32, true);
    let e = emb(1);
    let types = Tensor::from_slice(&[0i64, 1, 1]).view([1, 3]);
    let global = Tensor::from_slice(&[0.4f32, 0.1]).view([1, 2]);

    // Only (service 2, node type 1) may change; service 2 has 1 replica with a minimum of 1.
    let mut sm = SampleMask::all(4, 2).with_replica_bounds(&[3, 3, 1, 3], 1, 10);
    sm.pairs = vec![false; 8];
    sm.pairs[2 * 2 + 1] = true;
    let m = Masks::stack(&[&sm], 4, 2);
    let mut changes = 0;
    for _ in 0..300 {
        let step = tch::no_grad(|| heads.act(&e, &types, &global, &m, false));
        if let HybridAction::Change {
            service: s,
            node_type: k,
            delta_replicas: r,
            delta_cpu: c,
        } = step.actions[0]
        {
            changes += 1;
            assert_eq!((s, k), (2, 1));
            assert!(r >= 0, "below the minimum: {r}");
            assert!((-1.0..=1.0).contains(&c));
        }
        // The update recomputes the same log-probability, from the tensors and from the action.
        let (lp, ent, v) = tch::no_grad(|| heads.evaluate(&e, &types, &global, &m, &step.tensors));
        let diff = (lp.double_value(&[0]) - step.logprob.double_value(&[0])).abs();
        assert!(diff < 1e-4, "{:?}: {diff}", step.actions[0]);
        let again = ActionTensors::from_actions(&step.actions, 4, 2);
        let (lp2, _, _) = tch::no_grad(|| heads.evaluate(&e, &types, &global, &m, &again));
        let diff = (lp2.double_value(&[0]) - step.logprob.double_value(&[0])).abs();
        assert!(diff < 1e-3, "{:?}: {diff}", step.actions[0]);
        assert!(ent.double_value(&[0]).is_finite() && v.double_value(&[0]).is_finite());
    }
    assert!(
        changes > 0 && changes < 300,
        "{changes} changes in 300 draws: both kinds occur"
    );

    // Gradients reach the pair scorer and the conditionals through the log-probability.
    let a = ActionTensors::from_actions(
        &[HybridAction::Change {
            service: 2,
            node_type: 1,
            delta_replicas: 1,
            delta_cpu: 0.3,
        }],
        4,
        2,
    );
    let (lp, ent, v) = heads.evaluate(&e, &types, &global, &m, &a);
    (lp + ent * 0.01 + v).sum(Kind::Float).backward();
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

#[test]
fn a_batch_is_its_rows() {
    tch::manual_seed(6);
    let vs = VarStore::new(Device::Cpu);
    let heads = PolicyHeads::new(&vs.root(), 16, 2, 32, true);
    let e = emb(3);
    let types = Tensor::from_slice(&[0i64, 1, 1, 0, 0, 1, 1, 1, 0]).view([3, 3]);
    let global = Tensor::rand([3, 2], (Kind::Float, Device::Cpu));
    let masks = [
        SampleMask::all(4, 2),
        SampleMask::all(4, 2).with_replica_bounds(&[1, 1, 1, 1], 1, 2),
        SampleMask {
            pairs: vec![false; 8],
            replicas: vec![true; 20],
            progress: 0.5,
        },
    ];
    let refs: Vec<&SampleMask> = masks.iter().collect();
    let m = Masks::stack(&refs, 4, 2);
    let step = tch::no_grad(|| heads.act(&e, &types, &global, &m, false));
    // With every pair masked, the third graph does nothing.
    assert_eq!(step.actions[2], HybridAction::Nothing);
    let (lp, ent, v) = tch::no_grad(|| heads.evaluate(&e, &types, &global, &m, &step.tensors));
    for i in 0..3 {
        let idx = Tensor::from_slice(&[i]);
        let (lpi, enti, vi) = tch::no_grad(|| {
            heads.evaluate(
                &row(&e, i),
                &types.narrow(0, i, 1),
                &global.narrow(0, i, 1),
                &m.select(&idx),
                &step.tensors.select(&idx),
            )
        });
        for (a, b) in [(&lp, &lpi), (&ent, &enti), (&v, &vi)] {
            assert!((a.double_value(&[i]) - b.double_value(&[0])).abs() < 1e-5);
        }
    }
    // The deterministic action is the most likely pair.
    let d = tch::no_grad(|| heads.act(&e, &types, &global, &m, true));
    let d2 = tch::no_grad(|| heads.act(&e, &types, &global, &m, true));
    assert_eq!(d.actions, d2.actions);
}

/// With `global`, the actor's distribution moves with the global scalars (cluster CPU,
/// SLO-violation rate), as the critic's value does; without, only the critic reads them (the
/// ablation, and checkpoints written before).
#[test]
fn the_actor_reads_the_global_scalars_only_when_built_to() {
    let e = emb(1);
    let types = Tensor::from_slice(&[0i64, 1, 1]).view([1, 3]);
    let calm = Tensor::from_slice(&[0.2f32, 0.0]).view([1, 2]);
    let hot = Tensor::from_slice(&[0.9f32, 0.5]).view([1, 2]);
    let m = Masks::stack(&[&SampleMask::all(4, 2)], 4, 2);
    let a = ActionTensors::from_actions(
        &[HybridAction::Change {
            service: 1,
            node_type: 0,
            delta_replicas: 1,
            delta_cpu: 0.2,
        }],
        4,
        2,
    );
    for global in [true, false] {
        tch::manual_seed(9);
        let vs = VarStore::new(Device::Cpu);
        let heads = PolicyHeads::new(&vs.root(), 16, 2, 32, global);
        let (lp_calm, _, v_calm) = tch::no_grad(|| heads.evaluate(&e, &types, &calm, &m, &a));
        let (lp_hot, _, v_hot) = tch::no_grad(|| heads.evaluate(&e, &types, &hot, &m, &a));
        let moved = (lp_calm - lp_hot).abs().double_value(&[0]);
        assert!((v_calm - v_hot).abs().double_value(&[0]) > 1e-6);
        if global {
            assert!(moved > 1e-6, "the actor ignores the global scalars");
        } else {
            assert_eq!(moved, 0.0, "the actor reads what it should not");
        }
    }
}
