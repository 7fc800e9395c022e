//! The twin as a training environment for the hybrid action.
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

use graphscaler_schemas::{ClusterObservation, Snapshot};
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::decide::{window_of, ActionRules, DecisionState};
use crate::policy::{HybridAction, SampleMask};
use crate::reward::{reward, Reward, RewardConfig};

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
    /// Cluster actions refused by the twin in this step.
    pub refused: usize,
    /// The reward's terms when time advanced.
    pub terms: Option<Reward>,
}

/// One environment.
#[derive(Debug)]
pub struct TwinEnv {
    cfg: TwinEnvConfig,
    rng: ChaCha8Rng,
    twin: Twin,
    obs: ClusterObservation,
    history: VecDeque<Snapshot>,
    state: DecisionState,
    episodes: usize,
}

/// A fresh twin, and its first observation (after the HPA's part, if any).
fn new_twin(
    cfg: &TwinEnvConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(Twin, ClusterObservation), graphscaler_twin::TwinError> {
    let shape = cfg.scenarios[rng.random_range(0..cfg.scenarios.len())].clone();
    let mut twin = Twin::new(
        cfg.topology.clone(),
        cfg.twin.clone(),
        cfg.slo.clone(),
        shape,
        cfg.episode_s,
        rng.random(),
    )?;
    let mut obs = twin.advance().0;
    if let Some(h) = &cfg.handover {
        if rng.random_bool(h.share.clamp(0.0, 1.0)) {
            let until = rng
                .random_range(0.0..=h.max_s.max(0.0))
                .min(cfg.episode_s * 0.8);
            let mut hpa = graphscaler_policy::Hpa::new(h.target, &h.hpa);
            while twin.now() < until {
                for a in hpa.decide(&obs) {
                    let _ = twin.apply(&a);
                }
                obs = twin.advance().0;
            }
        }
    }
    Ok((twin, obs))
}

impl TwinEnv {
    /// An environment seeded with `seed`, reset.
    pub fn new(mut cfg: TwinEnvConfig, seed: u64) -> Result<Self, graphscaler_twin::TwinError> {
        if cfg.scenarios.is_empty() {
            cfg.scenarios = Shape::all_named();
        }
        cfg.rules.min_replicas = cfg.twin.limits.min_replicas;
        cfg.rules.max_replicas = cfg.twin.limits.max_replicas;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (twin, obs) = new_twin(&cfg, &mut rng)?;
        let node_types = twin.node_types();
        let snap = Snapshot::from_observation(&obs);
        let mut state = DecisionState::new(snap.services.clone(), node_types);
        state.tick(&snap);
        Ok(Self {
            cfg,
            rng,
            twin,
            obs,
            history: VecDeque::from([snap]),
            state,
            episodes: 0,
        })
    }

    /// Node type names, by CPU model id.
    pub fn node_types(&self) -> &[String] {
        &self.state.node_types
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
        let req: Vec<f64> = self
            .snapshot()
            .services
            .iter()
            .map(|s| self.twin.spec_of(s).map_or(0.0, |x| x.1))
            .collect();
        self.state.mask(
            &self.cfg.rules,
            self.snapshot(),
            Some((&req, self.twin.free_cpu_cores())),
        )
    }

    /// Episodes finished so far.
    pub fn episodes(&self) -> usize {
        self.episodes
    }

    /// Takes one decision.
    pub fn step(&mut self, a: &HybridAction) -> Result<StepResult, graphscaler_twin::TwinError> {
        let mut refused = 0;
        if let Some(actions) = self.state.apply(&self.cfg.rules, a) {
            for x in actions {
                if !self.twin.apply(&x).is_applied() {
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
        self.obs = self.twin.advance().0;
        let terms = reward(&self.obs, &self.cfg.reward);
        let truncated = self.twin.done();
        if truncated {
            self.episodes += 1;
            (self.twin, self.obs) = new_twin(&self.cfg, &mut self.rng)?;
            self.history.clear();
            self.state = DecisionState::new(self.state.services.clone(), self.twin.node_types());
        }
        let snap = Snapshot::from_observation(&self.obs);
        self.state.tick(&snap);
        self.history.push_back(snap);
        while self.history.len() > self.cfg.window.max(1) {
            self.history.pop_front();
        }
        Ok(StepResult {
            reward: terms.value as f32,
            advanced: true,
            truncated,
            refused,
            terms: Some(terms),
        })
    }
}
