//! Vectorised on-policy rollouts with generalised advantage estimation, shared by PPO and A2C
//! (CleanRL's rollout loop: an episode that ends — terminated or truncated — is reset at once
//! and not bootstrapped).

use tch::{Kind, Tensor};

use crate::envs::DiscreteEnv;
use crate::ppo::Agent;

/// One rollout, flattened step-major (`[num_steps × num_envs]`).
#[derive(Debug)]
pub struct Rollout {
    /// Observations `[B, O]`.
    pub obs: Tensor,
    /// Actions `[B]`.
    pub actions: Tensor,
    /// Log-probabilities of the actions when taken `[B]`.
    pub logprobs: Tensor,
    /// Values when taken `[B]`.
    pub values: Tensor,
    /// GAE advantages `[B]`.
    pub advantages: Tensor,
    /// `advantages + values` `[B]`.
    pub returns: Tensor,
}

/// Log-probabilities of `actions` and the entropies under `logits`.
pub fn logprob_entropy(logits: &Tensor, actions: &Tensor) -> (Tensor, Tensor) {
    let logp = logits.log_softmax(-1, Kind::Float);
    let lp = logp
        .gather(-1, &actions.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let ent = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
    (lp, ent)
}

/// Environments stepping together, and the episodes they finished.
#[derive(Debug)]
pub struct Envs<E> {
    envs: Vec<E>,
    obs_dim: i64,
    next_obs: Vec<f32>,
    next_done: Vec<f32>,
    ep_return: Vec<f64>,
    /// Environment steps so far.
    pub global_step: usize,
    /// `(global step, return)` of every finished episode.
    pub episodes: Vec<(usize, f64)>,
}

fn err(e: tch::TchError) -> std::io::Error {
    std::io::Error::other(e)
}

impl<E: DiscreteEnv> Envs<E> {
    /// Resets every environment.
    pub fn new(mut envs: Vec<E>) -> Self {
        let obs_dim = envs[0].obs_dim() as i64;
        let next_obs = envs.iter_mut().flat_map(|e| e.reset()).collect();
        let n = envs.len();
        Self {
            envs,
            obs_dim,
            next_obs,
            next_done: vec![0.0; n],
            ep_return: vec![0.0; n],
            global_step: 0,
            episodes: vec![],
        }
    }

    /// Observation width.
    pub fn obs_dim(&self) -> i64 {
        self.obs_dim
    }

    /// Number of actions.
    pub fn n_actions(&self) -> i64 {
        self.envs[0].n_actions() as i64
    }

    /// Number of environments.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// `num_steps` steps of every environment with `agent`'s sampled actions, then GAE(γ, λ).
    pub fn rollout(
        &mut self,
        agent: &Agent,
        num_steps: usize,
        gamma: f64,
        gae_lambda: f64,
    ) -> std::io::Result<Rollout> {
        let n = self.envs.len();
        let batch = n * num_steps;
        let mut obs_buf: Vec<f32> = Vec::with_capacity(batch * self.obs_dim as usize);
        let mut act_buf: Vec<i64> = Vec::with_capacity(batch);
        let mut logp_buf: Vec<f32> = Vec::with_capacity(batch);
        let mut val_buf: Vec<f32> = Vec::with_capacity(batch);
        let mut rew_buf: Vec<f32> = Vec::with_capacity(batch);
        let mut done_buf: Vec<f32> = Vec::with_capacity(batch);
        for _ in 0..num_steps {
            self.global_step += n;
            obs_buf.extend_from_slice(&self.next_obs);
            done_buf.extend_from_slice(&self.next_done);
            let (actions, logp, value) = tch::no_grad(|| {
                let o = Tensor::from_slice(&self.next_obs).view([n as i64, self.obs_dim]);
                let logits = agent.logits(&o);
                let a = logits
                    .softmax(-1, Kind::Float)
                    .multinomial(1, true)
                    .view([-1]);
                let (lp, _) = logprob_entropy(&logits, &a);
                (a, lp, agent.value(&o))
            });
            let actions: Vec<i64> = Vec::try_from(&actions).map_err(err)?;
            logp_buf.extend(Vec::<f32>::try_from(&logp).map_err(err)?);
            val_buf.extend(Vec::<f32>::try_from(&value).map_err(err)?);
            act_buf.extend_from_slice(&actions);
            self.next_obs.clear();
            for (i, env) in self.envs.iter_mut().enumerate() {
                let (mut o, r, term, trunc) = env.step(actions[i] as usize);
                self.ep_return[i] += f64::from(r);
                rew_buf.push(r);
                let done = term || trunc;
                if done {
                    self.episodes.push((self.global_step, self.ep_return[i]));
                    self.ep_return[i] = 0.0;
                    o = env.reset();
                }
                self.next_done[i] = f32::from(u8::from(done));
                self.next_obs.extend(o);
            }
        }
        let next_value: Vec<f32> = tch::no_grad(|| {
            let o = Tensor::from_slice(&self.next_obs).view([n as i64, self.obs_dim]);
            Vec::try_from(&agent.value(&o))
        })
        .map_err(err)?;
        let mut adv = vec![0f32; batch];
        let mut last = vec![0f32; n];
        for t in (0..num_steps).rev() {
            for i in 0..n {
                let k = t * n + i;
                let (nonterminal, next_v) = if t == num_steps - 1 {
                    (1.0 - self.next_done[i], next_value[i])
                } else {
                    (1.0 - done_buf[k + n], val_buf[k + n])
                };
                let delta = rew_buf[k] + gamma as f32 * next_v * nonterminal - val_buf[k];
                last[i] = delta + (gamma * gae_lambda) as f32 * nonterminal * last[i];
                adv[k] = last[i];
            }
        }
        let values = Tensor::from_slice(&val_buf);
        let advantages = Tensor::from_slice(&adv);
        Ok(Rollout {
            obs: Tensor::from_slice(&obs_buf).view([batch as i64, self.obs_dim]),
            actions: Tensor::from_slice(&act_buf),
            logprobs: Tensor::from_slice(&logp_buf),
            returns: &advantages + &values,
            values,
            advantages,
        })
    }
}

/// `1 − Var(returns − values) / Var(returns)` of a rollout (NaN when the returns do not vary).
pub fn explained_variance(r: &Rollout) -> f64 {
    explained_variance_of(&r.returns, &r.values)
}

/// `1 − Var(returns − values) / Var(returns)` (NaN when the returns do not vary).
pub fn explained_variance_of(returns: &Tensor, values: &Tensor) -> f64 {
    let var_y = returns.var(true).double_value(&[]);
    if var_y == 0.0 {
        f64::NAN
    } else {
        1.0 - (returns - values).var(true).double_value(&[]) / var_y
    }
}
