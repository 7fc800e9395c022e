//! The campaign scripts' Python helpers on small inputs: `scripts/seeds.py` pools training
//! seeds, counts a run pooled twice once, and writes one table per scenario; `scripts/select.py`
//! chooses a checkpoint and its act rule on validation; `scripts/results.py` reports the kept
//! campaign across seeds.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeds_py(csv: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.csv");
    std::fs::write(&runs, csv).unwrap();
    let md = dir.path().join("summary.md");
    let o = Command::new("python3")
        .arg(repo().join("scripts/seeds.py"))
        .args([
            runs.to_str().unwrap(),
            md.to_str().unwrap(),
            "slo_violation_pct",
        ])
        .output()
        .expect("python3 runs");
    let text = std::fs::read_to_string(&md).unwrap_or_default();
    (
        o.status.success(),
        text,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn seeds_py_counts_a_run_pooled_twice_once_and_writes_one_table_per_scenario() {
    let reference = "peak,tuned-hpa,0,1,1.0\npeak,tuned-hpa,1,2,3.0\nrush,tuned-hpa,0,1,2.0\n";
    let a = "peak,a-1,0,1,4.0\npeak,a-1,1,2,6.0\nrush,a-1,0,1,8.0\n";
    let b = "peak,a-2,0,1,0.0\npeak,a-2,1,2,2.0\nrush,a-2,0,1,4.0\n";
    let header = "scenario,policy,replay,seed,slo_violation_pct\n";
    // The reference's runs, then each training's evaluation with the reference again in it.
    let pooled = format!("{header}{reference}{a}{reference}{b}");
    let (ok, text, err) = seeds_py(&pooled);
    assert!(ok, "{err}");
    assert_eq!(text.matches("**peak**").count(), 1, "{text}");
    assert_eq!(text.matches("**rush**").count(), 1, "{text}");
    // The tuned HPA's peak runs are 1 and 3 (not four runs), the group's seeds 5 and 1.
    assert!(text.contains("| tuned-hpa | — | 2.00 ["), "{text}");
    assert!(text.contains("| a | 2 | 3.00 ["), "{text}");
    let once = seeds_py(&format!("{header}{reference}{a}{b}")).1;
    assert_eq!(text, once);
    // The same run with different figures is an error, not a silent choice.
    let (ok, _, err) = seeds_py(&format!("{header}{reference}peak,tuned-hpa,0,1,9.0\n"));
    assert!(
        !ok && err.contains("appears twice with different figures"),
        "{err}"
    );
}

#[test]
fn select_py_chooses_the_checkpoint_and_the_act_rule_on_validation() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.csv");
    let md = dir.path().join("validation.md");
    // Seed 1: the mode of the final model does nothing (85 %), its draws violate least; seed 2:
    // two candidates tie within 0.05 points, the lower CAF wins, then the mode; the tuned HPA's
    // rows are not candidates.
    let csv = "scenario,policy,slo_violation_pct,caf\n\
        peak,a-1-at100,85.0,0.3\nrush,a-1-at100,85.0,0.3\n\
        peak,a-1-at100-sample,10.0,2.0\nrush,a-1-at100-sample,20.0,2.0\n\
        peak,a-1-at50-mode,40.0,1.0\nrush,a-1-at50-mode,40.0,1.0\n\
        peak,a-2-at100-mode,1.00,0.9\npeak,a-2-at100-sample,1.04,0.9\n\
        peak,a-2-at50-sample,1.02,0.8\npeak,tuned-hpa,0.0,1.0\n";
    std::fs::write(&runs, csv).unwrap();
    let o = Command::new("python3")
        .arg(repo().join("scripts/select.py"))
        .args([runs.to_str().unwrap(), md.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "a-1 a-1-at100 sample\na-2 a-2-at50 sample\n"
    );
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("| a | 1 | 100 | mode | 2 | 85.00 | 0.30 |  |"),
        "{text}"
    );
    assert!(
        text.contains("| a | 1 | 100 | sample | 2 | 15.00 | 2.00 | ✔ |"),
        "{text}"
    );
    // Equal figures: the mode.
    std::fs::write(&runs, "scenario,policy,slo_violation_pct,caf\npeak,b-1-at9-sample,1.0,1.0\npeak,b-1-at9-mode,1.0,1.0\n").unwrap();
    let o = Command::new("python3")
        .arg(repo().join("scripts/select.py"))
        .args([runs.to_str().unwrap(), md.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "b-1 b-1-at9 mode\n");
}

#[test]
fn results_py_reports_each_baseline_across_its_kept_seeds_and_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("campaigns/baselines");
    let header = "scenario,policy,replay,seed,slo_violation_pct,caf,actions_per_hour\n";
    let hpa = "rush,tuned-hpa,0,1,1.0,1.0,40\nrush,tuned-hpa,1,2,1.0,1.0,40\n";
    std::fs::create_dir_all(kept.join("tuned-hpa")).unwrap();
    std::fs::write(
        kept.join("tuned-hpa/eval-runs.csv"),
        format!("{header}{hpa}"),
    )
    .unwrap();
    let train = "global_step,charts/mean_reward,charts/slo_vio,charts/nothing_frac\n\
        4000,-3.0,0.5,0.1\n8000,-2.0,0.25,0.0\n";
    for (seed, slo, rule) in [(1, "2.0", "mode"), (2, "4.0", "sample")] {
        let d = kept.join(format!("gat-ppo-{seed}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("eval-runs.csv"),
            format!("{header}{hpa}rush,gat-ppo-{seed},0,1,{slo},0.5,10\nrush,gat-ppo-{seed},1,2,{slo},0.5,10\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("chosen.txt"),
            format!("gat-ppo-{seed} gat-ppo-{seed}-at8000 {rule}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("validation.md"),
            format!("| group | training seed | candidate (decisions) | act | validation runs | SLO viol % | CAF | chosen |\n|---|---|---|---|---|---|---|---|\n| gat-ppo | {seed} | 8000 | {rule} | 2 | 0.{seed}0 | 1.50 | ✔ |\n"),
        )
        .unwrap();
        std::fs::write(d.join("train.csv"), train).unwrap();
    }
    let o = Command::new("python3")
        .current_dir(dir.path())
        .arg(repo().join("scripts/results.py"))
        .arg("docs/results.md")
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(dir.path().join("docs/results.md")).unwrap();
    // The mean over the two seeds (2 and 4), its interval over seeds, every run above the HPA's.
    assert!(
        md.contains("| rush | 1.00 | 3.00 [2.00, 4.00], IQM 3.00, δ +1.00 large |"),
        "{md}"
    );
    assert!(
        md.contains("| gat-ppo | 2 | 8000 | sample | 0.20 | 1.50 |"),
        "{md}"
    );
    assert!(
        md.contains("gat-ppo seeds 3, 4, 5; mlp-ppo seeds 1, 2, 3, 4, 5"),
        "{md}"
    );
    assert!(
        md.contains("(`BOOTSTRAP=1`): no training kept in `campaigns/baselines-bootstrap/` yet"),
        "{md}"
    );
    assert!(dir
        .path()
        .join("docs/img/results-baselines-mean-reward.svg")
        .is_file());
    // A run whose figures differ between two files is an error, not a silent pick.
    std::fs::write(
        kept.join("gat-ppo-2/eval-runs.csv"),
        format!("{header}rush,tuned-hpa,0,1,9.0,1.0,40\nrush,gat-ppo-2,0,1,4.0,0.5,10\n"),
    )
    .unwrap();
    let o = Command::new("python3")
        .current_dir(dir.path())
        .arg(repo().join("scripts/results.py"))
        .arg("docs/results.md")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("differs from the same run"));
}
