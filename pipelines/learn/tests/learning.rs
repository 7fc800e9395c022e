//! Each algorithm visibly learns a toy task within a fixed step budget.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::envs::cartpole::CartPole;
use graphscaler_learn::ppo::{self, PpoConfig};

/// PPO on CartPole-v1 with rl-baselines3-zoo's hyperparameters for it (8 environments × 32
/// steps, 20 epochs of one 256-sample minibatch, γ 0.98, λ 0.8, no entropy bonus, learning rate
/// 0.001 annealed, no value clipping): the greedy policy averages at least 475 over 20 episodes
/// after 100,000 steps. (rl-baselines3-zoo's reference reaches 500.)
#[test]
fn ppo_balances_cartpole_within_100k_steps() {
    let cfg = PpoConfig {
        learning_rate: 1e-3,
        num_steps: 32,
        gamma: 0.98,
        gae_lambda: 0.8,
        num_minibatches: 1,
        update_epochs: 20,
        ent_coef: 0.0,
        clip_vloss: false,
        ..PpoConfig::default()
    };
    // A 64-unit network: one intra-op thread beats several.
    tch::set_num_threads(1);
    let envs: Vec<CartPole> = (0..8).map(CartPole::new).collect();
    let mut log = Vec::new();
    let t = ppo::train(envs, &cfg, 100_000, 1, &mut log).unwrap();
    let score = ppo::evaluate(&t.agent, &mut CartPole::new(1000), 20);
    let last: Vec<f64> = t.episodes.iter().rev().take(20).map(|e| e.1).collect();
    let train_mean = last.iter().sum::<f64>() / last.len() as f64;
    eprintln!(
        "ppo cartpole: greedy {score:.1}, last 20 training episodes {train_mean:.1}, {} updates",
        t.updates.len()
    );
    assert!(score >= 475.0, "greedy mean return {score}");
    let text = String::from_utf8(log).unwrap();
    assert!(text.starts_with("global_step,charts/learning_rate,losses/value_loss"));
    assert_eq!(text.lines().count(), t.updates.len() + 1);
    let u = t.updates.last().unwrap();
    assert!(u.approx_kl.is_finite() && u.clipfrac >= 0.0 && u.explained_variance.is_finite());
}

/// A2C on CartPole-v1 with rl-baselines3-zoo's settings for it (8 environments, Stable-Baselines3
/// defaults otherwise: 5 steps, RMSprop 7e-4, γ 0.99, n-step returns, no entropy bonus): the
/// greedy policy averages at least 475 over 20 episodes after 500,000 steps (the zoo's budget).
#[test]
fn a2c_balances_cartpole_within_500k_steps() {
    tch::set_num_threads(1);
    let envs: Vec<CartPole> = (0..8).map(|i| CartPole::new(100 + i)).collect();
    let mut log = Vec::new();
    let t = graphscaler_learn::a2c::train(
        envs,
        &graphscaler_learn::a2c::A2cConfig::default(),
        500_000,
        1,
        &mut log,
    )
    .unwrap();
    let score = ppo::evaluate(&t.agent, &mut CartPole::new(2000), 20);
    eprintln!(
        "a2c cartpole: greedy {score:.1}, {} updates",
        t.updates.len()
    );
    assert!(score >= 475.0, "greedy mean return {score}");
}
