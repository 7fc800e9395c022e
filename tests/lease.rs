//! One actuator applies at a time: `graphscaler actuate` processes on a real tansu broker, with
//! the twin's Kubernetes API (`graphscaler twin serve`) holding their Lease. One takes the lease,
//! the other waits as a candidate without joining the consumer group; killed without a word, the
//! holder's lease expires and the candidate takes it over; stopped cleanly, a holder releases it
//! and the next candidate takes it at once; a holder that finds another holder in the lease
//! stops applying and exits with an error naming it.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graphscaler_testkit::{create_topic, free_port, tansu, wait_port, Proc};
use serde_json::Value;

mod common;
use common::{get, repo};

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/graphscaler/leases/graphscaler-actuator";

fn actuate(kafka: u16, twin: u16, listen: u16, log: &std::path::Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_graphscaler"))
            .arg("actuate")
            .current_dir(repo())
            .env(
                "GRAPHSCALER_PIPELINE__KAFKA_BOOTSTRAP",
                format!("127.0.0.1:{kafka}"),
            )
            .env(
                "GRAPHSCALER_PIPELINE__COLLECT__KUBERNETES_URL",
                format!("http://127.0.0.1:{twin}"),
            )
            .env("GRAPHSCALER_PIPELINE__COLLECT__NAMESPACE", "boutique")
            .env(
                "GRAPHSCALER_PIPELINE__METRICS_LISTEN",
                format!("127.0.0.1:{listen}"),
            )
            .env("GRAPHSCALER_PIPELINE__LEASE__NAMESPACE", "graphscaler")
            .env("GRAPHSCALER_PIPELINE__LEASE__DURATION_S", "3")
            .env("GRAPHSCALER_PIPELINE__LEASE__RENEW_DEADLINE_S", "2")
            .env("GRAPHSCALER_PIPELINE__LEASE__RETRY_S", "0.5")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The stage's `graphscaler_leader` gauge, once its metrics server answers.
fn leader(listen: u16) -> Option<f64> {
    let (_, body) = get(listen, "/metrics");
    body.lines()
        .find(|l| l.starts_with("graphscaler_leader{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn lease(twin: u16) -> Value {
    let (code, body) = get(twin, LEASE);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn holder(twin: u16) -> String {
    lease(twin)["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits up to `limit` for `ok`.
fn until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_actuator_holds_the_lease_and_another_takes_over_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kafka = free_port();
    let _broker = tansu(d, kafka, "memory://tansu/");
    for t in ["graphscaler.actions.v1", "graphscaler.audit.v1"] {
        create_topic(kafka, t, 1);
    }
    create_topic(kafka, "graphscaler.telemetry.services.v1", 3);
    let twin = free_port();
    let _twin = Proc(
        Command::new(env!("CARGO_BIN_EXE_graphscaler"))
            .args([
                "twin",
                "serve",
                "--listen",
                &format!("127.0.0.1:{twin}"),
                "--namespace",
                "boutique",
            ])
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("twin.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(twin, "the twin");
    let (la, lb) = (free_port(), free_port());
    let mut a = actuate(kafka, twin, la, &d.join("a.log"));
    wait_port(la, "actuator a");
    until(Duration::from_secs(30), "a takes the lease", || {
        leader(la) == Some(1.0)
    });
    let id_a = holder(twin);
    assert!(id_a.ends_with(&format!("_{}", a.0.id())), "{id_a}");
    let b = actuate(kafka, twin, lb, &d.join("b.log"));
    wait_port(lb, "actuator b");
    until(
        Duration::from_secs(10),
        "b reports itself a candidate",
        || leader(lb) == Some(0.0),
    );
    // Several renewals later a still holds it; b waits, outside the consumer group.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder(twin), id_a);
    assert_eq!(leader(lb), Some(0.0));
    let (_, metrics_b) = get(lb, "/metrics");
    assert!(
        !metrics_b.contains("graphscaler_events_in_total{"),
        "{metrics_b}"
    );
    let log_b = std::fs::read_to_string(d.join("b.log")).unwrap();
    assert!(log_b.contains("held by another actuator"), "{log_b}");
    assert_eq!(
        log_b.matches("held by another actuator").count(),
        1,
        "{log_b}"
    );

    // a dies without releasing: b takes over after the lease's duration.
    let killed = Instant::now();
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    until(Duration::from_secs(15), "b takes the expired lease", || {
        leader(lb) == Some(1.0)
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    let l = lease(twin);
    assert!(l["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .ends_with(&format!("_{}", b.0.id())));
    assert_eq!(l["spec"]["leaseTransitions"], 1);

    // b stops cleanly: it releases the lease, and c takes it at once.
    let st = Command::new("kill")
        .args(["-TERM", &b.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = b;
    let status = b.0.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(d.join("b.log")).unwrap()
    );
    assert_eq!(holder(twin), "");
    let lc = free_port();
    let c = actuate(kafka, twin, lc, &d.join("c.log"));
    wait_port(lc, "actuator c");
    let t0 = Instant::now();
    until(
        Duration::from_secs(10),
        "c takes the released lease",
        || leader(lc) == Some(1.0),
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // Someone else writes itself into the lease: c stops applying and exits, naming it.
    let mut l = lease(twin);
    l["spec"]["holderIdentity"] = Value::from("intruder");
    let body = l.to_string();
    let replaced = put(twin, LEASE, &body);
    assert!(replaced);
    let mut c = c;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.0.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "c still runs");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    let log_c = std::fs::read_to_string(d.join("c.log")).unwrap();
    assert!(log_c.contains("taken over by intruder"), "{log_c}");
    assert_eq!(holder(twin), "intruder");
}

/// `PUT path` with a JSON body on loopback `port`; true on 200.
fn put(port: u16, path: &str, body: &str) -> bool {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.starts_with("HTTP/1.1 200")
}
