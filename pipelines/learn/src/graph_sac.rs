//! Discrete SAC on the twin's hybrid action, faithful to CleanRL's `sac_atari.py` (Christodoulou,
//! 2019) as [`crate::sac`] is on vector observations, with the graph encoders in front.
//!
//! The hybrid action is made discrete for it: Δcpu-quota takes one of [`CPU_BINS`], so a joint
//! action is *nothing* or `(pair, Δreplicas, Δcpu bin)` — `S·K·15 + 1` actions. The actor factors
//! as the PPO heads do (`π(pair) · π(Δreplicas | pair) · π(Δcpu | pair)`, the same "nothing"
//! prior and masks), so its full distribution over the joint actions is a product computed for
//! every pair at once. The twin Q networks (each with its own encoder, as CleanRL's critics
//! share nothing with the actor) score every joint action from the pair features (15 values per
//! pair) and "nothing" from the pooled graph and global scalars. Target networks follow by Polyak
//! averaging (`tau`) every `target_network_frequency` steps; expectations run over the actor's
//! distribution instead of sampled actions; α is tuned towards `target_entropy_scale · log |A|`
//! over the valid actions. Rewards are scaled as PPO's are ([`crate::train::RewardNorm`]) and a
//! decision that does not advance time is not discounted.

use std::io::Write;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

use crate::agent::{build_encoder, AgentSpec, GraphAgent, HeadKind, Inputs, Obs};
use crate::encoder::{Embeddings, Encoder};
use crate::envs::twin::TwinEnv;
use crate::policy::{
    mlp, pair_features, pair_or_nothing, ActionTensors, HybridAction, Masks, Step, DELTAS,
    GLOBAL_W, NEG,
};
use crate::sac::{due, soft_update, SacBatch, SacConfig, SacLearner, SacLosses, SacNets};
use crate::train::{RewardNorm, Tally, Update};

/// Δcpu-quota values the discrete action chooses from (with the default dead band of 0.5, ±0.5
/// changes the limit by ×√2 or ×1/√2; 0 leaves it).
pub const CPU_BINS: [f64; 3] = [-0.5, 0.0, 0.5];
const SUB: i64 = 15;

/// The actor's heads.
#[derive(Debug)]
pub struct SacActor {
    node_types: i64,
    global: bool,
    pair: nn::Sequential,
    nothing: nn::Sequential,
    replicas: nn::Sequential,
    cpu: nn::Sequential,
}

/// The masks of the joint actions `[B, S·K·15 + 1]` (bool).
fn joint_mask(m: &Masks, k: i64) -> Tensor {
    let sz = m.pairs.size();
    let (b, s) = (sz[0], sz[1]);
    let pairs = m.pairs.view([b, s * k, 1, 1]);
    let reps = m
        .replicas
        .unsqueeze(2)
        .expand([b, s, k, 5], false)
        .reshape([b, s * k, 5, 1]);
    let all = pairs
        .logical_and(&reps)
        .expand([b, s * k, 5, 3], false)
        .reshape([b, s * k * SUB]);
    Tensor::cat(
        &[all, Tensor::ones([b, 1], (Kind::Bool, m.pairs.device()))],
        1,
    )
}

impl SacActor {
    /// Heads for embeddings of width `d`.
    pub fn new(p: &nn::Path, d: i64, node_types: i64, hidden: i64, global: bool) -> Self {
        let g = if global { GLOBAL_W } else { 0 };
        Self {
            node_types,
            global,
            pair: mlp(p / "pair", 3 * d + g, hidden, 1),
            nothing: mlp(p / "nothing", d + g + 1, hidden, 1),
            replicas: mlp(p / "replicas", 3 * d + g, hidden, 5),
            cpu: mlp(p / "cpu", 3 * d + g, hidden, 3),
        }
    }

    /// log π over the joint actions `[B, S·K·15 + 1]` (masked ones at about −1e9).
    pub fn log_probs(&self, e: &Embeddings, types: &Tensor, global: &Tensor, m: &Masks) -> Tensor {
        let k = self.node_types;
        let g = self.global.then_some(global);
        let f = pair_features(e, types, k, g);
        let sz = f.size();
        let (b, sk) = (sz[0], sz[1]);
        let s = sk / k;
        let lp = pair_or_nothing(&self.pair, &self.nothing, &f, e, g, m);
        let allowed = m
            .replicas
            .unsqueeze(2)
            .expand([b, s, k, 5], false)
            .reshape([b, sk, 5]);
        let lr = self
            .replicas
            .forward(&f)
            .masked_fill(&allowed.logical_not(), NEG)
            .log_softmax(-1, Kind::Float);
        let lc = self.cpu.forward(&f).log_softmax(-1, Kind::Float);
        let joint = lp.narrow(1, 0, sk).view([b, sk, 1, 1]) + lr.unsqueeze(-1) + lc.unsqueeze(2);
        let joint = Tensor::cat(&[joint.reshape([b, sk * SUB]), lp.narrow(1, sk, 1)], 1);
        joint.masked_fill(&joint_mask(m, k).logical_not(), NEG)
    }

    /// Draws (or, `deterministic`, takes the most likely) joint action per graph.
    pub fn act(
        &self,
        e: &Embeddings,
        types: &Tensor,
        global: &Tensor,
        m: &Masks,
        deterministic: bool,
    ) -> Step {
        let lp = self.log_probs(e, types, global, m);
        let b = lp.size()[0];
        let n = lp.size()[1];
        let idx = if deterministic {
            lp.argmax(1, false)
        } else {
            lp.exp().multinomial(1, true).view([-1])
        };
        let logprob = lp.gather(1, &idx.unsqueeze(1), false).squeeze_dim(1);
        let entropy = -(lp.exp() * &lp).sum_dim_intlist(1, false, Kind::Float);
        let ids: Vec<i64> = Vec::try_from(&idx).unwrap_or_default();
        let actions: Vec<HybridAction> =
            ids.iter().map(|&i| decode(i, n, self.node_types)).collect();
        let pairs = (n - 1) / SUB;
        Step {
            tensors: ActionTensors::from_actions(
                &actions,
                pairs / self.node_types,
                self.node_types,
            ),
            actions,
            logprob,
            entropy,
            value: Tensor::zeros([b], (Kind::Float, Device::Cpu)),
        }
    }
}

/// The hybrid action of joint index `i` of `n`.
pub fn decode(i: i64, n: i64, k: i64) -> HybridAction {
    if i >= n - 1 {
        return HybridAction::Nothing;
    }
    let pair = i / SUB;
    HybridAction::Change {
        service: pair / k,
        node_type: pair % k,
        delta_replicas: DELTAS[((i % SUB) / 3) as usize],
        delta_cpu: CPU_BINS[(i % 3) as usize],
    }
}

/// The joint index of a hybrid action (Δcpu to its nearest bin).
pub fn encode(a: &HybridAction, n: i64, k: i64) -> i64 {
    match *a {
        HybridAction::Nothing => n - 1,
        HybridAction::Change {
            service,
            node_type,
            delta_replicas,
            delta_cpu,
        } => {
            let r = DELTAS
                .iter()
                .position(|d| *d == delta_replicas)
                .unwrap_or(2) as i64;
            let c = CPU_BINS
                .iter()
                .enumerate()
                .min_by(|x, y| (x.1 - delta_cpu).abs().total_cmp(&(y.1 - delta_cpu).abs()))
                .map_or(1, |x| x.0) as i64;
            (service * k + node_type) * SUB + r * 3 + c
        }
    }
}

/// A Q network: its own encoder and a head over the joint actions.
#[derive(Debug)]
struct QNet {
    encoder: Box<dyn Encoder>,
    k: i64,
    pair: nn::Sequential,
    nothing: nn::Sequential,
}

impl QNet {
    fn new(p: &nn::Path, spec: &AgentSpec) -> Self {
        let d = spec.dim;
        Self {
            encoder: build_encoder(&(p / "encoder"), spec),
            k: spec.node_types.len().max(1) as i64,
            pair: mlp(p / "pair", 3 * d, spec.hidden, SUB),
            nothing: mlp(p / "nothing", d + 3, spec.hidden, 1),
        }
    }

    /// Q of every joint action `[B, S·K·15 + 1]`.
    fn forward(&self, x: &Inputs) -> Tensor {
        let e = self.encoder.encode_window(&x.refs());
        let f = pair_features(&e, &x.types, self.k, None);
        let b = f.size()[0];
        let q = self.pair.forward(&f).reshape([b, -1]);
        let g = Tensor::cat(
            &[
                e.pooled.shallow_clone(),
                x.global.to_kind(Kind::Float),
                x.masks.progress.shallow_clone(),
            ],
            1,
        );
        Tensor::cat(&[q, self.nothing.forward(&g)], 1)
    }
}

struct Transition {
    obs: Rc<Obs>,
    next: Rc<Obs>,
    action: i64,
    reward: f32,
    discount: f32,
    done: f32,
}

/// The twin critics and their targets.
struct Critics {
    q1: QNet,
    q2: QNet,
    q1_t: QNet,
    q2_t: QNet,
}

/// One gradient step of actor, critics and temperature on a minibatch drawn from `buffer`.
fn gradient_step(
    agent: &GraphAgent,
    c: &Critics,
    learner: &mut SacLearner,
    buffer: &[Transition],
    cfg: &SacConfig,
    k: i64,
    rng: &mut ChaCha8Rng,
) -> SacLosses {
    let idx: Vec<usize> = (0..cfg.batch_size)
        .map(|_| rng.random_range(0..buffer.len()))
        .collect();
    let obs: Vec<&Obs> = idx.iter().map(|&i| buffer[i].obs.as_ref()).collect();
    let nxt: Vec<&Obs> = idx.iter().map(|&i| buffer[i].next.as_ref()).collect();
    let pick = |f: &dyn Fn(&Transition) -> f32| {
        Tensor::from_slice(&idx.iter().map(|&i| f(&buffer[i])).collect::<Vec<_>>())
    };
    let bo = agent.inputs(&obs);
    let bn = agent.inputs(&nxt);
    // The target entropy over the valid actions of each state.
    let valid = joint_mask(&bo.masks, k)
        .to_kind(Kind::Float)
        .sum_dim_intlist(1, false, Kind::Float);
    learner.step(
        &SacNets {
            q: &|| (c.q1.forward(&bo), c.q2.forward(&bo)),
            policy: &|| {
                let lp = agent.sac_log_probs(&bo);
                (lp.exp(), lp)
            },
            next: &|| {
                let lp = agent.sac_log_probs(&bn);
                let q = c.q1_t.forward(&bn).minimum(&c.q2_t.forward(&bn));
                (lp.exp(), lp, q)
            },
        },
        &SacBatch {
            actions: Tensor::from_slice(&idx.iter().map(|&i| buffer[i].action).collect::<Vec<_>>()),
            rewards: pick(&|t| t.reward),
            discounts: pick(&|t| t.discount),
            dones: pick(&|t| t.done),
            target_entropy: (valid.log() * cfg.target_entropy_scale).unsqueeze(1),
        },
    )
}

/// What training produced: the actor (a [`GraphAgent`] with SAC heads).
#[derive(Debug)]
pub struct SacTrainedAgent {
    /// The actor.
    pub agent: GraphAgent,
    /// Its variables.
    pub vs: VarStore,
    /// One row per logged update.
    pub updates: Vec<Update>,
}

/// Trains a fresh SAC actor (`spec.heads` is set to SAC) for `total_steps` decisions on `envs`,
/// seeded, logging every `log_every` decisions as CSV (CleanRL's names) to `log`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    mut envs: Vec<TwinEnv>,
    mut spec: AgentSpec,
    cfg: &SacConfig,
    total_steps: usize,
    seed: u64,
    log_every: usize,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(&Update),
    keep: Option<&crate::train::Keep>,
) -> std::io::Result<SacTrainedAgent> {
    tch::manual_seed(seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let err = |e: tch::TchError| std::io::Error::other(e.to_string());
    spec.head = HeadKind::Sac;
    let (s, k) = (
        spec.services.len() as i64,
        spec.node_types.len().max(1) as i64,
    );
    let n_joint = s * k * SUB + 1;
    let actor_vs = VarStore::new(Device::Cpu);
    let agent = GraphAgent::new(&actor_vs.root(), spec.clone());
    let q_vs = VarStore::new(Device::Cpu);
    let mut t_vs = VarStore::new(Device::Cpu);
    // Created in this order (the critics, then their targets), as the seed's draws expect.
    let critics = Critics {
        q1: QNet::new(&(q_vs.root() / "qf1"), &spec),
        q2: QNet::new(&(q_vs.root() / "qf2"), &spec),
        q1_t: QNet::new(&(t_vs.root() / "qf1"), &spec),
        q2_t: QNet::new(&(t_vs.root() / "qf2"), &spec),
    };
    soft_update(&mut t_vs, &q_vs, 1.0);
    let mut learner = SacLearner::new(cfg, &actor_vs, &q_vs).map_err(err)?;
    let n = envs.len();
    let mut norm = RewardNorm::new(n);
    let mut buffer: Vec<Transition> = Vec::new();
    let cap = cfg.buffer_size.max(cfg.batch_size);
    let mut pos = 0;
    let mut current: Vec<Rc<Obs>> = envs
        .iter()
        .map(|e| Rc::new(Obs::new(&e.window(), e.mask())))
        .collect();
    writeln!(
        log,
        "{},losses/qf_loss,losses/actor_loss,losses/alpha,losses/alpha_loss",
        Update::header()
    )?;
    let mut updates = vec![];
    let mut u = Update::default();
    let mut tally = Tally::default();
    let mut losses = [0.0f64; 4];
    let mut global_step = 0;
    while global_step < total_steps {
        let refs: Vec<&Obs> = current.iter().map(|o| o.as_ref()).collect();
        let step = tch::no_grad(|| agent.act(&refs, false));
        let mut next_obs = Vec::with_capacity(n);
        for (i, env) in envs.iter_mut().enumerate() {
            let a = &step.actions[i];
            let r = env
                .step(a)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            tally.record(a, &r);
            let g = if r.advanced { cfg.gamma } else { 1.0 };
            let scaled = norm.scale(i, f64::from(r.reward), g, r.truncated) as f32;
            let next = Rc::new(Obs::new(&env.window(), env.mask()));
            let tr = Transition {
                obs: current[i].clone(),
                next: next.clone(),
                action: encode(a, n_joint, k),
                reward: scaled,
                discount: g as f32,
                // A truncated episode is not terminal: its next state's value still counts.
                done: 0.0,
            };
            if buffer.len() < cap {
                buffer.push(tr);
            } else {
                buffer[pos] = tr;
            }
            pos = (pos + 1) % cap;
            next_obs.push(next);
        }
        current = next_obs;
        global_step += n;
        let learning = global_step >= cfg.learning_starts && buffer.len() >= cfg.batch_size;
        // As CleanRL schedules them: the target update is due on its own clock, not only
        // when a gradient step is.
        let (gradient, target) = due(cfg, global_step / n);
        if learning && gradient {
            let l = gradient_step(&agent, &critics, &mut learner, &buffer, cfg, k, &mut rng);
            losses = [l.qf, l.actor, l.alpha, l.alpha_loss];
            u.diagnostics.entropy = l.entropy;
        }
        if learning && target {
            soft_update(&mut t_vs, &q_vs, cfg.tau);
        }
        if tally.decisions() >= log_every || global_step >= total_steps {
            u.diagnostics.global_step = global_step;
            u.diagnostics.learning_rate = cfg.policy_lr;
            u.diagnostics.value_loss = losses[0];
            u.diagnostics.policy_loss = losses[1];
            u.ticks += tally.ticks();
            u.mean_reward = tally.mean_reward();
            u.terms = tally.mean_terms();
            u.nothing = tally.nothing_share();
            u.refused = tally.refused();
            writeln!(
                log,
                "{},{},{},{},{}",
                u.csv(),
                losses[0],
                losses[1],
                losses[2],
                losses[3]
            )?;
            progress(&u);
            updates.push(u);
            tally = Tally::default();
        }
        if let Some(k) = keep {
            k.maybe_save(global_step - n, global_step, &agent, &actor_vs)?;
        }
    }
    Ok(SacTrainedAgent {
        agent,
        vs: actor_vs,
        updates,
    })
}
