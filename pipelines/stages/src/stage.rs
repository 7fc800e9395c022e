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

impl Clock {
    /// Now, seconds: the wall clock, or the newest plausible event time `newest` (the time `t`
    /// of the event at hand when there is none yet).
    pub fn now(self, newest: f64, t: f64) -> f64 {
        match self {
            Clock::Wall => unix_now(),
            Clock::Event if newest.is_finite() => newest,
            Clock::Event => t,
        }
    }
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

/// A message a stage could not use, as it goes to `<topic>.dlq`: where it came from, why it was
/// refused, and the original payload (as text; bytes that are not UTF-8 are replaced).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition (0 in process).
    pub partition: i32,
    /// Its offset (the sequence number in process).
    pub offset: i64,
    /// The stage that refused it.
    pub stage: String,
    /// Why, in words that name what was wrong.
    pub reason: String,
    /// The payload as it was read.
    pub payload: String,
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Where a stage sends the messages it cannot use: `<topic>.dlq`, with the reason.
struct DeadLetters {
    stage: &'static str,
    publisher: Publisher,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
}

impl DeadLetters {
    /// Sends `msg` to `<topic>.dlq` with the reason, counts it in `count` and in
    /// `graphscaler_dead_letters_total{topic, reason}` (`kind` is the short label) and logs it.
    /// Returns whether the letter was published: only then may the caller commit `msg`, so the
    /// partition moves on and nothing is lost (a stage stopping while the broker is away leaves
    /// it uncommitted, to come again).
    async fn send(&self, count: &mut u64, msg: &Message, kind: &str, reason: String) -> bool {
        *count += 1;
        self.metrics.add(
            "graphscaler_dead_letters_total",
            &[("topic", &msg.topic), ("reason", kind)],
            1.0,
        );
        tracing::warn!(stage = self.stage, topic = %msg.topic, partition = msg.position.0, offset = msg.position.1, %reason, "message refused; sent to the dead-letter topic");
        let letter = DeadLetter {
            topic: msg.topic.clone(),
            partition: msg.position.0,
            offset: msg.position.1,
            stage: self.stage.into(),
            reason,
            payload: String::from_utf8_lossy(&msg.payload).into_owned(),
        };
        let bytes = match serde_json::to_vec(&letter) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "a dead letter could not be encoded; the message stays uncommitted");
                return false;
            }
        };
        let topic = dead_letter_topic(&msg.topic);
        let key = format!("{}/{}", msg.position.0, msg.position.1);
        publish_retrying("dead letter", &self.metrics, &self.stop, || {
            self.publisher.publish_raw(&topic, &key, bytes.clone())
        })
        .await
    }
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
    /// Telemetry stamped more than this many seconds ahead of now (the wall clock, or with
    /// [`Clock::Event`] the newest plausible event) is refused, counted and dead-lettered.
    pub max_clock_skew_s: f64,
}

/// What the graph stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphSummary {
    /// Telemetry events consumed.
    pub events: u64,
    /// Messages that were not telemetry events, or stamped implausibly far ahead (counted,
    /// dead-lettered).
    pub undecodable: u64,
    /// Snapshots published.
    pub snapshots: u64,
    /// The graph job's ingestion counters.
    pub ingest: Option<graphscaler_graph::ingest::IngestStats>,
}

/// Collects the snapshots of the windows the last close cut (fewer than the windows when the
/// job skipped a long gap of empty windows, see `IngestStats::skipped_windows`).
fn take_snapshots(g: &LiveGraph) -> Vec<Snapshot> {
    let mut out = vec![];
    while let Some(Some(s)) = g.next_cut(Duration::from_secs(30)) {
        out.push(s);
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
        take_snapshots(&g)
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
    let letters = DeadLetters {
        stage: "graph",
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
    let mut stored = vec![];
    let mut bus_errors = 0u32;
    let mut newest = f64::NEG_INFINITY;
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
        let event = msg.telemetry().map_err(|e| e.to_string()).and_then(|e| {
            let t = e.observed_at_s();
            let now = cfg.clock.now(newest, t);
            if !t.is_finite() || t > now + cfg.max_clock_skew_s {
                metrics.add(
                    "graphscaler_events_rejected_total",
                    &[("reason", "implausible_time")],
                    1.0,
                );
                Err(format!(
                    "event {} is stamped {t} s, more than {} s ahead of now ({now:.3} s)",
                    e.event_id(),
                    cfg.max_clock_skew_s
                ))
            } else {
                newest = newest.max(t);
                Ok(e)
            }
        });
        match event {
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
            Err(e) => {
                if !letters
                    .send(&mut sum.undecodable, &msg, "refused_telemetry", e)
                    .await
                {
                    continue;
                }
            }
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

/// The desired state an action asks for, from the snapshot it was decided on: a change of
/// replicas becomes the replica count, a change of CPU quota the CPU limit, so that the action
/// means the same however often, and however late, it is delivered.
pub fn absolute(a: Action, snap: &Snapshot) -> Result<Action, String> {
    use graphscaler_schemas::ActionKind as K;
    if a.kind.is_absolute() {
        return Ok(a);
    }
    let i = snap
        .services
        .iter()
        .position(|s| *s == a.service)
        .ok_or_else(|| format!("`{}` is not in the snapshot", a.service))?;
    let kind = match a.kind {
        K::ChangeReplicas { delta } => {
            let spec = snap.replicas_spec.get(i).copied().unwrap_or(0);
            K::SetReplicas {
                replicas: (i64::from(spec) + i64::from(delta)).clamp(0, i64::from(u32::MAX)) as u32,
            }
        }
        K::ChangeCpuQuota { delta } => {
            if !delta.is_finite() {
                return Err(format!(
                    "cpu quota delta {delta} for `{}` is not a number",
                    a.service
                ));
            }
            let limit = snap
                .cpu_limit_cores
                .get(i)
                .copied()
                .filter(|l| l.is_finite() && *l > 0.0)
                .ok_or_else(|| format!("the snapshot has no CPU limit for `{}`", a.service))?;
            let m = (f64::from(limit) * 1000.0 * 2f64.powf(delta.clamp(-1.0, 1.0))).round();
            K::SetCpuLimit {
                millicores: m.clamp(1.0, f64::from(u32::MAX)) as u32,
            }
        }
        k => k,
    };
    Ok(Action::new(a.service, kind))
}

/// What the policy stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySummary {
    /// Snapshots consumed.
    pub snapshots: u64,
    /// Actions published.
    pub actions: u64,
    /// Messages that were not snapshots, or snapshots whose parts disagree (dead-lettered).
    pub undecodable: u64,
    /// Relative actions that could not be made absolute (the snapshot lacked what they
    /// change), dropped and counted.
    pub dropped: u64,
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
    let letters = DeadLetters {
        stage: "policy",
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
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
        let decoded = msg
            .decode::<SnapshotsTopic>()
            .map_err(|e| ("undecodable", e.to_string()))
            .and_then(|env| match env.payload.validate() {
                Ok(()) => Ok(env),
                Err(e) => Err((
                    "invalid_snapshot",
                    format!("snapshot at {} s: {e}", env.observed_at_s),
                )),
            });
        match decoded {
            Ok(env) => {
                sum.snapshots += 1;
                let snap = env.payload;
                for a in policy.decide(&snap) {
                    let a = match absolute(a, &snap) {
                        Ok(a) => a,
                        Err(why) => {
                            if sum.dropped == 0 {
                                tracing::warn!(%why, "an action could not be made absolute; dropped");
                            }
                            sum.dropped += 1;
                            metrics.add("graphscaler_actions_dropped_total", &[], 1.0);
                            continue;
                        }
                    };
                    let e = Envelope::decision(&source, snap.time_s, snap.window_s, a);
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
            Err((kind, e)) => {
                if !letters.send(&mut sum.undecodable, &msg, kind, e).await {
                    continue;
                }
            }
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
    /// Messages that were not actions or service events (dead-lettered).
    pub undecodable: u64,
    /// Service telemetry stamped implausibly far ahead, ignored by the staleness guard.
    pub implausible: u64,
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
    let letters = DeadLetters {
        stage: "actuate",
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
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
        let undecodable = if msg.topic == ServicesTopic::NAME {
            match msg.decode::<ServicesTopic>() {
                Ok(e) => {
                    let now = clock.now(latest_event, e.observed_at_s);
                    if actuator.saw_service(
                        &e.payload.name,
                        e.observed_at_s,
                        &e.payload.missing,
                        now,
                    ) {
                        latest_event = latest_event.max(e.observed_at_s);
                    } else {
                        if sum.implausible == 0 {
                            tracing::warn!(event = %e.event_id, at = e.observed_at_s, now, "service telemetry stamped implausibly far ahead; ignored by the staleness guard");
                        }
                        sum.implausible += 1;
                        metrics.add(
                            "graphscaler_events_rejected_total",
                            &[("reason", "implausible_time")],
                            1.0,
                        );
                    }
                    None
                }
                Err(e) => Some(e),
            }
        } else {
            match msg.decode::<ActionsTopic>() {
                Ok(env) => {
                    sum.actions += 1;
                    // The event clock follows the action's stamp too (as it always has), when
                    // the stamp is plausible; the actuator refuses one that is not.
                    let t = env.observed_at_s;
                    if actuator.plausible(t, clock.now(latest_event, t)) {
                        latest_event = latest_event.max(t);
                    }
                    let now = clock.now(latest_event, t);
                    let record = actuator.handle(cluster.as_mut(), &env, now);
                    metrics.set(
                        "graphscaler_actuator_state_write_failures_total",
                        &[],
                        actuator.stats.state_write_failures as f64,
                    );
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
                    None
                }
                Err(e) => Some(e),
            }
        };
        if let Some(e) = undecodable {
            if !letters
                .send(&mut sum.undecodable, &msg, "undecodable", e.to_string())
                .await
            {
                continue;
            }
        }
        commit(&sub, &msg, &metrics);
    }
    Ok(sum)
}
