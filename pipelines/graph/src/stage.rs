//! The graph stage: telemetry in, one snapshot per window out (and, with a store directory, each
//! snapshot appended to it as its window closes, with the reward of the window after it). With [`Clock::Wall`] a window is cut `grace` after its end even when no
//! later event comes; with [`Clock::Event`] (the twin in process) when a later event arrives.

use std::time::{Duration, Instant};

use graphscaler_bus::stage::{publish_counted, unix_now, Clock, DeadLetters, Inbox, Polled};
use graphscaler_bus::transport::{Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_schemas::events::{DecisionRecord, DecisionsTopic, SnapshotsTopic, Topic};
use graphscaler_schemas::{Envelope, Snapshot};
use tokio::sync::watch;

use crate::recorder::Recorder;
use crate::windows::{Offer, Windows};
use crate::GraphConfig;

/// Settings of the graph stage.
#[derive(Debug, Clone)]
pub struct GraphStage {
    /// The graph job's settings.
    pub graph: GraphConfig,
    /// With [`Clock::Wall`], a window is cut this long after its end even if no later event came.
    pub grace: Duration,
    /// The clock.
    pub clock: Clock,
    /// Also append each snapshot to this store ([`crate::recorder`]) as its window closes.
    pub store: Option<StoreSpec>,
    /// Telemetry stamped more than this many seconds ahead of now (the wall clock, or with
    /// [`Clock::Event`] the newest plausible event) is refused, counted and dead-lettered.
    pub max_clock_skew_s: f64,
}

/// Where and how the graph stage stores its snapshots.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// The store directory (created; an existing store is continued).
    pub dir: std::path::PathBuf,
    /// Windows per file.
    pub per_file: usize,
    /// The reward recorded beside each snapshot.
    pub reward: graphscaler_learn_config::reward::RewardConfig,
}

impl StoreSpec {
    /// Opens the store ([`Recorder::open`]).
    pub fn open(&self) -> Result<Recorder, crate::store::StoreError> {
        Recorder::open(&self.dir, self.per_file, self.reward)
    }
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
    pub ingest: Option<crate::ingest::IngestStats>,
    /// What the store holds of this run.
    pub stored: Option<crate::recorder::RecorderStats>,
    /// Snapshots that could not be stored (the store failed; each warned once per streak).
    pub store_failures: u64,
}

/// The graph stage's output side: what it publishes to, and what it published so far.
struct Out<'a> {
    publisher: &'a Publisher,
    metrics: &'a Metrics,
    stop: &'a watch::Receiver<bool>,
    sum: GraphSummary,
    store: Option<Recorder>,
    store_failing: bool,
}

impl Out<'_> {
    /// Publishes a cut's snapshots (and appends them to the store when there is one); `t0` is
    /// when the work that cut them began. A store that fails does not stop the snapshots: each
    /// failure is counted (`graphscaler_store_failures_total`), warned once per streak.
    async fn publish(&mut self, snaps: Vec<Snapshot>, t0: Instant) {
        if snaps.is_empty() {
            return;
        }
        for s in snaps {
            let env = Envelope::new("graph", s.time_s, s.window_s, s);
            if publish_counted::<SnapshotsTopic>(
                "snapshot",
                self.publisher,
                self.metrics,
                self.stop,
                &env,
            )
            .await
            {
                self.sum.snapshots += 1;
            }
            if let Some(store) = &mut self.store {
                let r = store.push(env.payload);
                self.stored(r, "snapshot");
            }
        }
        self.metrics.set(
            "graphscaler_snapshot_latency_seconds",
            &[],
            t0.elapsed().as_secs_f64(),
        );
    }
}

impl Out<'_> {
    /// Counts a store write that failed (`graphscaler_store_failures_total`), warning once per
    /// streak; one that worked ends the streak.
    fn stored<T>(&mut self, r: Result<T, crate::store::StoreError>, what: &str) {
        match r {
            Ok(_) => self.store_failing = false,
            Err(e) => {
                self.sum.store_failures += 1;
                self.metrics
                    .add("graphscaler_store_failures_total", &[], 1.0);
                if !self.store_failing {
                    tracing::warn!(error = %e, "a {what} could not be stored (warned once until the store works again)");
                    self.store_failing = true;
                }
            }
        }
    }

    /// Records a policy's decision beside its snapshot in the store (none: nothing to do). A
    /// decision for a snapshot the store no longer holds open is counted by the recorder.
    fn record(&mut self, d: Envelope<DecisionRecord>) {
        let Some(store) = &mut self.store else {
            return;
        };
        let r = store.decided(d.observed_at_s, &d.payload.policy, d.payload.actions);
        self.stored(r, "decision");
    }
}

/// The topics the graph stage reads: telemetry, and with a store the decisions topic (recorded
/// beside the snapshots).
pub fn topics(store: bool) -> Vec<&'static str> {
    let mut t = graphscaler_bus::TELEMETRY_TOPICS.to_vec();
    if store {
        t.push(DecisionsTopic::NAME);
    }
    t
}

/// The graph stage: telemetry in, one snapshot per window out.
pub async fn graph(
    sub: Subscriber,
    publisher: Publisher,
    cfg: GraphStage,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<GraphSummary> {
    let letters = DeadLetters::new("graph", publisher.clone(), metrics.clone(), stop.clone());
    let mut inbox = Inbox::new(sub, metrics.clone(), stop.clone());
    let mut windows = Windows::new(
        crate::windows::job(&cfg.graph, false),
        cfg.graph.window_s,
        cfg.clock,
        cfg.max_clock_skew_s,
    );
    let store = match &cfg.store {
        Some(spec) => Some(spec.open()?),
        None => None,
    };
    let mut out = Out {
        publisher: &publisher,
        metrics: &metrics,
        stop: &stop,
        sum: GraphSummary::default(),
        store,
        store_failing: false,
    };
    loop {
        let msg = match inbox.poll().await {
            Polled::Message(m) => m,
            idle => {
                if cfg.clock == Clock::Wall {
                    let t0 = Instant::now();
                    let cut = windows.due(unix_now() - cfg.grace.as_secs_f64())?;
                    out.publish(cut, t0).await;
                }
                if matches!(idle, Polled::Stopped) {
                    break;
                }
                continue;
            }
        };
        if msg.topic == DecisionsTopic::NAME {
            match msg.decode::<DecisionsTopic>() {
                Ok(d) => {
                    out.record(d);
                    inbox.commit(&msg);
                }
                Err(e) => {
                    if letters
                        .send(&mut out.sum.undecodable, &msg, "undecodable", e.to_string())
                        .await
                    {
                        inbox.commit(&msg);
                    }
                }
            }
            continue;
        }
        let t0 = Instant::now();
        let (offered, decoded) = match msg.telemetry() {
            Ok(e) => {
                let t = e.observed_at_s();
                let offer = windows.offer(e)?;
                if cfg.clock == Clock::Wall && matches!(offer, Offer::Taken(_)) {
                    metrics.set("graphscaler_consumer_lag_seconds", &[], unix_now() - t);
                }
                (offer, true)
            }
            Err(e) => (Offer::Refused(e.to_string()), false),
        };
        match offered {
            Offer::Taken(cut) => {
                out.sum.events += 1;
                out.publish(cut, t0).await;
            }
            Offer::Refused(e) => {
                if decoded {
                    metrics.add(
                        "graphscaler_events_rejected_total",
                        &[("reason", "implausible_time")],
                        1.0,
                    );
                }
                if !letters
                    .send(&mut out.sum.undecodable, &msg, "refused_telemetry", e)
                    .await
                {
                    continue;
                }
            }
        }
        inbox.commit(&msg);
    }
    // Cut what is open.
    let t0 = Instant::now();
    let last = windows.cut_open()?;
    out.publish(last, t0).await;
    let ingest = windows.finish()?;
    let Out { mut sum, store, .. } = out;
    sum.ingest = Some(ingest);
    if let Some(store) = store {
        sum.stored = Some(store.finish()?);
    }
    Ok(sum)
}
