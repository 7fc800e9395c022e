//! A CPU action through the actuator's Kubernetes client against the twin's API server, by each
//! path: in place through the `pods/{name}/resize` subresource (the same pods, resized; pods
//! started later resized by reconcile; the wanted size read back by a restarted actuator), and
//! through the pod template where the cluster has no in-place resize (a rolling restart, in
//! the twin too).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graphscaler_actuate::k8s::{KubeCluster, CPU_ANNOTATION};
use graphscaler_actuate::{Cluster, Workload};
use graphscaler_schemas::{Action, ActionKind, CpuResize};
use graphscaler_scrape::k8s as kube_io;
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use graphscaler_twin_api::{serve, LiveTwin, Shared};

async fn twin(in_place: bool, tick: Duration) -> (String, Shared) {
    let mut cfg = TwinConfig::default();
    cfg.cluster.in_place_resize = in_place;
    let topo = Topology::online_boutique(&cfg.fanout_parameters).unwrap();
    let t = Twin::new(topo, cfg, SloConfig::default(), Shape::OffPeak, 86_400.0, 1).unwrap();
    let state = LiveTwin::new(t, "boutique", "twin", 1.7e9).shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state.clone(), tick, std::future::pending()));
    (url, state)
}

type Actuated = Arc<Mutex<KubeCluster>>;

fn actuated(c: KubeCluster) -> Actuated {
    Arc::new(Mutex::new(c))
}

/// Runs `f` on the cluster off the async workers (the cluster blocks on the runtime).
async fn on<T: Send + 'static>(
    c: &Actuated,
    f: impl FnOnce(&mut KubeCluster) -> T + Send + 'static,
) -> T {
    let c = c.clone();
    tokio::task::spawn_blocking(move || f(&mut c.lock().unwrap()))
        .await
        .unwrap()
}

/// The frontend's pods: (name, CPU request in m, CPU limit in m), sorted by name.
async fn frontend_pods(client: &kube::Client) -> Vec<(String, u32, Option<u32>)> {
    let s = kube_io::read(client, "boutique").await.unwrap();
    let mut v: Vec<_> = s
        .pods
        .iter()
        .filter(|p| p.service == "frontend")
        .map(|p| {
            (
                p.name.clone(),
                (p.cpu_request_cores * 1000.0).round() as u32,
                p.cpu_limit_cores.map(|l| (l * 1000.0).round() as u32),
            )
        })
        .collect();
    v.sort();
    v
}

/// The frontend's pod-template revision in the twin (each template change adds one).
fn revision(state: &Shared) -> u32 {
    state
        .lock()
        .unwrap()
        .twin()
        .template_of("frontend")
        .unwrap()
        .2
}

async fn template(url: &str) -> serde_json::Value {
    reqwest::get(format!(
        "{url}/apis/apps/v1/namespaces/boutique/deployments/frontend"
    ))
    .await
    .unwrap()
    .text()
    .await
    .map(|t| serde_json::from_str(&t).unwrap())
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_resizes_the_running_pods_and_those_started_later() {
    let (url, state) = twin(true, Duration::from_millis(100)).await;
    let client = kube_io::client(Some(&url)).await.unwrap();
    let cluster = actuated(KubeCluster::new(client.clone(), "boutique"));
    let before = frontend_pods(&client).await;
    assert_eq!(before.len(), 1);
    let w = on(&cluster, |c| c.workload("frontend")).await.unwrap();
    assert_eq!(w.cpu_limit_m, Some(200));

    // Auto on a cluster that lists pods/resize: in place, limit 200 → 800 m, request ×4 too.
    let r = on(&cluster, |c| {
        c.apply(&Action::new(
            "frontend",
            ActionKind::SetCpuLimit { millicores: 800 },
        ))
    })
    .await;
    assert_eq!(r, Ok(()));
    let after = frontend_pods(&client).await;
    assert_eq!(
        after,
        vec![(before[0].0.clone(), before[0].1 * 4, Some(800))]
    );
    let d = template(&url).await;
    assert_eq!(
        d.pointer("/spec/template/spec/containers/0/resources/limits/cpu")
            .unwrap(),
        "200m",
        "the template is left alone (a change would restart every pod)"
    );
    assert_eq!(revision(&state), 0, "no rolling update");
    assert!(d["metadata"]["annotations"][CPU_ANNOTATION]
        .as_str()
        .unwrap()
        .contains("\"limit_m\":800"));

    // A restarted actuator reads the wanted size back from the cluster.
    let fresh = actuated(KubeCluster::new(client.clone(), "boutique"));
    let w: Workload = on(&fresh, |c| c.workload("frontend")).await.unwrap();
    assert_eq!(w.cpu_limit_m, Some(800));

    // Two more pods start at the template's size; reconcile resizes them.
    on(&fresh, |c| {
        c.apply(&Action::new(
            "frontend",
            ActionKind::SetReplicas { replicas: 3 },
        ))
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    loop {
        let pods = frontend_pods(&client).await;
        if pods.len() == 3 {
            assert_eq!(
                pods.iter().filter(|p| p.2 == Some(200)).count(),
                2,
                "new pods come at the template's size: {pods:?}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{pods:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = on(&fresh, |c| c.reconcile("frontend")).await;
    assert_eq!(n, 2);
    let pods = frontend_pods(&client).await;
    assert!(
        pods.iter()
            .all(|p| p.2 == Some(800) && p.1 == before[0].1 * 4),
        "{pods:?}"
    );
    // Within RECONCILE_EVERY the same service is not looked at again.
    assert_eq!(on(&fresh, |c| c.reconcile("frontend")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_in_place_resize_the_template_is_patched_and_the_pods_roll() {
    let (url, state) = twin(false, Duration::from_millis(20)).await;
    let client = kube_io::client(Some(&url)).await.unwrap();

    // Asked to resize in place where the cluster cannot: refused, naming the 404.
    let forced =
        actuated(KubeCluster::new(client.clone(), "boutique").with_cpu_resize(CpuResize::InPlace));
    let r = on(&forced, |c| {
        c.apply(&Action::new(
            "frontend",
            ActionKind::SetCpuLimit { millicores: 400 },
        ))
    })
    .await;
    let e = r.unwrap_err();
    assert!(e.contains("resized 0 of 1") && e.contains("404"), "{e}");

    // Auto: discovery has no pods/resize, so the template is patched (and the annotation the
    // forced attempt left is cleared): a rolling update replaces the pod.
    let auto = actuated(KubeCluster::new(client.clone(), "boutique"));
    let before = frontend_pods(&client).await;
    on(&auto, |c| {
        c.apply(&Action::new(
            "frontend",
            ActionKind::SetCpuLimit { millicores: 400 },
        ))
    })
    .await
    .unwrap();
    let d = template(&url).await;
    assert_eq!(
        d.pointer("/spec/template/spec/containers/0/resources/limits/cpu")
            .unwrap(),
        "400m"
    );
    assert!(
        d["metadata"]["annotations"].get(CPU_ANNOTATION).is_none(),
        "{d}"
    );
    assert_eq!(revision(&state), 1, "a rolling update");
    let t0 = Instant::now();
    loop {
        let pods = frontend_pods(&client).await;
        if pods.len() == 1 && pods[0].0 != before[0].0 && pods[0].2 == Some(400) {
            assert_eq!(pods[0].1, before[0].1 * 2);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{pods:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
