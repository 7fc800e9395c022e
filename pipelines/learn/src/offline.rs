//! Learning from a store of transitions (`graphscaler train --from`): behaviour cloning of the
//! recorded decisions and the critic fitted on the recorded rewards, the bootstrap that on-policy
//! fine-tuning on the twin then starts from.
//!
//! * **Data.** Each stored row ([`Transition`]) is a snapshot, the decision a policy published on
//!   it and the reward over the window after it. [`dataset`] replays the rows run by run
//!   ([`runs`]) through a [`DecisionState`], as the policy stage would have decided on them, and
//!   turns each recorded decision into the agent's sub-decisions with their masks ([`imitate`]).
//!   The split is by time: the last `holdout_share` of each run's rows is held out (neighbouring
//!   windows are alike, so a random split would measure memory, not generalisation).
//! * **Critic targets.** The discounted return per window, `G_t = r̃_t + γ G_{t+1}`, with the
//!   rewards scaled as on-policy training scales them ([`RewardNorm`] run over the recorded rows
//!   in order, sub-decisions inside a window undiscounted as in the environments): its
//!   statistics go into the checkpoint, so that fine-tuning continues the same scale and the
//!   critic it inherits stays fitted. A run's last windows are truncated (the return after the
//!   recording is unknown, taken as 0), and a window without a recorded reward cuts the chain:
//!   its samples fit no value.
//! * **Loss.** The negative log-likelihood of the recorded pair (or *nothing*) and Δreplicas,
//!   the squared distance of the Δcpu Beta's mean to the recorded Δcpu (a likelihood would
//!   sharpen the Beta without bound on a policy that never changes CPU, and fine-tuning could
//!   then no longer explore it), and `vf_coef` × the value error; Adam, clipped gradients.
//! * **Fine-tuning load** ([`recorded_loads`]): the entry request rates recorded in the same
//!   snapshots, each run's cut into episode-long pieces, each piece a trace the twin replays at
//!   its own rates — the fine-tuning sees the load the recording saw.
//! * **Agreement** ([`agreement`]) on the held-out windows: the cloned policy decides on each
//!   (greedily, under the masks it is served with, from the decision state the recorded decisions
//!   left) and is compared with the recorded decision, per window and per change.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;

use graphscaler_graph::store::{runs, Transition};
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, Trace};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Kind, Tensor};

use crate::agent::{AgentSpec, GraphAgent, Obs};
use crate::decide::{window_of, DecisionState};
use crate::imitate::imitate;
use crate::policy::{ActionTensors, HybridAction};
use crate::serve::snapshot_capacity;
use crate::train::{NormStats, RewardNorm};

/// Settings of the bootstrap (`[learn.bootstrap]`).
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapConfig {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Sub-decisions per gradient step.
    pub minibatch: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Weight of the value error.
    pub vf_coef: f64,
    /// Weight of the Δcpu mean's squared error.
    pub cpu_coef: f64,
    /// Gradient norm limit.
    pub max_grad_norm: f64,
    /// Share of each run's rows (its last) held out.
    pub holdout_share: f64,
    /// Discount per window (`learn.train.gamma`).
    pub gamma: f64,
}

/// Why a store cannot be learned from.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A snapshot's services are not the model's.
    #[error("row {row} (t = {time_s} s): the snapshot's services differ from the model's: missing {missing:?}, unknown {unknown:?} (a store of another cluster?)")]
    Services {
        /// Row, from 0, over all files in order.
        row: usize,
        /// Its time.
        time_s: f64,
        /// The model's services the snapshot lacks.
        missing: Vec<String>,
        /// The snapshot's services the model lacks.
        unknown: Vec<String>,
    },
    /// No row holds a decision.
    #[error("{rows} stored rows hold no recorded decision: nothing to clone (record one with `graphscaler twin record --policy tuned-hpa` or `graphscaler run --store DIR`)")]
    NoDecisions {
        /// Rows read.
        rows: usize,
    },
    /// The split leaves one side empty.
    #[error("the split leaves no decided window {side} ({decided} decided windows, holdout_share {share}): record longer or change learn.bootstrap.holdout_share")]
    Split {
        /// `to train on` or `held out`.
        side: &'static str,
        /// Decided windows.
        decided: usize,
        /// The share.
        share: f64,
    },
    /// No stored row holds an entry request rate to replay.
    #[error("none of the {rows} stored rows holds the entry request rate (stores written before it was recorded, or with the global scalars missing throughout): the fine-tuning load cannot replay them; record again or give --scenario")]
    NoRates {
        /// Rows read.
        rows: usize,
    },
    /// A piece of the recorded load holds a rate no trace can replay.
    #[error("the recorded load's piece {piece}: {message}")]
    BadRates {
        /// The piece.
        piece: String,
        /// What is wrong.
        message: String,
    },
    /// The model cannot be cloned into.
    #[error("behaviour cloning needs the PPO heads (ppo, a2c); SAC's discrete actor is not bootstrapped yet")]
    Heads,
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(String),
    /// The log could not be written.
    #[error("writing the bootstrap log: {0}")]
    Io(#[from] std::io::Error),
}

/// The load the stored rows saw, as twin scenarios: each run's entry request rates
/// ([`Snapshot::entry_rps`], one per window) cut where the rate is unknown or time skips a
/// window, then into pieces of `episode_s` (the remainder joins the last piece; a part shorter
/// than an episode stands alone and the twin loops it), each an absolute trace
/// ([`Trace::from_rates`]) named `recorded-r<run>-p<piece>`. A piece without a single request
/// is left out, with a warning that counts them; a rate a trace refuses is an error. The rates are those the recorded
/// system served, not what its users would have sent to an instant one: a recording of a
/// policy that kept up replays its load closely, one of a saturated system lower.
pub fn recorded_loads(rows: &[Transition], episode_s: f64) -> Result<Vec<Shape>, OfflineError> {
    let mut out = vec![];
    let mut idle = 0usize;
    for (r, run) in runs(rows).into_iter().enumerate() {
        let mut parts: Vec<Vec<&Snapshot>> = vec![];
        let mut cur: Vec<&Snapshot> = vec![];
        for t in run {
            let s = &t.snapshot;
            let skips = cur
                .last()
                .is_some_and(|p| s.time_s - p.time_s > 1.5 * p.window_s);
            if s.entry_rps.is_none() || skips {
                parts.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur)));
            }
            if s.entry_rps.is_some() {
                cur.push(s);
            }
        }
        parts.extend((!cur.is_empty()).then_some(cur));
        let mut piece = 0;
        for part in parts {
            let window = part[0].window_s.max(1e-9);
            let per = ((episode_s / window).round() as usize).max(1);
            let n = (part.len() / per).max(1);
            for k in 0..n {
                let end = if k + 1 == n {
                    part.len()
                } else {
                    (k + 1) * per
                };
                let rates: Vec<f64> = part[k * per..end]
                    .iter()
                    .filter_map(|s| s.entry_rps.map(f64::from))
                    .collect();
                piece += 1;
                // A piece without requests (an idle recording) has no load to replay: left out,
                // and said below. Any other rate a trace refuses is an error.
                if rates.iter().all(|x| *x == 0.0) {
                    idle += 1;
                    continue;
                }
                let name = format!("recorded-r{}-p{piece}", r + 1);
                let tr = Trace::from_rates(&name, window, &rates).map_err(|e| {
                    OfflineError::BadRates {
                        piece: name.clone(),
                        message: e.to_string(),
                    }
                })?;
                out.push(Shape::Trace(tr));
            }
        }
    }
    if idle > 0 {
        tracing::warn!(
            idle,
            replayed = out.len(),
            "recorded pieces without a single request are not replayed"
        );
    }
    if out.is_empty() {
        return Err(OfflineError::NoRates { rows: rows.len() });
    }
    Ok(out)
}

fn torch(e: tch::TchError) -> OfflineError {
    OfflineError::Torch(e.to_string())
}

/// One sub-decision to clone.
#[derive(Debug)]
struct Sample {
    obs: Obs,
    action: HybridAction,
    /// The choices (`service · K + node_type`) of this and the tick's later recorded changes:
    /// the order a recorded decision lists its changes in is arbitrary, so any of them is right.
    choices: Vec<i64>,
    /// The scaled return from here (`None`: unknown, no value fitted).
    ret: Option<f32>,
}

/// A held-out window as the policy would have decided on it.
#[derive(Debug)]
pub struct HeldOut {
    window: Vec<Snapshot>,
    state: DecisionState,
    recorded: Vec<HybridAction>,
}

/// What [`dataset`] found in the rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataSummary {
    /// Rows read.
    pub rows: usize,
    /// Runs they fall into.
    pub runs: usize,
    /// Rows with a recorded decision.
    pub decided: usize,
    /// Rows with a recorded reward.
    pub rewarded: usize,
    /// Rows skipped as unfit for a policy (a non-finite value, parts that disagree).
    pub invalid: usize,
    /// Why the first of them was.
    pub first_invalid: Option<String>,
    /// Decided windows trained on and held out.
    pub train_windows: usize,
    /// Decided windows held out.
    pub held_out_windows: usize,
    /// Sub-decisions trained on.
    pub train_steps: usize,
    /// Sub-decisions held out.
    pub held_out_steps: usize,
    /// Recorded decisions per policy.
    pub decided_by: BTreeMap<String, usize>,
    /// What of the recorded decisions the action space could not express (imitate's notes).
    pub notes: usize,
    /// The first few of them.
    pub first_notes: Vec<String>,
}

/// Rows ready to learn from.
#[derive(Debug)]
pub struct Dataset {
    train: Vec<Sample>,
    valid: Vec<Sample>,
    held_out: Vec<HeldOut>,
    /// What was found.
    pub summary: DataSummary,
    /// The reward scaling over the rows.
    pub norm: NormStats,
}

impl Dataset {
    /// The held-out windows.
    pub fn held_out(&self) -> &[HeldOut] {
        &self.held_out
    }
}

/// One window of a run as replayed.
struct Window {
    steps: Vec<(Obs, HybridAction, Vec<i64>)>,
    reward: Option<f64>,
    held: bool,
}

/// The rows as samples for `spec`'s model.
pub fn dataset(
    rows: &[Transition],
    spec: &AgentSpec,
    cfg: &BootstrapConfig,
) -> Result<Dataset, OfflineError> {
    let rules = &spec.rules;
    let w = spec.window.max(1);
    let share = cfg.holdout_share.clamp(0.0, 1.0);
    let mut summary = DataSummary {
        rows: rows.len(),
        ..DataSummary::default()
    };
    let mut replayed: Vec<Vec<Window>> = vec![];
    let mut held_out = vec![];
    let mut row = 0usize;
    for run in runs(rows) {
        summary.runs += 1;
        let cut = ((run.len() as f64) * (1.0 - share)).ceil() as usize;
        let mut state = DecisionState::new(spec.services.clone(), spec.node_types.clone());
        let mut history: VecDeque<Snapshot> = VecDeque::new();
        let mut windows = vec![];
        for (i, t) in run.iter().enumerate() {
            let at = row + i;
            let snap = &t.snapshot;
            if snap.services != spec.services {
                return Err(OfflineError::Services {
                    row: at,
                    time_s: snap.time_s,
                    missing: spec
                        .services
                        .iter()
                        .filter(|s| !snap.services.contains(s))
                        .cloned()
                        .collect(),
                    unknown: snap
                        .services
                        .iter()
                        .filter(|s| !spec.services.contains(s))
                        .cloned()
                        .collect(),
                });
            }
            let reward = t.reward.map(|r| r.value).filter(|v| v.is_finite());
            summary.rewarded += usize::from(reward.is_some());
            if let Err(e) = snap.validate() {
                summary.invalid += 1;
                summary
                    .first_invalid
                    .get_or_insert_with(|| format!("row {at} (t = {} s): {e}", snap.time_s));
                // Its reward still belongs to the return of the windows before it.
                windows.push(Window {
                    steps: vec![],
                    reward,
                    held: i >= cut,
                });
                continue;
            }
            history.push_back(snap.clone());
            while history.len() > w {
                history.pop_front();
            }
            let window = window_of(&history, w);
            state.tick(snap);
            let mut steps = vec![];
            if let Some(d) = &t.decision {
                summary.decided += 1;
                *summary.decided_by.entry(d.by.clone()).or_default() += 1;
                let before = state.clone();
                let im = imitate(&mut state, rules, snap, &d.actions);
                summary.notes += im.notes.len();
                for n in im.notes {
                    if summary.first_notes.len() < 5 {
                        summary
                            .first_notes
                            .push(format!("row {at} (t = {} s): {n}", snap.time_s));
                    }
                }
                if i >= cut {
                    summary.held_out_windows += 1;
                    held_out.push(HeldOut {
                        window: window.iter().map(|s| (*s).clone()).collect(),
                        state: before,
                        recorded: im.steps.iter().map(|(_, a)| *a).collect(),
                    });
                } else {
                    summary.train_windows += 1;
                }
                let k = spec.node_types.len().max(1) as i64;
                let nothing = spec.services.len() as i64 * k;
                let choice = |a: &HybridAction| match *a {
                    HybridAction::Change {
                        service, node_type, ..
                    } => service * k + node_type,
                    HybridAction::Nothing => nothing,
                };
                let all: Vec<i64> = im.steps.iter().map(|(_, a)| choice(a)).collect();
                steps = im
                    .steps
                    .into_iter()
                    .enumerate()
                    .map(|(j, (mask, a))| {
                        let later = if a == HybridAction::Nothing {
                            vec![nothing]
                        } else {
                            all[j..].iter().copied().filter(|c| *c != nothing).collect()
                        };
                        (Obs::new(&window, mask), a, later)
                    })
                    .collect();
            }
            windows.push(Window {
                steps,
                reward,
                held: i >= cut,
            });
        }
        row += run.len();
        replayed.push(windows);
    }
    if summary.decided == 0 {
        return Err(OfflineError::NoDecisions { rows: rows.len() });
    }
    for (side, n) in [
        ("to train on", summary.train_windows),
        ("held out", summary.held_out_windows),
    ] {
        if n == 0 {
            return Err(OfflineError::Split {
                side,
                decided: summary.decided,
                share,
            });
        }
    }
    // The scale on-policy training would give these rewards: one environment, run after run.
    let mut norm = RewardNorm::new(1);
    for windows in &replayed {
        for (j, wdw) in windows.iter().enumerate() {
            for _ in 1..wdw.steps.len() {
                norm.scale(0, 0.0, 1.0, false);
            }
            norm.scale(
                0,
                wdw.reward.unwrap_or(0.0),
                cfg.gamma,
                j + 1 == windows.len(),
            );
        }
    }
    let stats = norm.stats();
    let scale = stats.std();
    let (mut train, mut valid) = (vec![], vec![]);
    for windows in replayed {
        let mut rets = vec![None; windows.len()];
        let mut next = 0.0;
        for (j, wdw) in windows.iter().enumerate().rev() {
            match wdw.reward {
                Some(r) => {
                    next = r / scale + cfg.gamma * next;
                    rets[j] = Some(next as f32);
                }
                None => next = 0.0,
            }
        }
        for (wdw, ret) in windows.into_iter().zip(rets) {
            let side = if wdw.held { &mut valid } else { &mut train };
            side.extend(wdw.steps.into_iter().map(|(obs, action, choices)| Sample {
                obs,
                action,
                choices,
                ret,
            }));
        }
    }
    summary.train_steps = train.len();
    summary.held_out_steps = valid.len();
    Ok(Dataset {
        train,
        valid,
        held_out,
        summary,
        norm: stats,
    })
}

/// One pass's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Epoch {
    /// From 1.
    pub epoch: usize,
    /// Negative log-likelihood of the recorded discrete choices, training rows.
    pub nll: f64,
    /// Squared error of the Δcpu mean on changes, training rows.
    pub cpu_mse: f64,
    /// Value error, training rows.
    pub value_loss: f64,
    /// The same three on the held-out rows.
    pub held_out_nll: f64,
    /// Held-out Δcpu error.
    pub held_out_cpu_mse: f64,
    /// Held-out value error.
    pub held_out_value_loss: f64,
}

impl Epoch {
    /// The CSV header.
    pub const HEADER: &'static str =
        "epoch,bc/nll,bc/cpu_mse,bc/value_loss,bc/held_out_nll,bc/held_out_cpu_mse,bc/held_out_value_loss";

    /// One CSV row.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.epoch,
            self.nll,
            self.cpu_mse,
            self.value_loss,
            self.held_out_nll,
            self.held_out_cpu_mse,
            self.held_out_value_loss
        )
    }
}

/// The three loss terms of `idx` (summed over rows, with the rows that fit a value).
fn terms(
    agent: &GraphAgent,
    samples: &[Sample],
    idx: &[usize],
) -> (Tensor, Tensor, Tensor, f64, f64) {
    let obs: Vec<&Obs> = idx.iter().map(|&i| &samples[i].obs).collect();
    let k = agent.spec.node_types.len().max(1) as i64;
    let s = agent.spec.services.len() as i64;
    let actions: Vec<HybridAction> = idx.iter().map(|&i| samples[i].action).collect();
    let a = ActionTensors::from_actions(&actions, s, k);
    let im = agent.imitation(&obs, &a);
    // log Σ π over the recorded choices still open at this sub-decision, + log π(Δreplicas).
    let width = im.joint.size()[1];
    let mut open = vec![0f32; idx.len() * width as usize];
    for (r, &i) in idx.iter().enumerate() {
        for &c in &samples[i].choices {
            open[r * width as usize + c as usize] = 1.0;
        }
    }
    let open = Tensor::from_slice(&open).view([idx.len() as i64, width]);
    let pair = (&im.joint + open.log()).logsumexp([1], false);
    let nll = -(pair + &im.replicas).sum(Kind::Float);
    let cpu = ((&im.cpu_mean - &a.cpu).square() * &im.change).sum(Kind::Float);
    let (ret, has): (Vec<f32>, Vec<f32>) = idx
        .iter()
        .map(|&i| samples[i].ret.map_or((0.0, 0.0), |r| (r, 1.0)))
        .unzip();
    let has_t = Tensor::from_slice(&has);
    let value = ((&im.value - Tensor::from_slice(&ret)).square() * &has_t).sum(Kind::Float);
    let changes = im.change.sum(Kind::Float).double_value(&[]);
    (
        nll,
        cpu,
        value,
        changes,
        has.iter().map(|x| f64::from(*x)).sum(),
    )
}

/// Means of the three terms over `samples`, without gradients.
fn held_out_terms(agent: &GraphAgent, samples: &[Sample], minibatch: usize) -> (f64, f64, f64) {
    let (mut nll, mut cpu, mut value, mut changes, mut valued) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let idx: Vec<usize> = (0..samples.len()).collect();
    for chunk in idx.chunks(minibatch.max(1)) {
        let (n, c, v, ch, va) = tch::no_grad(|| terms(agent, samples, chunk));
        nll += n.double_value(&[]);
        cpu += c.double_value(&[]);
        value += v.double_value(&[]);
        changes += ch;
        valued += va;
    }
    (
        nll / samples.len().max(1) as f64,
        cpu / changes.max(1.0),
        value / valued.max(1.0),
    )
}

/// Fits `agent` (whose parameters are `vs`) to `data`: `cfg.epochs` passes of minibatches in a
/// seeded order, each pass's figures written to `log` as CSV and given to `progress`.
pub fn bootstrap(
    agent: &GraphAgent,
    vs: &VarStore,
    data: &Dataset,
    cfg: &BootstrapConfig,
    seed: u64,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(&Epoch),
) -> Result<Vec<Epoch>, OfflineError> {
    if !agent.has_ppo_heads() {
        return Err(OfflineError::Heads);
    }
    let mut opt = nn::Adam {
        eps: 1e-5,
        ..nn::Adam::default()
    }
    .build(vs, cfg.learning_rate)
    .map_err(torch)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    let mut out = vec![];
    writeln!(log, "{}", Epoch::HEADER)?;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let (mut nll, mut cpu, mut value, mut changes, mut valued) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for idx in order.chunks(cfg.minibatch.max(1)) {
            let (n, c, v, ch, va) = terms(agent, &data.train, idx);
            let b = idx.len() as f64;
            let loss =
                &n / b + &c * (cfg.cpu_coef / ch.max(1.0)) + &v * (cfg.vf_coef / va.max(1.0));
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(cfg.max_grad_norm);
            opt.step();
            nll += n.double_value(&[]);
            cpu += c.double_value(&[]);
            value += v.double_value(&[]);
            changes += ch;
            valued += va;
        }
        let (hn, hc, hv) = held_out_terms(agent, &data.valid, cfg.minibatch);
        let e = Epoch {
            epoch,
            nll: nll / data.train.len().max(1) as f64,
            cpu_mse: cpu / changes.max(1.0),
            value_loss: value / valued.max(1.0),
            held_out_nll: hn,
            held_out_cpu_mse: hc,
            held_out_value_loss: hv,
        };
        writeln!(log, "{}", e.csv())?;
        progress(&e);
        out.push(e);
    }
    Ok(out)
}

/// How far a policy's decisions agree with the recorded ones on the held-out windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Agreement {
    /// Windows compared.
    pub windows: usize,
    /// Windows where the policy changed the same services by the same Δreplicas (and Δcpu past
    /// the deadband on the same services) as recorded.
    pub same_decision: usize,
    /// Windows the recording did nothing on: what a policy that never acts agrees on.
    pub recorded_nothing: usize,
    /// Per-service replica changes recorded.
    pub recorded_changes: usize,
    /// Of those, the ones the policy made in the same direction.
    pub same_direction: usize,
    /// Per-service replica changes the policy made.
    pub policy_changes: usize,
    /// Recorded scale-ups, and how many of them the policy made too.
    pub ups: (usize, usize),
    /// Recorded scale-downs, and how many of them the policy made too.
    pub downs: (usize, usize),
}

impl Agreement {
    /// Share of windows decided as recorded.
    pub fn share(&self) -> f64 {
        self.same_decision as f64 / self.windows.max(1) as f64
    }

    /// The share a policy that never acts would get.
    pub fn nothing_share(&self) -> f64 {
        self.recorded_nothing as f64 / self.windows.max(1) as f64
    }

    /// Share of recorded changes made in the same direction.
    pub fn recall(&self) -> f64 {
        self.same_direction as f64 / self.recorded_changes.max(1) as f64
    }

    /// Share of the policy's changes that the recording made in the same direction.
    pub fn precision(&self) -> f64 {
        self.same_direction as f64 / self.policy_changes.max(1) as f64
    }

    /// One line for a person: this agreement against the policy's `before` training (and a
    /// policy that never acts).
    pub fn describe(&self, before: &Agreement) -> String {
        format!(
            "held-out agreement with the recorded decisions: {:.1}% of {} windows decided alike (a policy that never acts: {:.1}%; before cloning: {:.1}%), {:.1}% of {} recorded replica changes made in the same direction ({} of {} scale-ups, {} of {} scale-downs), {:.1}% of the clone's {} changes recorded",
            100.0 * self.share(),
            self.windows,
            100.0 * self.nothing_share(),
            100.0 * before.share(),
            100.0 * self.recall(),
            self.recorded_changes,
            self.ups.1,
            self.ups.0,
            self.downs.1,
            self.downs.0,
            100.0 * self.precision(),
            self.policy_changes
        )
    }
}

/// Per service, the Δreplicas and whether the CPU changed.
fn effect(actions: &[HybridAction], services: usize, deadband: f64) -> Vec<(i64, bool)> {
    let mut out = vec![(0, false); services];
    for a in actions {
        if let HybridAction::Change {
            service,
            delta_replicas,
            delta_cpu,
            ..
        } = *a
        {
            if let Some(e) = out.get_mut(service as usize) {
                e.0 += delta_replicas;
                e.1 |= delta_cpu.abs() >= deadband;
            }
        }
    }
    out
}

/// `agent`'s greedy decisions on the held-out windows against the recorded ones.
pub fn agreement(agent: &GraphAgent, held: &[HeldOut]) -> Agreement {
    let rules = &agent.spec.rules;
    let n = agent.spec.services.len();
    let mut out = Agreement::default();
    for h in held {
        let Some(snap) = h.window.last() else {
            continue;
        };
        let window: Vec<&Snapshot> = h.window.iter().collect();
        let capacity = snapshot_capacity(snap);
        let capacity = capacity.as_ref().map(|(r, f)| (r.as_slice(), *f));
        let mut state = h.state.clone();
        let mut taken = vec![];
        while state.may_decide(rules) {
            let obs = Obs::new(&window, state.mask(rules, snap, capacity));
            let step = tch::no_grad(|| agent.act(&[&obs], true));
            let a = step.actions[0];
            let done = state.apply(rules, &a).is_none();
            taken.push(a);
            if done {
                break;
            }
        }
        let mine = effect(&taken, n, rules.cpu_deadband);
        let theirs = effect(&h.recorded, n, rules.cpu_deadband);
        out.windows += 1;
        out.same_decision += usize::from(mine == theirs);
        out.recorded_nothing += usize::from(theirs.iter().all(|e| *e == (0, false)));
        for (m, t) in mine.iter().zip(&theirs) {
            out.recorded_changes += usize::from(t.0 != 0);
            out.policy_changes += usize::from(m.0 != 0);
            let same = t.0 != 0 && m.0.signum() == t.0.signum();
            out.same_direction += usize::from(same);
            let side = if t.0 > 0 {
                &mut out.ups
            } else {
                &mut out.downs
            };
            if t.0 != 0 {
                side.0 += 1;
                side.1 += usize::from(same);
            }
        }
    }
    out
}
