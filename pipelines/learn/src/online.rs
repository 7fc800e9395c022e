//! Guarded online learning for the policy stage (`[learn.online]`, off by default).
//!
//! The live model acts on the snapshot stream. Every decision is kept with its input, the
//! action, and the live model's log-probability and value; the reward of a tick's decisions is
//! [`crate::reward::reward_of_snapshot`] of the next snapshot (the reward training used), and
//! decisions inside one tick are not discounted (as in [`crate::envs::twin`]). A tick whose next
//! snapshot is refused (another set of services, a NaN) or lacks the reward's inputs gives no
//! transition; a gap in the stream (a missed window) ends the segment.
//!
//! Every `update_every` transitions:
//!
//! 1. GAE advantages with the live critic; the most recent `holdout_share` of the transitions
//!    is held out.
//! 2. A **shadow copy** of the live model takes PPO epochs on the rest — [`crate::ppo::update`],
//!    the update of every PPO learner here — stopping after the epoch in which its approximate
//!    KL to the live model passes `max_kl` (PPO's target-KL stop, as CleanRL's): the **trust
//!    region**.
//! 3. The **promotion check**, on the held-out (most recent) transitions the shadow never saw:
//!    every parameter finite, approximate KL(live ‖ shadow) at most `max_kl`, and the clipped
//!    surrogate gain (the importance-weighted advantage of the shadow over the live model,
//!    advantages normalised) at least `min_gain`.
//! 4. Passed: the shadow's weights become the live model's and are saved as the next
//!    **version** (`<dir>/v0001.safetensors` + `.json`; `v0000` is the model the stage started
//!    with), keeping the last `keep`. Failed: the shadow is dropped and the live model is
//!    unchanged. Either way the verdict is a row of `<dir>/updates.csv`.
//! 5. **Rollback**: `rollback_ticks` ticks after a promotion, if the mean reward per tick since
//!    is below the mean over the same number of ticks before it by more than `rollback_margin`,
//!    the previous version is loaded back (also a row of `updates.csv`).
//!    [`OnlineLearner::rollback`] does the same on demand, and any version can be served
//!    directly (`pipeline.policy = "checkpoint:<dir>/v0003"`).
//!
//! Online learning samples its actions from the live policy (PPO learns from its own samples),
//! whatever `learn.act` says: it explores on the cluster, which is why it is off by default.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use graphscaler_schemas::{Action, Snapshot};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

use crate::agent::{GraphAgent, HeadKind, Obs};
use crate::checkpoint::{self, CheckpointError};
use crate::policy::ActionTensors;
use crate::ppo::{self, Diagnostics, PpoConfig};
use crate::reward::{reward_of_snapshot, RewardConfig};
use crate::serve::{Decision, LearnedPolicy, ServeError};
use crate::train::RewardNorm;

pub use crate::config::OnlineConfig;

/// Why online learning could not start or save.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The model cannot learn online.
    #[error("online learning: {0}")]
    Unsupported(String),
    /// `updates.csv` could not be written.
    #[error("online learning: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What one update decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The shadow became version `version`.
    Promoted {
        /// The new version.
        version: u32,
    },
    /// The shadow was dropped.
    Rejected {
        /// Which check failed.
        reason: String,
    },
    /// The previous version was loaded back.
    RolledBack {
        /// The version now live.
        to: u32,
        /// Why.
        reason: String,
    },
}

/// One update's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateReport {
    /// Snapshot time of the update, s.
    pub time_s: f64,
    /// Transitions trained on / held out.
    pub transitions: (usize, usize),
    /// The shadow's training diagnostics (CleanRL's names).
    pub diagnostics: Diagnostics,
    /// Epochs run before the trust region stopped them.
    pub epochs: usize,
    /// Approximate KL(live ‖ shadow) on the held-out transitions.
    pub holdout_kl: f64,
    /// Clipped surrogate gain on the held-out transitions.
    pub holdout_gain: f64,
    /// Value loss on the held-out transitions: live, shadow.
    pub holdout_value_loss: (f64, f64),
    /// The verdict.
    pub verdict: Verdict,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnlineStats {
    /// Transitions stored.
    pub transitions: usize,
    /// Decisions dropped for want of a reward (the next snapshot was refused or incomplete).
    pub dropped: usize,
    /// Updates tried.
    pub updates: usize,
    /// Promotions.
    pub promotions: usize,
    /// Rollbacks.
    pub rollbacks: usize,
}

struct Transition {
    d: Decision,
    reward: f32,
    discount: f32,
    /// The stream broke after this transition (bootstrap from its own value).
    cut: bool,
}

/// The live policy, its transitions, and the versions.
pub struct OnlineLearner {
    live: LearnedPolicy,
    cfg: OnlineConfig,
    ppo: PpoConfig,
    reward: RewardConfig,
    norm: RewardNorm,
    dir: PathBuf,
    version: u32,
    versions: VecDeque<u32>,
    pending: Vec<Decision>,
    last_time: Option<f64>,
    buffer: Vec<Transition>,
    tick_rewards: VecDeque<f64>,
    judging: Option<Judging>,
    /// Counters.
    pub stats: OnlineStats,
    /// Every update's report, in order.
    pub reports: Vec<UpdateReport>,
}

impl std::fmt::Debug for OnlineLearner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineLearner")
            .field("dir", &self.dir)
            .field("version", &self.version)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A promotion being judged: the mean reward before it, the rewards since.
struct Judging {
    before: f64,
    since: Vec<f64>,
}

fn version_path(dir: &Path, v: u32) -> PathBuf {
    dir.join(format!("v{v:04}"))
}

/// Deletes version `v`'s files (best effort: a version already gone is no error).
fn remove_version(dir: &Path, v: u32) {
    for ext in ["safetensors", "json"] {
        let _ = std::fs::remove_file(checkpoint::file(&version_path(dir, v), ext));
    }
}

const CSV_HEADER: &str = "time_s,version,train,holdout,epochs,losses/approx_kl,losses/clipfrac,losses/policy_loss,losses/value_loss,losses/entropy,holdout/approx_kl,holdout/gain,holdout/value_loss_live,holdout/value_loss_shadow,verdict,reason";

/// The stream of online learning's updates ([`crate::serve::draw`]).
const UPDATE_STREAM: u64 = 0x5a4d_504c_4500_0002;

impl OnlineLearner {
    /// Starts learning from `live` (a PPO/A2C model): saves it as `v0000` under `cfg.dir` and
    /// starts `updates.csv`. `ppo` gives γ, λ and the loss's coefficients; `reward` the reward.
    pub fn new(
        mut live: LearnedPolicy,
        cfg: OnlineConfig,
        ppo: PpoConfig,
        reward: RewardConfig,
    ) -> Result<Self, OnlineError> {
        if live.agent().spec.head != HeadKind::Ppo {
            return Err(OnlineError::Unsupported(format!(
                "the {} checkpoint has SAC's heads; online learning updates PPO/A2C models",
                live.agent().spec.encoder.name()
            )));
        }
        if cfg.update_every < 4 || !(0.0..1.0).contains(&cfg.holdout_share) {
            return Err(OnlineError::Unsupported(format!(
                "update_every must be at least 4 and holdout_share in [0, 1): got {} and {}",
                cfg.update_every, cfg.holdout_share
            )));
        }
        live.set_deterministic(false);
        let dir = PathBuf::from(&cfg.dir);
        let mut manifest = live.manifest.clone();
        manifest.produced_by = format!(
            "online learning: the model served first ({})",
            live.manifest.produced_by
        );
        checkpoint::save(&version_path(&dir, 0), live.var_store(), manifest)?;
        let csv = dir.join("updates.csv");
        std::fs::write(&csv, format!("{CSV_HEADER}\n")).map_err(|source| OnlineError::Io {
            path: csv.clone(),
            source,
        })?;
        Ok(Self {
            live,
            cfg,
            ppo,
            reward,
            norm: RewardNorm::new(1),
            dir,
            version: 0,
            versions: VecDeque::from([0]),
            pending: vec![],
            last_time: None,
            buffer: vec![],
            tick_rewards: VecDeque::new(),
            judging: None,
            stats: OnlineStats::default(),
            reports: vec![],
        })
    }

    /// The live policy.
    pub fn live(&self) -> &LearnedPolicy {
        &self.live
    }

    /// The live version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Versions on disk, oldest first.
    pub fn versions(&self) -> Vec<u32> {
        self.versions.iter().copied().collect()
    }

    /// Where versions live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Decides on `snap` and learns from the stream. A refused snapshot gets no action (the
    /// error says why) and gives the previous tick's decisions no reward.
    pub fn decide(&mut self, snap: &Snapshot) -> Result<Vec<Action>, ServeError> {
        let gap = self
            .last_time
            .is_some_and(|t| snap.time_s - t > 1.5 * snap.window_s.max(1e-9));
        let decided = self.live.decide_recorded(snap, None, true);
        // The previous tick's decisions get this snapshot's reward, if it has one.
        let pending = std::mem::take(&mut self.pending);
        let reward = match &decided {
            Ok(_) if !gap => reward_of_snapshot(snap, &self.reward).ok(),
            _ => None,
        };
        match reward {
            Some(r) if !pending.is_empty() => {
                let scaled = self.norm.scale(0, r.value, self.ppo.gamma, false) as f32;
                let n = pending.len();
                for (i, d) in pending.into_iter().enumerate() {
                    let last = i + 1 == n;
                    self.buffer.push(Transition {
                        d,
                        reward: if last { scaled } else { 0.0 },
                        discount: if last { self.ppo.gamma as f32 } else { 1.0 },
                        cut: false,
                    });
                }
                self.stats.transitions += n;
                self.tick_reward(r.value);
            }
            Some(r) => self.tick_reward(r.value),
            None => {
                self.stats.dropped += pending.len();
                if let Some(t) = self.buffer.last_mut() {
                    t.cut = true;
                }
            }
        }
        self.last_time = Some(snap.time_s);
        let (actions, decisions) = decided?;
        self.pending = decisions;
        if self.buffer.len() >= self.cfg.update_every {
            self.update(snap.time_s);
        }
        Ok(actions)
    }

    fn tick_reward(&mut self, r: f64) {
        let n = self.cfg.rollback_ticks.max(1);
        self.tick_rewards.push_back(r);
        while self.tick_rewards.len() > n {
            self.tick_rewards.pop_front();
        }
        let Some(j) = &mut self.judging else {
            return;
        };
        j.since.push(r);
        if j.since.len() < self.cfg.rollback_ticks {
            return;
        }
        let after = j.since.iter().sum::<f64>() / j.since.len() as f64;
        let before = j.before;
        self.judging = None;
        if after < before - self.cfg.rollback_margin {
            let reason = format!(
                "mean reward per tick {after:.3} over {} ticks since the promotion, {before:.3} before",
                self.cfg.rollback_ticks
            );
            if let Err(e) = self.rollback(&reason) {
                tracing::warn!("online learning: rollback failed: {e}");
            }
        }
    }

    /// Loads the version before the live one back (the live one is forgotten), recording
    /// `reason`. Returns the version now live.
    pub fn rollback(&mut self, reason: &str) -> Result<u32, OnlineError> {
        let Some(pos) = self.versions.iter().position(|v| *v == self.version) else {
            return Err(OnlineError::Unsupported(format!(
                "version {} is not on disk",
                self.version
            )));
        };
        if pos == 0 {
            return Err(OnlineError::Unsupported(
                "no earlier version to roll back to".into(),
            ));
        }
        let to = self.versions[pos - 1];
        let topology = self.live.agent().spec.topology.clone();
        checkpoint::load(
            &version_path(&self.dir, to),
            self.live.var_store_mut(),
            &topology,
        )?;
        if let Some(v) = self.versions.remove(pos) {
            remove_version(&self.dir, v);
        }
        self.version = to;
        self.judging = None;
        self.buffer.clear();
        self.pending.clear();
        self.stats.rollbacks += 1;
        let report = UpdateReport {
            time_s: self.last_time.unwrap_or(0.0),
            transitions: (0, 0),
            diagnostics: Diagnostics::default(),
            epochs: 0,
            holdout_kl: 0.0,
            holdout_gain: 0.0,
            holdout_value_loss: (0.0, 0.0),
            verdict: Verdict::RolledBack {
                to,
                reason: reason.into(),
            },
        };
        self.record(report)?;
        Ok(to)
    }

    fn record(&mut self, r: UpdateReport) -> Result<(), OnlineError> {
        let (verdict, reason) = match &r.verdict {
            Verdict::Promoted { .. } => ("promoted", String::new()),
            Verdict::Rejected { reason } => ("rejected", reason.clone()),
            Verdict::RolledBack { reason, .. } => ("rolled_back", reason.clone()),
        };
        let d = &r.diagnostics;
        let line = format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"\n",
            r.time_s,
            self.version,
            r.transitions.0,
            r.transitions.1,
            r.epochs,
            d.approx_kl,
            d.clipfrac,
            d.policy_loss,
            d.value_loss,
            d.entropy,
            r.holdout_kl,
            r.holdout_gain,
            r.holdout_value_loss.0,
            r.holdout_value_loss.1,
            verdict,
            reason.replace('"', "'")
        );
        let path = self.dir.join("updates.csv");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|source| OnlineError::Io { path, source })?;
        self.reports.push(r);
        Ok(())
    }

    fn update(&mut self, time_s: f64) {
        self.stats.updates += 1;
        let buffer = std::mem::take(&mut self.buffer);
        // The update's minibatch order is the `updates`-th draw of its own stream: the same in
        // every run of the same stream of snapshots.
        let n = self.stats.updates as u64;
        let trained = crate::serve::draw(UPDATE_STREAM, n, || self.train_shadow(&buffer, time_s));
        let report = match trained {
            Ok(r) => r,
            Err(e) => UpdateReport {
                time_s,
                transitions: (buffer.len(), 0),
                diagnostics: Diagnostics::default(),
                epochs: 0,
                holdout_kl: f64::NAN,
                holdout_gain: f64::NAN,
                holdout_value_loss: (f64::NAN, f64::NAN),
                verdict: Verdict::Rejected {
                    reason: format!("the update failed: {e}"),
                },
            },
        };
        if let Err(e) = self.record(report) {
            tracing::warn!("online learning: {e}");
        }
    }

    /// GAE over the buffer with the live model's values.
    fn advantages(&self, b: &[Transition]) -> (Vec<f32>, Vec<f32>) {
        let n = b.len();
        let (mut adv, mut ret) = (vec![0f32; n], vec![0f32; n]);
        let mut last = 0f32;
        let lambda = self.ppo.gae_lambda as f32;
        for t in (0..n).rev() {
            let next_v = if b[t].cut || t + 1 == n {
                b[t].d.value
            } else {
                b[t + 1].d.value
            };
            let carry = if b[t].cut || t + 1 == n { 0.0 } else { last };
            let delta = b[t].reward + b[t].discount * next_v - b[t].d.value;
            last = delta + b[t].discount * lambda * carry;
            adv[t] = last;
            ret[t] = last + b[t].d.value;
        }
        (adv, ret)
    }

    fn train_shadow(
        &mut self,
        b: &[Transition],
        time_s: f64,
    ) -> Result<UpdateReport, tch::TchError> {
        let n = b.len();
        let held = ((n as f64) * self.cfg.holdout_share).round() as usize;
        let train_n = n - held;
        let (adv, ret) = self.advantages(b);
        let spec = self.live.agent().spec.clone();
        let mut shadow_vs = VarStore::new(Device::Cpu);
        let shadow = GraphAgent::new(&shadow_vs.root(), spec);
        shadow_vs.copy(self.live.var_store())?;
        let mut opt = nn::Adam {
            eps: 1e-5,
            ..nn::Adam::default()
        }
        .build(&shadow_vs, self.cfg.learning_rate)?;
        let logp: Vec<f32> = b.iter().map(|t| t.d.logprob).collect();
        let val: Vec<f32> = b.iter().map(|t| t.d.value).collect();
        let tensors = |idx: &[usize]| {
            let choice: Vec<i64> = idx.iter().map(|&i| b[i].d.choice).collect();
            let replicas: Vec<i64> = idx.iter().map(|&i| b[i].d.replicas).collect();
            let cpu: Vec<f32> = idx.iter().map(|&i| b[i].d.cpu).collect();
            let f = |v: &[f32]| Tensor::from_slice(&idx.iter().map(|&i| v[i]).collect::<Vec<_>>());
            (
                ActionTensors {
                    choice: Tensor::from_slice(&choice),
                    replicas: Tensor::from_slice(&replicas),
                    cpu: Tensor::from_slice(&cpu),
                },
                f(&logp),
                f(&val),
                f(&adv),
                f(&ret),
            )
        };
        let mut d = Diagnostics::default();
        // The trust region is PPO's target-KL stop, checked after each epoch as everywhere
        // else ([`crate::ppo::update`]).
        let cfg = PpoConfig {
            update_epochs: self.cfg.epochs,
            target_kl: Some(self.cfg.max_kl),
            ..self.ppo.clone()
        };
        let run = ppo::update(
            &cfg,
            &mut opt,
            train_n,
            self.cfg.minibatch.max(2),
            &mut d,
            |chunk| {
                let idx: Vec<usize> = chunk.iter().map(|&i| i as usize).collect();
                let obs: Vec<&Obs> = idx.iter().map(|&i| &b[i].d.obs).collect();
                let (actions, old_logp, old_value, advantages, returns) = tensors(&idx);
                let (new_logp, entropy, new_value) = shadow.evaluate(&obs, &actions);
                Ok(ppo::Batch {
                    new_logp,
                    entropy,
                    new_value,
                    old_logp,
                    old_value,
                    advantages,
                    returns,
                })
            },
        )?;
        let epochs = run.epochs;

        // The promotion check, on the held-out (most recent) transitions.
        let idx: Vec<usize> = (train_n..n).collect();
        let (kl, gain, vl_live, vl_shadow) = if idx.is_empty() {
            (d.approx_kl, f64::NAN, f64::NAN, f64::NAN)
        } else {
            tch::no_grad(|| {
                let obs: Vec<&Obs> = idx.iter().map(|&i| &b[i].d.obs).collect();
                let (actions, old_logp, old_value, advantages, returns) = tensors(&idx);
                let (new_logp, _, new_value) = shadow.evaluate(&obs, &actions);
                let logratio = &new_logp - &old_logp;
                let ratio = logratio.exp();
                let kl = ((&ratio - 1.0) - &logratio)
                    .mean(Kind::Float)
                    .double_value(&[]);
                let a = if advantages.size()[0] > 1 {
                    (&advantages - advantages.mean(Kind::Float)) / (advantages.std(true) + 1e-8)
                } else {
                    advantages.shallow_clone()
                };
                let c = self.ppo.clip_coef;
                let gain = (&ratio * &a)
                    .minimum(&(ratio.clamp(1.0 - c, 1.0 + c) * &a))
                    .mean(Kind::Float)
                    .double_value(&[]);
                let vl = |v: &Tensor| (v - &returns).square().mean(Kind::Float).double_value(&[]);
                (kl, gain, vl(&old_value), vl(&new_value))
            })
        };
        let finite = shadow_vs
            .variables()
            .values()
            .all(|t| t.isfinite().all().int64_value(&[]) != 0);
        let verdict = if !finite {
            Verdict::Rejected {
                reason: "a parameter became NaN or infinite".into(),
            }
        } else if kl.is_nan() || kl > self.cfg.max_kl {
            Verdict::Rejected {
                reason: format!(
                    "approximate KL {kl:.4} on the held-out transitions is past max_kl {}",
                    self.cfg.max_kl
                ),
            }
        } else if idx.is_empty() {
            Verdict::Rejected {
                reason: "no held-out transitions to check (holdout_share is 0)".into(),
            }
        } else if gain.is_nan() || gain < self.cfg.min_gain {
            Verdict::Rejected {
                reason: format!(
                    "surrogate gain {gain:.4} on the held-out transitions is below min_gain {}",
                    self.cfg.min_gain
                ),
            }
        } else {
            self.promote(&shadow_vs).map_or_else(
                |e| Verdict::Rejected {
                    reason: format!("saving the new version failed: {e}"),
                },
                |version| Verdict::Promoted { version },
            )
        };
        Ok(UpdateReport {
            time_s,
            transitions: (train_n, n - train_n),
            diagnostics: d,
            epochs,
            holdout_kl: kl,
            holdout_gain: gain,
            holdout_value_loss: (vl_live, vl_shadow),
            verdict,
        })
    }

    fn promote(&mut self, shadow: &VarStore) -> Result<u32, OnlineError> {
        let version = self.versions.back().copied().unwrap_or(0) + 1;
        let mut manifest = self.live.manifest.clone();
        manifest.produced_by = format!(
            "online learning: version {version}, a PPO update of version {} on {} transitions",
            self.version, self.cfg.update_every
        );
        checkpoint::save(&version_path(&self.dir, version), shadow, manifest)?;
        self.live
            .var_store_mut()
            .copy(shadow)
            .map_err(|e| OnlineError::Unsupported(e.to_string()))?;
        let before = if self.tick_rewards.is_empty() {
            0.0
        } else {
            self.tick_rewards.iter().sum::<f64>() / self.tick_rewards.len() as f64
        };
        if self.cfg.rollback_ticks > 0 {
            self.judging = Some(Judging {
                before,
                since: vec![],
            });
        }
        self.version = version;
        self.versions.push_back(version);
        // This tick's decisions came from the model that was live before: not the new one's.
        self.pending.clear();
        while self.versions.len() > self.cfg.keep.max(2) {
            // v0000 stays: the model the stage started with.
            let Some(v) = self.versions.remove(1) else {
                break;
            };
            remove_version(&self.dir, v);
        }
        self.stats.promotions += 1;
        Ok(version)
    }
}
