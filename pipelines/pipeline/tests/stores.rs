//! A store's replication lag travels under its exporter's own names: the twin (Online Boutique,
//! redis-cart scaled to three pods: a primary and two read replicas, caught while they sync and
//! fall behind Peak's cart writes)
//! exposes redis_exporter's series, a real Prometheus scrapes them, and the scrape stage's
//! collector turns them into the stateful telemetry the graph job makes features of
//! (`replica_lag_s`, `hit_ratio`) and the reward's ReplicaLag term reads: the same replicas,
//! worst and mean lag and hit ratio as Prometheus holds under `redis_connected_slave_lag_seconds`
//! and the keyspace counters.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graphscaler_bus::stage::unix_now;
use graphscaler_schemas::{ActionKind, TelemetryEvent};
use graphscaler_scrape::collect::{CollectConfig, Collector};
use graphscaler_testkit::prometheus;

mod common;
use common::*;

/// Prometheus' answer to `q`: (service, value) pairs; none while it is not ready yet.
async fn ask(prom: &str, q: &str) -> Vec<(String, f64)> {
    let r = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["metric"]["service"].as_str().unwrap_or("").to_string(),
                        r["value"][1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_reaches_the_telemetry_under_the_exporters_names() {
    let dir = tempfile::tempdir().unwrap();
    let (state, twin_url, _stop) = serve_twin(peak_twin(11)).await;
    state
        .lock()
        .unwrap()
        .apply_all(
            "redis-cart",
            vec![graphscaler_twin_api::kube::Change::Act(
                ActionKind::SetReplicas { replicas: 3 },
            )],
        )
        .unwrap();
    let (_prom, prom_url) = prometheus(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: twin\n    static_configs:\n      - targets: ['{}']\n",
            twin_url.trim_start_matches("http://")
        ),
    );
    // Both replicas report a lag, and the keyspace counters have moved.
    let lag_q = "redis_connected_slave_lag_seconds{service=\"redis-cart\"}";
    let t0 = std::time::Instant::now();
    loop {
        let lags = ask(&prom_url, lag_q).await;
        let hits = ask(
            &prom_url,
            "rate(redis_keyspace_hits_total{service=\"redis-cart\"}[5s])",
        )
        .await;
        if lags.len() == 2
            && lags.iter().any(|(_, v)| *v > 0.0)
            && hits.iter().any(|(_, v)| *v > 0.0)
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{lags:?} {hits:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cfg = CollectConfig {
        kiali_url: twin_url.clone(),
        ..loopback_collect(&prom_url, &twin_url)
    };
    let mut c = Collector::new(cfg, (200.0, 0.01)).await.unwrap();
    // The twin ticks every second: read Prometheus just before and after the pass, and hold
    // the collector's figures to them when they did not change in between.
    for _ in 0..10 {
        let before = ask(&prom_url, &format!("max({lag_q})")).await;
        let got = c.collect(unix_now()).await;
        let after = ask(&prom_url, &format!("max({lag_q})")).await;
        assert!(got.failures.is_empty(), "{:?}", got.failures);
        let st = got
            .events
            .iter()
            .find_map(|e| match e {
                TelemetryEvent::Stateful(s) if s.payload.service == "redis-cart" => {
                    Some(s.payload.clone())
                }
                _ => None,
            })
            .expect("a stateful event for redis-cart");
        if before != after {
            continue;
        }
        let worst = after[0].1;
        assert!(worst > 0.0, "{st:?}");
        assert_eq!(st.max_replica_lag_s, worst, "{st:?}");
        assert!(st.mean_replica_lag_s <= worst + 1e-12, "{st:?}");
        assert_eq!(
            st.connected_replicas as f64,
            ask(
                &prom_url,
                "max(redis_connected_slaves{service=\"redis-cart\"})"
            )
            .await[0]
                .1
        );
        assert!(st.hit_ratio > 0.0 && st.hit_ratio <= 1.0, "{st:?}");
        // The twin's own figure, as it exposed it.
        let twin_worst = state
            .lock()
            .unwrap()
            .observation()
            .stateful
            .iter()
            .find(|s| s.service == "redis-cart")
            .unwrap()
            .max_replica_lag_s;
        assert!(twin_worst >= 0.0);
        return;
    }
    panic!("the lag changed during every pass");
}
