//! Optimisers whose state a training can save and resume: Adam and RMSprop exactly as PyTorch
//! defines them (`torch.optim.Adam` without AMSGrad or weight decay; `torch.optim.RMSprop`
//! without momentum, not centred), written over a [`VarStore`]'s trainable variables.
//!
//! tch's [`nn::Optimizer`] wraps libtorch's C++ optimisers, whose moments cannot be read or
//! written from Rust: a training resumed with a fresh one would restart Adam's moments and its
//! bias correction, a jolt the first updates after every restart would feel. [`Stateful`] keeps
//! its moments as tensors, named by the variables they belong to, and its step count, so that
//! [`Stateful::state`] and [`Stateful::restore`] give back the very optimiser. A test holds
//! both to libtorch's optimisers step for step.
//!
//! [`Optim`] is what the updates ([`crate::ppo::update`], [`crate::a2c::update`]) step: either
//! optimiser.

use std::collections::HashMap;

use tch::nn::{self, VarStore};
use tch::Tensor;

/// What an update needs of an optimiser.
pub trait Optim {
    /// Clears the gradients of the variables it updates.
    fn zero_grad(&mut self);
    /// Scales the gradients so that their joint L2 norm is at most `max`.
    fn clip_grad_norm(&mut self, max: f64);
    /// One step from the gradients.
    fn step(&mut self);
    /// The learning rate from now on.
    fn set_lr(&mut self, lr: f64);
}

impl Optim for nn::Optimizer {
    fn zero_grad(&mut self) {
        nn::Optimizer::zero_grad(self);
    }
    fn clip_grad_norm(&mut self, max: f64) {
        nn::Optimizer::clip_grad_norm(self, max);
    }
    fn step(&mut self) {
        nn::Optimizer::step(self);
    }
    fn set_lr(&mut self, lr: f64) {
        nn::Optimizer::set_lr(self, lr);
    }
}

/// Which rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Adam: β₁, β₂, ε.
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Added to the denominator.
        eps: f64,
    },
    /// RMSprop: smoothing α, ε.
    RmsProp {
        /// Square-average decay.
        alpha: f64,
        /// Added to the denominator.
        eps: f64,
    },
}

/// Why a saved state does not fit an optimiser.
#[derive(Debug, thiserror::Error)]
#[error("optimiser state: {0}")]
pub struct StateError(String);

/// Adam or RMSprop with its state in tensors ([`Rule`]).
#[derive(Debug)]
pub struct Stateful {
    rule: Rule,
    lr: f64,
    steps: i64,
    /// Trainable variables, by name (sorted).
    vars: Vec<(String, Tensor)>,
    /// Adam's first moments (unused by RMSprop).
    m: Vec<Tensor>,
    /// Adam's second moments, RMSprop's square averages.
    v: Vec<Tensor>,
}

impl Stateful {
    /// `rule` at learning rate `lr` over `vs`'s trainable variables, moments at zero.
    pub fn new(vs: &VarStore, rule: Rule, lr: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |vars: &[(String, Tensor)]| -> Vec<Tensor> {
            vars.iter().map(|(_, t)| t.zeros_like()).collect()
        };
        Self {
            rule,
            lr,
            steps: 0,
            m: zeros(&vars),
            v: zeros(&vars),
            vars,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The moments, named `m/<variable>` and `v/<variable>` (copies), and the steps taken.
    pub fn state(&self) -> (Vec<(String, Tensor)>, i64) {
        let mut out = vec![];
        for (((name, _), m), v) in self.vars.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("m/{name}"), m.copy()));
            out.push((format!("v/{name}"), v.copy()));
        }
        (out, self.steps)
    }

    /// Takes the moments and step count [`Stateful::state`] gave: every variable's moments must
    /// be there, with its shape; an error names the first that is not.
    pub fn restore(
        &mut self,
        named: &HashMap<String, Tensor>,
        steps: i64,
    ) -> Result<(), StateError> {
        if steps < 0 {
            return Err(StateError(format!("{steps} steps")));
        }
        for (i, (name, t)) in self.vars.iter().enumerate() {
            for (key, slot) in [
                (format!("m/{name}"), &mut self.m[i]),
                (format!("v/{name}"), &mut self.v[i]),
            ] {
                let s = named
                    .get(&key)
                    .ok_or_else(|| StateError(format!("no `{key}` in the saved state")))?;
                if s.size() != t.size() {
                    return Err(StateError(format!(
                        "`{key}` has shape {:?}, the variable {:?}",
                        s.size(),
                        t.size()
                    )));
                }
                *slot = s.to_kind(t.kind()).copy();
            }
        }
        if named.len() != 2 * self.vars.len() {
            return Err(StateError(format!(
                "{} tensors saved for {} variables",
                named.len(),
                self.vars.len()
            )));
        }
        self.steps = steps;
        Ok(())
    }
}

impl Optim for Stateful {
    fn zero_grad(&mut self) {
        for (_, t) in &self.vars {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// As `torch.nn.utils.clip_grad_norm_` (and tch's): scaled by `max / (norm + 1e-6)` when
    /// that is below 1.
    fn clip_grad_norm(&mut self, max: f64) {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .vars
                .iter()
                .map(|(_, t)| t.grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
        });
    }

    fn step(&mut self) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (i, (_, p)) in self.vars.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                match self.rule {
                    Rule::Adam { beta1, beta2, eps } => {
                        let m = &self.m[i] * beta1 + &g * (1.0 - beta1);
                        let v = &self.v[i] * beta2 + (&g * &g) * (1.0 - beta2);
                        let bc1 = 1.0 - beta1.powf(t);
                        let bc2 = 1.0 - beta2.powf(t);
                        let denom = v.sqrt() / bc2.sqrt() + eps;
                        let _ = p.g_sub_(&((&m / denom) * (self.lr / bc1)));
                        self.m[i] = m;
                        self.v[i] = v;
                    }
                    Rule::RmsProp { alpha, eps } => {
                        let v = &self.v[i] * alpha + (&g * &g) * (1.0 - alpha);
                        let _ = p.g_sub_(&((&g / (v.sqrt() + eps)) * self.lr));
                        self.v[i] = v;
                    }
                }
            }
        });
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}
