//! The tuned HPA: a sweep of CPU targets, and the rule that picks one.
//!
//! Every target runs on every scenario and replay. The target with the lowest mean SLO
//! violation % across all runs sets the bar; every target whose 95% interval of SLO violation %
//! overlaps the best one's (it is not clearly worse) competes on cost, and the cheapest (fewest
//! allocated core-seconds) wins. So the tuned HPA has as few SLO violations as the HPA can get,
//! at the lowest cost that gets them.
//!
//! The **frontier** ([`frontier`]) is the same sweep per scenario: each target's SLO violation %
//! against its CAF (mean and 95% CI over replays), and the Pareto-optimal targets among them
//! (no other target both violates less and costs less). [`frontier_at`] reads the frontier's
//! SLO violation % at a given CAF (linear between Pareto points, flat beyond the dearest); a
//! policy whose point lies on or below it scales at least as well as some HPA target, at its
//! cost.

use serde::{Deserialize, Serialize};

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

/// `names` without repeats, in the order first seen (scenarios or policies of a campaign).
pub fn first_seen<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = vec![];
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The mean and 95% CI of SLO violation % and of CAF over `runs`.
pub fn slo_and_caf(runs: &[&RunResult]) -> (MeanCi, MeanCi) {
    let v = |f: fn(&RunResult) -> f64| mean_ci(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    (v(|r| r.metrics.slo_violation_pct), v(|r| r.metrics.caf))
}

/// One target's point on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierPoint {
    /// Scenario.
    pub scenario: String,
    /// Target, percent.
    pub target: u32,
    /// SLO violation %, mean over replays.
    pub slo_violation_pct: f64,
    /// Its 95% half-width.
    pub slo_violation_hw: f64,
    /// CAF, mean over replays.
    pub caf: f64,
    /// Its 95% half-width.
    pub caf_hw: f64,
    /// Replays.
    pub n: usize,
    /// Pareto-optimal among the targets of its scenario.
    pub pareto: bool,
}

/// The HPA frontier of every scenario of `runs` (`hpa-<target>` policies), scenarios in the
/// order they first appear, targets in the order given.
pub fn frontier(runs: &[RunResult], targets: &[u32]) -> Vec<FrontierPoint> {
    let scenarios = first_seen(runs.iter().map(|r| r.scenario.as_str()));
    let mut out = vec![];
    for sc in scenarios {
        let start = out.len();
        for t in targets {
            let name = format!("hpa-{t}");
            let mine: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.policy == name && r.scenario == sc)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let (slo, caf) = slo_and_caf(&mine);
            out.push(FrontierPoint {
                scenario: sc.to_string(),
                target: *t,
                slo_violation_pct: slo.mean,
                slo_violation_hw: slo.half_width,
                caf: caf.mean,
                caf_hw: caf.half_width,
                n: mine.len(),
                pareto: false,
            });
        }
        mark_pareto(&mut out[start..]);
    }
    out
}

/// Marks the points no other point dominates (at most as many violations and at most the
/// cost, and better in one); points with a non-finite coordinate are never on it.
fn mark_pareto(points: &mut [FrontierPoint]) {
    let ok = |p: &FrontierPoint| p.slo_violation_pct.is_finite() && p.caf.is_finite();
    let flags: Vec<bool> = points
        .iter()
        .map(|p| {
            ok(p)
                && !points.iter().any(|q| {
                    ok(q)
                        && q.slo_violation_pct <= p.slo_violation_pct
                        && q.caf <= p.caf
                        && (q.slo_violation_pct < p.slo_violation_pct || q.caf < p.caf)
                })
        })
        .collect();
    for (p, f) in points.iter_mut().zip(flags) {
        p.pareto = f;
    }
}

/// The frontier's SLO violation % on `scenario` at `caf`: linear between its Pareto points
/// (by CAF), the dearest point's beyond it; `None` below the cheapest point (cheaper than any
/// HPA target: nothing to compare with) or without a frontier for `scenario`.
pub fn frontier_at(points: &[FrontierPoint], scenario: &str, caf: f64) -> Option<f64> {
    let mut p: Vec<&FrontierPoint> = points
        .iter()
        .filter(|p| p.pareto && p.scenario == scenario)
        .collect();
    p.sort_by(|a, b| a.caf.total_cmp(&b.caf));
    let (first, last) = (p.first()?, p.last()?);
    if !caf.is_finite() || caf < first.caf {
        return None;
    }
    if caf >= last.caf {
        return Some(last.slo_violation_pct);
    }
    p.windows(2).find_map(|w| {
        (caf <= w[1].caf).then(|| {
            let f = (caf - w[0].caf) / (w[1].caf - w[0].caf);
            w[0].slo_violation_pct + f * (w[1].slo_violation_pct - w[0].slo_violation_pct)
        })
    })
}

/// The cheapest Pareto point of `scenario`: a policy cheaper than it that violates no more
/// lies below the whole frontier.
pub fn cheapest<'a>(points: &'a [FrontierPoint], scenario: &str) -> Option<&'a FrontierPoint> {
    points
        .iter()
        .filter(|p| p.pareto && p.scenario == scenario)
        .min_by(|a, b| a.caf.total_cmp(&b.caf))
}

/// Writes the frontier as CSV (one row per scenario and target).
pub fn write_frontier(path: &std::path::Path, points: &[FrontierPoint]) -> crate::Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| crate::EvalError::write(path, e))?;
    for p in points {
        w.serialize(p)
            .map_err(|e| crate::EvalError::write(path, e))?;
    }
    w.flush().map_err(|e| crate::EvalError::write(path, e))?;
    Ok(())
}

/// Reads a frontier written by [`write_frontier`] (`graphscaler hpa-sweep`'s `frontier.csv`);
/// a row that is not a frontier point is an error naming the file and the row.
pub fn read_frontier(path: &std::path::Path) -> Result<Vec<FrontierPoint>, String> {
    let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    r.deserialize()
        .enumerate()
        .map(|(i, row)| {
            row.map_err(|e| {
                format!(
                    "{}: row {} is not a frontier point (hpa-sweep's frontier.csv): {e}",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(target: u32, slo: f64, caf: f64) -> FrontierPoint {
        FrontierPoint {
            scenario: "rush".into(),
            target,
            slo_violation_pct: slo,
            slo_violation_hw: 0.1,
            caf,
            caf_hw: 0.01,
            n: 5,
            pareto: false,
        }
    }

    #[test]
    fn the_frontier_keeps_the_undominated_targets_and_reads_between_them() {
        // 40: costly and safe; 60: cheaper, a little worse; 70: dominated by 60; 80: cheapest.
        let mut p = vec![
            pt(40, 0.0, 1.2),
            pt(60, 0.5, 0.8),
            pt(70, 0.9, 0.85),
            pt(80, 3.0, 0.6),
            pt(90, f64::NAN, 0.5),
        ];
        mark_pareto(&mut p);
        let on: Vec<u32> = p.iter().filter(|x| x.pareto).map(|x| x.target).collect();
        assert_eq!(on, [40, 60, 80]);
        assert_eq!(
            frontier_at(&p, "rush", 0.5),
            None,
            "cheaper than every target"
        );
        assert_eq!(cheapest(&p, "rush").map(|c| c.target), Some(80));
        assert_eq!(frontier_at(&p, "rush", 0.6), Some(3.0));
        let mid = frontier_at(&p, "rush", 0.7).unwrap();
        assert!((mid - 1.75).abs() < 1e-9, "{mid}");
        assert!((frontier_at(&p, "rush", 1.0).unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(
            frontier_at(&p, "rush", 2.0),
            Some(0.0),
            "flat beyond the dearest"
        );
        assert_eq!(frontier_at(&p, "peak", 1.0), None);
        // Round trip through the CSV.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("frontier.csv");
        write_frontier(&f, &p[..4]).unwrap();
        assert_eq!(read_frontier(&f).unwrap(), p[..4]);
        std::fs::write(&f, "scenario,target\nrush,x\n").unwrap();
        let e = read_frontier(&f).unwrap_err();
        assert!(e.contains("frontier.csv") && e.contains("row 1"), "{e}");
    }

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
