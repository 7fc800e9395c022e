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

/// What may be chosen, per graph of a batch.
#[derive(Debug)]
pub struct Masks {
    /// `[B, S, K]` bool: the pair may be chosen.
    pub pairs: Tensor,
    /// `[B, S, 5]` bool: Δreplicas allowed per service (Δ = 0 always is).
    pub replicas: Tensor,
    /// `[B, 1]`: the share of this tick's decisions already taken (the "nothing" head and the
    /// critic read it: the same snapshot is a different state after two changes than before).
    pub progress: Tensor,
    /// `[B, 1]`: ln(real pairs) per graph, the "nothing" prior, where graphs of different
    /// clusters are padded to one `S`; `None` when no graph is (the prior is then ln(S·K)).
    pub prior: Option<Tensor>,
}

/// The masks of one graph, as an environment builds them.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleMask {
    /// `S × K`, row-major: the pair may be chosen.
    pub pairs: Vec<bool>,
    /// `S × 5`, row-major: the Δreplicas may be chosen.
    pub replicas: Vec<bool>,
    /// The share of this tick's decisions already taken, in [0, 1).
    pub progress: f32,
}

impl SampleMask {
    /// Everything allowed.
    pub fn all(services: usize, node_types: usize) -> Self {
        Self {
            pairs: vec![true; services * node_types],
            replicas: vec![true; services * 5],
            progress: 0.0,
        }
    }

    /// Replica bounds: a Δ that would leave `[min, max]` is masked.
    pub fn with_replica_bounds(mut self, current: &[u32], min: u32, max: u32) -> Self {
        self.replicas = current
            .iter()
            .flat_map(|&c| {
                DELTAS.iter().map(move |d| {
                    let n = i64::from(c) + d;
                    *d == 0 || (n >= i64::from(min) && n <= i64::from(max))
                })
            })
            .collect();
        self
    }
}

impl Masks {
    /// Everything allowed for `b` graphs.
    pub fn all(b: i64, services: i64, node_types: i64) -> Self {
        let o = (Kind::Bool, tch::Device::Cpu);
        Self {
            pairs: Tensor::ones([b, services, node_types], o),
            replicas: Tensor::ones([b, services, 5], o),
            progress: Tensor::zeros([b, 1], (Kind::Float, tch::Device::Cpu)),
            prior: None,
        }
    }

    /// The batch of `masks` (one per graph) for `services` services and `node_types` types. A
    /// graph with fewer services (a smaller cluster padded to `services`) has its padding
    /// services' pairs masked and its own "nothing" prior.
    pub fn stack(masks: &[&SampleMask], services: i64, node_types: i64) -> Self {
        let b = masks.len() as i64;
        let (s, k) = (services as usize, node_types as usize);
        let own = |m: &SampleMask| m.pairs.len() / k.max(1);
        let padded = masks.iter().any(|m| own(m) != s);
        let mut pairs: Vec<bool> = Vec::with_capacity(b as usize * s * k);
        let mut reps: Vec<bool> = Vec::with_capacity(b as usize * s * 5);
        for m in masks {
            let n = own(m).min(s);
            pairs.extend(&m.pairs[..n * k]);
            pairs.extend(std::iter::repeat_n(false, (s - n) * k));
            reps.extend(&m.replicas[..n * 5]);
            // A padding service's Δreplicas are never read (its pairs are masked).
            reps.extend(std::iter::repeat_n(true, (s - n) * 5));
        }
        let progress: Vec<f32> = masks.iter().map(|m| m.progress).collect();
        let prior: Vec<f32> = masks
            .iter()
            .map(|m| ((own(m).min(s) * k).max(1) as f32).ln())
            .collect();
        Self {
            pairs: Tensor::from_slice(&pairs).view([b, services, node_types]),
            replicas: Tensor::from_slice(&reps).view([b, services, 5]),
            progress: Tensor::from_slice(&progress).view([b, 1]),
            prior: padded.then(|| Tensor::from_slice(&prior).view([b, 1])),
        }
    }

    /// Rows `idx` of the batch.
    pub fn select(&self, idx: &Tensor) -> Self {
        Self {
            pairs: self.pairs.index_select(0, idx),
            replicas: self.replicas.index_select(0, idx),
            progress: self.progress.index_select(0, idx),
            prior: self.prior.as_ref().map(|p| p.index_select(0, idx)),
        }
    }
}

/// A batch of actions as the update reads them.
#[derive(Debug)]
pub struct ActionTensors {
    /// `[B]` int64: `service · K + node_type`, or `S · K` for nothing.
    pub choice: Tensor,
    /// `[B]` int64: index into [`DELTAS`] (2 when nothing).
    pub replicas: Tensor,
    /// `[B]` float: the Beta draw in (0, 1) behind Δcpu (0.5 when nothing).
    pub cpu: Tensor,
}

impl ActionTensors {
    /// Rows `idx`.
    pub fn select(&self, idx: &Tensor) -> Self {
        Self {
            choice: self.choice.index_select(0, idx),
            replicas: self.replicas.index_select(0, idx),
            cpu: self.cpu.index_select(0, idx),
        }
    }

    /// The tensors of `actions` (for `node_types` types and `services` services).
    pub fn from_actions(actions: &[HybridAction], services: i64, node_types: i64) -> Self {
        let mut choice = vec![];
        let mut replicas = vec![];
        let mut cpu = vec![];
        for a in actions {
            match *a {
                HybridAction::Nothing => {
                    choice.push(services * node_types);
                    replicas.push(2);
                    cpu.push(0.5f32);
                }
                HybridAction::Change {
                    service,
                    node_type,
                    delta_replicas,
                    delta_cpu,
                } => {
                    choice.push(service * node_types + node_type);
                    replicas.push(
                        DELTAS
                            .iter()
                            .position(|d| *d == delta_replicas)
                            .unwrap_or(2) as i64,
                    );
                    cpu.push(((delta_cpu + 1.0) / 2.0).clamp(1e-6, 1.0 - 1e-6) as f32);
                }
            }
        }
        Self {
            choice: Tensor::from_slice(&choice),
            replicas: Tensor::from_slice(&replicas),
            cpu: Tensor::from_slice(&cpu),
        }
    }
}

/// Node type embeddings `[B, K, D]`: the mean embedding of each type's machines (zeros for a type
/// with none). `types` `[B, N]` is each machine's type (`k` for a padding row, left out).
fn type_embeddings(e: &Embeddings, types: &Tensor, k: i64) -> Tensor {
    let onehot = types.one_hot(k + 1).narrow(2, 0, k).to_kind(Kind::Float);
    let sum = onehot.transpose(1, 2).matmul(&e.node);
    let n = onehot.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
    sum / n.unsqueeze(-1)
}

/// Width of the global scalars an actor reads (seed §3.1: cluster CPU, SLO-violation rate).
pub(crate) const GLOBAL_W: i64 = graphscaler_schemas::snapshot::global_feature::COUNT as i64;

/// The features of every (service, node type) pair `[B, S·K, 3D (+ G)]`: the service's
/// embedding, the node type's and the pooled graph's, and with `global` `[B, G]` the global
/// scalars.
pub(crate) fn pair_features(
    e: &Embeddings,
    types: &Tensor,
    k: i64,
    global: Option<&Tensor>,
) -> Tensor {
    let sz = e.service.size();
    let (b, s, d) = (sz[0], sz[1], sz[2]);
    let t = type_embeddings(e, types, k);
    let mut parts = vec![
        e.service.unsqueeze(2).expand([b, s, k, d], false),
        t.unsqueeze(1).expand([b, s, k, d], false),
        e.pooled.view([b, 1, 1, d]).expand([b, s, k, d], false),
    ];
    let mut w = 3 * d;
    if let Some(g) = global {
        let gw = g.size()[1];
        parts.push(
            g.to_kind(Kind::Float)
                .view([b, 1, 1, gw])
                .expand([b, s, k, gw], false),
        );
        w += gw;
    }
    Tensor::cat(&parts, 3).view([b, s * k, w])
}

/// log-softmax over every pair and "nothing" `[B, S·K + 1]`: `pair` scores the pair features
/// `[B, S·K, 3D]` (masked pairs at about −1e9), `nothing` the pooled graph and the tick's
/// progress. "Nothing" carries a fixed prior of ln(S·K): at initialisation doing nothing is as
/// likely as all changes together, so early exploration does not churn every service every tick
/// (a graph padded to a larger cluster's `S` keeps the prior of its own pairs).
/// The PPO heads and SAC's actor both choose their pair this way.
pub(crate) fn pair_or_nothing(
    pair: &nn::Sequential,
    nothing: &nn::Sequential,
    features: &Tensor,
    e: &Embeddings,
    global: Option<&Tensor>,
    m: &Masks,
) -> Tensor {
    let sz = features.size();
    let (b, sk) = (sz[0], sz[1]);
    let logits = pair
        .forward(features)
        .squeeze_dim(-1)
        .masked_fill(&m.pairs.view([b, sk]).logical_not(), NEG);
    let mut inputs = vec![e.pooled.shallow_clone()];
    inputs.extend(global.map(|g| g.to_kind(Kind::Float)));
    inputs.push(m.progress.shallow_clone());
    let nothing = nothing.forward(&Tensor::cat(&inputs, 1));
    let nothing = match &m.prior {
        Some(p) => nothing + p,
        None => nothing + (sk as f64).ln(),
    };
    Tensor::cat(&[logits, nothing], 1).log_softmax(1, Kind::Float)
}

/// The heads and the critic.
#[derive(Debug)]
pub struct PolicyHeads {
    node_types: i64,
    /// The actor reads the global scalars.
    global: bool,
    pair: nn::Sequential,
    nothing: nn::Sequential,
    replicas: nn::Sequential,
    cpu: nn::Sequential,
    critic: nn::Sequential,
}

pub(crate) fn mlp(p: nn::Path, i: i64, h: i64, o: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(&p / "0", i, h, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "2", h, o, Default::default()))
}

/// Drawn actions with their log-probabilities, entropies and the state values.
#[derive(Debug)]
pub struct Step {
    /// The actions, one per graph.
    pub actions: Vec<HybridAction>,
    /// The same as tensors.
    pub tensors: ActionTensors,
    /// log π(action) `[B]`.
    pub logprob: Tensor,
    /// Entropy of the joint distribution's heads (pairs + the chosen pair's a3 and a4) `[B]`.
    pub entropy: Tensor,
    /// V(state) `[B]`.
    pub value: Tensor,
}

/// What behaviour cloning fits, per row: the log-probabilities of the pairs (and nothing) and of a
/// change's Δreplicas, where the Δcpu Beta's mean lies, and the critic's value.
#[derive(Debug)]
pub struct Imitation {
    /// log π over every pair and nothing `[B, S·K + 1]`.
    pub joint: Tensor,
    /// log π of the recorded Δreplicas given its pair (0 for nothing).
    pub replicas: Tensor,
    /// The Beta's mean on (0, 1) (Δcpu = 2x − 1) at the recorded pair.
    pub cpu_mean: Tensor,
    /// 1 where the action is a change, 0 for nothing.
    pub change: Tensor,
    /// V(state).
    pub value: Tensor,
}

pub(crate) const NEG: f64 = -1e9;

/// The distributions of one batch.
struct Dists {
    /// log-softmax over pairs and nothing `[B, S·K + 1]`.
    joint: Tensor,
    /// pair features `[B, S·K, 3D]`.
    features: Tensor,
    value: Tensor,
    pairs: i64,
}

impl PolicyHeads {
    /// Heads for embeddings of width `d` and `node_types` node types; with `global`, the actor
    /// (pair, nothing, Δreplicas and Δcpu heads) reads the global scalars as the critic does.
    pub fn new(p: &nn::Path, d: i64, node_types: i64, hidden: i64, global: bool) -> Self {
        let g = if global { GLOBAL_W } else { 0 };
        Self {
            node_types,
            global,
            pair: mlp(p / "pair", 3 * d + g, hidden, 1),
            nothing: mlp(p / "nothing", d + g + 1, hidden, 1),
            replicas: mlp(p / "replicas", 3 * d + g, hidden, 5),
            cpu: mlp(p / "cpu", 3 * d + g, hidden, 2),
            critic: mlp(p / "critic", d + 3, hidden, 1),
        }
    }

    /// Node types `K`.
    pub fn node_types(&self) -> i64 {
        self.node_types
    }

    fn dists(&self, e: &Embeddings, types: &Tensor, global: &Tensor, m: &Masks) -> Dists {
        let sz = e.service.size();
        let (b, s) = (sz[0], sz[1]);
        let k = self.node_types;
        let g = self.global.then_some(global);
        let features = pair_features(e, types, k, g);
        let joint = pair_or_nothing(&self.pair, &self.nothing, &features, e, g, m);
        let value = self
            .critic
            .forward(&Tensor::cat(
                &[
                    e.pooled.shallow_clone(),
                    global.to_kind(Kind::Float),
                    m.progress.shallow_clone(),
                ],
                1,
            ))
            .view([b]);
        Dists {
            joint,
            features,
            value,
            pairs: s * k,
        }
    }

    /// log-softmax of a3 `[B, 5]` and the Beta's α, β `[B]` for each row's chosen pair (pair 0
    /// for nothing; the caller masks it out).
    fn conditionals(&self, d: &Dists, m: &Masks, choice: &Tensor) -> (Tensor, Tensor, Tensor) {
        let b = choice.size()[0];
        let pair = choice.clamp_max(d.pairs - 1);
        let width = d.features.size()[2];
        let x = d
            .features
            .gather(1, &pair.view([b, 1, 1]).expand([b, 1, width], false), false)
            .squeeze_dim(1);
        let service = pair.divide_scalar_mode(self.node_types, "floor");
        let allowed = m
            .replicas
            .gather(1, &service.view([b, 1, 1]).expand([b, 1, 5], false), false)
            .squeeze_dim(1);
        let r = self
            .replicas
            .forward(&x)
            .masked_fill(&allowed.logical_not(), NEG)
            .log_softmax(-1, Kind::Float);
        let c = (self.cpu.forward(&x) + 3.0).softplus() + 1.0;
        (r, c.select(1, 0), c.select(1, 1))
    }

    fn joint_terms(
        &self,
        d: &Dists,
        m: &Masks,
        a: &ActionTensors,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let (lr, al, be) = self.conditionals(d, m, &a.choice);
        let change = a.choice.lt(d.pairs).to_kind(Kind::Float);
        let lp = d
            .joint
            .gather(1, &a.choice.unsqueeze(1), false)
            .squeeze_dim(1)
            + &change
                * (lr.gather(1, &a.replicas.unsqueeze(1), false).squeeze_dim(1)
                    + beta_logprob(&a.cpu, &al, &be));
        let ent = -(d.joint.exp() * &d.joint).sum_dim_intlist(1, false, Kind::Float)
            + &change
                * (-(lr.exp() * &lr).sum_dim_intlist(1, false, Kind::Float)
                    + beta_entropy(&al, &be));
        (lp, ent, lr, change)
    }

    /// Draws an action per graph (`deterministic`: the most likely pair and Δreplicas and the
    /// Beta's mode).
    pub fn act(
        &self,
        e: &Embeddings,
        types: &Tensor,
        global: &Tensor,
        m: &Masks,
        deterministic: bool,
    ) -> Step {
        let d = self.dists(e, types, global, m);
        let choice = if deterministic {
            d.joint.argmax(1, false)
        } else {
            d.joint.exp().multinomial(1, true).view([-1])
        };
        let (lr, al, be) = self.conditionals(&d, m, &choice);
        let replicas = if deterministic {
            lr.argmax(1, false)
        } else {
            lr.exp().multinomial(1, true).view([-1])
        };
        let cpu = if deterministic {
            ((&al - 1.0) / (&al + &be - 2.0)).clamp(1e-6, 1.0 - 1e-6)
        } else {
            beta_sample(&al, &be)
        }
        .detach();
        let tensors = ActionTensors {
            choice,
            replicas,
            cpu,
        };
        let (logprob, entropy, _, _) = self.joint_terms(&d, m, &tensors);
        let c: Vec<i64> = Vec::try_from(&tensors.choice).unwrap_or_default();
        let r: Vec<i64> = Vec::try_from(&tensors.replicas).unwrap_or_default();
        let x: Vec<f32> = Vec::try_from(&tensors.cpu).unwrap_or_default();
        let actions = c
            .iter()
            .zip(&r)
            .zip(&x)
            .map(|((&c, &r), &x)| {
                if c >= d.pairs {
                    HybridAction::Nothing
                } else {
                    HybridAction::Change {
                        service: c / self.node_types,
                        node_type: c % self.node_types,
                        delta_replicas: DELTAS[r as usize],
                        delta_cpu: 2.0 * f64::from(x) - 1.0,
                    }
                }
            })
            .collect();
        Step {
            actions,
            tensors,
            logprob,
            entropy,
            value: d.value,
        }
    }

    /// log π(actions), the entropies and V under the current parameters (for the update), `[B]`
    /// each.
    pub fn evaluate(
        &self,
        e: &Embeddings,
        types: &Tensor,
        global: &Tensor,
        m: &Masks,
        a: &ActionTensors,
    ) -> (Tensor, Tensor, Tensor) {
        let d = self.dists(e, types, global, m);
        let (lp, ent, _, _) = self.joint_terms(&d, m, a);
        (lp, ent, d.value)
    }

    /// What behaviour cloning fits to `a` ([`Imitation`]).
    pub fn imitation(
        &self,
        e: &Embeddings,
        types: &Tensor,
        global: &Tensor,
        m: &Masks,
        a: &ActionTensors,
    ) -> Imitation {
        let d = self.dists(e, types, global, m);
        let (lr, al, be) = self.conditionals(&d, m, &a.choice);
        let change = a.choice.lt(d.pairs).to_kind(Kind::Float);
        Imitation {
            joint: d.joint,
            replicas: &change * lr.gather(1, &a.replicas.unsqueeze(1), false).squeeze_dim(1),
            cpu_mean: &al / (&al + &be),
            change,
            value: d.value,
        }
    }

    /// V only `[B]`.
    pub fn value(&self, e: &Embeddings, types: &Tensor, global: &Tensor, m: &Masks) -> Tensor {
        self.dists(e, types, global, m).value
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

/// Beta(a, b) draws x ∈ (0, 1) (as the ratio of two Gamma draws), `[B]`.
fn beta_sample(a: &Tensor, b: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let x = a.detach().internal_standard_gamma();
        let y = b.detach().internal_standard_gamma();
        (&x / (&x + &y)).clamp(1e-6, 1.0 - 1e-6)
    })
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
