//! The actuator's safety guarantees (docs/pipeline.md#guarantees): redelivery and reordering
//! across a restart give the state of one in-order delivery; old, future-dated and missing-data
//! actions are refused; settings that would switch a guard off are refused, and none panics.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use graphscaler_actuate::{Actuator, Cluster, Guardrails, Workload};
use graphscaler_schemas::{Action, ActionKind, ActionOutcome, Envelope};

#[derive(Debug, Default, Clone)]
struct Fake {
    workloads: HashMap<String, Workload>,
    applied: Vec<Action>,
}

impl Cluster for Fake {
    fn workload(&self, s: &str) -> Option<Workload> {
        self.workloads.get(s).copied()
    }
    fn free_cpu_cores(&self) -> f64 {
        100.0
    }
    fn apply(&mut self, a: &Action) -> Result<(), String> {
        let w = self
            .workloads
            .get_mut(&a.service)
            .ok_or("no such workload")?;
        match &a.kind {
            ActionKind::SetReplicas { replicas } => w.replicas = *replicas,
            ActionKind::SetCpuLimit { millicores } => w.cpu_limit_m = Some(*millicores),
            _ => {}
        }
        self.applied.push(a.clone());
        Ok(())
    }
}

fn cluster() -> Fake {
    let mut f = Fake::default();
    for s in ["web", "db"] {
        f.workloads.insert(
            s.into(),
            Workload {
                replicas: 2,
                cpu_request_cores: 0.1,
                cpu_limit_m: Some(500),
            },
        );
    }
    f
}

fn rails(state: &std::path::Path) -> Guardrails {
    Guardrails {
        cooldown_s: 0.0,
        max_step: 10,
        state_file: state.display().to_string(),
        ..Guardrails::default()
    }
}

fn decision(service: &str, kind: ActionKind, t: f64) -> Envelope<Action> {
    Envelope::decision("policy/test", t, 30.0, Action::new(service, kind))
}

fn reason(o: &ActionOutcome) -> &str {
    match o {
        ActionOutcome::Refused { reason, .. } => reason,
        ActionOutcome::Applied => "applied",
    }
}

/// Feeds `actions` to an actuator at time `now`, with fresh telemetry for every service.
fn feed(a: &mut Actuator, c: &mut Fake, actions: &[Envelope<Action>], now: f64) {
    for e in actions {
        for s in ["web", "db"] {
            a.saw_service(s, now, &[], now);
        }
        a.handle(c, e, now);
    }
}

fn state_of(c: &Fake) -> Vec<(String, u32, Option<u32>)> {
    let mut v: Vec<_> = c
        .workloads
        .iter()
        .map(|(k, w)| (k.clone(), w.replicas, w.cpu_limit_m))
        .collect();
    v.sort();
    v
}

#[test]
fn twice_and_out_of_order_across_a_restart_is_once_in_order() {
    let decisions = vec![
        decision("web", ActionKind::SetReplicas { replicas: 4 }, 1000.0),
        decision("web", ActionKind::SetCpuLimit { millicores: 800 }, 1000.0),
        decision("db", ActionKind::SetReplicas { replicas: 3 }, 1000.0),
        decision("web", ActionKind::SetReplicas { replicas: 6 }, 1030.0),
        decision("db", ActionKind::SetReplicas { replicas: 1 }, 1030.0),
        decision("web", ActionKind::SetReplicas { replicas: 5 }, 1060.0),
        decision("web", ActionKind::SetCpuLimit { millicores: 600 }, 1060.0),
    ];
    // Once, in order.
    let dir = tempfile::tempdir().unwrap();
    let mut once = cluster();
    let mut a = Actuator::open(rails(&dir.path().join("a.json"))).unwrap();
    feed(&mut a, &mut once, &decisions, 1070.0);
    assert_eq!(
        state_of(&once),
        [("db".into(), 1, Some(500)), ("web".into(), 5, Some(600))]
    );

    // Every action twice, out of order, with a restart in the middle.
    let mut shuffled: Vec<Envelope<Action>> =
        decisions.iter().chain(decisions.iter()).cloned().collect();
    // A fixed permutation that puts newer decisions before older ones.
    shuffled.reverse();
    shuffled.swap(1, 9);
    shuffled.swap(3, 12);
    let path = dir.path().join("b.json");
    let mut twice = cluster();
    let (first, second) = shuffled.split_at(6);
    let mut a = Actuator::open(rails(&path)).unwrap();
    feed(&mut a, &mut twice, first, 1070.0);
    drop(a);
    let mut a = Actuator::open(rails(&path)).unwrap();
    feed(&mut a, &mut twice, second, 1071.0);
    assert_eq!(state_of(&twice), state_of(&once));

    // Without the state file, the restart forgets and an older decision undoes a newer one:
    // the file is what makes the guarantee hold across restarts.
    let mut forgetful = cluster();
    let mut a = Actuator::new(rails(&dir.path().join("unused.json")));
    feed(&mut a, &mut forgetful, first, 1070.0);
    let mut a = Actuator::new(rails(&dir.path().join("unused.json")));
    feed(&mut a, &mut forgetful, second, 1071.0);
    assert_ne!(state_of(&forgetful), state_of(&once));
}

#[test]
fn the_parts_of_one_decision_are_each_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster();
    let mut a = Actuator::open(rails(&dir.path().join("s.json"))).unwrap();
    let parts = [
        decision("web", ActionKind::SetReplicas { replicas: 3 }, 100.0),
        decision("web", ActionKind::SetCpuLimit { millicores: 700 }, 100.0),
        decision(
            "web",
            ActionKind::PreferNodeType {
                node_type: Some("m5.large".into()),
            },
            100.0,
        ),
    ];
    let ids: std::collections::HashSet<_> = parts.iter().map(|p| p.event_id.clone()).collect();
    assert_eq!(ids.len(), 3, "one decision id per part");
    feed(&mut a, &mut c, &parts, 100.0);
    assert_eq!(c.applied.len(), 3, "{:?}", a.state().decided);
}

#[test]
fn a_day_old_action_is_refused() {
    let mut c = cluster();
    let mut a = Actuator::new(Guardrails::default());
    let now = 1_800_000_000.0;
    a.saw_service("web", now, &[], now);
    let r = a.handle(
        &mut c,
        &decision(
            "web",
            ActionKind::SetReplicas { replicas: 5 },
            now - 86_400.0,
        ),
        now,
    );
    assert!(reason(&r.outcome).starts_with("expired"), "{r:?}");
    assert!(c.applied.is_empty());
    // A fresh one goes through.
    let r = a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 5 }, now - 5.0),
        now,
    );
    assert!(r.outcome.is_applied(), "{r:?}");
}

#[test]
fn future_stamps_switch_no_guard_off() {
    let mut c = cluster();
    let mut a = Actuator::new(Guardrails::default());
    let now = 1_000.0;
    // Old telemetry, then one event stamped a year ahead: the guard still sees old telemetry.
    a.saw_service("web", now - 500.0, &[], now);
    assert!(!a.saw_service("web", now + 3.2e7, &[], now));
    assert_eq!(a.stats.implausible_telemetry, 1);
    let r = a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 3 }, now),
        now,
    );
    assert!(
        reason(&r.outcome).starts_with("hold: telemetry for web is 500 s old"),
        "{r:?}"
    );
    // An action stamped a year ahead is refused, and does not supersede real decisions.
    a.saw_service("web", now, &[], now);
    let r = a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 9 }, now + 3.2e7),
        now,
    );
    assert!(reason(&r.outcome).starts_with("implausible"), "{r:?}");
    let r = a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 3 }, now + 1.0),
        now + 1.0,
    );
    assert!(r.outcome.is_applied(), "{r:?}");
}

#[test]
fn missing_metrics_hold_the_service() {
    let mut c = cluster();
    let mut a = Actuator::new(Guardrails::default());
    a.saw_service(
        "web",
        100.0,
        &["cpu_usage_cores".into(), "rps".into()],
        100.0,
    );
    let r = a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 1 }, 100.0),
        100.0,
    );
    assert_eq!(
        reason(&r.outcome),
        "hold: telemetry for web is missing cpu_usage_cores, rps"
    );
    // Complete telemetry after it lifts the hold.
    a.saw_service("web", 115.0, &[], 115.0);
    let r = a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 1 }, 115.0),
        115.0,
    );
    assert!(r.outcome.is_applied(), "{r:?}");
}

#[test]
fn settings_that_would_switch_a_guard_off_are_refused_and_never_panic() {
    let mut bad = Guardrails {
        min_replicas: 0,
        cooldown_s: f64::NAN,
        stale_after_s: f64::INFINITY,
        reserve_cpu_cores: -1.0,
        action_ttl_s: -5.0,
        ..Guardrails::default()
    };
    bad.per_service.insert("web".into(), (5, 2));
    let problems = bad.problems();
    for key in [
        "min_replicas",
        "cooldown_s",
        "stale_after_s",
        "reserve_cpu_cores",
        "action_ttl_s",
        "per_service.web",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key} not named in {problems:?}"
        );
    }
    assert!(Actuator::open(bad.clone()).is_err());
    assert!(Guardrails::default().problems().is_empty());
    // Built without validation, inverted bounds clamp without a panic.
    let mut inverted = Guardrails {
        min_cpu_limit_m: 900,
        max_cpu_limit_m: 100,
        ..Guardrails::default()
    };
    inverted.per_service.insert("web".into(), (5, 2));
    let mut a = Actuator::new(inverted);
    let mut c = cluster();
    a.saw_service("web", 10.0, &[], 10.0);
    a.handle(
        &mut c,
        &decision("web", ActionKind::SetReplicas { replicas: 4 }, 10.0),
        10.0,
    );
    a.handle(
        &mut c,
        &decision("web", ActionKind::SetCpuLimit { millicores: 300 }, 10.0),
        10.0,
    );
    a.handle(
        &mut c,
        &decision("web", ActionKind::ChangeCpuQuota { delta: 0.5 }, 11.0),
        11.0,
    );
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, b"{not json").unwrap();
    let e = Actuator::open(rails(&path)).unwrap_err().to_string();
    assert!(e.contains("state.json"), "{e}");
}

#[test]
fn a_state_file_that_cannot_be_written_is_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster();
    let mut a = Actuator::open(rails(&dir.path().join("no-such-dir/state.json"))).unwrap();
    feed(
        &mut a,
        &mut c,
        &[
            decision("web", ActionKind::SetReplicas { replicas: 3 }, 100.0),
            decision("db", ActionKind::SetReplicas { replicas: 3 }, 100.0),
        ],
        100.0,
    );
    assert_eq!(c.applied.len(), 2, "decisions go on");
    assert_eq!(a.stats.state_write_failures, 2);
}
