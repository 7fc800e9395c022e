//! The graph stage: telemetry in, one snapshot per window out (and, with a Parquet path, the
//! snapshots stored). With [`Clock::Wall`] a window is cut `grace` after its end even when no
//! later event comes; with [`Clock::Event`] (the twin in process) when a later event arrives.

use std::time::{Duration, Instant};

use graphscaler_bus::stage::{publish_counted, unix_now, Clock, DeadLetters, Inbox, Polled};
use graphscaler_bus::transport::{Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_schemas::events::SnapshotsTopic;
use graphscaler_schemas::{Envelope, Snapshot};
use tokio::sync::watch;

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
    pub ingest: Option<crate::ingest::IngestStats>,
}

/// The graph stage's output side: what it publishes to, and what it published so far.
struct Out<'a> {
    cfg: &'a GraphStage,
    publisher: &'a Publisher,
    metrics: &'a Metrics,
    stop: &'a watch::Receiver<bool>,
    sum: GraphSummary,
    stored: Vec<Snapshot>,
}

impl Out<'_> {
    /// Publishes a cut's snapshots (and keeps them for the Parquet store when there is one);
    /// `t0` is when the work that cut them began.
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
            if self.cfg.parquet.is_some() {
                self.stored.push(env.payload);
            }
        }
        self.metrics.set(
            "graphscaler_snapshot_latency_seconds",
            &[],
            t0.elapsed().as_secs_f64(),
        );
    }
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
    let mut out = Out {
        cfg: &cfg,
        publisher: &publisher,
        metrics: &metrics,
        stop: &stop,
        sum: GraphSummary::default(),
        stored: vec![],
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
    let Out {
        mut sum, stored, ..
    } = out;
    sum.ingest = Some(ingest);
    if let Some(path) = &cfg.parquet {
        crate::store::write(path, &stored)?;
    }
    Ok(sum)
}
