//! `?watch=true` on the Kubernetes lists: a stream of `WatchEvent`s (`ADDED`, `MODIFIED`,
//! `DELETED`, one JSON object per line) from a resource version on, as the API server sends them,
//! so that `kube::runtime::watcher` (list, then watch) works against the twin unchanged.
//!
//! The twin keeps the observations of its last [`HISTORY`] resource versions; a watch from a
//! version it no longer has gets an `ERROR` event with a 410 `Expired` status, upon which a client
//! lists again, as it would with a real API server after compaction. Objects are compared without
//! the fields that change with every tick (resource version, generation, heartbeat times), so a
//! watch reports real changes: replicas, readiness, placement, resources.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use graphscaler_schemas::ClusterObservation;
use serde_json::{json, Value};

use crate::kube::{self, Ctx, Template};
use crate::state::Shared;

/// How many resource versions the twin remembers for watches.
pub const HISTORY: usize = 256;

/// A watchable list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `v1.Node`.
    Nodes,
    /// `v1.Pod`.
    Pods,
    /// `apps/v1.Deployment`.
    Deployments,
}

/// The objects of `kind` in `obs`, by name, each with its `kind` and `apiVersion`.
pub fn objects(
    kind: Kind,
    obs: &ClusterObservation,
    c: &Ctx,
    app: Option<&str>,
) -> BTreeMap<String, Value> {
    let tag = |mut v: Value, k: &str, api: &str| {
        v["kind"] = k.into();
        v["apiVersion"] = api.into();
        v
    };
    match kind {
        Kind::Nodes => (0..obs.nodes.len())
            .map(|i| {
                (
                    obs.nodes[i].name.clone(),
                    tag(kube::node(obs, i, c), "Node", "v1"),
                )
            })
            .collect(),
        Kind::Pods => (0..obs.pods.len())
            .filter(|&i| app.is_none_or(|a| obs.pods[i].service == a))
            .map(|i| {
                (
                    obs.pods[i].name.clone(),
                    tag(kube::pod(obs, i, c), "Pod", "v1"),
                )
            })
            .collect(),
        Kind::Deployments => obs
            .services
            .iter()
            .filter(|s| app.is_none_or(|a| s.name == a))
            .map(|s| {
                (
                    s.name.clone(),
                    tag(kube::deployment(s, c), "Deployment", "apps/v1"),
                )
            })
            .collect(),
    }
}

/// An object without the fields every tick changes.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("generation");
    }
    if let Some(s) = v.get_mut("status").and_then(Value::as_object_mut) {
        s.remove("observedGeneration");
        if let Some(conds) = s.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conds {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastHeartbeatTime");
                }
            }
        }
    }
    v
}

/// The events that turn `old` into `new`.
pub fn diff(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<Value> {
    let mut out = vec![];
    for (name, v) in new {
        match old.get(name) {
            None => out.push(json!({"type": "ADDED", "object": v})),
            Some(o) if comparable(o) != comparable(v) => {
                out.push(json!({"type": "MODIFIED", "object": v}))
            }
            Some(_) => {}
        }
    }
    for (name, v) in old {
        if !new.contains_key(name) {
            out.push(json!({"type": "DELETED", "object": v}));
        }
    }
    out
}

/// The objects of `kind` now, or at resource version `rv` if the twin still has it.
fn snapshot(
    s: &Shared,
    kind: Kind,
    rv: Option<u64>,
    app: Option<&str>,
) -> Option<(u64, BTreeMap<String, Value>)> {
    let t = s.lock().unwrap_or_else(|p| p.into_inner());
    let (at, obs, prefs): (u64, &ClusterObservation, HashMap<String, Template>) = match rv {
        None => (t.resource_version(), t.observation(), t.templates()),
        Some(v) => {
            let (obs, prefs) = t.at(v)?;
            (v, obs, prefs.clone())
        }
    };
    let c = Ctx {
        namespace: &t.namespace,
        epoch_s: t.epoch_s,
        resource_version: at,
        templates: &prefs,
    };
    Some((at, objects(kind, obs, &c, app)))
}

/// The watch response body: events from `from` (or from nothing, which sends every object as
/// `ADDED`) until `timeout`.
pub fn body(
    s: Shared,
    kind: Kind,
    from: Option<u64>,
    app: Option<String>,
    timeout: Duration,
) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let line = |v: &Value| format!("{v}\n");
        let start = match from.filter(|v| *v > 0) {
            None => Some((0, BTreeMap::new())),
            Some(v) => snapshot(&s, kind, Some(v), app.as_deref()),
        };
        let Some((mut rv, mut sent)) = start else {
            let gone = json!({"type": "ERROR", "object": kube::status(410, "Expired", &format!(
                "too old resource version: {} (the twin keeps the last {HISTORY})", from.unwrap_or(0)))});
            let _ = tx.send(line(&gone)).await;
            return;
        };
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some((now, objs)) = snapshot(&s, kind, None, app.as_deref()) {
                if now != rv {
                    for e in diff(&sent, &objs) {
                        if tx.send(line(&e)).await.is_err() {
                            return; // the client went away
                        }
                    }
                    sent = objs;
                    rv = now;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|l| (Ok::<_, Infallible>(l), rx))
    });
    axum::body::Body::from_stream(stream)
}
