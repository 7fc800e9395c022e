//! The twin's configuration. The defaults live in one place, the `[twin]` and `[slo]` sections
//! of `config/default.toml`, which is compiled in; every field is documented there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TwinError};
use crate::topology::{ServiceSpec, Topology, UserTask};

pub use graphscaler_schemas::defaults::DEFAULT_TOML;

/// Service-level objectives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Entry-service p95 objective, ms.
    pub latency_ms: f64,
    /// Entry-service error-rate objective.
    pub error_rate: f64,
    /// Ticks behind the twin's `slo_violation_rate` signal.
    pub window_ticks: usize,
}

/// A node type of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTypeConfig {
    /// Instance type name.
    pub name: String,
    /// CPU model.
    pub cpu_model: String,
    /// Per-core speed relative to 1.0 (request CPU costs are given at 1.0).
    pub speed: f64,
    /// Allocatable CPU, millicores.
    pub allocatable_cpu_m: f64,
    /// Allocatable memory, MiB.
    pub allocatable_mem_mi: f64,
    /// Nodes of this type.
    pub count: u32,
}

/// The cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether the API server has the `pods/{name}/resize` subresource (in-place pod resize,
    /// Kubernetes 1.33 and later). Without it a CPU change is a pod-template patch: a rolling
    /// restart.
    #[serde(default = "yes")]
    pub in_place_resize: bool,
    /// Node types, in the order node names are numbered.
    pub node_types: Vec<NodeTypeConfig>,
}

fn yes() -> bool {
    true
}

/// Bounds on actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Fewest replicas of any service.
    pub min_replicas: u32,
    /// Most replicas of any service.
    pub max_replicas: u32,
    /// Smallest CPU limit, millicores.
    pub min_cpu_limit_m: f64,
    /// Largest CPU limit, millicores.
    pub max_cpu_limit_m: f64,
}

/// Read replicas of stateful stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatefulConfig {
    /// Initial full-sync time of a new replica, s.
    pub full_sync_s: f64,
    /// Lag at which a replica serves only misses, s.
    pub stale_horizon_s: f64,
    /// Hit ratio when fully synced.
    pub base_hit_ratio: f64,
    /// Cost of applying a replicated write relative to serving a command.
    pub apply_cost_fraction: f64,
}

/// The load model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// Shortest think time, s.
    pub wait_min_s: f64,
    /// Longest think time, s.
    pub wait_max_s: f64,
    /// Off-peak level, rps.
    pub off_peak_rps: f64,
    /// Peak plateau, rps.
    pub peak_rps: f64,
    /// Rush baseline, rps.
    pub rush_base_rps: f64,
    /// Rush crest, rps.
    pub rush_peak_rps: f64,
    /// Fluctuating low, rps.
    pub fluctuating_min_rps: f64,
    /// Fluctuating high, rps.
    pub fluctuating_max_rps: f64,
    /// Fluctuating period, s.
    pub fluctuating_period_s: f64,
    /// Trace replay crest, rps.
    pub trace_peak_rps: f64,
    /// Burst: the calm rate, rps.
    pub burst_base_rps: f64,
    /// Burst: the smallest crowd crest, times the calm rate.
    pub burst_min_x: f64,
    /// Burst: the largest crowd crest, times the calm rate.
    pub burst_max_x: f64,
    /// Burst: mean calm spell, s.
    pub burst_calm_mean_s: f64,
    /// Burst: shortest crowd hold, s.
    pub burst_min_hold_s: f64,
    /// Burst: mean crowd hold beyond the shortest, s.
    pub burst_hold_mean_s: f64,
    /// Burst: shortest rise, s.
    pub burst_rise_min_s: f64,
    /// Burst: longest rise, s.
    pub burst_rise_max_s: f64,
    /// Burst: decay time constant after a crowd, s.
    pub burst_decay_s: f64,
    /// User tasks (a topology's own `user_tasks` replace these).
    pub tasks: BTreeMap<String, UserTask>,
}

impl LoadConfig {
    /// The highest frontend rate any shape reaches, rps (a burst's at its largest multiple).
    pub fn highest_rps(&self) -> f64 {
        [
            self.off_peak_rps,
            self.peak_rps,
            self.rush_peak_rps,
            self.fluctuating_max_rps,
            self.trace_peak_rps,
            self.burst_base_rps * self.burst_max_x,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
}

/// A readiness probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `initialDelaySeconds`.
    pub initial_delay_s: f64,
    /// `periodSeconds`.
    pub period_s: f64,
}

/// The twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinConfig {
    /// Topology file; empty: Online Boutique, compiled in
    /// ([`crate::topology::ONLINE_BOUTIQUE_JSON`]).
    pub topology: String,
    /// Simulation step, s.
    pub step_s: f64,
    /// Observation period, s.
    pub observe_every_s: f64,
    /// Per-hop sidecar latency, ms.
    pub hop_latency_ms: f64,
    /// Queueing timeout, s.
    pub request_timeout_s: f64,
    /// Idle CPU per pod, millicores.
    pub idle_cpu_m: f64,
    /// Idle working set as a fraction of the memory request.
    pub mem_base_fraction: f64,
    /// Working set per in-flight request, MiB.
    pub mem_per_inflight_mib: f64,
    /// metrics-server window, s.
    pub metrics_window_s: f64,
    /// Values of symbolic fan-out counts.
    pub fanout_parameters: BTreeMap<String, f64>,
    /// CPU ms per request by service (`default` for the rest).
    pub cpu_cost_ms: BTreeMap<String, f64>,
    /// Container creation time, s.
    pub container_create_s: f64,
    /// CFS period, s.
    pub cfs_period_s: f64,
    /// Application start time by language or service (`default` for the rest), s.
    pub app_start_s: BTreeMap<String, f64>,
    /// Readiness probes by service (`default` for the rest).
    pub readiness_probe: BTreeMap<String, ProbeConfig>,
    /// Action bounds.
    pub limits: LimitsConfig,
    /// Stateful stores.
    pub stateful: StatefulConfig,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The load model.
    pub load: LoadConfig,
}

graphscaler_schemas::default_from!(TwinConfig, "twin");

graphscaler_schemas::default_from!(SloConfig, "slo");

impl SloConfig {
    /// What is wrong with `[slo]`, one message per problem (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        let mut errs = vec![];
        if !(self.latency_ms.is_finite() && self.latency_ms > 0.0) {
            errs.push(format!(
                "slo.latency_ms must be positive, got {}",
                self.latency_ms
            ));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            errs.push(format!(
                "slo.error_rate must lie in [0, 1], got {}",
                self.error_rate
            ));
        }
        errs
    }
}

impl TwinConfig {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut errs = Vec::new();
        let mut pos = |v: f64, name: &str| {
            if !(v.is_finite() && v > 0.0) {
                errs.push(format!("twin.{name} must be a positive number, got {v}"));
            }
        };
        pos(self.step_s, "step_s");
        pos(self.observe_every_s, "observe_every_s");
        pos(self.request_timeout_s, "request_timeout_s");
        pos(self.metrics_window_s, "metrics_window_s");
        pos(self.cfs_period_s, "cfs_period_s");
        pos(self.stateful.full_sync_s, "stateful.full_sync_s");
        pos(self.stateful.stale_horizon_s, "stateful.stale_horizon_s");
        pos(self.load.wait_min_s, "load.wait_min_s");
        let l = &self.load;
        for (v, name) in [
            (l.burst_base_rps, "burst_base_rps"),
            (l.burst_calm_mean_s, "burst_calm_mean_s"),
            (l.burst_hold_mean_s, "burst_hold_mean_s"),
            (l.burst_rise_min_s, "burst_rise_min_s"),
            (l.burst_decay_s, "burst_decay_s"),
        ] {
            pos(v, &format!("load.{name}"));
        }
        for (k, v) in &self.cpu_cost_ms {
            pos(*v, &format!("cpu_cost_ms.{k}"));
        }
        for nt in &self.cluster.node_types {
            pos(nt.speed, &format!("cluster.node_types[{}].speed", nt.name));
            pos(
                nt.allocatable_cpu_m,
                &format!("cluster.node_types[{}].allocatable_cpu_m", nt.name),
            );
            pos(
                nt.allocatable_mem_mi,
                &format!("cluster.node_types[{}].allocatable_mem_mi", nt.name),
            );
        }
        if self.step_s > 0.0 && self.observe_every_s > 0.0 {
            let r = self.observe_every_s / self.step_s;
            if (r - r.round()).abs() > 1e-9 {
                errs.push(format!(
                    "twin.observe_every_s ({}) must be a whole multiple of twin.step_s ({})",
                    self.observe_every_s, self.step_s
                ));
            }
        }
        if self.load.wait_max_s < self.load.wait_min_s {
            errs.push("twin.load.wait_max_s is below twin.load.wait_min_s".into());
        }
        let l = &self.load;
        if !(l.burst_min_x >= 1.0 && l.burst_max_x >= l.burst_min_x && l.burst_max_x.is_finite()) {
            errs.push(format!(
                "twin.load.burst_min_x and burst_max_x must satisfy 1 <= min <= max, got {} and {}",
                l.burst_min_x, l.burst_max_x
            ));
        }
        if !(l.burst_rise_max_s >= l.burst_rise_min_s && l.burst_rise_max_s.is_finite()) {
            errs.push("twin.load.burst_rise_max_s is below twin.load.burst_rise_min_s".into());
        }
        if !(l.burst_min_hold_s.is_finite() && l.burst_min_hold_s >= 0.0) {
            errs.push(format!(
                "twin.load.burst_min_hold_s must be a number of seconds >= 0, got {}",
                l.burst_min_hold_s
            ));
        }
        if !self.cpu_cost_ms.contains_key("default") {
            errs.push("twin.cpu_cost_ms needs a `default` entry".into());
        }
        if !self.app_start_s.contains_key("default") {
            errs.push("twin.app_start_s needs a `default` entry".into());
        }
        if !self.readiness_probe.contains_key("default") {
            errs.push("twin.readiness_probe needs a `default` entry".into());
        }
        for (k, p) in &self.readiness_probe {
            if p.period_s.is_nan()
                || p.period_s <= 0.0
                || p.initial_delay_s.is_nan()
                || p.initial_delay_s < 0.0
            {
                errs.push(format!(
                    "twin.readiness_probe.{k} needs period_s > 0 and initial_delay_s >= 0"
                ));
            }
        }
        if self.container_create_s.is_nan() || self.container_create_s < 0.0 {
            errs.push("twin.container_create_s must be >= 0".into());
        }
        if self.cluster.node_types.iter().map(|n| n.count).sum::<u32>() == 0 {
            errs.push("twin.cluster.node_types has no node".into());
        }
        if self.limits.min_replicas == 0 || self.limits.max_replicas < self.limits.min_replicas {
            errs.push("twin.limits needs 1 <= min_replicas <= max_replicas".into());
        }
        if !(0.0..=1.0).contains(&self.stateful.base_hit_ratio) {
            errs.push("twin.stateful.base_hit_ratio must lie in [0, 1]".into());
        }
        if self.load.tasks.is_empty() {
            errs.push("twin.load.tasks is empty".into());
        }
        if !self.load.tasks.is_empty() {
            // `tasks_for`'s check too, so `graphscaler config` refuses what `twin run` would.
            errs.extend(weight_problems(&self.load.tasks));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(TwinError::Config(errs))
        }
    }

    /// CPU seconds per request of service `s` at speed 1.0: the configuration's value for its name
    /// if it has one (an override), else the topology's, else the configuration's `default`.
    pub fn cpu_cost_s(&self, s: &ServiceSpec) -> f64 {
        self.cpu_cost_ms
            .get(&s.name)
            .copied()
            .or(s.cpu_cost_ms)
            .unwrap_or_else(|| self.default_cpu_cost_ms())
            / 1000.0
    }

    /// The CPU cost per request of a service that neither the topology nor a configuration
    /// entry of its name gives one, ms (`cpu_cost_ms.default`, which validation requires).
    fn default_cpu_cost_ms(&self) -> f64 {
        self.cpu_cost_ms.get("default").copied().unwrap_or(1.0)
    }

    /// Time from binding a pod of service `s` to its Ready condition, s: the first readiness
    /// probe at or after container creation plus application start. Each of the two comes from
    /// the configuration's value for its name if any, else the topology's, else the
    /// configuration's (application start by its language, then `default`).
    pub fn startup_delay(&self, s: &ServiceSpec) -> f64 {
        let app = self
            .app_start_s
            .get(&s.name)
            .copied()
            .or(s.app_start_s)
            .or_else(|| self.app_start_s.get(&s.language).copied())
            .or_else(|| self.app_start_s.get("default").copied())
            .unwrap_or(5.0);
        let probe = self
            .readiness_probe
            .get(&s.name)
            .or(s.readiness_probe.as_ref())
            .or_else(|| self.readiness_probe.get("default"))
            .cloned()
            .unwrap_or(ProbeConfig {
                initial_delay_s: 0.0,
                period_s: 10.0,
            });
        // Probe times are counted from container start.
        let k = ((app - probe.initial_delay_s) / probe.period_s)
            .ceil()
            .max(0.0);
        self.container_create_s + probe.initial_delay_s + k * probe.period_s
    }

    /// What of `topology`'s simulated services comes from the configuration's `default` entries,
    /// because neither the topology nor a configuration entry of its name gives it: one line
    /// per parameter, naming the services (the first five and a count). A topology written for
    /// the twin gives every service its CPU cost; a default is a guess to report, not to hide.
    pub fn defaulted(&self, topology: &Topology) -> Vec<String> {
        let list = |names: Vec<&str>| {
            let more = names.len().saturating_sub(5);
            let mut s = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
            if more > 0 {
                s += &format!(" and {more} more");
            }
            s
        };
        let mut out = vec![];
        let cost: Vec<&str> = topology
            .services
            .iter()
            .filter(|s| s.cpu_cost_ms.is_none() && !self.cpu_cost_ms.contains_key(&s.name))
            .map(|s| s.name.as_str())
            .collect();
        if !cost.is_empty() {
            out.push(format!(
                "{} of {} services take the default CPU cost per request ({} ms; set `cpu_cost_ms` in the topology file): {}",
                cost.len(),
                topology.services.len(),
                self.default_cpu_cost_ms(),
                list(cost)
            ));
        }
        let start: Vec<&str> = topology
            .services
            .iter()
            .filter(|s| {
                s.app_start_s.is_none()
                    && !self.app_start_s.contains_key(&s.name)
                    && !self.app_start_s.contains_key(&s.language)
            })
            .map(|s| s.name.as_str())
            .collect();
        if !start.is_empty() {
            out.push(format!(
                "{} of {} services take the default application start time (their language is not in twin.app_start_s; set `app_start_s` in the topology file): {}",
                start.len(),
                topology.services.len(),
                list(start)
            ));
        }
        out
    }

    /// The user tasks for `topology`: its own if it carries them, the configured ones otherwise.
    /// Every route a task names must exist.
    pub fn tasks_for(&self, topology: &Topology) -> Result<BTreeMap<String, UserTask>> {
        let tasks = topology
            .user_tasks
            .clone()
            .unwrap_or_else(|| self.load.tasks.clone());
        let mut errs = weight_problems(&tasks);
        for (name, t) in &tasks {
            for r in &t.requests {
                if !topology.routes.iter().any(|x| &x.name == r) {
                    errs.push(format!(
                        "twin.load.tasks.{name} requests route `{r}`, which topology {} does not have",
                        topology.source
                    ));
                }
            }
        }
        if errs.is_empty() {
            Ok(tasks)
        } else {
            Err(TwinError::Config(errs))
        }
    }
}

/// Task weights that are negative or not numbers, and a mix whose weights sum to zero.
fn weight_problems(tasks: &BTreeMap<String, UserTask>) -> Vec<String> {
    let mut errs: Vec<String> = tasks
        .iter()
        .filter(|(_, t)| !(t.weight.is_finite() && t.weight >= 0.0))
        .map(|(name, _)| format!("twin.load.tasks.{name}.weight must be >= 0"))
        .collect();
    if tasks.values().map(|t| t.weight).sum::<f64>() <= 0.0 {
        errs.push("twin.load.tasks: weights sum to zero".into());
    }
    errs
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let c = TwinConfig::default();
        c.validate().unwrap();
        assert_eq!(SloConfig::default().latency_ms, 200.0);
        let t = Topology::online_boutique(&c.fanout_parameters).unwrap();
        let svc = |n: &str| t.services[t.service_index(n).unwrap()].clone();
        // The topology's own CPU cost.
        assert_eq!(c.cpu_cost_s(&svc("frontend")), 0.0025);
        // adservice: JVM up after 25 s; its probes at 20, 35, … → Ready 2 + 35 s after binding.
        assert_eq!(c.startup_delay(&svc("adservice")), 37.0);
        // frontend: Go up after 2 s; first probe at 10 s.
        assert_eq!(c.startup_delay(&svc("frontend")), 12.0);
        // currencyservice: Node.js up after 4 s; no probe of its own, the default's at 0, 10 → 10 s.
        assert_eq!(c.startup_delay(&svc("currencyservice")), 12.0);
        assert!(c.defaulted(&t).is_empty(), "{:?}", c.defaulted(&t));
        // A name in the configuration overrides the topology; the default fills what neither has.
        let mut o = c.clone();
        o.cpu_cost_ms.insert("frontend".into(), 5.0);
        assert_eq!(o.cpu_cost_s(&svc("frontend")), 0.005);
        let mut bare = svc("frontend");
        bare.cpu_cost_ms = None;
        bare.readiness_probe = None;
        assert_eq!(c.cpu_cost_s(&bare), 0.001);
        // Go up after 2 s, default probes at 0, 10 → 10 s.
        assert_eq!(c.startup_delay(&bare), 12.0);
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut c = TwinConfig::default();
        c.step_s = -1.0;
        c.load.wait_max_s = 0.1;
        c.cpu_cost_ms.insert("frontend".into(), f64::NAN);
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("twin.step_s"), "{msg}");
        assert!(msg.contains("wait_max_s"), "{msg}");
        assert!(msg.contains("cpu_cost_ms.frontend"), "{msg}");
    }
}
