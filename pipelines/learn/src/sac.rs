//! Soft actor-critic for discrete actions, faithful to CleanRL's `sac_atari.py` (Christodoulou,
//! 2019) on vector observations: a categorical actor, twin Q networks that output every action's
//! value, target Q networks (hard copies every `target_network_frequency` steps when `tau` is 1,
//! Polyak averaging otherwise), expectations over the action distribution instead of sampled
//! actions, and automatic entropy tuning towards `target_entropy_scale · log |A|`.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::envs::DiscreteEnv;
use crate::optim::{Optim, Rule, Stateful};

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

/// When [`SacLearner`]'s steps are due, as CleanRL's `sac_atari.py` schedules them once
/// learning has started: a gradient step every `update_frequency` environment steps, and —
/// independently of it — a target update every `target_network_frequency`.
pub(crate) fn due(cfg: &SacConfig, step: usize) -> (bool, bool) {
    (
        step.is_multiple_of(cfg.update_frequency.max(1)),
        step.is_multiple_of(cfg.target_network_frequency.max(1)),
    )
}

/// The networks one SAC gradient step reads, on its minibatch.
pub(crate) struct SacNets<'a> {
    /// Both critics' Q of every action at the minibatch's states, `[B, A]` (with gradient).
    pub q: &'a dyn Fn() -> (Tensor, Tensor),
    /// π and log π of every action at the minibatch's states, `[B, A]` each (with gradient;
    /// masked actions have π 0 and log π about −1e9).
    pub policy: &'a dyn Fn() -> (Tensor, Tensor),
    /// At the next states: π, log π `[B, A]` and the smaller of the two *target* critics' Q
    /// `[B, A]` (read without gradient).
    pub next: &'a dyn Fn() -> (Tensor, Tensor, Tensor),
}

/// A minibatch of transitions, `[B]` each.
pub(crate) struct SacBatch {
    /// The actions taken (joint indices).
    pub actions: Tensor,
    /// Rewards.
    pub rewards: Tensor,
    /// The discount to the next state (γ, or 1 for a step that did not advance time).
    pub discounts: Tensor,
    /// 1 where the next state is terminal.
    pub dones: Tensor,
    /// The entropy α is tuned towards, per state `[B, 1]`.
    pub target_entropy: Tensor,
}

/// One gradient step's losses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SacLosses {
    /// Both critics' squared TD error.
    pub qf: f64,
    /// The actor's loss.
    pub actor: f64,
    /// α after the step.
    pub alpha: f64,
    /// The temperature's loss (0 without autotuning).
    pub alpha_loss: f64,
    /// Mean entropy of π at the minibatch's states.
    pub entropy: f64,
}

/// The discrete-SAC update — the one every SAC learner here uses (CartPole's [`train`] and the
/// graph agents' [`crate::graph_sac::train`]): the optimisers of the twin critics, the actor and
/// the temperature, and α. One [`SacLearner::step`] is CleanRL's: the critics towards
/// `r + (1 − done)·discount·Σ_a π(a|s')(min Q_target(s', a) − α log π(a|s'))`, then the actor on
/// `Σ_a π(a|s)(α log π(a|s) − min Q(s, a))` with the critics just updated, then (autotuning)
/// `log α` on the mean over the minibatch's states *and actions* of `π(a|s)·(−α)(log π(a|s) +
/// H̄(s))` (CleanRL's reduction: the temperature's gradient is the per-action mean), the others
/// averaged over the minibatch.
pub(crate) struct SacLearner {
    q_opt: Stateful,
    pi_opt: Stateful,
    a_opt: Stateful,
    alpha_vs: nn::VarStore,
    log_alpha: Tensor,
    autotune: bool,
    /// The temperature.
    pub alpha: f64,
}

impl SacLearner {
    /// Optimisers (CleanRL's Adam, ε 1e-4) for the actor's and the critics' variables. They are
    /// [`Stateful`] — PyTorch's Adam, held to libtorch's step for step by a test — so that a
    /// stopped training saves and resumes them ([`SacLearner::parts`]).
    pub fn new(cfg: &SacConfig, actor: &nn::VarStore, critics: &nn::VarStore) -> Self {
        let adam = Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-4,
        };
        let alpha_vs = nn::VarStore::new(Device::Cpu);
        let log_alpha = alpha_vs.root().var("log_alpha", &[1], nn::Init::Const(0.0));
        Self {
            q_opt: Stateful::new(critics, adam, cfg.q_lr),
            pi_opt: Stateful::new(actor, adam, cfg.policy_lr),
            a_opt: Stateful::new(&alpha_vs, adam, cfg.q_lr),
            alpha_vs,
            log_alpha,
            autotune: cfg.autotune,
            alpha: if cfg.autotune { 1.0 } else { cfg.alpha },
        }
    }

    /// What a saved training state holds of it: the temperature's variable store (`alpha`)
    /// and the three optimisers (`opt` for the actor's, `opt_q`, `opt_alpha`).
    pub fn parts(&self) -> (&nn::VarStore, [(&'static str, &Stateful); 3]) {
        (
            &self.alpha_vs,
            [
                ("opt", &self.pi_opt),
                ("opt_q", &self.q_opt),
                ("opt_alpha", &self.a_opt),
            ],
        )
    }

    /// The same, to restore into; [`SacLearner::restored`] afterwards.
    pub fn parts_mut(&mut self) -> (&nn::VarStore, [(&'static str, &mut Stateful); 3]) {
        (
            &self.alpha_vs,
            [
                ("opt", &mut self.pi_opt),
                ("opt_q", &mut self.q_opt),
                ("opt_alpha", &mut self.a_opt),
            ],
        )
    }

    /// Takes α from the restored `log α` (autotuning; otherwise α is the setting).
    pub fn restored(&mut self) {
        if self.autotune {
            self.alpha = self.log_alpha.exp().double_value(&[0]);
        }
    }

    /// One gradient step of the critics, the actor and the temperature.
    pub fn step(&mut self, nets: &SacNets<'_>, b: &SacBatch) -> SacLosses {
        let alpha = self.alpha;
        let target = tch::no_grad(|| {
            let (p, lp, q) = (nets.next)();
            let v = (p * (q - &lp * alpha)).sum_dim_intlist(1, false, Kind::Float);
            &b.rewards + (1.0 - &b.dones) * &b.discounts * v
        });
        let a = b.actions.unsqueeze(1);
        let (q1, q2) = (nets.q)();
        let q1_a = q1.gather(1, &a, false).squeeze_dim(1);
        let q2_a = q2.gather(1, &a, false).squeeze_dim(1);
        let qf_loss = (&q1_a - &target).square().mean(Kind::Float)
            + (&q2_a - &target).square().mean(Kind::Float);
        self.q_opt.zero_grad();
        qf_loss.backward();
        self.q_opt.step();

        let (p, lp) = (nets.policy)();
        let q = tch::no_grad(|| {
            let (q1, q2) = (nets.q)();
            q1.minimum(&q2)
        });
        let actor_loss = (&p * (&lp * alpha - q))
            .sum_dim_intlist(1, false, Kind::Float)
            .mean(Kind::Float);
        self.pi_opt.zero_grad();
        actor_loss.backward();
        self.pi_opt.step();
        // Masked actions have log π ≈ −1e9 and π = 0: bounded so that 0 · log π stays 0.
        let (pd, lpd) = (p.detach(), lp.detach().clamp_min(-1e4));
        let mut alpha_loss_v = 0.0;
        if self.autotune {
            let alpha_loss =
                (&pd * (-self.log_alpha.exp() * (&lpd + &b.target_entropy))).mean(Kind::Float);
            self.a_opt.zero_grad();
            alpha_loss.backward();
            self.a_opt.step();
            self.alpha = self.log_alpha.exp().double_value(&[0]);
            alpha_loss_v = alpha_loss.double_value(&[]);
        }
        SacLosses {
            qf: qf_loss.double_value(&[]),
            actor: actor_loss.double_value(&[]),
            alpha: self.alpha,
            alpha_loss: alpha_loss_v,
            entropy: (-(&pd * &lpd))
                .sum_dim_intlist(1, false, Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]),
        }
    }
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
    let mut learner = SacLearner::new(cfg, &actor_vs, &q_vs);
    let target_entropy = cfg.target_entropy_scale * (n_a as f64).ln();
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
        let (gradient, target) = due(cfg, step);
        if gradient {
            let [b_obs, b_act, b_rew, b_next, b_done] = rb.sample(cfg.batch_size, &mut rng);
            let n = b_act.size()[0];
            let l = learner.step(
                &SacNets {
                    q: &|| (q1.forward(&b_obs), q2.forward(&b_obs)),
                    policy: &|| agent.policy(&b_obs),
                    next: &|| {
                        let (p, lp) = agent.policy(&b_next);
                        let q = q1_t.forward(&b_next).minimum(&q2_t.forward(&b_next));
                        (p, lp, q)
                    },
                },
                &SacBatch {
                    actions: b_act,
                    discounts: Tensor::full([n], cfg.gamma, (Kind::Float, dev)),
                    rewards: b_rew,
                    dones: b_done,
                    target_entropy: Tensor::full([n, 1], target_entropy, (Kind::Float, dev)),
                },
            );
            if step % 1000 == 0 {
                writeln!(
                    log,
                    "{},{},{},{},{},{}",
                    step, l.qf, l.actor, l.alpha, l.alpha_loss, l.entropy
                )?;
            }
        }
        if target {
            soft_update(&mut target_vs, &q_vs, cfg.tau);
        }
    }
    Ok(SacTrained { agent, episodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target update keeps its own clock (CleanRL's schedule): it is due every
    /// `target_network_frequency` steps whether or not a gradient step is — the graph SAC used
    /// to update its targets only inside the gradient step.
    #[test]
    fn the_target_update_keeps_its_own_clock() {
        let cfg = SacConfig {
            update_frequency: 4,
            target_network_frequency: 2,
            ..SacConfig::default()
        };
        let schedule: Vec<(bool, bool)> = (1..=8).map(|s| due(&cfg, s)).collect();
        assert_eq!(
            schedule,
            [
                (false, false),
                (false, true),
                (false, false),
                (true, true),
                (false, false),
                (false, true),
                (false, false),
                (true, true)
            ]
        );
        let rare = SacConfig {
            update_frequency: 1,
            target_network_frequency: 3,
            ..SacConfig::default()
        };
        assert_eq!(due(&rare, 3), (true, true));
        assert_eq!(due(&rare, 4), (true, false));
    }
}
