//! A Kubernetes API subset in the real JSON shapes: nodes, pods, deployments and the
//! `deployments/{name}/scale` subresource, with PATCH of replicas, CPU limits and node
//! affinity turned into twin actions.

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

use graphscaler_schemas::{ActionKind, ClusterObservation, PodPhase, ServiceObs};

/// The node label that node affinity patches select on.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// Unix seconds to RFC 3339.
pub fn rfc3339(unix_s: f64) -> String {
    DateTime::from_timestamp(unix_s.floor() as i64, 0)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `200m`, `1`, `1.5` → millicores.
pub fn cpu_millicores(v: &Value) -> Option<f64> {
    let m = match v {
        Value::Number(n) => n.as_f64()? * 1000.0,
        Value::String(s) => match s.strip_suffix('m') {
            Some(m) => m.parse().ok()?,
            None => s.parse::<f64>().ok()? * 1000.0,
        },
        _ => return None,
    };
    (m.is_finite() && m >= 0.0).then_some(m)
}

fn cpu(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as i64)
}

fn mem(bytes: f64) -> String {
    format!("{}Mi", (bytes / (1024.0 * 1024.0)).round() as i64)
}

pub(crate) fn uid(kind: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{kind}/{name}").as_bytes());
    let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// Context the objects need: namespace, clock base and resource version.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    /// The namespace of the workloads.
    pub namespace: &'a str,
    /// Unix time of twin time 0.
    pub epoch_s: f64,
    /// The current resource version.
    pub resource_version: u64,
    /// Each Deployment's pod template and annotations, by service.
    pub templates: &'a std::collections::HashMap<String, Template>,
}

/// What a Deployment says beyond its observed state: the pod template's CPU and node
/// preference, and the annotations patched onto it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// The preferred node type, if any.
    pub prefer: Option<String>,
    /// The template's CPU request, cores.
    pub cpu_request_cores: f64,
    /// The template's CPU limit, cores.
    pub cpu_limit_cores: f64,
    /// `metadata.annotations`.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A `v1.Node`.
pub fn node(obs: &ClusterObservation, i: usize, c: &Ctx) -> Value {
    let n = &obs.nodes[i];
    json!({
        "metadata": {
            "name": n.name, "uid": uid("Node", &n.name), "resourceVersion": c.resource_version.to_string(),
            "creationTimestamp": rfc3339(c.epoch_s),
            "labels": {
                "kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                INSTANCE_TYPE_LABEL: n.node_type,
                "feature.node.kubernetes.io/cpu-model.id": n.cpu_model_id.to_string(),
            },
            "annotations": {"graphscaler.io/cpu-model": n.cpu_model}
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu(n.allocatable_cpu_cores), "memory": mem(n.allocatable_mem_bytes), "pods": "110"},
            "allocatable": {"cpu": cpu(n.allocatable_cpu_cores), "memory": mem(n.allocatable_mem_bytes), "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": rfc3339(c.epoch_s + obs.time_s), "lastTransitionTime": rfc3339(c.epoch_s)}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.33.0",
                         "containerRuntimeVersion": "containerd://2.0.0", "kernelVersion": "6.1.0", "osImage": "graphscaler twin",
                         "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}
        }
    })
}

/// A `v1.Pod`.
pub fn pod(obs: &ClusterObservation, i: usize, c: &Ctx) -> Value {
    let p = &obs.pods[i];
    let s = obs.service(&p.service);
    let (lim, mreq, mlim) = s.map_or((0.0, 0.0, 0.0), |s| {
        (s.cpu_limit_cores, s.mem_request_bytes, s.mem_limit_bytes)
    });
    let lim = p.cpu_limit_cores.unwrap_or(lim);
    let mut status = json!({
        "phase": match p.phase { PodPhase::Pending => "Pending", PodPhase::Running => "Running" },
        "conditions": [
            {"type": "PodScheduled", "status": if p.node.is_some() { "True" } else { "False" },
             "reason": if p.node.is_some() { Value::Null } else { json!("Unschedulable") }},
            {"type": "Ready", "status": if p.ready { "True" } else { "False" },
             "lastTransitionTime": rfc3339(c.epoch_s + p.ready_transition_s.or(p.start_time_s).unwrap_or(obs.time_s))},
        ],
        "qosClass": "Burstable",
    });
    if let Some(st) = p.start_time_s {
        status["startTime"] = json!(rfc3339(c.epoch_s + st));
        status["containerStatuses"] = json!([{"name": p.service, "ready": p.ready, "restartCount": 0,
            "image": format!("twin/{}:latest", p.service), "imageID": "", "started": true,
            "state": {"running": {"startedAt": rfc3339(c.epoch_s + st)}}}]);
    }
    let mut spec = json!({
        "containers": [{"name": p.service, "image": format!("twin/{}:latest", p.service),
            "resources": {"requests": {"cpu": cpu(p.cpu_request_cores), "memory": mem(mreq)},
                          "limits": {"cpu": cpu(lim), "memory": mem(mlim)}}}],
    });
    if let Some(n) = &p.node {
        spec["nodeName"] = json!(n);
    }
    json!({
        "metadata": {
            "name": p.name, "namespace": c.namespace, "uid": uid("Pod", &p.name),
            "resourceVersion": c.resource_version.to_string(),
            "creationTimestamp": rfc3339(c.epoch_s + p.start_time_s.unwrap_or(obs.time_s)),
            "labels": {"app": p.service},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-twin", p.service),
                                 "uid": uid("ReplicaSet", &p.service), "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": spec,
        "status": status
    })
}

fn affinity(node_type: Option<String>) -> Value {
    match node_type {
        None => Value::Null,
        Some(t) => json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [t]}]}}]}}),
    }
}

/// An `apps/v1.Deployment`.
pub fn deployment(s: &ServiceObs, c: &Ctx) -> Value {
    let t = c.templates.get(&s.name);
    let (req, lim) = t.map_or((s.cpu_request_cores, s.cpu_limit_cores), |t| {
        (t.cpu_request_cores, t.cpu_limit_cores)
    });
    let mut pod_spec = json!({
        "containers": [{"name": s.name, "image": format!("twin/{}:latest", s.name),
            "resources": {"requests": {"cpu": cpu(req), "memory": mem(s.mem_request_bytes)},
                          "limits": {"cpu": cpu(lim), "memory": mem(s.mem_limit_bytes)}}}]
    });
    let aff = affinity(t.and_then(|t| t.prefer.clone()));
    if !aff.is_null() {
        pod_spec["affinity"] = aff;
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": s.name, "namespace": c.namespace, "uid": uid("Deployment", &s.name),
            "resourceVersion": c.resource_version.to_string(), "generation": c.resource_version,
            "creationTimestamp": rfc3339(c.epoch_s), "labels": {"app": s.name},
            "annotations": t.map(|t| t.annotations.clone()).unwrap_or_default()
        },
        "spec": {
            "replicas": s.replicas_spec,
            "selector": {"matchLabels": {"app": s.name}},
            "template": {"metadata": {"labels": {"app": s.name}}, "spec": pod_spec},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        },
        "status": {
            "observedGeneration": c.resource_version,
            "replicas": s.replicas_ready + s.replicas_unready,
            "updatedReplicas": s.replicas_ready + s.replicas_unready,
            "readyReplicas": s.replicas_ready,
            "availableReplicas": s.replicas_ready,
            "unavailableReplicas": s.replicas_unready,
        }
    })
}

/// An `autoscaling/v1.Scale`.
pub fn scale(s: &ServiceObs, c: &Ctx) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": s.name, "namespace": c.namespace, "uid": uid("Deployment", &s.name),
                     "resourceVersion": c.resource_version.to_string(), "creationTimestamp": rfc3339(c.epoch_s)},
        "spec": {"replicas": s.replicas_spec},
        "status": {"replicas": s.replicas_ready + s.replicas_unready, "selector": format!("app={}", s.name)}
    })
}

/// A list object.
pub fn list(kind: &str, api_version: &str, resource_version: u64, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": resource_version.to_string()}, "items": items})
}

/// A `v1.Status` failure.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// A change a Deployment patch asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// One the twin applies as an action (replicas, node preference).
    Act(ActionKind),
    /// The pod template's CPU request and limit, millicores (a rolling update).
    TemplateCpu {
        /// `requests.cpu`, if patched.
        request_m: Option<f64>,
        /// `limits.cpu`, if patched.
        limit_m: Option<f64>,
    },
    /// `metadata.annotations`: set, or removed (`None`, a JSON null).
    Annotate(std::collections::BTreeMap<String, Option<String>>),
}

/// The CPU request and limit (millicores) one container's `resources` set, naming `at` in
/// errors.
fn container_cpu(ctr: &Value, at: &str) -> Result<(Option<f64>, Option<f64>), String> {
    let q = |which: &str| -> Result<Option<f64>, String> {
        match ctr.pointer(&format!("/resources/{which}/cpu")) {
            None => Ok(None),
            Some(v) => cpu_millicores(v)
                .map(Some)
                .ok_or_else(|| format!("{at}.resources.{which}.cpu: `{v}` is not a CPU quantity")),
        }
    };
    Ok((q("requests")?, q("limits")?))
}

/// The CPU request and limit (millicores) a `pods/{name}/resize` patch sets for the pod's
/// container. Errors name the field.
pub fn resize_patch(body: &Value) -> Result<(Option<f64>, Option<f64>), String> {
    let arr = body
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .ok_or("spec.containers: a resize patch lists the containers it resizes")?;
    let mut out = (None, None);
    for (i, ctr) in arr.iter().enumerate() {
        let (r, l) = container_cpu(ctr, &format!("spec.containers[{i}]"))?;
        out = (r.or(out.0), l.or(out.1));
    }
    if out == (None, None) {
        return Err("spec.containers: no resources.requests.cpu or resources.limits.cpu".into());
    }
    Ok(out)
}

/// The changes a deployment (or scale) patch asks for, in order. Errors name the field.
pub fn patch_changes(body: &Value, scale_only: bool) -> Result<Vec<Change>, String> {
    let mut out = vec![];
    for k in patch_actions(body, scale_only)? {
        out.push(Change::Act(k));
    }
    if scale_only {
        return Ok(out);
    }
    if let Some(containers) = body.pointer("/spec/template/spec/containers") {
        let arr = containers
            .as_array()
            .ok_or("spec.template.spec.containers: expected a list")?;
        for (i, ctr) in arr.iter().enumerate() {
            let (request_m, limit_m) =
                container_cpu(ctr, &format!("spec.template.spec.containers[{i}]"))?;
            if request_m.is_some() || limit_m.is_some() {
                out.push(Change::TemplateCpu { request_m, limit_m });
            }
        }
    }
    if let Some(a) = body.pointer("/metadata/annotations") {
        let map = a
            .as_object()
            .ok_or("metadata.annotations: expected an object")?;
        let mut set = std::collections::BTreeMap::new();
        for (k, v) in map {
            let v = match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => {
                    return Err(format!(
                        "metadata.annotations.{k}: expected a string, got {other}"
                    ))
                }
            };
            set.insert(k.clone(), v);
        }
        out.push(Change::Annotate(set));
    }
    Ok(out)
}

/// The actions a deployment (or scale) patch asks for (replicas, node preference), in order.
/// Errors name the field.
fn patch_actions(body: &Value, scale_only: bool) -> Result<Vec<ActionKind>, String> {
    let mut out = vec![];
    if !body.is_object() {
        return Err("patch body must be a JSON object".into());
    }
    if let Some(r) = body.pointer("/spec/replicas") {
        let n = r
            .as_u64()
            .ok_or_else(|| format!("spec.replicas: expected a non-negative integer, got {r}"))?;
        out.push(ActionKind::SetReplicas {
            replicas: u32::try_from(n).map_err(|_| "spec.replicas: too large".to_string())?,
        });
    }
    if scale_only {
        return Ok(out);
    }
    if let Some(spec) = body.pointer("/spec/template/spec") {
        if let Some(aff) = spec.get("affinity") {
            if aff.is_null() || aff.pointer("/nodeAffinity").is_some_and(Value::is_null) {
                out.push(ActionKind::PreferNodeType { node_type: None });
            } else {
                let terms = aff
                    .pointer("/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
                    .and_then(Value::as_array)
                    .ok_or("spec.template.spec.affinity: only nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution is supported")?;
                let value = terms
                    .iter()
                    .flat_map(|t| t.pointer("/preference/matchExpressions").and_then(Value::as_array).into_iter().flatten())
                    .find(|e| e["key"] == INSTANCE_TYPE_LABEL && e["operator"] == "In")
                    .and_then(|e| e.pointer("/values/0"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("spec.template.spec.affinity: expected a preference on {INSTANCE_TYPE_LABEL} In [type]"))?;
                out.push(ActionKind::PreferNodeType {
                    node_type: Some(value.to_string()),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millicores(&json!("250m")), Some(250.0));
        assert_eq!(cpu_millicores(&json!("1.5")), Some(1500.0));
        assert_eq!(cpu_millicores(&json!(2)), Some(2000.0));
        assert_eq!(cpu_millicores(&json!("lots")), None);
        assert_eq!(cpu_millicores(&json!("-1")), None);
    }

    #[test]
    fn patches_become_changes() {
        let a = patch_changes(&json!({"spec": {"replicas": 3}}), true).unwrap();
        assert_eq!(
            a,
            vec![Change::Act(ActionKind::SetReplicas { replicas: 3 })]
        );
        let body = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "frontend", "resources": {"limits": {"cpu": "400m"}}}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": ["c2d-standard-8"]}]}}]}}}}}});
        let a = patch_changes(&body, false).unwrap();
        assert_eq!(
            a,
            vec![
                Change::Act(ActionKind::PreferNodeType {
                    node_type: Some("c2d-standard-8".into())
                }),
                Change::TemplateCpu {
                    request_m: None,
                    limit_m: Some(400.0)
                },
            ]
        );
        let a = patch_changes(
            &json!({"metadata": {"annotations": {"a": "1", "b": null}}}),
            false,
        )
        .unwrap();
        assert_eq!(
            a,
            vec![Change::Annotate(
                [("a".to_string(), Some("1".to_string())), ("b".into(), None)].into()
            )]
        );
        let e = patch_changes(&json!({"spec": {"replicas": -1}}), true).unwrap_err();
        assert!(e.contains("spec.replicas"), "{e}");
        let e = patch_changes(&json!({"spec": {"template": {"spec": {"containers": [{"resources": {"limits": {"cpu": "x"}}}]}}}}), false).unwrap_err();
        assert!(e.contains("containers[0].resources.limits.cpu"), "{e}");
        assert!(patch_changes(&json!([1]), false).is_err());
        assert_eq!(
            resize_patch(
                &json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}]}})
            ),
            Ok((Some(100.0), Some(1000.0)))
        );
        assert!(resize_patch(&json!({"spec": {}})).is_err());
    }
}
