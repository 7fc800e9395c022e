//! The collector's Kubernetes watches (`kube::runtime::watcher`) against the twin's `?watch=true`:
//! a scale patch shows up in the watched state without a new list, and a watch from a resource
//! version the twin no longer keeps gets a 410 `Expired` event.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use graphscaler_actuate::k8s::KubeCluster;
use graphscaler_actuate::Cluster;
use graphscaler_schemas::{Action, ActionKind};
use graphscaler_scrape::k8s::{self as kube_io, Watched};
use graphscaler_twin::{Shape, Twin};
use graphscaler_twin_api::{serve, LiveTwin, Shared};

async fn twin(tick: Duration) -> (String, Shared) {
    let t = Twin::online_boutique(Shape::Peak, 24.0 * 3600.0, 1).unwrap();
    let state = LiveTwin::new(t, "boutique", "twin", 1.7e9).shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state.clone(), tick, std::future::pending()));
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_follow_the_cluster() {
    let (url, _state) = twin(Duration::from_millis(200)).await;
    let client = kube_io::client(Some(&url)).await.unwrap();
    let w = Watched::start(&client, "boutique");
    let first = w.state(Duration::from_secs(10)).await.unwrap();
    let spec = |s: &kube_io::KubeState| {
        s.deployments
            .iter()
            .find(|d| d.name == "frontend")
            .unwrap()
            .replicas_spec
    };
    assert_eq!(spec(&first), 1);
    assert_eq!(first.nodes.len(), 5);
    let mut cluster = KubeCluster::new(client.clone(), "boutique");
    tokio::task::spawn_blocking(move || {
        cluster.apply(&Action::new(
            "frontend",
            ActionKind::SetReplicas { replicas: 3 },
        ))
    })
    .await
    .unwrap()
    .unwrap();
    let t0 = Instant::now();
    loop {
        let s = w.state(Duration::from_secs(1)).await.unwrap();
        let pods = s.pods.iter().filter(|p| p.service == "frontend").count();
        if spec(&s) == 3 && pods == 3 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the watch did not see the scale-up: spec {}, {pods} pods",
            spec(&s)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_resource_version_is_410() {
    let (url, state) = twin(Duration::from_millis(2)).await;
    let t0 = Instant::now();
    while state.lock().unwrap().resource_version() < 2 * graphscaler_twin_api::watch::HISTORY as u64
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = reqwest::get(format!(
        "{url}/api/v1/namespaces/boutique/pods?watch=true&resourceVersion=1&timeoutSeconds=2"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let ev: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410, "{ev}");
    // From nothing, every object comes as ADDED, one JSON object per line.
    let body = reqwest::get(format!(
        "{url}/apis/apps/v1/namespaces/boutique/deployments?watch=1&timeoutSeconds=1"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.iter().filter(|e| e["type"] == "ADDED").count(), 11);
    assert!(events.iter().all(|e| e["object"]["kind"] == "Deployment"));
}
