//! `graphscaler actions tail` / `decisions tail` as a user subscribes: the policy stage, a
//! process of its own, decides on snapshots published to a real tansu broker, and the tails read
//! what it published from the beginning, an offset, a time, and as a consumer group.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use graphscaler_testkit::{create_topic, free_port, tansu};
use serde_json::Value;

mod common;
use common::{policy_stage, repo};

/// `graphscaler args` against the broker on `port`.
fn graphscaler(port: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args(args)
        .current_dir(repo())
        .env(
            "GRAPHSCALER_PIPELINE__KAFKA_BOOTSTRAP",
            format!("127.0.0.1:{port}"),
        )
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// The JSON lines of a tail's output (each one an envelope).
fn lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn record(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let o = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args([
            "twin",
            "record",
            "--scenario",
            "rush",
            "--duration",
            "20m",
            "--policy",
            "tuned-hpa",
            "--out",
            store.to_str().unwrap(),
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    store
}

#[test]
fn tails_read_what_the_policy_stage_published() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = tansu(dir.path(), port, "memory://tansu/");
    for t in [
        "graphscaler.graph.snapshots.v1",
        "graphscaler.actions.v1",
        "graphscaler.decisions.v1",
    ] {
        create_topic(port, t, 1);
    }
    let store = record(dir.path());
    let log = std::fs::File::create(dir.path().join("policy.log")).unwrap();
    let _stage = policy_stage(port, free_port(), log, &[]);
    let o = graphscaler(
        port,
        &[
            "replay",
            "--snapshots",
            store.to_str().unwrap(),
            "--publish",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Every snapshot gets its decision record: 41 windows of 30 s in 20 minutes.
    let decisions = lines(&graphscaler(
        port,
        &[
            "decisions",
            "tail",
            "--from",
            "beginning",
            "--count",
            "41",
            "--for",
            "120s",
        ],
    ));
    assert_eq!(decisions.len(), 41);
    assert!(decisions
        .iter()
        .all(|d| d["source"].as_str().unwrap().starts_with("policy/")));
    let changed: usize = decisions
        .iter()
        .map(|d| d["payload"]["actions"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(changed >= 3, "the tuned HPA scaled on rush: {decisions:?}");
    // The actions, from the beginning: as many as the decisions name, each an action.
    let actions = lines(&graphscaler(
        port,
        &["actions", "tail", "--from", "beginning", "--for", "5s"],
    ));
    assert_eq!(actions.len(), changed);
    assert!(actions.iter().all(|a| a["payload"]["service"].is_string()));
    // From an offset, and from a time: the same messages.
    let from_2 = lines(&graphscaler(
        port,
        &["actions", "tail", "--from", "offset:2", "--count", "1"],
    ));
    assert_eq!(from_2, actions[2..3]);
    let all = lines(&graphscaler(
        port,
        &["actions", "tail", "--from", "time:0", "--count", "2"],
    ));
    assert_eq!(all, actions[..2]);
    let later = lines(&graphscaler(
        port,
        &[
            "actions",
            "tail",
            "--from",
            "time:4000000000",
            "--for",
            "3s",
        ],
    ));
    assert!(later.is_empty(), "nothing was published in 2096: {later:?}");
    // From the end: nothing new is published, so nothing is printed.
    assert!(lines(&graphscaler(port, &["actions", "tail", "--for", "3s"])).is_empty());
    // A consumer group goes on where it stopped.
    let group = |n: &str| {
        lines(&graphscaler(
            port,
            &[
                "actions",
                "tail",
                "--from",
                "beginning",
                "--group",
                "ops",
                "--count",
                n,
                "--for",
                "30s",
            ],
        ))
    };
    assert_eq!(group("2"), actions[..2]);
    assert_eq!(group("1"), actions[2..3]);
    // Bad starts are named.
    let o = graphscaler(port, &["actions", "tail", "--from", "offset:-3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("offset:-3"));
}

/// On `graphscaler run`'s in-process bus, `--tail` prints the same envelopes as the run goes.
#[test]
fn run_tails_its_in_process_bus() {
    let o = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args([
            "run",
            "--scenario",
            "rush",
            "--duration",
            "20m",
            "--tail",
            "actions,audit",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let envelopes: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let applied: usize = text
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix("actuate")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    let actions = envelopes
        .iter()
        .filter(|e| e["source"].as_str().unwrap().starts_with("policy/"))
        .count();
    let audit = envelopes
        .iter()
        .filter(|e| e["source"] == "actuator")
        .count();
    assert!(applied > 0);
    assert_eq!((actions, audit), (applied, applied), "{text}");
    let o = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args(["run", "--duration", "5m", "--tail", "telemetry"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no topic `telemetry`"));
}

/// A tail from a time starts at the first message stamped at or after it, whatever the broker's
/// offsets-for-times answer (tansu's is coarse): three actions, a pause, two more; a tail from
/// between them prints the two.
#[test]
fn a_tail_from_a_time_prints_what_was_published_since() {
    use graphscaler_schemas::events::ActionsTopic;
    use graphscaler_schemas::{Action, ActionKind, Envelope};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = tansu(dir.path(), port, "memory://tansu/");
    create_topic(port, "graphscaler.actions.v1", 1);
    let producer = graphscaler_bus::Producer::new(&graphscaler_bus::BusConfig {
        bootstrap: format!("127.0.0.1:{port}"),
        client_id: "tail-test".into(),
        properties: vec![],
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let publish = |replicas: u32| {
        let a = Action::new("frontend", ActionKind::SetReplicas { replicas });
        rt.block_on(producer.send::<ActionsTopic>(&Envelope::new("test", 0.0, 30.0, a)))
            .unwrap();
    };
    for r in 1..=3 {
        publish(r);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    std::thread::sleep(std::time::Duration::from_millis(500));
    for r in 4..=5 {
        publish(r);
    }
    let from = format!("time:{between:.3}");
    let got = lines(&graphscaler(
        port,
        &["actions", "tail", "--from", &from, "--for", "5s"],
    ));
    let replicas: Vec<u64> = got
        .iter()
        .map(|e| e["payload"]["kind"]["replicas"].as_u64().unwrap())
        .collect();
    assert_eq!(replicas, [4, 5]);
}
