//! PPO for discrete actions, faithful to CleanRL's `ppo.py`: vectorised rollouts, GAE, advantage
//! normalisation, the clipped surrogate, the (optionally) clipped value loss, an entropy bonus,
//! gradient-norm clipping, learning-rate annealing and a target-KL early stop. Diagnostics carry
//! CleanRL's names (`losses/approx_kl`, `losses/clipfrac`, `losses/explained_variance`, …).
//!
//! The actor and critic are separate 64-64 tanh networks with orthogonal initialisation (gain √2,
//! 0.01 on the policy's output, 1 on the value's), as CleanRL's `Agent`.

use std::io::Write;

use tch::nn::{self, Init, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::envs::DiscreteEnv;
use crate::optim::Optim;
use crate::rollout::{explained_variance, logprob_entropy, Envs};

/// Hyperparameters (CleanRL's names).
#[derive(Debug, Clone, PartialEq)]
pub struct PpoConfig {
    /// Adam learning rate (annealed linearly to 0 with `anneal_lr`).
    pub learning_rate: f64,
    /// Steps per environment per rollout.
    pub num_steps: usize,
    /// Anneal the learning rate.
    pub anneal_lr: bool,
    /// Discount.
    pub gamma: f64,
    /// GAE λ.
    pub gae_lambda: f64,
    /// Minibatches per epoch.
    pub num_minibatches: usize,
    /// Epochs per rollout.
    pub update_epochs: usize,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// Surrogate clipping coefficient.
    pub clip_coef: f64,
    /// Clip the value loss too.
    pub clip_vloss: bool,
    /// Entropy coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Gradient norm limit.
    pub max_grad_norm: f64,
    /// Stop the epochs early when the approximate KL passes this.
    pub target_kl: Option<f64>,
    /// Hidden width of both networks.
    pub hidden: i64,
}

impl Default for PpoConfig {
    /// CleanRL's `ppo.py` defaults.
    fn default() -> Self {
        Self {
            learning_rate: 2.5e-4,
            num_steps: 128,
            anneal_lr: true,
            gamma: 0.99,
            gae_lambda: 0.95,
            num_minibatches: 4,
            update_epochs: 4,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            hidden: 64,
        }
    }
}

/// The actor-critic.
#[derive(Debug)]
pub struct Agent {
    actor: nn::Sequential,
    critic: nn::Sequential,
}

fn layer(p: &nn::Path, i: i64, o: i64, gain: f64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: Init::Orthogonal { gain },
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    )
}

impl Agent {
    /// Networks for `obs` inputs and `n_actions` actions under `p`.
    pub fn new(p: &nn::Path, obs: i64, n_actions: i64, hidden: i64) -> Self {
        let g = 2f64.sqrt();
        let c = p / "critic";
        let a = p / "actor";
        Self {
            critic: nn::seq()
                .add(layer(&(&c / "0"), obs, hidden, g))
                .add_fn(|x| x.tanh())
                .add(layer(&(&c / "2"), hidden, hidden, g))
                .add_fn(|x| x.tanh())
                .add(layer(&(&c / "4"), hidden, 1, 1.0)),
            actor: nn::seq()
                .add(layer(&(&a / "0"), obs, hidden, g))
                .add_fn(|x| x.tanh())
                .add(layer(&(&a / "2"), hidden, hidden, g))
                .add_fn(|x| x.tanh())
                .add(layer(&(&a / "4"), hidden, n_actions, 0.01)),
        }
    }

    /// State values `[B]`.
    pub fn value(&self, obs: &Tensor) -> Tensor {
        self.critic.forward(obs).view([-1])
    }

    /// Action logits `[B, A]`.
    pub fn logits(&self, obs: &Tensor) -> Tensor {
        self.actor.forward(obs)
    }

    /// The greedy action per row.
    pub fn greedy(&self, obs: &Tensor) -> Tensor {
        self.logits(obs).argmax(-1, false)
    }
}

/// One update's diagnostics, under CleanRL's names.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Diagnostics {
    /// Environment steps so far.
    pub global_step: usize,
    /// `charts/learning_rate`.
    pub learning_rate: f64,
    /// `losses/value_loss`.
    pub value_loss: f64,
    /// `losses/policy_loss`.
    pub policy_loss: f64,
    /// `losses/entropy`.
    pub entropy: f64,
    /// `losses/old_approx_kl`.
    pub old_approx_kl: f64,
    /// `losses/approx_kl`.
    pub approx_kl: f64,
    /// `losses/clipfrac`.
    pub clipfrac: f64,
    /// `losses/explained_variance`.
    pub explained_variance: f64,
}

impl Diagnostics {
    /// The CSV header of [`Diagnostics::csv`].
    pub const HEADER: &'static str = "global_step,charts/learning_rate,losses/value_loss,losses/policy_loss,losses/entropy,losses/old_approx_kl,losses/approx_kl,losses/clipfrac,losses/explained_variance";

    /// One CSV row.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{}",
            self.global_step,
            self.learning_rate,
            self.value_loss,
            self.policy_loss,
            self.entropy,
            self.old_approx_kl,
            self.approx_kl,
            self.clipfrac,
            self.explained_variance
        )
    }
}

/// What training produced.
#[derive(Debug)]
pub struct Trained {
    /// The agent.
    pub agent: Agent,
    /// Its variables.
    pub vs: nn::VarStore,
    /// `(global step, return)` of every finished episode.
    pub episodes: Vec<(usize, f64)>,
    /// Diagnostics per update.
    pub updates: Vec<Diagnostics>,
}

impl Trained {
    /// The loop CartPole's PPO and A2C share: `iterations` updates of `agent` on `envs`, each
    /// `step(agent, envs, iteration)` (from 1) giving its diagnostics, written as CSV to `log`
    /// after the header.
    pub(crate) fn by_updates<E: DiscreteEnv>(
        agent: Agent,
        vs: nn::VarStore,
        mut envs: Envs<E>,
        iterations: usize,
        log: &mut dyn Write,
        mut step: impl FnMut(&Agent, &mut Envs<E>, usize) -> std::io::Result<Diagnostics>,
    ) -> std::io::Result<Trained> {
        let mut updates = vec![];
        writeln!(log, "{}", Diagnostics::HEADER)?;
        for iteration in 1..=iterations {
            let d = step(&agent, &mut envs, iteration)?;
            writeln!(log, "{}", d.csv())?;
            updates.push(d);
        }
        Ok(Trained {
            agent,
            vs,
            episodes: envs.episodes,
            updates,
        })
    }
}

/// One minibatch as the PPO loss reads it, `[M]` each.
#[derive(Debug)]
pub struct Batch {
    /// log π_new(a).
    pub new_logp: Tensor,
    /// Entropy under π_new.
    pub entropy: Tensor,
    /// V_new.
    pub new_value: Tensor,
    /// log π_old(a) (when taken).
    pub old_logp: Tensor,
    /// V_old (when taken).
    pub old_value: Tensor,
    /// GAE advantages.
    pub advantages: Tensor,
    /// Returns.
    pub returns: Tensor,
}

/// CleanRL's PPO loss on one minibatch: `pg_loss − ent_coef·entropy + vf_coef·v_loss`, with the
/// approximate KLs, clip fraction and losses recorded in `d` and `clipfracs`.
pub fn clipped_loss(
    cfg: &PpoConfig,
    b: &Batch,
    d: &mut Diagnostics,
    clipfracs: &mut Vec<f64>,
) -> Tensor {
    let logratio = &b.new_logp - &b.old_logp;
    let ratio = logratio.exp();
    tch::no_grad(|| {
        d.old_approx_kl = (-&logratio).mean(Kind::Float).double_value(&[]);
        d.approx_kl = ((&ratio - 1.0) - &logratio)
            .mean(Kind::Float)
            .double_value(&[]);
        clipfracs.push(
            (&ratio - 1.0)
                .abs()
                .gt(cfg.clip_coef)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]),
        );
    });
    let mut mb_adv = b.advantages.shallow_clone();
    if cfg.norm_adv && mb_adv.size()[0] > 1 {
        mb_adv = (&mb_adv - mb_adv.mean(Kind::Float)) / (mb_adv.std(true) + 1e-8);
    }
    let pg1 = -&mb_adv * &ratio;
    let pg2 = -&mb_adv * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef);
    let pg_loss = pg1.maximum(&pg2).mean(Kind::Float);
    let v_loss = if cfg.clip_vloss {
        let unclipped = (&b.new_value - &b.returns).square();
        let clipped =
            &b.old_value + (&b.new_value - &b.old_value).clamp(-cfg.clip_coef, cfg.clip_coef);
        let clipped = (clipped - &b.returns).square();
        unclipped.maximum(&clipped).mean(Kind::Float) * 0.5
    } else {
        (&b.new_value - &b.returns).square().mean(Kind::Float) * 0.5
    };
    let ent = b.entropy.mean(Kind::Float);
    d.policy_loss = pg_loss.double_value(&[]);
    d.value_loss = v_loss.double_value(&[]);
    d.entropy = ent.double_value(&[]);
    &pg_loss - &ent * cfg.ent_coef + &v_loss * cfg.vf_coef
}

/// What one PPO update did besides its diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateCount {
    /// Epochs begun (fewer than `update_epochs` when the KL stop fired).
    pub epochs: usize,
    /// Gradient steps taken.
    pub steps: usize,
}

/// The PPO update — the one every PPO learner here uses: the discrete agent on CartPole
/// ([`train`]), the graph agents on the twin ([`crate::train`]) and guarded online learning
/// ([`crate::online`]). As CleanRL's `ppo.py`: `update_epochs` passes over a fresh permutation
/// of the `n` samples in minibatches of `minibatch` (the last one shorter when `n` does not
/// divide), each one [`clipped_loss`] step with the gradient norm clipped to `max_grad_norm`;
/// after a **whole** epoch, stop when the last minibatch's approximate KL passes `target_kl`.
///
/// `batch(idx)` gives the minibatch of sample indices `idx`: the new log-probabilities,
/// entropies and values under the model `opt` updates, and the rollout's old ones, advantages
/// and returns. `d` receives the losses, the KLs and the mean clip fraction.
pub fn update<O: Optim + ?Sized>(
    cfg: &PpoConfig,
    opt: &mut O,
    n: usize,
    minibatch: usize,
    d: &mut Diagnostics,
    mut batch: impl FnMut(&[i64]) -> Result<Batch, tch::TchError>,
) -> Result<UpdateCount, tch::TchError> {
    let minibatch = minibatch.max(1);
    let mut count = UpdateCount {
        epochs: 0,
        steps: 0,
    };
    let mut clipfracs = vec![];
    if n == 0 {
        return Ok(count);
    }
    for _ in 0..cfg.update_epochs {
        count.epochs += 1;
        let perm = Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu));
        let order: Vec<i64> = Vec::try_from(&perm)?;
        for idx in order.chunks(minibatch) {
            let b = batch(idx)?;
            let loss = clipped_loss(cfg, &b, d, &mut clipfracs);
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(cfg.max_grad_norm);
            opt.step();
            count.steps += 1;
        }
        if cfg.target_kl.is_some_and(|k| d.approx_kl > k) {
            break;
        }
    }
    d.clipfrac = clipfracs.iter().sum::<f64>() / clipfracs.len().max(1) as f64;
    Ok(count)
}

/// Trains for `total_timesteps` on `envs` (their number is CleanRL's `num_envs`), seeded,
/// writing diagnostics as CSV to `log` (header first).
pub fn train<E: DiscreteEnv>(
    envs: Vec<E>,
    cfg: &PpoConfig,
    total_timesteps: usize,
    seed: i64,
    log: &mut dyn Write,
) -> std::io::Result<Trained> {
    tch::manual_seed(seed);
    let device = Device::Cpu;
    let envs = Envs::new(envs);
    let n = envs.len();
    let vs = nn::VarStore::new(device);
    let agent = Agent::new(&vs.root(), envs.obs_dim(), envs.n_actions(), cfg.hidden);
    let mut opt = nn::Adam {
        eps: 1e-5,
        ..nn::Adam::default()
    }
    .build(&vs, cfg.learning_rate)
    .map_err(std::io::Error::other)?;
    let batch = n * cfg.num_steps;
    let minibatch = (batch / cfg.num_minibatches.max(1)).max(1);
    let iterations = total_timesteps / batch;
    Trained::by_updates(
        agent,
        vs,
        envs,
        iterations,
        log,
        |agent, envs, iteration| {
            let lr = if cfg.anneal_lr {
                (1.0 - (iteration - 1) as f64 / iterations as f64) * cfg.learning_rate
            } else {
                cfg.learning_rate
            };
            opt.set_lr(lr);
            let r = envs.rollout(agent, cfg.num_steps, cfg.gamma, cfg.gae_lambda)?;
            let mut d = Diagnostics {
                global_step: envs.global_step,
                learning_rate: lr,
                ..Diagnostics::default()
            };
            update(cfg, &mut opt, batch, minibatch, &mut d, |idx| {
                let mb = Tensor::from_slice(idx);
                let obs = r.obs.index_select(0, &mb);
                let (new_logp, entropy) =
                    logprob_entropy(&agent.logits(&obs), &r.actions.index_select(0, &mb));
                Ok(Batch {
                    new_logp,
                    entropy,
                    new_value: agent.value(&obs),
                    old_logp: r.logprobs.index_select(0, &mb),
                    old_value: r.values.index_select(0, &mb),
                    advantages: r.advantages.index_select(0, &mb),
                    returns: r.returns.index_select(0, &mb),
                })
            })
            .map_err(std::io::Error::other)?;
            d.explained_variance = explained_variance(&r);
            Ok(d)
        },
    )
}

/// The greedy policy's mean return over `episodes` episodes of `env`.
pub fn evaluate<E: DiscreteEnv>(agent: &Agent, env: &mut E, episodes: usize) -> f64 {
    let mut total = 0.0;
    for _ in 0..episodes {
        let mut o = env.reset();
        loop {
            let a = tch::no_grad(|| {
                agent
                    .greedy(&Tensor::from_slice(&o).view([1, -1]))
                    .int64_value(&[0])
            });
            let (next, r, term, trunc) = env.step(a as usize);
            total += f64::from(r);
            o = next;
            if term || trunc {
                break;
            }
        }
    }
    total / episodes as f64
}
