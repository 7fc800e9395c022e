//! The graph job's windows as a stage drives them, without the transport: events offered in
//! arrival order, a window cut when an event of a later window arrives (or, by the wall clock,
//! when it is due). The graph stage ([`crate::stage`]) wraps [`Windows`] in the bus; the served
//! loop of `graphscaler eval` and the training environments call it directly, so that a policy
//! decides on the same snapshots wherever it runs.
//!
//! Two [`Job`]s cut the snapshots: the dataflow ([`LiveGraph`], what the stage runs) and
//! [`Plain`], the plain recomputation the dataflow is tested against (same ingestion, same
//! featurization, the same bounded cut of a long gap), which needs no threads: what a training
//! environment stepping thousands of decisions a second uses.

use std::collections::BTreeMap;
use std::time::Duration;

use graphscaler_bus::stage::Clock;
use graphscaler_schemas::{Snapshot, TelemetryEvent};

use crate::ingest::{Entity, Ingest, IngestStats};
use crate::{GraphConfig, GraphError, LiveGraph};

/// What cuts a window's snapshot from the events offered to it.
pub trait Job: Send {
    /// Offers an event to the window being built.
    fn push(&mut self, e: TelemetryEvent) -> Result<(), GraphError>;
    /// Cuts every window up to and including `upto`, a snapshot each (fewer when a long gap of
    /// empty windows was skipped, see [`IngestStats::skipped_windows`]).
    fn close(&mut self, upto: u64) -> Result<Vec<Snapshot>, GraphError>;
    /// Stops and returns what ingestion did.
    fn finish(self: Box<Self>) -> Result<IngestStats, GraphError>;
}

/// How long the stage waits for the dataflow to cut a window before calling it failed.
const CUT_WAIT: Duration = Duration::from_secs(30);

impl Job for LiveGraph {
    fn push(&mut self, e: TelemetryEvent) -> Result<(), GraphError> {
        LiveGraph::push(self, e)
    }

    fn close(&mut self, upto: u64) -> Result<Vec<Snapshot>, GraphError> {
        LiveGraph::close(self, upto)?;
        let mut out = vec![];
        loop {
            match self.next_cut(CUT_WAIT) {
                Some(Some(s)) => out.push(s),
                Some(None) => return Ok(out),
                None => {
                    return Err(GraphError::Dataflow(format!(
                        "the dataflow did not cut window {upto} within {} s",
                        CUT_WAIT.as_secs()
                    )))
                }
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<IngestStats, GraphError> {
        LiveGraph::finish(*self)
    }
}

/// The plain recomputation as a [`Job`]: the maintained entities in a map, every snapshot
/// rebuilt from them with [`Snapshot::from_observation`]. It cuts what the dataflow cuts (the
/// tests hold the two equal), on the caller's thread.
#[derive(Debug)]
pub struct Plain {
    ingest: Ingest,
    window_s: f64,
    state: BTreeMap<Entity, isize>,
    open: Option<u64>,
}

impl Plain {
    /// A job with these settings (`workers` and `cluster` do not apply).
    pub fn new(cfg: &GraphConfig) -> Self {
        Self {
            ingest: Ingest::new(cfg.window_s, cfg.stale_windows),
            window_s: cfg.window_s,
            state: BTreeMap::new(),
            open: None,
        }
    }

    fn apply(&mut self, changes: Vec<(Entity, isize)>) {
        for (e, d) in changes {
            let c = self.state.entry(e.clone()).or_insert(0);
            *c += d;
            if *c == 0 {
                self.state.remove(&e);
            }
        }
    }
}

impl Job for Plain {
    fn push(&mut self, e: TelemetryEvent) -> Result<(), GraphError> {
        let w = match self.open {
            Some(w) => w,
            None => *self.open.insert(self.ingest.window_of(e.observed_at_s())),
        };
        let changes = self.ingest.offer(&e, w);
        self.apply(changes);
        Ok(())
    }

    fn close(&mut self, upto: u64) -> Result<Vec<Snapshot>, GraphError> {
        let Some(mut w) = self.open else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        // The dataflow driver's bounded cut of a long gap (see `drive`).
        let full = w.saturating_add(self.ingest.stale_windows() + 1);
        while w <= upto {
            if w == full && upto > full {
                self.ingest.stats.skipped_windows += upto - full;
                w = upto;
            }
            let changes = self.ingest.close(w);
            self.apply(changes);
            out.push(crate::snapshot_of(
                &self.state,
                &self.ingest.names,
                w,
                self.window_s,
            ));
            w += 1;
        }
        self.open = Some(w);
        Ok(out)
    }

    fn finish(self: Box<Self>) -> Result<IngestStats, GraphError> {
        Ok(self.ingest.stats)
    }
}

/// What offering an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// The event was taken; the snapshots of the windows its arrival closed, oldest first.
    Taken(Vec<Snapshot>),
    /// The event was refused (stamped implausibly far ahead of now, or not at all): why.
    Refused(String),
}

/// The open window and the job cutting it.
pub struct Windows {
    job: Box<dyn Job>,
    window_s: f64,
    clock: Clock,
    max_clock_skew_s: f64,
    open: Option<u64>,
    newest: f64,
    /// Events taken.
    pub events: u64,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("window_s", &self.window_s)
            .field("open", &self.open)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Windows {
    /// Windows of `window_s` seconds cut by `job`, by `clock`; telemetry stamped more than
    /// `max_clock_skew_s` ahead of now is refused.
    pub fn new(job: Box<dyn Job>, window_s: f64, clock: Clock, max_clock_skew_s: f64) -> Self {
        Self {
            job,
            window_s,
            clock,
            max_clock_skew_s,
            open: None,
            newest: f64::NEG_INFINITY,
            events: 0,
        }
    }

    /// The window of time `t`.
    pub fn window_of(&self, t: f64) -> u64 {
        (t / self.window_s).floor().max(0.0) as u64
    }

    /// Offers one event: refused if implausibly stamped, else the windows before its own are
    /// cut (when it is the first of a later window) and it joins its window.
    pub fn offer(&mut self, e: TelemetryEvent) -> Result<Offer, GraphError> {
        let t = e.observed_at_s();
        let now = self.clock.now(self.newest, t);
        if !t.is_finite() || t > now + self.max_clock_skew_s {
            return Ok(Offer::Refused(format!(
                "event {} is stamped {t} s, more than {} s ahead of now ({now:.3} s)",
                e.event_id(),
                self.max_clock_skew_s
            )));
        }
        self.newest = self.newest.max(t);
        let w = self.window_of(t);
        let cut = match self.open {
            None => {
                self.open = Some(w);
                vec![]
            }
            Some(o) if w > o => self.cut(w - 1)?,
            _ => vec![],
        };
        self.job.push(e)?;
        self.events += 1;
        Ok(Offer::Taken(cut))
    }

    /// With the wall clock: cuts the windows that ended before `now` (seconds), if any.
    pub fn due(&mut self, now: f64) -> Result<Vec<Snapshot>, GraphError> {
        match self.open {
            Some(w) if self.window_of(now) > w => self.cut(self.window_of(now) - 1),
            _ => Ok(vec![]),
        }
    }

    fn cut(&mut self, upto: u64) -> Result<Vec<Snapshot>, GraphError> {
        match self.open {
            Some(w) if upto >= w => {
                let out = self.job.close(upto)?;
                self.open = Some(upto + 1);
                Ok(out)
            }
            _ => Ok(vec![]),
        }
    }

    /// Cuts the open window, if any event came (what a stage does when it stops).
    pub fn cut_open(&mut self) -> Result<Vec<Snapshot>, GraphError> {
        match self.open {
            Some(w) if self.events > 0 => self.cut(w),
            _ => Ok(vec![]),
        }
    }

    /// Stops the job: what ingestion did.
    pub fn finish(self) -> Result<IngestStats, GraphError> {
        self.job.finish()
    }
}

/// The job `cfg` asks for: the dataflow, or with `plain` the plain recomputation.
pub fn job(cfg: &GraphConfig, plain: bool) -> Box<dyn Job> {
    if plain {
        Box::new(Plain::new(cfg))
    } else {
        Box::new(LiveGraph::spawn(cfg))
    }
}
