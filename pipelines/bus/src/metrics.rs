//! The stages' own Prometheus metrics: counters and gauges by name and labels, rendered in the
//! text exposition format and served on `/metrics`, beside `/healthz` (the process answers) and
//! `/readyz` (every stage served made progress — a message read, the bus answering an idle
//! stage's probe, a scrape pass published — within the readiness limit; 503 naming the stage
//! that did not).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `graphscaler_events_in_total` | counter | `stage`, `topic` |
//! | `graphscaler_events_out_total` | counter | `stage`, `topic` |
//! | `graphscaler_events_rejected_total` | counter | `stage`, `reason` |
//! | `graphscaler_scrape_failures_total` | counter | `stage`, `target` |
//! | `graphscaler_consumer_lag_seconds` | gauge | `stage` — now minus the observation time of the last event consumed |
//! | `graphscaler_snapshot_latency_seconds` | gauge | `stage` — last window's cut to publication |
//! | `graphscaler_actions_total` | counter | `stage`, `outcome` (`applied`, `refused`, `dry_run`) |
//! | `graphscaler_policy_fallback_total` | counter | `stage` — snapshots the policy could not decide on, decided by its fallback |
//! | `graphscaler_policy_actions_total` | counter | `stage`, `policy` (the fallback's own name when it decided), `service`, `part` (`replicas`, `cpu`, `node_type`) — actions published |
//! | `graphscaler_leader` | gauge | `stage` — 1 while the actuator holds its lease and applies, 0 while a candidate |
//! | `graphscaler_lease_errors_total` | counter | `stage` — failed reads or writes of the lease |
//! | `graphscaler_pods_resized_total` | counter | `stage` — pods started at the template's CPU, resized in place to the wanted size |
//! | `graphscaler_bus_unanswered_total` | counter | `stage` — probes of an idle stage's bus unanswered |
//! | `graphscaler_last_progress_timestamp_seconds` | gauge | `stage` — Unix time of its last progress (a message read, the bus answering a probe, a scrape pass published) |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

const HELP: [(&str, &str, &str); 19] = [
    ("graphscaler_events_in_total", "counter", "Events consumed."),
    (
        "graphscaler_events_out_total",
        "counter",
        "Events published.",
    ),
    (
        "graphscaler_events_rejected_total",
        "counter",
        "Events or samples rejected, by reason.",
    ),
    (
        "graphscaler_scrape_failures_total",
        "counter",
        "Failed scrapes, by target.",
    ),
    (
        "graphscaler_consumer_lag_seconds",
        "gauge",
        "Wall time minus the observation time of the last event consumed.",
    ),
    (
        "graphscaler_snapshot_latency_seconds",
        "gauge",
        "Seconds from cutting the last window to publishing its snapshot.",
    ),
    (
        "graphscaler_actions_total",
        "counter",
        "Actuator decisions, by outcome.",
    ),
    (
        "graphscaler_scrape_missing_total",
        "counter",
        "Metrics missing although their sources answered (absent series, empty results, NaN samples).",
    ),
    (
        "graphscaler_dead_letters_total",
        "counter",
        "Messages sent to a dead-letter topic, by topic and reason.",
    ),
    (
        "graphscaler_store_failures_total",
        "counter",
        "Snapshots or decisions the graph stage's store could not write.",
    ),
    (
        "graphscaler_actions_dropped_total",
        "counter",
        "Actions the policy stage could not publish and dropped.",
    ),
    (
        "graphscaler_policy_fallback_total",
        "counter",
        "Snapshots the policy could not decide on (a learned policy on data it cannot trust), decided by the fallback policy instead.",
    ),
    (
        "graphscaler_policy_actions_total",
        "counter",
        "Actions the policy stage published, by the policy that decided them, service and the part they change.",
    ),
    (
        "graphscaler_actuator_state_write_failures_total",
        "counter",
        "Writes of the actuator's applied state that failed.",
    ),
    (
        "graphscaler_leader",
        "gauge",
        "1 while this actuator holds the lease (pipeline.lease) and applies actions, 0 while it waits as a candidate.",
    ),
    (
        "graphscaler_lease_errors_total",
        "counter",
        "Attempts to read or write the actuator's lease that failed.",
    ),
    (
        "graphscaler_pods_resized_total",
        "counter",
        "Pods started at the pod template's CPU that the actuator resized in place to the wanted size (guardrails.cpu_resize).",
    ),
    (
        "graphscaler_bus_unanswered_total",
        "counter",
        "Probes of an idle stage's bus that got no answer.",
    ),
    (
        "graphscaler_last_progress_timestamp_seconds",
        "gauge",
        "Unix time of the stage's last progress (a message read, the bus answering a probe, a scrape pass published).",
    ),
];

type Key = (String, Vec<(String, String)>);

/// A stage's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    stage: String,
    values: Arc<Mutex<BTreeMap<Key, f64>>>,
    progress: Arc<Mutex<Option<std::time::Instant>>>,
}

impl Metrics {
    /// Metrics of `stage` (the `stage` label of every series).
    pub fn new(stage: &str) -> Self {
        Self {
            stage: stage.into(),
            values: Arc::default(),
            progress: Arc::default(),
        }
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Records that the stage made progress now (what `/readyz` reads).
    pub fn progressed(&self) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.set("graphscaler_last_progress_timestamp_seconds", &[], unix);
    }

    /// Time since the stage last made progress; `None` before it ever did.
    pub fn since_progress(&self) -> Option<std::time::Duration> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    fn key(&self, name: &str, labels: &[(&str, &str)]) -> Key {
        let mut l = vec![("stage".to_string(), self.stage.clone())];
        l.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        );
        (name.to_string(), l)
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], by: f64) {
        let k = self.key(name, labels);
        *self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(k)
            .or_default() += by;
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        let k = self.key(name, labels);
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, v);
    }

    /// A series' value (0 when it has none).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let k = self.key(name, labels);
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum of a metric over all its series.
    pub fn total(&self, name: &str) -> f64 {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// The text exposition of several stages' metrics.
    pub fn render(all: &[&Metrics]) -> String {
        let mut merged: BTreeMap<Key, f64> = BTreeMap::new();
        for m in all {
            merged.extend(
                m.values
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(k, v)| (k.clone(), *v)),
            );
        }
        let mut o = String::new();
        // Every series is rendered: a name without a HELP line is `untyped`.
        let mut others: Vec<&str> = merged
            .keys()
            .map(|(n, _)| n.as_str())
            .filter(|n| HELP.iter().all(|(h, _, _)| h != n))
            .collect();
        others.dedup();
        let others: Vec<(&str, &str, &str)> = others
            .into_iter()
            .map(|n| (n, "untyped", "graphscaler metric."))
            .collect();
        for (name, kind, help) in HELP.iter().copied().chain(others) {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, labels), v) in merged.iter().filter(|((n, _), _)| n == name) {
                let l: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                let _ = writeln!(o, "{n}{{{}}} {v}", l.join(","));
            }
        }
        o
    }
}

/// Why `/readyz` says no: the first stage of `metrics` with no progress within `limit`.
pub fn not_ready(metrics: &[Metrics], limit: std::time::Duration) -> Option<String> {
    metrics.iter().find_map(|m| match m.since_progress() {
        None => Some(format!("{}: no progress since it started", m.stage())),
        Some(d) if d > limit => Some(format!(
            "{}: no progress for {:.1} s (the limit is {:.1} s)",
            m.stage(),
            d.as_secs_f64(),
            limit.as_secs_f64()
        )),
        Some(_) => None,
    })
}

/// Serves `metrics` at `listener` until `shutdown` resolves: `GET /metrics` (the exposition),
/// `GET /healthz` (200 while the process answers) and `GET /readyz` (200 when every stage made
/// progress within `ready_limit`, else 503 naming the one that did not).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Vec<Metrics>,
    ready_limit: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let for_ready = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    let refs: Vec<&Metrics> = m.iter().collect();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        Metrics::render(&refs),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let m = for_ready.clone();
                async move {
                    match not_ready(&m, ready_limit) {
                        None => (StatusCode::OK, "ready\n".to_string()),
                        Some(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        );
    graphscaler_http::serve(listener, app, graphscaler_http::Limits::default(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let m = Metrics::new("graph");
        m.add("graphscaler_events_in_total", &[("topic", "t\"x")], 2.0);
        m.add("graphscaler_events_in_total", &[("topic", "t\"x")], 1.0);
        m.set("graphscaler_snapshot_latency_seconds", &[], 0.25);
        let text = Metrics::render(&[&m]);
        assert!(
            text.contains("graphscaler_events_in_total{stage=\"graph\",topic=\"t\\\"x\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("graphscaler_snapshot_latency_seconds{stage=\"graph\"} 0.25\n"));
        assert_eq!(m.total("graphscaler_events_in_total"), 3.0);
        // Every series is exposed, with or without a HELP line of its own.
        for name in [
            "graphscaler_dead_letters_total",
            "graphscaler_store_failures_total",
            "graphscaler_actions_dropped_total",
            "graphscaler_policy_fallback_total",
            "graphscaler_actuator_state_write_failures_total",
            "graphscaler_scrape_missing_total",
            "graphscaler_something_new_total",
        ] {
            m.add(name, &[], 1.0);
            let text = Metrics::render(&[&m]);
            assert!(
                text.contains(&format!("{name}{{stage=\"graph\"}} 1\n")),
                "{name}: {text}"
            );
        }
        assert!(Metrics::render(&[&m]).contains("# TYPE graphscaler_something_new_total untyped"));
    }

    #[tokio::test]
    async fn serves_the_exposition_on_metrics() {
        let m = Metrics::new("policy");
        m.add("graphscaler_actions_total", &[("outcome", "applied")], 1.0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limit = std::time::Duration::from_millis(300);
        let server = tokio::spawn(serve(listener, vec![m.clone()], limit, async {
            let _ = rx.await;
        }));
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains("graphscaler_actions_total{stage=\"policy\",outcome=\"applied\"} 1"),
            "{body}"
        );
        assert!(body.contains("# TYPE graphscaler_consumer_lag_seconds gauge"));
        // Alive from the start; ready only once the stage made progress, and only while it
        // keeps making it.
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await, (200, "ok\n".to_string()));
        assert_eq!(
            get("/readyz").await,
            (
                503,
                "not ready: policy: no progress since it started\n".to_string()
            )
        );
        m.progressed();
        assert_eq!(get("/readyz").await, (200, "ready\n".to_string()));
        assert!(m.get("graphscaler_last_progress_timestamp_seconds", &[]) > 1.7e9);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let (code, why) = get("/readyz").await;
        assert_eq!(code, 503);
        assert!(
            why.starts_with("not ready: policy: no progress for 0.")
                && why.ends_with("(the limit is 0.3 s)\n"),
            "{why}"
        );
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
