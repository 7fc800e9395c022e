//! Summaries across replays, the terminal table, CSV and Parquet files.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use parquet::arrow::ArrowWriter;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::metrics::RunMetrics;
use crate::runner::RunResult;
use crate::stats::{cliffs_delta, cliffs_magnitude, mean_ci, MeanCi};

/// Reads one metric out of a run's metrics.
pub type Getter = fn(&RunMetrics) -> f64;

/// The metrics reported, with their column names (every one is better when lower).
pub const METRICS: &[(&str, Getter)] = &[
    ("slo_violation_pct", |m| m.slo_violation_pct),
    ("requests_over_slo_pct", |m| m.requests_over_slo_pct),
    ("error_pct", |m| m.error_pct),
    ("slack_pct", |m| m.slack_pct),
    ("lag_p50_s", |m| m.lag_p50_s),
    ("lag_p90_s", |m| m.lag_p90_s),
    ("decision_delay_p50_s", |m| m.decision_delay_p50_s),
    ("startup_delay_p50_s", |m| m.startup_delay_p50_s),
    ("overshoot", |m| m.overshoot),
    ("caf", |m| m.caf),
    ("actions_per_hour", |m| m.actions_per_hour),
    ("mean_replica_lag_s", |m| m.mean_replica_lag_s),
];

/// One metric of one policy on one scenario, across replays.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    /// Scenario.
    pub scenario: String,
    /// Policy.
    pub policy: String,
    /// Metric name.
    pub metric: String,
    /// Mean and CI over replays (NaN replays, e.g. a lag without shortfalls, are left out).
    pub ci: MeanCi,
}

/// Cliff's δ of one metric between two policies on one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaRow {
    /// Scenario.
    pub scenario: String,
    /// The policy compared.
    pub policy: String,
    /// The reference policy.
    pub versus: String,
    /// Metric name.
    pub metric: String,
    /// δ; negative means the policy's values are lower (better for every metric but none).
    pub delta: f64,
    /// negligible / small / medium / large.
    pub magnitude: String,
}

fn ordered<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = vec![];
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v
}

fn values(runs: &[RunResult], scenario: &str, policy: &str, f: Getter) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.scenario == scenario && r.policy == policy)
        .map(|r| f(&r.metrics))
        .filter(|x| !x.is_nan())
        .collect()
}

/// Mean and CI of every metric per (scenario, policy).
pub fn summarize(runs: &[RunResult]) -> Vec<SummaryRow> {
    let scenarios = ordered(runs.iter().map(|r| r.scenario.clone()));
    let policies = ordered(runs.iter().map(|r| r.policy.clone()));
    let mut out = vec![];
    for s in &scenarios {
        for p in &policies {
            for (name, f) in METRICS {
                out.push(SummaryRow {
                    scenario: s.clone(),
                    policy: p.clone(),
                    metric: (*name).into(),
                    ci: mean_ci(&values(runs, s, p, *f)),
                });
            }
        }
    }
    out
}

/// Cliff's δ of every policy against `versus`, per scenario and metric.
pub fn deltas(runs: &[RunResult], versus: &str) -> Vec<DeltaRow> {
    let scenarios = ordered(runs.iter().map(|r| r.scenario.clone()));
    let policies = ordered(runs.iter().map(|r| r.policy.clone()));
    let mut out = vec![];
    for s in &scenarios {
        for p in policies.iter().filter(|p| *p != versus) {
            for (name, f) in METRICS {
                let d = cliffs_delta(&values(runs, s, p, *f), &values(runs, s, versus, *f));
                out.push(DeltaRow {
                    scenario: s.clone(),
                    policy: p.clone(),
                    versus: versus.into(),
                    metric: (*name).into(),
                    delta: d,
                    magnitude: cliffs_magnitude(d).into(),
                });
            }
        }
    }
    out
}

fn fmt_ci(ci: &MeanCi, digits: usize) -> String {
    if ci.mean.is_nan() {
        "–".into()
    } else if ci.n < 2 {
        format!("{:.*}", digits, ci.mean)
    } else {
        format!("{:.*} ± {:.*}", digits, ci.mean, digits, ci.half_width)
    }
}

/// The terminal table: one row per scenario and policy, mean ± 95% CI half-width.
pub fn table(summary: &[SummaryRow], deltas: &[DeltaRow]) -> String {
    let get = |s: &str, p: &str, m: &str| {
        summary
            .iter()
            .find(|r| r.scenario == s && r.policy == p && r.metric == m)
            .map(|r| r.ci)
    };
    let scenarios = ordered(summary.iter().map(|r| r.scenario.clone()));
    let policies = ordered(summary.iter().map(|r| r.policy.clone()));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "scenario",
        "policy",
        "SLO viol %",
        "req > SLO %",
        "slack %",
        "lag p50 s",
        "lag p90 s",
        "overshoot",
        "CAF",
        "actions/h",
        "δ SLO vs tuned",
        "δ CAF vs tuned",
    ]);
    for s in &scenarios {
        for p in &policies {
            let c = |m: &str, d: usize| get(s, p, m).map(|ci| fmt_ci(&ci, d)).unwrap_or_default();
            let delta = |m: &str| {
                deltas
                    .iter()
                    .find(|r| &r.scenario == s && &r.policy == p && r.metric == m)
                    .map(|r| format!("{:+.2} {}", r.delta, r.magnitude))
                    .unwrap_or_else(|| "(reference)".into())
            };
            t.add_row(vec![
                Cell::new(s),
                Cell::new(p),
                Cell::new(c("slo_violation_pct", 1)).set_alignment(CellAlignment::Right),
                Cell::new(c("requests_over_slo_pct", 1)).set_alignment(CellAlignment::Right),
                Cell::new(c("slack_pct", 1)).set_alignment(CellAlignment::Right),
                Cell::new(c("lag_p50_s", 0)).set_alignment(CellAlignment::Right),
                Cell::new(c("lag_p90_s", 0)).set_alignment(CellAlignment::Right),
                Cell::new(c("overshoot", 2)).set_alignment(CellAlignment::Right),
                Cell::new(c("caf", 2)).set_alignment(CellAlignment::Right),
                Cell::new(c("actions_per_hour", 0)).set_alignment(CellAlignment::Right),
                Cell::new(delta("slo_violation_pct")),
                Cell::new(delta("caf")),
            ]);
        }
    }
    t.to_string()
}

/// One row of `decisions.csv`: one decision of the actuator in one run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DecisionRow {
    /// Policy.
    pub policy: String,
    /// Scenario.
    pub scenario: String,
    /// Replay index.
    pub replay: usize,
    /// Twin seed.
    pub seed: u64,
    /// Time of the snapshot the action was decided on, s.
    pub at_s: f64,
    /// The action's id.
    pub action_id: String,
    /// The service.
    pub service: String,
    /// What the actuator did or would have done (JSON of the action's kind).
    pub action: String,
    /// `applied` or the refusal's name.
    pub outcome: String,
    /// The guardrail's note (a clamp, for example), or why it refused.
    pub note: String,
}

impl DecisionRow {
    /// The row of decision `d` in run (`policy`, `scenario`, `replay`, `seed`); an action
    /// whose kind cannot be written as JSON is an error, not an empty cell.
    pub fn new(
        policy: &str,
        scenario: &str,
        replay: usize,
        seed: u64,
        d: &graphscaler_pipeline::served::Decision,
    ) -> Result<Self> {
        use graphscaler_schemas::ActionOutcome;
        let (outcome, note) = match &d.record.outcome {
            ActionOutcome::Applied => (
                if d.record.dry_run {
                    "dry_run"
                } else {
                    "applied"
                }
                .to_string(),
                d.record.note.clone().unwrap_or_default(),
            ),
            ActionOutcome::Refused { reason, refusal } => {
                (refusal.name().to_string(), reason.clone())
            }
        };
        let action = serde_json::to_string(&d.record.action.kind)
            .map_err(|e| EvalError::Internal(format!("action {}: {e}", d.record.action_id)))?;
        Ok(Self {
            policy: policy.into(),
            scenario: scenario.into(),
            replay,
            seed,
            at_s: d.at_s,
            action_id: d.record.action_id.clone(),
            service: d.record.action.service.clone(),
            action,
            outcome,
            note,
        })
    }
}

/// Writes decision rows as CSV to `path` (`decisions.csv`; `graphscaler run --decisions`).
pub fn write_decisions(
    path: &Path,
    rows: impl IntoIterator<Item = Result<DecisionRow>>,
) -> Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| EvalError::write(path, e))?;
    for r in rows {
        w.serialize(r?).map_err(|e| EvalError::write(path, e))?;
    }
    w.flush().map_err(|e| EvalError::write(path, e))
}

/// Writes `runs.csv`, `summary.csv`, `cliffs_delta.csv`, `decisions.csv`, `runs.parquet` and
/// `timeseries.parquet` into `dir`.
pub fn write_files(
    dir: &Path,
    runs: &[RunResult],
    summary: &[SummaryRow],
    deltas: &[DeltaRow],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::write(dir, e))?;
    // runs.csv
    let p = dir.join("runs.csv");
    let mut w = csv::Writer::from_path(&p).map_err(|e| EvalError::write(&p, e))?;
    let mut header = vec!["scenario", "policy", "replay", "seed"];
    header.extend(METRICS.iter().map(|(n, _)| *n));
    header.extend([
        "shortfalls",
        "unrecovered",
        "cpu_core_seconds",
        "cost",
        "refused_actions",
        "ticks",
        "slo_violated_ticks",
    ]);
    w.write_record(&header)
        .map_err(|e| EvalError::write(&p, e))?;
    for r in runs {
        let mut rec = vec![
            r.scenario.clone(),
            r.policy.clone(),
            r.replay.to_string(),
            r.seed.to_string(),
        ];
        rec.extend(METRICS.iter().map(|(_, f)| f(&r.metrics).to_string()));
        let m = &r.metrics;
        rec.extend([
            m.shortfalls.to_string(),
            m.unrecovered.to_string(),
            m.cpu_core_seconds.to_string(),
            m.cost.to_string(),
            m.refused_actions.to_string(),
            r.ticks.to_string(),
            r.slo_violated_ticks.to_string(),
        ]);
        w.write_record(&rec).map_err(|e| EvalError::write(&p, e))?;
    }
    w.flush().map_err(|e| EvalError::write(&p, e))?;
    // summary.csv
    let p = dir.join("summary.csv");
    let mut w = csv::Writer::from_path(&p).map_err(|e| EvalError::write(&p, e))?;
    w.write_record([
        "scenario",
        "policy",
        "metric",
        "mean",
        "ci95_low",
        "ci95_high",
        "n",
    ])
    .map_err(|e| EvalError::write(&p, e))?;
    for r in summary {
        w.write_record([
            r.scenario.clone(),
            r.policy.clone(),
            r.metric.clone(),
            r.ci.mean.to_string(),
            r.ci.lo().to_string(),
            r.ci.hi().to_string(),
            r.ci.n.to_string(),
        ])
        .map_err(|e| EvalError::write(&p, e))?;
    }
    w.flush().map_err(|e| EvalError::write(&p, e))?;
    // cliffs_delta.csv
    let p = dir.join("cliffs_delta.csv");
    let mut w = csv::Writer::from_path(&p).map_err(|e| EvalError::write(&p, e))?;
    for r in deltas {
        w.serialize(r).map_err(|e| EvalError::write(&p, e))?;
    }
    w.flush().map_err(|e| EvalError::write(&p, e))?;
    write_decisions(
        &dir.join("decisions.csv"),
        runs.iter().flat_map(|r| {
            r.decisions
                .iter()
                .map(|d| DecisionRow::new(&r.policy, &r.scenario, r.replay, r.seed, d))
        }),
    )?;

    // runs.parquet
    let mut fields = vec![
        Field::new("scenario", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("replay", DataType::UInt32, false),
        Field::new("seed", DataType::UInt64, false),
    ];
    fields.extend(
        METRICS
            .iter()
            .map(|(n, _)| Field::new(*n, DataType::Float64, true)),
    );
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            runs.iter().map(|r| r.scenario.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            runs.iter().map(|r| r.policy.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            runs.iter().map(|r| r.replay as u32),
        )),
        Arc::new(UInt64Array::from_iter_values(runs.iter().map(|r| r.seed))),
    ];
    for (_, f) in METRICS {
        cols.push(Arc::new(Float64Array::from_iter_values(
            runs.iter().map(|r| f(&r.metrics)),
        )));
    }
    write_parquet(&dir.join("runs.parquet"), fields, cols)?;

    // timeseries.parquet
    let rows: Vec<(&RunResult, &crate::runner::SeriesPoint)> = runs
        .iter()
        .flat_map(|r| r.series.iter().map(move |p| (r, p)))
        .collect();
    let f64col = |f: fn(&crate::runner::SeriesPoint) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|(_, p)| f(p)),
        ))
    };
    let fields = vec![
        Field::new("scenario", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("replay", DataType::UInt32, false),
        Field::new("time_s", DataType::Float64, false),
        Field::new("offered_rps", DataType::Float64, false),
        Field::new("entry_rps", DataType::Float64, false),
        Field::new("entry_p95_ms", DataType::Float64, false),
        Field::new("entry_error_rate", DataType::Float64, false),
        Field::new("replicas", DataType::UInt32, false),
        Field::new("ready", DataType::UInt32, false),
        Field::new("allocated_cpu_cores", DataType::Float64, false),
        Field::new("used_cpu_cores", DataType::Float64, false),
    ];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| r.scenario.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| r.policy.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|(r, _)| r.replay as u32),
        )),
        f64col(|p| p.time_s),
        f64col(|p| p.offered_rps),
        f64col(|p| p.entry_rps),
        f64col(|p| p.entry_p95_ms),
        f64col(|p| p.entry_error_rate),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|(_, p)| p.replicas),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|(_, p)| p.ready),
        )),
        f64col(|p| p.allocated_cpu_cores),
        f64col(|p| p.used_cpu_cores),
    ];
    write_parquet(&dir.join("timeseries.parquet"), fields, cols)
}

fn write_parquet(path: &Path, fields: Vec<Field>, cols: Vec<ArrayRef>) -> Result<()> {
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| EvalError::write(path, e))?;
    let file = std::fs::File::create(path).map_err(|e| EvalError::write(path, e))?;
    let mut w = ArrowWriter::try_new(file, schema, None).map_err(|e| EvalError::write(path, e))?;
    w.write(&batch).map_err(|e| EvalError::write(path, e))?;
    w.close().map_err(|e| EvalError::write(path, e))?;
    Ok(())
}
