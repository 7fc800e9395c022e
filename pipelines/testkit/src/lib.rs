//! What the tests and benchmarks start on loopback, shared so that each is written once: the real
//! services (the tansu Kafka-protocol broker, Prometheus) as processes that end with the test,
//! free ports, and finding a binary. For tests only: it panics, with a message naming what is
//! missing, where a test cannot go on.

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `bin` on the `PATH` or in `~/.cargo/bin` (where `cargo install tansu` puts it).
pub fn which(bin: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(PathBuf::from)
        .chain(home)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 30 s for something to listen on `port`.
pub fn wait_port(port: u16, what: &str) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tansu broker on `port` with `storage` (`sqlite://broker.db`, `memory://tansu/`) in `dir`,
/// its log appended to `dir/tansu-<port>.log`; returns once it listens.
pub fn tansu(dir: &Path, port: u16, storage: &str) -> Proc {
    tansu_with(dir, port, storage, &[])
}

/// [`tansu`] with more broker arguments (`--authentication`: SASL/SCRAM required).
pub fn tansu_with(dir: &Path, port: u16, storage: &str, extra: &[&str]) -> Proc {
    let bin =
        which("tansu").expect("the `tansu` broker is needed for this test: run scripts/setup.sh");
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("tansu-{port}.log")))
        .unwrap();
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            storage,
        ])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_port(port, "tansu");
    Proc(child)
}

/// Creates `topic` with `partitions` on the tansu broker at `port`.
pub fn create_topic(port: u16, topic: &str, partitions: u32) {
    let out = Command::new(which("tansu").unwrap())
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://127.0.0.1:{port}"),
            "--partitions",
            &partitions.to_string(),
            topic,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "creating {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus on a free loopback port with `config` as its configuration; its log goes
/// to `dir/prometheus.log`. Returns the process and its base URL.
pub fn prometheus(dir: &Path, config: &str) -> (Proc, String) {
    let port = free_port();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let bin = which("prometheus")
        .expect("the `prometheus` binary is needed for this test: run scripts/setup.sh");
    let p = Proc(
        Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(port, "prometheus");
    (p, format!("http://127.0.0.1:{port}"))
}

/// Creates SCRAM user `name` with `password` on the tansu broker at `port` (before it requires
/// authentication: an unauthenticated admin request is refused after).
pub fn create_user(port: u16, name: &str, password: &str) {
    let out = Command::new(which("tansu").unwrap())
        .args([
            "user",
            "create",
            "--broker",
            &format!("tcp://127.0.0.1:{port}"),
            "--mechanism",
            "scram512",
            name,
            password,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "creating user {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
