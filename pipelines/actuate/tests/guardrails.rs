//! Each guardrail on written-out cases, then the actuator in front of the twin.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use graphscaler_actuate::{Actuator, Cluster, Guardrails, Workload};
use graphscaler_schemas::{Action, ActionKind, ActionOutcome, Envelope};

#[derive(Debug, Default)]
struct Fake {
    workloads: HashMap<String, Workload>,
    free: f64,
    applied: Vec<Action>,
    refuse: Option<String>,
}

impl Cluster for Fake {
    fn workload(&self, s: &str) -> Option<Workload> {
        self.workloads.get(s).copied()
    }
    fn free_cpu_cores(&self) -> f64 {
        self.free
    }
    fn apply(&mut self, a: &Action) -> Result<(), String> {
        if let Some(r) = &self.refuse {
            return Err(r.clone());
        }
        if let (ActionKind::SetReplicas { replicas }, Some(w)) =
            (&a.kind, self.workloads.get_mut(&a.service))
        {
            w.replicas = *replicas;
        }
        self.applied.push(a.clone());
        Ok(())
    }
}

fn fake() -> Fake {
    let mut f = Fake {
        free: 10.0,
        ..Fake::default()
    };
    f.workloads.insert(
        "web".into(),
        Workload {
            replicas: 2,
            cpu_request_cores: 0.5,
            cpu_limit_m: Some(1000),
        },
    );
    f
}

fn act(id: &str, kind: ActionKind, t: f64) -> Envelope<Action> {
    let mut e = Envelope::new("policy", t, 0.0, Action::new("web", kind));
    e.event_id = id.into();
    e
}

fn reason(o: &ActionOutcome) -> &str {
    match o {
        ActionOutcome::Refused { reason, .. } => reason,
        ActionOutcome::Applied => "",
    }
}

#[test]
fn missing_or_stale_telemetry_holds_every_action() {
    let mut c = fake();
    let mut a = Actuator::new(Guardrails::default());
    let r = a.handle(
        &mut c,
        &act("1", ActionKind::ChangeReplicas { delta: -1 }, 100.0),
        100.0,
    );
    assert_eq!(reason(&r.outcome), "hold: no telemetry for web");
    a.saw_telemetry("web", 0.0);
    let r = a.handle(
        &mut c,
        &act("2", ActionKind::ChangeReplicas { delta: 1 }, 100.0),
        100.0,
    );
    assert!(
        reason(&r.outcome).starts_with("hold: telemetry for web is 100 s old"),
        "{r:?}"
    );
    assert!(c.applied.is_empty());
}

#[test]
fn idempotent_per_action_id() {
    let mut c = fake();
    let mut a = Actuator::new(Guardrails {
        cooldown_s: 0.0,
        ..Guardrails::default()
    });
    a.saw_telemetry("web", 10.0);
    let first = a.handle(
        &mut c,
        &act("x", ActionKind::ChangeReplicas { delta: 1 }, 10.0),
        10.0,
    );
    let again = a.handle(
        &mut c,
        &act("x", ActionKind::ChangeReplicas { delta: 1 }, 10.0),
        11.0,
    );
    assert_eq!(first, again);
    assert_eq!(c.applied.len(), 1);
    assert_eq!(c.workloads["web"].replicas, 3);
}

#[test]
fn bounds_step_and_cooldown() {
    let mut c = fake();
    let mut rails = Guardrails {
        max_step: 2,
        cooldown_s: 30.0,
        ..Guardrails::default()
    };
    rails.per_service.insert("web".into(), (2, 5));
    let mut a = Actuator::new(rails);
    a.saw_telemetry("web", 0.0);
    // 2 → 10 wanted: clamped by max 5, then by the step of 2 → 4.
    let r = a.handle(
        &mut c,
        &act("1", ActionKind::SetReplicas { replicas: 10 }, 0.0),
        0.0,
    );
    assert_eq!(r.outcome, ActionOutcome::Applied);
    assert_eq!(r.action.kind, ActionKind::SetReplicas { replicas: 4 });
    assert!(
        r.note.as_deref().unwrap().contains("clamped from 10 to 4"),
        "{r:?}"
    );
    // Another part of the same decision (the same instant) is not held by the cooldown.
    let r = a.handle(
        &mut c,
        &act(
            "1b",
            ActionKind::PreferNodeType {
                node_type: Some("big".into()),
            },
            0.0,
        ),
        0.0,
    );
    assert_eq!(r.outcome, ActionOutcome::Applied, "{r:?}");
    // Within the cooldown nothing moves.
    a.saw_telemetry("web", 20.0);
    let r = a.handle(
        &mut c,
        &act("2", ActionKind::ChangeReplicas { delta: -2 }, 20.0),
        20.0,
    );
    assert!(
        reason(&r.outcome).starts_with("cooldown: web changed 20 s ago"),
        "{r:?}"
    );
    // After it, the per-service minimum holds: 4 - 5 → 2.
    a.saw_telemetry("web", 40.0);
    let r = a.handle(
        &mut c,
        &act("3", ActionKind::ChangeReplicas { delta: -5 }, 40.0),
        40.0,
    );
    assert_eq!(r.action.kind, ActionKind::SetReplicas { replicas: 2 });
    assert_eq!(c.workloads["web"].replicas, 2);
    // Asking for what is already there is no change.
    a.saw_telemetry("web", 80.0);
    let r = a.handle(
        &mut c,
        &act("4", ActionKind::SetReplicas { replicas: 1 }, 80.0),
        80.0,
    );
    assert_eq!(reason(&r.outcome), "no change: web already has 2 replicas");
}

#[test]
fn capacity_unknown_workloads_quota_and_cluster_refusals() {
    let mut c = fake();
    c.free = 1.2; // reserve 0.5 → 0.7 cores for scale-ups; each replica requests 0.5
    let mut a = Actuator::new(Guardrails {
        cooldown_s: 0.0,
        ..Guardrails::default()
    });
    a.saw_telemetry("web", 0.0);
    let r = a.handle(
        &mut c,
        &act("1", ActionKind::ChangeReplicas { delta: 2 }, 0.0),
        0.0,
    );
    assert!(
        reason(&r.outcome)
            .starts_with("capacity: 2 more replicas of web need 1.00 cores, 0.70 are free"),
        "{r:?}"
    );
    let r = a.handle(
        &mut c,
        &act("2", ActionKind::ChangeReplicas { delta: 1 }, 0.0),
        0.0,
    );
    assert_eq!(r.outcome, ActionOutcome::Applied);
    // Quota changes become a clamped limit.
    let r = a.handle(
        &mut c,
        &act("3", ActionKind::ChangeCpuQuota { delta: 3.0 }, 0.0),
        0.0,
    );
    assert_eq!(r.action.kind, ActionKind::SetCpuLimit { millicores: 2000 });
    let r = a.handle(
        &mut c,
        &act("4", ActionKind::ChangeCpuQuota { delta: f64::NAN }, 0.0),
        0.0,
    );
    assert!(reason(&r.outcome).contains("not a number"));
    let mut e = act("5", ActionKind::ChangeReplicas { delta: 1 }, 0.0);
    e.payload.service = "ghost".into();
    a.saw_telemetry("ghost", 0.0);
    assert_eq!(
        reason(&a.handle(&mut c, &e, 0.0).outcome),
        "unknown workload `ghost`"
    );
    c.refuse = Some("infeasible".into());
    let r = a.handle(
        &mut c,
        &act("6", ActionKind::SetCpuLimit { millicores: 500 }, 0.0),
        0.0,
    );
    assert_eq!(reason(&r.outcome), "the cluster refused: infeasible");
}

#[test]
fn dry_run_applies_nothing_and_says_what_it_would_do() {
    let mut c = fake();
    let mut a = Actuator::new(Guardrails {
        dry_run: true,
        ..Guardrails::default()
    });
    a.saw_telemetry("web", 0.0);
    let r = a.handle(
        &mut c,
        &act("1", ActionKind::ChangeReplicas { delta: 1 }, 0.0),
        0.0,
    );
    assert!(r.dry_run);
    assert_eq!(r.outcome, ActionOutcome::Applied);
    assert_eq!(r.action.kind, ActionKind::SetReplicas { replicas: 3 });
    assert!(c.applied.is_empty());
    assert_eq!(c.workloads["web"].replicas, 2);
}

/// The twin as a cluster, as `graphscaler run` uses it.
struct TwinCluster(graphscaler_twin::Twin, f64);

impl Cluster for TwinCluster {
    fn workload(&self, s: &str) -> Option<Workload> {
        self.0.spec_of(s).map(|(r, req, lim)| Workload {
            replicas: r,
            cpu_request_cores: req,
            cpu_limit_m: Some((lim * 1000.0).round() as u32),
        })
    }
    fn free_cpu_cores(&self) -> f64 {
        self.1
    }
    fn apply(&mut self, a: &Action) -> Result<(), String> {
        match self.0.apply(a) {
            ActionOutcome::Applied => Ok(()),
            ActionOutcome::Refused { reason, .. } => Err(reason),
        }
    }
}

#[test]
fn in_front_of_the_twin() {
    use graphscaler_twin::{Shape, Twin};
    let mut twin = Twin::online_boutique(Shape::Peak, 600.0, 1).unwrap();
    let (obs, _) = twin.advance();
    let free: f64 = obs.nodes.iter().map(|n| n.free_cpu_cores()).sum();
    let mut cluster = TwinCluster(twin, free);
    let mut a = Actuator::new(Guardrails {
        cooldown_s: 0.0,
        ..Guardrails::default()
    });
    for s in &obs.services {
        a.saw_telemetry(&s.name, obs.time_s);
    }
    let mut e = act("a", ActionKind::SetReplicas { replicas: 9 }, obs.time_s);
    e.payload.service = "frontend".into();
    let r = a.handle(&mut cluster, &e, obs.time_s);
    assert_eq!(
        r.action.kind,
        ActionKind::SetReplicas { replicas: 5 },
        "step of 4 from 1"
    );
    assert_eq!(cluster.0.spec_of("frontend").unwrap().0, 5);
    // A limit the twin cannot fit in place is refused by the twin, with its reason.
    let mut e = act(
        "b",
        ActionKind::SetCpuLimit { millicores: 4000 },
        obs.time_s,
    );
    e.payload.service = "frontend".into();
    let r = a.handle(&mut cluster, &e, obs.time_s);
    assert!(
        reason(&r.outcome).starts_with("the cluster refused:"),
        "{r:?}"
    );
}

#[test]
fn a_workload_without_a_cpu_limit_gets_no_cpu_action() {
    let mut c = fake();
    c.workloads.get_mut("web").unwrap().cpu_limit_m = None;
    let mut a = Actuator::new(Guardrails {
        cooldown_s: 0.0,
        ..Guardrails::default()
    });
    a.saw_telemetry("web", 10.0);
    for (id, kind) in [
        ("q", ActionKind::ChangeCpuQuota { delta: 0.5 }),
        ("l", ActionKind::SetCpuLimit { millicores: 400 }),
    ] {
        let r = a.handle(&mut c, &act(id, kind, 10.0), 10.0);
        assert!(
            matches!(
                r.outcome,
                ActionOutcome::Refused {
                    refusal: graphscaler_schemas::Refusal::NoCpuLimit,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(reason(&r.outcome).contains("resources.limits.cpu"), "{r:?}");
    }
    assert!(c.applied.is_empty(), "no limit is ever invented");
    // Replicas are still scaled.
    let r = a.handle(
        &mut c,
        &act("r", ActionKind::ChangeReplicas { delta: 1 }, 10.0),
        10.0,
    );
    assert!(r.outcome.is_applied(), "{r:?}");
}
