//! The four stage loops.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use graphscaler_actuate::{Actuator, Cluster};
use graphscaler_eval::hpa::Hpa;
use graphscaler_graph::{GraphConfig, LiveGraph};
use graphscaler_schemas::events::{ActionsTopic, AuditTopic, ServicesTopic, SnapshotsTopic};
use graphscaler_schemas::{Action, Envelope, Snapshot, TelemetryEvent, Topic};
use tokio::sync::watch;

use crate::collect::Collector;
use crate::transport::{Message, Publisher, Subscriber};
use crate::Metrics;

/// Where a stage's "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Unix time: a real cluster, or the twin served over HTTP.
    Wall,
    /// The latest event time seen: the twin in process, running faster than real time.
    Event,
}

/// Unix time now, seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

const POLL: Duration = Duration::from_millis(200);

/// The next message, or `None` after [`POLL`]. A bus error (a broker that went away) is counted,
/// logged once per streak and waited out: a stage outlives its broker.
async fn next_message(
    sub: &mut Subscriber,
    errors: &mut u32,
    metrics: &Metrics,
) -> Option<Message> {
    match sub.next(POLL).await {
        Ok(m) => {
            if *errors > 0 {
                tracing::info!(after = *errors, "the bus is back");
                *errors = 0;
            }
            m
        }
        Err(e) => {
            if *errors == 0 {
                tracing::warn!(error = %e, "reading from the bus failed; retrying");
            }
            *errors += 1;
            metrics.add(
                "graphscaler_events_rejected_total",
                &[("reason", "bus_error")],
                1.0,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
    }
}

/// Counts and logs a message that is not what its topic carries, and moves on.
fn skip(count: &mut u64, metrics: &Metrics, expected: &str, e: &dyn std::fmt::Display) {
    *count += 1;
    metrics.add(
        "graphscaler_events_rejected_total",
        &[("reason", "undecodable")],
        1.0,
    );
    tracing::warn!(error = %e, "skipping a message that is not {expected}");
}

/// Commits a handled message; a failed commit is logged (the message may come again after a
/// restart, and the consumers are idempotent: the graph job drops duplicate event ids, the
/// actuator repeats its first decision for an action id).
fn commit(sub: &Subscriber, msg: &Message, metrics: &Metrics) {
    if let Err(e) = sub.commit(msg) {
        metrics.add(
            "graphscaler_events_rejected_total",
            &[("reason", "commit_failed")],
            1.0,
        );
        tracing::warn!(error = %e, topic = %msg.topic, offset = msg.position.1, "commit failed");
    }
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Publishes with retries: a broker that goes away delays events, it does not lose them.
/// Gives up only when `stop` is set and the broker stays away.
async fn publish_retrying<F, Fut>(
    what: &str,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
    mut send: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), graphscaler_bus::BusError>>,
{
    let mut wait = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        match send().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(what, failures, "publishing recovered");
                }
                return true;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(what, error = %e, "publishing failed; retrying");
                }
                failures += 1;
                metrics.add(
                    "graphscaler_events_rejected_total",
                    &[("reason", "publish_retry")],
                    1.0,
                );
                if stopped(stop) && failures > 3 {
                    return false;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What the scrape stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeSummary {
    /// Passes.
    pub passes: u64,
    /// Events published.
    pub published: u64,
    /// Source failures.
    pub failures: u64,
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
        if !c.rejected.is_empty() {
            metrics.add(
                "graphscaler_events_rejected_total",
                &[("reason", "unreadable_sample")],
                c.rejected.len() as f64,
            );
            tracing::debug!(count = c.rejected.len(), first = %c.rejected[0], "items rejected");
        }
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

/// Settings of the graph stage.
#[derive(Debug, Clone)]
pub struct GraphStage {
    /// The graph job's settings.
    pub graph: GraphConfig,
    /// With [`Clock::Wall`], a window is cut this long after its end even if no later event came.
    pub grace: Duration,
    /// The clock.
    pub clock: Clock,
    /// Also append the snapshots to this Parquet file at the end.
    pub parquet: Option<std::path::PathBuf>,
}

/// What the graph stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphSummary {
    /// Telemetry events consumed.
    pub events: u64,
    /// Messages that were not telemetry events (counted, skipped).
    pub undecodable: u64,
    /// Snapshots published.
    pub snapshots: u64,
    /// The graph job's ingestion counters.
    pub ingest: Option<graphscaler_graph::ingest::IngestStats>,
}

/// Collects the snapshots of every window up to `upto` from the dataflow.
fn take_snapshots(g: &LiveGraph, n: u64) -> Vec<Snapshot> {
    let mut out = vec![];
    for _ in 0..n {
        match g.next_snapshot(Duration::from_secs(30)) {
            Some(s) => out.push(s),
            None => break,
        }
    }
    out
}

fn lock(g: &std::sync::Mutex<LiveGraph>) -> std::sync::MutexGuard<'_, LiveGraph> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cuts every window from the open one up to `upto` and publishes their snapshots.
#[allow(clippy::too_many_arguments)]
async fn emit(
    g: &std::sync::Mutex<LiveGraph>,
    open: &mut Option<u64>,
    upto: u64,
    sum: &mut GraphSummary,
    stored: &mut Vec<Snapshot>,
    cfg: &GraphStage,
    publisher: &Publisher,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(w) = *open else { return Ok(()) };
    if upto < w {
        return Ok(());
    }
    let t0 = Instant::now();
    let snaps = {
        let g = lock(g);
        g.close(upto)?;
        take_snapshots(&g, upto - w + 1)
    };
    for s in snaps {
        let env = Envelope::new("graph", s.time_s, s.window_s, s);
        if publish_retrying("snapshot", metrics, stop, || {
            publisher.publish::<SnapshotsTopic>(&env)
        })
        .await
        {
            metrics.add(
                "graphscaler_events_out_total",
                &[("topic", SnapshotsTopic::NAME)],
                1.0,
            );
            sum.snapshots += 1;
        }
        if cfg.parquet.is_some() {
            stored.push(env.payload);
        }
    }
    metrics.set(
        "graphscaler_snapshot_latency_seconds",
        &[],
        t0.elapsed().as_secs_f64(),
    );
    *open = Some(upto + 1);
    Ok(())
}

/// The graph stage: telemetry in, one snapshot per window out.
pub async fn graph(
    mut sub: Subscriber,
    publisher: Publisher,
    cfg: GraphStage,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<GraphSummary> {
    let g = std::sync::Mutex::new(LiveGraph::spawn(&cfg.graph));
    let w_s = cfg.graph.window_s;
    let window_of = |t: f64| (t / w_s).floor().max(0.0) as u64;
    let mut open: Option<u64> = None;
    let mut sum = GraphSummary::default();
    let mut stored = vec![];
    let mut bus_errors = 0u32;
    loop {
        let msg = next_message(&mut sub, &mut bus_errors, &metrics).await;
        let Some(msg) = msg else {
            if cfg.clock == Clock::Wall {
                if let Some(w) = open {
                    let due = window_of(unix_now() - cfg.grace.as_secs_f64());
                    if due > w {
                        emit(
                            &g,
                            &mut open,
                            due - 1,
                            &mut sum,
                            &mut stored,
                            &cfg,
                            &publisher,
                            &metrics,
                            &stop,
                        )
                        .await?;
                    }
                }
            }
            if stopped(&stop) {
                break;
            }
            continue;
        };
        metrics.add("graphscaler_events_in_total", &[("topic", &msg.topic)], 1.0);
        match msg.telemetry() {
            Ok(e) => {
                let t = e.observed_at_s();
                if cfg.clock == Clock::Wall {
                    metrics.set("graphscaler_consumer_lag_seconds", &[], unix_now() - t);
                }
                let w = window_of(t);
                match open {
                    None => open = Some(w),
                    Some(o) if w > o => {
                        emit(
                            &g,
                            &mut open,
                            w - 1,
                            &mut sum,
                            &mut stored,
                            &cfg,
                            &publisher,
                            &metrics,
                            &stop,
                        )
                        .await?
                    }
                    _ => {}
                }
                lock(&g).push(e)?;
                sum.events += 1;
            }
            Err(e) => skip(&mut sum.undecodable, &metrics, "a telemetry event", &e),
        }
        commit(&sub, &msg, &metrics);
    }
    // Cut what is open.
    if let Some(w) = open {
        if sum.events > 0 {
            emit(
                &g,
                &mut open,
                w,
                &mut sum,
                &mut stored,
                &cfg,
                &publisher,
                &metrics,
                &stop,
            )
            .await?;
        }
    }
    let g = g.into_inner().unwrap_or_else(|p| p.into_inner());
    sum.ingest = Some(g.finish()?);
    if let Some(path) = &cfg.parquet {
        graphscaler_graph::store::write(path, &stored)?;
    }
    Ok(sum)
}

/// A policy the policy stage runs on snapshots.
pub trait SnapshotPolicy: Send {
    /// Its name (the source of its actions).
    fn name(&self) -> String;
    /// Decides on one snapshot.
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action>;
    /// What it has to say at the end (a learning policy's counters).
    fn summary(&self) -> Option<String> {
        None
    }
}

/// Never acts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

impl SnapshotPolicy for Noop {
    fn name(&self) -> String {
        "noop".into()
    }
    fn decide(&mut self, _: &Snapshot) -> Vec<Action> {
        vec![]
    }
}

impl SnapshotPolicy for Hpa {
    fn name(&self) -> String {
        format!("hpa-{}", self.target())
    }
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action> {
        self.decide_snapshot(snap)
    }
}

/// What the policy stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySummary {
    /// Snapshots consumed.
    pub snapshots: u64,
    /// Actions published.
    pub actions: u64,
    /// Messages skipped.
    pub undecodable: u64,
    /// The policy's own summary ([`SnapshotPolicy::summary`]).
    pub note: Option<String>,
}

/// The policy stage: snapshots in, actions out.
pub async fn policy(
    mut sub: Subscriber,
    publisher: Publisher,
    mut policy: Box<dyn SnapshotPolicy>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<PolicySummary> {
    let mut sum = PolicySummary::default();
    let source = format!("policy/{}", policy.name());
    let mut bus_errors = 0u32;
    loop {
        let Some(msg) = next_message(&mut sub, &mut bus_errors, &metrics).await else {
            if stopped(&stop) {
                break;
            }
            continue;
        };
        metrics.add("graphscaler_events_in_total", &[("topic", &msg.topic)], 1.0);
        match msg.decode::<SnapshotsTopic>() {
            Ok(env) => {
                sum.snapshots += 1;
                let snap = env.payload;
                for a in policy.decide(&snap) {
                    let e = Envelope::new(&source, snap.time_s, snap.window_s, a);
                    if publish_retrying("action", &metrics, &stop, || {
                        publisher.publish::<ActionsTopic>(&e)
                    })
                    .await
                    {
                        metrics.add(
                            "graphscaler_events_out_total",
                            &[("topic", ActionsTopic::NAME)],
                            1.0,
                        );
                        sum.actions += 1;
                    }
                }
            }
            Err(e) => skip(&mut sum.undecodable, &metrics, "a snapshot", &e),
        }
        commit(&sub, &msg, &metrics);
    }
    sum.note = policy.summary();
    Ok(sum)
}

/// What the actuator stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActuateSummary {
    /// Actions consumed.
    pub actions: u64,
    /// Applied (or would have been, in dry run).
    pub applied: u64,
    /// Refused.
    pub refused: u64,
    /// Messages skipped.
    pub undecodable: u64,
}

/// The actuator stage: actions (and service telemetry, for the hold guardrail) in, audit
/// records out. `sub` must be subscribed to the actions and the services topics.
pub async fn actuate(
    mut sub: Subscriber,
    publisher: Publisher,
    mut actuator: Actuator,
    mut cluster: Box<dyn Cluster + Send>,
    clock: Clock,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ActuateSummary> {
    let mut sum = ActuateSummary::default();
    let mut latest_event = f64::NEG_INFINITY;
    let mut bus_errors = 0u32;
    loop {
        let Some(msg) = next_message(&mut sub, &mut bus_errors, &metrics).await else {
            if stopped(&stop) {
                break;
            }
            continue;
        };
        metrics.add("graphscaler_events_in_total", &[("topic", &msg.topic)], 1.0);
        if msg.topic == ServicesTopic::NAME {
            match msg.decode::<ServicesTopic>() {
                Ok(e) => {
                    latest_event = latest_event.max(e.observed_at_s);
                    actuator.saw_telemetry(&e.payload.name, e.observed_at_s);
                }
                Err(e) => skip(&mut sum.undecodable, &metrics, "a service event", &e),
            }
        } else {
            match msg.decode::<ActionsTopic>() {
                Ok(env) => {
                    sum.actions += 1;
                    latest_event = latest_event.max(env.observed_at_s);
                    let now = match clock {
                        Clock::Wall => unix_now(),
                        Clock::Event => latest_event,
                    };
                    let record = actuator.handle(cluster.as_mut(), &env, now);
                    let outcome = if !record.outcome.is_applied() {
                        sum.refused += 1;
                        "refused"
                    } else if record.dry_run {
                        sum.applied += 1;
                        "dry_run"
                    } else {
                        sum.applied += 1;
                        "applied"
                    };
                    metrics.add("graphscaler_actions_total", &[("outcome", outcome)], 1.0);
                    let audit = Envelope::new("actuator", env.observed_at_s, env.window_s, record);
                    if publish_retrying("audit", &metrics, &stop, || {
                        publisher.publish::<AuditTopic>(&audit)
                    })
                    .await
                    {
                        metrics.add(
                            "graphscaler_events_out_total",
                            &[("topic", AuditTopic::NAME)],
                            1.0,
                        );
                    }
                }
                Err(e) => skip(&mut sum.undecodable, &metrics, "an action", &e),
            }
        }
        commit(&sub, &msg, &metrics);
    }
    Ok(sum)
}
