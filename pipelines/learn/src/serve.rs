//! A trained agent as a scaling policy: on an observation (evaluation on the twin) or a
//! snapshot (the pipeline's policy stage), it takes up to `decisions_per_tick` decisions under
//! the masks it was trained with ([`crate::decide`]) and returns the cluster actions.
//!
//! A graph encoder's weights do not depend on the number of services, so a graph policy serves
//! a cluster whose services are not the ones it was trained on: it is rebuilt for them with the
//! same weights and says once that it is outside what it was trained on ([`LearnedPolicy::outside`]).
//! The flat MLP's input is sized to its services: on other services it gets no action and an
//! error naming them. It never acts on data it cannot trust: a snapshot with a non-finite feature
//! or parts that disagree gets no action and an error naming what was wrong.

use std::collections::VecDeque;
use std::path::Path;

use graphscaler_schemas::{Action, ClusterObservation, Snapshot, SnapshotError};
use tch::nn::VarStore;

use crate::agent::{EncoderKind, GraphAgent, Obs};
use crate::checkpoint::{CheckpointError, Manifest};
use crate::decide::{window_of, DecisionState};

/// Why a snapshot got no decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// The snapshot's parts disagree (lengths, edge indices, widths, duplicate names).
    #[error("the snapshot is not consistent: {0}")]
    Invalid(graphscaler_schemas::SnapshotError),
    /// The services differ from the model's.
    #[error("the snapshot's services differ from the model's: {0}")]
    Services(String),
    /// A feature (or another number of the snapshot) is NaN or infinite.
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

/// One decision as online learning stores it: the input, the action as the update reads it,
/// and what the acting model said about it.
#[derive(Debug)]
pub struct Decision {
    /// The input.
    pub obs: Obs,
    /// `service · K + node_type`, or `S · K` for nothing.
    pub choice: i64,
    /// Index into the Δreplicas choices.
    pub replicas: i64,
    /// The Beta draw behind Δcpu.
    pub cpu: f32,
    /// log π(action) under the acting model.
    pub logprob: f32,
    /// V(state) under the acting model.
    pub value: f32,
}

/// The capacity mask's inputs from a snapshot that carries them: CPU request per pod per
/// service and the free CPU over nodes.
pub fn snapshot_capacity(snap: &Snapshot) -> Option<(Vec<f64>, f64)> {
    if snap.cpu_request_cores.len() != snap.services.len() {
        return None;
    }
    let req = snap
        .cpu_request_cores
        .iter()
        .map(|x| f64::from(*x))
        .collect();
    let free = snap.node_x.iter().map(|x| f64::from(x[0]).max(0.0)).sum();
    Some((req, free))
}

/// A loaded agent deciding on a stream of snapshots.
#[derive(Debug)]
pub struct LearnedPolicy {
    agent: GraphAgent,
    vs: VarStore,
    /// Draws of libtorch's generator so far (a sampling policy's decisions), for [`draw`].
    draws: u64,
    /// The checkpoint's manifest.
    pub manifest: Manifest,
    state: DecisionState,
    history: VecDeque<Snapshot>,
    deterministic: bool,
    /// Snapshots refused so far, and the last reason.
    pub refused: (usize, Option<ServeError>),
    /// Set once it serves services it was not trained on: what it says of that.
    pub outside: Option<String>,
}

/// What differs between the model's services and `snap`'s.
fn difference(snap: &Snapshot, services: &[String]) -> String {
    let missing: Vec<&String> = services
        .iter()
        .filter(|s| !snap.services.contains(s))
        .collect();
    let extra: Vec<&String> = snap
        .services
        .iter()
        .filter(|s| !services.contains(s))
        .collect();
    format!("missing {missing:?}, unknown {extra:?}")
}

fn check(snap: &Snapshot) -> Result<(), ServeError> {
    // Lengths, edge indices and widths (what would panic the tensors), then finite values.
    snap.validate().map_err(|e| match e {
        SnapshotError::NotFinite { field, what, value } => ServeError::NotFinite {
            feature: field,
            what,
            value: value as f32,
        },
        e => ServeError::Invalid(e),
    })
}

/// The stream of a sampling policy's decisions ([`draw`]).
pub const SAMPLE_STREAM: u64 = 0x5a4d_504c_4500_0001;

/// libtorch has one generator per process, and an evaluation runs several policies at once on
/// its threads (a run's own stages share it too): `f` runs with the generator reseeded from
/// (`stream`, `n`), under a process-wide lock, so that the `n`-th draw of a stream is the same
/// in every run, whatever else draws beside it. A sampling policy's `n`-th decision and online
/// learning's `n`-th update are such draws: `graphscaler run` and `eval` with `learn.act =
/// "sample"` or online learning on give the same figures each time.
pub fn draw<T>(stream: u64, n: u64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // SplitMix64 of the pair: nearby (stream, n) give unrelated seeds.
    let mut z = stream ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    tch::manual_seed((z ^ (z >> 31)) as i64);
    f()
}

pub use graphscaler_learn_config::config::ActRule;

/// Whether a policy from `manifest` takes the most likely action under `rule`.
fn deterministic(rule: ActRule, manifest: &Manifest) -> bool {
    match rule {
        ActRule::Mode => true,
        ActRule::Sample => false,
        ActRule::Checkpoint => manifest.act.as_deref() != Some("sample"),
    }
}

impl LearnedPolicy {
    /// Loads `path` for `topology` (`*`: any), picking actions by `act`. A graph policy loads
    /// for any topology (its weights do not depend on the services), saying once that it
    /// serves outside its training; the MLP only for the one it was trained on.
    pub fn load(path: &Path, topology: &str, act: ActRule) -> Result<Self, CheckpointError> {
        let graph = crate::agent::AgentSpec::of_checkpoint(path)?.encoder != EncoderKind::Mlp;
        let (agent, vs, manifest) = GraphAgent::load(path, if graph { "*" } else { topology })?;
        let trained = manifest.topology.clone();
        let on_it = agent.spec.trained_on(topology);
        let names = if agent.spec.topologies.is_empty() {
            format!("`{trained}`")
        } else {
            agent
                .spec
                .topologies
                .iter()
                .map(|t| format!("`{}`", t.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let deterministic = deterministic(act, &manifest);
        let mut p = Self::from_agent(agent, vs, manifest, deterministic);
        if !on_it && trained != "*" && topology != "*" {
            let said = format!(
                "serving topology `{topology}` with a graph policy trained on {names}: outside its training, with the same weights"
            );
            tracing::warn!("{said}");
            p.outside = Some(said);
        }
        Ok(p)
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
            vs,
            manifest,
            state,
            history: VecDeque::new(),
            deterministic,
            draws: 0,
            refused: (0, None),
            outside: None,
        }
    }

    /// Takes the most likely action (`true`) or samples (`false`).
    pub fn set_deterministic(&mut self, deterministic: bool) {
        self.deterministic = deterministic;
    }

    /// The model.
    pub fn agent(&self) -> &GraphAgent {
        &self.agent
    }

    /// Decides on `snap`. `capacity` (CPU request per pod per service, free CPU) enables the
    /// capacity mask; without it, the snapshot's own CPU requests and free node CPU do, when it
    /// carries them.
    pub fn decide_snapshot(
        &mut self,
        snap: &Snapshot,
        capacity: Option<(&[f64], f64)>,
    ) -> Result<Vec<Action>, ServeError> {
        self.decide_recorded(snap, capacity, false)
            .map(|(actions, _)| actions)
    }

    /// [`LearnedPolicy::decide_snapshot`], returning each decision as online learning stores
    /// it when `record` is set.
    pub fn decide_recorded(
        &mut self,
        snap: &Snapshot,
        capacity: Option<(&[f64], f64)>,
        record: bool,
    ) -> Result<(Vec<Action>, Vec<Decision>), ServeError> {
        // A snapshot whose parts disagree is refused before it could retarget the model.
        let checked = check(snap).and_then(|()| {
            if snap.services == self.agent.spec.services {
                Ok(())
            } else {
                self.retarget(snap)
            }
        });
        if let Err(e) = checked {
            self.refused.0 += 1;
            self.refused.1 = Some(e.clone());
            return Err(e);
        }
        self.note_unseen_node_types(snap);
        let own = capacity
            .is_none()
            .then(|| snapshot_capacity(snap))
            .flatten();
        let capacity = capacity.or(own.as_ref().map(|(r, f)| (r.as_slice(), *f)));
        let w = self.agent.spec.window.max(1);
        self.history.push_back(snap.clone());
        while self.history.len() > w {
            self.history.pop_front();
        }
        let window = window_of(&self.history, w);
        let rules = self.agent.spec.rules.clone();
        self.state.tick(snap);
        let mut out = vec![];
        let mut decisions = vec![];
        while self.state.may_decide(&rules) {
            let obs = Obs::new(&window, self.state.mask(&rules, snap, capacity));
            let step = if self.deterministic {
                tch::no_grad(|| self.agent.act(&[&obs], true))
            } else {
                self.draws += 1;
                draw(SAMPLE_STREAM, self.draws, || {
                    tch::no_grad(|| self.agent.act(&[&obs], false))
                })
            };
            let applied = self.state.apply(&rules, &step.actions[0]);
            if record {
                decisions.push(Decision {
                    obs,
                    choice: step.tensors.choice.int64_value(&[0]),
                    replicas: step.tensors.replicas.int64_value(&[0]),
                    cpu: step.tensors.cpu.double_value(&[0]) as f32,
                    logprob: step.logprob.double_value(&[0]) as f32,
                    value: step.value.double_value(&[0]) as f32,
                });
            }
            match applied {
                Some(actions) => out.extend(actions),
                None => break,
            }
        }
        Ok((out, decisions))
    }

    /// Says once that `snap` has nodes of a CPU model id the model was not trained on (past its
    /// node types): their features are outside what it saw, and it cannot prefer their type.
    fn note_unseen_node_types(&mut self, snap: &Snapshot) {
        use graphscaler_schemas::snapshot::node_feature;
        let known = self.agent.spec.node_types.len();
        let mut unseen: Vec<u32> = snap
            .node_x
            .iter()
            .map(|x| x[node_feature::CPU_MODEL_ID] as u32)
            .filter(|&id| id as usize >= known)
            .collect();
        unseen.sort_unstable();
        unseen.dedup();
        if unseen.is_empty()
            || self
                .outside
                .as_ref()
                .is_some_and(|o| o.contains("node types it was not trained on"))
        {
            return;
        }
        let said = format!(
            "serving nodes of CPU model ids {unseen:?}, node types it was not trained on (trained on {known}: {:?}): outside its training, with the same weights; it cannot prefer their type",
            self.agent.spec.node_types
        );
        tracing::warn!("{said}");
        self.outside = Some(match self.outside.take() {
            Some(before) => format!("{before}; {said}"),
            None => said,
        });
    }

    /// Rebuilds the model for `snap`'s services with the same weights (a graph encoder's do not
    /// depend on the services), saying once that it serves outside what it was trained on; the
    /// MLP, whose input is sized to its services, cannot.
    fn retarget(&mut self, snap: &Snapshot) -> Result<(), ServeError> {
        let trained = &self.agent.spec.services;
        if self.agent.spec.encoder == EncoderKind::Mlp {
            return Err(ServeError::Services(format!(
                "{} (the MLP's input is sized to its {} services: it does not transfer; a graph encoder does)",
                difference(snap, trained),
                trained.len()
            )));
        }
        let mut spec = self.agent.spec.clone();
        spec.services = snap.services.clone();
        let vs = VarStore::new(tch::Device::Cpu);
        let agent = GraphAgent::new(&vs.root(), spec);
        let weights = self.vs.variables();
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                match weights.get(&name) {
                    Some(w) if w.size() == t.size() => t.copy_(w),
                    _ => {
                        return Err(ServeError::Services(format!(
                            "{}: parameter `{name}` depends on the services, so the model does not transfer",
                            difference(snap, trained)
                        )))
                    }
                }
            }
            Ok(())
        })?;
        // One of the topologies it was trained on (the first's services are the model's): not
        // outside its training.
        if !self.agent.spec.trained_on_services(&snap.services)
            && self
                .outside
                .as_ref()
                .is_none_or(|o| !o.contains("services it was not trained on"))
        {
            let said = format!(
                "serving {} services it was not trained on ({}; trained on {} of `{}`): outside its training, with the same weights",
                snap.services.len(),
                difference(snap, trained),
                trained.len(),
                self.agent.spec.topology
            );
            tracing::warn!("{said}");
            self.outside = Some(match self.outside.take() {
                Some(before) => format!("{before}; {said}"),
                None => said,
            });
        }
        self.state = DecisionState::new(snap.services.clone(), self.agent.spec.node_types.clone());
        self.history.clear();
        self.agent = agent;
        self.vs = vs;
        Ok(())
    }

    /// The model's parameters.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The model's parameters, to replace them (online learning's promotion and rollback).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
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

impl graphscaler_policy::Policy for LearnedPolicy {
    fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action> {
        self.decide_observation(obs).unwrap_or_default()
    }
}
