//! The whole loop end to end, with real parts on loopback: the twin behind its HTTP interfaces
//! (Prometheus exposition, Kiali graph API, Kubernetes API), a real Prometheus server (Debian's
//! package) scraping it, a real Kafka-protocol broker (tansu, durable sqlite storage) between the
//! stages, and the stages themselves: scrape (kube crate, PromQL, Kiali) → graph job → policy
//! (the tuned HPA) → actuator (kube crate, scale subresource) → the twin.
//!
//! Half-way through, the scraper is stopped and a new one started, then the broker is killed and
//! restarted on the same storage. At the end every count matches from stage to stage, the HPA
//! run again over the snapshots on the topic decides exactly the actions on the actions topic,
//! and the twin's replicas are what the applied actions set.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use graphscaler_actuate::k8s::KubeCluster;
use graphscaler_actuate::{Actuator, Guardrails};
use graphscaler_bus::stage::{unix_now, Clock};
use graphscaler_bus::transport::{Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_bus::{BusConfig, TELEMETRY_TOPICS};
use graphscaler_graph::stage::GraphStage;
use graphscaler_graph::GraphConfig;
use graphscaler_policy::Hpa;
use graphscaler_policy::SnapshotPolicy;
use graphscaler_schemas::events::{
    ActionsTopic, AuditTopic, DecisionsTopic, ServicesTopic, SnapshotsTopic,
};
use graphscaler_schemas::{ActionKind, Topic};
use graphscaler_scrape::collect::{CollectConfig, Collector};
use graphscaler_scrape::k8s as kube_io;
use tokio::sync::watch;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loop_through_a_real_broker_and_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The twin, one 1 s tick per wall second, behind its interfaces.
    let (state, twin_url, twin_stop) = serve_twin(peak_twin(7)).await;

    // Prometheus scraping it every second.
    let (_prom, prom_url) = prometheus(
        d,
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: twin\n    static_configs:\n      - targets: ['{}']\n", twin_url.trim_start_matches("http://")),
    );

    // The broker, durable, and the topics.
    let kafka_port = free_port();
    let mut broker = tansu(d, kafka_port);
    for t in TELEMETRY_TOPICS {
        create_topic(kafka_port, t, 3);
    }
    for t in [
        SnapshotsTopic::NAME,
        ActionsTopic::NAME,
        AuditTopic::NAME,
        DecisionsTopic::NAME,
    ] {
        create_topic(kafka_port, t, 1);
    }
    let bus = |name: &str| BusConfig {
        bootstrap: format!("127.0.0.1:{kafka_port}"),
        client_id: format!("e2e-{name}"),
        ..BusConfig::default()
    };

    let collect = CollectConfig {
        kiali_url: twin_url.clone(),
        ..loopback_collect(&prom_url, &twin_url)
    };
    let slo = (200.0, 0.01);
    let (stop_scrape_tx, stop_scrape) = watch::channel(false);
    let (stop_graph_tx, stop_graph) = watch::channel(false);
    let (stop_policy_tx, stop_policy) = watch::channel(false);
    let (stop_act_tx, stop_act) = watch::channel(false);
    let m_scrape = Metrics::new("scrape");
    let m_graph = Metrics::new("graph");

    // Prometheus has the Istio series before the loop starts.
    let prom_q = format!("{prom_url}/api/v1/query");
    let t0 = Instant::now();
    loop {
        let r = reqwest::Client::new()
            .get(&prom_q)
            .query(&[("query", "sum(rate(istio_requests_total[5s]))")])
            .send()
            .await;
        if let Ok(r) = r {
            let b = r.bytes().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            if v["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "prometheus has no istio series"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The collector alone, with Kiali unreachable: call edges come from Istio's metrics, and
    // what it reads agrees with the twin.
    let mut c = Collector::new(
        CollectConfig {
            kiali_url: format!("http://127.0.0.1:{}", free_port()),
            ..collect.clone()
        },
        slo,
    )
    .await
    .unwrap();
    let got = c.collect(unix_now()).await;
    assert!(
        got.failures.iter().any(|(s, _)| s == "kiali"),
        "{:?}",
        got.failures
    );
    assert!(
        got.failures.iter().all(|(s, _)| s == "kiali"),
        "{:?}",
        got.failures
    );
    let calls = got
        .events
        .iter()
        .filter(|e| matches!(e, graphscaler_schemas::TelemetryEvent::Call(_)))
        .count();
    assert!(calls >= 10, "{calls} call edges from istio_requests_total");
    {
        let st = state.lock().unwrap();
        let obs = st.observation();
        let mut n = 0;
        for e in &got.events {
            if let graphscaler_schemas::TelemetryEvent::Service(s) = e {
                let t = obs.service(&s.payload.name).unwrap();
                assert_eq!(s.payload.replicas_spec, t.replicas_spec, "{}", t.name);
                assert!((s.payload.cpu_request_cores - t.cpu_request_cores).abs() < 1e-3);
                assert!((s.payload.cpu_limit_cores - t.cpu_limit_cores).abs() < 1e-3);
                assert_eq!(s.payload.stateful, t.stateful, "{}", t.name);
                n += 1;
            }
        }
        assert_eq!(n, obs.services.len(), "a service event per deployment");
    }
    drop(c);

    let graph = tokio::spawn(graphscaler_graph::stage::graph(
        Subscriber::kafka(
            &bus("graph"),
            "graph",
            &graphscaler_graph::stage::topics(true),
        )
        .unwrap(),
        Publisher::kafka(&bus("graph")).unwrap(),
        GraphStage {
            graph: GraphConfig {
                window_s: 2.0,
                stale_windows: 2,
                workers: 2,
                cluster: None,
            },
            grace: Duration::from_secs(1),
            clock: Clock::Wall,
            store: Some(graphscaler_graph::stage::StoreSpec {
                dir: d.join("store"),
                per_file: 4,
                reward: Default::default(),
            }),
            max_clock_skew_s: 60.0,
        },
        m_graph.clone(),
        stop_graph,
    ));
    let policy: Box<dyn SnapshotPolicy> = Box::new(Hpa::new(50, &hpa_config()));
    let policy_task = tokio::spawn(graphscaler_policy::stage::policy(
        Subscriber::kafka(&bus("policy"), "policy", &[SnapshotsTopic::NAME]).unwrap(),
        Publisher::kafka(&bus("policy")).unwrap(),
        policy,
        Metrics::new("policy"),
        stop_policy,
    ));
    let kube = kube_io::client(Some(&twin_url)).await.unwrap();
    let actuate = tokio::spawn(graphscaler_actuate::stage::actuate(
        Subscriber::kafka(
            &bus("actuate"),
            "actuate",
            &[ActionsTopic::NAME, ServicesTopic::NAME],
        )
        .unwrap(),
        Publisher::kafka(&bus("actuate")).unwrap(),
        Actuator::new(Guardrails {
            cooldown_s: 3.0,
            ..Guardrails::default()
        }),
        Box::new(KubeCluster::new(kube, "boutique")),
        Clock::Wall,
        Metrics::new("actuate"),
        stop_act,
    ));

    // Scraper #1, then a restart.
    let start_scraper = |stop: watch::Receiver<bool>| {
        let collect = collect.clone();
        let m = m_scrape.clone();
        let p = Publisher::kafka(&bus("scrape")).unwrap();
        tokio::spawn(async move {
            let c = Collector::new(collect, slo).await.unwrap();
            graphscaler_scrape::stage::scrape(c, p, Duration::from_secs(1), m, stop).await
        })
    };
    let first = start_scraper(stop_scrape.clone());
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop_scrape_tx.send(true).unwrap();
    let first = first.await.unwrap();
    let (stop_scrape_tx, stop_scrape) = watch::channel(false);
    let second = start_scraper(stop_scrape);
    tokio::time::sleep(Duration::from_secs(8)).await;

    // The broker goes away and comes back on the same storage.
    drop(broker);
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker = tansu(d, kafka_port);
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop_scrape_tx.send(true).unwrap();
    let second = second.await.unwrap();
    let published = first.published + second.published;
    assert!(
        first.passes >= 5 && second.passes >= 10,
        "{first:?} {second:?}"
    );

    // Drain stage by stage.
    wait_until(
        "the graph stage to consume every event",
        Duration::from_secs(60),
        || m_graph.total("graphscaler_events_in_total") as u64 >= published,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: published {published}\n{}\n{}",
            Metrics::render(&[&m_scrape]),
            Metrics::render(&[&m_graph])
        )
    });
    stop_graph_tx.send(true).unwrap();
    let graph = graph.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_policy_tx.send(true).unwrap();
    let policy = policy_task.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_act_tx.send(true).unwrap();
    let actuate = actuate.await.unwrap().unwrap();
    let _ = twin_stop.send(());

    // Every count matches from stage to stage.
    let ingest = graph.ingest.unwrap();
    assert_eq!(
        graph.events, published,
        "every published event reached the graph job: {graph:?}"
    );
    assert_eq!(ingest.duplicates, 0, "{ingest:?}");
    assert_eq!(graph.undecodable, 0);
    assert!(graph.snapshots >= 15, "{graph:?}");
    assert_eq!(policy.snapshots, graph.snapshots, "{policy:?}");
    assert_eq!(actuate.actions, policy.actions, "{actuate:?}");
    let snaps = read_all(
        &bus("check"),
        SnapshotsTopic::NAME,
        graph.snapshots as usize,
    )
    .await;
    let actions = read_all(&bus("check"), ActionsTopic::NAME, policy.actions as usize).await;
    let audits = read_all(&bus("check"), AuditTopic::NAME, actuate.actions as usize).await;
    assert_eq!(snaps.len() as u64, graph.snapshots);
    assert_eq!(actions.len() as u64, policy.actions);
    assert_eq!(audits.len() as u64, actuate.actions);
    // The store holds every snapshot, in rolling files, and beside them the HPA's decisions
    // that came back from the decisions topic while the graph stage ran.
    let stored = graphscaler_graph::store::read_paths(&[d.join("store")]).unwrap();
    assert_eq!(stored.len() as u64, graph.snapshots);
    assert!(
        graphscaler_graph::store::files_of(&d.join("store"))
            .unwrap()
            .len()
            >= 2
    );
    let on_topic_snaps: Vec<_> = snaps
        .iter()
        .map(|m| m.decode::<SnapshotsTopic>().unwrap().payload)
        .collect();
    assert_eq!(
        stored
            .iter()
            .map(|t| t.snapshot.clone())
            .collect::<Vec<_>>(),
        on_topic_snaps
    );
    let recorded: Vec<_> = stored.iter().filter_map(|t| t.decision.as_ref()).collect();
    assert!(
        recorded.len() + 2 >= stored.len() && recorded.iter().all(|d| d.by == "policy/hpa-50"),
        "{} of {} decisions recorded",
        recorded.len(),
        stored.len()
    );
    let recorded_actions: usize = recorded.iter().map(|d| d.actions.len()).sum();
    assert!(recorded_actions > 0 && recorded_actions as u64 <= policy.actions);
    // Each row's reward is its successor's, where that snapshot carries what the reward reads
    // (the first windows, before Prometheus has the entry's latency, may not).
    let rc = graphscaler_learn_config::reward::RewardConfig::default();
    for w in stored.windows(2) {
        let next = graphscaler_learn_config::reward::reward_of_snapshot(&w[1].snapshot, &rc);
        assert_eq!(w[0].reward.map(|r| r.value), next.ok().map(|r| r.value));
    }
    assert!(
        stored.iter().filter(|t| t.reward.is_some()).count() * 2 > stored.len(),
        "most windows have a reward"
    );

    // The HPA, run again over the snapshots on the topic, decides the actions on the topic.
    let mut hpa = Hpa::new(50, &hpa_config());
    let mut replayed = vec![];
    for m in &snaps {
        let s = m.decode::<SnapshotsTopic>().unwrap().payload;
        replayed.extend(hpa.decide_snapshot(&s));
    }
    let on_topic: Vec<_> = actions
        .iter()
        .map(|m| m.decode::<ActionsTopic>().unwrap().payload)
        .collect();
    assert_eq!(on_topic, replayed, "the actions are the HPA's");
    assert!(
        !on_topic.is_empty(),
        "the HPA scaled something under the peak load"
    );

    // The twin's replicas are what the applied actions set.
    let mut last: BTreeMap<String, u32> = BTreeMap::new();
    for m in &audits {
        let r = m.decode::<AuditTopic>().unwrap().payload;
        if let (true, false, ActionKind::SetReplicas { replicas }) =
            (r.outcome.is_applied(), r.dry_run, &r.action.kind)
        {
            last.insert(r.action.service.clone(), *replicas);
        }
    }
    assert!(!last.is_empty(), "at least one action applied");
    let st = state.lock().unwrap();
    for (svc, n) in &last {
        let (spec, _, _) = st.twin().spec_of(svc).unwrap();
        assert_eq!(spec, *n, "{svc}");
    }
    assert!(
        last.values().any(|n| *n > 1),
        "a scale-up happened: {last:?}"
    );
    eprintln!(
        "e2e: {published} events in {} + {} scrape passes -> {} snapshots ({} late, {} stale) -> {} actions -> {} applied, {} refused; final {last:?}",
        first.passes, second.passes, graph.snapshots, ingest.late, ingest.stale, policy.actions, actuate.applied, actuate.refused
    );
    drop(broker);
}
