//! Running policies on the twin: one run, and a campaign of policies × scenarios × replays.
//!
//! Every policy — the HPA, `static` and the learned ones alike — runs through the served loop
//! ([`graphscaler_pipeline::served`]): it decides on the graph job's snapshots, one per
//! `pipeline.window_s`, cut from the telemetry a scrape of the twin publishes, and its actions
//! pass the actuator's guardrails, as in `graphscaler run` and in a deployment. What `eval`
//! reports is what the loop that serves the policy does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use graphscaler_actuate::Guardrails;
use graphscaler_graph::GraphConfig;
use graphscaler_pipeline::served::{Cut, Decision, Served, ServedRun};
use graphscaler_policy::{HpaConfig, Learned, PolicySpec, SnapshotPolicy};
use graphscaler_twin::{Shape, SloConfig, TickTruth, Topology, Twin, TwinConfig};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::journal::{Header, Journal};
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

impl EvalConfig {
    /// What is wrong with `[eval]`, one message per problem (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        let mut errs = vec![];
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            errs.push("eval.target_utilization must lie in (0, 1]".into());
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !non_negative(self.caf_memory_weight)
            || !graphscaler_schemas::defaults::is_duration_or_zero(self.warmup_s)
        {
            errs.push("eval.caf_memory_weight and eval.warmup_s must be >= 0".into());
        }
        errs
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
    /// The graph job's settings (its window is the policies' cadence).
    pub graph: GraphConfig,
    /// The actuator's guardrails.
    pub rails: Guardrails,
    /// What decides when a learned policy cannot (`pipeline.fallback_policy`).
    pub fallback: PolicySpec,
}

/// One point of a run's time series (for plots and Parquet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Observation ticks of the whole run (the warm-up included).
    pub ticks: usize,
    /// Of them, ticks whose entry p95 or error rate broke the SLO.
    pub slo_violated_ticks: usize,
    /// Every decision of the actuator, the warm-up included.
    #[serde(with = "decisions_as_json")]
    pub decisions: Vec<Decision>,
}

/// The decisions as JSON text inside a result's binary form (the [`crate::journal`]'s records):
/// their types, the audit schema's, are written for JSON (tagged enums, optional fields), which a
/// binary format does not read back; the metrics stay binary, NaN included.
mod decisions_as_json {
    use graphscaler_pipeline::served::Decision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[Decision], s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(d).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Runs `policy` on a fresh twin through the served loop: the twin's ground truth per tick and
/// every decision of the actuator.
pub fn run_policy(
    setup: &Setup,
    policy: &mut dyn SnapshotPolicy,
    shape: Shape,
    duration_s: f64,
    seed: u64,
) -> Result<ServedRun> {
    let twin = Twin::new(
        setup.topology.clone(),
        setup.twin.clone(),
        setup.slo.clone(),
        shape,
        duration_s,
        seed,
    )?;
    let run = Served::new(twin, &setup.graph, Cut::Dataflow, setup.rails.clone()).run(policy)?;
    if run.counts.fallbacks > 0 {
        // A learned policy that could not decide is not measured as itself: say so per run.
        tracing::warn!(
            policy = %policy.name(),
            seed,
            "{} of {} snapshots were decided by the fallback policy (the policy could not decide on them)",
            run.counts.fallbacks,
            run.counts.snapshots
        );
    }
    Ok(run)
}

/// The actions the actuator applied and refused after `warmup_s`.
pub fn applied_and_refused(decisions: &[Decision], warmup_s: f64) -> (usize, usize) {
    let (mut applied, mut refused) = (0, 0);
    for d in decisions.iter().filter(|d| d.at_s > warmup_s) {
        if d.record.outcome.is_applied() {
            applied += 1;
        } else {
            refused += 1;
        }
    }
    (applied, refused)
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
        self.run_journaled(setup, learned, None, progress)
    }

    /// What this campaign is on `setup`, for its [`Journal`]: the policies, scenarios, replays,
    /// length and first seed, and every setting of `setup` (the topology included); `extra`
    /// adds what the caller knows of the policies (the learned checkpoints' bytes, how a learned
    /// policy acts).
    pub fn header(&self, setup: &Setup, extra: Vec<(String, String)>) -> Header {
        let mut parts = vec![
            ("policies".to_string(), format!("{:?}", self.all_policies())),
            ("scenarios".to_string(), format!("{:?}", self.scenarios)),
            ("replays".to_string(), self.replays.to_string()),
            ("duration".to_string(), format!("{:?}", self.duration_s)),
            ("seed".to_string(), self.seed.to_string()),
            ("settings".to_string(), format!("{setup:?}")),
        ];
        parts.extend(extra);
        Header::new(parts)
    }

    /// [`Campaign::run_with`], taking the runs `journal` holds from it and recording every other
    /// run in it as it finishes (before `progress` hears of it).
    pub fn run_journaled(
        &self,
        setup: &Setup,
        learned: Option<&dyn Learned>,
        journal: Option<&Journal>,
        progress: &(dyn Fn(&RunResult) + Sync),
    ) -> Result<Vec<RunResult>> {
        for p in &self.policies {
            if matches!(p, PolicySpec::Learned { .. }) {
                p.build_served(&setup.hpa, &setup.fallback, learned)?;
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
                    let held = journal
                        .and_then(|j| j.take(&(policy.name(), scenario.clone(), replay, seed)));
                    let out = match held {
                        Some(r) => Ok(r),
                        None => policy
                            .build_served(&setup.hpa, &setup.fallback, learned)
                            .map_err(EvalError::from)
                            .and_then(|mut p| {
                                run_policy(setup, p.as_mut(), shape, self.duration_s, seed)
                            })
                            .map(|run| {
                                let ticks = &run.ticks;
                                let first = ticks.partition_point(|t| t.time_s <= warmup);
                                let (applied, refused) =
                                    applied_and_refused(&run.decisions, warmup);
                                RunResult {
                                    policy: policy.name(),
                                    scenario,
                                    replay,
                                    seed,
                                    metrics: compute(&ticks[first..], applied, refused, settings),
                                    series: series(ticks),
                                    ticks: ticks.len(),
                                    slo_violated_ticks: ticks
                                        .iter()
                                        .filter(|t| t.slo_violated)
                                        .count(),
                                    decisions: run.decisions,
                                }
                            })
                            .and_then(|r| {
                                journal.map_or(Ok(()), |j| j.record(&r))?;
                                Ok(r)
                            }),
                    };
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
