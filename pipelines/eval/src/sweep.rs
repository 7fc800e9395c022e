//! The tuned HPA: a sweep of CPU targets, and the rule that picks one.
//!
//! Every target runs on every scenario and replay. The chosen target is the one with the lowest
//! mean SLO violation % across scenarios; any target within `tie_pp` percentage points of that
//! minimum competes on cost, and the cheapest (fewest allocated core-seconds) wins. So the bar is
//! "as few SLO violations as the HPA can get, at the lowest cost that gets them".

use serde::Serialize;

use crate::runner::RunResult;
use crate::stats::{mean_ci, MeanCi};

/// One target's results.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// Target, percent.
    pub target: u32,
    /// SLO violation %, mean over scenarios and replays, with its CI.
    pub slo_violation_pct: MeanCi,
    /// Allocated core-seconds, mean over runs.
    pub cpu_core_seconds: MeanCi,
    /// Slack %, mean over runs.
    pub slack_pct: MeanCi,
}

/// Summarises the runs of `hpa-<target>` policies.
pub fn rows(runs: &[RunResult], targets: &[u32]) -> Vec<SweepRow> {
    targets
        .iter()
        .map(|t| {
            let name = format!("hpa-{t}");
            let mine: Vec<&RunResult> = runs.iter().filter(|r| r.policy == name).collect();
            let v = |f: fn(&RunResult) -> f64| mean_ci(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
            SweepRow {
                target: *t,
                slo_violation_pct: v(|r| r.metrics.slo_violation_pct),
                cpu_core_seconds: v(|r| r.metrics.cpu_core_seconds),
                slack_pct: v(|r| r.metrics.slack_pct),
            }
        })
        .collect()
}

/// The rule above.
pub fn choose(rows: &[SweepRow], tie_pp: f64) -> Option<u32> {
    let best = rows
        .iter()
        .map(|r| r.slo_violation_pct.mean)
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min);
    rows.iter()
        .filter(|r| r.slo_violation_pct.mean <= best + tie_pp)
        .min_by(|a, b| a.cpu_core_seconds.mean.total_cmp(&b.cpu_core_seconds.mean))
        .map(|r| r.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: u32, slo: f64, cost: f64) -> SweepRow {
        let c = |m| MeanCi { mean: m, half_width: 0.0, n: 1 };
        SweepRow { target, slo_violation_pct: c(slo), cpu_core_seconds: c(cost), slack_pct: c(0.0) }
    }

    #[test]
    fn cheapest_among_the_near_best() {
        let rows = vec![row(40, 1.0, 900.0), row(50, 1.3, 800.0), row(60, 2.0, 700.0), row(70, 5.0, 600.0)];
        assert_eq!(choose(&rows, 0.5), Some(50));
        assert_eq!(choose(&rows, 0.0), Some(40));
        assert_eq!(choose(&rows, 10.0), Some(70));
    }
}
