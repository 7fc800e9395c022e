//! The policy stage and what every policy is.
//!
//! * [`Policy`] decides on the twin's observations (`graphscaler eval`'s campaigns); a
//!   [`SnapshotPolicy`] decides on the graph job's snapshots (the policy stage, [`stage::policy`]).
//! * [`hpa`] is the Kubernetes HPA, faithful to upstream, for both.
//! * [`PolicySpec`] is the one grammar of policy names, used by every command: `static` (or
//!   `noop`), `hpa`, `tuned-hpa`, `hpa-<percent>`, a learned baseline's name ([`LEARNED`]),
//!   `NAME=PATH` or `checkpoint:PATH`. Learned policies are built by a [`Learned`] factory that the
//!   learning crate implements: this crate does not link libtorch.

pub mod hpa;
pub mod stage;

use graphscaler_schemas::{Action, ClusterObservation, Snapshot};
use serde::Serialize;

pub use hpa::{Hpa, HpaConfig, HpaController};

/// Why a policy could not be named or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A name the grammar does not know.
    #[error("unknown policy `{0}`; expected static, hpa, tuned-hpa, hpa-<percent>, gat-ppo, mlp-ppo, gcn-sac, dysat-a2c, NAME=CHECKPOINT or checkpoint:PATH")]
    Unknown(String),
    /// A learned policy in a build without the learning crate.
    #[error("policy `{0}` is learned and this build has no learned policies (build with the `learn` feature)")]
    NotBuilt(String),
    /// A learned policy named as a fallback: the fallback is what decides when a learned one
    /// cannot.
    #[error("fallback policy `{0}` is learned: a fallback must be static, hpa, tuned-hpa or hpa-<percent>")]
    Fallback(String),
    /// A learned policy whose checkpoint could not be loaded.
    #[error("policy `{name}`: {message}")]
    Load {
        /// The policy.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// A scaling policy on the twin's observations: reads one, emits actions.
pub trait Policy: Send {
    /// Decides at an observation tick.
    fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action>;
}

/// A policy the policy stage runs on snapshots.
pub trait SnapshotPolicy: Send {
    /// Its name (the source of its actions).
    fn name(&self) -> String;
    /// Decides on one snapshot.
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action>;
    /// What it has to say at the end (a learning policy's counters).
    fn summary(&self) -> Option<String> {
        None
    }
    /// Decides on one snapshot, or says why it cannot (a learned policy on a snapshot it cannot
    /// trust: services not its model's, a non-finite feature). [`WithFallback`] asks its
    /// fallback then. By default a policy always decides.
    fn try_decide(&mut self, snap: &Snapshot) -> Result<Vec<Action>, String> {
        Ok(self.decide(snap))
    }
    /// When the last decision came from a fallback: its name and why the policy could not
    /// decide ([`WithFallback`]); `None` otherwise.
    fn fell_back(&self) -> Option<(String, String)> {
        None
    }
}

/// A policy that may be unable to decide, with the policy that decides when it cannot (the
/// configured `pipeline.fallback_policy`, the HPA by default): no snapshot goes undecided in
/// silence. The fallback sees every snapshot, so that its own state (the HPA's stabilisation
/// window) is current when it takes over; its decision is used only when the policy cannot
/// decide. The first snapshot of each streak the policy cannot decide on is warned with the
/// reason; every one is counted (the summary, and the policy stage's
/// `graphscaler_policy_fallback_total`), and [`SnapshotPolicy::fell_back`] says so per decision.
pub struct WithFallback {
    policy: Box<dyn SnapshotPolicy>,
    fallback: Box<dyn SnapshotPolicy>,
    fallbacks: u64,
    last: Option<(String, String)>,
}

impl std::fmt::Debug for WithFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithFallback")
            .field("policy", &self.policy.name())
            .field("fallback", &self.fallback.name())
            .field("fallbacks", &self.fallbacks)
            .finish()
    }
}

impl WithFallback {
    /// `policy`, falling back to `fallback`.
    pub fn new(policy: Box<dyn SnapshotPolicy>, fallback: Box<dyn SnapshotPolicy>) -> Self {
        Self {
            policy,
            fallback,
            fallbacks: 0,
            last: None,
        }
    }

    /// Snapshots the fallback decided.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }
}

impl SnapshotPolicy for WithFallback {
    fn name(&self) -> String {
        self.policy.name()
    }

    fn decide(&mut self, snap: &Snapshot) -> Vec<Action> {
        let theirs = self.fallback.decide(snap);
        match self.policy.try_decide(snap) {
            Ok(ours) => {
                if self.last.take().is_some() {
                    tracing::info!(policy = %self.policy.name(), time_s = snap.time_s, fallbacks = self.fallbacks, "deciding again; the fallback stands down");
                }
                ours
            }
            Err(why) => {
                self.fallbacks += 1;
                if self.last.is_none() {
                    tracing::warn!(policy = %self.policy.name(), fallback = %self.fallback.name(), time_s = snap.time_s, "cannot decide: {why}; the fallback decides (warned once per streak, every one counted)");
                }
                self.last = Some((self.fallback.name(), why));
                theirs
            }
        }
    }

    fn fell_back(&self) -> Option<(String, String)> {
        self.last.clone()
    }

    fn summary(&self) -> Option<String> {
        let ours = self.policy.summary();
        if self.fallbacks == 0 {
            return ours;
        }
        let fell = format!(
            "{} snapshots decided by the fallback `{}` ({} could not decide)",
            self.fallbacks,
            self.fallback.name(),
            self.policy.name()
        );
        Some(ours.map_or(fell.clone(), |o| format!("{o}; {fell}")))
    }
}

/// Never acts: the manifests' replicas and resources stay as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Static;

impl Policy for Static {
    fn decide(&mut self, _obs: &ClusterObservation) -> Vec<Action> {
        vec![]
    }
}

impl SnapshotPolicy for Static {
    fn name(&self) -> String {
        "noop".into()
    }
    fn decide(&mut self, _: &Snapshot) -> Vec<Action> {
        vec![]
    }
}

impl Policy for Hpa {
    fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action> {
        Hpa::decide(self, obs)
    }
}

impl SnapshotPolicy for Hpa {
    fn name(&self) -> String {
        format!("hpa-{}", self.target())
    }
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action> {
        self.decide_snapshot(snap)
    }
}

/// The names of the learned baselines (checkpoints under `learn.checkpoint_dir`).
pub const LEARNED: [&str; 4] = ["gat-ppo", "mlp-ppo", "gcn-sac", "dysat-a2c"];

/// A policy by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum PolicySpec {
    /// [`Static`] (`static` or `noop`).
    Static,
    /// The HPA at `hpa.target_cpu_utilization`.
    Hpa,
    /// The HPA at `hpa.tuned_target_cpu_utilization`.
    TunedHpa,
    /// The HPA at the given target, percent (`hpa-60`, 1 to 1000).
    HpaAt(u32),
    /// A learned policy: a baseline's name (its checkpoint under the checkpoint directory),
    /// `NAME=PATH` or `checkpoint:PATH` (a checkpoint, without its extension).
    Learned {
        /// The name in tables and in its actions' source.
        name: String,
        /// The checkpoint, if given (else the factory's default for the name).
        path: Option<String>,
    },
}

/// Builds learned policies (the learning crate links libtorch; this crate does not).
pub trait Learned: Sync {
    /// The policy `name` on observations, from `path` (or its default checkpoint).
    fn build(&self, name: &str, path: Option<&str>) -> Result<Box<dyn Policy>, PolicyError>;
    /// The policy `name` on snapshots, for the policy stage.
    fn build_stage(
        &self,
        name: &str,
        path: Option<&str>,
    ) -> Result<Box<dyn SnapshotPolicy>, PolicyError>;
}

impl PolicySpec {
    /// Parses a policy name (see the crate's documentation for the grammar).
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let unknown = || PolicyError::Unknown(s.to_owned());
        match s {
            "static" | "noop" => Ok(PolicySpec::Static),
            "hpa" => Ok(PolicySpec::Hpa),
            "tuned-hpa" => Ok(PolicySpec::TunedHpa),
            _ if LEARNED.contains(&s) => Ok(PolicySpec::Learned {
                name: s.to_owned(),
                path: None,
            }),
            _ if s.starts_with("checkpoint:") => {
                let path = &s["checkpoint:".len()..];
                if path.is_empty() {
                    return Err(unknown());
                }
                Ok(PolicySpec::Learned {
                    name: s.to_owned(),
                    path: Some(path.to_owned()),
                })
            }
            _ if s.contains('=') => match s.split_once('=') {
                Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                    Ok(PolicySpec::Learned {
                        name: name.to_owned(),
                        path: Some(path.to_owned()),
                    })
                }
                _ => Err(unknown()),
            },
            _ => s
                .strip_prefix("hpa-")
                .and_then(|t| t.parse().ok())
                .filter(|t| (1..=1000).contains(t))
                .map(PolicySpec::HpaAt)
                .ok_or_else(unknown),
        }
    }

    /// The name used in tables and files.
    pub fn name(&self) -> String {
        match self {
            PolicySpec::Static => "static".into(),
            PolicySpec::Hpa => "hpa".into(),
            PolicySpec::TunedHpa => "tuned-hpa".into(),
            PolicySpec::HpaAt(t) => format!("hpa-{t}"),
            PolicySpec::Learned { name, .. } => name.clone(),
        }
    }

    /// The HPA's target, percent, if this is an HPA.
    fn hpa_target(&self, hpa: &HpaConfig) -> Option<u32> {
        match self {
            PolicySpec::Hpa => Some(hpa.target_cpu_utilization),
            PolicySpec::TunedHpa => Some(hpa.tuned_target_cpu_utilization),
            PolicySpec::HpaAt(t) => Some(*t),
            PolicySpec::Static | PolicySpec::Learned { .. } => None,
        }
    }

    /// Builds the policy on observations; a learned one needs `learned`.
    pub fn build(
        &self,
        hpa: &HpaConfig,
        learned: Option<&dyn Learned>,
    ) -> Result<Box<dyn Policy>, PolicyError> {
        if let Some(t) = self.hpa_target(hpa) {
            return Ok(Box::new(Hpa::new(t, hpa)));
        }
        match self {
            PolicySpec::Learned { name, path } => learned
                .ok_or_else(|| PolicyError::NotBuilt(name.clone()))?
                .build(name, path.as_deref()),
            _ => Ok(Box::new(Static)),
        }
    }

    /// The policy on snapshots as the policy stage and `eval` serve it: [`PolicySpec::build_stage`],
    /// a learned one wrapped [`WithFallback`] to `fallback` (which must not be learned).
    pub fn build_served(
        &self,
        hpa: &HpaConfig,
        fallback: &PolicySpec,
        learned: Option<&dyn Learned>,
    ) -> Result<Box<dyn SnapshotPolicy>, PolicyError> {
        let policy = self.build_stage(hpa, learned)?;
        match self {
            PolicySpec::Learned { .. } => {
                if let PolicySpec::Learned { name, .. } = fallback {
                    return Err(PolicyError::Fallback(name.clone()));
                }
                Ok(Box::new(WithFallback::new(
                    policy,
                    fallback.build_stage(hpa, None)?,
                )))
            }
            _ => Ok(policy),
        }
    }

    /// Builds the policy on snapshots, for the policy stage; a learned one needs `learned`.
    pub fn build_stage(
        &self,
        hpa: &HpaConfig,
        learned: Option<&dyn Learned>,
    ) -> Result<Box<dyn SnapshotPolicy>, PolicyError> {
        if let Some(t) = self.hpa_target(hpa) {
            return Ok(Box::new(Hpa::new(t, hpa)));
        }
        match self {
            PolicySpec::Learned { name, path } => learned
                .ok_or_else(|| PolicyError::NotBuilt(name.clone()))?
                .build_stage(name, path.as_deref()),
            _ => Ok(Box::new(Static)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_parse() {
        assert_eq!(
            PolicySpec::parse("tuned-hpa").unwrap(),
            PolicySpec::TunedHpa
        );
        assert_eq!(PolicySpec::parse("noop").unwrap(), PolicySpec::Static);
        assert_eq!(PolicySpec::parse("hpa-60").unwrap(), PolicySpec::HpaAt(60));
        assert_eq!(
            PolicySpec::parse("gat-ppo").unwrap(),
            PolicySpec::Learned {
                name: "gat-ppo".into(),
                path: None
            }
        );
        assert_eq!(
            PolicySpec::parse("mine=ckpt/a").unwrap().name(),
            "mine".to_string()
        );
        assert_eq!(
            PolicySpec::parse("checkpoint:ckpt/a").unwrap(),
            PolicySpec::Learned {
                name: "checkpoint:ckpt/a".into(),
                path: Some("ckpt/a".into())
            }
        );
        for bad in [
            "gat-sac",
            "hpa-0",
            "hpa-1001",
            "hpa-x",
            "=a",
            "a=",
            "checkpoint:",
        ] {
            let e = PolicySpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn a_learned_policy_needs_a_factory() {
        let hpa = HpaConfig::default();
        let e = PolicySpec::parse("gat-ppo")
            .unwrap()
            .build_stage(&hpa, None)
            .err()
            .unwrap();
        assert_eq!(e, PolicyError::NotBuilt("gat-ppo".into()));
        let p = PolicySpec::parse("hpa-60")
            .unwrap()
            .build_stage(&hpa, None)
            .unwrap();
        assert_eq!(p.name(), "hpa-60");
    }
}
