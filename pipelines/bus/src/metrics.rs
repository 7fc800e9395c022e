//! The stages' own Prometheus metrics: counters and gauges by name and labels, rendered in the
//! text exposition format and served on `/metrics`.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

const HELP: [(&str, &str, &str); 7] = [
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
];

type Key = (String, Vec<(String, String)>);

/// A stage's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    stage: String,
    values: Arc<Mutex<BTreeMap<Key, f64>>>,
}

impl Metrics {
    /// Metrics of `stage` (the `stage` label of every series).
    pub fn new(stage: &str) -> Self {
        Self {
            stage: stage.into(),
            values: Arc::default(),
        }
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
        for (name, kind, help) in HELP {
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

/// Serves `metrics` on `GET /metrics` at `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Vec<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
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
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    }

    #[tokio::test]
    async fn serves_the_exposition_on_metrics() {
        let m = Metrics::new("policy");
        m.add("graphscaler_actions_total", &[("outcome", "applied")], 1.0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, vec![m.clone()], async {
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
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
