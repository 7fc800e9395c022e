//! A trained agent as a scaling policy: on an observation (evaluation on the twin) or a
//! snapshot (the pipeline's policy stage), it takes up to `decisions_per_tick` decisions under
//! the masks it was trained with ([`crate::decide`]) and returns the cluster actions.
//!
//! It never acts on data it cannot trust: a snapshot whose services are not the ones the model
//! was trained on, or with a non-finite feature, gets no action and an error naming what was
//! wrong.

use std::collections::VecDeque;
use std::path::Path;

use graphscaler_schemas::{Action, ClusterObservation, Snapshot};
use tch::nn::VarStore;

use crate::agent::{GraphAgent, Obs};
use crate::checkpoint::{CheckpointError, Manifest};
use crate::decide::{window_of, DecisionState};

/// Why a snapshot got no decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// The services differ from the model's.
    #[error("the snapshot's services differ from the model's: {0}")]
    Services(String),
    /// A feature is NaN or infinite.
    #[error("feature `{feature}` of {what} is {value}: no decision on missing data")]
    NotFinite {
        /// Which feature.
        feature: &'static str,
        /// Which service or node.
        what: String,
        /// The value.
        value: f32,
    },
}

/// A loaded agent deciding on a stream of snapshots.
#[derive(Debug)]
pub struct LearnedPolicy {
    agent: GraphAgent,
    _vs: VarStore,
    /// The checkpoint's manifest.
    pub manifest: Manifest,
    state: DecisionState,
    history: VecDeque<Snapshot>,
    deterministic: bool,
    /// Snapshots refused so far, and the last reason.
    pub refused: (usize, Option<ServeError>),
}

fn check(snap: &Snapshot, services: &[String]) -> Result<(), ServeError> {
    if snap.services != services {
        let missing: Vec<&String> = services
            .iter()
            .filter(|s| !snap.services.contains(s))
            .collect();
        let extra: Vec<&String> = snap
            .services
            .iter()
            .filter(|s| !services.contains(s))
            .collect();
        return Err(ServeError::Services(format!(
            "missing {missing:?}, unknown {extra:?}"
        )));
    }
    for (i, x) in snap.service_x.iter().enumerate() {
        for (f, v) in graphscaler_schemas::snapshot::SERVICE_FEATURES
            .iter()
            .zip(x)
        {
            if !v.is_finite() {
                return Err(ServeError::NotFinite {
                    feature: f,
                    what: format!("service `{}`", snap.services[i]),
                    value: *v,
                });
            }
        }
    }
    for (i, x) in snap.node_x.iter().enumerate() {
        for (f, v) in graphscaler_schemas::snapshot::NODE_FEATURES.iter().zip(x) {
            if !v.is_finite() {
                return Err(ServeError::NotFinite {
                    feature: f,
                    what: format!("node `{}`", snap.nodes[i]),
                    value: *v,
                });
            }
        }
    }
    for (f, v) in graphscaler_schemas::snapshot::GLOBAL_FEATURES
        .iter()
        .zip(&snap.global)
    {
        if !v.is_finite() {
            return Err(ServeError::NotFinite {
                feature: f,
                what: "the cluster".into(),
                value: *v,
            });
        }
    }
    Ok(())
}

impl LearnedPolicy {
    /// Loads `path` for `topology` (`*`: any); `deterministic` takes the most likely action.
    pub fn load(path: &Path, topology: &str, deterministic: bool) -> Result<Self, CheckpointError> {
        let (agent, vs, manifest) = GraphAgent::load(path, topology)?;
        Ok(Self::from_agent(agent, vs, manifest, deterministic))
    }

    /// Wraps a model in memory.
    pub fn from_agent(
        agent: GraphAgent,
        vs: VarStore,
        manifest: Manifest,
        deterministic: bool,
    ) -> Self {
        let state = DecisionState::new(agent.spec.services.clone(), agent.spec.node_types.clone());
        Self {
            agent,
            _vs: vs,
            manifest,
            state,
            history: VecDeque::new(),
            deterministic,
            refused: (0, None),
        }
    }

    /// The model.
    pub fn agent(&self) -> &GraphAgent {
        &self.agent
    }

    /// Decides on `snap`. `capacity` (CPU request per pod per service, free CPU) enables the
    /// capacity mask.
    pub fn decide_snapshot(
        &mut self,
        snap: &Snapshot,
        capacity: Option<(&[f64], f64)>,
    ) -> Result<Vec<Action>, ServeError> {
        if let Err(e) = check(snap, &self.agent.spec.services) {
            self.refused.0 += 1;
            self.refused.1 = Some(e.clone());
            return Err(e);
        }
        let w = self.agent.spec.window.max(1);
        self.history.push_back(snap.clone());
        while self.history.len() > w {
            self.history.pop_front();
        }
        let window = window_of(&self.history, w);
        let rules = self.agent.spec.rules.clone();
        self.state.tick(snap);
        let mut out = vec![];
        while self.state.may_decide(&rules) {
            let obs = Obs::new(&window, self.state.mask(&rules, snap, capacity));
            let step = tch::no_grad(|| self.agent.act(&[&obs], self.deterministic));
            match self.state.apply(&rules, &step.actions[0]) {
                Some(actions) => out.extend(actions),
                None => break,
            }
        }
        Ok(out)
    }

    /// Decides on an observation (the evaluation's path), with the capacity mask.
    pub fn decide_observation(
        &mut self,
        obs: &ClusterObservation,
    ) -> Result<Vec<Action>, ServeError> {
        let snap = Snapshot::from_observation(obs);
        let req: Vec<f64> = snap
            .services
            .iter()
            .map(|s| obs.service(s).map_or(0.0, |x| x.cpu_request_cores))
            .collect();
        let free: f64 = obs.nodes.iter().map(|n| n.free_cpu_cores().max(0.0)).sum();
        self.decide_snapshot(&snap, Some((&req, free)))
    }
}

impl graphscaler_eval::Policy for LearnedPolicy {
    fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action> {
        self.decide_observation(obs).unwrap_or_default()
    }
}
