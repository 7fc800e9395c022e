//! The compose stack without a container engine (none here can pull Kafka's or Prometheus'
//! image): the very processes `docker-compose.yml` starts — the twin and the four stages, with
//! its commands and its environment — run against the test harness's tansu broker (the topics
//! its `kafka-topics` job creates) and a real Prometheus with the stack's configuration. Only
//! addresses change: compose's host names become loopback ports, and Prometheus scrapes every 2 s
//! instead of 15 s so that the test is short. Then, as compose's healthchecks do, every stage
//! must be ready; the policy stage must decide with the learned GAT-PPO; and every query of the
//! provisioned Grafana dashboard must name metrics the stages or the twin export and, wherever
//! those series exist, return data from that Prometheus.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graphscaler_testkit::{create_topic, free_port, prometheus, tansu, wait_port, Proc};
use serde::Deserialize;

mod common;
use common::{get, prom_query, repo};

fn yaml(rel: &str) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    v
}

fn strings(v: &serde_yaml_ng::Value) -> Vec<String> {
    serde_yaml_ng::from_value(v.clone()).unwrap()
}

/// The topics `kafka-topics` creates, with their partitions: one `for` loop per partition count
/// and name pattern (`$$t`, `$$t.dlq`).
fn compose_topics(script: &str) -> BTreeSet<(String, u32)> {
    let mut out = BTreeSet::new();
    for block in script.split("done").filter(|b| b.contains("--partitions")) {
        let arg = |flag: &str| {
            block
                .split(flag)
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        let partitions: u32 = arg("--partitions").parse().unwrap();
        let pattern = arg("--topic");
        let suffix = pattern.strip_prefix("$$t").unwrap();
        for word in block.split_whitespace() {
            let word = word.trim_end_matches(';');
            if word.starts_with("graphscaler.") && word.ends_with(".v1") {
                out.insert((format!("{word}{suffix}"), partitions));
            }
        }
    }
    out
}

/// Prometheus' HTTP API: `GET /api/v1/query?query=…` on `base`.
fn query(base: &str, promql: &str) -> serde_json::Value {
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let (code, body) = prom_query(port, promql);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {code} {e}: {body}"))
}

/// The metric names a PromQL expression reads (the exporters' and the stages' prefixes).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let prefixes = [
        "graphscaler_",
        "istio_",
        "kube_",
        "container_",
        "redis_",
        "mysql_",
    ];
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| prefixes.iter().any(|p| w.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// The family a sample's name belongs to (a histogram's `_bucket`, `_sum`, `_count`).
fn families(exposition: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut typed = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_string());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            sampled.insert(name.to_string());
        }
    }
    (typed, sampled)
}

#[derive(Deserialize)]
struct Target {
    expr: String,
}

#[derive(Deserialize)]
struct Panel {
    title: String,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Dashboard {
    panels: Vec<Panel>,
}

#[test]
fn the_processes_compose_starts_serve_the_learned_policy_and_feed_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];

    // The images' working directory holds what the processes read: the repository root has
    // the same directories.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("WORKDIR /graphscaler"));
    for copied in [
        "data ./data",
        "config ./config",
        "checkpoints ./checkpoints",
    ] {
        assert!(dockerfile.contains(&format!("COPY {copied}")), "{copied}");
        let here = copied.split(' ').next().unwrap();
        assert!(repo().join(here).is_dir(), "{here}");
    }

    // The broker, with the topics compose's `kafka-topics` job creates.
    let kafka = free_port();
    let _broker = tansu(d, kafka, "memory://tansu/");
    let script = strings(&services["kafka-topics"]["command"]).join("\n");
    let topics = compose_topics(&script);
    // Every topic the stages use, and a dead-letter topic for each.
    use graphscaler_schemas::events::{ActionsTopic, AuditTopic, DecisionsTopic, SnapshotsTopic};
    use graphscaler_schemas::Topic;
    let mut want: BTreeSet<(String, u32)> = graphscaler_bus::TELEMETRY_TOPICS
        .iter()
        .map(|t| (t.to_string(), 3))
        .collect();
    for t in [
        SnapshotsTopic::NAME,
        ActionsTopic::NAME,
        AuditTopic::NAME,
        DecisionsTopic::NAME,
    ] {
        want.insert((t.to_string(), 1));
    }
    let dlq: Vec<(String, u32)> = want
        .iter()
        .map(|(t, _)| (graphscaler_bus::stage::dead_letter_topic(t), 1))
        .collect();
    want.extend(dlq);
    assert_eq!(topics, want);
    for (t, p) in &topics {
        create_topic(kafka, t, *p);
    }

    // Compose's host names, on loopback.
    let twin_port = free_port();
    let stages = ["scrape", "graph", "policy", "actuate"];
    let metrics: BTreeMap<&str, u16> = stages.iter().map(|s| (*s, free_port())).collect();
    let mut prom_cfg = std::fs::read_to_string(repo().join("config/prometheus/prometheus.yml"))
        .unwrap()
        .replace("twin:8080", &format!("127.0.0.1:{twin_port}"))
        .replace("scrape_interval: 15s", "scrape_interval: 2s");
    for (s, port) in &metrics {
        prom_cfg = prom_cfg.replace(&format!("'{s}:9464'"), &format!("'127.0.0.1:{port}'"));
    }
    assert!(!prom_cfg.contains(":9464"), "{prom_cfg}");
    let (_prom, prom_url) = prometheus(d, &prom_cfg);
    let twin_url = format!("http://127.0.0.1:{twin_port}");
    let rewrite = |v: &str, listen: Option<u16>| -> String {
        let mut v = v
            .replace("kafka:9092", &format!("127.0.0.1:{kafka}"))
            .replace("http://prometheus:9090", &prom_url)
            .replace("http://twin:8080", &twin_url)
            .replace("0.0.0.0:8080", &format!("127.0.0.1:{twin_port}"));
        if let Some(port) = listen {
            v = v.replace("0.0.0.0:9464", &format!("127.0.0.1:{port}"));
        }
        v
    };
    let spawn = |name: &str, listen: Option<u16>| -> Proc {
        let s = &services[name];
        let args: Vec<String> = strings(&s["command"])
            .iter()
            .map(|a| rewrite(a, listen))
            .collect();
        let env: BTreeMap<String, String> = if s["environment"].is_null() {
            BTreeMap::new()
        } else {
            serde_yaml_ng::from_value(s["environment"].clone()).unwrap()
        };
        let mut c = Command::new(env!("CARGO_BIN_EXE_graphscaler"));
        // Only compose's settings: none of this process' own.
        for (k, _) in std::env::vars() {
            if k.starts_with("GRAPHSCALER_") {
                c.env_remove(k);
            }
        }
        c.args(&args)
            .envs(env.iter().map(|(k, v)| (k.clone(), rewrite(v, listen))))
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join(format!("{name}.log"))).unwrap());
        Proc(c.spawn().unwrap())
    };
    let _twin = spawn("twin", None);
    wait_port(twin_port, "the twin");
    let _stages: Vec<Proc> = stages.iter().map(|s| spawn(s, Some(metrics[s]))).collect();
    let log = |name: &str| std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap();

    // Healthy as compose's healthchecks see it: each stage's own probe command.
    for s in stages {
        let probe: Vec<String> = strings(&services[s]["healthcheck"]["test"]);
        assert_eq!(probe[0], "CMD");
        assert_eq!(probe[1], "graphscaler");
        let args: Vec<String> = probe[2..]
            .iter()
            .map(|a| a.replace(":9464", &format!(":{}", metrics[s])))
            .collect();
        let t0 = Instant::now();
        loop {
            let o = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
                .args(&args)
                .output()
                .unwrap();
            if o.status.success() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{s} never became ready: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                log(s)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // The policy stage decides with the learned GAT-PPO (its decision records on the topic).
    let t0 = Instant::now();
    let record = loop {
        let o = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
            .args([
                "decisions",
                "tail",
                "--from",
                "beginning",
                "--count",
                "1",
                "--for",
                "5s",
            ])
            .env(
                "GRAPHSCALER_PIPELINE__KAFKA_BOOTSTRAP",
                format!("127.0.0.1:{kafka}"),
            )
            .env_remove("RUST_LOG")
            .current_dir(repo())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if let Some(line) = text.lines().find(|l| l.starts_with('{')) {
            break serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(150),
            "no decision within 150 s\npolicy: {}\ngraph: {}\nscrape: {}",
            log("policy"),
            log("graph"),
            log("scrape")
        );
    };
    // Decided by the learned policy itself, not by its fallback.
    assert_eq!(
        record["payload"]["policy"].as_str(),
        Some("policy/gat-ppo"),
        "{record}"
    );
    assert!(record["payload"]["fallback"].is_null(), "{record}");

    // The dashboard and its provisioning, as compose mounts them.
    let grafana = &services["grafana"];
    let mounts = strings(&grafana["volumes"]);
    assert!(mounts.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro".into()));
    assert!(mounts.contains(&"./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro".into()));
    assert_eq!(strings(&grafana["ports"]), ["127.0.0.1:3000:3000"]);
    let provider = yaml("deploy/grafana/provisioning/dashboards/graphscaler.yml");
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
    let source = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let source = &source["datasources"][0];
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    assert!(services["prometheus"]["image"]
        .as_str()
        .unwrap()
        .starts_with("prom/prometheus"));
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/dashboards/graphscaler.json")).unwrap();
    assert!(text.matches("\"uid\": \"prometheus\"").count() > 1);
    assert_eq!(
        text.matches("\"uid\": \"prometheus\"").count(),
        text.matches("\"type\": \"prometheus\"").count(),
        "every panel and target uses the provisioned data source"
    );
    assert_eq!(source["uid"].as_str(), Some("prometheus"));
    let dashboard: Dashboard = serde_json::from_str(&text).unwrap();
    let titles: Vec<&str> = dashboard.panels.iter().map(|p| p.title.as_str()).collect();
    for want in [
        "Decisions per service",
        "Replicas",
        "CPU",
        "Load",
        "SLO",
        "Fallback",
        "Consumer lag",
        "Dead letters",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "{want}: {titles:?}"
        );
    }

    // Every query names metrics that are exported, and returns data wherever they have series.
    let scraped = || -> (BTreeSet<String>, BTreeSet<String>) {
        let mut typed = BTreeSet::new();
        let mut sampled = BTreeSet::new();
        let ports = metrics.values().copied().chain([twin_port]);
        for port in ports {
            let (code, body) = get(port, "/metrics");
            assert_eq!(code, 200);
            let (t, s) = families(&body);
            typed.extend(t);
            sampled.extend(s);
        }
        (typed, sampled)
    };
    let (typed, _) = scraped();
    let base = |m: &str| -> String {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| m.strip_suffix(s).filter(|b| typed.contains(*b)))
            .unwrap_or(m)
            .to_string()
    };
    let mut pending: Vec<(String, String)> = vec![];
    for p in &dashboard.panels {
        for t in &p.targets {
            let names = metric_names(&t.expr);
            assert!(!names.is_empty(), "{}: {}", p.title, t.expr);
            for n in &names {
                assert!(
                    typed.contains(&base(n)),
                    "{}: `{n}` is exported by no stage and not by the twin",
                    p.title
                );
            }
            pending.push((p.title.clone(), t.expr.replace("$namespace", "boutique")));
        }
    }
    // Rates need two scrapes of a series; then each query answers, with data where its series
    // exist in the stages' and the twin's expositions.
    let t0 = Instant::now();
    let mut empty: Vec<String> = vec![];
    loop {
        let (_, sampled) = scraped();
        empty.clear();
        for (title, expr) in &pending {
            let v = query(&prom_url, expr);
            assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
            let has_series = metric_names(expr).iter().all(|n| sampled.contains(n));
            let rows = v["data"]["result"].as_array().map_or(0, Vec::len);
            if has_series && rows == 0 {
                empty.push(format!("{title}: {expr}"));
            }
            if !has_series && t0.elapsed() < Duration::from_secs(1) {
                eprintln!("no series (nothing happened to count): {title}: {expr}");
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "queries without data although their series exist: {empty:#?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // What the stack produced reached the dashboard's key panels.
    for must in [
        "kube_deployment_spec_replicas",
        "istio_requests_total",
        "container_cpu_usage_seconds_total",
        "graphscaler_consumer_lag_seconds",
        "graphscaler_last_progress_timestamp_seconds",
    ] {
        let (_, sampled) = scraped();
        assert!(sampled.contains(must), "{must}");
    }
}
