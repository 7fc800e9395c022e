//! The hybrid action and the heads that choose it.
//!
//! An action is `(a1, a2, a3, a4)`: which service, which node type (CPU model) its new pods
//! should prefer, Δreplicas ∈ {−2, −1, 0, +1, +2}, and Δcpu-quota ∈ [−1, 1] — or *nothing*.
//! As Song et al.'s HGNN + PPO scores (operation, machine) pairs, each (service, node type) pair is
//! scored from the service's own embedding, the node type's embedding (the mean of its machines)
//! and the pooled graph, so which service is which is never pooled away; one more logit, from the
//! pooled graph, is "do nothing". `a1, a2` are drawn from the softmax over the pairs and nothing —
//! `log π(a1, a2) = log π(a1) + log π(a2 | a1)` — and `a3` (categorical) and `a4` (a Beta on
//! [−1, 1]) are conditioned on the chosen pair. Masks remove infeasible choices (a pair whose
//! service is in cooldown or whose node type has no capacity; a Δreplicas past the replica
//! bounds). The critic reads the pooled embedding and the global scalars (cluster CPU, SLO
//! violation rate).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::encoder::Embeddings;

/// Δreplicas by index of the a3 head.
pub const DELTAS: [i64; 5] = [-2, -1, 0, 1, 2];

/// One action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HybridAction {
    /// Change nothing.
    Nothing,
    /// Change one service.
    Change {
        /// a1: service index.
        service: i64,
        /// a2: node type index.
        node_type: i64,
        /// a3: Δreplicas.
        delta_replicas: i64,
        /// a4: Δcpu-quota in [−1, 1].
        delta_cpu: f64,
    },
}

/// What may be chosen.
#[derive(Debug)]
pub struct Masks {
    /// `[S, K]` bool: the pair may be chosen.
    pub pairs: Tensor,
    /// `[S, 5]` bool: Δreplicas allowed per service (at least one per choosable service).
    pub replicas: Tensor,
}

impl Masks {
    /// Everything allowed.
    pub fn all(services: i64, node_types: i64) -> Self {
        Self {
            pairs: Tensor::ones([services, node_types], (Kind::Bool, tch::Device::Cpu)),
            replicas: Tensor::ones([services, 5], (Kind::Bool, tch::Device::Cpu)),
        }
    }

    /// Replica bounds: Δ that would leave `[min, max]` are masked.
    pub fn with_replica_bounds(mut self, current: &[u32], min: u32, max: u32) -> Self {
        let rows: Vec<bool> = current
            .iter()
            .flat_map(|&c| {
                DELTAS.iter().map(move |d| {
                    let n = i64::from(c) + d;
                    *d == 0 || (n >= i64::from(min) && n <= i64::from(max))
                })
            })
            .collect();
        self.replicas = Tensor::from_slice(&rows).view([current.len() as i64, 5]);
        self
    }
}

/// The heads and the critic.
#[derive(Debug)]
pub struct PolicyHeads {
    node_types: i64,
    pair: nn::Sequential,
    nothing: nn::Linear,
    replicas: nn::Sequential,
    cpu: nn::Sequential,
    critic: nn::Sequential,
}

fn mlp(p: nn::Path, i: i64, h: i64, o: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(&p / "0", i, h, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "2", h, o, Default::default()))
}

/// A drawn action with its log-probability, entropy and the state value.
#[derive(Debug)]
pub struct Step {
    /// The action.
    pub action: HybridAction,
    /// log π(action).
    pub logprob: Tensor,
    /// Entropy of the joint distribution's heads (pairs + the chosen pair's a3 and a4).
    pub entropy: Tensor,
    /// V(state).
    pub value: Tensor,
}

const NEG: f64 = -1e9;

impl PolicyHeads {
    /// Heads for embeddings of width `d` and `node_types` node types.
    pub fn new(p: &nn::Path, d: i64, node_types: i64, hidden: i64) -> Self {
        Self {
            node_types,
            pair: mlp(p / "pair", 3 * d, hidden, 1),
            nothing: nn::linear(p / "nothing", d, 1, Default::default()),
            replicas: mlp(p / "replicas", 3 * d, hidden, 5),
            cpu: mlp(p / "cpu", 3 * d, hidden, 2),
            critic: mlp(p / "critic", d + 2, hidden, 1),
        }
    }

    /// Node type embeddings `[K, D]`: the mean embedding of each type's machines (zeros for a
    /// type with none). `types[k]` is machine k's type.
    fn type_embeddings(&self, e: &Embeddings, types: &[i64]) -> Tensor {
        let d = e.pooled.size()[0];
        let idx = Tensor::from_slice(types);
        let sum = Tensor::zeros([self.node_types, d], (Kind::Float, e.node.device()))
            .index_add(0, &idx, &e.node);
        let ones = Tensor::ones([types.len() as i64], (Kind::Float, e.node.device()));
        let n = Tensor::zeros([self.node_types], (Kind::Float, e.node.device()))
            .index_add(0, &idx, &ones)
            .clamp_min(1.0);
        sum / n.unsqueeze(1)
    }

    /// Features of every pair `[S, K, 3D]`.
    fn pair_features(&self, e: &Embeddings, types: &[i64]) -> Tensor {
        let (s, k) = (e.service.size()[0], self.node_types);
        let t = self.type_embeddings(e, types);
        let d = e.pooled.size()[0];
        Tensor::cat(
            &[
                e.service.unsqueeze(1).expand([s, k, d], false),
                t.unsqueeze(0).expand([s, k, d], false),
                e.pooled.view([1, 1, d]).expand([s, k, d], false),
            ],
            2,
        )
    }

    /// The pair logits with "nothing" last `[S·K + 1]`, masked.
    fn joint_logits(&self, e: &Embeddings, types: &[i64], m: &Masks) -> (Tensor, Tensor) {
        let f = self.pair_features(e, types);
        let logits = self.pair.forward(&f).squeeze_dim(-1);
        let logits = logits.masked_fill(&m.pairs.logical_not(), NEG).view([-1]);
        let nothing = self.nothing.forward(&e.pooled);
        (Tensor::cat(&[logits, nothing], 0), f)
    }

    fn value(&self, e: &Embeddings, global: &Tensor) -> Tensor {
        self.critic
            .forward(&Tensor::cat(
                &[e.pooled.shallow_clone(), global.to_kind(Kind::Float)],
                0,
            ))
            .squeeze()
    }

    /// The distributions of a3 (masked logits) and a4 (Beta α, β) for pair `(s, k)`.
    fn conditionals(&self, f: &Tensor, m: &Masks, s: i64, k: i64) -> (Tensor, Tensor, Tensor) {
        let x = f.get(s).get(k);
        let r = self
            .replicas
            .forward(&x)
            .masked_fill(&m.replicas.get(s).logical_not(), NEG);
        let c = self.cpu.forward(&x).softplus() + 1.0;
        (r.log_softmax(-1, Kind::Float), c.get(0), c.get(1))
    }

    /// Draws an action.
    pub fn act(&self, e: &Embeddings, types: &[i64], global: &Tensor, m: &Masks) -> Step {
        let (joint, f) = self.joint_logits(e, types, m);
        let lj = joint.log_softmax(0, Kind::Float);
        let choice = lj.exp().multinomial(1, true).int64_value(&[0]);
        let value = self.value(e, global);
        let mut entropy = -(lj.exp() * &lj).sum(Kind::Float);
        let n_pairs = joint.size()[0] - 1;
        if choice == n_pairs {
            return Step {
                action: HybridAction::Nothing,
                logprob: lj.get(choice),
                entropy,
                value,
            };
        }
        let (s, k) = (choice / self.node_types, choice % self.node_types);
        let (lr, a, b) = self.conditionals(&f, m, s, k);
        let r = lr.exp().multinomial(1, true).int64_value(&[0]);
        let (x, lpx, ent_beta) = beta_sample(&a, &b);
        entropy = entropy - (lr.exp() * &lr).sum(Kind::Float) + ent_beta;
        let logprob = lj.get(choice) + lr.get(r) + lpx;
        Step {
            action: HybridAction::Change {
                service: s,
                node_type: k,
                delta_replicas: DELTAS[r as usize],
                delta_cpu: 2.0 * x.double_value(&[]) - 1.0,
            },
            logprob,
            entropy,
            value,
        }
    }

    /// log π(action), the entropy and V under the current parameters (for the update).
    pub fn evaluate(
        &self,
        e: &Embeddings,
        types: &[i64],
        global: &Tensor,
        m: &Masks,
        action: &HybridAction,
    ) -> (Tensor, Tensor, Tensor) {
        let (joint, f) = self.joint_logits(e, types, m);
        let lj = joint.log_softmax(0, Kind::Float);
        let value = self.value(e, global);
        let mut entropy = -(lj.exp() * &lj).sum(Kind::Float);
        let n_pairs = joint.size()[0] - 1;
        let logprob = match *action {
            HybridAction::Nothing => lj.get(n_pairs),
            HybridAction::Change {
                service,
                node_type,
                delta_replicas,
                delta_cpu,
            } => {
                let (lr, a, b) = self.conditionals(&f, m, service, node_type);
                let r = DELTAS
                    .iter()
                    .position(|d| *d == delta_replicas)
                    .unwrap_or(2) as i64;
                let x = Tensor::from(((delta_cpu + 1.0) / 2.0).clamp(1e-6, 1.0 - 1e-6) as f32);
                entropy = entropy - (lr.exp() * &lr).sum(Kind::Float) + beta_entropy(&a, &b);
                lj.get(service * self.node_types + node_type) + lr.get(r) + beta_logprob(&x, &a, &b)
            }
        };
        (logprob, entropy, value)
    }
}

fn lbeta(a: &Tensor, b: &Tensor) -> Tensor {
    a.lgamma() + b.lgamma() - (a + b).lgamma()
}

/// log density of Beta(a, b) at x ∈ (0, 1), shifted by −ln 2 for the map to [−1, 1].
fn beta_logprob(x: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    (a - 1.0) * x.log() + (b - 1.0) * (x.neg() + 1.0).log() - lbeta(a, b) - 2f64.ln()
}

/// Entropy of Beta(a, b) on [−1, 1].
fn beta_entropy(a: &Tensor, b: &Tensor) -> Tensor {
    lbeta(a, b) - (a - 1.0) * a.digamma() - (b - 1.0) * b.digamma()
        + (a + b - 2.0) * (a + b).digamma()
        + 2f64.ln()
}

/// A Beta(a, b) draw x ∈ (0, 1) (as the ratio of two Gamma draws), its log-probability on
/// [−1, 1] and the entropy.
fn beta_sample(a: &Tensor, b: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (x, y) = tch::no_grad(|| {
        (
            a.detach().view([1]).internal_standard_gamma(),
            b.detach().view([1]).internal_standard_gamma(),
        )
    });
    let s = (&x / (&x + &y)).clamp(1e-6, 1.0 - 1e-6).squeeze();
    let lp = beta_logprob(&s, a, b);
    (s, lp, beta_entropy(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_beta_on_minus_one_to_one() {
        let one = Tensor::from(1.0f32);
        // Beta(1, 1) is uniform: density 1/2 on [−1, 1], entropy ln 2.
        let lp = beta_logprob(&Tensor::from(0.3f32), &one, &one).double_value(&[]);
        assert!((lp - 0.5f64.ln()).abs() < 1e-6, "{lp}");
        assert!((beta_entropy(&one, &one).double_value(&[]) - 2f64.ln()).abs() < 1e-6);
        // Beta(2, 5) at x = 0.2: 30 · 0.2 · 0.8⁴ = 2.4576, halved for the stretch.
        let lp = beta_logprob(
            &Tensor::from(0.2f32),
            &Tensor::from(2.0f32),
            &Tensor::from(5.0f32),
        );
        assert!((lp.double_value(&[]) - (2.4576f64 / 2.0).ln()).abs() < 1e-5);
    }
}
