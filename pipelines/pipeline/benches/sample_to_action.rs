//! Sample-to-action latency through the broker: from publishing the telemetry event that closes
//! a window to receiving the audit record of the action decided on that window's snapshot —
//! scrape topic → graph job (cut, snapshot) → snapshot topic → policy → actions topic →
//! actuator (guardrails) → audit topic. The scrape interval and the window's own length are
//! excluded; the cluster call is an in-memory stand-in (the Kubernetes API's latency is not
//! ours to measure here).
//!
//! The same procedure over the in-process bus is the baseline, timed in the same run.
//!
//! ```text
//! cargo bench -p graphscaler-pipeline --bench sample_to_action
//! ```
//! (needs `tansu` on the PATH or in ~/.cargo/bin: scripts/setup.sh installs it)

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use graphscaler_actuate::{Actuator, Cluster, Guardrails, Workload};
use graphscaler_bus::stage::Clock;
use graphscaler_bus::transport::{MemoryBus, Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_bus::{BusConfig, TELEMETRY_TOPICS};
use graphscaler_graph::stage::GraphStage;
use graphscaler_graph::GraphConfig;
use graphscaler_policy::SnapshotPolicy;
use graphscaler_schemas::events::{ActionsTopic, AuditTopic, ServicesTopic, SnapshotsTopic};
use graphscaler_schemas::{Action, ActionKind, Snapshot, TelemetryEvent, Topic};
use graphscaler_twin::{Shape, Twin};
use tokio::sync::watch;

/// One action per snapshot, on its busiest service.
struct OnePerSnapshot;

impl SnapshotPolicy for OnePerSnapshot {
    fn name(&self) -> String {
        "bench".into()
    }
    fn decide(&mut self, s: &Snapshot) -> Vec<Action> {
        let i = (0..s.services.len())
            .max_by(|a, b| s.service_x[*a][0].total_cmp(&s.service_x[*b][0]))
            .unwrap_or(0);
        let cur = s.replicas_spec.get(i).copied().unwrap_or(1);
        vec![Action::new(
            s.services[i].clone(),
            ActionKind::SetReplicas { replicas: cur + 1 },
        )]
    }
}

/// An instant cluster.
struct Instant0;

impl Cluster for Instant0 {
    fn workload(&self, _: &str) -> Option<Workload> {
        Some(Workload {
            replicas: 1,
            cpu_request_cores: 0.1,
            cpu_limit_m: Some(500),
        })
    }
    fn free_cpu_cores(&self) -> f64 {
        100.0
    }
    fn apply(&mut self, _: &Action) -> Result<(), String> {
        Ok(())
    }
}

fn ticks(n: usize) -> Vec<Vec<TelemetryEvent>> {
    let mut twin = Twin::online_boutique(Shape::Peak, 15.0 * n as f64 + 15.0, 3).unwrap();
    let mut prev = None;
    let mut out = vec![];
    while !twin.done() && out.len() < n {
        let (obs, _) = twin.advance();
        out.push(TelemetryEvent::changes_since(prev.as_ref(), &obs, "bench"));
        prev = Some(obs);
    }
    out
}

struct Pipeline {
    publisher: Publisher,
    audit: Subscriber,
    stops: Vec<watch::Sender<bool>>,
}

async fn start(
    publisher: impl Fn(&str) -> Publisher,
    subscriber: impl Fn(&str, &[&str]) -> Subscriber,
) -> Pipeline {
    let mut stops = vec![];
    let mut stop = || {
        let (tx, rx) = watch::channel(false);
        stops.push(tx);
        rx
    };
    let g = GraphStage {
        graph: GraphConfig {
            window_s: 15.0,
            stale_windows: 2,
            workers: 1,
            cluster: None,
        },
        grace: Duration::ZERO,
        clock: Clock::Event,
        store: None,
        max_clock_skew_s: 60.0,
    };
    tokio::spawn(graphscaler_graph::stage::graph(
        subscriber("graph", &TELEMETRY_TOPICS),
        publisher("graph"),
        g,
        Metrics::new("graph"),
        stop(),
    ));
    tokio::spawn(graphscaler_policy::stage::policy(
        subscriber("policy", &[SnapshotsTopic::NAME]),
        publisher("policy"),
        Box::new(OnePerSnapshot),
        Metrics::new("policy"),
        stop(),
    ));
    let rails = Guardrails {
        cooldown_s: 0.0,
        stale_after_s: 1e9,
        ..Guardrails::default()
    };
    tokio::spawn(graphscaler_actuate::stage::actuate(
        subscriber("actuate", &[ActionsTopic::NAME, ServicesTopic::NAME]),
        publisher("actuate"),
        Actuator::new(rails),
        Box::new(Instant0),
        Clock::Event,
        Metrics::new("actuate"),
        stop(),
    ));
    Pipeline {
        publisher: publisher("scrape"),
        audit: subscriber("audit", &[AuditTopic::NAME]),
        stops,
    }
}

/// Publishes tick after tick; for every tick after the first, the latency from publishing its
/// first event (which closes the previous window) to the previous window's audit record.
async fn measure(p: &mut Pipeline, ticks: &[Vec<TelemetryEvent>], warmup: usize) -> Vec<f64> {
    let mut lat = vec![];
    for (k, evs) in ticks.iter().enumerate() {
        let t0 = Instant::now();
        for e in evs {
            p.publisher.publish_telemetry(e).await.unwrap();
        }
        if k == 0 {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = p.audit.next(Duration::from_millis(50)).await.unwrap();
            if let Some(m) = m {
                p.audit.commit(&m).unwrap();
                if k > warmup {
                    lat.push(t0.elapsed().as_secs_f64());
                }
                break;
            }
            assert!(Instant::now() < deadline, "no audit record for tick {k}");
        }
    }
    for s in &p.stops {
        let _ = s.send(true);
    }
    lat
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = 120;
    let warmup = 10;
    let ticks = ticks(n);
    let events: usize = ticks.iter().map(Vec::len).sum();

    // Baseline: the in-process bus.
    let bus = MemoryBus::default();
    let b2 = bus.clone();
    let mut p = start(
        move |_| Publisher::Memory(bus.clone()),
        move |_, t| b2.subscribe(t),
    )
    .await;
    let mut mem = measure(&mut p, &ticks, warmup).await;

    // Through a real broker.
    if graphscaler_testkit::which("tansu").is_none() {
        eprintln!("tansu not found: run scripts/setup.sh");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = graphscaler_testkit::free_port();
    let broker = graphscaler_testkit::tansu(dir.path(), port, "memory://tansu/");
    for (t, parts) in TELEMETRY_TOPICS.iter().map(|t| (*t, 3)).chain([
        (SnapshotsTopic::NAME, 1),
        (ActionsTopic::NAME, 1),
        (AuditTopic::NAME, 1),
    ]) {
        graphscaler_testkit::create_topic(port, t, parts);
    }
    let cfg = move |name: &str| BusConfig {
        bootstrap: format!("127.0.0.1:{port}"),
        client_id: format!("bench-{name}"),
        ..BusConfig::default()
    };
    let mut p = start(
        move |n| Publisher::kafka(&cfg(n)).unwrap(),
        move |n, t| Subscriber::kafka(&cfg(n), n, t).unwrap(),
    )
    .await;
    // Let the consumer groups settle before timing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut kafka = measure(&mut p, &ticks, warmup).await;
    drop(broker);

    println!("sample_to_action: Online Boutique, {n} ticks ({events} events), first {warmup} windows not timed; one action per snapshot");
    for (name, v) in [("in-process bus", &mut mem), ("tansu broker  ", &mut kafka)] {
        let (p50, p99, max) = (pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
        println!(
            "  {name}  p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   ({} windows)",
            p50 * 1e3,
            p99 * 1e3,
            max * 1e3,
            v.len()
        );
    }
    println!(
        "  broker / in-process at p50: {:.1}x",
        pct(&mut kafka, 0.5) / pct(&mut mem, 0.5)
    );
}
