//! The HTTP server: one router for the three interfaces, and the clock that advances the twin.

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::kiali::{self, GraphQuery};
use crate::kube::{self, Ctx};
use crate::state::Shared;

type Reply = (StatusCode, Json<Value>);

fn not_found(what: &str) -> Reply {
    (
        StatusCode::NOT_FOUND,
        Json(kube::status(404, "NotFound", &format!("{what} not found"))),
    )
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, crate::state::LiveTwin> {
    // A handler that panicked while holding the lock leaves consistent data (every mutation
    // is applied whole), so a poisoned lock is taken over.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The router: `/metrics`, `/api/namespaces/graph`, and the Kubernetes paths.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/namespaces/graph", get(graph))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{name}", get(node))
        .route("/api/v1/pods", get(all_pods))
        .route("/api/v1", get(core_resources))
        .route("/api/v1/namespaces/{ns}/pods", get(pods))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(one_pod))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/resize",
            axum::routing::patch(resize_pod),
        )
        .route("/apis/apps/v1/deployments", get(all_deployments))
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments",
            get(deployments),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            get(deployment).patch(patch_deployment),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            get(scale).patch(patch_scale),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            axum::routing::post(create_lease),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
            get(get_lease).put(replace_lease),
        )
        .with_state(state)
}

/// Serves `router` on `listener` and advances the twin every `tick_every` until `shutdown`
/// resolves or the run ends (the server keeps serving the last state after the end).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    tick_every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let clock_state = state.clone();
    let clock = tokio::spawn(async move {
        let mut every = tokio::time::interval(tick_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            if !lock(&clock_state).tick() {
                tracing::info!("the twin's run is over; serving its last state");
                break;
            }
        }
    });
    let out = graphscaler_http::serve(
        listener,
        router(state),
        graphscaler_http::Limits::default(),
        shutdown,
    )
    .await;
    clock.abort();
    out
}

async fn metrics(State(s): State<Shared>) -> Response {
    let text = lock(&s).metrics_text();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn graph(State(s): State<Shared>, Query(q): Query<GraphQuery>) -> Reply {
    let t = lock(&s);
    if let Some(g) = q.graph_type.as_deref().filter(|g| *g != "workload") {
        let msg = format!("graphType `{g}` is not served by the twin; use graphType=workload");
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": msg})),
        );
    }
    let wanted = q.namespaces.as_deref().unwrap_or(&t.namespace);
    if !wanted.split(',').any(|n| n.trim() == t.namespace) {
        let empty = serde_json::json!({"timestamp": 0, "duration": 0, "graphType": "workload", "elements": {"nodes": [], "edges": []}});
        return (StatusCode::OK, Json(empty));
    }
    let now = (t.epoch_s + t.observation().time_s) as i64;
    let v = kiali::graph(
        t.twin().topology(),
        t.observation(),
        &t.cluster,
        &t.namespace,
        &q,
        now,
    );
    (StatusCode::OK, Json(v))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
    watch: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

impl ListQuery {
    fn watching(&self) -> bool {
        matches!(self.watch.as_deref(), Some("true" | "1"))
    }
}

/// A watch on `kind` (namespace already checked), or a list.
fn list_or_watch(
    s: &Shared,
    kind: crate::watch::Kind,
    q: &ListQuery,
    list: impl FnOnce() -> Reply,
) -> Response {
    if !q.watching() {
        return list().into_response();
    }
    let from = match q.resource_version.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(kube::status(
                        400,
                        "BadRequest",
                        &format!("resourceVersion `{v}` is not a number"),
                    )),
                )
                    .into_response()
            }
        },
    };
    let timeout = std::time::Duration::from_secs(q.timeout_seconds.unwrap_or(1800).min(3600));
    let body = crate::watch::body(s.clone(), kind, from, app_filter(q), timeout);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn app_filter(q: &ListQuery) -> Option<String> {
    q.label_selector
        .as_deref()
        .and_then(|s| s.strip_prefix("app=").map(str::to_owned))
}

macro_rules! ctx {
    ($t:expr, $prefs:ident) => {
        Ctx {
            namespace: &$t.namespace,
            epoch_s: $t.epoch_s,
            resource_version: $t.resource_version(),
            templates: &$prefs,
        }
    };
}

async fn nodes(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    list_or_watch(&s, crate::watch::Kind::Nodes, &q, || node_list(&s))
}

fn node_list(s: &Shared) -> Reply {
    let t = lock(s);
    let prefs = t.templates();
    let c = ctx!(t, prefs);
    let obs = t.observation();
    let items = (0..obs.nodes.len())
        .map(|i| kube::node(obs, i, &c))
        .collect();
    (
        StatusCode::OK,
        Json(kube::list("NodeList", "v1", c.resource_version, items)),
    )
}

async fn node(State(s): State<Shared>, Path(name): Path<String>) -> Reply {
    let t = lock(&s);
    let prefs = t.templates();
    let c = ctx!(t, prefs);
    let obs = t.observation();
    match obs.nodes.iter().position(|n| n.name == name) {
        Some(i) => {
            let mut v = kube::node(obs, i, &c);
            v["kind"] = "Node".into();
            v["apiVersion"] = "v1".into();
            (StatusCode::OK, Json(v))
        }
        None => not_found(&format!("nodes \"{name}\"")),
    }
}

fn pod_list(s: &Shared, ns: Option<&str>, q: &ListQuery) -> Reply {
    let t = lock(s);
    if ns.is_some_and(|n| n != t.namespace) {
        return (
            StatusCode::OK,
            Json(kube::list("PodList", "v1", t.resource_version(), vec![])),
        );
    }
    let prefs = t.templates();
    let c = ctx!(t, prefs);
    let obs = t.observation();
    let app = app_filter(q);
    let items = (0..obs.pods.len())
        .filter(|&i| app.as_deref().is_none_or(|a| obs.pods[i].service == a))
        .map(|i| kube::pod(obs, i, &c))
        .collect();
    (
        StatusCode::OK,
        Json(kube::list("PodList", "v1", c.resource_version, items)),
    )
}

fn same_namespace(s: &Shared, ns: Option<&str>) -> bool {
    ns.is_none_or(|n| n == lock(s).namespace)
}

async fn all_pods(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    list_or_watch(&s, crate::watch::Kind::Pods, &q, || pod_list(&s, None, &q))
}

async fn pods(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    if !same_namespace(&s, Some(&ns)) {
        return pod_list(&s, Some(&ns), &q).into_response();
    }
    list_or_watch(&s, crate::watch::Kind::Pods, &q, || {
        pod_list(&s, Some(&ns), &q)
    })
}

fn deployment_list(s: &Shared, ns: Option<&str>, q: &ListQuery) -> Reply {
    let t = lock(s);
    if ns.is_some_and(|n| n != t.namespace) {
        return (
            StatusCode::OK,
            Json(kube::list(
                "DeploymentList",
                "apps/v1",
                t.resource_version(),
                vec![],
            )),
        );
    }
    let prefs = t.templates();
    let c = ctx!(t, prefs);
    let app = app_filter(q);
    let items = t
        .observation()
        .services
        .iter()
        .filter(|sv| app.as_deref().is_none_or(|a| sv.name == a))
        .map(|sv| {
            let mut d = kube::deployment(sv, &c);
            if let Some(o) = d.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            d
        })
        .collect();
    (
        StatusCode::OK,
        Json(kube::list(
            "DeploymentList",
            "apps/v1",
            c.resource_version,
            items,
        )),
    )
}

async fn all_deployments(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    list_or_watch(&s, crate::watch::Kind::Deployments, &q, || {
        deployment_list(&s, None, &q)
    })
}

async fn deployments(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    if !same_namespace(&s, Some(&ns)) {
        return deployment_list(&s, Some(&ns), &q).into_response();
    }
    list_or_watch(&s, crate::watch::Kind::Deployments, &q, || {
        deployment_list(&s, Some(&ns), &q)
    })
}

fn one(s: &Shared, ns: &str, name: &str, as_scale: bool) -> Reply {
    let t = lock(s);
    let prefs = t.templates();
    let c = ctx!(t, prefs);
    match t.observation().service(name).filter(|_| ns == t.namespace) {
        Some(sv) if as_scale => (StatusCode::OK, Json(kube::scale(sv, &c))),
        Some(sv) => (StatusCode::OK, Json(kube::deployment(sv, &c))),
        None => not_found(&format!("deployments.apps \"{name}\"")),
    }
}

async fn deployment(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Reply {
    one(&s, &ns, &name, false)
}

async fn scale(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Reply {
    one(&s, &ns, &name, true)
}

/// A patch's body, as JSON, when its content type is one the API server takes; else the reply
/// (415, or 400 naming what is not JSON).
fn patch_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Reply> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let supported = [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/json",
    ];
    if !supported.iter().any(|m| ct.starts_with(m)) {
        let msg = format!(
            "content type `{ct}` is not supported; use one of {}",
            supported.join(", ")
        );
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(kube::status(415, "UnsupportedMediaType", &msg)),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(kube::status(
                400,
                "BadRequest",
                &format!("patch body is not JSON: {e}"),
            )),
        )
    })
}

fn patch(
    s: &Shared,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    as_scale: bool,
) -> Reply {
    let body = match patch_body(headers, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let kinds = match kube::patch_changes(&body, as_scale) {
        Ok(k) => k,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(kube::status(422, "Invalid", &e)),
            )
        }
    };
    {
        let mut t = lock(s);
        if ns != t.namespace || t.observation().service(name).is_none() {
            return not_found(&format!("deployments.apps \"{name}\""));
        }
        if let Err(reason) = t.apply_all(name, kinds) {
            tracing::info!(deployment = name, %reason, "patch refused");
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(kube::status(422, "Invalid", &reason)),
            );
        }
    }
    one(s, ns, name, as_scale)
}

/// The core group's resources (`GET /api/v1`), as an API server's discovery lists them:
/// `pods/resize` only where the cluster resizes pods in place.
async fn core_resources(State(s): State<Shared>) -> Reply {
    let in_place = lock(&s).twin().config().cluster.in_place_resize;
    let r = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| {
        serde_json::json!({"name": name, "singularName": "", "namespaced": namespaced,
                           "kind": kind, "verbs": verbs})
    };
    let mut resources = vec![
        r("nodes", "Node", false, &["get", "list", "watch"]),
        r("pods", "Pod", true, &["get", "list", "watch"]),
    ];
    if in_place {
        resources.push(r("pods/resize", "Pod", true, &["get", "patch", "update"]));
    }
    (
        StatusCode::OK,
        Json(
            serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1",
                                "groupVersion": "v1", "resources": resources}),
        ),
    )
}

fn pod_reply(s: &Shared, ns: &str, name: &str) -> Reply {
    let t = lock(s);
    let prefs = t.templates();
    let c = ctx!(t, prefs);
    let obs = t.observation();
    match obs
        .pods
        .iter()
        .position(|p| p.name == name)
        .filter(|_| ns == t.namespace)
    {
        Some(i) => {
            let mut v = kube::pod(obs, i, &c);
            v["kind"] = "Pod".into();
            v["apiVersion"] = "v1".into();
            (StatusCode::OK, Json(v))
        }
        None => not_found(&format!("pods \"{name}\"")),
    }
}

async fn one_pod(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Reply {
    pod_reply(&s, &ns, &name)
}

/// `PATCH pods/{name}/resize`: an in-place resize of the pod's CPU request and limit. As on
/// Kubernetes before 1.33, a cluster without in-place resize answers 404. A resize the pod's
/// node has no room for is refused (422) rather than left pending as `Infeasible`.
async fn resize_pod(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let body = match patch_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (req, lim) = match kube::resize_patch(&body) {
        Ok(x) => x,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(kube::status(422, "Invalid", &e)),
            )
        }
    };
    if !same_namespace(&s, Some(&ns)) {
        return not_found(&format!("pods \"{name}\""));
    }
    let r = lock(&s).resize(&name, req, lim);
    match r {
        Ok(()) => pod_reply(&s, &ns, &name),
        Err(e @ graphscaler_twin::ResizeError::Unsupported) => (
            StatusCode::NOT_FOUND,
            Json(kube::status(404, "NotFound", &e.to_string())),
        ),
        Err(graphscaler_twin::ResizeError::NotFound(_)) => not_found(&format!("pods \"{name}\"")),
        Err(e) => {
            tracing::info!(pod = name, reason = %e, "resize refused");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(kube::status(422, "Invalid", &e.to_string())),
            )
        }
    }
}

async fn patch_deployment(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    patch(&s, &ns, &name, &headers, &body, false)
}

async fn patch_scale(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    patch(&s, &ns, &name, &headers, &body, true)
}

fn lease_reply(r: Result<Value, crate::lease::Refusal>, ok: StatusCode) -> Reply {
    match r {
        Ok(v) => (ok, Json(v)),
        Err((code, body)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(body),
        ),
    }
}

fn lease_body(body: &[u8]) -> Result<Value, crate::lease::Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        (
            400,
            kube::status(400, "BadRequest", &format!("a Lease must be JSON: {e}")),
        )
    })
}

async fn get_lease(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Reply {
    lease_reply(lock(&s).leases.get(&ns, &name), StatusCode::OK)
}

async fn create_lease(State(s): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Reply {
    let r = lease_body(&body).and_then(|b| lock(&s).leases.create(&ns, b));
    lease_reply(r, StatusCode::CREATED)
}

async fn replace_lease(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let r = lease_body(&body).and_then(|b| lock(&s).leases.replace(&ns, &name, b));
    lease_reply(r, StatusCode::OK)
}
