//! Each algorithm visibly learns a toy task within a fixed step budget.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::envs::cartpole::CartPole;
use graphscaler_learn::envs::DiscreteEnv;
use graphscaler_learn::ppo::{self, PpoConfig};

/// libtorch's random generator and thread count are process-wide: the tests take turns, so that
/// each run is the seeded, deterministic one its figures describe.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

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
    let _turn = turn();
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
    let _turn = turn();
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

/// Discrete SAC on CartPole-v1 (one environment; 128-unit networks; after 1,000 random steps an
/// update and a Polyak step (τ 0.01) of the targets every second step; automatic entropy
/// tuning): the greedy policy averages at least 475 over 20 episodes after 50,000 steps.
#[test]
fn discrete_sac_balances_cartpole_within_50k_steps() {
    let _turn = turn();
    tch::set_num_threads(1);
    let cfg = graphscaler_learn::sac::SacConfig {
        buffer_size: 50_000,
        batch_size: 128,
        learning_starts: 1_000,
        update_frequency: 2,
        target_network_frequency: 2,
        tau: 0.01,
        hidden: 128,
        ..graphscaler_learn::sac::SacConfig::default()
    };
    let mut log = Vec::new();
    let t = graphscaler_learn::sac::train(CartPole::new(7), &cfg, 50_000, 1, &mut log).unwrap();
    let mut env = CartPole::new(3000);
    let mut total = 0.0;
    for _ in 0..20 {
        let mut o = env.reset();
        loop {
            let a = tch::no_grad(|| {
                t.agent
                    .greedy(&tch::Tensor::from_slice(&o).view([1, -1]))
                    .int64_value(&[0])
            });
            let (n, r, te, tr) = env.step(a as usize);
            total += f64::from(r);
            o = n;
            if te || tr {
                break;
            }
        }
    }
    let score = total / 20.0;
    let last: Vec<f64> = t.episodes.iter().rev().take(10).map(|e| e.1).collect();
    eprintln!(
        "sac cartpole: greedy {score:.1}, last 10 training episodes {:?}",
        last
    );
    assert!(score >= 475.0, "greedy mean return {score}");
    assert!(String::from_utf8(log)
        .unwrap()
        .starts_with("global_step,losses/qf_loss"));
}
