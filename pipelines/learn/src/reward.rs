//! The reward `r_t = −w_slo·SLO_vio − w_slack·Slack − w_over·Overshoot − w_lag·ReplicaLag`, every
//! term in `[0, 1]`, computed from one [`ClusterObservation`] — what the twin gives in training and
//! what the scrapers give in the pipeline, so online learning sees the reward it was trained on.
//!
//! * **SLO_vio** — how far the entry service is past its objectives:
//!   `clamp(max(p95 / L − 1, error_rate / E − 1), 0, 1)`: 0 within the SLO, 1 at twice the latency
//!   objective (or error-rate objective) and beyond.
//! * **Slack** — the share of requested CPU of ready pods that goes unused:
//!   `clamp(1 − Σ usage / Σ (request × ready), 0, 1)`.
//! * **Overshoot** — CPU provisioned beyond need, as a share of all provisioned CPU:
//!   `Σ max(0, request × spec − usage / u*) / Σ (request × spec)`: the desired replicas at their
//!   current request, against what the usage needs at the target utilisation `u*`. Counting CPU,
//!   not replicas, closes the loophole of few replicas with inflated CPU quotas (vertical
//!   over-provisioning); with unchanged requests it is the share of replicas beyond
//!   `usage / (u* · request)`.
//! * **ReplicaLag** — the worst stateful replica lag against a scale:
//!   `clamp(max lag / lag_scale_s, 0, 1)`.

use graphscaler_schemas::ClusterObservation;
use serde::{Deserialize, Serialize};

/// Weights and scales (the weights are `[learn.reward]` in the configuration; the objectives
/// come from `[slo]` and `u*` from `eval.target_utilization`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardConfig {
    /// Weight of SLO_vio.
    pub w_slo: f64,
    /// Weight of Slack.
    pub w_slack: f64,
    /// Weight of Overshoot.
    pub w_overshoot: f64,
    /// Weight of ReplicaLag.
    pub w_replica_lag: f64,
    /// Entry p95 objective, ms.
    pub slo_latency_ms: f64,
    /// Entry error-rate objective.
    pub slo_error_rate: f64,
    /// Utilisation `u*` behind needed replicas.
    pub target_utilization: f64,
    /// Replica lag that counts as 1, s.
    pub lag_scale_s: f64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            w_slo: 5.0,
            w_slack: 1.0,
            w_overshoot: 3.0,
            w_replica_lag: 2.0,
            slo_latency_ms: 200.0,
            slo_error_rate: 0.01,
            target_utilization: 0.7,
            lag_scale_s: 10.0,
        }
    }
}

/// The four terms and the reward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reward {
    /// SLO_vio ∈ [0, 1].
    pub slo_vio: f64,
    /// Slack ∈ [0, 1].
    pub slack: f64,
    /// Overshoot ∈ [0, 1].
    pub overshoot: f64,
    /// ReplicaLag ∈ [0, 1].
    pub replica_lag: f64,
    /// The weighted sum, negated.
    pub value: f64,
}

fn unit(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The reward of one observation.
pub fn reward(obs: &ClusterObservation, c: &RewardConfig) -> Reward {
    let g = &obs.global;
    let slo_vio = unit(
        (g.entry_p95_ms / c.slo_latency_ms - 1.0).max(g.entry_error_rate / c.slo_error_rate - 1.0),
    );
    let (mut used, mut requested, mut over, mut spec) = (0.0, 0.0, 0.0, 0.0);
    for s in &obs.services {
        used += s.cpu_usage_cores;
        requested += s.cpu_request_cores * f64::from(s.replicas_ready);
        let provisioned = s.cpu_request_cores * f64::from(s.replicas_spec);
        let needed = if c.target_utilization > 0.0 {
            s.cpu_usage_cores / c.target_utilization
        } else {
            0.0
        };
        over += (provisioned - needed).max(0.0);
        spec += provisioned;
    }
    let slack = if requested > 0.0 {
        unit(1.0 - used / requested)
    } else {
        0.0
    };
    let overshoot = if spec > 0.0 { unit(over / spec) } else { 0.0 };
    let lag = obs
        .stateful
        .iter()
        .map(|s| s.max_replica_lag_s)
        .fold(0.0, f64::max);
    let replica_lag = unit(lag / c.lag_scale_s);
    let value = -(c.w_slo * slo_vio
        + c.w_slack * slack
        + c.w_overshoot * overshoot
        + c.w_replica_lag * replica_lag);
    Reward {
        slo_vio,
        slack,
        overshoot,
        replica_lag,
        value,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use graphscaler_schemas::{GlobalObs, ServiceObs, StatefulObs};

    fn svc(name: &str, spec: u32, ready: u32, usage: f64) -> ServiceObs {
        ServiceObs {
            name: name.into(),
            replicas_spec: spec,
            replicas_ready: ready,
            replicas_unready: spec - ready,
            cpu_request_cores: 0.1,
            cpu_limit_cores: 0.2,
            mem_request_bytes: 1e8,
            mem_limit_bytes: 2e8,
            cpu_usage_cores: usage,
            mem_working_set_bytes: 5e7,
            rps: 10.0,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms: 3.0,
            error_rate: 0.0,
            stateful: false,
        }
    }

    fn obs(p95: f64, err: f64, services: Vec<ServiceObs>, lag: f64) -> ClusterObservation {
        ClusterObservation {
            time_s: 15.0,
            window_s: 15.0,
            services,
            edges: vec![],
            nodes: vec![],
            pods: vec![],
            stateful: vec![StatefulObs {
                service: "db".into(),
                connected_replicas: 1,
                max_replica_lag_s: lag,
                mean_replica_lag_s: lag,
                hit_ratio: 1.0,
            }],
            global: GlobalObs {
                cluster_cpu_utilization: 0.5,
                slo_violation_rate: 0.0,
                entry_p95_ms: p95,
                entry_error_rate: err,
                entry_rps: 10.0,
            },
        }
    }

    #[test]
    fn terms_by_hand() {
        let c = RewardConfig::default();
        // Within the SLO; 4 ready replicas of 0.1 core using 0.14: slack 0.65; the usage needs
        // 0.14 / 0.7 = 0.2 of the 0.4 cores provisioned, so half is overshoot; lag 5 s of 10.
        let r = reward(&obs(150.0, 0.0, vec![svc("a", 4, 4, 0.14)], 5.0), &c);
        assert_eq!(r.slo_vio, 0.0);
        assert!((r.slack - 0.65).abs() < 1e-12);
        assert!((r.overshoot - 0.5).abs() < 1e-12);
        assert!((r.replica_lag - 0.5).abs() < 1e-12);
        assert!((r.value - -(0.65 + 3.0 * 0.5 + 2.0 * 0.5)).abs() < 1e-12);
        // p95 at 1.5× the objective: 0.5; errors at 3× theirs: capped at 1.
        assert!((reward(&obs(300.0, 0.0, vec![], 0.0), &c).slo_vio - 0.5).abs() < 1e-12);
        assert_eq!(reward(&obs(100.0, 0.03, vec![], 0.0), &c).slo_vio, 1.0);
        // Every term stays in [0, 1], whatever the input (NaN included).
        let r = reward(&obs(f64::NAN, 5.0, vec![svc("b", 1, 1, 9.0)], 1e9), &c);
        for t in [r.slo_vio, r.slack, r.overshoot, r.replica_lag] {
            assert!((0.0..=1.0).contains(&t), "{r:?}");
        }
        assert!(r.value >= -11.0);
        // Doubling the request of the same replicas doubles what is provisioned: overshoot
        // counts CPU, so inflating quotas is no way around it.
        let mut big = svc("a", 4, 4, 0.14);
        big.cpu_request_cores = 0.2;
        let r = reward(&obs(150.0, 0.0, vec![big], 0.0), &c);
        assert!((r.overshoot - 0.75).abs() < 1e-12, "{r:?}");
    }
}
