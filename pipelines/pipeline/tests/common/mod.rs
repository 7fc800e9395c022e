//! What the stage tests share: the real services they start on loopback (tansu, Prometheus),
//! ports, and reading a topic back.

#![allow(clippy::unwrap_used, dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use graphscaler_bus::stage::unix_now;
use graphscaler_bus::transport::Subscriber;
use graphscaler_bus::BusConfig;
use graphscaler_policy::HpaConfig;
use graphscaler_scrape::collect::CollectConfig;
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use graphscaler_twin_api::{serve, LiveTwin, Shared};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use graphscaler_testkit::Proc;
pub use graphscaler_testkit::{create_topic, free_port, prometheus};

/// A tansu broker on `port` with durable (sqlite) storage in `dir`.
pub fn tansu(dir: &Path, port: u16) -> Proc {
    graphscaler_testkit::tansu(dir, port, "sqlite://broker.db")
}

/// Reads every message of `topic` from the start with a fresh consumer group.
pub async fn read_all(
    bus: &BusConfig,
    topic: &str,
    want: usize,
) -> Vec<graphscaler_bus::transport::Message> {
    let mut sub = Subscriber::kafka(
        bus,
        &format!("check-{topic}-{}", std::process::id()),
        &[topic],
    )
    .unwrap();
    let mut out = vec![];
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < Duration::from_secs(60) {
        if let Some(m) = sub.next(Duration::from_millis(500)).await.unwrap() {
            out.push(m);
        }
    }
    // Nothing beyond what was expected.
    while let Some(m) = sub.next(Duration::from_secs(2)).await.unwrap() {
        out.push(m);
    }
    out
}

pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> bool,
) -> Result<(), String> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > limit {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The HPA of the embedded configuration, syncing every 2 s (one twin tick per second).
pub fn hpa_config() -> HpaConfig {
    // One twin tick per second: the controller syncs every 2 s, with the upstream algorithm.
    HpaConfig {
        sync_period_s: 2.0,
        ..HpaConfig::default()
    }
}

/// Online Boutique on Peak for an hour, one 1 s tick per observation.
pub fn peak_twin(seed: u64) -> Twin {
    let tcfg = TwinConfig {
        observe_every_s: 1.0,
        ..TwinConfig::default()
    };
    let topo = Topology::online_boutique(&tcfg.fanout_parameters).unwrap();
    Twin::new(topo, tcfg, SloConfig::default(), Shape::Peak, 3600.0, seed).unwrap()
}

/// The scrape stage against the twin at `twin_url` (its Kubernetes API) and Prometheus at
/// `prometheus_url`, with loopback timings: a pass a second, 5 s rates and 30 s SLO windows.
pub fn loopback_collect(prometheus_url: &str, twin_url: &str) -> CollectConfig {
    CollectConfig {
        namespace: "boutique".into(),
        prometheus_url: prometheus_url.into(),
        kubernetes_url: twin_url.into(),
        interval_s: 1.0,
        timeout_s: 5.0,
        rate_window_s: 5,
        slo_window_s: 30,
        ..CollectConfig::default()
    }
}

/// `twin` behind its HTTP interfaces on a free loopback port, one tick per wall second: its
/// state, its base URL, and the sender that stops the server.
pub async fn serve_twin(twin: Twin) -> (Shared, String, tokio::sync::oneshot::Sender<()>) {
    let state = LiveTwin::new(twin, "boutique", "twin", unix_now()).shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        state.clone(),
        Duration::from_secs(1),
        async {
            let _ = stop_rx.await;
        },
    ));
    (state, url, stop)
}
