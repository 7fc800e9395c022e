//! Soft actor-critic for discrete actions, faithful to CleanRL's `sac_atari.py` (Christodoulou,
//! 2019) on vector observations: a categorical actor, twin Q networks that output every action's
//! value, target Q networks (hard copies every `target_network_frequency` steps when `tau` is 1,
//! Polyak averaging otherwise), expectations over the action distribution instead of sampled
//! actions, and automatic entropy tuning towards `target_entropy_scale · log |A|`.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::envs::DiscreteEnv;

/// Hyperparameters (CleanRL's names).
#[derive(Debug, Clone, PartialEq)]
pub struct SacConfig {
    /// Replay buffer size.
    pub buffer_size: usize,
    /// Discount.
    pub gamma: f64,
    /// Target smoothing (1: hard copies).
    pub tau: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Steps of random actions before learning.
    pub learning_starts: usize,
    /// Actor learning rate.
    pub policy_lr: f64,
    /// Critic learning rate.
    pub q_lr: f64,
    /// Gradient steps every this many environment steps.
    pub update_frequency: usize,
    /// Target updates every this many environment steps.
    pub target_network_frequency: usize,
    /// Tune the entropy temperature α.
    pub autotune: bool,
    /// α when not tuned.
    pub alpha: f64,
    /// Target entropy as a share of the maximum, `log |A|`.
    pub target_entropy_scale: f64,
    /// Hidden width of every network.
    pub hidden: i64,
}

impl Default for SacConfig {
    /// CleanRL's `sac_atari.py` defaults.
    fn default() -> Self {
        Self {
            buffer_size: 1_000_000,
            gamma: 0.99,
            tau: 1.0,
            batch_size: 64,
            learning_starts: 20_000,
            policy_lr: 3e-4,
            q_lr: 3e-4,
            update_frequency: 4,
            target_network_frequency: 8000,
            autotune: true,
            alpha: 0.2,
            target_entropy_scale: 0.89,
            hidden: 256,
        }
    }
}

fn mlp(p: nn::Path, i: i64, h: i64, o: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(&p / "0", i, h, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&p / "2", h, h, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&p / "4", h, o, Default::default()))
}

/// The trained actor.
#[derive(Debug)]
pub struct SacAgent {
    actor: nn::Sequential,
}

impl SacAgent {
    /// `(probabilities, log-probabilities)` of the actions.
    pub fn policy(&self, obs: &Tensor) -> (Tensor, Tensor) {
        let logits = self.actor.forward(obs);
        (
            logits.softmax(-1, Kind::Float),
            logits.log_softmax(-1, Kind::Float),
        )
    }

    /// The most probable action per row.
    pub fn greedy(&self, obs: &Tensor) -> Tensor {
        self.actor.forward(obs).argmax(-1, false)
    }
}

/// One logged update.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SacDiagnostics {
    /// Environment steps so far.
    pub global_step: usize,
    /// `losses/qf_loss` (both critics).
    pub qf_loss: f64,
    /// `losses/actor_loss`.
    pub actor_loss: f64,
    /// `losses/alpha`.
    pub alpha: f64,
    /// `losses/alpha_loss`.
    pub alpha_loss: f64,
    /// Mean policy entropy on the minibatch.
    pub entropy: f64,
}

/// What training produced.
#[derive(Debug)]
pub struct SacTrained {
    /// The actor.
    pub agent: SacAgent,
    /// `(global step, return)` of every finished episode.
    pub episodes: Vec<(usize, f64)>,
}

struct Replay {
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    actions: Vec<i64>,
    rewards: Vec<f32>,
    dones: Vec<f32>,
    dim: usize,
    cap: usize,
    len: usize,
    pos: usize,
}

impl Replay {
    fn new(cap: usize, dim: usize) -> Self {
        Self {
            obs: vec![0.0; cap * dim],
            next_obs: vec![0.0; cap * dim],
            actions: vec![0; cap],
            rewards: vec![0.0; cap],
            dones: vec![0.0; cap],
            dim,
            cap,
            len: 0,
            pos: 0,
        }
    }

    fn push(&mut self, o: &[f32], a: i64, r: f32, next: &[f32], done: bool) {
        let k = self.pos;
        self.obs[k * self.dim..(k + 1) * self.dim].copy_from_slice(o);
        self.next_obs[k * self.dim..(k + 1) * self.dim].copy_from_slice(next);
        self.actions[k] = a;
        self.rewards[k] = r;
        self.dones[k] = f32::from(u8::from(done));
        self.pos = (self.pos + 1) % self.cap;
        self.len = (self.len + 1).min(self.cap);
    }

    fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> [Tensor; 5] {
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..self.len)).collect();
        let rows = |v: &[f32]| -> Tensor {
            let d: Vec<f32> = idx
                .iter()
                .flat_map(|&i| v[i * self.dim..(i + 1) * self.dim].iter().copied())
                .collect();
            Tensor::from_slice(&d).view([n as i64, self.dim as i64])
        };
        let pick_f = |v: &[f32]| Tensor::from_slice(&idx.iter().map(|&i| v[i]).collect::<Vec<_>>());
        [
            rows(&self.obs),
            Tensor::from_slice(&idx.iter().map(|&i| self.actions[i]).collect::<Vec<_>>()),
            pick_f(&self.rewards),
            rows(&self.next_obs),
            pick_f(&self.dones),
        ]
    }
}

/// Polyak update of `target` towards `source` (a copy when `tau` is 1).
pub(crate) fn soft_update(target: &mut nn::VarStore, source: &nn::VarStore, tau: f64) {
    let src = source.variables();
    tch::no_grad(|| {
        for (name, mut t) in target.variables() {
            if let Some(s) = src.get(&name) {
                let v = s * tau + &t * (1.0 - tau);
                t.copy_(&v);
            }
        }
    });
}

/// Trains on one environment for `total_timesteps`, seeded, logging updates as CSV to `log`.
pub fn train<E: DiscreteEnv>(
    mut env: E,
    cfg: &SacConfig,
    total_timesteps: usize,
    seed: u64,
    log: &mut dyn Write,
) -> std::io::Result<SacTrained> {
    tch::manual_seed(seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let (o_dim, n_a) = (env.obs_dim() as i64, env.n_actions() as i64);
    let actor_vs = nn::VarStore::new(dev);
    let actor = mlp(actor_vs.root() / "actor", o_dim, cfg.hidden, n_a);
    let q_vs = nn::VarStore::new(dev);
    let q1 = mlp(q_vs.root() / "qf1", o_dim, cfg.hidden, n_a);
    let q2 = mlp(q_vs.root() / "qf2", o_dim, cfg.hidden, n_a);
    let mut target_vs = nn::VarStore::new(dev);
    let q1_t = mlp(target_vs.root() / "qf1", o_dim, cfg.hidden, n_a);
    let q2_t = mlp(target_vs.root() / "qf2", o_dim, cfg.hidden, n_a);
    soft_update(&mut target_vs, &q_vs, 1.0);
    let adam = nn::Adam {
        eps: 1e-4,
        ..nn::Adam::default()
    };
    let err = std::io::Error::other;
    let mut q_opt = adam.build(&q_vs, cfg.q_lr).map_err(err)?;
    let mut pi_opt = adam.build(&actor_vs, cfg.policy_lr).map_err(err)?;
    let alpha_vs = nn::VarStore::new(dev);
    let log_alpha = alpha_vs.root().var("log_alpha", &[1], nn::Init::Const(0.0));
    let mut a_opt = adam.build(&alpha_vs, cfg.q_lr).map_err(err)?;
    let target_entropy = cfg.target_entropy_scale * (n_a as f64).ln();
    let mut alpha = if cfg.autotune { 1.0 } else { cfg.alpha };
    let agent = SacAgent { actor };
    let mut rb = Replay::new(cfg.buffer_size.min(total_timesteps.max(1)), o_dim as usize);
    let mut obs = env.reset();
    let mut ep_return = 0.0;
    let mut episodes = vec![];
    writeln!(log, "global_step,losses/qf_loss,losses/actor_loss,losses/alpha,losses/alpha_loss,losses/entropy")?;
    for step in 0..total_timesteps {
        let action = if step < cfg.learning_starts {
            rng.random_range(0..n_a)
        } else {
            tch::no_grad(|| {
                let (p, _) = agent.policy(&Tensor::from_slice(&obs).view([1, o_dim]));
                p.multinomial(1, true).int64_value(&[0, 0])
            })
        };
        let (next, r, term, trunc) = env.step(action as usize);
        ep_return += f64::from(r);
        // A truncated episode is not terminal: its next state's value still counts.
        rb.push(&obs, action, r, &next, term);
        obs = next;
        if term || trunc {
            episodes.push((step + 1, ep_return));
            ep_return = 0.0;
            obs = env.reset();
        }
        if step < cfg.learning_starts {
            continue;
        }
        if step % cfg.update_frequency == 0 {
            let [b_obs, b_act, b_rew, b_next, b_done] = rb.sample(cfg.batch_size, &mut rng);
            let next_q = tch::no_grad(|| {
                let (p, lp) = agent.policy(&b_next);
                let q = q1_t.forward(&b_next).minimum(&q2_t.forward(&b_next));
                let v = (p * (q - lp * alpha)).sum_dim_intlist(1, false, Kind::Float);
                &b_rew + (1.0 - &b_done) * cfg.gamma * v
            });
            let a = b_act.unsqueeze(1);
            let q1_a = q1.forward(&b_obs).gather(1, &a, false).squeeze_dim(1);
            let q2_a = q2.forward(&b_obs).gather(1, &a, false).squeeze_dim(1);
            let qf_loss = (&q1_a - &next_q).square().mean(Kind::Float)
                + (&q2_a - &next_q).square().mean(Kind::Float);
            q_opt.zero_grad();
            qf_loss.backward();
            q_opt.step();

            let (p, lp) = agent.policy(&b_obs);
            let q = tch::no_grad(|| q1.forward(&b_obs).minimum(&q2.forward(&b_obs)));
            let actor_loss = (&p * (&lp * alpha - q))
                .sum_dim_intlist(1, false, Kind::Float)
                .mean(Kind::Float);
            pi_opt.zero_grad();
            actor_loss.backward();
            pi_opt.step();
            let entropy = tch::no_grad(|| {
                -(&p * &lp)
                    .sum_dim_intlist(1, false, Kind::Float)
                    .mean(Kind::Float)
            });
            let mut alpha_loss_v = 0.0;
            if cfg.autotune {
                let (pd, lpd) = (p.detach(), lp.detach());
                let alpha_loss =
                    (pd * (-log_alpha.exp() * (lpd + target_entropy))).mean(Kind::Float);
                a_opt.zero_grad();
                alpha_loss.backward();
                a_opt.step();
                alpha = log_alpha.exp().double_value(&[0]);
                alpha_loss_v = alpha_loss.double_value(&[]);
            }
            if step % 1000 == 0 {
                let d = SacDiagnostics {
                    global_step: step,
                    qf_loss: qf_loss.double_value(&[]),
                    actor_loss: actor_loss.double_value(&[]),
                    alpha,
                    alpha_loss: alpha_loss_v,
                    entropy: entropy.double_value(&[]),
                };
                writeln!(
                    log,
                    "{},{},{},{},{},{}",
                    d.global_step, d.qf_loss, d.actor_loss, d.alpha, d.alpha_loss, d.entropy
                )?;
            }
        }
        if step % cfg.target_network_frequency == 0 {
            soft_update(&mut target_vs, &q_vs, cfg.tau);
        }
    }
    Ok(SacTrained { agent, episodes })
}
