//! The graph job: keeps the heterogeneous service/machine graph up to date incrementally with
//! timely + differential dataflow, and cuts a [`Snapshot`] every window.
//!
//! Events ([`TelemetryEvent`]) become upserts of entities ([`ingest`]); the dataflow
//! ([`dataflow`]) maintains featurized services and nodes, `calls` edges between present
//! services and `runs_on` pod counts; an assembler turns the maintained facts into the snapshot of
//! each window, with the same featurization as [`Snapshot::from_observation`].
//!
//! ```
//! use graphscaler_graph::{run, GraphConfig};
//! let out = run(vec![], &GraphConfig::default()).unwrap();
//! assert!(out.snapshots.is_empty());
//! ```

pub mod dataflow;
pub mod ingest;
pub mod recorder;
pub mod rows;
pub mod stage;
pub mod store;
pub mod windows;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use graphscaler_schemas::snapshot::{EdgeSet, Snapshot};
use graphscaler_schemas::{ClusterObservation, GlobalObs, PodObs, TelemetryEvent};
use timely::dataflow::operators::{Exchange, Inspect, Probe};

use crate::dataflow::Fact;
use crate::ingest::{Entity, Ingest, IngestStats};

/// Settings of the graph job.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphConfig {
    /// Window length, seconds.
    pub window_s: f64,
    /// Windows after which an unrefreshed metrics entity is retracted.
    pub stale_windows: u64,
    /// Timely worker threads (per process).
    pub workers: usize,
    /// Several processes: this one's index and every process's `host:port`, in the same order
    /// everywhere (timely's cluster mode). Process 0 ingests and cuts snapshots; the others
    /// share the dataflow's work. `None`: one process.
    pub cluster: Option<(usize, Vec<String>)>,
}

impl Default for GraphConfig {
    /// `pipeline.window_s`, `stale_windows` and `workers` of `config/default.toml`; one process.
    fn default() -> Self {
        use graphscaler_schemas::defaults::section;
        Self {
            window_s: section("pipeline.window_s"),
            stale_windows: section("pipeline.stale_windows"),
            workers: section("pipeline.workers"),
            cluster: None,
        }
    }
}

impl GraphConfig {
    /// What is wrong with these settings, one message per problem, each naming its field as
    /// `[pipeline]` does (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        let mut errs = vec![];
        if !graphscaler_schemas::defaults::is_duration(self.window_s)
            || self.stale_windows == 0
            || self.workers == 0
        {
            errs.push(format!(
                "window_s, stale_windows and workers must be positive (window_s at most a year), got {}, {} and {}",
                self.window_s, self.stale_windows, self.workers
            ));
        }
        if let Some((process, addresses)) = &self.cluster {
            if *process >= addresses.len() {
                errs.push(format!(
                    "graph_process {process} is not an index of graph_cluster ({} addresses)",
                    addresses.len()
                ));
            }
        }
        errs
    }

    fn timely(&self) -> timely::Config {
        let threads = self.workers.max(1);
        match &self.cluster {
            None => timely::Config::process(threads),
            Some((process, addresses)) => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads,
                    process: *process,
                    addresses: addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRun {
    /// One snapshot per window, in order.
    pub snapshots: Vec<Snapshot>,
    /// What ingestion did.
    pub stats: IngestStats,
    /// Wall time each window took (ingest, dataflow update, snapshot), seconds.
    pub window_secs: Vec<f64>,
}

/// The graph job's errors.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Timely could not start or a worker failed.
    #[error("dataflow: {0}")]
    Dataflow(String),
}

/// Groups events into windows as the driver sees them: in arrival order, a window closes when an
/// event of a later window arrives (and at the end).
fn windows(events: &[TelemetryEvent], ingest: &Ingest) -> Vec<(u64, Vec<usize>)> {
    let mut out: Vec<(u64, Vec<usize>)> = vec![];
    for (i, e) in events.iter().enumerate() {
        let w = ingest.window_of(e.observed_at_s());
        match out.last_mut() {
            Some((open, idx)) if w <= *open => idx.push(i),
            Some((open, _)) => {
                // Windows without events still close, so that expiry happens on time.
                let mut next = *open + 1;
                while next < w {
                    out.push((next, vec![]));
                    next += 1;
                }
                out.push((w, vec![i]));
            }
            None => out.push((w, vec![i])),
        }
    }
    out
}

/// The maintained graph, from the dataflow's output diffs: one map per fact kind, keyed by name,
/// each key with its values and their multiplicities (diffs arrive unconsolidated, in any order
/// within a time), so that a window's snapshot is one ordered pass over each map.
#[derive(Debug, Default)]
struct Assembler {
    services: Counted<String, Vec<u32>>,
    nodes: Counted<String, Vec<u32>>,
    calls: Counted<(String, String), Vec<u32>>,
    runs: Counted<(String, String), u32>,
    global: Counted<(), Vec<u32>>,
}

/// Values per key with their multiplicities; a key's value is the one with a positive count.
#[derive(Debug)]
struct Counted<K, V>(BTreeMap<K, Vec<(V, isize)>>);

impl<K, V> Default for Counted<K, V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord, V: PartialEq> Counted<K, V> {
    fn update(&mut self, k: K, v: V, d: isize) {
        let e = self.0.entry(k).or_default();
        match e.iter_mut().find(|(x, _)| *x == v) {
            Some(slot) => slot.1 += d,
            None => e.push((v, d)),
        }
        e.retain(|(_, c)| *c != 0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0
            .iter()
            .filter_map(|(k, vs)| vs.iter().find(|(_, c)| *c > 0).map(|(v, _)| (k, v)))
    }
}

impl Assembler {
    fn apply(&mut self, updates: Vec<(Fact, isize)>, names: &crate::ingest::Names) {
        let name = |i: crate::ingest::Id| names.name(i).to_string();
        for (f, d) in updates {
            match f {
                Fact::Service(n, x) => self.services.update(name(n), x, d),
                Fact::Node(n, x) => self.nodes.update(name(n), x, d),
                Fact::Call(s, t, a) => self.calls.update((name(s), name(t)), a, d),
                Fact::RunsOn(s, n, c) => self.runs.update((name(s), name(n)), c, d),
                Fact::Global(g) => self.global.update((), g, d),
            }
        }
        // Keys left without values go.
        self.services.0.retain(|_, v| !v.is_empty());
        self.nodes.0.retain(|_, v| !v.is_empty());
        self.calls.0.retain(|_, v| !v.is_empty());
        self.runs.0.retain(|_, v| !v.is_empty());
        self.global.0.retain(|_, v| !v.is_empty());
    }

    fn snapshot(&self, time_s: f64, window_s: f64) -> Snapshot {
        let f = |b: &[u32], i: usize| f32::from_bits(b.get(i).copied().unwrap_or(0));
        let n_s = self.services.len();
        let mut services = Vec::with_capacity(n_s);
        let mut service_x = Vec::with_capacity(n_s);
        let mut replicas_spec = Vec::with_capacity(n_s);
        let mut replicas_ready = Vec::with_capacity(n_s);
        let mut cpu_request_cores = Vec::with_capacity(n_s);
        let mut cpu_limit_cores = Vec::with_capacity(n_s);
        let mut service_missing = Vec::with_capacity(n_s);
        let mut s_idx: std::collections::HashMap<&str, u32> =
            std::collections::HashMap::with_capacity(n_s);
        for (i, (n, x)) in self.services.iter().enumerate() {
            s_idx.insert(n, i as u32);
            services.push(n.clone());
            service_x.push(std::array::from_fn(|k| f(x, k)));
            use dataflow::service_fact as at;
            replicas_spec.push(x.get(at::REPLICAS_SPEC).copied().unwrap_or(0));
            replicas_ready.push(x.get(at::REPLICAS_READY).copied().unwrap_or(0));
            cpu_request_cores.push(f(x, at::CPU_REQUEST_CORES));
            service_missing.push(x.get(at::MISSING).copied().unwrap_or(0) != 0);
            cpu_limit_cores.push(f(x, at::CPU_LIMIT_CORES));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut node_x = Vec::with_capacity(self.nodes.len());
        let mut n_idx: std::collections::HashMap<&str, u32> =
            std::collections::HashMap::with_capacity(self.nodes.len());
        for (i, (n, x)) in self.nodes.iter().enumerate() {
            n_idx.insert(n, i as u32);
            nodes.push(n.clone());
            node_x.push(std::array::from_fn(|k| f(x, k)));
        }
        let mut call_set = EdgeSet::default();
        for ((s, d), a) in self.calls.iter() {
            if let (Some(&si), Some(&di)) = (s_idx.get(s.as_str()), s_idx.get(d.as_str())) {
                call_set.src.push(si);
                call_set.dst.push(di);
                call_set
                    .attr
                    .push(a.iter().map(|b| f32::from_bits(*b)).collect());
            }
        }
        let mut runs_on = EdgeSet::default();
        let mut rev = Vec::with_capacity(self.runs.len());
        for ((s, n), &c) in self.runs.iter() {
            if let (Some(&si), Some(&ni)) = (s_idx.get(s.as_str()), n_idx.get(n.as_str())) {
                runs_on.src.push(si);
                runs_on.dst.push(ni);
                runs_on.attr.push(vec![c as f32]);
                rev.push((ni, si, c));
            }
        }
        rev.sort_unstable();
        let mut hosts = EdgeSet::default();
        for (n, s, c) in rev {
            hosts.src.push(n);
            hosts.dst.push(s);
            hosts.attr.push(vec![c as f32]);
        }
        let global = self
            .global
            .iter()
            .next()
            .map_or([0.0; 2], |(_, g)| [f(g, 0), f(g, 1)]);
        let entry = self.global.iter().next().map(|(_, g)| [f(g, 2), f(g, 3)]);
        let entry_rps = self.global.iter().next().map(|(_, g)| f(g, 4));
        Snapshot {
            schema_version: graphscaler_schemas::SCHEMA_VERSION,
            time_s,
            window_s,
            services,
            service_x,
            replicas_spec,
            replicas_ready,
            cpu_request_cores,
            nodes,
            node_x,
            calls: call_set,
            runs_on,
            hosts,
            global,
            entry,
            entry_rps,
            cpu_limit_cores,
            service_missing: if service_missing.iter().any(|m| *m) {
                service_missing
            } else {
                vec![]
            },
            global_missing: self.global.len() == 0,
        }
    }
}

type Sink = Arc<Mutex<Vec<(Fact, u64, isize)>>>;

/// What drives the graph job.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An event, applied to the window being built.
    Event(Box<TelemetryEvent>),
    /// Cut every window up to and including this one, a snapshot each.
    Close(u64),
}

type Commands = Box<dyn Iterator<Item = Command> + Send>;

/// Runs the dataflow over `commands` with `cfg.workers` timely workers (worker 0 ingests, all
/// share the dataflow's work), calling `emit` with each snapshot and the seconds its window took,
/// and with `None` when a close command is done.
fn drive(
    cfg: &GraphConfig,
    commands: Commands,
    emit: impl FnMut(Option<(Snapshot, f64)>) + Send + 'static,
) -> Result<IngestStats, GraphError> {
    let cfg = cfg.clone();
    let commands = Arc::new(Mutex::new(Some(commands)));
    let emit = Arc::new(Mutex::new(emit));
    let sink: Sink = Arc::new(Mutex::new(vec![]));
    let guards = timely::execute(cfg.timely(), move |worker| {
        let sink = sink.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, entities) = scope.new_collection::<Entity, isize>();
            let sink = sink.clone();
            // Every output update goes to worker 0, which assembles the snapshots (in another
            // process, the sink below would not be worker 0's).
            let (probe, _) = dataflow::graph(entities)
                .inner
                .exchange(|_| 0)
                .inspect_core(move |event| {
                    if let Ok((_, updates)) = event {
                        if let Ok(mut s) = sink.lock() {
                            s.extend(updates.iter().cloned());
                        }
                    }
                })
                .probe();
            (input, probe)
        });
        let taken = if worker.index() == 0 {
            commands.lock().ok().and_then(|mut c| c.take())
        } else {
            None
        };
        let Some(commands) = taken else {
            // Only worker 0 ingests; closing this worker's input lets time advance.
            drop(input);
            return None;
        };
        let mut ingest = Ingest::new(cfg.window_s, cfg.stale_windows);
        let mut assembler = Assembler::default();
        let mut open: Option<u64> = None;
        let mut started = std::time::Instant::now();
        for cmd in commands {
            match cmd {
                Command::Event(e) => {
                    let w = *open.get_or_insert_with(|| {
                        let w = ingest.window_of(e.observed_at_s());
                        input.advance_to(w);
                        started = std::time::Instant::now();
                        w
                    });
                    for (x, d) in ingest.offer(&e, w) {
                        input.update(x, d);
                    }
                }
                Command::Close(upto) => {
                    let Some(mut w) = open else {
                        if let Ok(mut emit) = emit.lock() {
                            (*emit)(None);
                        }
                        continue;
                    };
                    // A gap of empty windows (a clock jump, a consumer catching up from old
                    // offsets) is bounded: after `stale_windows + 1` of them every metrics
                    // entity has expired and the windows after differ only in their time, so
                    // the job cuts those and then jumps to `upto`, counting what it skipped.
                    let full = w.saturating_add(ingest.stale_windows() + 1);
                    while w <= upto {
                        if w == full && upto > full {
                            ingest.stats.skipped_windows += upto - full;
                            w = upto;
                        }
                        for (x, d) in ingest.close(w) {
                            input.update(x, d);
                        }
                        input.advance_to(w + 1);
                        input.flush();
                        worker.step_while(|| probe.less_than(&(w + 1)));
                        let ready: Vec<(Fact, isize)> = {
                            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                            let (now, later): (Vec<_>, Vec<_>) =
                                s.drain(..).partition(|(_, t, _)| *t <= w);
                            *s = later;
                            now.into_iter().map(|(f, _, d)| (f, d)).collect()
                        };
                        assembler.apply(ready, &ingest.names);
                        let snap = assembler.snapshot((w + 1) as f64 * cfg.window_s, cfg.window_s);
                        if let Ok(mut emit) = emit.lock() {
                            (*emit)(Some((snap, started.elapsed().as_secs_f64())));
                        }
                        started = std::time::Instant::now();
                        w += 1;
                    }
                    if let Ok(mut emit) = emit.lock() {
                        (*emit)(None);
                    }
                    open = Some(w);
                }
            }
        }
        Some(ingest.stats)
    })
    .map_err(GraphError::Dataflow)?;
    let mut stats = IngestStats::default();
    for r in guards.join() {
        match r {
            Ok(Some(s)) => stats = s,
            Ok(None) => {}
            Err(e) => return Err(GraphError::Dataflow(e)),
        }
    }
    Ok(stats)
}

/// Runs the graph job over a finite event sequence (replay, tests, benchmarks): a window is cut
/// when an event of a later window arrives, and at the end.
pub fn run(events: Vec<TelemetryEvent>, cfg: &GraphConfig) -> Result<GraphRun, GraphError> {
    let plan = windows(&events, &Ingest::new(cfg.window_s, cfg.stale_windows));
    let mut slots: Vec<Option<TelemetryEvent>> = events.into_iter().map(Some).collect();
    let mut commands = vec![];
    for (w, idx) in plan {
        commands.extend(
            idx.into_iter()
                .filter_map(|i| slots[i].take())
                .map(|e| Command::Event(Box::new(e))),
        );
        commands.push(Command::Close(w));
    }
    let out = Arc::new(Mutex::new((vec![], vec![])));
    let sink = out.clone();
    let stats = drive(cfg, Box::new(commands.into_iter()), move |cut| {
        if let (Some((snap, secs)), Ok(mut o)) = (cut, sink.lock()) {
            o.0.push(snap);
            o.1.push(secs);
        }
    })?;
    let (snapshots, window_secs) =
        std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(GraphRun {
        snapshots,
        stats,
        window_secs,
    })
}

/// The graph job running on its own threads, fed event by event: the live form the pipeline
/// uses. Windows are cut when the caller says (by its clock).
#[derive(Debug)]
pub struct LiveGraph {
    commands: Option<std::sync::mpsc::Sender<Command>>,
    snapshots: std::sync::mpsc::Receiver<Option<Snapshot>>,
    handle: Option<std::thread::JoinHandle<Result<IngestStats, GraphError>>>,
}

impl LiveGraph {
    /// Starts the dataflow.
    pub fn spawn(cfg: &GraphConfig) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Command>();
        let (stx, srx) = std::sync::mpsc::channel::<Option<Snapshot>>();
        let cfg = cfg.clone();
        let stx = Mutex::new(stx);
        let handle = std::thread::spawn(move || {
            drive(&cfg, Box::new(rx.into_iter()), move |cut| {
                if let Ok(tx) = stx.lock() {
                    let _ = tx.send(cut.map(|(snap, _)| snap));
                }
            })
        });
        Self {
            commands: Some(tx),
            snapshots: srx,
            handle: Some(handle),
        }
    }

    fn send(&self, c: Command) -> Result<(), GraphError> {
        self.commands
            .as_ref()
            .and_then(|tx| tx.send(c).ok())
            .ok_or_else(|| GraphError::Dataflow("the graph job has stopped".into()))
    }

    /// Offers an event to the window being built.
    pub fn push(&self, e: TelemetryEvent) -> Result<(), GraphError> {
        self.send(Command::Event(Box::new(e)))
    }

    /// Cuts every window up to and including `w`.
    pub fn close(&self, w: u64) -> Result<(), GraphError> {
        self.send(Command::Close(w))
    }

    /// The next snapshot, waiting at most `wait`; snapshots of a close that is done are all
    /// taken first (the end-of-close markers are skipped).
    pub fn next_snapshot(&self, wait: std::time::Duration) -> Option<Snapshot> {
        loop {
            match self.snapshots.recv_timeout(wait).ok()? {
                Some(s) => return Some(s),
                None => continue,
            }
        }
    }

    /// What the last [`LiveGraph::close`] cut, one at a time: `Some(Some(snapshot))`, then
    /// `Some(None)` when that close is done; `None` if nothing came within `wait`.
    pub fn next_cut(&self, wait: std::time::Duration) -> Option<Option<Snapshot>> {
        self.snapshots.recv_timeout(wait).ok()
    }

    /// Stops the dataflow and returns what ingestion did.
    pub fn finish(mut self) -> Result<IngestStats, GraphError> {
        drop(self.commands.take());
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(GraphError::Dataflow("a graph job thread panicked".into())),
            None => Ok(IngestStats::default()),
        }
    }
}

/// The plain recomputation the dataflow is checked against: the same ingestion, then every
/// window's snapshot rebuilt from scratch with [`Snapshot::from_observation`].
pub fn recompute(events: &[TelemetryEvent], cfg: &GraphConfig) -> GraphRun {
    let mut ingest = Ingest::new(cfg.window_s, cfg.stale_windows);
    let mut state: BTreeMap<Entity, isize> = BTreeMap::new();
    let mut snapshots = vec![];
    let mut window_secs = vec![];
    for (w, idx) in windows(events, &ingest) {
        let started = std::time::Instant::now();
        let mut changes = vec![];
        for i in idx {
            changes.extend(ingest.offer(&events[i], w));
        }
        changes.extend(ingest.close(w));
        for (e, d) in changes {
            let c = state.entry(e.clone()).or_insert(0);
            *c += d;
            if *c == 0 {
                state.remove(&e);
            }
        }
        snapshots.push(snapshot_of(&state, &ingest.names, w, cfg.window_s));
        window_secs.push(started.elapsed().as_secs_f64());
    }
    GraphRun {
        snapshots,
        stats: ingest.stats,
        window_secs,
    }
}

/// Window `w`'s snapshot of the maintained entities, rebuilt from scratch.
fn snapshot_of(
    state: &BTreeMap<Entity, isize>,
    names: &crate::ingest::Names,
    w: u64,
    window_s: f64,
) -> Snapshot {
    let mut snap = Snapshot::from_observation(&observation(state, names, w, window_s));
    // Without a global event the entry's figures are unknown, not zero.
    if !state.keys().any(|e| matches!(e, Entity::Global(_))) {
        snap.entry = None;
        snap.entry_rps = None;
        snap.global_missing = true;
    }
    snap
}

/// The cluster observation the entities stand for.
fn observation(
    state: &BTreeMap<Entity, isize>,
    names: &crate::ingest::Names,
    w: u64,
    window_s: f64,
) -> ClusterObservation {
    let n = |i: crate::ingest::Id| names.name(i);
    let mut obs = ClusterObservation {
        time_s: (w + 1) as f64 * window_s,
        window_s,
        services: vec![],
        edges: vec![],
        nodes: vec![],
        pods: vec![],
        stateful: vec![],
        global: GlobalObs {
            cluster_cpu_utilization: 0.0,
            slo_violation_rate: 0.0,
            entry_p95_ms: 0.0,
            entry_error_rate: 0.0,
            entry_rps: 0.0,
        },
    };
    for e in state.keys() {
        match e {
            Entity::Service(k, r) => obs.services.push(rows::service_back(n(*k), r)),
            Entity::Stateful(k, r) => obs.stateful.push(rows::stateful_back(n(*k), r)),
            Entity::Node(k, r) => obs.nodes.push(rows::node_back(n(*k), r)),
            Entity::Call(s, d, r) => obs.edges.push(rows::call_back(n(*s), n(*d), r)),
            Entity::Pod(name, service, node) => {
                obs.pods
                    .push(PodObs::placed(n(*name), n(*service), node.map(n), 0.0))
            }
            Entity::Global(r) => obs.global = rows::global_back(r),
        }
    }
    obs
}
