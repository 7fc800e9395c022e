//! The HPA against upstream's algorithm on written-out cases. Cases marked "upstream" restate
//! tests of kubernetes/kubernetes `pkg/controller/podautoscaler/replica_calculator_test.go`
//! (same pods, requests, usage and target, same expected replicas); the rest are worked by hand
//! from `horizontal.go`.

#![allow(clippy::unwrap_used)]

use graphscaler_policy::hpa::{HpaConfig, HpaController, Reconcile};
use graphscaler_schemas::{PodObs, PodPhase};

fn cfg() -> HpaConfig {
    HpaConfig::default()
}

const NOW: f64 = 10_000.0;

/// A Running, Ready pod started long ago with `usage_m` millicores of `request_m`.
fn pod(name: &str, request_m: f64, usage_m: Option<f64>) -> PodObs {
    PodObs {
        name: name.into(),
        service: "svc".into(),
        node: Some("n".into()),
        phase: PodPhase::Running,
        ready: true,
        start_time_s: Some(0.0),
        ready_transition_s: Some(10.0),
        cpu_request_cores: request_m / 1000.0,
        cpu_limit_cores: None,
        cpu_usage_cores: usage_m.map(|u| u / 1000.0),
        metric_time_s: usage_m.map(|_| NOW),
        metric_window_s: 15.0,
    }
}

fn calc(target: u32, current: i64, pods: &[PodObs]) -> Option<i64> {
    let c = HpaController::new(target, &cfg());
    let refs: Vec<&PodObs> = pods.iter().collect();
    c.replica_calculation(current, &refs, NOW)
}

#[test]
fn upstream_scale_up() {
    // TestReplicaCalcScaleUp: 3 pods, 1.0 core requests, usage 300/500/700 m, target 30% → 5.
    let pods = [
        pod("a", 1000.0, Some(300.0)),
        pod("b", 1000.0, Some(500.0)),
        pod("c", 1000.0, Some(700.0)),
    ];
    assert_eq!(calc(30, 3, &pods), Some(5));
}

#[test]
fn upstream_scale_up_with_an_unready_pod() {
    // TestReplicaCalcScaleUpUnreadyLessScale: readiness [false, true, true], same usage → 4.
    let mut pods = [
        pod("a", 1000.0, Some(300.0)),
        pod("b", 1000.0, Some(500.0)),
        pod("c", 1000.0, Some(700.0)),
    ];
    pods[0].ready = false;
    pods[0].ready_transition_s = None;
    pods[0].start_time_s = Some(NOW - 60.0); // within the CPU initialization period
    assert_eq!(calc(30, 3, &pods), Some(4));
}

#[test]
fn upstream_scale_down() {
    // TestReplicaCalcScaleDown: 5 pods, usage 100/300/500/250/250 m of 1.0, target 50% → 3.
    let pods: Vec<PodObs> = [100.0, 300.0, 500.0, 250.0, 250.0]
        .iter()
        .enumerate()
        .map(|(i, u)| pod(&format!("p{i}"), 1000.0, Some(*u)))
        .collect();
    assert_eq!(calc(50, 5, &pods), Some(3));
}

#[test]
fn upstream_scale_down_excludes_unready_and_unscheduled_pods() {
    // TestReplicaCalcScaleDownExcludeUnreadyPods: readiness [T, T, T, F, F] → 2 (utilisation 30).
    let mut pods: Vec<PodObs> = [100.0, 300.0, 500.0, 250.0, 250.0]
        .iter()
        .enumerate()
        .map(|(i, u)| pod(&format!("p{i}"), 1000.0, Some(*u)))
        .collect();
    for p in &mut pods[3..] {
        p.ready = false;
        p.ready_transition_s = None;
    }
    assert_eq!(calc(50, 5, &pods), Some(2));
    // TestReplicaCalcScaleDownExcludeUnscheduledPods: one Running pod at 100 m, four Pending → 1.
    let mut pods: Vec<PodObs> = (0..5)
        .map(|i| pod(&format!("p{i}"), 1000.0, None))
        .collect();
    pods[0].cpu_usage_cores = Some(0.1);
    pods[0].metric_time_s = Some(NOW);
    for p in &mut pods[1..] {
        p.phase = PodPhase::Pending;
        p.node = None;
        p.ready = false;
        p.ready_transition_s = None;
        p.start_time_s = None;
    }
    assert_eq!(calc(50, 5, &pods), Some(1));
}

#[test]
fn upstream_tolerance() {
    // TestReplicaCalcTolerance: requests 0.9/1.0/1.1 cores, usage 1010/1030/1020 m, target 100%:
    // utilisation 102% is within 10% → keep 3.
    let pods = [
        pod("a", 900.0, Some(1010.0)),
        pod("b", 1000.0, Some(1030.0)),
        pod("c", 1100.0, Some(1020.0)),
    ];
    assert_eq!(calc(100, 3, &pods), Some(3));
    // Just outside: 112% → ceil(1.12 · 3) = 4.
    let pods = [
        pod("a", 1000.0, Some(1120.0)),
        pod("b", 1000.0, Some(1120.0)),
        pod("c", 1000.0, Some(1120.0)),
    ];
    assert_eq!(calc(100, 3, &pods), Some(4));
}

#[test]
fn missing_metrics_count_against_the_direction_of_change() {
    // Scale-down: 3 of 4 pods report 100 m of 1.0 at target 50 (ratio 0.2); the missing pod is
    // taken at 100% of its request: (300 + 1000)/4000 = 32% → ratio 0.64 → ceil(2.56) = 3.
    let pods = [
        pod("a", 1000.0, Some(100.0)),
        pod("b", 1000.0, Some(100.0)),
        pod("c", 1000.0, Some(100.0)),
        pod("d", 1000.0, None),
    ];
    assert_eq!(calc(50, 4, &pods), Some(3));
    // Scale-up: 900 m each (ratio 1.8); the missing pod at 0: 2700/4000 = 67% → ceil(5.36) = 6.
    let pods = [
        pod("a", 1000.0, Some(900.0)),
        pod("b", 1000.0, Some(900.0)),
        pod("c", 1000.0, Some(900.0)),
        pod("d", 1000.0, None),
    ];
    assert_eq!(calc(50, 4, &pods), Some(6));
    // A change of direction once missing pods are filled in keeps the current count:
    // 600 m of 1.0 at 50% → ratio 1.2 up; with the missing pod at 0, 30% → down → keep 2.
    let pods = [pod("a", 1000.0, Some(600.0)), pod("b", 1000.0, None)];
    assert_eq!(calc(50, 2, &pods), Some(2));
}

#[test]
fn no_metrics_means_no_action() {
    let pods = [pod("a", 1000.0, None), pod("b", 1000.0, None)];
    assert_eq!(calc(50, 2, &pods), None);
    let mut c = HpaController::new(50, &cfg());
    let refs: Vec<&PodObs> = pods.iter().collect();
    assert_eq!(c.reconcile(2, &refs, NOW), Reconcile::NoMetrics);
}

#[test]
fn samples_from_before_readiness_are_unready_during_initialization() {
    // Within the CPU initialization period (started 60 s ago) a sample counts only if it was
    // taken at least one metric window (15 s) after the pod turned Ready. Ready 5 s ago: the
    // sample at NOW predates NOW − 5 + 15, so the pod is unready.
    let mut fresh = pod("a", 1000.0, Some(2000.0));
    fresh.start_time_s = Some(NOW - 60.0);
    fresh.ready_transition_s = Some(NOW - 5.0);
    let old = pod("b", 1000.0, Some(500.0));
    // Only b counts (ratio 1.0 at target 50 → exactly 1.0 → keep).
    assert_eq!(calc(50, 2, &[fresh.clone(), old.clone()]), Some(2));
    fresh.ready_transition_s = Some(NOW - 55.0);
    // Ready 55 s ago: NOW ≥ NOW − 55 + 15, the sample counts; now both count: (2000 + 500) / 2000 = 125% → ratio 2.5 → 5.
    assert_eq!(calc(50, 2, &[fresh, old]), Some(5));
}

#[test]
fn scale_up_is_rate_limited_by_the_default_policies() {
    let mut c = HpaController::new(50, &cfg());
    // 1 → 10 wanted: max(1 + 4, 1 · 2) = 5.
    assert_eq!(c.normalize(1, 10, 0.0), 5);
    // Record it as the controller does, then 15 s later the period has rolled: max(5 + 4, 10).
    let mut c = HpaController::new(50, &cfg());
    let pods: Vec<PodObs> = (0..1)
        .map(|i| pod(&format!("p{i}"), 100.0, Some(1000.0)))
        .collect();
    let refs: Vec<&PodObs> = pods.iter().collect();
    assert_eq!(c.reconcile(1, &refs, 0.0), Reconcile::Scale(5));
    let pods: Vec<PodObs> = (0..5)
        .map(|i| pod(&format!("p{i}"), 100.0, Some(200.0)))
        .collect();
    let refs: Vec<&PodObs> = pods.iter().collect();
    // 5 pods at 200% of request, target 50 → ratio 4 → 20 wanted; limited to max(9, 10) = 10.
    assert_eq!(c.reconcile(5, &refs, 15.0), Reconcile::Scale(10));
    // Within the same period (a 5 s resync), the 5 added pods count: start = 10 − 5 = 5 → 10.
    let mut c2 = c.clone();
    let pods: Vec<PodObs> = (0..10)
        .map(|i| pod(&format!("p{i}"), 100.0, Some(200.0)))
        .collect();
    let refs: Vec<&PodObs> = pods.iter().collect();
    assert_eq!(c2.reconcile(10, &refs, 20.0), Reconcile::Keep);
    // maxReplicas caps it.
    assert_eq!(c.reconcile(10, &refs, 30.0), Reconcile::Scale(20));
    assert_eq!(c.reconcile(20, &refs, 45.0), Reconcile::Scale(40));
    assert_eq!(c.reconcile(40, &refs, 60.0), Reconcile::Keep);
}

#[test]
fn scale_down_waits_out_the_stabilization_window() {
    let mut c = HpaController::new(50, &cfg());
    let busy: Vec<PodObs> = (0..10)
        .map(|i| pod(&format!("p{i}"), 100.0, Some(50.0)))
        .collect();
    let idle: Vec<PodObs> = (0..10)
        .map(|i| pod(&format!("p{i}"), 100.0, Some(10.0)))
        .collect();
    let busy: Vec<&PodObs> = busy.iter().collect();
    let idle: Vec<&PodObs> = idle.iter().collect();
    assert_eq!(c.reconcile(10, &busy, 0.0), Reconcile::Keep);
    // Idle from t = 15: 10% of request at target 50 → 2 wanted, but the window remembers 10.
    let mut t = 15.0;
    while t < 300.0 {
        assert_eq!(c.reconcile(10, &idle, t), Reconcile::Keep, "t = {t}");
        t += 15.0;
    }
    // At t = 300 the recommendation of t = 0 is no longer after the cutoff (300 − 300 = 0).
    assert_eq!(c.reconcile(10, &idle, 300.0), Reconcile::Scale(2));
}

#[test]
fn out_of_range_counts_are_clamped_first() {
    let mut c = HpaController::new(50, &cfg());
    let pods: Vec<PodObs> = (0..45)
        .map(|i| pod(&format!("p{i}"), 100.0, Some(50.0)))
        .collect();
    let refs: Vec<&PodObs> = pods.iter().collect();
    assert_eq!(c.reconcile(45, &refs, 0.0), Reconcile::Scale(40));
    // spec.replicas = 0 disables autoscaling.
    assert_eq!(c.reconcile(0, &refs, 15.0), Reconcile::Keep);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// One reconcile never leaves [minReplicas, maxReplicas] (from an in-range count) and
        /// never adds more than the default scale-up policies allow in one period.
        #[test]
        fn reconcile_respects_bounds_and_rates(
            current in 1i64..=40,
            usages in proptest::collection::vec(proptest::option::weighted(0.9, 0.0f64..3000.0), 1..40),
            target in 10u32..=100,
        ) {
            let pods: Vec<PodObs> = usages.iter().enumerate().map(|(i, u)| pod(&format!("p{i}"), 100.0, *u)).collect();
            let refs: Vec<&PodObs> = pods.iter().collect();
            let mut c = HpaController::new(target, &cfg());
            match c.reconcile(current, &refs, NOW) {
                Reconcile::Scale(n) => {
                    prop_assert!((1..=40).contains(&n), "{n}");
                    prop_assert!(n <= (current + 4).max(current * 2), "{current} -> {n}");
                }
                Reconcile::Keep => {}
                Reconcile::NoMetrics => prop_assert!(usages.iter().all(Option::is_none)),
            }
        }
    }
}
