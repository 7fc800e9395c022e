//! A2C (synchronous advantage actor-critic) for discrete actions, as Stable-Baselines3's `A2C`
//! (CleanRL has no A2C; its rollout loop is shared with PPO here): short rollouts, GAE (λ = 1 by
//! default, i.e. n-step returns), one RMSprop step per rollout on
//! `−(A · log π(a|s)) + c_v · (R − V(s))² − c_e · H(π)`, gradient-norm clipping.

use std::io::Write;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::envs::DiscreteEnv;
use crate::optim::Optim;
use crate::ppo::{Agent, Diagnostics, Trained};
use crate::rollout::{explained_variance, logprob_entropy, Envs};

/// Hyperparameters (Stable-Baselines3's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct A2cConfig {
    /// RMSprop learning rate.
    pub learning_rate: f64,
    /// Steps per environment per update.
    pub num_steps: usize,
    /// Discount.
    pub gamma: f64,
    /// GAE λ (1: n-step returns).
    pub gae_lambda: f64,
    /// Entropy coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Gradient norm limit.
    pub max_grad_norm: f64,
    /// RMSprop smoothing.
    pub rms_alpha: f64,
    /// RMSprop ε.
    pub rms_eps: f64,
    /// Normalise advantages.
    pub norm_adv: bool,
    /// Hidden width.
    pub hidden: i64,
}

impl Default for A2cConfig {
    fn default() -> Self {
        Self {
            learning_rate: 7e-4,
            num_steps: 5,
            gamma: 0.99,
            gae_lambda: 1.0,
            ent_coef: 0.0,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            rms_alpha: 0.99,
            rms_eps: 1e-5,
            norm_adv: false,
            hidden: 64,
        }
    }
}

/// The loss terms of one A2C update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct A2cTerms {
    /// Normalise the advantages over the rollout.
    pub norm_adv: bool,
    /// Entropy coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Gradient norm limit.
    pub max_grad_norm: f64,
}

impl From<&A2cConfig> for A2cTerms {
    fn from(c: &A2cConfig) -> Self {
        Self {
            norm_adv: c.norm_adv,
            ent_coef: c.ent_coef,
            vf_coef: c.vf_coef,
            max_grad_norm: c.max_grad_norm,
        }
    }
}

/// The whole rollout as the A2C loss reads it, `[N]` each.
#[derive(Debug)]
pub struct A2cBatch {
    /// log π(a) under the model being updated.
    pub logp: Tensor,
    /// Entropy of π.
    pub entropy: Tensor,
    /// V(s).
    pub value: Tensor,
    /// The rollout's advantages.
    pub advantages: Tensor,
    /// The rollout's returns.
    pub returns: Tensor,
}

/// The A2C update — the one every A2C learner here uses (CartPole's [`train`] and the graph
/// agents' [`crate::train`]): one step of `opt` on
/// `−mean(A · log π(a|s)) + vf_coef · mean((R − V(s))²) − ent_coef · mean(H(π))` over the whole
/// rollout, the gradient norm clipped to `max_grad_norm`, as Stable-Baselines3's `A2C.train`.
/// The losses go to `d`.
pub fn update<O: Optim + ?Sized>(t: &A2cTerms, opt: &mut O, b: &A2cBatch, d: &mut Diagnostics) {
    let (logp, entropy, value, returns) = (&b.logp, &b.entropy, &b.value, &b.returns);
    let mut adv = b.advantages.shallow_clone();
    if t.norm_adv && adv.size()[0] > 1 {
        adv = (&adv - adv.mean(Kind::Float)) / (adv.std(true) + 1e-8);
    }
    let pg_loss = -(adv * logp).mean(Kind::Float);
    let v_loss = (returns - value).square().mean(Kind::Float);
    let ent = entropy.mean(Kind::Float);
    let loss = &pg_loss + &v_loss * t.vf_coef - &ent * t.ent_coef;
    opt.zero_grad();
    loss.backward();
    opt.clip_grad_norm(t.max_grad_norm);
    opt.step();
    d.policy_loss = pg_loss.double_value(&[]);
    d.value_loss = v_loss.double_value(&[]);
    d.entropy = ent.double_value(&[]);
}

/// Trains for `total_timesteps` on `envs`, seeded, writing diagnostics as CSV to `log`.
pub fn train<E: DiscreteEnv>(
    envs: Vec<E>,
    cfg: &A2cConfig,
    total_timesteps: usize,
    seed: i64,
    log: &mut dyn Write,
) -> std::io::Result<Trained> {
    tch::manual_seed(seed);
    let envs = Envs::new(envs);
    let vs = nn::VarStore::new(Device::Cpu);
    let agent = Agent::new(&vs.root(), envs.obs_dim(), envs.n_actions(), cfg.hidden);
    let mut opt = nn::RmsProp {
        alpha: cfg.rms_alpha,
        eps: cfg.rms_eps,
        ..nn::RmsProp::default()
    }
    .build(&vs, cfg.learning_rate)
    .map_err(std::io::Error::other)?;
    let iterations = total_timesteps / (envs.len() * cfg.num_steps);
    Trained::by_updates(agent, vs, envs, iterations, log, |agent, envs, _| {
        let r = envs.rollout(agent, cfg.num_steps, cfg.gamma, cfg.gae_lambda)?;
        let (logp, entropy) = logprob_entropy(&agent.logits(&r.obs), &r.actions);
        let b = A2cBatch {
            logp,
            entropy,
            value: agent.value(&r.obs),
            advantages: r.advantages.shallow_clone(),
            returns: r.returns.shallow_clone(),
        };
        let mut d = Diagnostics {
            global_step: envs.global_step,
            learning_rate: cfg.learning_rate,
            explained_variance: explained_variance(&r),
            ..Diagnostics::default()
        };
        update(&cfg.into(), &mut opt, &b, &mut d);
        Ok(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;

    /// The weights after one plain-gradient update on advantages scaled by `scale`.
    fn after_one_update(norm_adv: bool, scale: f64) -> Vec<f32> {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "l", 3, 2, Default::default());
        let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
        let x =
            Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.5, 0.4, -0.1, 0.0, 0.2, 0.7]).view([3, 3]);
        let out = lin.forward(&x);
        let value = out.select(1, 1);
        let b = A2cBatch {
            logp: out.select(1, 0).log_sigmoid(),
            entropy: Tensor::zeros([3], (Kind::Float, Device::Cpu)),
            returns: value.detach(),
            value,
            advantages: Tensor::from_slice(&[1.0f32, -2.0, 0.5]) * scale,
        };
        let t = A2cTerms {
            norm_adv,
            ent_coef: 0.0,
            vf_coef: 0.5,
            max_grad_norm: 1e9,
        };
        update(&t, &mut opt, &b, &mut Diagnostics::default());
        let w = vs.variables()["l.weight"].shallow_clone();
        Vec::<f32>::try_from(w.view([-1])).unwrap()
    }

    #[test]
    fn normalised_advantages_make_the_update_independent_of_the_reward_scale() {
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        // Normalised: advantages a thousand times smaller move the policy as far.
        assert!(close(
            &after_one_update(true, 1.0),
            &after_one_update(true, 1e-3)
        ));
        // As they are: the step shrinks with them.
        assert!(!close(
            &after_one_update(false, 1.0),
            &after_one_update(false, 1e-3)
        ));
    }
}
