//! The tuned HPA: a sweep of CPU targets, and the rule that picks one.
//!
//! Every target runs on every scenario and replay. The target with the lowest mean SLO
//! violation % across all runs sets the bar; every target whose 95% interval of SLO violation %
//! overlaps the best one's (it is not clearly worse) competes on cost, and the cheapest (fewest
//! allocated core-seconds) wins. So the tuned HPA has as few SLO violations as the HPA can get,
//! at the lowest cost that gets them.

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
            let v =
                |f: fn(&RunResult) -> f64| mean_ci(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
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
pub fn choose(rows: &[SweepRow]) -> Option<u32> {
    let best = rows
        .iter()
        .filter(|r| r.slo_violation_pct.mean.is_finite())
        .min_by(|a, b| {
            a.slo_violation_pct
                .mean
                .total_cmp(&b.slo_violation_pct.mean)
        })?;
    let bar = best.slo_violation_pct.hi();
    rows.iter()
        .filter(|r| r.slo_violation_pct.lo() <= bar)
        .min_by(|a, b| a.cpu_core_seconds.mean.total_cmp(&b.cpu_core_seconds.mean))
        .map(|r| r.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: u32, slo: f64, hw: f64, cost: f64) -> SweepRow {
        let c = |m, h| MeanCi {
            mean: m,
            half_width: h,
            n: 5,
        };
        SweepRow {
            target,
            slo_violation_pct: c(slo, hw),
            cpu_core_seconds: c(cost, 0.0),
            slack_pct: c(0.0, 0.0),
        }
    }

    #[test]
    fn cheapest_among_those_not_clearly_worse() {
        // Best: 40 at 1.0 ± 0.2 (bar 1.2). 50: 1.3 ± 0.2 → low 1.1 ≤ 1.2, competes. 60: 2.0 ± 0.5
        // → low 1.5, out. 70: 5 ± 4 → low 1.0, competes and is cheapest.
        let rows = vec![
            row(40, 1.0, 0.2, 900.0),
            row(50, 1.3, 0.2, 800.0),
            row(60, 2.0, 0.5, 700.0),
            row(70, 5.0, 4.0, 600.0),
        ];
        assert_eq!(choose(&rows), Some(70));
        let rows = vec![
            row(40, 1.0, 0.2, 900.0),
            row(50, 1.3, 0.2, 800.0),
            row(60, 2.0, 0.5, 700.0),
        ];
        assert_eq!(choose(&rows), Some(50));
        let rows = vec![row(40, 1.0, 0.0, 900.0), row(50, 1.3, 0.0, 800.0)];
        assert_eq!(choose(&rows), Some(40));
        assert_eq!(choose(&[]), None);
    }
}
