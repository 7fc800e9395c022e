//! The Kubernetes Horizontal Pod Autoscaler (autoscaling/v2, CPU resource metric), ported from
//! upstream `pkg/controller/podautoscaler/horizontal.go` and `replica_calculator.go`.
//!
//! Per service, every sync period (15 s):
//!
//! 1. `currentReplicas = scale.spec.replicas`. If it is 0 autoscaling is off; above
//!    `maxReplicas` or below `minReplicas` the desired count is clamped first.
//! 2. **Replica calculation** (`GetResourceReplicas`): pods are grouped: deleted or failed pods are
//!    ignored; Pending pods are *unready*; pods without a metric are *missing*; within the
//!    `cpuInitializationPeriod` (300 s) after start a pod counts as unready if it is not Ready
//!    or its sample predates Ready + the metric window; after it, a not-Ready pod counts as
//!    unready only if it turned not-Ready within `initialReadinessDelay` (30 s) of starting.
//!    Utilisation = `⌊Σ usage·100 / Σ request⌋` over the pods with metrics (integer percent), and
//!    `usageRatio = utilisation / target`. With no unready or missing pods: within tolerance
//!    (|ratio − 1| ≤ 0.1) keep the current count, else `⌈ratio · readyPods⌉`. Otherwise missing
//!    pods are assumed at 100% of request (or the target, if higher) on a scale-down and 0% on a
//!    scale-up, unready pods at 0% on a scale-up, the ratio is recomputed, and a change of
//!    direction or a result within tolerance keeps the current count.
//! 3. **Stabilisation** (`stabilizeRecommendationWithBehaviors`): the recommendation is bounded
//!    below by the minimum of recommendations within the scale-up window (0 s) and above by the
//!    maximum within the scale-down window (300 s).
//! 4. **Rate limits** (`convertDesiredReplicasWithBehaviorRate`): scale-up to at most
//!    `max(periodStart + 4, ⌈periodStart · 2⌉)` per 15 s (policies Pods 4 / Percent 100,
//!    selectPolicy Max); scale-down to at least `⌊periodStart · (1 − 1.00)⌋` per 15 s; then
//!    `[minReplicas, maxReplicas]`.
//!
//! If no pod has a metric the HPA does nothing (upstream returns an error and skips the
//! rescale) — it never scales on missing data.

use std::collections::HashMap;

use graphscaler_schemas::{Action, ActionKind, ClusterObservation, PodObs, Snapshot};
use serde::{Deserialize, Serialize};

/// HPA settings; the defaults are upstream's (see `[hpa]` in `config/default.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HpaConfig {
    /// `targetCPUUtilizationPercentage` of the plain HPA.
    pub target_cpu_utilization: u32,
    /// The tuned HPA's target, from the sweep.
    pub tuned_target_cpu_utilization: u32,
    /// `minReplicas`.
    pub min_replicas: u32,
    /// `maxReplicas`.
    pub max_replicas: u32,
    /// Controller sync period, s.
    pub sync_period_s: f64,
    /// Tolerance.
    pub tolerance: f64,
    /// CPU initialization period, s.
    pub cpu_initialization_period_s: f64,
    /// Initial readiness delay, s.
    pub initial_readiness_delay_s: f64,
    /// Scale-down stabilization window, s.
    pub scale_down_stabilization_s: f64,
    /// Scale-up stabilization window, s.
    pub scale_up_stabilization_s: f64,
    /// Services not managed.
    pub exclude: Vec<String>,
}

graphscaler_schemas::default_from!(HpaConfig, "hpa");

impl HpaConfig {
    /// What is wrong with `[hpa]`, one message per problem (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        use graphscaler_schemas::defaults::{is_duration, is_duration_or_zero};
        let mut errs = vec![];
        if self.target_cpu_utilization == 0 || self.tuned_target_cpu_utilization == 0 {
            errs.push("hpa targets must be positive percentages".into());
        }
        if self.min_replicas == 0 || self.max_replicas < self.min_replicas {
            errs.push("hpa needs 1 <= min_replicas <= max_replicas".into());
        }
        let tolerance_ok = self.tolerance.is_finite() && self.tolerance >= 0.0;
        if !(is_duration(self.sync_period_s) && tolerance_ok) {
            errs.push("hpa.sync_period_s must be positive and hpa.tolerance non-negative".into());
        }
        for (name, v) in [
            (
                "cpu_initialization_period_s",
                self.cpu_initialization_period_s,
            ),
            ("initial_readiness_delay_s", self.initial_readiness_delay_s),
            (
                "scale_down_stabilization_s",
                self.scale_down_stabilization_s,
            ),
            ("scale_up_stabilization_s", self.scale_up_stabilization_s),
        ] {
            if !is_duration_or_zero(v) {
                errs.push(format!(
                    "hpa.{name} must be a duration of 0 to a year, in seconds, got {v}"
                ));
            }
        }
        errs
    }
}

/// A scaling policy (`behavior.scaleUp.policies[]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalingPolicy {
    /// Add or remove at most `value` pods per `period_s`.
    Pods {
        /// Pods.
        value: i64,
        /// Period, s.
        period_s: f64,
    },
    /// Add or remove at most `value` percent per `period_s`.
    Percent {
        /// Percent.
        value: i64,
        /// Period, s.
        period_s: f64,
    },
}

impl ScalingPolicy {
    fn period(&self) -> f64 {
        match self {
            ScalingPolicy::Pods { period_s, .. } | ScalingPolicy::Percent { period_s, .. } => {
                *period_s
            }
        }
    }
}

/// `behavior.scaleUp` / `behavior.scaleDown` with selectPolicy Max (the default).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    /// Stabilization window, s.
    pub stabilization_s: f64,
    /// Policies.
    pub policies: Vec<ScalingPolicy>,
}

impl ScalingRules {
    /// Upstream's default scale-up rules.
    pub fn default_up(stabilization_s: f64) -> Self {
        Self {
            stabilization_s,
            policies: vec![
                ScalingPolicy::Pods {
                    value: 4,
                    period_s: 15.0,
                },
                ScalingPolicy::Percent {
                    value: 100,
                    period_s: 15.0,
                },
            ],
        }
    }
    /// Upstream's default scale-down rules.
    pub fn default_down(stabilization_s: f64) -> Self {
        Self {
            stabilization_s,
            policies: vec![ScalingPolicy::Percent {
                value: 100,
                period_s: 15.0,
            }],
        }
    }
    fn longest_period(&self) -> f64 {
        self.policies
            .iter()
            .map(ScalingPolicy::period)
            .fold(0.0, f64::max)
    }
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    replicas: i64,
    time: f64,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i64,
    time: f64,
}

/// The HPA controller state for one target (one Deployment).
#[derive(Debug, Clone)]
pub struct HpaController {
    /// Target utilisation, percent of request.
    pub target: u32,
    /// minReplicas.
    pub min_replicas: i64,
    /// maxReplicas.
    pub max_replicas: i64,
    /// Tolerance.
    pub tolerance: f64,
    /// CPU initialization period, s.
    pub cpu_init_s: f64,
    /// Initial readiness delay, s.
    pub readiness_delay_s: f64,
    /// Scale-up behaviour.
    pub up: ScalingRules,
    /// Scale-down behaviour.
    pub down: ScalingRules,
    recs: Vec<Rec>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
}

/// The outcome of one reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// Scale to this many replicas.
    Scale(i64),
    /// Keep the current count.
    Keep,
    /// No metrics: nothing is done.
    NoMetrics,
}

impl HpaController {
    /// A controller with upstream defaults and the given target.
    pub fn new(target: u32, cfg: &HpaConfig) -> Self {
        Self {
            target,
            min_replicas: cfg.min_replicas as i64,
            max_replicas: cfg.max_replicas as i64,
            tolerance: cfg.tolerance,
            cpu_init_s: cfg.cpu_initialization_period_s,
            readiness_delay_s: cfg.initial_readiness_delay_s,
            up: ScalingRules::default_up(cfg.scale_up_stabilization_s),
            down: ScalingRules::default_down(cfg.scale_down_stabilization_s),
            recs: vec![],
            up_events: vec![],
            down_events: vec![],
        }
    }

    fn within_tolerance(&self, ratio: f64) -> bool {
        (1.0 - ratio).abs() <= self.tolerance
    }

    /// `GetResourceReplicas`: the metric's recommendation, before behaviours.
    pub fn replica_calculation(&self, current: i64, pods: &[&PodObs], now: f64) -> Option<i64> {
        if pods.is_empty() {
            return None;
        }
        let mut ready_count = 0i64;
        let mut unready = Vec::new();
        let mut missing = Vec::new();
        let mut metrics: Vec<(f64, f64)> = Vec::new(); // (usage, request)
        for p in pods {
            // Ignored pods: deleted or failed. The twin removes deleted pods at once and has no
            // failed phase, so nothing is ignored here.
            if p.phase == graphscaler_schemas::PodPhase::Pending || p.node.is_none() {
                unready.push(*p);
                continue;
            }
            let Some(usage) = p.cpu_usage_cores.filter(|u| u.is_finite()) else {
                missing.push(*p);
                continue;
            };
            let start = p.start_time_s.unwrap_or(now);
            let is_unready = if start + self.cpu_init_s > now {
                match (p.ready, p.ready_transition_s) {
                    (true, Some(rt)) => p.metric_time_s.unwrap_or(now) < rt + p.metric_window_s,
                    _ => true,
                }
            } else {
                // Ready pods are ready; a not-Ready one counts as unready only if it never got
                // ready since the start (its condition changed within the initial delay).
                !p.ready && start + self.readiness_delay_s > p.ready_transition_s.unwrap_or(start)
            };
            if is_unready {
                unready.push(*p);
            } else {
                ready_count += 1;
                metrics.push((usage, p.cpu_request_cores));
            }
        }
        if metrics.is_empty() {
            return None;
        }
        let ratio_of = |m: &[(f64, f64)]| -> f64 {
            let usage: f64 = m.iter().map(|x| x.0).sum();
            let req: f64 = m.iter().map(|x| x.1).sum();
            // Upstream works in milli-units and integer percent.
            let usage_m = (usage * 1000.0).round() as i64;
            let req_m = (req * 1000.0).round() as i64;
            if req_m == 0 {
                return 0.0;
            }
            let util = (usage_m * 100) / req_m;
            util as f64 / self.target as f64
        };
        let usage_ratio = ratio_of(&metrics);
        let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
        if !scale_up_with_unready && missing.is_empty() {
            if self.within_tolerance(usage_ratio) {
                return Some(current);
            }
            return Some((usage_ratio * ready_count as f64).ceil() as i64);
        }
        if !missing.is_empty() {
            let fallback = if usage_ratio < 1.0 {
                (100u32.max(self.target)) as f64 / 100.0
            } else {
                0.0
            };
            for p in &missing {
                metrics.push((p.cpu_request_cores * fallback, p.cpu_request_cores));
            }
        }
        if scale_up_with_unready {
            for p in &unready {
                metrics.push((0.0, p.cpu_request_cores));
            }
        }
        let new_ratio = ratio_of(&metrics);
        if self.within_tolerance(new_ratio)
            || (usage_ratio < 1.0 && new_ratio > 1.0)
            || (usage_ratio > 1.0 && new_ratio < 1.0)
        {
            return Some(current);
        }
        let new_replicas = (new_ratio * metrics.len() as f64).ceil() as i64;
        if (new_ratio < 1.0 && new_replicas > current)
            || (new_ratio > 1.0 && new_replicas < current)
        {
            return Some(current);
        }
        Some(new_replicas)
    }

    /// One reconcile at time `now` for a target with `current` = `spec.replicas` and its pods.
    pub fn reconcile(&mut self, current: i64, pods: &[&PodObs], now: f64) -> Reconcile {
        if current == 0 && self.min_replicas != 0 {
            return Reconcile::Keep; // autoscaling disabled
        }
        let desired = if current > self.max_replicas {
            self.max_replicas
        } else if current < self.min_replicas {
            self.min_replicas
        } else {
            let Some(metric_desired) = self.replica_calculation(current, pods, now) else {
                return Reconcile::NoMetrics;
            };
            self.normalize(current, metric_desired, now)
        };
        if desired != current {
            self.store_event(current, desired, now);
            Reconcile::Scale(desired)
        } else {
            Reconcile::Keep
        }
    }

    /// `normalizeDesiredReplicasWithBehaviors`: stabilisation then rate limits.
    pub fn normalize(&mut self, current: i64, desired: i64, now: f64) -> i64 {
        let stabilized = self.stabilize(current, desired, now);
        self.rate_limit(current, stabilized, now)
    }

    fn stabilize(&mut self, current: i64, desired: i64, now: f64) -> i64 {
        let up_cutoff = now - self.up.stabilization_s;
        let down_cutoff = now - self.down.stabilization_s;
        let mut up_rec = desired;
        let mut down_rec = desired;
        let mut old = None;
        for (i, r) in self.recs.iter().enumerate() {
            if r.time > up_cutoff {
                up_rec = up_rec.min(r.replicas);
            }
            if r.time > down_cutoff {
                down_rec = down_rec.max(r.replicas);
            }
            if r.time < up_cutoff && r.time < down_cutoff {
                old = Some(i);
            }
        }
        let mut rec = current;
        if rec < up_rec {
            rec = up_rec;
        }
        if rec > down_rec {
            rec = down_rec;
        }
        let new = Rec {
            replicas: desired,
            time: now,
        };
        match old {
            Some(i) => self.recs[i] = new,
            None => self.recs.push(new),
        }
        rec
    }

    fn change_in_period(events: &[ScaleEvent], period: f64, now: f64) -> i64 {
        let cutoff = now - period;
        events
            .iter()
            .filter(|e| e.time > cutoff)
            .map(|e| e.change)
            .sum()
    }

    fn rate_limit(&self, current: i64, desired: i64, now: f64) -> i64 {
        if desired > current {
            let mut limit = i64::MIN;
            for p in &self.up.policies {
                let added = Self::change_in_period(&self.up_events, p.period(), now);
                let deleted = Self::change_in_period(&self.down_events, p.period(), now);
                let start = current - added + deleted;
                let proposed = match *p {
                    ScalingPolicy::Pods { value, .. } => start + value,
                    ScalingPolicy::Percent { value, .. } => {
                        (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64
                    }
                };
                limit = limit.max(proposed);
            }
            let limit = limit.max(current);
            let max_allowed = self.max_replicas.min(limit);
            desired.min(max_allowed)
        } else if desired < current {
            let mut limit = i64::MAX;
            for p in &self.down.policies {
                let added = Self::change_in_period(&self.up_events, p.period(), now);
                let deleted = Self::change_in_period(&self.down_events, p.period(), now);
                let start = current - added + deleted;
                let proposed = match *p {
                    ScalingPolicy::Pods { value, .. } => start - value,
                    ScalingPolicy::Percent { value, .. } => {
                        (start as f64 * (1.0 - value as f64 / 100.0)) as i64
                    }
                };
                limit = limit.min(proposed);
            }
            let limit = limit.min(current);
            let min_allowed = self.min_replicas.max(limit);
            desired.max(min_allowed)
        } else {
            desired
        }
    }

    fn store_event(&mut self, prev: i64, new: i64, now: f64) {
        if new > prev {
            let keep = self.up.longest_period();
            self.up_events.retain(|e| e.time > now - keep);
            self.up_events.push(ScaleEvent {
                change: new - prev,
                time: now,
            });
        } else {
            let keep = self.down.longest_period();
            self.down_events.retain(|e| e.time > now - keep);
            self.down_events.push(ScaleEvent {
                change: prev - new,
                time: now,
            });
        }
    }
}

/// The HPA as a policy over every managed service.
#[derive(Debug, Clone)]
pub struct Hpa {
    cfg: HpaConfig,
    target: u32,
    controllers: HashMap<String, HpaController>,
    last_sync: Option<f64>,
}

impl Hpa {
    /// An HPA with `target` percent on every service not excluded.
    pub fn new(target: u32, cfg: &HpaConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            target,
            controllers: HashMap::new(),
            last_sync: None,
        }
    }

    /// The target in percent.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Reconciles every managed service that is due; returns the scale actions.
    pub fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action> {
        let mut by_service: HashMap<&str, Vec<&PodObs>> = HashMap::new();
        for p in &obs.pods {
            by_service.entry(p.service.as_str()).or_default().push(p);
        }
        let targets = obs.services.iter().map(|s| {
            let pods = by_service
                .get(s.name.as_str())
                .map_or(&[][..], Vec::as_slice);
            (s.name.as_str(), s.replicas_spec, pods)
        });
        self.reconcile_all(obs.time_s, targets)
    }

    /// The same controller on a [`Snapshot`], as the pipeline's policy stage runs it: a snapshot
    /// carries per service the spec and ready replicas and μ's RUE (used ÷ requested CPU of the
    /// ready pods), not per-pod samples. Each ready pod is given the service's mean usage, and
    /// each missing one counts as not yet ready, so the upstream calculation sees the same
    /// utilisation ratio it would see from the pods when their usage is even.
    ///
    /// A service whose features are unknown (a metric missing, [`Snapshot::service_missing`])
    /// is held, as upstream's controller holds a target whose metrics it cannot get; a snapshot
    /// whose parts disagree ([`Snapshot::validate`]) gets no action at all.
    pub fn decide_snapshot(&mut self, snap: &Snapshot) -> Vec<Action> {
        if let Err(e) = snap.validate() {
            tracing::warn!(error = %e, "the HPA got a snapshot whose parts disagree; no action");
            return vec![];
        }
        let long_ago = snap.time_s - 1e6;
        let pods: Vec<Vec<PodObs>> = snap
            .services
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let spec = snap.replicas_spec.get(i).copied().unwrap_or(0);
                let ready = snap.replicas_ready.get(i).copied().unwrap_or(0);
                let rue = f64::from(snap.service_x[i][4]);
                (0..spec.max(ready))
                    .map(|k| {
                        let mut p = PodObs::placed(&format!("{name}-{k}"), name, None, 1.0);
                        if k < ready {
                            p.node = Some("snapshot".into());
                            p.phase = graphscaler_schemas::PodPhase::Running;
                            p.ready = true;
                            p.start_time_s = Some(long_ago);
                            p.ready_transition_s = Some(long_ago);
                            p.cpu_usage_cores = Some(rue);
                            p.metric_time_s = Some(snap.time_s);
                        }
                        p
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<Vec<&PodObs>> = pods.iter().map(|v| v.iter().collect()).collect();
        let targets = snap
            .services
            .iter()
            .enumerate()
            .filter(|(i, _)| snap.service_known(*i))
            .map(|(i, name)| {
                (
                    name.as_str(),
                    snap.replicas_spec.get(i).copied().unwrap_or(0),
                    refs[i].as_slice(),
                )
            });
        self.reconcile_all(snap.time_s, targets)
    }

    fn reconcile_all<'a>(
        &mut self,
        now: f64,
        targets: impl Iterator<Item = (&'a str, u32, &'a [&'a PodObs])>,
    ) -> Vec<Action> {
        if let Some(t) = self.last_sync {
            if now - t < self.cfg.sync_period_s - 1e-6 {
                return vec![];
            }
        }
        self.last_sync = Some(now);
        let mut actions = vec![];
        for (name, spec, pods) in targets {
            if self.cfg.exclude.iter().any(|x| x == name) {
                continue;
            }
            let ctl = self
                .controllers
                .entry(name.to_string())
                .or_insert_with(|| HpaController::new(self.target, &self.cfg));
            if let Reconcile::Scale(n) = ctl.reconcile(i64::from(spec), pods, now) {
                actions.push(Action::new(
                    name.to_string(),
                    ActionKind::SetReplicas {
                        replicas: n.max(0) as u32,
                    },
                ));
            }
        }
        actions
    }
}
