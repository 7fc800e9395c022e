//! The actuator: every action passes guardrails before it reaches the cluster, and every
//! decision — applied, clamped, refused or dry-run — becomes an [`AuditRecord`].
//!
//! Guardrails, in order:
//!
//! 1. **Idempotence**: an action id seen before gets the first decision back; nothing is applied
//!    twice. The decisions remembered are bounded ([`DECIDED_CAP`]); past that, the next rule
//!    still refuses a redelivered action.
//! 2. **Last writer wins, per part**: each service's replicas, CPU and node type are three
//!    parts; an action older than the newest one already decided for its part is refused as
//!    superseded, so redelivery and reordering cannot undo a newer decision. With a
//!    `state_file`, what was decided survives a restart.
//! 3. **Time-to-live**: an action stamped (by its snapshot window) more than `action_ttl_s`
//!    before now is refused: a day-old decision is not applied.
//! 4. **Hold on stale or missing telemetry**: if the service's latest plausible telemetry is
//!    older than `stale_after_s`, there is none, or it lacks a metric (an absent series or a
//!    NaN sample), the action is refused — the actuator never scales on missing data, in either
//!    direction. Telemetry stamped more than `max_clock_skew_s` ahead of now is not plausible:
//!    it is ignored and counted, so one future-dated event cannot switch the guard off.
//! 5. **Known service**: an action on a workload the cluster does not have is refused.
//! 6. **Cooldown**: a service changed less than `cooldown_s` ago is left alone. The parts of one
//!    decision (a learned policy's replicas, CPU quota and node type for one service, all at the
//!    same instant) are one change: only an earlier instant starts the cooldown.
//! 7. **Bounds and step**: the target replica count is clamped to `[min, max]` (per service
//!    overrides) and to at most `max_step` away from the current count; a CPU limit change is
//!    clamped to `[min_cpu_limit_m, max_cpu_limit_m]`. A clamp is noted in the record.
//! 8. **Capacity**: a scale-up whose added CPU requests exceed the cluster's free allocatable CPU
//!    (less `reserve_cpu_cores`) is refused.
//! 9. **Dry run**: with `dry_run`, nothing is applied; the record says what would have been.
//!
//! The cluster is behind the [`Cluster`] trait: the twin in process, or the Kubernetes API
//! ([`k8s::KubeCluster`]). [`stage::actuate`] is the stage loop around an [`Actuator`].

pub mod k8s;
pub mod lease;
pub mod stage;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

use graphscaler_bus::stage::Clock;
use graphscaler_schemas::{Action, ActionKind, ActionOutcome, AuditRecord, Envelope, Refusal};
use serde::{Deserialize, Serialize};

/// Guardrail settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Fewest replicas of any service.
    pub min_replicas: u32,
    /// Most replicas of any service.
    pub max_replicas: u32,
    /// Per-service `[min, max]` overriding the two above.
    #[serde(default)]
    pub per_service: BTreeMap<String, (u32, u32)>,
    /// Largest change of replicas in one action.
    pub max_step: u32,
    /// Seconds after a change during which the service is not changed again.
    pub cooldown_s: f64,
    /// Telemetry older than this, seconds, holds every action on the service.
    pub stale_after_s: f64,
    /// Smallest CPU limit, millicores.
    pub min_cpu_limit_m: u32,
    /// Largest CPU limit, millicores.
    pub max_cpu_limit_m: u32,
    /// Allocatable CPU left unrequested by any scale-up, cores.
    pub reserve_cpu_cores: f64,
    /// Record decisions without applying them.
    pub dry_run: bool,
    /// An action stamped more than this many seconds before now is refused.
    #[serde(default = "default_action_ttl_s")]
    pub action_ttl_s: f64,
    /// Telemetry stamped more than this many seconds after now is implausible and ignored.
    #[serde(default = "default_max_clock_skew_s")]
    pub max_clock_skew_s: f64,
    /// Where the actuator keeps what it decided (last writer per part, recent decisions), so a
    /// restart refuses what it already decided; empty: in memory only.
    #[serde(default)]
    pub state_file: String,
    /// How a CPU change reaches the pods: in place, through the pod template (a rolling
    /// restart), or in place where the cluster can.
    #[serde(default)]
    pub cpu_resize: graphscaler_schemas::CpuResize,
}

fn default_action_ttl_s() -> f64 {
    graphscaler_schemas::defaults::section("pipeline.guardrails.action_ttl_s")
}

fn default_max_clock_skew_s() -> f64 {
    graphscaler_schemas::defaults::section("pipeline.guardrails.max_clock_skew_s")
}

impl Guardrails {
    /// Every problem with these settings, each naming the key (empty: valid). Bounds that are
    /// inverted, durations that are NaN, infinite or negative, and a zero step are refused.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = vec![];
        if self.min_replicas == 0 {
            errs.push(
                "guardrails.min_replicas must be at least 1 (0 would scale a service away)".into(),
            );
        }
        if self.min_replicas > self.max_replicas {
            errs.push(format!(
                "guardrails.min_replicas {} is above max_replicas {}",
                self.min_replicas, self.max_replicas
            ));
        }
        if self.max_step == 0 {
            errs.push("guardrails.max_step must be at least 1".into());
        }
        if self.min_cpu_limit_m == 0 || self.min_cpu_limit_m > self.max_cpu_limit_m {
            errs.push(format!(
                "guardrails needs 1 <= min_cpu_limit_m <= max_cpu_limit_m, got {} and {}",
                self.min_cpu_limit_m, self.max_cpu_limit_m
            ));
        }
        for (name, (lo, hi)) in &self.per_service {
            if *lo == 0 || lo > hi {
                errs.push(format!(
                    "guardrails.per_service.{name} needs 1 <= min <= max, got [{lo}, {hi}]"
                ));
            }
        }
        for (key, v) in [
            ("cooldown_s", self.cooldown_s),
            ("stale_after_s", self.stale_after_s),
            ("reserve_cpu_cores", self.reserve_cpu_cores),
            ("action_ttl_s", self.action_ttl_s),
            ("max_clock_skew_s", self.max_clock_skew_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                errs.push(format!(
                    "guardrails.{key} must be a finite number >= 0, got {v}"
                ));
            }
        }
        if self.stale_after_s == 0.0 || self.action_ttl_s == 0.0 {
            errs.push("guardrails.stale_after_s and action_ttl_s must be positive".into());
        }
        errs
    }
}

graphscaler_schemas::default_from!(Guardrails, "pipeline.guardrails");

/// What the actuator needs to know about a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// `spec.replicas`.
    pub replicas: u32,
    /// CPU request per pod, cores.
    pub cpu_request_cores: f64,
    /// CPU limit per pod, millicores, summed over the containers that have one; `None` when
    /// none has (a CPU action is then refused, [`Refusal::NoCpuLimit`]).
    pub cpu_limit_m: Option<u32>,
}

/// The cluster the actuator changes.
pub trait Cluster {
    /// The workload's current spec, if it exists.
    fn workload(&self, service: &str) -> Option<Workload>;
    /// Allocatable CPU not yet requested, cores.
    fn free_cpu_cores(&self) -> f64;
    /// Applies an action; the error is the cluster's reason.
    fn apply(&mut self, action: &Action) -> Result<(), String>;
    /// Brings `service`'s pods to what was applied, where applying does not reach pods started
    /// later (an in-place CPU resize leaves the pod template alone, so the ReplicaSet starts
    /// new pods at the template's size); called on each telemetry event about the service.
    /// Returns the pods changed. A cluster whose applied changes reach every pod has nothing
    /// to do.
    fn reconcile(&mut self, _service: &str) -> usize {
        0
    }
}

/// How many decisions the actuator remembers by action id.
pub const DECIDED_CAP: usize = 4096;

/// The last-writer key of an action: its service and the part it changes
/// ([`ActionKind::part`]), `service/part`.
fn writer_key(a: &Action) -> String {
    format!("{}/{}", a.service, a.kind.part())
}

/// What the actuator keeps across restarts (its `state_file`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActuatorState {
    /// Per `service/part`: the stamp (seconds) and id of the newest action decided.
    pub last_writer: HashMap<String, (f64, String)>,
    /// Per service: when it was last changed (the cooldown).
    pub last_change: HashMap<String, f64>,
    /// The most recent decisions, oldest first, at most [`DECIDED_CAP`].
    pub decided: VecDeque<AuditRecord>,
}

/// Counters of what the guardrails did beyond each decision's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActuatorStats {
    /// Telemetry ignored for being stamped too far ahead of now.
    pub implausible_telemetry: u64,
    /// Failures to write the state file (logged once per streak; exported by the actuate
    /// stage as `graphscaler_actuator_state_write_failures_total`).
    pub state_write_failures: u64,
}

#[derive(Debug, Clone)]
struct Seen {
    at: f64,
    /// The metrics the telemetry lacked; empty: complete.
    missing: Vec<String>,
}

/// The actuator.
#[derive(Debug)]
pub struct Actuator {
    rails: Guardrails,
    state: ActuatorState,
    index: HashMap<String, usize>,
    base: usize,
    telemetry_at: HashMap<String, Seen>,
    /// Whether the last write of the state file failed (a streak is logged once).
    failing_writes: bool,
    /// The newest plausible stamp seen, the event clock's now ([`Clock::Event`]).
    newest: f64,
    /// What the guardrails counted.
    pub stats: ActuatorStats,
}

/// Why an actuator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// The settings are invalid.
    #[error("invalid guardrails:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// The state file exists and cannot be read.
    #[error("actuator state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl Actuator {
    /// An actuator with these guardrails, in memory (the state file, if set, is not read: see
    /// [`Actuator::open`]).
    pub fn new(rails: Guardrails) -> Self {
        Self {
            rails,
            state: ActuatorState::default(),
            index: HashMap::new(),
            base: 0,
            telemetry_at: HashMap::new(),
            failing_writes: false,
            newest: f64::NEG_INFINITY,
            stats: ActuatorStats::default(),
        }
    }

    /// An actuator with validated guardrails, resuming from `state_file` when it is set and
    /// exists.
    pub fn open(rails: Guardrails) -> Result<Self, ActuateError> {
        let problems = rails.problems();
        if !problems.is_empty() {
            return Err(ActuateError::Config(problems));
        }
        let mut a = Self::new(rails);
        if !a.rails.state_file.is_empty() {
            let path = PathBuf::from(&a.rails.state_file);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let st: ActuatorState =
                        serde_json::from_slice(&bytes).map_err(|e| ActuateError::State {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                    a.state = st;
                    a.reindex();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ActuateError::State {
                        path,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(a)
    }

    fn reindex(&mut self) {
        self.base = 0;
        self.index = self
            .state
            .decided
            .iter()
            .enumerate()
            .map(|(i, r)| (r.action_id.clone(), i))
            .collect();
    }

    /// Whether a stamp `t` is plausible at `now`: finite and at most `max_clock_skew_s` ahead.
    pub fn plausible(&self, t: f64, now: f64) -> bool {
        t.is_finite() && t <= now + self.rails.max_clock_skew_s
    }

    /// What the actuator keeps across restarts.
    pub fn state(&self) -> &ActuatorState {
        &self.state
    }

    /// Service telemetry as the actuate stage receives it: observed at `t` with these
    /// `missing` metrics, now by `clock` (the event clock follows plausible stamps). Returns
    /// `false` for an implausible stamp (ignored and counted, see [`Actuator::saw_service`]).
    pub fn on_service(&mut self, service: &str, t: f64, missing: &[String], clock: Clock) -> bool {
        let now = clock.now(self.newest, t);
        let plausible = self.saw_service(service, t, missing, now);
        if plausible {
            self.newest = self.newest.max(t);
        }
        plausible
    }

    /// An action as the actuate stage receives it: decided on now by `clock` (the event clock
    /// follows the action's stamp too, when it is plausible; the guardrails refuse one that is
    /// not), through [`Actuator::handle`].
    pub fn on_action(
        &mut self,
        cluster: &mut dyn Cluster,
        action: &Envelope<Action>,
        clock: Clock,
    ) -> AuditRecord {
        let t = action.observed_at_s;
        if self.plausible(t, clock.now(self.newest, t)) {
            self.newest = self.newest.max(t);
        }
        let now = clock.now(self.newest, t);
        self.handle(cluster, action, now)
    }

    /// Records that telemetry about `service` was observed at `t` (seconds), complete.
    pub fn saw_telemetry(&mut self, service: &str, t: f64) {
        self.saw_service(service, t, &[], f64::INFINITY);
    }

    /// Records telemetry about `service` observed at `t` with these `missing` metrics, at time
    /// `now`. Telemetry stamped more than `max_clock_skew_s` after `now` (or not finite) is not
    /// plausible: it is ignored and counted, and returns `false`.
    pub fn saw_service(&mut self, service: &str, t: f64, missing: &[String], now: f64) -> bool {
        if !self.plausible(t, now) {
            self.stats.implausible_telemetry += 1;
            return false;
        }
        let newest = self.telemetry_at.get(service).is_none_or(|e| t >= e.at);
        if newest {
            self.telemetry_at.insert(
                service.to_string(),
                Seen {
                    at: t,
                    missing: missing.to_vec(),
                },
            );
        }
        true
    }

    fn bounds(&self, service: &str) -> (u32, u32) {
        self.rails
            .per_service
            .get(service)
            .copied()
            .unwrap_or((self.rails.min_replicas, self.rails.max_replicas))
    }

    fn remembered(&self, id: &str) -> Option<&AuditRecord> {
        let i = *self.index.get(id)?;
        self.state.decided.get(i.checked_sub(self.base)?)
    }

    fn remember(&mut self, record: &AuditRecord, stamp: f64, plausible: bool) {
        let key = writer_key(&record.action);
        // A stamp from the future never becomes the last writer: it would supersede every
        // real decision after it.
        let newer = plausible
            && self
                .state
                .last_writer
                .get(&key)
                .is_none_or(|(t, _)| stamp >= *t);
        if newer {
            self.state
                .last_writer
                .insert(key, (stamp, record.action_id.clone()));
        }
        self.index.insert(
            record.action_id.clone(),
            self.base + self.state.decided.len(),
        );
        self.state.decided.push_back(record.clone());
        while self.state.decided.len() > DECIDED_CAP {
            if let Some(old) = self.state.decided.pop_front() {
                if self.index.get(&old.action_id) == Some(&self.base) {
                    self.index.remove(&old.action_id);
                }
                self.base += 1;
            }
        }
        self.persist();
    }

    fn persist(&mut self) {
        if self.rails.state_file.is_empty() {
            return;
        }
        let path = PathBuf::from(&self.rails.state_file);
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let bytes = serde_json::to_vec(&self.state).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => {
                if self.failing_writes {
                    tracing::info!(path = %path.display(), "the actuator's state file is written again");
                }
                self.failing_writes = false;
            }
            Err(e) => {
                if !self.failing_writes {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the actuator's state file; a restart may forget recent decisions");
                }
                self.failing_writes = true;
                self.stats.state_write_failures += 1;
            }
        }
    }

    /// Decides on one action at time `now` (seconds), applying it unless a guardrail stops it.
    pub fn handle(
        &mut self,
        cluster: &mut dyn Cluster,
        action: &Envelope<Action>,
        now: f64,
    ) -> AuditRecord {
        if let Some(r) = self.remembered(&action.event_id) {
            return r.clone();
        }
        let record = self.decide(cluster, action, now);
        match &record.outcome {
            ActionOutcome::Applied => {
                tracing::info!(action = %action.event_id, service = %action.payload.service, dry_run = record.dry_run, note = ?record.note, "action applied")
            }
            ActionOutcome::Refused { reason, refusal } => {
                tracing::info!(action = %action.event_id, service = %action.payload.service, refusal = refusal.name(), %reason, "action refused")
            }
        }
        let stamp = action.observed_at_s;
        let plausible = self.plausible(stamp, now);
        self.remember(&record, stamp, plausible);
        record
    }

    fn decide(
        &mut self,
        cluster: &mut dyn Cluster,
        env: &Envelope<Action>,
        now: f64,
    ) -> AuditRecord {
        let a = &env.payload;
        let refuse = |refusal: Refusal, reason: String| AuditRecord {
            action_id: env.event_id.clone(),
            action: a.clone(),
            outcome: ActionOutcome::refused(refusal, reason),
            dry_run: false,
            note: None,
        };
        let stamp = env.observed_at_s;
        let key = writer_key(a);
        if let Some((t, id)) = self.state.last_writer.get(&key) {
            if stamp < *t || (stamp == *t && *id == env.event_id) {
                return refuse(Refusal::Superseded, format!(
                    "superseded: {} was decided at {t:.0} s ({id}); this action is from {stamp:.0} s",
                    key
                ));
            }
        }
        if !self.plausible(stamp, now) {
            return refuse(Refusal::Implausible, format!(
                "implausible: the action is stamped {:.0} s ahead of now (clock skew limit {:.0} s)",
                stamp - now,
                self.rails.max_clock_skew_s
            ));
        }
        if !stamp.is_finite() || now - stamp > self.rails.action_ttl_s {
            return refuse(
                Refusal::Expired,
                format!(
                    "expired: the action is {:.0} s old (time-to-live {:.0} s)",
                    now - stamp,
                    self.rails.action_ttl_s
                ),
            );
        }
        match self.telemetry_at.get(&a.service) {
            None => {
                return refuse(
                    Refusal::Hold,
                    format!("hold: no telemetry for {}", a.service),
                )
            }
            Some(t) if now - t.at > self.rails.stale_after_s => {
                return refuse(
                    Refusal::Hold,
                    format!(
                        "hold: telemetry for {} is {:.0} s old (limit {:.0} s)",
                        a.service,
                        now - t.at,
                        self.rails.stale_after_s
                    ),
                )
            }
            Some(t) if !t.missing.is_empty() => {
                return refuse(
                    Refusal::Hold,
                    format!(
                        "hold: telemetry for {} is missing {}",
                        a.service,
                        t.missing.join(", ")
                    ),
                )
            }
            _ => {}
        }
        let Some(w) = cluster.workload(&a.service) else {
            return refuse(
                Refusal::UnknownWorkload,
                format!("unknown workload `{}`", a.service),
            );
        };
        if let Some(t) = self.state.last_change.get(&a.service) {
            if now - t > 1e-9 && now - t < self.rails.cooldown_s {
                return refuse(
                    Refusal::Cooldown,
                    format!(
                        "cooldown: {} changed {:.0} s ago (cooldown {:.0} s)",
                        a.service,
                        now - t,
                        self.rails.cooldown_s
                    ),
                );
            }
        }
        let mut note = None;
        let kind = match &a.kind {
            ActionKind::SetReplicas { .. } | ActionKind::ChangeReplicas { .. } => {
                let wanted = match a.kind {
                    ActionKind::SetReplicas { replicas } => i64::from(replicas),
                    ActionKind::ChangeReplicas { delta } => {
                        i64::from(w.replicas) + i64::from(delta)
                    }
                    _ => unreachable!("matched above"),
                };
                let (lo, hi) = self.bounds(&a.service);
                let cur = i64::from(w.replicas);
                let step = i64::from(self.rails.max_step);
                // max-then-min, not clamp: settings that slipped past validation never panic.
                let target = wanted
                    .max(i64::from(lo))
                    .min(i64::from(hi))
                    .max(cur - step)
                    .min(cur + step);
                if target != wanted {
                    note = Some(format!("clamped from {wanted} to {target} replicas (bounds [{lo}, {hi}], max step {step})"));
                }
                if target == cur {
                    return AuditRecord {
                        action_id: env.event_id.clone(),
                        action: a.clone(),
                        outcome: ActionOutcome::refused(
                            Refusal::NoChange,
                            format!("no change: {} already has {cur} replicas", a.service),
                        ),
                        dry_run: false,
                        note,
                    };
                }
                let added_cpu = (target - cur).max(0) as f64 * w.cpu_request_cores;
                let free = cluster.free_cpu_cores() - self.rails.reserve_cpu_cores;
                if added_cpu > free + 1e-9 {
                    return refuse(Refusal::Capacity, format!(
                        "capacity: {} more replicas of {} need {:.2} cores, {:.2} are free beyond the reserve",
                        target - cur,
                        a.service,
                        added_cpu,
                        free.max(0.0)
                    ));
                }
                ActionKind::SetReplicas {
                    replicas: target as u32,
                }
            }
            ActionKind::SetCpuLimit { .. } | ActionKind::ChangeCpuQuota { .. }
                if w.cpu_limit_m.is_none() =>
            {
                return refuse(
                    Refusal::NoCpuLimit,
                    format!(
                        "no cpu limit: no container of {} has a CPU limit to change; set resources.limits.cpu in its pod template to let CPU actions apply",
                        a.service
                    ),
                );
            }
            ActionKind::SetCpuLimit { millicores } => {
                let m = (*millicores)
                    .max(self.rails.min_cpu_limit_m)
                    .min(self.rails.max_cpu_limit_m);
                if m != *millicores {
                    note = Some(format!("clamped from {millicores} m to {m} m"));
                }
                ActionKind::SetCpuLimit { millicores: m }
            }
            ActionKind::ChangeCpuQuota { delta } => {
                if !delta.is_finite() {
                    return refuse(
                        Refusal::Invalid,
                        format!("cpu quota delta {delta} is not a number"),
                    );
                }
                let d = delta.clamp(-1.0, 1.0);
                let cur = w.cpu_limit_m.unwrap_or_default();
                let m = (f64::from(cur) * 2f64.powf(d)).round() as u32;
                let m = m
                    .max(self.rails.min_cpu_limit_m)
                    .min(self.rails.max_cpu_limit_m);
                note = Some(format!("{cur} m -> {m} m"));
                ActionKind::SetCpuLimit { millicores: m }
            }
            k @ ActionKind::PreferNodeType { .. } => k.clone(),
        };
        let effective = Action::new(a.service.clone(), kind);
        if self.rails.dry_run {
            return AuditRecord {
                action_id: env.event_id.clone(),
                action: effective,
                outcome: ActionOutcome::Applied,
                dry_run: true,
                note,
            };
        }
        match cluster.apply(&effective) {
            Ok(()) => {
                self.state.last_change.insert(a.service.clone(), now);
                AuditRecord {
                    action_id: env.event_id.clone(),
                    action: effective,
                    outcome: ActionOutcome::Applied,
                    dry_run: false,
                    note,
                }
            }
            Err(reason) => refuse(Refusal::Cluster, format!("the cluster refused: {reason}")),
        }
    }
}
