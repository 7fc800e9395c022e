//! The actuator's [`Cluster`] behind the Kubernetes API: the scale subresource, CPU through
//! in-place pod resize or the pod template, and node affinity, read back through the
//! scraper's readers.
//!
//! A CPU change scales the request and the limit of each container that has a limit by the
//! same factor (requests stay at most the limits; containers without a limit are left alone,
//! and a workload none of whose containers has one gets no CPU action). It reaches the pods
//! by the path `cpu_resize` names:
//!
//! * **in place** — each pod is patched through the `pods/{name}/resize` subresource
//!   (Kubernetes 1.33 and later), with no restart. The Deployment's template is left alone
//!   (changing it would restart every pod); the wanted size goes into its [`CPU_ANNOTATION`],
//!   from which [`Cluster::reconcile`] resizes the pods the ReplicaSet starts later, and a
//!   restarted actuator reads it back;
//! * **restart** — the pod template is patched: the Deployment rolls every pod;
//! * **auto** — in place where the API server lists `pods/resize`, restart otherwise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use graphscaler_schemas::{Action, ActionKind, CpuResize, NodeObs};
use graphscaler_scrape::k8s::{from_objects, INSTANCE_TYPE_LABEL};
use graphscaler_scrape::parse::kubernetes::quantity;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Cluster, Workload};

/// The Deployment annotation with the CPU its pods were resized to in place, by container:
/// `{"server": {"request_m": 120, "limit_m": 600}}`.
pub const CPU_ANNOTATION: &str = "graphscaler.io/cpu";

/// How often, at most, [`Cluster::reconcile`] looks at one service's pods.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);

/// One container's CPU, millicores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCpu {
    /// `requests.cpu`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_m: Option<u32>,
    /// `limits.cpu`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_m: Option<u32>,
}

/// The CPU of a workload's containers, by container name.
pub type Sizes = BTreeMap<String, ContainerCpu>;

fn millicores(c: &Container, which: &str) -> Result<Option<u32>, String> {
    let map = c.resources.as_ref().and_then(|r| match which {
        "requests" => r.requests.as_ref(),
        _ => r.limits.as_ref(),
    });
    match map.and_then(|m| m.get("cpu")) {
        None => Ok(None),
        Some(q) => quantity(&q.0)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| Some((v * 1000.0).round() as u32))
            .ok_or_else(|| {
                format!(
                    "container {}: {which}.cpu `{}` is not a CPU quantity",
                    c.name, q.0
                )
            }),
    }
}

/// The CPU of `containers`, millicores.
pub fn container_sizes(containers: &[Container]) -> Result<Sizes, String> {
    containers
        .iter()
        .map(|c| {
            Ok((
                c.name.clone(),
                ContainerCpu {
                    request_m: millicores(c, "requests")?,
                    limit_m: millicores(c, "limits")?,
                },
            ))
        })
        .collect()
}

/// The CPU a Deployment's pods should have: its template's, overridden by what its
/// [`CPU_ANNOTATION`] says they were resized to in place. Errors name what is unreadable.
pub fn wanted_sizes(d: &Deployment) -> Result<Sizes, String> {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let containers = d
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let mut sizes = container_sizes(containers).map_err(|e| format!("deployment {name}: {e}"))?;
    if let Some(a) = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CPU_ANNOTATION))
    {
        let resized: Sizes = serde_json::from_str(a).map_err(|e| {
            format!("deployment {name}: annotation {CPU_ANNOTATION} `{a}` is not CPU sizes by container: {e}")
        })?;
        for (c, v) in resized {
            if let Some(s) = sizes.get_mut(&c) {
                *s = v;
            }
        }
    }
    Ok(sizes)
}

/// Σ limits over the containers that have one, millicores; `None` when none has.
pub fn total_limit_m(sizes: &Sizes) -> Option<u32> {
    let limited: Vec<u32> = sizes.values().filter_map(|c| c.limit_m).collect();
    (!limited.is_empty()).then(|| limited.iter().sum())
}

/// `sizes` with the summed limit scaled to `millicores`: each container with a limit gets its
/// limit and request scaled by the same factor (at least 1 m, the request at most the limit);
/// containers without a limit are not in the result (left as they are).
pub fn scaled(sizes: &Sizes, millicores: u32) -> Result<Sizes, String> {
    let total = total_limit_m(sizes)
        .filter(|t| *t > 0)
        .ok_or("no container has a CPU limit to scale")?;
    let f = f64::from(millicores) / f64::from(total);
    Ok(sizes
        .iter()
        .filter_map(|(name, c)| {
            let lim = ((f64::from(c.limit_m?) * f).round() as u32).max(1);
            let req = c
                .request_m
                .map(|r| ((f64::from(r) * f).round() as u32).clamp(1, lim));
            Some((
                name.clone(),
                ContainerCpu {
                    request_m: req,
                    limit_m: Some(lim),
                },
            ))
        })
        .collect())
}

/// The containers' resources as a patch lists them.
fn containers_patch(sizes: &Sizes) -> Vec<serde_json::Value> {
    sizes
        .iter()
        .map(|(name, c)| {
            let mut r = json!({"limits": {"cpu": format!("{}m", c.limit_m.unwrap_or_default())}});
            if let Some(q) = c.request_m {
                r["requests"] = json!({"cpu": format!("{q}m")});
            }
            json!({"name": name, "resources": r})
        })
        .collect()
}

/// The cluster behind the Kubernetes API, for the actuator.
///
/// The actuator's [`Cluster`] interface is synchronous; each call runs the API request on the
/// current multi-threaded tokio runtime (`block_in_place`).
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    namespace: String,
    cpu: CpuResize,
    /// Whether the API server lists `pods/resize`, once asked.
    in_place: Option<bool>,
    last_reconcile: HashMap<String, Instant>,
    /// Services whose last reconcile failed (a streak is logged once).
    failing: HashSet<String>,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("namespace", &self.namespace)
            .field("cpu_resize", &self.cpu)
            .finish()
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

impl KubeCluster {
    /// Actuates deployments of `namespace`, CPU changes taking the path `cpu_resize`
    /// ([`CpuResize::Auto`] by default).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            cpu: CpuResize::Auto,
            in_place: None,
            last_reconcile: HashMap::new(),
            failing: HashSet::new(),
        }
    }

    /// The same, with CPU changes taking the path `cpu`.
    pub fn with_cpu_resize(mut self, cpu: CpuResize) -> Self {
        self.cpu = cpu;
        self
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The path a CPU change takes: `auto` asks the API server's discovery once whether it
    /// has `pods/resize`.
    async fn cpu_path(&mut self) -> Result<CpuResize, String> {
        match self.cpu {
            CpuResize::Auto => {}
            other => return Ok(other),
        }
        let in_place = match self.in_place {
            Some(b) => b,
            None => {
                let list = self
                    .client
                    .list_core_api_resources("v1")
                    .await
                    .map_err(|e| format!("cannot tell whether the cluster resizes pods in place (discovery of /api/v1): {}", api_error(e)))?;
                let b = list.resources.iter().any(|r| r.name == "pods/resize");
                if !b {
                    tracing::warn!("the API server has no pods/resize subresource (Kubernetes before 1.33): CPU changes patch the pod template, a rolling restart of every pod");
                }
                self.in_place = Some(b);
                b
            }
        };
        Ok(if in_place {
            CpuResize::InPlace
        } else {
            CpuResize::Restart
        })
    }

    /// The pods of Deployment `d` that are not finished or being deleted.
    async fn pods_of(&self, d: &Deployment) -> Result<Vec<Pod>, String> {
        let labels = d
            .spec
            .selector
            .match_labels
            .as_ref()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| {
                format!(
                    "deployment {} has no spec.selector.matchLabels to find its pods by",
                    d.metadata.name.as_deref().unwrap_or_default()
                )
            })?;
        let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let list = self
            .pods()
            .list(&ListParams::default().labels(&selector.join(",")))
            .await
            .map_err(api_error)?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect())
    }

    /// Resizes in place each pod of `d` whose containers differ from `wanted`; returns the
    /// pods resized, and the failures in words.
    async fn resize_pods(&self, d: &Deployment, wanted: &Sizes) -> (usize, usize, Vec<String>) {
        let pods = match self.pods_of(d).await {
            Ok(p) => p,
            Err(e) => return (0, 0, vec![e]),
        };
        let (mut done, mut errors) = (0, vec![]);
        let n = pods.len();
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let have = p
                .spec
                .as_ref()
                .map(|s| container_sizes(&s.containers))
                .transpose()
                .unwrap_or_default()
                .unwrap_or_default();
            let differ: Sizes = wanted
                .iter()
                .filter(|(c, w)| have.get(*c).is_some_and(|h| h != *w))
                .map(|(c, w)| (c.clone(), *w))
                .collect();
            if differ.is_empty() {
                continue;
            }
            let patch = json!({"spec": {"containers": containers_patch(&differ)}});
            match self
                .pods()
                .patch_subresource(
                    "resize",
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
            {
                Ok(_) => done += 1,
                Err(e) => errors.push(format!("pod {name}: {}", api_error(e))),
            }
        }
        (done, n, errors)
    }

    async fn set_cpu(&mut self, service: &str, millicores: u32) -> Result<(), String> {
        let api = self.deployments();
        let d = api.get(service).await.map_err(api_error)?;
        let now = wanted_sizes(&d)?;
        let new = scaled(&now, millicores).map_err(|e| format!("{service}: {e}"))?;
        let path = self.cpu_path().await?;
        let pp = PatchParams::default();
        if path == CpuResize::Restart {
            let mut body =
                json!({"spec": {"template": {"spec": {"containers": containers_patch(&new)}}}});
            let annotated = d
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(CPU_ANNOTATION));
            if annotated {
                // The template holds the size from now on.
                body["metadata"] = json!({"annotations": {CPU_ANNOTATION: null}});
            }
            api.patch(service, &pp, &Patch::Strategic(body))
                .await
                .map_err(api_error)?;
            return Ok(());
        }
        // In place: the wanted size first (a restarted actuator, and reconcile, read it), then
        // each pod.
        let mut all = now.clone();
        all.extend(new.clone());
        let resized: Sizes = all
            .into_iter()
            .filter(|(_, c)| c.limit_m.is_some())
            .collect();
        let note = serde_json::to_string(&resized).map_err(|e| e.to_string())?;
        let d = api
            .patch(
                service,
                &pp,
                &Patch::Merge(json!({"metadata": {"annotations": {CPU_ANNOTATION: note}}})),
            )
            .await
            .map_err(api_error)?;
        let (done, n, errors) = self.resize_pods(&d, &new).await;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "resized {done} of {n} pods of {service} in place; {}; the {CPU_ANNOTATION} annotation holds the wanted size, and pods are resized toward it as telemetry arrives",
                errors.join("; ")
            ))
        }
    }

    async fn apply_async(&mut self, a: &Action) -> Result<(), String> {
        let api = self.deployments();
        let pp = PatchParams::default();
        match &a.kind {
            ActionKind::SetReplicas { replicas } => {
                api.patch_scale(
                    &a.service,
                    &pp,
                    &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await
                .map_err(api_error)?;
            }
            ActionKind::SetCpuLimit { millicores } => self.set_cpu(&a.service, *millicores).await?,
            ActionKind::PreferNodeType { node_type } => {
                let affinity = match node_type {
                    Some(t) => {
                        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "preference": {"matchExpressions": [
                            {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [t]}]}}]}})
                    }
                    None => serde_json::Value::Null,
                };
                api.patch(
                    &a.service,
                    &pp,
                    &Patch::Merge(json!({"spec": {"template": {"spec": {"affinity": affinity}}}})),
                )
                .await
                .map_err(api_error)?;
            }
            ActionKind::ChangeReplicas { .. } | ActionKind::ChangeCpuQuota { .. } => {
                // The actuator turns relative actions into absolute ones before applying.
                return Err(format!("relative action {:?} reached the cluster", a.kind));
            }
        }
        Ok(())
    }

    async fn reconcile_async(&mut self, service: &str) -> Result<usize, String> {
        let d = match self
            .deployments()
            .get_opt(service)
            .await
            .map_err(api_error)?
        {
            Some(d) => d,
            None => return Ok(0),
        };
        let annotated = d
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CPU_ANNOTATION));
        if !annotated {
            return Ok(0);
        }
        let wanted: Sizes = wanted_sizes(&d)?
            .into_iter()
            .filter(|(_, c)| c.limit_m.is_some())
            .collect();
        let (done, _, errors) = self.resize_pods(&d, &wanted).await;
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Cluster for KubeCluster {
    fn workload(&self, service: &str) -> Option<Workload> {
        let d = block(self.deployments().get_opt(service)).ok()??;
        let sizes = match wanted_sizes(&d) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the workload's CPU is unreadable");
                return None;
            }
        };
        Some(Workload {
            replicas: d.spec.replicas.unwrap_or(1).max(0) as u32,
            cpu_request_cores: sizes
                .values()
                .filter_map(|c| c.request_m)
                .map(f64::from)
                .sum::<f64>()
                / 1000.0,
            cpu_limit_m: total_limit_m(&sizes),
        })
    }

    fn free_cpu_cores(&self) -> f64 {
        // The capacity guardrail needs every node and every pod's requests (not the
        // deployments): on an error, no capacity (refuse).
        let lp = ListParams::default();
        let read = async {
            let nodes = Api::<Node>::all(self.client.clone()).list(&lp).await?;
            let pods = Api::<Pod>::all(self.client.clone()).list(&lp).await?;
            Ok::<_, kube::Error>(from_objects::<_, _, Deployment>(
                &nodes.items,
                &pods.items,
                &[],
                &self.namespace,
            ))
        };
        match block(read) {
            Ok(s) => s.nodes.iter().map(NodeObs::free_cpu_cores).sum(),
            Err(e) => {
                tracing::warn!(error = %e, "reading nodes for the capacity check failed");
                0.0
            }
        }
    }

    fn apply(&mut self, action: &Action) -> Result<(), String> {
        block(self.apply_async(action))
    }

    fn reconcile(&mut self, service: &str) -> usize {
        if self.cpu == CpuResize::Restart
            || self
                .last_reconcile
                .get(service)
                .is_some_and(|t| t.elapsed() < RECONCILE_EVERY)
        {
            return 0;
        }
        self.last_reconcile
            .insert(service.to_string(), Instant::now());
        match block(self.reconcile_async(service)) {
            Ok(n) => {
                if self.failing.remove(service) {
                    tracing::info!(service, "pods are resized to the wanted CPU again");
                }
                if n > 0 {
                    tracing::info!(
                        service,
                        pods = n,
                        "resized pods started at the template's CPU to the wanted size"
                    );
                }
                n
            }
            Err(e) => {
                if self.failing.insert(service.to_string()) {
                    tracing::warn!(service, error = %e, "cannot resize pods to the wanted CPU; retrying as telemetry arrives");
                }
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(request_m: Option<u32>, limit_m: Option<u32>) -> ContainerCpu {
        ContainerCpu { request_m, limit_m }
    }

    #[test]
    fn limits_scale_with_requests_and_unlimited_containers_are_left_alone() {
        let sizes: Sizes = [
            ("app".to_string(), c(Some(100), Some(200))),
            ("helper".to_string(), c(Some(50), Some(200))),
            ("unlimited".to_string(), c(Some(300), None)),
        ]
        .into();
        assert_eq!(total_limit_m(&sizes), Some(400));
        // The summed limit 400 → 800 m: each limited container doubles, request and limit.
        let s = scaled(&sizes, 800).unwrap();
        assert_eq!(
            s,
            [
                ("app".to_string(), c(Some(200), Some(400))),
                ("helper".to_string(), c(Some(100), Some(400))),
            ]
            .into()
        );
        // Shrinking keeps every request at most its limit and at least 1 m.
        let s = scaled(&sizes, 2).unwrap();
        assert!(s
            .values()
            .all(|c| c.request_m <= c.limit_m && c.limit_m >= Some(1)));
        // No limit anywhere: nothing to scale, and none is invented.
        let none: Sizes = [("a".to_string(), c(Some(100), None))].into();
        assert_eq!(total_limit_m(&none), None);
        assert!(scaled(&none, 500)
            .unwrap_err()
            .contains("no container has a CPU limit"));
    }

    #[test]
    fn the_annotation_overrides_the_template() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {CPU_ANNOTATION: r#"{"app":{"request_m":300,"limit_m":600}}"#}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [
                {"name": "app", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "10m"}}}]}}}
        }))
        .unwrap();
        let w = wanted_sizes(&d).unwrap();
        assert_eq!(w["app"], c(Some(300), Some(600)));
        assert_eq!(w["sidecar"], c(Some(10), None));
        let mut bad = d.clone();
        bad.metadata.annotations = Some([(CPU_ANNOTATION.to_string(), "600m".to_string())].into());
        assert!(wanted_sizes(&bad).unwrap_err().contains(CPU_ANNOTATION));
    }
}
