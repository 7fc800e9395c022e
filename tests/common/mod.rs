//! What the command's tests share.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

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
