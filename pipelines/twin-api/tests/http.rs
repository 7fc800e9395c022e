//! The twin's HTTP interfaces as clients meet them: shapes compared with real response files,
//! patches applied whole or refused with a Status, and a real Prometheus server scraping it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use graphscaler_twin::{Shape, Twin};
use graphscaler_twin_api::{serve, LiveTwin, Shared};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared_data(rel: &str) -> Value {
    let p = root().join("tests/fixtures").join(rel);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// Starts the twin (one 15 s tick per `tick_ms` of wall time) on an ephemeral loopback port.
async fn start(tick_ms: u64) -> (String, Shared, tokio::sync::oneshot::Sender<()>) {
    let twin = Twin::online_boutique(Shape::Peak, 4.0 * 3600.0, 1).unwrap();
    let state = LiveTwin::new(twin, "default", "twin", 1.7e9).shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = state.clone();
    tokio::spawn(async move {
        serve(listener, s, Duration::from_millis(tick_ms), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (url, state, tx)
}

/// The set of keys at each level, to compare our JSON's shape with a real response's.
fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn kiali_graph_has_kialis_shape() {
    let (url, _s, _stop) = start(60_000).await;
    let g: Value = reqwest::get(format!("{url}/api/namespaces/graph?namespaces=default&graphType=workload&duration=60s&appenders=responseTime"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let real = shared_data("kiali/test_workload_graph.json");
    assert_eq!(keys(&g), keys(&real));
    assert_eq!(g["graphType"], "workload");
    assert_eq!(g["duration"], 60);
    let nodes = g["elements"]["nodes"].as_array().unwrap();
    let edges = g["elements"]["edges"].as_array().unwrap();
    assert_eq!(nodes.len(), 12, "11 workloads and the unknown root");
    // Node ids are SHA-256 hex digests, as Kiali's; edges refer to them.
    for n in nodes {
        let id = n["data"]["id"].as_str().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
    let ids: Vec<&str> = nodes
        .iter()
        .map(|n| n["data"]["id"].as_str().unwrap())
        .collect();
    let real_edge = &real["elements"]["edges"][0]["data"];
    for e in edges {
        let d = &e["data"];
        assert!(
            ids.contains(&d["source"].as_str().unwrap())
                && ids.contains(&d["target"].as_str().unwrap())
        );
        for k in keys(real_edge) {
            assert!(d.get(&k).is_some(), "edge lacks `{k}`: {d}");
        }
        // Rates are strings, as Kiali writes them.
        for (_, v) in d["traffic"]["rates"].as_object().unwrap() {
            assert!(v.as_str().unwrap().parse::<f64>().is_ok(), "{v}");
        }
        if d["traffic"]["protocol"] != "tcp" {
            assert!(
                d["responseTime"].as_str().unwrap().parse::<f64>().is_ok(),
                "{d}"
            );
        }
    }
    let workloads: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n["data"]["workload"].as_str())
        .collect();
    assert!(workloads.contains(&"frontend") && workloads.contains(&"redis-cart"));
    // Without the appender there is no responseTime.
    let g: Value = reqwest::get(format!(
        "{url}/api/namespaces/graph?namespaces=default&graphType=workload"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(g["elements"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["data"].get("responseTime").is_none()));
}

#[tokio::test]
async fn kubernetes_objects_have_the_api_shapes() {
    let (url, _s, _stop) = start(60_000).await;
    let get = |p: &str| {
        let u = format!("{url}{p}");
        async move { reqwest::get(u).await.unwrap() }
    };
    let nodes: Value = get("/api/v1/nodes").await.json().await.unwrap();
    assert_eq!(nodes["kind"], "NodeList");
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let real = shared_data("kubernetes/honeycomb-agent-nodes.json");
    let real_node = &real["items"][0];
    for k in ["metadata", "spec", "status"] {
        assert!(items[0].get(k).is_some() && real_node.get(k).is_some());
    }
    for k in ["capacity", "allocatable", "conditions", "nodeInfo"] {
        assert!(items[0]["status"].get(k).is_some(), "{k}");
        assert!(real_node["status"].get(k).is_some(), "{k}");
    }
    assert_eq!(items[0]["status"]["allocatable"]["cpu"], "3920m");
    assert_eq!(items[4]["status"]["allocatable"]["cpu"], "7910m");
    assert_eq!(
        items[4]["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "c2d-standard-8"
    );

    let pods: Value = get("/api/v1/namespaces/default/pods?labelSelector=app%3Dfrontend")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pods["kind"], "PodList");
    let pod = &pods["items"][0];
    let real = shared_data("kubernetes/k8s-api-testdata-HEAD-core.v1.Pod.json");
    for k in ["metadata", "spec", "status"] {
        assert!(pod.get(k).is_some() && real.get(k).is_some());
    }
    assert_eq!(pod["metadata"]["labels"]["app"], "frontend");
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "200m"
    );
    assert!(pod["spec"]["nodeName"].is_string());

    let scale: Value = get("/apis/apps/v1/namespaces/default/deployments/frontend/scale")
        .await
        .json()
        .await
        .unwrap();
    let real = shared_data("kubernetes/k8s-api-testdata-HEAD-autoscaling.v1.Scale.json");
    assert_eq!(keys(&scale), keys(&real));
    assert_eq!(keys(&scale["spec"]), keys(&real["spec"]));
    assert_eq!(keys(&scale["status"]), keys(&real["status"]));
    assert_eq!(scale["spec"]["replicas"], 1);

    let r = get("/apis/apps/v1/namespaces/default/deployments/nosuch").await;
    assert_eq!(r.status(), 404);
    let st: Value = r.json().await.unwrap();
    assert_eq!(
        (st["kind"].as_str(), st["reason"].as_str()),
        (Some("Status"), Some("NotFound"))
    );
}

#[tokio::test]
async fn patches_apply_whole_or_not_at_all() {
    let (url, state, _stop) = start(60_000).await;
    let client = reqwest::Client::new();
    let patch = |path: &str, body: &str, ct: &str| {
        client
            .patch(format!("{url}{path}"))
            .header("Content-Type", ct.to_string())
            .body(body.to_string())
            .send()
    };
    let r = patch(
        "/apis/apps/v1/namespaces/default/deployments/frontend/scale",
        r#"{"spec":{"replicas":4}}"#,
        "application/merge-patch+json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["spec"]["replicas"], 4);
    assert_eq!(
        state.lock().unwrap().twin().spec_of("frontend").unwrap().0,
        4
    );

    // CPU limit and node preference in one strategic-merge patch.
    let body = r#"{"spec":{"template":{"spec":{"containers":[{"name":"currencyservice","resources":{"limits":{"cpu":"400m"}}}],
        "affinity":{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":100,"preference":{"matchExpressions":[
        {"key":"node.kubernetes.io/instance-type","operator":"In","values":["c2d-standard-8"]}]}}]}}}}}}"#;
    let r = patch(
        "/apis/apps/v1/namespaces/default/deployments/currencyservice",
        body,
        "application/strategic-merge-patch+json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "400m"
    );
    // As on Kubernetes, a patch of the limit alone leaves the request; the new template rolls
    // out as a rolling update.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "100m"
    );
    assert_eq!(
        state
            .lock()
            .unwrap()
            .twin()
            .template_of("currencyservice")
            .unwrap()
            .2,
        1
    );
    // A limit below the request is invalid.
    let r = patch(
        "/apis/apps/v1/namespaces/default/deployments/currencyservice",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"currencyservice","resources":{"limits":{"cpu":"60m"}}}]}}}}"#,
        "application/strategic-merge-patch+json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let st: Value = r.json().await.unwrap();
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("at most the limit"),
        "{st}"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]
            ["matchExpressions"][0]["values"][0],
        "c2d-standard-8"
    );

    // A valid replica change together with an invalid limit: nothing is applied.
    let body = r#"{"spec":{"replicas":6,"template":{"spec":{"containers":[{"name":"frontend","resources":{"limits":{"cpu":"9000m"}}}]}}}}"#;
    let r = patch(
        "/apis/apps/v1/namespaces/default/deployments/frontend",
        body,
        "application/merge-patch+json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let st: Value = r.json().await.unwrap();
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("outside [50, 4000]"),
        "{st}"
    );
    assert_eq!(
        state.lock().unwrap().twin().spec_of("frontend").unwrap().0,
        4,
        "the replica change was not applied"
    );

    for (body, ct, code) in [
        ("{not json", "application/merge-patch+json", 400),
        (r#"{"spec":{"replicas":2}}"#, "text/plain", 415),
        (
            r#"{"spec":{"replicas":"two"}}"#,
            "application/merge-patch+json",
            422,
        ),
    ] {
        let r = patch(
            "/apis/apps/v1/namespaces/default/deployments/frontend/scale",
            body,
            ct,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), code, "{body}");
        let st: Value = r.json().await.unwrap();
        assert_eq!(st["kind"], "Status");
    }
    let r = patch(
        "/apis/apps/v1/namespaces/other/deployments/frontend/scale",
        r#"{"spec":{"replicas":2}}"#,
        "application/merge-patch+json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
}

/// A real Prometheus server (Debian's package) scrapes the twin on loopback; PromQL over its
/// HTTP API sees the Istio, kube-state-metrics and cAdvisor series, and a scale patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_twin() {
    let prometheus = which("prometheus").expect(
        "the `prometheus` binary is needed for this test: run scripts/setup.sh (Debian package `prometheus`)",
    );
    let (url, _state, _stop) = start(500).await;
    let target = url.trim_start_matches("http://").to_string();
    let dir = std::env::temp_dir().join(format!("graphscaler-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: twin\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let prom = format!("http://127.0.0.1:{port}");
    let query = |q: &str| {
        let u = format!("{prom}/api/v1/query");
        let q = q.to_string();
        async move {
            let r = reqwest::Client::new()
                .get(u)
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let s = v["data"]["result"][0]["value"][1].as_str()?.to_string();
            s.parse::<f64>().ok()
        }
    };
    let wait_for = |q: &'static str, want: fn(f64) -> bool| {
        let query = &query;
        async move {
            let t0 = Instant::now();
            loop {
                if let Some(v) = query(q).await {
                    if want(v) {
                        return v;
                    }
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "timed out waiting for `{q}`"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    wait_for("up{job=\"twin\"}", |v| v == 1.0).await;
    let rps = wait_for(
        "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload=\"frontend\"}[5s]))",
        |v| v > 0.0,
    )
    .await;
    assert!(rps.is_finite());
    let p95 = wait_for(
        "histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_workload=\"frontend\"}[5s])))",
        |v| v > 0.0,
    )
    .await;
    assert!(p95 < 60_000.0, "{p95}");
    wait_for(
        "sum(rate(container_cpu_usage_seconds_total{container=\"frontend\"}[5s]))",
        |v| v > 0.0,
    )
    .await;
    wait_for(
        "kube_deployment_spec_replicas{deployment=\"frontend\"}",
        |v| v == 1.0,
    )
    .await;
    let r = reqwest::Client::new()
        .patch(format!(
            "{url}/apis/apps/v1/namespaces/default/deployments/frontend/scale"
        ))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec":{"replicas":3}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for(
        "kube_deployment_spec_replicas{deployment=\"frontend\"}",
        |v| v == 3.0,
    )
    .await;
    wait_for(
        "kube_deployment_status_replicas_ready{deployment=\"frontend\"}",
        |v| v == 3.0,
    )
    .await;
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// `promtool check metrics` (shipped with Prometheus) parses the exposition; its only lint is
/// about Istio's own metric name using milliseconds, which is Istio's, not ours.
#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let promtool = which("promtool")
        .expect("`promtool` comes with the prometheus package: run scripts/setup.sh");
    let (url, state, _stop) = start(60_000).await;
    {
        // Read replicas for redis-cart, so that its exporter has replication series.
        let mut t = state.lock().unwrap();
        t.apply_all(
            "redis-cart",
            vec![graphscaler_twin_api::kube::Change::Act(
                graphscaler_schemas::ActionKind::SetReplicas { replicas: 3 },
            )],
        )
        .unwrap();
        for _ in 0..5 {
            t.tick();
        }
    }
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "container_cpu_usage_seconds_total{",
        "kube_deployment_spec_replicas{",
        "kube_pod_container_resource_requests{",
        "istio_requests_total{reporter=\"destination\",source_workload=\"unknown\"",
        "istio_request_duration_milliseconds_bucket{",
        "le=\"+Inf\"",
        "redis_connected_slaves{namespace=\"default\",pod=\"redis-cart-",
        "redis_connected_slave_lag_seconds{namespace=\"default\",pod=\"redis-cart-",
        ",service=\"redis-cart\",slave_ip=\"10.244.",
        "slave_port=\"6379\",slave_state=\"online\"}",
        "redis_master_last_io_seconds_ago{namespace=\"default\",pod=\"redis-cart-",
        ",master_host=\"10.244.",
        "redis_keyspace_hits_total{namespace=\"default\",pod=\"redis-cart-",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| {
            !l.trim().is_empty() && !l.contains("istio_request_duration_milliseconds use base unit")
        })
        .collect();
    assert!(problems.is_empty(), "promtool: {report}");
}

/// A MySQL-backed stateful service (`"engine": "mysql"` in the topology) is exposed as
/// mysqld_exporter exposes one: SHOW SLAVE STATUS on each replica (whole seconds behind its
/// source, the source's IP as `master_host`), the InnoDB buffer-pool counters on the primary,
/// with the relabelling's `namespace`, `pod`, `service`; none of redis_exporter's series. An
/// unknown engine, or one on a stateless service, is refused naming the service.
#[test]
fn a_mysql_store_is_exposed_as_mysqld_exporter_exposes_it() {
    use graphscaler_twin::{SloConfig, Topology, TwinConfig};
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/topologies/online-boutique.json"),
    )
    .unwrap();
    assert_eq!(text.matches("\"stateful\": true,").count(), 1);
    let mysql = text.replace(
        "\"stateful\": true,",
        "\"stateful\": true, \"engine\": \"mysql\",",
    );
    let cfg = TwinConfig::default();
    let topo =
        Topology::from_json_str(&mysql, "mysql-boutique.json", &cfg.fanout_parameters).unwrap();
    let twin = Twin::new(
        topo,
        cfg.clone(),
        SloConfig::default(),
        Shape::Peak,
        3600.0,
        2,
    )
    .unwrap();
    let mut t = LiveTwin::new(twin, "shop", "twin", 1.7e9);
    t.apply_all(
        "redis-cart",
        vec![graphscaler_twin_api::kube::Change::Act(
            graphscaler_schemas::ActionKind::SetReplicas { replicas: 3 },
        )],
    )
    .unwrap();
    for _ in 0..20 {
        t.tick();
    }
    let m = t.metrics_text();
    let replica_lines: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("mysql_slave_status_seconds_behind_master{"))
        .collect();
    assert_eq!(replica_lines.len(), 2, "{m}");
    for l in &replica_lines {
        assert!(
            l.contains("channel_name=\"\",connection_name=\"\",master_host=\"10.244.")
                && l.contains(",namespace=\"shop\",pod=\"redis-cart-")
                && l.contains(",service=\"redis-cart\"}"),
            "{l}"
        );
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 0.0 && v.fract() == 0.0, "{l}");
    }
    for name in [
        "# TYPE mysql_slave_status_seconds_behind_master untyped",
        "mysql_slave_status_slave_io_running{",
        "mysql_global_status_innodb_buffer_pool_read_requests{namespace=\"shop\",pod=\"redis-cart-",
        "mysql_global_status_innodb_buffer_pool_reads{namespace=\"shop\",pod=\"redis-cart-",
    ] {
        assert!(m.contains(name), "missing {name}");
    }
    assert!(!m.lines().any(|l| l.starts_with("redis_")), "{m}");
    for (bad, says) in [
        (
            "\"stateful\": true, \"engine\": \"postgres\",",
            "engine `postgres` is not one the twin simulates",
        ),
        (
            "\"stateful\": false, \"engine\": \"mysql\",",
            "is for stateful services",
        ),
    ] {
        let e = Topology::from_json_str(
            &text.replace("\"stateful\": true,", bad),
            "bad.json",
            &cfg.fanout_parameters,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(says) && e.contains("redis-cart") && e.contains("engine"),
            "{e}"
        );
    }
}
