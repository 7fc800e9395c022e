//! Reading the Kubernetes API through the `kube` crate: nodes, pods and deployments into
//! observations (a list per pass, or watchers that keep them current). The actuator reads
//! through the same functions (`graphscaler_actuate::kube`).
//!
//! With `kubernetes.url` set, the client talks to that address without credentials (the twin,
//! or `kubectl proxy`); without it, the client is configured the way `kubectl` is: in a pod,
//! from the service account's token and CA; elsewhere, from the kubeconfig.

use std::collections::HashMap;

use graphscaler_schemas::{NodeObs, PodObs, PodPhase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::parse::kubernetes::quantity;

/// The label the actuator's node-type preference and the node features use.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// Node Feature Discovery's CPU model label.
pub const CPU_MODEL_ID_LABEL: &str = "feature.node.kubernetes.io/cpu-model.id";

/// A Kubernetes client for `url`, or inferred (in-cluster, then kubeconfig) without one.
pub async fn client(url: Option<&str>) -> anyhow::Result<Client> {
    let cfg = match url {
        Some(u) => {
            let uri: http::Uri = u
                .parse()
                .map_err(|e| anyhow::anyhow!("kubernetes.url `{u}`: {e}"))?;
            kube::Config::new(uri)
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no Kubernetes configuration (in-cluster or kubeconfig): {e}")
        })?,
    };
    Ok(Client::try_from(cfg)?)
}

/// A deployment's spec and status, per pod.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentInfo {
    /// Name.
    pub name: String,
    /// `spec.replicas`.
    pub replicas_spec: u32,
    /// `status.readyReplicas`.
    pub replicas_ready: u32,
    /// Σ container CPU requests of the pod template, cores.
    pub cpu_request_cores: f64,
    /// Σ container CPU limits, cores.
    pub cpu_limit_cores: f64,
    /// Σ container memory requests, bytes.
    pub mem_request_bytes: f64,
    /// Σ container memory limits, bytes.
    pub mem_limit_bytes: f64,
}

/// What one read of the Kubernetes API gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KubeState {
    /// Nodes, with CPU and memory requested by every pod bound to them (all namespaces);
    /// `cpu_usage_cores` is left 0 for Prometheus to fill.
    pub nodes: Vec<NodeObs>,
    /// Pods of the managed namespace (not finished ones); usage left for Prometheus.
    pub pods: Vec<PodObs>,
    /// Deployments of the managed namespace.
    pub deployments: Vec<DeploymentInfo>,
    /// Objects left out, with why.
    pub rejected: Vec<String>,
}

/// The sum over `containers` of `which` (`requests` or `limits`) of resource `what` (`cpu`,
/// `memory`); an unreadable quantity is left out and named in `bad`.
pub fn sum(containers: &[Container], which: &str, what: &str, bad: &mut Vec<String>) -> f64 {
    let mut total = 0.0;
    for c in containers {
        let map = c.resources.as_ref().and_then(|r| match which {
            "requests" => r.requests.as_ref(),
            _ => r.limits.as_ref(),
        });
        if let Some(Quantity(q)) = map.and_then(|m| m.get(what)) {
            match quantity(q) {
                Some(x) => total += x,
                None => bad.push(format!("container {}: {which}.{what} `{q}`", c.name)),
            }
        }
    }
    total
}

/// Sidecars a mesh injects at pod admission: not in the workload's template, never resized.
pub const SIDECARS: &[&str] = &["istio-proxy", "linkerd-proxy"];

/// The CPU request and limit (cores) of a pod's own containers: those named in `names` (its
/// Deployment's template) when known, else every container but the [`SIDECARS`]. The limit
/// sums the containers that have one, and is `None` when none has.
pub fn own_cpu(
    containers: &[Container],
    names: Option<&[String]>,
    bad: &mut Vec<String>,
) -> (f64, Option<f64>) {
    let own: Vec<Container> = containers
        .iter()
        .filter(|c| match names {
            Some(n) => n.contains(&c.name),
            None => !SIDECARS.contains(&c.name.as_str()),
        })
        .cloned()
        .collect();
    let limited = own.iter().any(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("cpu"))
    });
    let req = sum(&own, "requests", "cpu", bad);
    let lim = sum(&own, "limits", "cpu", bad);
    (req, limited.then_some(lim))
}

fn unix(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

fn app_of(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    let l = labels?;
    l.get("app")
        .or_else(|| l.get("app.kubernetes.io/name"))
        .cloned()
}

/// Lists nodes, all pods and the namespace's deployments.
pub async fn read(client: &Client, namespace: &str) -> Result<KubeState, kube::Error> {
    let lp = ListParams::default();
    let nodes = Api::<Node>::all(client.clone()).list(&lp).await?;
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?;
    let deps = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?;
    Ok(from_objects(
        &nodes.items,
        &pods.items,
        &deps.items,
        namespace,
    ))
}

/// Turns nodes, pods (all namespaces) and the namespace's deployments into observations.
pub fn from_objects<N, P, D>(nodes: &[N], pods: &[P], deps: &[D], namespace: &str) -> KubeState
where
    N: std::borrow::Borrow<Node>,
    P: std::borrow::Borrow<Pod>,
    D: std::borrow::Borrow<Deployment>,
{
    let mut out = KubeState::default();
    let mut requested: HashMap<String, (f64, f64)> = HashMap::new();
    // The containers each Deployment's template names, by its name: a pod's own containers.
    let names: HashMap<String, Vec<String>> = deps
        .iter()
        .map(|d| d.borrow())
        .filter_map(|d| {
            let t = d.spec.template.spec.as_ref()?;
            Some((
                d.metadata.name.clone()?,
                t.containers.iter().map(|c| c.name.clone()).collect(),
            ))
        })
        .collect();
    // Each pod's own CPU request and limit, by service: what is in force.
    let mut in_force: HashMap<String, Vec<(f64, Option<f64>)>> = HashMap::new();
    for p in pods.iter().map(|p| p.borrow()) {
        let name = p.metadata.name.clone().unwrap_or_default();
        let status = p.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let Some(spec) = p.spec.as_ref() else {
            out.rejected.push(format!("pod {name}: no spec"));
            continue;
        };
        let mut bad = vec![];
        let cpu = sum(&spec.containers, "requests", "cpu", &mut bad);
        let mem = sum(&spec.containers, "requests", "memory", &mut bad);
        if !bad.is_empty() {
            out.rejected.push(format!(
                "pod {name}: unreadable quantity: {}",
                bad.join("; ")
            ));
            continue;
        }
        if let Some(n) = &spec.node_name {
            let r = requested.entry(n.clone()).or_default();
            r.0 += cpu;
            r.1 += mem;
        }
        if p.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let Some(service) = app_of(p.metadata.labels.as_ref()) else {
            out.rejected.push(format!(
                "pod {name}: no `app` or `app.kubernetes.io/name` label"
            ));
            continue;
        };
        let ready_cond = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let running = phase == "Running" && spec.node_name.is_some();
        let own = own_cpu(
            &spec.containers,
            names.get(&service).map(Vec::as_slice),
            &mut bad,
        );
        if !bad.is_empty() {
            out.rejected.push(format!(
                "pod {name}: unreadable quantity: {}",
                bad.join("; ")
            ));
            continue;
        }
        in_force.entry(service.clone()).or_default().push(own);
        out.pods.push(PodObs {
            name,
            service,
            node: spec.node_name.clone(),
            phase: if running {
                PodPhase::Running
            } else {
                PodPhase::Pending
            },
            ready: ready_cond.is_some_and(|c| c.status == "True"),
            start_time_s: status.and_then(|s| s.start_time.as_ref()).map(unix),
            ready_transition_s: ready_cond
                .and_then(|c| c.last_transition_time.as_ref())
                .map(unix),
            cpu_request_cores: cpu,
            cpu_limit_cores: own.1,
            cpu_usage_cores: None,
            metric_time_s: None,
            metric_window_s: 0.0,
        });
    }
    for n in nodes.iter().map(|n| n.borrow()) {
        let name = n.metadata.name.clone().unwrap_or_default();
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let alloc = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let q = |k: &str| {
            alloc
                .and_then(|a| a.get(k))
                .and_then(|Quantity(q)| quantity(q))
        };
        let (Some(cpu), Some(mem)) = (q("cpu"), q("memory")) else {
            out.rejected.push(format!(
                "node {name}: unreadable status.allocatable cpu or memory"
            ));
            continue;
        };
        let req = requested.get(&name).copied().unwrap_or_default();
        let annotations = n.metadata.annotations.clone().unwrap_or_default();
        out.nodes.push(NodeObs {
            node_type: labels.get(INSTANCE_TYPE_LABEL).cloned().unwrap_or_default(),
            cpu_model: annotations
                .get("graphscaler.io/cpu-model")
                .or_else(|| labels.get("feature.node.kubernetes.io/cpu-model.family"))
                .cloned()
                .unwrap_or_default(),
            cpu_model_id: labels
                .get(CPU_MODEL_ID_LABEL)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            allocatable_cpu_cores: cpu,
            allocatable_mem_bytes: mem,
            requested_cpu_cores: req.0,
            requested_mem_bytes: req.1,
            cpu_usage_cores: 0.0,
            name,
        });
    }
    for d in deps.iter().map(|d| d.borrow()) {
        let name = d.metadata.name.clone().unwrap_or_default();
        let containers = d
            .spec
            .template
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut bad = vec![];
        let mut info = DeploymentInfo {
            replicas_spec: d.spec.replicas.unwrap_or(1).max(0) as u32,
            replicas_ready: d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                .max(0) as u32,
            cpu_request_cores: sum(&containers, "requests", "cpu", &mut bad),
            cpu_limit_cores: sum(&containers, "limits", "cpu", &mut bad),
            mem_request_bytes: sum(&containers, "requests", "memory", &mut bad),
            mem_limit_bytes: sum(&containers, "limits", "memory", &mut bad),
            name: name.clone(),
        };
        // Pods resized in place (or a rolling update under way) differ from the template: the
        // service's CPU is what its pods have.
        if let Some(pods) = in_force.get(&name).filter(|p| {
            p.iter().any(|(r, l)| {
                (r - info.cpu_request_cores).abs() > 5e-4
                    || l.is_some_and(|l| (l - info.cpu_limit_cores).abs() > 5e-4)
            })
        }) {
            let n = pods.len() as f64;
            info.cpu_request_cores = pods.iter().map(|p| p.0).sum::<f64>() / n;
            info.cpu_limit_cores = pods.iter().map(|p| p.1.unwrap_or(0.0)).sum::<f64>() / n;
        }
        if bad.is_empty() {
            out.deployments.push(info);
        } else {
            out.rejected.push(format!(
                "deployment {name}: unreadable quantity: {}",
                bad.join("; ")
            ));
        }
    }
    out.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    out.pods.sort_by(|a, b| a.name.cmp(&b.name));
    out.deployments.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Nodes, pods and deployments kept up to date by watches (`kube::runtime::watcher` into
/// reflector stores): a list, then a watch from its resource version, relisting after a `410
/// Gone`, reconnecting with backoff after errors. A kind whose watch last failed, or that has not
/// finished its first list, makes [`Watched::state`] fail, so nothing stale is published.
pub struct Watched {
    namespace: String,
    nodes: kube::runtime::reflector::Store<Node>,
    pods: kube::runtime::reflector::Store<Pod>,
    deployments: kube::runtime::reflector::Store<Deployment>,
    errors: std::sync::Arc<std::sync::Mutex<HashMap<&'static str, String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Errors = std::sync::Arc<std::sync::Mutex<HashMap<&'static str, String>>>;

fn watch<K>(
    api: Api<K>,
    name: &'static str,
    errors: Errors,
) -> (
    kube::runtime::reflector::Store<K>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let mut e = errors.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                Ok(_) => {
                    if e.remove(name).is_some() {
                        tracing::info!(kind = name, "kubernetes watch recovered");
                    }
                }
                Err(err) => {
                    if !e.contains_key(name) {
                        tracing::warn!(kind = name, error = %err, "kubernetes watch failing; retrying with backoff");
                    }
                    e.insert(name, err.to_string());
                }
            }
        }
    });
    (reader, task)
}

impl Watched {
    /// Starts the watches (on the current tokio runtime).
    pub fn start(client: &Client, namespace: &str) -> Self {
        let errors: Errors = Default::default();
        let (nodes, a) = watch(Api::<Node>::all(client.clone()), "nodes", errors.clone());
        let (pods, b) = watch(Api::<Pod>::all(client.clone()), "pods", errors.clone());
        let (deployments, c) = watch(
            Api::<Deployment>::namespaced(client.clone(), namespace),
            "deployments",
            errors.clone(),
        );
        Self {
            namespace: namespace.into(),
            nodes,
            pods,
            deployments,
            errors,
            tasks: vec![a, b, c],
        }
    }

    /// The watched state, waiting at most `wait` for the first lists.
    pub async fn state(&self, wait: std::time::Duration) -> Result<KubeState, String> {
        let ready = async {
            self.nodes.wait_until_ready().await.is_ok()
                && self.pods.wait_until_ready().await.is_ok()
                && self.deployments.wait_until_ready().await.is_ok()
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(true) => {}
            _ => return Err("kubernetes watches have not finished their first list".into()),
        }
        {
            let e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((kind, err)) = e.iter().next() {
                return Err(format!("watch of {kind} failing: {err}"));
            }
        }
        Ok(from_objects(
            &self.nodes.state(),
            &self.pods.state(),
            &self.deployments.state(),
            &self.namespace,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_cpu_limit_rejects_the_pod_and_sidecars_are_not_its_own() {
        let pod = |name: &str, limit: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [
                    {"name": "web", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": limit}}},
                    {"name": "istio-proxy", "resources": {"requests": {"cpu": "10m"}, "limits": {"cpu": "2"}}}]},
                "status": {"phase": "Running"}
            }))
            .unwrap()
        };
        let s = from_objects::<Node, _, Deployment>(
            &[],
            &[pod("a", "300m"), pod("b", "lots")],
            &[],
            "ns",
        );
        assert_eq!(s.pods.len(), 1);
        assert_eq!(
            s.pods[0].cpu_limit_cores,
            Some(0.3),
            "the sidecar is not counted"
        );
        assert_eq!(s.rejected.len(), 1);
        assert!(
            s.rejected[0].contains("pod b") && s.rejected[0].contains("lots"),
            "{:?}",
            s.rejected
        );
    }
}
