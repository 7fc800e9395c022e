//! The actuator's [`Cluster`] behind the Kubernetes API: the scale subresource, CPU limits and
//! node affinity, read back through the scraper's readers.

use graphscaler_schemas::{Action, ActionKind, NodeObs};
use graphscaler_scrape::k8s::{from_objects, sum, INSTANCE_TYPE_LABEL};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::{Cluster, Workload};

/// The cluster behind the Kubernetes API, for the actuator.
///
/// The actuator's [`Cluster`] interface is synchronous; each call runs the API request on the
/// current multi-threaded tokio runtime (`block_in_place`).
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    namespace: String,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl KubeCluster {
    /// Actuates deployments of `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn apply_async(&self, a: &Action) -> Result<(), kube::Error> {
        let api = self.deployments();
        let pp = PatchParams::default();
        match &a.kind {
            ActionKind::SetReplicas { replicas } => {
                api.patch_scale(
                    &a.service,
                    &pp,
                    &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await?;
            }
            ActionKind::SetCpuLimit { millicores } => {
                // Strategic merge on the container name: every container of the pod gets the limit.
                let d = api.get(&a.service).await?;
                let names: Vec<String> = d
                    .spec
                    .template
                    .spec
                    .map(|s| s.containers.into_iter().map(|c| c.name).collect())
                    .unwrap_or_default();
                let containers: Vec<_> = names
                    .iter()
                    .map(|n| json!({"name": n, "resources": {"limits": {"cpu": format!("{millicores}m")}}}))
                    .collect();
                api.patch(
                    &a.service,
                    &pp,
                    &Patch::Strategic(
                        json!({"spec": {"template": {"spec": {"containers": containers}}}}),
                    ),
                )
                .await?;
            }
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
                .await?;
            }
            ActionKind::ChangeReplicas { .. } | ActionKind::ChangeCpuQuota { .. } => {
                // The actuator turns relative actions into absolute ones before applying.
                return Err(kube::Error::Service(
                    format!("relative action {:?} reached the cluster", a.kind).into(),
                ));
            }
        }
        Ok(())
    }
}

impl Cluster for KubeCluster {
    fn workload(&self, service: &str) -> Option<Workload> {
        let d = block(self.deployments().get_opt(service)).ok()??;
        let spec = d.spec;
        let containers = spec.template.spec.map(|s| s.containers).unwrap_or_default();
        let mut bad = vec![];
        let req = sum(&containers, "requests", "cpu", &mut bad);
        let lim = sum(&containers, "limits", "cpu", &mut bad);
        Some(Workload {
            replicas: spec.replicas.unwrap_or(1).max(0) as u32,
            cpu_request_cores: req,
            cpu_limit_m: (lim * 1000.0).round() as u32,
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
        block(self.apply_async(action)).map_err(|e| match e {
            kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
            other => other.to_string(),
        })
    }
}
