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

use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

use crate::agent::{build_encoder, AgentSpec, GraphAgent, HeadKind, Inputs, Obs};
use crate::encoder::{Embeddings, Encoder};
use crate::envs::twin::TwinEnv;
use crate::graph::{HeteroGraph, Relation};
use crate::policy::{
    mlp, pair_features, pair_or_nothing, ActionTensors, HybridAction, Masks, Step, DELTAS,
    GLOBAL_W, NEG,
};
use crate::resume::{self, Checkpointing, Identity, Parts, SavedState};
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

/// The replay buffer as tensors, for a saved training state (`buffer/…`): every distinct
/// observation once (a transition's next observation is the following one's observation), its
/// window's graphs and masks laid end to end with their counts, then the transitions as indices
/// into them, and the slot the next transition overwrites.
fn buffer_tensors(buffer: &[Transition], pos: usize) -> Vec<(String, Tensor)> {
    let mut index: HashMap<*const Obs, i64> = HashMap::new();
    let mut distinct: Vec<&Obs> = vec![];
    let (mut obs, mut next) = (vec![], vec![]);
    for t in buffer {
        for (o, ids) in [(&t.obs, &mut obs), (&t.next, &mut next)] {
            let i = *index.entry(Rc::as_ptr(o)).or_insert_with(|| {
                distinct.push(o.as_ref());
                distinct.len() as i64 - 1
            });
            ids.push(i);
        }
    }
    let graphs: Vec<&HeteroGraph> = distinct.iter().flat_map(|o| &o.window).collect();
    let ints = |v: Vec<i64>| Tensor::from_slice(&v);
    let floats = |f: &dyn Fn(&Transition) -> f32| {
        Tensor::from_slice(&buffer.iter().map(f).collect::<Vec<f32>>())
    };
    let bools = |f: &dyn Fn(&Obs) -> &Vec<bool>| {
        let v: Vec<u8> = distinct
            .iter()
            .flat_map(|o| f(o).iter().map(|&b| u8::from(b)))
            .collect();
        let lens: Vec<i64> = distinct.iter().map(|o| f(o).len() as i64).collect();
        (Tensor::from_slice(&v), ints(lens))
    };
    let cat = |f: &dyn Fn(&HeteroGraph) -> Tensor, dim: i64| {
        Tensor::cat(&graphs.iter().map(|g| f(g)).collect::<Vec<_>>(), dim)
    };
    let mut out = vec![
        (
            "window".to_owned(),
            ints(distinct.iter().map(|o| o.window.len() as i64).collect()),
        ),
        (
            "services".to_owned(),
            ints(graphs.iter().map(|g| g.services).collect()),
        ),
        (
            "nodes".to_owned(),
            ints(graphs.iter().map(|g| g.nodes).collect()),
        ),
        (
            "x_service".to_owned(),
            cat(&|g| g.x_service.shallow_clone(), 0),
        ),
        ("x_node".to_owned(), cat(&|g| g.x_node.shallow_clone(), 0)),
        ("global".to_owned(), cat(&|g| g.global.shallow_clone(), 0)),
        ("time".to_owned(), cat(&|g| g.time.shallow_clone(), 0)),
        (
            "progress".to_owned(),
            Tensor::from_slice(
                &distinct
                    .iter()
                    .map(|o| o.mask.progress)
                    .collect::<Vec<f32>>(),
            ),
        ),
        ("obs".to_owned(), ints(obs)),
        ("next".to_owned(), ints(next)),
        (
            "action".to_owned(),
            ints(buffer.iter().map(|t| t.action).collect()),
        ),
        ("reward".to_owned(), floats(&|t| t.reward)),
        ("discount".to_owned(), floats(&|t| t.discount)),
        ("done".to_owned(), floats(&|t| t.done)),
        ("pos".to_owned(), ints(vec![pos as i64])),
    ];
    let (pairs, pairs_len) = bools(&|o| &o.mask.pairs);
    let (replicas, replicas_len) = bools(&|o| &o.mask.replicas);
    out.extend([
        ("pairs".to_owned(), pairs),
        ("pairs_len".to_owned(), pairs_len),
        ("replicas".to_owned(), replicas),
        ("replicas_len".to_owned(), replicas_len),
    ]);
    for r in Relation::ALL {
        // −1: the graph has no such relation.
        let mut counts = vec![];
        let (mut idx, mut attr) = (vec![], vec![]);
        for g in &graphs {
            match g.edges.iter().find(|(e, _, _)| *e == r) {
                Some((_, i, a)) => {
                    counts.push(i.size()[1]);
                    idx.push(i.shallow_clone());
                    attr.push(a.shallow_clone());
                }
                None => counts.push(-1),
            }
        }
        let idx = if idx.is_empty() {
            Tensor::zeros([2, 0], (Kind::Int64, Device::Cpu))
        } else {
            Tensor::cat(&idx, 1)
        };
        let attr = if attr.is_empty() {
            Tensor::zeros([0, r.edge_dim()], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&attr, 0)
        };
        out.push((format!("{}/count", r.name), ints(counts)));
        out.push((format!("{}/index", r.name), idx));
        out.push((format!("{}/attr", r.name), attr));
    }
    out.into_iter()
        .map(|(k, t)| (format!("buffer/{k}"), t))
        .collect()
}

/// The replay buffer [`buffer_tensors`] wrote, and the slot to overwrite next; an error names
/// the tensor that is missing or does not add up.
fn buffer_from(t: &HashMap<String, Tensor>) -> Result<(Vec<Transition>, usize), String> {
    let get = |k: &str| {
        t.get(&format!("buffer/{k}"))
            .ok_or_else(|| format!("no `buffer/{k}` in the saved state"))
    };
    let ints = |k: &str| -> Result<Vec<i64>, String> {
        Vec::<i64>::try_from(get(k)?).map_err(|e| format!("`buffer/{k}`: {e}"))
    };
    let floats = |k: &str| -> Result<Vec<f32>, String> {
        Vec::<f32>::try_from(get(k)?).map_err(|e| format!("`buffer/{k}`: {e}"))
    };
    let window = ints("window")?;
    let (services, nodes) = (ints("services")?, ints("nodes")?);
    let g_total: i64 = window.iter().sum();
    if services.len() as i64 != g_total || nodes.len() as i64 != g_total {
        return Err(format!(
            "`buffer/window` counts {g_total} graphs, `buffer/services` {} and `buffer/nodes` {}",
            services.len(),
            nodes.len()
        ));
    }
    // Consecutive slices of `x` along `dim`, one per count.
    let slices =
        |x: &Tensor, dim: i64, counts: &[i64], what: &str| -> Result<Vec<Tensor>, String> {
            let total: i64 = counts.iter().filter(|&&c| c > 0).sum();
            if x.size().get(dim as usize) != Some(&total) {
                return Err(format!(
                    "`buffer/{what}` has shape {:?}, the counts add up to {total}",
                    x.size()
                ));
            }
            let mut at = 0;
            Ok(counts
                .iter()
                .map(|&c| {
                    let c = c.max(0);
                    let s = x.narrow(dim, at, c).copy();
                    at += c;
                    s
                })
                .collect())
        };
    let ones = vec![1; g_total as usize];
    let xs = slices(get("x_service")?, 0, &services, "x_service")?;
    let xn = slices(get("x_node")?, 0, &nodes, "x_node")?;
    let gl = slices(get("global")?, 0, &ones, "global")?;
    let tm = slices(get("time")?, 0, &ones, "time")?;
    let mut rel = vec![];
    for r in Relation::ALL {
        let counts = ints(&format!("{}/count", r.name))?;
        let idx = slices(
            get(&format!("{}/index", r.name))?,
            1,
            &counts,
            &format!("{}/index", r.name),
        )?;
        let attr = slices(
            get(&format!("{}/attr", r.name))?,
            0,
            &counts,
            &format!("{}/attr", r.name),
        )?;
        rel.push((r, counts, idx, attr));
    }
    let mut graphs = (0..g_total as usize).map(|g| HeteroGraph {
        x_service: xs[g].shallow_clone(),
        x_node: xn[g].shallow_clone(),
        edges: rel
            .iter()
            .filter(|(_, counts, _, _)| counts[g] >= 0)
            .map(|(r, _, idx, attr)| (*r, idx[g].shallow_clone(), attr[g].shallow_clone()))
            .collect(),
        global: gl[g].shallow_clone(),
        time: tm[g].shallow_clone(),
        graphs: 1,
        services: services[g],
        nodes: nodes[g],
        service_valid: None,
        node_valid: None,
    });
    let bools = |k: &str| -> Result<Vec<Vec<bool>>, String> {
        let v = Vec::<u8>::try_from(get(k)?).map_err(|e| format!("`buffer/{k}`: {e}"))?;
        let lens = ints(&format!("{k}_len"))?;
        if lens.len() != window.len() || lens.iter().sum::<i64>() != v.len() as i64 {
            return Err(format!(
                "`buffer/{k}_len` does not count `buffer/{k}` per observation"
            ));
        }
        let mut at = 0;
        Ok(lens
            .iter()
            .map(|&l| {
                let m = v[at..at + l as usize].iter().map(|&b| b != 0).collect();
                at += l as usize;
                m
            })
            .collect())
    };
    let (pairs, replicas, progress) = (bools("pairs")?, bools("replicas")?, floats("progress")?);
    if progress.len() != window.len() {
        return Err("`buffer/progress` does not have one value per observation".into());
    }
    let distinct: Vec<Rc<Obs>> = window
        .iter()
        .zip(pairs.into_iter().zip(replicas).zip(progress))
        .map(|(&w, ((pairs, replicas), progress))| {
            Rc::new(Obs {
                window: graphs.by_ref().take(w as usize).collect(),
                mask: crate::policy::SampleMask {
                    pairs,
                    replicas,
                    progress,
                },
            })
        })
        .collect();
    let (obs, next, action) = (ints("obs")?, ints("next")?, ints("action")?);
    let (reward, discount, done) = (floats("reward")?, floats("discount")?, floats("done")?);
    let n = obs.len();
    if [
        next.len(),
        action.len(),
        reward.len(),
        discount.len(),
        done.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err("the transitions' tensors (`buffer/obs`, `next`, `action`, `reward`, `discount`, `done`) differ in length".into());
    }
    let at = |i: i64| -> Result<Rc<Obs>, String> {
        usize::try_from(i)
            .ok()
            .and_then(|i| distinct.get(i))
            .cloned()
            .ok_or_else(|| format!("a transition names observation {i} of {}", distinct.len()))
    };
    let buffer = (0..n)
        .map(|i| {
            Ok(Transition {
                obs: at(obs[i])?,
                next: at(next[i])?,
                action: action[i],
                reward: reward[i],
                discount: discount[i],
                done: done[i],
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let pos = ints("pos")?.first().copied().unwrap_or(0) as usize;
    Ok((buffer, pos))
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
    /// Logged updates planned (one per `log_every` decisions).
    pub iterations: usize,
    /// `Some(k)`: stopped early, after logged update `k`, its state saved ([`Checkpointing`]).
    pub stopped: Option<usize>,
    /// The logged updates after which this training resumed.
    pub resumed_at: Vec<usize>,
    /// Seconds spent training, over every run of a resumed training.
    pub wall_s: f64,
    /// Decisions so far, over all environments (and every run of a resumed training).
    pub global_step: usize,
}

/// Trains a fresh SAC actor (`spec.heads` is set to SAC) for `total_steps` decisions on `envs`,
/// seeded, logging every `log_every` decisions as CSV (CleanRL's names) to `log`.
///
/// With `ck`, the training saves its state ([`crate::resume`]) every `ck.every` logged updates
/// and when it stops early (`ck.deadline`, `ck.stop_after`, counted in logged updates): the
/// actor, the critics and their targets, the temperature, the three optimisers' moments, the
/// reward scaling and the whole replay buffer, so that `ck.resume` continues with the buffer it
/// had. As for PPO, the episodes in progress are cut at the save and the random streams are
/// reseeded from the seed and the update number: a resumed training has the same length,
/// schedule and buffer, not the bit-identical run an uninterrupted one would have been.
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
    ck: Option<&Checkpointing>,
) -> std::io::Result<SacTrainedAgent> {
    tch::manual_seed(seed as i64);
    let started = std::time::Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let other = |e: String| std::io::Error::other(e);
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
    let mut learner = SacLearner::new(cfg, &actor_vs, &q_vs);
    let n = envs.len();
    // A row of the log (a logged update) every `per` steps of all environments.
    let per = log_every.div_ceil(n).max(1);
    let iterations = total_steps.div_ceil(n).div_ceil(per);
    let id = Identity {
        spec: &spec,
        algo: "sac",
        settings: format!("{cfg:?} log_every={log_every}"),
        envs: n,
        total_steps,
    };
    let mut norm = RewardNorm::new(n);
    let mut state = SavedState::start(iterations, total_steps, n, norm.stats());
    let mut buffer: Vec<Transition> = Vec::new();
    let cap = cfg.buffer_size.max(cfg.batch_size);
    let mut pos = 0;
    let mut u = Update::default();
    let mut global_step = 0;
    if let Some(c) = ck.filter(|c| c.resume) {
        let (alpha_vs, mut optims) = learner.parts_mut();
        let (saved, tensors) = resume::load_parts(
            &c.dir,
            &[
                ("model", &actor_vs),
                ("critics", &q_vs),
                ("targets", &t_vs),
                ("alpha", alpha_vs),
            ],
            &mut optims,
            &["buffer/"],
            &id,
        )
        .map_err(|e| other(e.to_string()))?;
        learner.restored();
        (buffer, pos) = buffer_from(&tensors).map_err(|e| {
            other(format!(
                "training state {}: {e}",
                c.dir.join(&saved.weights).display()
            ))
        })?;
        if buffer.len() > cap || pos >= cap {
            return Err(other(format!(
                "training state {}: a replay buffer of {} transitions (next slot {pos}) for a capacity of {cap}",
                c.dir.display(),
                buffer.len()
            )));
        }
        state = saved;
        state.resumed_at.push(state.iteration);
        norm = RewardNorm::seeded(n, state.reward_norm);
        global_step = state.global_step;
        u.ticks = state.ticks;
        // Other streams than the first run's, the same on every resume at this update.
        let reseed = seed.wrapping_add(1_000_003 * state.iteration as u64);
        tch::manual_seed(reseed as i64);
        rng = ChaCha8Rng::seed_from_u64(reseed);
    } else {
        writeln!(
            log,
            "{},losses/qf_loss,losses/actor_loss,losses/alpha,losses/alpha_loss",
            Update::header()
        )?;
    }
    let prior_wall_s = state.wall_s;
    let mut iteration = state.iteration;
    let mut current: Vec<Rc<Obs>> = envs
        .iter()
        .map(|e| Rc::new(Obs::new(&e.window(), e.mask())))
        .collect();
    let mut updates = vec![];
    let mut stopped = None;
    let mut tally = Tally::default();
    let mut losses = [0.0f64; 4];
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
        if let Some(k) = keep {
            k.maybe_save(global_step - n, global_step, &agent, &actor_vs)?;
        }
        if tally.decisions() < log_every && global_step < total_steps {
            continue;
        }
        iteration += 1;
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
        let Some(c) = ck else { continue };
        let stop = global_step < total_steps
            && (c.stop_after.is_some_and(|k| iteration >= k)
                || c.deadline.is_some_and(|t| std::time::Instant::now() >= t));
        if stop || (c.every > 0 && iteration.is_multiple_of(c.every)) {
            // What the log says must be on disk before the state that counts it.
            log.flush()?;
            let (alpha_vs, optims) = learner.parts();
            state = resume::save_parts(
                &c.dir,
                Parts {
                    stores: vec![
                        ("model", &actor_vs),
                        ("critics", &q_vs),
                        ("targets", &t_vs),
                        ("alpha", alpha_vs),
                    ],
                    optims: optims.to_vec(),
                    tensors: buffer_tensors(&buffer, pos),
                },
                &id,
                SavedState {
                    iteration,
                    global_step,
                    ticks: u.ticks,
                    reward_norm: norm.stats(),
                    wall_s: prior_wall_s + started.elapsed().as_secs_f64(),
                    ..state
                },
            )
            .map_err(|e| other(e.to_string()))?;
        }
        if stop {
            stopped = Some(iteration);
            break;
        }
    }
    Ok(SacTrainedAgent {
        agent,
        vs: actor_vs,
        updates,
        iterations,
        stopped,
        resumed_at: state.resumed_at,
        wall_s: prior_wall_s + started.elapsed().as_secs_f64(),
        global_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SampleMask;

    /// A graph of `s` services and `n` machines whose values are `v`; without `runs_on` when
    /// `partial`.
    fn graph(s: i64, n: i64, v: f64, partial: bool) -> HeteroGraph {
        let f = |shape: &[i64]| Tensor::full(shape, v, (Kind::Float, Device::Cpu));
        let edges = Relation::ALL
            .iter()
            .filter(|r| !(partial && r.name == "runs_on"))
            .map(|r| {
                let e = (v as i64 % 3) + 1;
                (
                    *r,
                    Tensor::arange(2 * e, (Kind::Int64, Device::Cpu)).view([2, e]),
                    f(&[e, r.edge_dim()]),
                )
            })
            .collect();
        HeteroGraph {
            x_service: f(&[s, 7]),
            x_node: f(&[n, 3]),
            edges,
            global: f(&[1, 2]),
            time: Tensor::from_slice(&[1.7e9 + v]),
            graphs: 1,
            services: s,
            nodes: n,
            service_valid: None,
            node_valid: None,
        }
    }

    fn obs(v: f64) -> Rc<Obs> {
        Rc::new(Obs {
            window: vec![graph(3, 2, v, false), graph(3, 2, v + 0.5, v > 2.0)],
            mask: SampleMask {
                pairs: vec![true, false, v > 1.0, true, true, false],
                replicas: vec![v > 2.0; 15],
                progress: v as f32 / 10.0,
            },
        })
    }

    fn same(a: &Obs, b: &Obs) {
        assert_eq!(a.mask, b.mask);
        assert_eq!(a.window.len(), b.window.len());
        for (x, y) in a.window.iter().zip(&b.window) {
            assert!(x.x_service.equal(&y.x_service) && x.x_node.equal(&y.x_node));
            assert!(x.global.equal(&y.global) && x.time.equal(&y.time));
            assert_eq!(
                (x.services, x.nodes, x.graphs),
                (y.services, y.nodes, y.graphs)
            );
            assert_eq!(x.edges.len(), y.edges.len());
            for ((r, i, a), (s, j, b)) in x.edges.iter().zip(&y.edges) {
                assert_eq!(r, s);
                assert!(i.equal(j) && a.equal(b), "{}", r.name);
            }
        }
    }

    /// A replay buffer goes through a safetensors file whole: every transition's values, its
    /// observations (a graph without one relation included), and their sharing — a
    /// transition's next observation is the following one's observation, stored once.
    #[test]
    fn the_replay_buffer_survives_a_saved_state() {
        let o: Vec<Rc<Obs>> = (0..5).map(|v| obs(f64::from(v))).collect();
        let buffer: Vec<Transition> = (0..4)
            .map(|i| Transition {
                obs: o[i].clone(),
                next: o[i + 1].clone(),
                action: 7 * i as i64,
                reward: i as f32 - 1.5,
                discount: if i == 2 { 1.0 } else { 0.99 },
                done: 0.0,
            })
            .collect();
        let tensors = buffer_tensors(&buffer, 3);
        assert_eq!(
            tensors
                .iter()
                .find(|(k, _)| k == "buffer/window")
                .map(|(_, t)| t.size()),
            Some(vec![5])
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.safetensors");
        Tensor::write_safetensors(&tensors, &path).unwrap();
        let read: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .unwrap()
            .into_iter()
            .collect();
        let (back, pos) = buffer_from(&read).unwrap();
        assert_eq!((back.len(), pos), (4, 3));
        for (a, b) in buffer.iter().zip(&back) {
            assert_eq!(
                (a.action, a.reward, a.discount, a.done),
                (b.action, b.reward, b.discount, b.done)
            );
            same(&a.obs, &b.obs);
            same(&a.next, &b.next);
        }
        assert!(Rc::ptr_eq(&back[0].next, &back[1].obs));
        // A buffer that does not add up is refused, naming the tensor.
        let mut bad = read;
        bad.insert("buffer/obs".into(), Tensor::from_slice(&[0i64, 9, 1, 2]));
        let e = buffer_from(&bad).err().unwrap();
        assert!(e.contains("observation 9 of 5"), "{e}");
        bad.remove("buffer/x_node");
        let e = buffer_from(&bad).err().unwrap();
        assert!(e.contains("buffer/x_node"), "{e}");
    }
}
