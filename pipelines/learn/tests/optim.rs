//! The optimisers whose state a training saves ([`Stateful`]) are libtorch's, step for step,
//! and a restored one is the optimiser that was saved.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use graphscaler_learn::optim::{Optim, Rule, Stateful};
use graphscaler_learn::ppo::Agent;
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is process-wide: the tests take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model(seed: i64) -> (VarStore, Agent) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let agent = Agent::new(&vs.root(), 4, 3, 16);
    (vs, agent)
}

fn loss(agent: &Agent, k: i64) -> Tensor {
    tch::manual_seed(100 + k);
    let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([32], (Kind::Float, Device::Cpu));
    (agent.value(&x) - y).square().mean(Kind::Float) * 50.0
        + agent
            .logits(&x)
            .log_softmax(-1, Kind::Float)
            .mean(Kind::Float)
}

fn train(agent: &Agent, opt: &mut dyn Optim, from: i64, to: i64) {
    for k in from..to {
        // An annealed rate and a gradient limit that bites, as the trainings use them.
        opt.set_lr(1e-2 * (1.0 - k as f64 / 20.0));
        let l = loss(agent, k);
        opt.zero_grad();
        l.backward();
        opt.clip_grad_norm(0.5);
        opt.step();
    }
}

fn max_diff(a: &VarStore, b: &VarStore) -> f64 {
    let vb = b.variables();
    a.variables()
        .iter()
        .map(|(k, t)| (t - &vb[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn adam_and_rmsprop_are_libtorchs_step_for_step() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    for rule in [
        Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-5,
        },
        Rule::RmsProp {
            alpha: 0.99,
            eps: 1e-5,
        },
    ] {
        let (vs_a, a) = model(1);
        let (vs_b, b) = model(1);
        let mut ours = Stateful::new(&vs_a, rule, 1e-2);
        let mut theirs = match rule {
            Rule::Adam { .. } => nn::Adam {
                eps: 1e-5,
                ..nn::Adam::default()
            }
            .build(&vs_b, 1e-2)
            .unwrap(),
            Rule::RmsProp { .. } => nn::RmsProp {
                alpha: 0.99,
                eps: 1e-5,
                ..nn::RmsProp::default()
            }
            .build(&vs_b, 1e-2)
            .unwrap(),
        };
        assert_eq!(max_diff(&vs_a, &vs_b), 0.0);
        train(&a, &mut ours, 0, 20);
        train(&b, &mut theirs, 0, 20);
        let d = max_diff(&vs_a, &vs_b);
        eprintln!("{rule:?}: largest difference to libtorch after 20 steps {d:.2e}");
        assert!(d < 1e-5, "{rule:?}: {d}");
        // And they moved: the comparison is not of two idle models.
        assert!(max_diff(&vs_a, &model(1).0) > 1e-2);
        assert_eq!(ours.steps(), 20);
    }
}

#[test]
fn a_restored_optimiser_continues_as_the_saved_one() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let rule = Rule::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-5,
    };
    let (vs_a, a) = model(2);
    let mut opt_a = Stateful::new(&vs_a, rule, 1e-2);
    train(&a, &mut opt_a, 0, 8);
    // A second model and optimiser take the first's weights and state, as a resumed training
    // does; both go on alike.
    let (mut vs_b, b) = model(3);
    vs_b.copy(&vs_a).unwrap();
    let mut opt_b = Stateful::new(&vs_b, rule, 1e-2);
    let (state, steps) = opt_a.state();
    let named: HashMap<String, Tensor> = state.into_iter().collect();
    opt_b.restore(&named, steps).unwrap();
    train(&a, &mut opt_a, 8, 16);
    train(&b, &mut opt_b, 8, 16);
    assert_eq!(max_diff(&vs_a, &vs_b), 0.0);
    // Fresh moments instead would not: the resumed run would jolt.
    let (mut vs_c, c) = model(4);
    vs_c.copy(&vs_a).unwrap();
    let mut fresh = Stateful::new(&vs_c, rule, 1e-2);
    train(&c, &mut fresh, 16, 20);
    train(&a, &mut opt_a, 16, 20);
    assert!(max_diff(&vs_a, &vs_c) > 1e-4);
    // A state of another model is refused by name.
    let mut named = named;
    let key = named.keys().next().unwrap().clone();
    named.remove(&key);
    let e = opt_b.restore(&named, steps).unwrap_err();
    assert!(e.to_string().contains(&key), "{e}");
}
