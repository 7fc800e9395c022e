//! The scrape stage: a [`Collector`] pass every interval, its events published (kept and
//! retried while the bus is away); failing sources and missing metrics counted every pass and
//! logged once per streak.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use graphscaler_bus::stage::{publish_retrying, stopped, unix_now};
use graphscaler_bus::transport::Publisher;
use graphscaler_bus::Metrics;
use graphscaler_schemas::TelemetryEvent;
use tokio::sync::watch;

use crate::collect::Collector;

/// What the scrape stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeSummary {
    /// Passes.
    pub passes: u64,
    /// Events published.
    pub published: u64,
    /// Source failures.
    pub failures: u64,
    /// Metrics found missing (absent series, empty results, NaN samples), summed over passes.
    pub missing: u64,
}

/// The scrape stage: a collector pass every `interval`, its events published (kept and retried
/// while the bus is away).
pub async fn scrape(
    mut collector: Collector,
    publisher: Publisher,
    interval: Duration,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> ScrapeSummary {
    let mut sum = ScrapeSummary::default();
    let mut pending: VecDeque<TelemetryEvent> = VecDeque::new();
    let mut failing: std::collections::HashSet<String> = Default::default();
    let mut missing_streak = false;
    let mut stop_wait = stop.clone();
    loop {
        if stopped(&stop) {
            break;
        }
        let started = Instant::now();
        let c = collector.collect(unix_now()).await;
        sum.passes += 1;
        let now_failing: std::collections::HashSet<String> =
            c.failures.iter().map(|(s, _)| s.clone()).collect();
        for (source, err) in &c.failures {
            metrics.add(
                "graphscaler_scrape_failures_total",
                &[("target", source)],
                1.0,
            );
            sum.failures += 1;
            if !failing.contains(source) {
                tracing::warn!(source, error = %err, "scrape source failing; what depends on it is not published");
            }
        }
        for s in failing.difference(&now_failing) {
            tracing::info!(source = %s, "scrape source recovered");
        }
        failing = now_failing;
        // Data that is missing although its sources answered (an empty result, an absent
        // series, a NaN sample): counted every pass, logged once per streak.
        if !c.missing.is_empty() {
            metrics.add(
                "graphscaler_scrape_missing_total",
                &[],
                c.missing.len() as f64,
            );
            sum.missing += c.missing.len() as u64;
            if !missing_streak {
                tracing::warn!(count = c.missing.len(), first = %c.missing[0], "metrics missing: the services lacking them are held, not scaled on zeros");
            }
            missing_streak = true;
        } else if missing_streak {
            tracing::info!("no metric missing any more");
            missing_streak = false;
        }
        if !c.rejected.is_empty() {
            metrics.add(
                "graphscaler_events_rejected_total",
                &[("reason", "unreadable_sample")],
                c.rejected.len() as f64,
            );
            tracing::debug!(count = c.rejected.len(), first = %c.rejected[0], "items rejected");
        }
        let answered = !c.events.is_empty();
        pending.extend(c.events);
        while let Some(e) = pending.front() {
            let (topic, _) = e.topic_and_key();
            let ok = publish_retrying("telemetry", &metrics, &stop, || {
                publisher.publish_telemetry(e)
            })
            .await;
            if !ok {
                break;
            }
            metrics.add("graphscaler_events_out_total", &[("topic", topic)], 1.0);
            sum.published += 1;
            pending.pop_front();
        }
        // Progress: a pass that read something and published all of it.
        if answered && pending.is_empty() {
            metrics.progressed();
        }
        let wait = interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_wait.changed() => {}
        }
    }
    if !pending.is_empty() {
        tracing::warn!(count = pending.len(), "stopping with unpublished events");
    }
    sum
}
