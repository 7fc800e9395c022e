//! Per-run metrics, computed from the twin's ground truth ([`TickTruth`]) of every tick.
//!
//! Definitions (docs/metrics.md has the reasoning):
//!
//! * **SLO violation %**: share of ticks whose entry-service p95 exceeds the latency SLO or whose
//!   error rate exceeds the error SLO.
//! * **Requests over SLO %**: share of entry requests slower than the latency SLO.
//! * **Slack %**: `Σ (allocated − used)⁺ / Σ allocated` CPU over ticks and services, allocated =
//!   CPU requests of pods bound to nodes.
//! * **Needed replicas** `d = max(1, ⌈demand / (u* · request)⌉)`, demand = CPU the offered load
//!   needs, `u*` = `eval.target_utilization`.
//! * **Scaling lag**: for each service, a shortfall starts at the first tick with
//!   `ready < d`; the *decision* comes at the first tick from then with `spec ≥ d` and the
//!   *recovery* at the first tick with `ready ≥ d`. Lag = recovery − onset = decision delay +
//!   start-up delay. Shortfalls still open at the end are counted as `unrecovered`.
//! * **Overshoot**: mean over ticks and services of `max(spec − d, 0) / d`.
//! * **Cost**: CPU core-seconds allocated plus `caf_memory_weight` × GiB-seconds; **CAF** is a
//!   run's cost over the tuned HPA's on the same scenario and seed.

use graphscaler_twin::TickTruth;
use serde::Serialize;

use crate::stats::quantile;

/// Settings the metrics need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSettings {
    /// `u*`, the utilisation behind needed replicas.
    pub target_utilization: f64,
    /// Weight of memory GiB-seconds in the cost.
    pub memory_weight: f64,
}

/// The metrics of one run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunMetrics {
    /// % of ticks violating the SLO.
    pub slo_violation_pct: f64,
    /// % of entry requests over the latency SLO.
    pub requests_over_slo_pct: f64,
    /// % of entry requests that failed.
    pub error_pct: f64,
    /// Resource slack, %.
    pub slack_pct: f64,
    /// Median scaling lag, s (NaN without shortfalls).
    pub lag_p50_s: f64,
    /// p90 scaling lag, s.
    pub lag_p90_s: f64,
    /// Median decision delay, s.
    pub decision_delay_p50_s: f64,
    /// Median start-up delay, s.
    pub startup_delay_p50_s: f64,
    /// Recovered shortfalls.
    pub shortfalls: usize,
    /// Shortfalls open at the end of the run.
    pub unrecovered: usize,
    /// Mean overshoot, as a fraction.
    pub overshoot: f64,
    /// CPU core-seconds allocated.
    pub cpu_core_seconds: f64,
    /// Cost (core-seconds + weighted memory GiB-seconds).
    pub cost: f64,
    /// Cost relative to the tuned HPA (filled in by the harness).
    pub caf: f64,
    /// Applied actions per hour.
    pub actions_per_hour: f64,
    /// Refused actions.
    pub refused_actions: usize,
    /// Mean of the worst replica lag of stateful services, s.
    pub mean_replica_lag_s: f64,
}

/// Needed replicas of a service at a tick.
pub fn needed_replicas(demand_cores: f64, request_cores: f64, target_util: f64) -> u32 {
    if request_cores <= 0.0 || target_util <= 0.0 {
        return 1;
    }
    ((demand_cores / (target_util * request_cores)) - 1e-9)
        .ceil()
        .max(1.0) as u32
}

#[derive(Debug, Clone, Copy)]
struct Open {
    onset: f64,
    decided: Option<f64>,
}

/// Computes a run's metrics. `applied` and `refused` count the policy's actions.
pub fn compute(
    ticks: &[TickTruth],
    applied: usize,
    refused: usize,
    s: MetricSettings,
) -> RunMetrics {
    let n_ticks = ticks.len().max(1) as f64;
    let violated = ticks.iter().filter(|t| t.slo_violated).count() as f64;
    let requests: f64 = ticks.iter().map(|t| t.entry_requests).sum();
    let over: f64 = ticks.iter().map(|t| t.requests_over_slo).sum();
    let errors: f64 = ticks.iter().map(|t| t.entry_errors).sum();
    let mut alloc_sum = 0.0;
    let mut slack_sum = 0.0;
    let mut core_s = 0.0;
    let mut mem_gib_s = 0.0;
    let mut overshoot_sum = 0.0;
    let mut overshoot_n = 0.0;
    let mut lag_sum = 0.0;
    let n_services = ticks.first().map_or(0, |t| t.services.len());
    let mut open: Vec<Option<Open>> = vec![None; n_services];
    let mut lags = vec![];
    let mut decisions = vec![];
    let mut startups = vec![];
    for t in ticks {
        let mut worst_lag: f64 = 0.0;
        for (i, sv) in t.services.iter().enumerate() {
            alloc_sum += sv.allocated_cpu_cores;
            slack_sum += (sv.allocated_cpu_cores - sv.used_cpu_cores).max(0.0);
            core_s += sv.allocated_cpu_cores * t.window_s;
            mem_gib_s += sv.allocated_mem_bytes / (1024.0 * 1024.0 * 1024.0) * t.window_s;
            worst_lag = worst_lag.max(sv.max_replica_lag_s);
            let d = needed_replicas(
                sv.demand_cpu_cores,
                sv.cpu_request_cores,
                s.target_utilization,
            );
            overshoot_sum += (sv.replicas_spec as f64 - d as f64).max(0.0) / d as f64;
            overshoot_n += 1.0;
            let short = sv.pods_ready < d;
            if let Some(o) = open.get_mut(i) {
                match o {
                    None if short => {
                        *o = Some(Open {
                            onset: t.time_s,
                            decided: (sv.replicas_spec >= d).then_some(t.time_s),
                        });
                    }
                    None => {}
                    Some(ep) => {
                        if ep.decided.is_none() && sv.replicas_spec >= d {
                            ep.decided = Some(t.time_s);
                        }
                        if !short {
                            let decided = ep.decided.unwrap_or(t.time_s);
                            lags.push(t.time_s - ep.onset);
                            decisions.push(decided - ep.onset);
                            startups.push(t.time_s - decided);
                            *o = None;
                        }
                    }
                }
            }
        }
        lag_sum += worst_lag;
    }
    let hours = ticks.iter().map(|t| t.window_s).sum::<f64>() / 3600.0;
    RunMetrics {
        slo_violation_pct: 100.0 * violated / n_ticks,
        requests_over_slo_pct: if requests > 0.0 {
            100.0 * over / requests
        } else {
            0.0
        },
        error_pct: if requests > 0.0 {
            100.0 * errors / requests
        } else {
            0.0
        },
        slack_pct: if alloc_sum > 0.0 {
            100.0 * slack_sum / alloc_sum
        } else {
            0.0
        },
        lag_p50_s: quantile(&lags, 0.5),
        lag_p90_s: quantile(&lags, 0.9),
        decision_delay_p50_s: quantile(&decisions, 0.5),
        startup_delay_p50_s: quantile(&startups, 0.5),
        shortfalls: lags.len(),
        unrecovered: open.iter().filter(|o| o.is_some()).count(),
        overshoot: if overshoot_n > 0.0 {
            overshoot_sum / overshoot_n
        } else {
            0.0
        },
        cpu_core_seconds: core_s,
        cost: core_s + s.memory_weight * mem_gib_s,
        caf: f64::NAN,
        actions_per_hour: if hours > 0.0 {
            applied as f64 / hours
        } else {
            0.0
        },
        refused_actions: refused,
        mean_replica_lag_s: lag_sum / n_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graphscaler_twin::ServiceTruth;

    fn svc(spec: u32, ready: u32, alloc: f64, used: f64, demand: f64) -> ServiceTruth {
        ServiceTruth {
            replicas_spec: spec,
            pods_ready: ready,
            pods_bound: spec,
            pods_unschedulable: 0,
            cpu_request_cores: 0.1,
            allocated_cpu_cores: alloc,
            allocated_mem_bytes: 1024.0 * 1024.0 * 1024.0,
            used_cpu_cores: used,
            demand_cpu_cores: demand,
            max_replica_lag_s: 0.0,
        }
    }

    fn tick(t: f64, violated: bool, s: ServiceTruth) -> TickTruth {
        TickTruth {
            time_s: t,
            window_s: 15.0,
            offered_rps: 10.0,
            entry_requests: 100.0,
            entry_errors: if violated { 10.0 } else { 0.0 },
            requests_over_slo: if violated { 20.0 } else { 0.0 },
            entry_p95_ms: 0.0,
            entry_mean_ms: 0.0,
            slo_violated: violated,
            services: vec![s],
            routes: vec![],
            edges: vec![],
            pods: vec![],
        }
    }

    const S: MetricSettings = MetricSettings {
        target_utilization: 0.5,
        memory_weight: 0.5,
    };

    #[test]
    fn needed_replicas_rounds_up() {
        // 0.3 cores at 50% of 0.1 → 6 replicas; 0.31 → 7; idle → 1.
        assert_eq!(needed_replicas(0.3, 0.1, 0.5), 6);
        assert_eq!(needed_replicas(0.31, 0.1, 0.5), 7);
        assert_eq!(needed_replicas(0.0, 0.1, 0.5), 1);
    }

    #[test]
    fn hand_computed_series() {
        // d per tick (request 0.1, u* 0.5): demand 0.1 → 2; 0.2 → 4; 0.2 → 4; 0.2 → 4; 0.1 → 2.
        let ticks = vec![
            tick(15.0, false, svc(2, 2, 0.2, 0.1, 0.1)), // ok, d=2
            tick(30.0, true, svc(2, 2, 0.2, 0.2, 0.2)),  // short (2<4): onset 30, spec 2 < 4
            tick(45.0, true, svc(4, 2, 0.4, 0.2, 0.2)),  // decided at 45
            tick(60.0, false, svc(4, 4, 0.4, 0.2, 0.2)), // recovered at 60
            tick(75.0, false, svc(4, 4, 0.4, 0.1, 0.1)), // d=2, overshoot (4-2)/2 = 1
        ];
        let m = compute(&ticks, 3, 1, S);
        assert!((m.slo_violation_pct - 40.0).abs() < 1e-12);
        assert!((m.requests_over_slo_pct - 8.0).abs() < 1e-12); // 40 / 500
        assert!((m.error_pct - 4.0).abs() < 1e-12);
        // slack: (0.1 + 0 + 0.2 + 0.2 + 0.3) / (0.2 + 0.2 + 0.4 + 0.4 + 0.4) = 0.8 / 1.6
        assert!((m.slack_pct - 50.0).abs() < 1e-9);
        assert_eq!(m.shortfalls, 1);
        assert_eq!(m.unrecovered, 0);
        assert_eq!(m.lag_p50_s, 30.0);
        assert_eq!(m.decision_delay_p50_s, 15.0);
        assert_eq!(m.startup_delay_p50_s, 15.0);
        // overshoot: ticks give 0, 0, 0, 0, 1 → mean 0.2
        assert!((m.overshoot - 0.2).abs() < 1e-12);
        // core-seconds: 15 · 1.6 = 24; memory 5 ticks · 1 GiB · 15 s = 75 GiB·s, weight 0.5.
        assert!((m.cpu_core_seconds - 24.0).abs() < 1e-9);
        assert!((m.cost - (24.0 + 37.5)).abs() < 1e-9);
        // 3 actions in 75 s = 144 per hour.
        assert!((m.actions_per_hour - 144.0).abs() < 1e-9);
        assert_eq!(m.refused_actions, 1);
    }

    #[test]
    fn open_shortfalls_are_unrecovered() {
        let ticks = vec![
            tick(15.0, false, svc(1, 1, 0.1, 0.1, 0.1)),
            tick(30.0, false, svc(1, 1, 0.1, 0.1, 0.5)),
        ];
        let m = compute(&ticks, 0, 0, S);
        assert_eq!(m.unrecovered, 1);
        assert_eq!(m.shortfalls, 0);
        assert!(m.lag_p50_s.is_nan());
    }
}
