//! Running policies on the twin: one run, and a campaign of policies × scenarios × replays.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use graphscaler_schemas::{Action, ClusterObservation};
use graphscaler_twin::{Shape, SloConfig, TickTruth, Topology, Twin, TwinConfig};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::hpa::{Hpa, HpaConfig};
use crate::metrics::{compute, MetricSettings, RunMetrics};

/// Settings of the evaluation harness (`[eval]` in `config/default.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// `u*` for needed replicas.
    pub target_utilization: f64,
    /// Memory weight in the cost.
    pub caf_memory_weight: f64,
    /// Output directory.
    pub out_dir: String,
    /// Seconds at the start of each run left out of the metrics (the cluster starts from the
    /// manifests' single replicas).
    pub warmup_s: f64,
}

/// A scaling policy: reads observations, emits actions.
pub trait Policy: Send {
    /// Decides at an observation tick.
    fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action>;
}

/// Never acts: the manifests' replicas and resources stay as they are.
#[derive(Debug, Clone, Default)]
pub struct Static;

impl Policy for Static {
    fn decide(&mut self, _obs: &ClusterObservation) -> Vec<Action> {
        vec![]
    }
}

impl Policy for Hpa {
    fn decide(&mut self, obs: &ClusterObservation) -> Vec<Action> {
        Hpa::decide(self, obs)
    }
}

/// A policy by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum PolicySpec {
    /// [`Static`].
    Static,
    /// The HPA at `hpa.target_cpu_utilization`.
    Hpa,
    /// The HPA at `hpa.tuned_target_cpu_utilization`.
    TunedHpa,
    /// The HPA at the given target, percent (`hpa-60`).
    HpaAt(u32),
    /// A learned policy: `gat-ppo`, `mlp-ppo`, `gcn-sac`, `dysat-a2c` (from the checkpoint
    /// directory) or `NAME=PATH` (a checkpoint, without its extension), built by the campaign's
    /// [`Learned`] factory.
    Learned {
        /// The name in tables.
        name: String,
        /// The checkpoint, if given (else the factory's default for the name).
        path: Option<String>,
    },
}

/// The names of the learned baselines.
pub const LEARNED: [&str; 4] = ["gat-ppo", "mlp-ppo", "gcn-sac", "dysat-a2c"];

/// Builds learned policies (the learning crate links libtorch; this crate does not).
pub trait Learned: Sync {
    /// The policy `name` from `path` (or its default checkpoint).
    fn build(&self, name: &str, path: Option<&str>) -> Result<Box<dyn Policy>>;
}

impl PolicySpec {
    /// Parses `static`, `hpa`, `tuned-hpa` or `hpa-<percent>`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "static" => Ok(PolicySpec::Static),
            "hpa" => Ok(PolicySpec::Hpa),
            "tuned-hpa" => Ok(PolicySpec::TunedHpa),
            _ if LEARNED.contains(&s) => Ok(PolicySpec::Learned {
                name: s.to_owned(),
                path: None,
            }),
            _ if s.contains('=') => {
                let (name, path) = s.split_once('=').unwrap_or_default();
                if name.is_empty() || path.is_empty() {
                    return Err(EvalError::UnknownPolicy(s.to_owned()));
                }
                Ok(PolicySpec::Learned {
                    name: name.to_owned(),
                    path: Some(path.to_owned()),
                })
            }
            _ => s
                .strip_prefix("hpa-")
                .and_then(|t| t.parse().ok())
                .filter(|t| (1..=1000).contains(t))
                .map(PolicySpec::HpaAt)
                .ok_or_else(|| EvalError::UnknownPolicy(s.to_owned())),
        }
    }

    /// The name used in tables and files.
    pub fn name(&self) -> String {
        match self {
            PolicySpec::Static => "static".into(),
            PolicySpec::Hpa => "hpa".into(),
            PolicySpec::TunedHpa => "tuned-hpa".into(),
            PolicySpec::HpaAt(t) => format!("hpa-{t}"),
            PolicySpec::Learned { name, .. } => name.clone(),
        }
    }

    /// Builds the policy; a learned one needs `learned`.
    pub fn build(&self, hpa: &HpaConfig, learned: Option<&dyn Learned>) -> Result<Box<dyn Policy>> {
        Ok(match self {
            PolicySpec::Static => Box::new(Static),
            PolicySpec::Hpa => Box::new(Hpa::new(hpa.target_cpu_utilization, hpa)),
            PolicySpec::TunedHpa => Box::new(Hpa::new(hpa.tuned_target_cpu_utilization, hpa)),
            PolicySpec::HpaAt(t) => Box::new(Hpa::new(*t, hpa)),
            PolicySpec::Learned { name, path } => match learned {
                Some(l) => l.build(name, path.as_deref())?,
                None => {
                    return Err(EvalError::Policy(format!(
                        "policy `{name}` is learned and this build has no learned policies"
                    )))
                }
            },
        })
    }
}

/// Everything one evaluation needs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The topology.
    pub topology: Topology,
    /// The twin's settings.
    pub twin: TwinConfig,
    /// SLOs.
    pub slo: SloConfig,
    /// HPA settings.
    pub hpa: HpaConfig,
    /// Harness settings.
    pub eval: EvalConfig,
}

/// One point of a run's time series (for plots and Parquet).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Time, s.
    pub time_s: f64,
    /// Nominal load, rps.
    pub offered_rps: f64,
    /// Entry requests per second that arrived.
    pub entry_rps: f64,
    /// Entry p95, ms.
    pub entry_p95_ms: f64,
    /// Entry error rate.
    pub entry_error_rate: f64,
    /// Σ spec replicas.
    pub replicas: u32,
    /// Σ ready pods.
    pub ready: u32,
    /// Σ allocated CPU, cores.
    pub allocated_cpu_cores: f64,
    /// Σ used CPU, cores.
    pub used_cpu_cores: f64,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Policy name.
    pub policy: String,
    /// Scenario name.
    pub scenario: String,
    /// Replay index.
    pub replay: usize,
    /// Seed.
    pub seed: u64,
    /// Metrics.
    pub metrics: RunMetrics,
    /// Time series.
    pub series: Vec<SeriesPoint>,
}

/// Runs `policy` on a fresh twin and returns its ground truth and the actions applied and
/// refused after `warmup_s`.
pub fn run_policy(
    setup: &Setup,
    policy: &mut dyn Policy,
    shape: Shape,
    duration_s: f64,
    seed: u64,
    warmup_s: f64,
) -> Result<(Vec<TickTruth>, usize, usize)> {
    let mut twin = Twin::new(
        setup.topology.clone(),
        setup.twin.clone(),
        setup.slo.clone(),
        shape,
        duration_s,
        seed,
    )?;
    let mut ticks = Vec::new();
    let (mut applied, mut refused) = (0, 0);
    while !twin.done() {
        let (obs, truth) = twin.advance();
        let counted = obs.time_s > warmup_s;
        for a in policy.decide(&obs) {
            let ok = twin.apply(&a).is_applied();
            if counted {
                if ok {
                    applied += 1;
                } else {
                    refused += 1;
                }
            }
        }
        ticks.push(truth);
    }
    Ok((ticks, applied, refused))
}

fn series(ticks: &[TickTruth]) -> Vec<SeriesPoint> {
    ticks
        .iter()
        .map(|t| SeriesPoint {
            time_s: t.time_s,
            offered_rps: t.offered_rps,
            entry_rps: t.entry_requests / t.window_s,
            entry_p95_ms: t.entry_p95_ms,
            entry_error_rate: if t.entry_requests > 0.0 {
                t.entry_errors / t.entry_requests
            } else {
                0.0
            },
            replicas: t.services.iter().map(|s| s.replicas_spec).sum(),
            ready: t.services.iter().map(|s| s.pods_ready).sum(),
            allocated_cpu_cores: t.services.iter().map(|s| s.allocated_cpu_cores).sum(),
            used_cpu_cores: t.services.iter().map(|s| s.used_cpu_cores).sum(),
        })
        .collect()
}

/// A campaign: every policy on every scenario, `replays` times with seeds `seed, seed+1, …`.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Policies.
    pub policies: Vec<PolicySpec>,
    /// Scenarios.
    pub scenarios: Vec<Shape>,
    /// Replays per scenario.
    pub replays: usize,
    /// Run length, s.
    pub duration_s: f64,
    /// First seed.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
}

impl Campaign {
    /// Number of runs, including the tuned-HPA reference runs CAF needs.
    pub fn run_count(&self) -> usize {
        self.all_policies().len() * self.scenarios.len() * self.replays
    }

    fn all_policies(&self) -> Vec<PolicySpec> {
        let mut p = self.policies.clone();
        if !p.contains(&PolicySpec::TunedHpa) {
            p.push(PolicySpec::TunedHpa);
        }
        p
    }

    /// Runs the campaign; `progress` is called after each run. Results are in a fixed order
    /// (scenario, policy, replay) whatever the thread count, and CAF is filled in against the
    /// tuned HPA on the same scenario and seed.
    pub fn run(
        &self,
        setup: &Setup,
        progress: &(dyn Fn(&RunResult) + Sync),
    ) -> Result<Vec<RunResult>> {
        self.run_with(setup, None, progress)
    }

    /// [`Campaign::run`] with a factory for learned policies. Each learned policy is built once
    /// before the runs, so a missing or wrong checkpoint fails the campaign at once.
    pub fn run_with(
        &self,
        setup: &Setup,
        learned: Option<&dyn Learned>,
        progress: &(dyn Fn(&RunResult) + Sync),
    ) -> Result<Vec<RunResult>> {
        for p in &self.policies {
            if matches!(p, PolicySpec::Learned { .. }) {
                p.build(&setup.hpa, learned)?;
            }
        }
        let policies = self.all_policies();
        let mut jobs = vec![];
        for (si, sc) in self.scenarios.iter().enumerate() {
            for p in &policies {
                for r in 0..self.replays {
                    jobs.push((si, sc.clone(), p.clone(), r));
                }
            }
        }
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<RunResult>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let settings = MetricSettings {
            target_utilization: setup.eval.target_utilization,
            memory_weight: setup.eval.caf_memory_weight,
        };
        std::thread::scope(|scope| {
            for _ in 0..self.threads.max(1) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, shape, policy, replay)) = jobs.get(i).cloned() else {
                        break;
                    };
                    let seed = self.seed + replay as u64;
                    let scenario = shape.name();
                    let warmup = setup.eval.warmup_s;
                    let out = policy
                        .build(&setup.hpa, learned)
                        .and_then(|mut p| {
                            run_policy(setup, p.as_mut(), shape, self.duration_s, seed, warmup)
                        })
                        .map(|(ticks, applied, refused)| {
                            let first = ticks.partition_point(|t| t.time_s <= warmup);
                            RunResult {
                                policy: policy.name(),
                                scenario,
                                replay,
                                seed,
                                metrics: compute(&ticks[first..], applied, refused, settings),
                                series: series(&ticks),
                            }
                        });
                    if let Ok(r) = &out {
                        progress(r);
                    }
                    if let Ok(mut g) = results.lock() {
                        g[i] = Some(out);
                    }
                });
            }
        });
        let mut out = vec![];
        for r in results
            .into_inner()
            .map_err(|_| EvalError::Internal("poisoned".into()))?
        {
            out.push(r.ok_or_else(|| EvalError::Internal("a run did not finish".into()))??);
        }
        // CAF against the tuned HPA on the same scenario and seed.
        let reference: Vec<(String, u64, f64)> = out
            .iter()
            .filter(|r| r.policy == PolicySpec::TunedHpa.name())
            .map(|r| (r.scenario.clone(), r.seed, r.metrics.cost))
            .collect();
        for r in &mut out {
            if let Some((_, _, c)) = reference
                .iter()
                .find(|(s, seed, _)| *s == r.scenario && *seed == r.seed)
            {
                r.metrics.caf = r.metrics.cost / c;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_parse() {
        assert_eq!(
            PolicySpec::parse("tuned-hpa").unwrap(),
            PolicySpec::TunedHpa
        );
        assert_eq!(PolicySpec::parse("hpa-60").unwrap(), PolicySpec::HpaAt(60));
        assert_eq!(
            PolicySpec::parse("gat-ppo").unwrap(),
            PolicySpec::Learned {
                name: "gat-ppo".into(),
                path: None
            }
        );
        assert_eq!(
            PolicySpec::parse("mine=ckpt/a").unwrap().name(),
            "mine".to_string()
        );
        let e = PolicySpec::parse("gat-sac").unwrap_err().to_string();
        assert!(e.contains("gat-sac"), "{e}");
    }
}
