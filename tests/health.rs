//! `/healthz` and `/readyz` of a stage as users run it: `graphscaler policy` on a real tansu
//! broker. Alive while the process answers; ready once the stage made progress (the bus answered
//! it) and only while it keeps making it: with the broker gone, `/readyz` says which stage stopped
//! and for how long, while `/healthz` still answers.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use graphscaler_testkit::{create_topic, free_port, tansu, wait_port};

mod common;
use common::{get, policy_stage, until};

#[test]
fn a_stage_is_ready_while_its_bus_answers_and_alive_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = tansu(dir.path(), port, "memory://tansu/");
    create_topic(port, "graphscaler.graph.snapshots.v1", 1);
    let listen = free_port();
    let log = std::fs::File::create(dir.path().join("policy.log")).unwrap();
    let stage = policy_stage(
        port,
        listen,
        log,
        &[
            ("GRAPHSCALER_PIPELINE__READY_AFTER_S", "4".into()),
            ("GRAPHSCALER_PIPELINE__CLIENT_ID", format!("health-{port}")),
            ("RUST_LOG", "info".into()),
        ],
    );
    wait_port(listen, "the policy stage's metrics server");
    assert_eq!(get(listen, "/healthz"), (200, "ok\n".into()));
    assert_eq!(
        until(listen, "/readyz", 200, Duration::from_secs(30)),
        "ready\n"
    );
    // `graphscaler probe`, the compose healthcheck, agrees.
    let probe = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_graphscaler"))
            .args(["probe", &format!("http://127.0.0.1:{listen}{path}")])
            .output()
            .unwrap()
    };
    let o = probe("/readyz");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ready");
    let (_, metrics) = get(listen, "/metrics");
    assert!(
        metrics.contains("graphscaler_last_progress_timestamp_seconds{stage=\"policy\"}"),
        "{metrics}"
    );

    // The broker goes away: no more progress, so not ready, naming the stage; still alive.
    drop(broker);
    let why = until(listen, "/readyz", 503, Duration::from_secs(30));
    assert!(
        why.starts_with("not ready: policy: no progress for ")
            && why.contains("the limit is 4.0 s"),
        "{why}"
    );
    assert_eq!(get(listen, "/healthz"), (200, "ok\n".into()));
    let o = probe("/readyz");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("503") && e.contains("policy: no progress for"),
        "{e}"
    );
    assert!(probe("/healthz").status.success());
    // Counted and warned: librdkafka reports the lost broker to the consumer (a bus error) or,
    // where it does not, the idle stage's probe goes unanswered.
    let (_, metrics) = get(listen, "/metrics");
    assert!(
        metrics
            .contains("graphscaler_events_rejected_total{stage=\"policy\",reason=\"bus_error\"}")
            || metrics.contains("graphscaler_bus_unanswered_total{stage=\"policy\"}"),
        "{metrics}"
    );
    drop(stage);
    let log = std::fs::read_to_string(dir.path().join("policy.log")).unwrap();
    assert!(
        log.contains("reading from the bus failed") || log.contains("the bus does not answer"),
        "{log}"
    );
}

#[test]
fn a_stage_whose_bus_never_answered_is_never_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (nobody, listen) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("policy.log")).unwrap();
    let _stage = policy_stage(
        nobody,
        listen,
        log,
        &[("GRAPHSCALER_PIPELINE__READY_AFTER_S", "2".into())],
    );
    wait_port(listen, "the policy stage's metrics server");
    // Past a probe (every 5 s) and its timeout (2 s): still alive, never ready.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(get(listen, "/healthz"), (200, "ok\n".into()));
    assert_eq!(
        get(listen, "/readyz"),
        (
            503,
            "not ready: policy: no progress since it started\n".into()
        )
    );
}
