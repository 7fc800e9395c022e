//! From hybrid actions to the cluster and back: the masks a state allows and the
//! [`Action`]s a [`HybridAction`] becomes. Training (the twin environment), evaluation and the
//! pipeline's policy stage all go through here, so a policy is trained on the rules it is served
//! under.
//!
//! * A decision changes one service; a policy may decide up to `decisions_per_tick` times per
//!   observation (each service at most once), and a decision of *nothing* ends the tick.
//! * **Masks**: a service changed in this tick or within `cooldown_s` is masked (all its pairs); a
//!   node type without machines is masked; a Δreplicas that would leave the replica bounds is
//!   masked, and so is a positive one when the cluster's free CPU cannot hold that many more of
//!   the service's pods (when the requests are known).
//! * **Translation**: Δreplicas ≠ 0 → [`ActionKind::ChangeReplicas`]; |Δcpu| ≥ `cpu_deadband` →
//!   [`ActionKind::ChangeCpuQuota`] (the limit times `2^Δcpu`); a node type other than the one
//!   the service prefers → [`ActionKind::PreferNodeType`].

use graphscaler_schemas::{Action, ActionKind, Snapshot};

use crate::policy::{HybridAction, SampleMask};

/// The last `w` entries of `history` (oldest first) for a temporal encoder, the oldest repeated
/// while fewer are there (the start of an episode or a stream). `history` must not be empty.
pub fn window_of<T>(history: &std::collections::VecDeque<T>, w: usize) -> Vec<&T> {
    let w = w.max(1);
    let have = history.len();
    (0..w)
        .map(|i| &history[(have + i).saturating_sub(w).min(have - 1)])
        .collect()
}

pub use crate::config::ActionRules;

/// What a decision loop keeps between decisions: when each service last changed and what it has
/// done to replicas and preferences this tick.
#[derive(Debug, Clone)]
pub struct DecisionState {
    /// Services, as in the snapshots.
    pub services: Vec<String>,
    /// Node type names by CPU model id.
    pub node_types: Vec<String>,
    last_change: Vec<f64>,
    changed_this_tick: Vec<bool>,
    /// Replicas after this tick's decisions.
    pub spec: Vec<u32>,
    preferred: Vec<Option<usize>>,
    decisions: usize,
    now: f64,
}

impl DecisionState {
    /// A state for `services` and `node_types`.
    pub fn new(services: Vec<String>, node_types: Vec<String>) -> Self {
        let n = services.len();
        Self {
            services,
            node_types,
            last_change: vec![f64::NEG_INFINITY; n],
            changed_this_tick: vec![false; n],
            spec: vec![0; n],
            preferred: vec![None; n],
            decisions: 0,
            now: 0.0,
        }
    }

    /// A new observation tick at `snap`.
    pub fn tick(&mut self, snap: &Snapshot) {
        self.now = snap.time_s;
        self.decisions = 0;
        self.changed_this_tick.iter_mut().for_each(|c| *c = false);
        self.spec.clone_from(&snap.replicas_spec);
    }

    /// Whether another decision may be taken in this tick.
    pub fn may_decide(&self, rules: &ActionRules) -> bool {
        self.decisions < rules.decisions_per_tick && self.changed_this_tick.iter().any(|c| !c)
    }

    /// The masks for the next decision. `cpu_request` (cores per pod per service) and
    /// `free_cpu` (cores) enable the capacity mask when known.
    pub fn mask(
        &self,
        rules: &ActionRules,
        snap: &Snapshot,
        capacity: Option<(&[f64], f64)>,
    ) -> SampleMask {
        let k = self.node_types.len();
        let mut present = vec![false; k];
        for x in &snap.node_x {
            let t = (x[2].round().max(0.0) as usize).min(k.saturating_sub(1));
            if let Some(p) = present.get_mut(t) {
                *p = true;
            }
        }
        let mut m = SampleMask::all(self.services.len(), k).with_replica_bounds(
            &self.spec,
            rules.min_replicas,
            rules.max_replicas,
        );
        m.progress = self.decisions as f32 / rules.decisions_per_tick.max(1) as f32;
        for s in 0..self.services.len() {
            // A service whose features are unknown (a metric missing) is held.
            let blocked = self.changed_this_tick[s]
                || !snap.service_known(s)
                || (rules.cooldown_s > 0.0 && self.now - self.last_change[s] < rules.cooldown_s);
            for (t, &p) in present.iter().enumerate() {
                m.pairs[s * k + t] = !blocked && p;
            }
            if let Some((req, free)) = capacity {
                for (j, d) in crate::policy::DELTAS.iter().enumerate() {
                    if *d > 0 && req.get(s).is_some_and(|r| *d as f64 * r > free + 1e-9) {
                        m.replicas[s * 5 + j] = false;
                    }
                }
            }
        }
        m
    }

    /// The cluster actions of `a`, recording it; `None` for nothing (which ends the tick).
    pub fn apply(&mut self, rules: &ActionRules, a: &HybridAction) -> Option<Vec<Action>> {
        self.decisions += 1;
        let HybridAction::Change {
            service,
            node_type,
            delta_replicas,
            delta_cpu,
        } = *a
        else {
            self.decisions = rules.decisions_per_tick;
            return None;
        };
        let s = service as usize;
        let name = self.services.get(s)?.clone();
        self.changed_this_tick[s] = true;
        self.last_change[s] = self.now;
        let mut out = vec![];
        if delta_replicas != 0 {
            out.push(Action::new(
                name.clone(),
                ActionKind::ChangeReplicas {
                    delta: delta_replicas as i32,
                },
            ));
            self.spec[s] = (i64::from(self.spec[s]) + delta_replicas).max(0) as u32;
        }
        if delta_cpu.abs() >= rules.cpu_deadband {
            out.push(Action::new(
                name.clone(),
                ActionKind::ChangeCpuQuota {
                    delta: delta_cpu.clamp(-1.0, 1.0),
                },
            ));
        }
        let k = node_type as usize;
        if self.preferred[s] != Some(k) {
            if let Some(t) = self.node_types.get(k) {
                self.preferred[s] = Some(k);
                out.push(Action::new(
                    name,
                    ActionKind::PreferNodeType {
                        node_type: Some(t.clone()),
                    },
                ));
            }
        }
        Some(out)
    }
}
