//! Why two shipped baselines degenerate: the evidence behind docs/learning.md's account of
//! `checkpoints/dysat-a2c`, whose rows in the served loop equal `static`'s, and of
//! `checkpoints/gcn-sac`, which over-provisions.
//!
//!     cargo test --workspace --test baselines -- --nocapture
//!
//! prints the figures the docs quote.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::agent::{GraphAgent, Obs};
use graphscaler_learn::envs::twin::{TwinEnv, TwinEnvConfig};
use graphscaler_learn::policy::HybridAction;
use graphscaler_learn::reward::RewardConfig;
use graphscaler_twin::{Shape, SloConfig, Topology, TwinConfig};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Rush hour of Online Boutique (seed 1) as `agent` decides.
fn rush(agent: &GraphAgent) -> TwinEnv {
    let twin = TwinConfig::default();
    let topology = Topology::online_boutique(&twin.fanout_parameters).unwrap();
    let cfg = TwinEnvConfig {
        topology,
        twin,
        slo: SloConfig::default(),
        scenarios: vec![Shape::Rush],
        episode_s: 3600.0,
        reward: RewardConfig::default(),
        rules: agent.spec.rules.clone(),
        window: agent.spec.window,
        handover: None,
        graph: graphscaler_graph::GraphConfig::default(),
        rails: graphscaler_actuate::Guardrails::default(),
    };
    TwinEnv::new(cfg, 1).unwrap()
}

/// Whether `a` changes replicas or the CPU quota under `deadband` (a node-type preference alone
/// moves nothing).
fn moves(a: &HybridAction, deadband: f64) -> bool {
    match a {
        HybridAction::Nothing => false,
        HybridAction::Change {
            delta_replicas,
            delta_cpu,
            ..
        } => *delta_replicas != 0 || delta_cpu.abs() >= deadband,
    }
}

/// DySAT-A2C's most likely action, state after state of a Rush hour, changes neither replicas
/// nor the CPU quota: its distribution is spread thin (the most likely pair holds a few percent),
/// the mode of Δreplicas given that pair is 0, and the Beta's mode of Δcpu-quota sits under the
/// deadband. Sampled, the same policy moves something in most decisions: it is not "nothing"
/// that it learned but a flat policy whose single most likely outcome is a no-op.
#[test]
fn dysat_a2c_mode_is_a_change_that_moves_nothing() {
    tch::manual_seed(0);
    let (agent, _vs, _) = GraphAgent::load(&root().join("checkpoints/dysat-a2c"), "*").unwrap();
    let deadband = agent.spec.rules.cpu_deadband;
    let mut env = rush(&agent);
    let (states, draws) = (60, 64);
    let (mut mode_moves, mut sampled_moves, mut sampled_nothing) = (0usize, 0usize, 0usize);
    let mut top_pair = 0.0;
    for _ in 0..states {
        let o = Obs::new(&env.window(), env.mask());
        let mode = tch::no_grad(|| agent.act(&[&o], true)).actions.remove(0);
        let refs: Vec<&Obs> = (0..draws).map(|_| &o).collect();
        let drawn = tch::no_grad(|| agent.act(&refs, false)).actions;
        let mut pairs = std::collections::HashMap::<(i64, i64), usize>::new();
        for a in &drawn {
            sampled_moves += usize::from(moves(a, deadband));
            match a {
                HybridAction::Nothing => sampled_nothing += 1,
                HybridAction::Change {
                    service, node_type, ..
                } => *pairs.entry((*service, *node_type)).or_default() += 1,
            }
        }
        top_pair += *pairs.values().max().unwrap_or(&0) as f64 / draws as f64;
        mode_moves += usize::from(moves(&mode, deadband));
        // The loop serves the mode: step on it, as `eval` and `run` do.
        env.step(&mode).unwrap();
    }
    let n = (states * draws) as f64;
    let (moved, nothing) = (sampled_moves as f64 / n, sampled_nothing as f64 / n);
    let top = top_pair / states as f64;
    println!(
        "dysat-a2c on Rush (seed 1), {states} decisions: the mode moves replicas or CPU in {mode_moves}; \
         sampled ({draws} draws per state): {:.1}% move something, {:.1}% are \"nothing\", \
         the most likely pair holds {:.1}% on average",
        100.0 * moved,
        100.0 * nothing,
        100.0 * top
    );
    assert_eq!(mode_moves, 0, "the mode moved something");
    assert!(moved > 0.3, "sampled decisions that move: {moved}");
    assert!(nothing < 0.1, "sampled \"nothing\": {nothing}");
    assert!(top < 0.25, "the most likely pair's share: {top}");
}

/// GCN-SAC over-provisions because it only ever adds: state after state of a Rush hour its most
/// likely action raises replicas and never lowers anything, and sampled it adds in most decisions
/// and removes in none, so services climb whatever the load. Its pair distribution is as flat as
/// DySAT-A2C's; what it learned is the Δreplicas head's "more".
#[test]
fn gcn_sac_only_adds() {
    tch::manual_seed(0);
    let (agent, _vs, _) = GraphAgent::load(&root().join("checkpoints/gcn-sac"), "*").unwrap();
    let mut env = rush(&agent);
    let (states, draws) = (60, 64);
    let (mut up, mut down, mut cpu_up, mut cpu_down) = (0usize, 0usize, 0usize, 0usize);
    let (mut s_up, mut s_down) = (0usize, 0usize);
    let mut top_pair = 0.0;
    let deadband = agent.spec.rules.cpu_deadband;
    for _ in 0..states {
        let o = Obs::new(&env.window(), env.mask());
        let mode = tch::no_grad(|| agent.act(&[&o], true)).actions.remove(0);
        if let HybridAction::Change {
            delta_replicas,
            delta_cpu,
            ..
        } = mode
        {
            up += usize::from(delta_replicas > 0);
            down += usize::from(delta_replicas < 0);
            cpu_up += usize::from(delta_cpu >= deadband);
            cpu_down += usize::from(delta_cpu <= -deadband);
        }
        let refs: Vec<&Obs> = (0..draws).map(|_| &o).collect();
        let mut pairs = std::collections::HashMap::<(i64, i64), usize>::new();
        for a in tch::no_grad(|| agent.act(&refs, false)).actions {
            if let HybridAction::Change {
                service,
                node_type,
                delta_replicas,
                ..
            } = a
            {
                s_up += usize::from(delta_replicas > 0);
                s_down += usize::from(delta_replicas < 0);
                *pairs.entry((service, node_type)).or_default() += 1;
            }
        }
        top_pair += *pairs.values().max().unwrap_or(&0) as f64 / draws as f64;
        env.step(&mode).unwrap();
    }
    let n = (states * draws) as f64;
    println!(
        "gcn-sac on Rush (seed 1), {states} decisions: the mode adds replicas in {up}, removes in {down}, \
         raises the CPU quota in {cpu_up}, lowers it in {cpu_down}; sampled ({draws} draws per state): \
         {:.1}% add replicas, {:.1}% remove, the most likely pair holds {:.1}% on average",
        100.0 * s_up as f64 / n,
        100.0 * s_down as f64 / n,
        100.0 * top_pair / states as f64
    );
    assert_eq!(down + cpu_down, 0, "the mode lowered something");
    assert!(
        up + cpu_up > states / 2,
        "the mode added in {} of {states}",
        up + cpu_up
    );
    assert!(s_up as f64 / n > 0.5, "sampled, it adds in {s_up} of {n}");
    assert!(
        (s_down as f64 / n) < 0.02,
        "sampled, it removes in {s_down} of {n}"
    );
}
