//! The reward `r_t = −w_slo·SLO_vio − w_slack·Slack − w_over·Overshoot − w_lag·ReplicaLag`, every
//! term in `[0, 1]`, computed from one [`ClusterObservation`] — what the twin gives in training and
//! what the scrapers give in the pipeline, so online learning sees the reward it was trained on.
//!
//! * **SLO_vio** — whether, and how far, the entry service is past its objectives. With the excess
//!   `x = clamp(max(p95 / L − 1, error_rate / E − 1), 0, 1)` (0 within the SLO, 1 at twice the
//!   latency or error-rate objective and beyond) and the step `σ ∈ [0, 1]`:
//!   `SLO_vio = 0` within the SLO and `σ + (1 − σ)·x` past it. `σ = 0` grades the excess only;
//!   `σ = 1` is the indicator the evaluation's SLO violation % counts (every violating tick in
//!   full, however small the excess).
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

use graphscaler_schemas::{ClusterObservation, Snapshot};
use serde::{Deserialize, Serialize};

/// Weights and scales (the weights are `[learn.reward]` in the configuration; the objectives
/// come from `[slo]` and `u*` from `eval.target_utilization`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardConfig {
    /// Weight of SLO_vio.
    pub w_slo: f64,
    /// SLO_vio's step at the objective, σ ∈ [0, 1].
    pub slo_step: f64,
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
    /// `[learn.reward]` with `[slo]`'s objectives and `eval.target_utilization`, from
    /// `config/default.toml`.
    fn default() -> Self {
        use graphscaler_schemas::defaults::section;
        section::<crate::config::RewardWeights>("learn.reward").reward(
            section("slo.latency_ms"),
            section("slo.error_rate"),
            section("eval.target_utilization"),
        )
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

/// What the reward reads, per service.
#[derive(Debug, Clone, Copy)]
struct ServiceUse {
    usage: f64,
    request: f64,
    ready: f64,
    spec: f64,
}

fn terms(
    p95_ms: f64,
    error_rate: f64,
    services: impl Iterator<Item = ServiceUse>,
    lag_s: f64,
    c: &RewardConfig,
) -> Reward {
    let excess = (p95_ms / c.slo_latency_ms - 1.0).max(error_rate / c.slo_error_rate - 1.0);
    let slo_vio = if excess.is_finite() && excess > 0.0 {
        let step = unit(c.slo_step);
        step + (1.0 - step) * unit(excess)
    } else {
        0.0
    };
    let (mut used, mut requested, mut over, mut spec) = (0.0, 0.0, 0.0, 0.0);
    for s in services {
        used += s.usage;
        requested += s.request * s.ready;
        let provisioned = s.request * s.spec;
        let needed = if c.target_utilization > 0.0 {
            s.usage / c.target_utilization
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
    let replica_lag = unit(lag_s / c.lag_scale_s);
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

/// The reward of one observation.
pub fn reward(obs: &ClusterObservation, c: &RewardConfig) -> Reward {
    let lag = obs
        .stateful
        .iter()
        .map(|s| s.max_replica_lag_s)
        .fold(0.0, f64::max);
    terms(
        obs.global.entry_p95_ms,
        obs.global.entry_error_rate,
        obs.services.iter().map(|s| ServiceUse {
            usage: s.cpu_usage_cores,
            request: s.cpu_request_cores,
            ready: f64::from(s.replicas_ready),
            spec: f64::from(s.replicas_spec),
        }),
        lag,
        c,
    )
}

/// Why a snapshot has no reward.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardError {
    /// The snapshot does not carry what the reward reads (written before the field existed,
    /// or by a graph job without the global scalars).
    #[error("the snapshot at t = {time_s} s has no {what}: no reward, no transition")]
    Missing {
        /// The snapshot's time.
        time_s: f64,
        /// The missing field.
        what: &'static str,
    },
    /// A figure the reward reads is NaN or infinite.
    #[error("the snapshot at t = {time_s} s has a non-finite {what}: no reward, no transition")]
    NotFinite {
        /// The snapshot's time.
        time_s: f64,
        /// Which figure.
        what: &'static str,
    },
}

/// The reward of one snapshot — the same terms as [`reward`] of the observation it came from
/// (up to `f32` rounding): the policy stage's online learning sees the reward training used.
/// CPU usage per service is `rue × request × max(ready, 1)` (the `rue` feature's definition);
/// the replica lag is the largest `replica_lag_s` feature.
pub fn reward_of_snapshot(snap: &Snapshot, c: &RewardConfig) -> Result<Reward, RewardError> {
    let missing = |what| RewardError::Missing {
        time_s: snap.time_s,
        what,
    };
    let not_finite = |what| RewardError::NotFinite {
        time_s: snap.time_s,
        what,
    };
    let [p95, err] = snap.entry.ok_or(missing("entry p95 / error rate"))?;
    if !p95.is_finite() || !err.is_finite() {
        return Err(not_finite("entry p95 / error rate"));
    }
    let n = snap.services.len();
    if snap.cpu_request_cores.len() != n
        || snap.replicas_ready.len() != n
        || snap.replicas_spec.len() != n
        || snap.service_x.len() != n
    {
        return Err(missing(
            "CPU request, replicas or features for every service",
        ));
    }
    let mut lag = 0.0f64;
    let mut uses = Vec::with_capacity(n);
    for i in 0..n {
        let x = &snap.service_x[i];
        let (rue, lag_i, req) = (
            f64::from(x[4]),
            f64::from(x[5]),
            f64::from(snap.cpu_request_cores[i]),
        );
        if !rue.is_finite() || !lag_i.is_finite() || !req.is_finite() {
            return Err(not_finite("service CPU use, request or replica lag"));
        }
        lag = lag.max(lag_i);
        let ready = f64::from(snap.replicas_ready[i]);
        uses.push(ServiceUse {
            usage: rue * req * ready.max(1.0),
            request: req,
            ready,
            spec: f64::from(snap.replicas_spec[i]),
        });
    }
    Ok(terms(
        f64::from(p95),
        f64::from(err),
        uses.into_iter(),
        lag,
        c,
    ))
}

#[cfg(test)]
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
            missing: vec![],
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
        // Graded (σ = 0): p95 at 1.5× the objective is 0.5; errors at 3× theirs are capped at 1.
        let graded = RewardConfig { slo_step: 0.0, ..c };
        assert!((reward(&obs(300.0, 0.0, vec![], 0.0), &graded).slo_vio - 0.5).abs() < 1e-12);
        assert_eq!(reward(&obs(100.0, 0.03, vec![], 0.0), &graded).slo_vio, 1.0);
        // The indicator (σ = 1, the default): 1 ms over the objective counts in full, and the
        // objective itself is within it.
        assert_eq!(reward(&obs(201.0, 0.0, vec![], 0.0), &c).slo_vio, 1.0);
        assert_eq!(reward(&obs(200.0, 0.0, vec![], 0.0), &c).slo_vio, 0.0);
        // Between: σ = 0.5 at 1.5× the objective is 0.5 + 0.5 · 0.5.
        let half = RewardConfig { slo_step: 0.5, ..c };
        assert!((reward(&obs(300.0, 0.0, vec![], 0.0), &half).slo_vio - 0.75).abs() < 1e-12);
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

    #[test]
    fn the_margin_tightens_the_objectives_the_reward_counts() {
        let w = crate::config::RewardWeights {
            w_slo: 5.0,
            slo_step: 1.0,
            slo_margin: 0.25,
            w_slack: 1.0,
            w_overshoot: 3.0,
            w_replica_lag: 2.0,
            lag_scale_s: 10.0,
        };
        let c = w.reward(200.0, 0.01, 0.7);
        assert_eq!((c.slo_latency_ms, c.slo_error_rate), (150.0, 0.0075));
        // 160 ms is within the SLO but past the reward's 150 ms; so is an error rate of 0.8 %.
        assert_eq!(reward(&obs(160.0, 0.0, vec![], 0.0), &c).slo_vio, 1.0);
        assert_eq!(reward(&obs(100.0, 0.008, vec![], 0.0), &c).slo_vio, 1.0);
        assert_eq!(reward(&obs(150.0, 0.0, vec![], 0.0), &c).slo_vio, 0.0);
        // Without a margin the objectives are [slo]'s.
        let plain = crate::config::RewardWeights {
            slo_margin: 0.0,
            ..w
        }
        .reward(200.0, 0.01, 0.7);
        assert_eq!(reward(&obs(160.0, 0.0, vec![], 0.0), &plain).slo_vio, 0.0);
    }
}
