//! The campaign scripts' Python helpers on small inputs: `scripts/seeds.py` pools training
//! seeds, counts a run pooled twice once, and writes one table per scenario.

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
