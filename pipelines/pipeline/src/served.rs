//! The served loop without the transport: the twin, the telemetry a scrape of it publishes, the
//! graph job's windows, a policy on the snapshots they cut, the actuator's guardrails, the twin
//! again — the stages' own cores ([`Windows`], [`decided`], [`Actuator::on_service`] and
//! [`Actuator::on_action`]) called in the order the in-process bus delivers their messages in
//! [`crate::run`] (`graphscaler run`). `graphscaler eval` runs every policy through it and the
//! training environments step it, so a policy is trained, measured and served on the same
//! observations at the same cadence with the same delays; a test holds it to `graphscaler run`,
//! decision for decision.
//!
//! Within one observation tick: the twin advances and the tick's telemetry is published; the
//! actuator sees the tick's service telemetry (its staleness guard); the graph job takes the
//! events in order, and the first of a later window cuts the windows before it; each snapshot
//! is decided on, and the actions go through the guardrails to the twin before the next tick.

use std::sync::{Arc, Mutex};

use graphscaler_actuate::{Actuator, Cluster, Guardrails, Workload};
use graphscaler_bus::stage::Clock;
use graphscaler_graph::ingest::IngestStats;
use graphscaler_graph::recorder::{Recorder, RecorderStats};
use graphscaler_graph::store::StoreError;
use graphscaler_graph::windows::{job, Offer, Windows};
use graphscaler_graph::{GraphConfig, GraphError};
use graphscaler_policy::stage::{decided, source, Decided};
use graphscaler_policy::SnapshotPolicy;
use graphscaler_schemas::{
    Action, ActionOutcome, AuditRecord, ClusterObservation, CpuResize, Snapshot, TelemetryEvent,
};
use graphscaler_twin::{TickTruth, Twin};

/// The twin as the actuator's cluster; a CPU change takes the path the actuator's
/// `cpu_resize` names ([`Twin::apply_with`]).
#[derive(Debug, Clone)]
pub struct TwinCluster(pub Arc<Mutex<Twin>>, pub CpuResize);

impl TwinCluster {
    /// The twin, locked.
    pub fn twin(&self) -> std::sync::MutexGuard<'_, Twin> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cluster for TwinCluster {
    fn workload(&self, service: &str) -> Option<Workload> {
        self.twin().spec_of(service).map(|(r, req, lim)| Workload {
            replicas: r,
            cpu_request_cores: req,
            cpu_limit_m: Some((lim * 1000.0).round() as u32),
        })
    }
    fn free_cpu_cores(&self) -> f64 {
        self.twin().free_cpu_cores()
    }
    fn apply(&mut self, a: &Action) -> Result<(), String> {
        let path = self.1;
        match self.twin().apply_with(a, path) {
            ActionOutcome::Applied => Ok(()),
            ActionOutcome::Refused { reason, .. } => Err(reason),
        }
    }
}

/// How the served loop cuts snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The graph job's dataflow, on its own threads (what the graph stage runs).
    Dataflow,
    /// The plain recomputation the dataflow is tested equal to, on the caller's thread (for
    /// training environments, which step thousands of decisions a second).
    Plain,
}

/// One decision of the actuator in the loop.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// The time of the snapshot it was decided on, s.
    pub at_s: f64,
    /// The actuator's record.
    pub record: AuditRecord,
}

/// What one tick of the loop did.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The twin's ground truth for the tick.
    pub truth: TickTruth,
    /// The snapshots of the windows the tick's telemetry closed, oldest first, each to be decided
    /// on ([`Served::act`]) before the next tick.
    pub snapshots: Vec<Snapshot>,
}

/// Counters of the loop.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServedCounts {
    /// Observation ticks.
    pub ticks: u64,
    /// Ticks whose entry p95 or error rate broke the SLO.
    pub slo_violated_ticks: u64,
    /// Telemetry events published.
    pub events: u64,
    /// Telemetry events the graph job refused (implausibly stamped).
    pub refused_events: u64,
    /// Snapshots cut.
    pub snapshots: u64,
    /// Snapshots that failed validation (the policy stage dead-letters them; never decided on).
    pub invalid_snapshots: u64,
    /// Snapshots the policy could not decide on, decided by its fallback.
    pub fallbacks: u64,
    /// Actions that reached the actuator.
    pub actions: u64,
    /// Relative actions that could not be made absolute (dropped, as the policy stage does).
    pub dropped: u64,
    /// Allocated CPU core-seconds.
    pub cpu_core_seconds: f64,
    /// Snapshots or decisions the store could not write (each streak warned once).
    pub store_failures: u64,
}

/// A whole run of the loop.
#[derive(Debug, Clone)]
pub struct ServedRun {
    /// The twin's ground truth, one per tick.
    pub ticks: Vec<TickTruth>,
    /// Every decision of the actuator, in order.
    pub decisions: Vec<Decision>,
    /// Counters.
    pub counts: ServedCounts,
    /// The graph job's ingestion counters.
    pub ingest: IngestStats,
    /// What the store holds of the run, with one ([`Served::with_store`]).
    pub stored: Option<RecorderStats>,
}

/// The loop.
#[derive(Debug)]
pub struct Served {
    twin: TwinCluster,
    windows: Windows,
    actuator: Actuator,
    prev: Option<ClusterObservation>,
    store: Option<Recorder>,
    store_failing: bool,
    /// Counters so far.
    pub counts: ServedCounts,
}

impl Served {
    /// The loop on `twin`, with the graph job's settings and the actuator's guardrails.
    pub fn new(twin: Twin, graph: &GraphConfig, cut: Cut, rails: Guardrails) -> Self {
        let windows = Windows::new(
            job(graph, cut == Cut::Plain),
            graph.window_s,
            Clock::Event,
            rails.max_clock_skew_s,
        );
        Self {
            twin: TwinCluster(Arc::new(Mutex::new(twin)), rails.cpu_resize),
            windows,
            actuator: Actuator::new(rails),
            prev: None,
            store: None,
            store_failing: false,
            counts: ServedCounts::default(),
        }
    }

    /// Also stores every snapshot [`Served::serve`] is given, with the decision taken on it and
    /// the reward after it, as the graph stage's store does in the pipeline.
    pub fn with_store(mut self, store: Recorder) -> Self {
        self.store = Some(store);
        self
    }

    fn stored<T>(&mut self, r: Result<T, StoreError>) {
        match r {
            Ok(_) => self.store_failing = false,
            Err(e) => {
                self.counts.store_failures += 1;
                if !self.store_failing {
                    tracing::warn!(error = %e, "the store could not be written (warned once until it works again)");
                    self.store_failing = true;
                }
            }
        }
    }

    /// The twin.
    pub fn twin(&self) -> std::sync::MutexGuard<'_, Twin> {
        self.twin.twin()
    }

    /// Whether the twin's run is over.
    pub fn done(&self) -> bool {
        self.twin().done()
    }

    /// Advances the twin one observation tick and feeds its telemetry through the graph job;
    /// `None` once the twin's run is over.
    pub fn tick(&mut self) -> Result<Option<Tick>, GraphError> {
        let (obs, truth) = {
            let mut t = self.twin();
            if t.done() {
                return Ok(None);
            }
            t.advance()
        };
        self.counts.ticks += 1;
        self.counts.slo_violated_ticks += u64::from(truth.slo_violated);
        self.counts.cpu_core_seconds += truth
            .services
            .iter()
            .map(|s| s.allocated_cpu_cores)
            .sum::<f64>()
            * obs.window_s;
        let events = TelemetryEvent::changes_since(self.prev.as_ref(), &obs, "twin");
        self.counts.events += events.len() as u64;
        for e in &events {
            if let TelemetryEvent::Service(s) = e {
                self.actuator.on_service(
                    &s.payload.name,
                    s.observed_at_s,
                    &s.payload.missing,
                    Clock::Event,
                );
            }
        }
        let mut snapshots = vec![];
        for e in events {
            match self.windows.offer(e)? {
                Offer::Taken(cut) => snapshots.extend(cut),
                Offer::Refused(_) => self.counts.refused_events += 1,
            }
        }
        self.counts.snapshots += snapshots.len() as u64;
        self.prev = Some(obs);
        Ok(Some(Tick { truth, snapshots }))
    }

    /// Puts a policy's decisions on a snapshot through the guardrails to the twin.
    pub fn act(&mut self, decided: Decided) -> Vec<Decision> {
        self.counts.dropped += decided.dropped.len() as u64;
        decided
            .actions
            .into_iter()
            .map(|env| {
                self.counts.actions += 1;
                let record = self.actuator.on_action(&mut self.twin, &env, Clock::Event);
                Decision {
                    at_s: env.observed_at_s,
                    record,
                }
            })
            .collect()
    }

    /// Cuts the open window (what the graph stage does when it stops), for the end of a run.
    pub fn cut_open(&mut self) -> Result<Vec<Snapshot>, GraphError> {
        let cut = self.windows.cut_open()?;
        self.counts.snapshots += cut.len() as u64;
        Ok(cut)
    }

    /// Decides on `snap` with `policy` as the policy stage does (an invalid snapshot is
    /// counted and not decided on) and acts.
    /// With a store, the snapshot is stored (invalid or not, as the graph stage stores what it
    /// publishes) and the decision beside it.
    pub fn serve(&mut self, policy: &mut dyn SnapshotPolicy, snap: &Snapshot) -> Vec<Decision> {
        if let Some(st) = &mut self.store {
            let r = st.push(snap.clone());
            self.stored(r);
        }
        if snap.validate().is_err() {
            self.counts.invalid_snapshots += 1;
            return vec![];
        }
        let actions = policy.decide(snap);
        // What a fallback decided is published as its own, as the policy stage does.
        let by = match policy.fell_back() {
            Some((fallback, _)) => {
                self.counts.fallbacks += 1;
                format!("policy/{fallback}")
            }
            None => source(policy),
        };
        let d = decided(&by, snap, actions);
        if let Some(st) = &mut self.store {
            let actions = d.actions.iter().map(|e| e.payload.clone()).collect();
            let r = st.decided(snap.time_s, &by, actions);
            self.stored(r);
        }
        self.act(d)
    }

    /// Runs `policy` until the twin's run is over (the open window is cut and decided on at the
    /// end, as the stages do when they stop).
    pub fn run(mut self, policy: &mut dyn SnapshotPolicy) -> Result<ServedRun, GraphError> {
        let mut ticks = vec![];
        let mut decisions = vec![];
        while let Some(t) = self.tick()? {
            for s in &t.snapshots {
                decisions.extend(self.serve(policy, s));
            }
            ticks.push(t.truth);
        }
        for s in self.cut_open()? {
            decisions.extend(self.serve(policy, &s));
        }
        let Served {
            windows,
            mut counts,
            store,
            ..
        } = self;
        let ingest = windows.finish()?;
        let stored = match store.map(Recorder::finish) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                counts.store_failures += 1;
                tracing::warn!(error = %e, "the store's last file could not be written");
                None
            }
            None => None,
        };
        Ok(ServedRun {
            ticks,
            decisions,
            counts,
            ingest,
            stored,
        })
    }
}
