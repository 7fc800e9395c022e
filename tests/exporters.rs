//! The stores' exporters as they publish: redis_exporter's and mysqld_exporter's expositions
//! (`tests/fixtures/prometheus/exposition/`, captured from the real exporters in front of a
//! replicated Redis and a replicated MariaDB, see PROVENANCE.md),
//! served to a real Prometheus as four targets — a Redis primary and replica, a MySQL primary and
//! replica — with the `namespace`, `pod` and `service` labels that the documented relabelling
//! (`config/prometheus/exporters.yml`) gives them. The scrape stage's own store queries then read
//! the replicas, the replication lag and the hit ratio of both stores under the exporters' names.
//! Counters grow with time (every counter's value times the seconds since the target started), so
//! that `rate()` has something to measure; their ratios stay the fixtures'.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use graphscaler_scrape::collect::{queries, CollectConfig};
use graphscaler_testkit::prometheus;

mod common;
use common::{prom_query, repo};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        repo()
            .join("tests/fixtures/prometheus/exposition")
            .join(name),
    )
    .unwrap()
}

/// The value of `metric` (no labels) in an exposition.
fn value(text: &str, metric: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' '))
        .unwrap()
        .parse()
        .unwrap()
}

/// Serves `text` on a loopback port, each counter (a `…_total`, or mysqld_exporter's untyped
/// buffer-pool counts) times 1,000 plus the seconds since it started serving: each one then grows at its
/// value per second on every target alike, so that the rates keep the fixtures' proportions.
fn serve(text: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            // Far from zero, so that rate()'s extrapolation to the window's edges is linear.
            let k = 1000.0 + t0.elapsed().as_secs_f64();
            let body: String = text
                .lines()
                .map(|line| {
                    let counter = !line.starts_with('#')
                        && (line.contains("_total") || line.contains("_innodb_buffer_pool_read"));
                    match line.rsplit_once(' ') {
                        Some((head, v)) if counter => match v.parse::<f64>() {
                            Ok(x) if x.is_finite() => format!("{head} {}\n", x * k),
                            _ => format!("{line}\n"),
                        },
                        _ => format!("{line}\n"),
                    }
                })
                .collect();
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn the_exporters_own_series_reach_the_scrape_stages_store_queries() {
    let dir = tempfile::tempdir().unwrap();
    let targets = [
        ("redis_exporter-primary.txt", "redis-cart", "redis-cart-0"),
        ("redis_exporter-replica.txt", "redis-cart", "redis-cart-1"),
        ("mysqld_exporter-primary.txt", "orders-db", "orders-db-0"),
        ("mysqld_exporter-replica.txt", "orders-db", "orders-db-1"),
    ];
    let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for (file, service, pod) in targets {
        let port = serve(fixture(file));
        // What config/prometheus/exporters.yml's relabelling gives a target of this Service.
        config.push_str(&format!(
            "  - job_name: {pod}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels: {{service: {service}, namespace: boutique, pod: {pod}}}\n"
        ));
    }
    let (_prom, url) = prometheus(dir.path(), &config);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let cfg = CollectConfig {
        rate_window_s: 10,
        ..CollectConfig::default()
    };
    let store: BTreeMap<&str, String> = queries(&cfg, 200.0, 0.01)
        .into_iter()
        .filter(|(k, _)| k.starts_with("store_"))
        .collect();
    assert_eq!(store.len(), 5, "{store:?}");
    let ask = |q: &str| -> BTreeMap<String, f64> {
        let (code, body) = prom_query(port, q);
        if code == 503 {
            // Starting up: nothing yet.
            return BTreeMap::new();
        }
        assert_eq!(code, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"]["service"].as_str().unwrap().to_string(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    // Every target scraped for longer than the rate window (10 s), so that no rate is of a
    // series younger than its window (whose extrapolation would differ from target to target).
    let t0 = Instant::now();
    loop {
        let scraped = ask("count by (service) (count_over_time(up[20s]) >= 13)");
        if scraped.values().sum::<f64>() == 4.0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{scraped:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let replicas = ask(&store["store_replicas"]);
    let lag_max = ask(&store["store_lag_max"]);
    let lag_mean = ask(&store["store_lag_mean"]);
    let hits = ask(&store["store_hits"]);
    let misses = ask(&store["store_misses"]);
    // Redis: one connected replica, 4 s since its last acknowledgement (on the primary); the
    // replica's own `connected_slaves 0` does not count against it.
    assert_eq!(replicas["redis-cart"], 1.0);
    assert_eq!(lag_max["redis-cart"], 4.0);
    assert_eq!(lag_mean["redis-cart"], 4.0);
    // MySQL (MariaDB): one replica (SHOW SLAVE STATUS on it), 4 s behind its source.
    assert_eq!(replicas["orders-db"], 1.0);
    assert_eq!(lag_max["orders-db"], 4.0);
    assert_eq!(lag_mean["orders-db"], 4.0);
    // Hit ratios from the counters, primary and replica together: Redis' keyspace hits and
    // misses; InnoDB's buffer-pool read requests less the reads that went to disk.
    let ratio = |s: &str| hits[s] / (hits[s] + misses[s]);
    let (p, r) = (
        fixture("redis_exporter-primary.txt"),
        fixture("redis_exporter-replica.txt"),
    );
    let h = value(&p, "redis_keyspace_hits_total") + value(&r, "redis_keyspace_hits_total");
    let m = value(&p, "redis_keyspace_misses_total") + value(&r, "redis_keyspace_misses_total");
    assert!(
        (ratio("redis-cart") - h / (h + m)).abs() < 1e-3,
        "{}",
        ratio("redis-cart")
    );
    let (p, r) = (
        fixture("mysqld_exporter-primary.txt"),
        fixture("mysqld_exporter-replica.txt"),
    );
    let requests = value(&p, "mysql_global_status_innodb_buffer_pool_read_requests")
        + value(&r, "mysql_global_status_innodb_buffer_pool_read_requests");
    let disk = value(&p, "mysql_global_status_innodb_buffer_pool_reads")
        + value(&r, "mysql_global_status_innodb_buffer_pool_reads");
    assert!(
        (ratio("orders-db") - (requests - disk) / requests).abs() < 1e-3,
        "{}",
        ratio("orders-db")
    );
    // The documented relabelling names these three labels.
    let relabel = std::fs::read_to_string(repo().join("config/prometheus/exporters.yml")).unwrap();
    for label in [
        "target_label: service",
        "target_label: namespace",
        "target_label: pod",
    ] {
        assert!(relabel.contains(label), "{label}");
    }
}
