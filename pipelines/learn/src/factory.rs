//! Learned policies from checkpoints, as `graphscaler_policy`'s [`Learned`] factory: for `eval`'s
//! campaigns (on observations, for one topology) and for the policy stage (on snapshots, any
//! topology: a graph policy serves other services with its weights, saying so; with guarded
//! online learning when configured).

use std::path::PathBuf;

use graphscaler_policy::{Learned, Policy, PolicyError, SnapshotPolicy};
use graphscaler_schemas::{Action, Snapshot};

use crate::online::{OnlineConfig, OnlineLearner};
use crate::ppo::PpoConfig;
use crate::reward::RewardConfig;
use crate::serve::{ActRule, LearnedPolicy};

/// Online learning for the policy stage's learned policy (`learn.online.enabled`).
#[derive(Debug, Clone)]
pub struct OnlineSetup {
    /// `[learn.online]`.
    pub config: OnlineConfig,
    /// The PPO update it runs.
    pub ppo: PpoConfig,
    /// The reward it learns from.
    pub reward: RewardConfig,
}

/// Learned policies from checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// Where a baseline's checkpoint is looked up by its name (`learn.checkpoint_dir`).
    pub dir: PathBuf,
    /// The topology the policies must have been trained on (`*`: any).
    pub topology: String,
    /// How the policies pick their actions (`learn.act`).
    pub act: ActRule,
    /// Online learning in the policy stage; `None`: the policy stays as loaded.
    pub online: Option<OnlineSetup>,
}

impl Checkpoints {
    fn load(&self, name: &str, path: Option<&str>) -> Result<LearnedPolicy, PolicyError> {
        let path = path.map_or_else(|| self.dir.join(name), PathBuf::from);
        tch::set_num_threads(1);
        LearnedPolicy::load(&path, &self.topology, self.act).map_err(|e| PolicyError::Load {
            name: name.into(),
            message: e.to_string(),
        })
    }
}

impl Learned for Checkpoints {
    fn build(&self, name: &str, path: Option<&str>) -> Result<Box<dyn Policy>, PolicyError> {
        Ok(Box::new(self.load(name, path)?))
    }

    fn build_stage(
        &self,
        name: &str,
        path: Option<&str>,
    ) -> Result<Box<dyn SnapshotPolicy>, PolicyError> {
        let policy = self.load(name, path)?;
        let policy = match &self.online {
            Some(o) => {
                let online = OnlineLearner::new(policy, o.config.clone(), o.ppo.clone(), o.reward)
                    .map_err(|e| PolicyError::Load {
                        name: name.into(),
                        message: format!("starting online learning: {e}"),
                    })?;
                Served::Online(Box::new(online))
            }
            None => Served::Fixed(Box::new(policy)),
        };
        Ok(Box::new(StagePolicy {
            name: name.to_string(),
            policy,
            refused: 0,
            refusing: false,
        }))
    }
}

/// A learned policy in the policy stage: decides on each snapshot; a snapshot it cannot trust
/// (other services, a non-finite feature) gets no action, is counted, and the first of each
/// streak of them is warned with the problem named (the summary gives the count). With online
/// learning it also learns from the stream.
#[derive(Debug)]
struct StagePolicy {
    name: String,
    policy: Served,
    refused: u64,
    refusing: bool,
}

#[derive(Debug)]
enum Served {
    Fixed(Box<LearnedPolicy>),
    Online(Box<OnlineLearner>),
}

impl SnapshotPolicy for StagePolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn try_decide(&mut self, snap: &Snapshot) -> Result<Vec<Action>, String> {
        let decided = match &mut self.policy {
            Served::Fixed(p) => p.decide_snapshot(snap, None),
            Served::Online(o) => {
                let seen = o.reports.len();
                let d = o.decide(snap);
                for r in &o.reports[seen..] {
                    tracing::info!(policy = %self.name, time_s = r.time_s, version = o.version(), "online update: {:?}", r.verdict);
                }
                d
            }
        };
        decided.map_err(|e| {
            self.refused += 1;
            e.to_string()
        })
    }

    /// Without a fallback ([`graphscaler_policy::WithFallback`] warns then): no action on a
    /// snapshot it cannot trust, warned once per streak.
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action> {
        match self.try_decide(snap) {
            Ok(a) => {
                if self.refusing {
                    tracing::info!(policy = %self.name, time_s = snap.time_s, refused = self.refused, "deciding again");
                    self.refusing = false;
                }
                a
            }
            Err(e) => {
                if !self.refusing {
                    tracing::warn!(policy = %self.name, time_s = snap.time_s, "no decision: {e} (warned once until a decision comes back; counted)");
                    self.refusing = true;
                }
                vec![]
            }
        }
    }

    fn summary(&self) -> Option<String> {
        let live = match &self.policy {
            Served::Fixed(p) => p.as_ref(),
            Served::Online(o) => o.live(),
        };
        let notes: Vec<String> = live
            .outside
            .iter()
            .cloned()
            .chain((self.refused > 0).then(|| {
                format!(
                    "{} snapshots it could not decide on (data it cannot trust)",
                    self.refused
                )
            }))
            .collect();
        let refused = (!notes.is_empty()).then(|| notes.join("; "));
        let Served::Online(o) = &self.policy else {
            return refused;
        };
        let s = o.stats;
        let refused = refused.map_or_else(String::new, |r| format!("; {r}"));
        Some(format!(
            "online learning: {} transitions ({} decisions without a reward), {} updates, {} promoted, {} rolled back; version {} live; versions and updates.csv in {}",
            s.transitions,
            s.dropped,
            s.updates,
            s.promotions,
            s.rollbacks,
            o.version(),
            o.dir().display()
        ) + &refused)
    }
}
