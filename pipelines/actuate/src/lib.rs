//! The actuator: every action passes guardrails before it reaches the cluster, and every
//! decision — applied, clamped, refused or dry-run — becomes an [`AuditRecord`].
//!
//! Guardrails, in order:
//!
//! 1. **Idempotence**: an action id seen before gets the first decision back; nothing is applied
//!    twice.
//! 2. **Hold on stale or missing telemetry**: if the service's latest telemetry is older than
//!    `stale_after_s`, or there is none, the action is refused — the actuator never scales on
//!    missing data, in either direction.
//! 3. **Known service**: an action on a workload the cluster does not have is refused.
//! 4. **Cooldown**: a service changed less than `cooldown_s` ago is left alone. The parts of one
//!    decision (a learned policy's replicas, CPU quota and node type for one service, all at the
//!    same instant) are one change: only an earlier instant starts the cooldown.
//! 5. **Bounds and step**: the target replica count is clamped to `[min, max]` (per service
//!    overrides) and to at most `max_step` away from the current count; a CPU limit change is
//!    clamped to `[min_cpu_limit_m, max_cpu_limit_m]`. A clamp is noted in the record.
//! 6. **Capacity**: a scale-up whose added CPU requests exceed the cluster's free allocatable CPU
//!    (less `reserve_cpu_cores`) is refused.
//! 7. **Dry run**: with `dry_run`, nothing is applied; the record says what would have been.
//!
//! The cluster is behind the [`Cluster`] trait: the twin in process, or the Kubernetes API.

use std::collections::HashMap;

use graphscaler_schemas::{Action, ActionKind, ActionOutcome, AuditRecord, Envelope};
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
    pub per_service: HashMap<String, (u32, u32)>,
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
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: 40,
            per_service: HashMap::new(),
            max_step: 4,
            cooldown_s: 30.0,
            stale_after_s: 90.0,
            min_cpu_limit_m: 50,
            max_cpu_limit_m: 4000,
            reserve_cpu_cores: 0.5,
            dry_run: false,
        }
    }
}

/// What the actuator needs to know about a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// `spec.replicas`.
    pub replicas: u32,
    /// CPU request per pod, cores.
    pub cpu_request_cores: f64,
    /// CPU limit per pod, millicores.
    pub cpu_limit_m: u32,
}

/// The cluster the actuator changes.
pub trait Cluster {
    /// The workload's current spec, if it exists.
    fn workload(&self, service: &str) -> Option<Workload>;
    /// Allocatable CPU not yet requested, cores.
    fn free_cpu_cores(&self) -> f64;
    /// Applies an action; the error is the cluster's reason.
    fn apply(&mut self, action: &Action) -> Result<(), String>;
}

/// The actuator.
#[derive(Debug)]
pub struct Actuator {
    rails: Guardrails,
    decided: HashMap<String, AuditRecord>,
    last_change: HashMap<String, f64>,
    telemetry_at: HashMap<String, f64>,
}

impl Actuator {
    /// An actuator with these guardrails.
    pub fn new(rails: Guardrails) -> Self {
        Self {
            rails,
            decided: HashMap::new(),
            last_change: HashMap::new(),
            telemetry_at: HashMap::new(),
        }
    }

    /// Records that telemetry about `service` was observed at `t` (seconds).
    pub fn saw_telemetry(&mut self, service: &str, t: f64) {
        let e = self.telemetry_at.entry(service.to_string()).or_insert(t);
        if t > *e {
            *e = t;
        }
    }

    fn bounds(&self, service: &str) -> (u32, u32) {
        self.rails
            .per_service
            .get(service)
            .copied()
            .unwrap_or((self.rails.min_replicas, self.rails.max_replicas))
    }

    /// Decides on one action at time `now` (seconds), applying it unless a guardrail stops it.
    pub fn handle(
        &mut self,
        cluster: &mut dyn Cluster,
        action: &Envelope<Action>,
        now: f64,
    ) -> AuditRecord {
        if let Some(r) = self.decided.get(&action.event_id) {
            return r.clone();
        }
        let record = self.decide(cluster, action, now);
        match &record.outcome {
            ActionOutcome::Applied => {
                tracing::info!(action = %action.event_id, service = %action.payload.service, dry_run = record.dry_run, note = ?record.note, "action applied")
            }
            ActionOutcome::Refused { reason } => {
                tracing::info!(action = %action.event_id, service = %action.payload.service, %reason, "action refused")
            }
        }
        self.decided.insert(action.event_id.clone(), record.clone());
        record
    }

    fn decide(
        &mut self,
        cluster: &mut dyn Cluster,
        env: &Envelope<Action>,
        now: f64,
    ) -> AuditRecord {
        let a = &env.payload;
        let refuse = |reason: String| AuditRecord {
            action_id: env.event_id.clone(),
            action: a.clone(),
            outcome: ActionOutcome::Refused { reason },
            dry_run: false,
            note: None,
        };
        match self.telemetry_at.get(&a.service) {
            None => return refuse(format!("hold: no telemetry for {}", a.service)),
            Some(t) if now - t > self.rails.stale_after_s => {
                return refuse(format!(
                    "hold: telemetry for {} is {:.0} s old (limit {:.0} s)",
                    a.service,
                    now - t,
                    self.rails.stale_after_s
                ))
            }
            _ => {}
        }
        let Some(w) = cluster.workload(&a.service) else {
            return refuse(format!("unknown workload `{}`", a.service));
        };
        if let Some(t) = self.last_change.get(&a.service) {
            if now - t > 1e-9 && now - t < self.rails.cooldown_s {
                return refuse(format!(
                    "cooldown: {} changed {:.0} s ago (cooldown {:.0} s)",
                    a.service,
                    now - t,
                    self.rails.cooldown_s
                ));
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
                let target = wanted
                    .clamp(i64::from(lo), i64::from(hi))
                    .clamp(cur - step, cur + step);
                if target != wanted {
                    note = Some(format!("clamped from {wanted} to {target} replicas (bounds [{lo}, {hi}], max step {step})"));
                }
                if target == cur {
                    return AuditRecord {
                        action_id: env.event_id.clone(),
                        action: a.clone(),
                        outcome: ActionOutcome::Refused {
                            reason: format!("no change: {} already has {cur} replicas", a.service),
                        },
                        dry_run: false,
                        note,
                    };
                }
                let added_cpu = (target - cur).max(0) as f64 * w.cpu_request_cores;
                let free = cluster.free_cpu_cores() - self.rails.reserve_cpu_cores;
                if added_cpu > free + 1e-9 {
                    return refuse(format!(
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
            ActionKind::SetCpuLimit { millicores } => {
                let m = (*millicores).clamp(self.rails.min_cpu_limit_m, self.rails.max_cpu_limit_m);
                if m != *millicores {
                    note = Some(format!("clamped from {millicores} m to {m} m"));
                }
                ActionKind::SetCpuLimit { millicores: m }
            }
            ActionKind::ChangeCpuQuota { delta } => {
                if !delta.is_finite() {
                    return refuse(format!("cpu quota delta {delta} is not a number"));
                }
                let d = delta.clamp(-1.0, 1.0);
                let m = (f64::from(w.cpu_limit_m) * 2f64.powf(d)).round() as u32;
                let m = m.clamp(self.rails.min_cpu_limit_m, self.rails.max_cpu_limit_m);
                note = Some(format!("{} m -> {m} m", w.cpu_limit_m));
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
                self.last_change.insert(a.service.clone(), now);
                AuditRecord {
                    action_id: env.event_id.clone(),
                    action: effective,
                    outcome: ActionOutcome::Applied,
                    dry_run: false,
                    note,
                }
            }
            Err(reason) => refuse(format!("the cluster refused: {reason}")),
        }
    }
}
