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

use crate::{GraphConfig, LiveGraph};

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

/// The graph stage's output side: the dataflow, the open window, and what was cut so far.
struct Cutter<'a> {
    g: std::sync::Mutex<LiveGraph>,
    open: Option<u64>,
    sum: GraphSummary,
    stored: Vec<Snapshot>,
    cfg: &'a GraphStage,
    publisher: &'a Publisher,
    metrics: &'a Metrics,
    stop: &'a watch::Receiver<bool>,
}

impl Cutter<'_> {
    /// Cuts every window from the open one up to `upto` and publishes their snapshots.
    async fn emit(&mut self, upto: u64) -> anyhow::Result<()> {
        let Some(w) = self.open else { return Ok(()) };
        if upto < w {
            return Ok(());
        }
        let t0 = Instant::now();
        let snaps = {
            let g = lock(&self.g);
            g.close(upto)?;
            take_snapshots(&g)
        };
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
        self.open = Some(upto + 1);
        Ok(())
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
    let w_s = cfg.graph.window_s;
    let window_of = |t: f64| (t / w_s).floor().max(0.0) as u64;
    let letters = DeadLetters::new("graph", publisher.clone(), metrics.clone(), stop.clone());
    let mut inbox = Inbox::new(sub, metrics.clone(), stop.clone());
    let mut out = Cutter {
        g: std::sync::Mutex::new(LiveGraph::spawn(&cfg.graph)),
        open: None,
        sum: GraphSummary::default(),
        stored: vec![],
        cfg: &cfg,
        publisher: &publisher,
        metrics: &metrics,
        stop: &stop,
    };
    let mut newest = f64::NEG_INFINITY;
    loop {
        let msg = match inbox.poll().await {
            Polled::Message(m) => m,
            idle => {
                if cfg.clock == Clock::Wall {
                    if let Some(w) = out.open {
                        let due = window_of(unix_now() - cfg.grace.as_secs_f64());
                        if due > w {
                            out.emit(due - 1).await?;
                        }
                    }
                }
                if matches!(idle, Polled::Stopped) {
                    break;
                }
                continue;
            }
        };
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
                match out.open {
                    None => out.open = Some(w),
                    Some(o) if w > o => out.emit(w - 1).await?,
                    _ => {}
                }
                lock(&out.g).push(e)?;
                out.sum.events += 1;
            }
            Err(e) => {
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
    if let Some(w) = out.open {
        if out.sum.events > 0 {
            out.emit(w).await?;
        }
    }
    let Cutter {
        g, mut sum, stored, ..
    } = out;
    let g = g.into_inner().unwrap_or_else(|p| p.into_inner());
    sum.ingest = Some(g.finish()?);
    if let Some(path) = &cfg.parquet {
        crate::store::write(path, &stored)?;
    }
    Ok(sum)
}
