//! The twin as a training environment for the hybrid action, stepped through the served loop
//! ([`graphscaler_pipeline::served`]): the agent decides on the graph job's snapshots, one per
//! `pipeline.window_s`, cut from the telemetry a scrape of the twin publishes (the plain job,
//! which cuts what the dataflow cuts), and its actions pass the actuator's guardrails — what
//! `graphscaler eval` measures and `graphscaler run` serves. The reward of a window is
//! [`reward_of_snapshot`] of the next snapshot, what online learning in the policy stage sees.
//!
//! An episode is one run of the twin on a scenario drawn from the configured mix, with a fresh
//! seed, from the manifests' replicas (as the evaluation starts). With a [`Handover`], a share of
//! the episodes first runs the HPA for a random time and hands the cluster over in the state the
//! HPA left it: the agent then also learns from states near a sensible operating point, not
//! only from the scale-up out of one replica each. A step is one decision
//! ([`crate::decide`]): a change to one service applies at once and, while the tick allows more
//! decisions, the environment returns the same observation with reward 0; *nothing*, or the last
//! allowed decision, advances the twin by one observation period and returns the reward of the
//! new observation ([`crate::reward`]). Steps that do not advance time are flagged, so that the
//! return discounts time, not decisions (a semi-Markov discount): otherwise delaying the next
//! tick's penalty by acting would look like a gain.

use std::collections::VecDeque;

use graphscaler_actuate::Guardrails;
use graphscaler_graph::GraphConfig;
use graphscaler_pipeline::served::{Cut, Served};
use graphscaler_policy::stage::decided;
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::decide::{window_of, ActionRules, DecisionState};
use crate::policy::{HybridAction, SampleMask};
use crate::reward::{reward_of_snapshot, Reward, RewardConfig};

/// Settings of the environment.
#[derive(Debug, Clone)]
pub struct TwinEnvConfig {
    /// The topology.
    pub topology: Topology,
    /// The twin.
    pub twin: TwinConfig,
    /// SLOs.
    pub slo: SloConfig,
    /// Scenarios an episode is drawn from (uniformly).
    pub scenarios: Vec<Shape>,
    /// Length of an episode (the twin's run), s.
    pub episode_s: f64,
    /// The reward.
    pub reward: RewardConfig,
    /// The action rules.
    pub rules: ActionRules,
    /// Snapshots kept for a temporal encoder.
    pub window: usize,
    /// Start some episodes from the HPA's state.
    pub handover: Option<Handover>,
    /// The graph job's settings: its window is the decision cadence.
    pub graph: GraphConfig,
    /// The actuator's guardrails.
    pub rails: Guardrails,
}

/// Episodes that start where the HPA left the cluster.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The HPA's settings.
    pub hpa: graphscaler_policy::HpaConfig,
    /// Its CPU target, percent.
    pub target: u32,
    /// Share of the episodes that start this way.
    pub share: f64,
    /// The HPA runs for a time drawn uniformly in `[0, max_s]`.
    pub max_s: f64,
}

/// What a step returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    /// The reward (0 for a decision that did not advance time).
    pub reward: f32,
    /// Whether time advanced (the step ends with a new observation).
    pub advanced: bool,
    /// The episode ended (time limit).
    pub truncated: bool,
    /// Cluster actions not applied in this step: not made absolute, or refused by the
    /// guardrails or the twin.
    pub refused: usize,
    /// The reward's terms when time advanced (none when the snapshot lacked what the reward
    /// reads: the reward is then 0).
    pub terms: Option<Reward>,
}

/// One environment.
#[derive(Debug)]
pub struct TwinEnv {
    cfg: TwinEnvConfig,
    rng: ChaCha8Rng,
    served: Served,
    history: VecDeque<Snapshot>,
    state: DecisionState,
    episodes: usize,
    unrewarded: u64,
    unrewarded_streak: bool,
}

/// The source of the environment's actions.
const SOURCE: &str = "policy/train";

/// The next snapshot the loop cuts, and whether the twin's run ended with it (its open window
/// cut, as a stage does when it stops); `None` when the run ended without one.
fn next_snapshot(served: &mut Served) -> Result<Option<(Snapshot, bool)>, EnvError> {
    while let Some(t) = served.tick()? {
        if let Some(s) = t.snapshots.into_iter().last() {
            return Ok(Some((s, false)));
        }
    }
    Ok(served.cut_open()?.into_iter().last().map(|s| (s, true)))
}

/// What can stop an environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The twin refused its settings.
    #[error(transparent)]
    Twin(#[from] graphscaler_twin::TwinError),
    /// The graph job failed.
    #[error(transparent)]
    Graph(#[from] graphscaler_graph::GraphError),
    /// An episode too short for one snapshot.
    #[error("an episode of {episode_s} s ends before the first {window_s} s window is cut")]
    TooShort {
        /// The episode, s.
        episode_s: f64,
        /// The window, s.
        window_s: f64,
    },
}

/// A fresh loop, and its first snapshot (after the HPA's part, if any).
fn new_loop(cfg: &TwinEnvConfig, rng: &mut ChaCha8Rng) -> Result<(Served, Snapshot), EnvError> {
    let shape = cfg.scenarios[rng.random_range(0..cfg.scenarios.len())].clone();
    let twin = Twin::new(
        cfg.topology.clone(),
        cfg.twin.clone(),
        cfg.slo.clone(),
        shape,
        cfg.episode_s,
        rng.random(),
    )?;
    let mut served = Served::new(twin, &cfg.graph, Cut::Plain, cfg.rails.clone());
    let too_short = || EnvError::TooShort {
        episode_s: cfg.episode_s,
        window_s: cfg.graph.window_s,
    };
    let mut snap = match next_snapshot(&mut served)? {
        Some((s, false)) => s,
        _ => return Err(too_short()),
    };
    if let Some(h) = &cfg.handover {
        if rng.random_bool(h.share.clamp(0.0, 1.0)) {
            let until = rng
                .random_range(0.0..=h.max_s.max(0.0))
                .min(cfg.episode_s * 0.8);
            let mut hpa = graphscaler_policy::Hpa::new(h.target, &h.hpa);
            while snap.time_s < until {
                served.serve(&mut hpa, &snap);
                match next_snapshot(&mut served)? {
                    Some((s, false)) => snap = s,
                    _ => return Err(too_short()),
                }
            }
        }
    }
    Ok((served, snap))
}

impl TwinEnv {
    /// An environment seeded with `seed`, reset.
    pub fn new(mut cfg: TwinEnvConfig, seed: u64) -> Result<Self, EnvError> {
        if cfg.scenarios.is_empty() {
            cfg.scenarios = Shape::all_named();
        }
        cfg.rules.min_replicas = cfg.twin.limits.min_replicas;
        cfg.rules.max_replicas = cfg.twin.limits.max_replicas;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (served, snap) = new_loop(&cfg, &mut rng)?;
        let node_types = served.twin().node_types();
        let mut state = DecisionState::new(snap.services.clone(), node_types);
        state.tick(&snap);
        Ok(Self {
            cfg,
            rng,
            served,
            history: VecDeque::from([snap]),
            state,
            episodes: 0,
            unrewarded: 0,
            unrewarded_streak: false,
        })
    }

    /// Node type names, by CPU model id.
    pub fn node_types(&self) -> &[String] {
        &self.state.node_types
    }

    /// The cluster's node types, by CPU model id (the topology's pools where it carries them).
    pub fn node_type_configs(&self) -> Vec<graphscaler_twin::config::NodeTypeConfig> {
        self.served.twin().node_type_configs().to_vec()
    }

    /// Services, in snapshot order.
    pub fn services(&self) -> &[String] {
        &self.state.services
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        self.history.back().expect("the history is never empty")
    }

    /// The last `window` snapshots, oldest first, the oldest repeated at an episode's start.
    pub fn window(&self) -> Vec<&Snapshot> {
        window_of(&self.history, self.cfg.window)
    }

    /// The masks of the next decision.
    pub fn mask(&self) -> SampleMask {
        let (req, free): (Vec<f64>, f64) = {
            let twin = self.served.twin();
            let req = self
                .snapshot()
                .services
                .iter()
                .map(|s| twin.spec_of(s).map_or(0.0, |x| x.1))
                .collect();
            (req, twin.free_cpu_cores())
        };
        self.state
            .mask(&self.cfg.rules, self.snapshot(), Some((&req, free)))
    }

    /// Windows whose snapshot lacked what the reward reads (their reward was 0), so far.
    pub fn unrewarded(&self) -> u64 {
        self.unrewarded
    }

    /// Episodes finished so far.
    pub fn episodes(&self) -> usize {
        self.episodes
    }

    /// Takes one decision.
    pub fn step(&mut self, a: &HybridAction) -> Result<StepResult, EnvError> {
        let mut refused = 0;
        if let Some(actions) = self.state.apply(&self.cfg.rules, a) {
            let snap = self.history.back().expect("the history is never empty");
            let out = decided(SOURCE, snap, actions);
            refused += out.dropped.len();
            for d in self.served.act(out) {
                if !d.record.outcome.is_applied() {
                    refused += 1;
                }
            }
        }
        if self.state.may_decide(&self.cfg.rules) {
            return Ok(StepResult {
                reward: 0.0,
                advanced: false,
                truncated: false,
                refused,
                terms: None,
            });
        }
        // The window's reward is read off the snapshot that closes it (the last window's, cut
        // at the end of the run); one lacking what the reward reads gives 0 and no terms.
        let (last, truncated) =
            next_snapshot(&mut self.served)?.map_or((None, true), |(s, end)| (Some(s), end));
        let terms = match last
            .as_ref()
            .map(|s| reward_of_snapshot(s, &self.cfg.reward))
        {
            Some(Ok(t)) => {
                self.unrewarded_streak = false;
                Some(t)
            }
            Some(Err(e)) => {
                if !self.unrewarded_streak {
                    tracing::warn!(error = %e, "a window's snapshot lacks what the reward reads; its reward is 0 (counted in unrewarded)");
                }
                self.unrewarded_streak = true;
                self.unrewarded += 1;
                None
            }
            None => None,
        };
        let snap = match last {
            Some(s) if !truncated => s,
            _ => {
                self.episodes += 1;
                let (served, snap) = new_loop(&self.cfg, &mut self.rng)?;
                self.served = served;
                self.history.clear();
                self.state = DecisionState::new(
                    self.state.services.clone(),
                    self.served.twin().node_types(),
                );
                snap
            }
        };
        self.state.tick(&snap);
        self.history.push_back(snap);
        while self.history.len() > self.cfg.window.max(1) {
            self.history.pop_front();
        }
        Ok(StepResult {
            reward: terms.map_or(0.0, |t| t.value as f32),
            advanced: true,
            truncated,
            refused,
            terms,
        })
    }
}
