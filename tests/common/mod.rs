//! What the command's tests share.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graphscaler_testkit::Proc;

/// The repository root (the tests run the binary from there).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `graphscaler policy` as a process of its own on the broker at `port`, `/metrics` on `listen`,
/// its log to `log`, with the environment variables `env` added.
pub fn policy_stage(port: u16, listen: u16, log: std::fs::File, env: &[(&str, String)]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_graphscaler"))
            .arg("policy")
            .current_dir(repo())
            .env(
                "GRAPHSCALER_PIPELINE__KAFKA_BOOTSTRAP",
                format!("127.0.0.1:{port}"),
            )
            .env(
                "GRAPHSCALER_PIPELINE__METRICS_LISTEN",
                format!("127.0.0.1:{listen}"),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// `GET path` on loopback `port`: the status code and the body (HTTP/1.0, so that no server
/// chunks it).
pub fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// Polls `path` until its status is `want` (within `limit`), returning the body.
pub fn until(port: u16, path: &str, want: u16, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let (code, body) = get(port, path);
        if code == want {
            return body;
        }
        assert!(
            t0.elapsed() < limit,
            "{path} stayed {code} ({body}) for {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prometheus' HTTP API on loopback `port`: `GET /api/v1/query?query=<promql, percent-encoded>`,
/// the status code and the body.
pub fn prom_query(port: u16, promql: &str) -> (u16, String) {
    let mut enc = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    get(port, &format!("/api/v1/query?query={enc}"))
}
