//! The stages' safety guarantees with real parts on loopback (docs/pipeline.md#guarantees):
//!
//! * a real Prometheus that answers every query with an empty result (it scrapes nothing) and
//!   the twin's Kubernetes API: the scrape stage publishes the services as missing their
//!   metrics, counts it, and no stage acts — where the stages once scaled every service to one
//!   replica;
//! * a real Kafka-protocol broker (tansu): poison snapshots (parts that disagree, not JSON)
//!   and a telemetry event stamped a year ahead go to `<topic>.dlq` with their reasons, are
//!   committed, and the stages move on.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graphscaler_actuate::k8s::KubeCluster;
use graphscaler_actuate::{Actuator, Guardrails};
use graphscaler_bus::stage::{dead_letter_topic, unix_now, Clock, DeadLetter};
use graphscaler_bus::transport::{MemoryBus, Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_bus::{BusConfig, TELEMETRY_TOPICS};
use graphscaler_graph::stage::GraphStage;
use graphscaler_graph::GraphConfig;
use graphscaler_policy::Hpa;
use graphscaler_schemas::events::{ActionsTopic, ServicesTopic, SnapshotsTopic};
use graphscaler_schemas::{Envelope, ServiceObs, Snapshot, TelemetryEvent, Topic};
use graphscaler_scrape::collect::Collector;
use graphscaler_scrape::k8s as kube_io;
use graphscaler_twin_api::LiveTwin;
use tokio::sync::watch;

mod common;
use common::*;

/// The replicas of every service of the served twin.
fn replicas(state: &graphscaler_twin_api::Shared) -> Vec<(String, u32)> {
    let st = state.lock().unwrap();
    st.observation()
        .services
        .iter()
        .map(|s| (s.name.clone(), s.replicas_spec))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_prometheus_makes_no_stage_act() {
    let dir = tempfile::tempdir().unwrap();
    // The twin's Kubernetes API (deployments at their manifests' replicas), and a Prometheus
    // that scrapes nothing: every query answers `success` with `result: []`.
    let (state, twin_url, twin_stop) = serve_twin(peak_twin(3)).await;
    let (_prom, prom_url) = prometheus(
        dir.path(),
        "global:\n  scrape_interval: 1s\nscrape_configs: []\n",
    );
    let before = replicas(&state);

    let collect = loopback_collect(&prom_url, &twin_url);
    // One pass by hand: Prometheus answered, so it is no failure, but every service lacks its
    // CPU and request rate, and no global scalars are published.
    let mut c = Collector::new(collect.clone(), (200.0, 0.01))
        .await
        .unwrap();
    let pass = c.collect(unix_now()).await;
    assert!(pass.failures.is_empty(), "{:?}", pass.failures);
    let services: Vec<&ServiceObs> = pass
        .events
        .iter()
        .filter_map(|e| match e {
            TelemetryEvent::Service(s) => Some(&s.payload),
            _ => None,
        })
        .collect();
    assert_eq!(services.len(), before.len());
    for s in &services {
        assert!(
            s.missing.contains(&"cpu_usage_cores".to_string())
                && s.missing.contains(&"rps".to_string()),
            "{}: {:?}",
            s.name,
            s.missing
        );
    }
    assert!(!pass
        .events
        .iter()
        .any(|e| matches!(e, TelemetryEvent::Global(_))));
    assert!(
        pass.missing.contains(&"global".to_string()),
        "{:?}",
        pass.missing
    );
    drop(c);

    // The stages on the in-process bus, the HPA deciding, the actuator in front of the twin.
    let bus = MemoryBus::default();
    let publisher = Publisher::Memory(bus.clone());
    let (stop_tx, stop) = watch::channel(false);
    let metrics: Vec<Metrics> = ["scrape", "graph", "policy", "actuate"]
        .iter()
        .map(|n| Metrics::new(n))
        .collect();
    let graph = tokio::spawn(graphscaler_graph::stage::graph(
        bus.subscribe(&TELEMETRY_TOPICS),
        publisher.clone(),
        GraphStage {
            graph: GraphConfig {
                window_s: 1.0,
                ..GraphConfig::default()
            },
            grace: Duration::from_millis(300),
            clock: Clock::Wall,
            store: None,
            max_clock_skew_s: 60.0,
        },
        metrics[1].clone(),
        stop.clone(),
    ));
    // No scale-down stabilization: on zeros, this HPA would scale down at its first sync.
    let mut hpa_cfg = hpa_config();
    hpa_cfg.sync_period_s = 1.0;
    hpa_cfg.scale_down_stabilization_s = 0.0;
    let policy = tokio::spawn(graphscaler_policy::stage::policy(
        bus.subscribe(&[SnapshotsTopic::NAME]),
        publisher.clone(),
        Box::new(Hpa::new(50, &hpa_cfg)),
        metrics[2].clone(),
        stop.clone(),
    ));
    let kube = kube_io::client(Some(&twin_url)).await.unwrap();
    let actuate = tokio::spawn(graphscaler_actuate::stage::actuate(
        bus.subscribe(&[ActionsTopic::NAME, ServicesTopic::NAME]),
        publisher.clone(),
        Actuator::new(Guardrails::default()),
        Box::new(KubeCluster::new(kube, "boutique")),
        Clock::Wall,
        metrics[3].clone(),
        stop.clone(),
    ));
    let scraper = {
        let p = publisher.clone();
        let m = metrics[0].clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = Collector::new(collect, (200.0, 0.01)).await.unwrap();
            graphscaler_scrape::stage::scrape(c, p, Duration::from_secs(1), m, stop).await
        })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop_tx.send(true).unwrap();
    let scrape = scraper.await.unwrap();
    let graph = graph.await.unwrap().unwrap();
    let policy = policy.await.unwrap().unwrap();
    let actuate = actuate.await.unwrap().unwrap();
    let _ = twin_stop.send(());

    assert!(scrape.passes >= 5, "{scrape:?}");
    assert_eq!(
        scrape.failures, 0,
        "an empty answer is no failure: {scrape:?}"
    );
    assert!(
        scrape.missing >= scrape.passes * before.len() as u64,
        "{scrape:?}"
    );
    assert!(metrics[0].total("graphscaler_scrape_missing_total") >= scrape.missing as f64);
    assert!(graph.snapshots >= 3, "{graph:?}");
    assert!(policy.snapshots >= 3, "{policy:?}");
    assert_eq!(policy.actions, 0, "no action on missing data: {policy:?}");
    assert_eq!(actuate.applied, 0, "{actuate:?}");
    let after = replicas(&state);
    assert_eq!(after, before, "every service kept its replicas");
}

fn service_event(name: &str, t: f64) -> TelemetryEvent {
    TelemetryEvent::Service(Envelope::new(
        "test",
        t,
        1.0,
        ServiceObs {
            name: name.into(),
            replicas_spec: 2,
            replicas_ready: 2,
            replicas_unready: 0,
            cpu_request_cores: 0.1,
            cpu_limit_cores: 0.2,
            mem_request_bytes: 1e8,
            mem_limit_bytes: 2e8,
            cpu_usage_cores: 0.15,
            mem_working_set_bytes: 1e8,
            rps: 10.0,
            p50_ms: 5.0,
            p95_ms: 20.0,
            p99_ms: 40.0,
            error_rate: 0.0,
            stateful: false,
            missing: vec![],
        },
    ))
}

async fn letters(bus: &BusConfig, topic: &str, want: usize) -> Vec<DeadLetter> {
    read_all(bus, &dead_letter_topic(topic), want)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_stages_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = tansu(dir.path(), port);
    let topics = [SnapshotsTopic::NAME, ServicesTopic::NAME];
    for t in topics {
        create_topic(port, t, 1);
        create_topic(port, &dead_letter_topic(t), 1);
    }
    for t in TELEMETRY_TOPICS {
        if t != ServicesTopic::NAME {
            create_topic(port, t, 1);
        }
    }
    let bus = |name: &str| BusConfig {
        bootstrap: format!("127.0.0.1:{port}"),
        client_id: format!("safety-{name}"),
        ..BusConfig::default()
    };
    let publisher = Publisher::kafka(&bus("producer")).unwrap();

    // The policy stage: a snapshot whose lists disagree (once a panic at the same offset after
    // every restart), bytes that are not JSON, then a good snapshot.
    let good = {
        let mut s: Snapshot = serde_json::from_str(
            &serde_json::to_string(&Envelope::new(
                "graph",
                30.0,
                30.0,
                Snapshot::from_observation(
                    LiveTwin::new(peak_twin(3), "boutique", "twin", 0.0).observation(),
                ),
            ))
            .unwrap(),
        )
        .map(|e: Envelope<Snapshot>| e.payload)
        .unwrap();
        s.time_s = 30.0;
        s
    };
    let mut short = good.clone();
    short.service_x.pop();
    let mut bad_edge = good.clone();
    bad_edge.calls.src[0] = 999;
    for s in [&short, &bad_edge] {
        publisher
            .publish::<SnapshotsTopic>(&Envelope::new("graph", s.time_s, s.window_s, s.clone()))
            .await
            .unwrap();
    }
    publisher
        .publish_raw(SnapshotsTopic::NAME, "graph", b"{not json".to_vec())
        .await
        .unwrap();
    publisher
        .publish::<SnapshotsTopic>(&Envelope::new("graph", 30.0, 30.0, good.clone()))
        .await
        .unwrap();
    let run_policy = |name: &'static str| async move {
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(graphscaler_policy::stage::policy(
            Subscriber::kafka(&bus(name), "policy", &[SnapshotsTopic::NAME]).unwrap(),
            Publisher::kafka(&bus(name)).unwrap(),
            Box::new(Hpa::new(50, &hpa_config())),
            Metrics::new("policy"),
            stop,
        ));
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap()
    };
    let first = run_policy("policy-1").await;
    assert_eq!((first.snapshots, first.undecodable), (1, 3), "{first:?}");
    let dlq = letters(&bus("check"), SnapshotsTopic::NAME, 3).await;
    assert_eq!(dlq.len(), 3, "{dlq:?}");
    assert_eq!(
        dlq[0].reason,
        format!(
            "snapshot at 30 s: `service_x` has {} entries for {} services",
            good.services.len() - 1,
            good.services.len()
        )
    );
    assert!(
        dlq[1]
            .reason
            .contains("edge 0 of `calls` has source index 999"),
        "{}",
        dlq[1].reason
    );
    assert!(
        dlq[2].reason.contains("not an event of"),
        "{}",
        dlq[2].reason
    );
    assert_eq!(dlq[2].payload, "{not json");
    assert!(dlq
        .iter()
        .all(|l| l.stage == "policy" && l.topic == SnapshotsTopic::NAME));
    // Committed: the same group after a restart starts after them.
    let again = run_policy("policy-2").await;
    assert_eq!((again.snapshots, again.undecodable), (0, 0), "{again:?}");

    // The graph stage: an event stamped a year ahead is refused and dead-lettered; the events
    // after it still make snapshots.
    let now = unix_now();
    publisher
        .publish_telemetry(&service_event("web", now + 3.2e7))
        .await
        .unwrap();
    for k in 0..6 {
        publisher
            .publish_telemetry(&service_event("web", now + k as f64))
            .await
            .unwrap();
    }
    let (stop_tx, stop) = watch::channel(false);
    let m = Metrics::new("graph");
    let graph = tokio::spawn(graphscaler_graph::stage::graph(
        Subscriber::kafka(&bus("graph"), "graph", &TELEMETRY_TOPICS).unwrap(),
        Publisher::kafka(&bus("graph")).unwrap(),
        GraphStage {
            graph: GraphConfig {
                window_s: 1.0,
                ..GraphConfig::default()
            },
            grace: Duration::from_millis(200),
            clock: Clock::Wall,
            store: None,
            max_clock_skew_s: 60.0,
        },
        m.clone(),
        stop,
    ));
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop_tx.send(true).unwrap();
    let graph = graph.await.unwrap().unwrap();
    assert_eq!(graph.undecodable, 1, "{graph:?}");
    assert_eq!(graph.events, 6, "{graph:?}");
    assert!(graph.snapshots >= 5, "{graph:?}");
    let dlq = letters(&bus("check"), ServicesTopic::NAME, 1).await;
    assert_eq!(dlq.len(), 1);
    assert!(
        dlq[0].reason.contains("more than 60 s ahead of now"),
        "{}",
        dlq[0].reason
    );
}
