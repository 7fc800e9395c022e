//! The campaign scripts' Python helpers on small inputs: `scripts/seeds.py` pools training
//! seeds, counts a run pooled twice once, and writes one table per scenario; `scripts/select.py`
//! chooses a checkpoint and its act rule on validation.

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
