//! The simulation: cluster, pods, queues, call trees, stateful replicas, actions, observations.
//!
//! Time advances in steps of `step_s` (1 s). Each step:
//!
//! 1. the scheduler binds Pending pods (filter on free allocatable CPU and memory, score by the
//!    preferred node type then LeastAllocated, ties to the lowest node index);
//! 2. the load model starts user tasks (Poisson counts) and their requests fan out along each
//!    route's call tree into per-service arrivals (expected fan-out);
//! 3. every service serves from a fluid FIFO backlog with capacity `C = Σ μ_p` over its serving
//!    pods (`μ_p = limit_cores · node speed / cpu cost`); what cannot be served waits, what would
//!    wait longer than `request_timeout_s` is dropped as an error, and a service with no ready
//!    pod fails every request (Envoy's 503);
//! 4. stateful stores advance their replicas' sync and replication lag.
//!
//! Every `observe_every_s` the twin computes latencies: per service an M/M/c wait (with the
//! tick's mean arrival rate, capped at 98% of capacity), an unthrottled service time, the
//! backlog's drain time, a CFS-throttling delay and a per-hop sidecar latency; along each route's call tree, means and variances add (sequential
//! calls, independent), and percentiles of composed latencies come from a Gamma fit to those
//! moments (`queue::gamma_quantile`). Leaf services use the exact M/M/c sojourn quantile.

use std::collections::{HashMap, VecDeque};

use graphscaler_schemas::{
    Action, ActionKind, ActionOutcome, CallEdgeObs, ClusterObservation, CpuResize, GlobalObs,
    NodeObs, PodObs, PodPhase, ServiceObs, StatefulObs,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};

use crate::config::{SloConfig, TwinConfig};
use crate::error::Result;
use crate::load::Shape;
use crate::queue::{gamma_quantile, gamma_survival, std_normal_cdf, Mmc, Z50, Z95, Z99};
use crate::topology::{CallNode, Topology};

const MIB: f64 = 1024.0 * 1024.0;

/// Ground truth of one observation tick, for metrics. Policies never see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TickTruth {
    /// End of the tick, s.
    pub time_s: f64,
    /// Tick length, s.
    pub window_s: f64,
    /// Nominal frontend rps of the load shape at the end of the tick.
    pub offered_rps: f64,
    /// Requests that reached the entry service in the tick.
    pub entry_requests: f64,
    /// Of those, failed ones.
    pub entry_errors: f64,
    /// Of the successful ones, how many took longer than the latency SLO (expected count).
    pub requests_over_slo: f64,
    /// Entry p95, ms.
    pub entry_p95_ms: f64,
    /// Entry mean latency, ms.
    pub entry_mean_ms: f64,
    /// Whether the tick violated the SLO (p95 over the objective or error rate over its
    /// objective).
    pub slo_violated: bool,
    /// Per service, in topology order.
    pub services: Vec<ServiceTruth>,
    /// Per route of the entry service, end to end along its call tree.
    pub routes: Vec<RouteTruth>,
    /// Per call edge with traffic, and the entry service's inbound traffic from outside the
    /// mesh: the request counts and latency moments behind Istio's counters and histograms.
    pub edges: Vec<EdgeTruth>,
    /// Per pod bound to a node: what cAdvisor would measure over the tick.
    pub pods: Vec<PodTruth>,
}

/// A pod's actual resource use over a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTruth {
    /// Pod name.
    pub name: String,
    /// Service index.
    pub service: usize,
    /// Mean CPU use over the tick, cores.
    pub cpu_cores: f64,
    /// Working set at the end of the tick, bytes.
    pub working_set_bytes: f64,
    /// A stateful service's read replica: its replication lag at the end of the tick, s
    /// (`None` for the primary and for stateless pods).
    pub replica_lag_s: Option<f64>,
}

/// Requests on one call edge over a tick, as a destination sidecar records them.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeTruth {
    /// Calling service index; `None` for traffic from outside the mesh into the entry service.
    pub source: Option<usize>,
    /// Called service index.
    pub destination: usize,
    /// Requests in the tick.
    pub requests: f64,
    /// Of those, failed ones.
    pub errors: f64,
    /// Mean latency, s.
    pub mean_s: f64,
    /// Latency variance, s².
    pub var_s2: f64,
}

impl EdgeTruth {
    /// Expected share of requests with latency at most `t` seconds (the Gamma fit the twin uses
    /// for composed latencies).
    pub fn cdf(&self, t: f64) -> f64 {
        1.0 - crate::queue::gamma_survival(self.mean_s, self.var_s2, t)
    }
}

/// End-to-end figures of one route over a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTruth {
    /// `METHOD /path`.
    pub name: String,
    /// Requests per second.
    pub rps: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// p95 latency, ms (Gamma fit to the composed moments).
    pub p95_ms: f64,
    /// Share of requests that failed.
    pub error_rate: f64,
}

/// Ground truth of one service over a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTruth {
    /// `spec.replicas` at the end of the tick.
    pub replicas_spec: u32,
    /// Ready pods at the end of the tick.
    pub pods_ready: u32,
    /// Pods bound to a node (ready or starting).
    pub pods_bound: u32,
    /// Pods that no node can take.
    pub pods_unschedulable: u32,
    /// CPU request of one pod, cores.
    pub cpu_request_cores: f64,
    /// Mean over the tick of Σ CPU requests of bound pods, cores.
    pub allocated_cpu_cores: f64,
    /// Mean over the tick of Σ memory requests of bound pods, bytes.
    pub allocated_mem_bytes: f64,
    /// CPU used, cores (mean over the tick).
    pub used_cpu_cores: f64,
    /// CPU the offered load needs at speed 1.0, cores (mean over the tick).
    pub demand_cpu_cores: f64,
    /// Worst replica lag, s (stateful services; 0 otherwise).
    pub max_replica_lag_s: f64,
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    ty: usize,
    req_cpu: f64,
    req_mem: f64,
    used_cpu_acc: f64,
}

#[derive(Debug, Clone)]
struct Pod {
    name: String,
    node: Option<usize>,
    start_s: Option<f64>,
    ready_s: Option<f64>,
    cpu_req: f64,
    cpu_lim: f64,
    mem_req: f64,
    cpu_acc: f64,
    /// The metrics pipeline's latest sample: (usage over the window, sample time).
    sample: Option<(f64, f64)>,
    /// Stateful replicas: when the initial transfer ends (serves reads from then on).
    sync_done_s: Option<f64>,
    /// Stateful replicas: replication backlog, operations.
    repl_backlog: f64,
    /// The pod-template revision it was created from.
    rev: u32,
}

impl Pod {
    fn ready(&self, now: f64) -> bool {
        matches!(self.ready_s, Some(r) if r <= now + 1e-9)
    }
}

#[derive(Debug, Clone, Default)]
struct Acc {
    arrivals: f64,
    served: f64,
    dropped: f64,
    backlog_int: f64,
    capacity_int: f64,
    /// ∫ Σ μ_p · speed_p dt, to weight node speeds by capacity.
    speed_int: f64,
    alloc_cpu_int: f64,
    alloc_mem_int: f64,
    used_cpu: f64,
    demand_cpu: f64,
    reads: f64,
    hits: f64,
    writes: f64,
}

#[derive(Debug, Clone)]
struct Svc {
    name: String,
    stateful: bool,
    spec_replicas: u32,
    cpu_req: f64,
    cpu_lim: f64,
    mem_req: f64,
    mem_lim: f64,
    prefer: Option<usize>,
    pods: Vec<Pod>,
    /// The pod template's revision: a template change starts a rolling update to it.
    rev: u32,
    /// A rolling update is replacing pods of an older revision.
    rolling: bool,
    backlog: f64,
    cost_s: f64,
    startup_s: f64,
    leaf: bool,
    acc: Acc,
}

#[derive(Debug, Clone)]
struct FlatNode {
    service: usize,
    parent: Option<usize>,
    write: bool,
    count: f64,
    mult: f64,
    optional: bool,
    timeout_s: Option<f64>,
    edge: Option<usize>,
    children: Vec<usize>,
}

#[derive(Debug, Clone)]
struct FlatRoute {
    nodes: Vec<FlatNode>,
    /// (service, invocations per route request): the offered load per route request.
    visits: Vec<(usize, f64)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Own {
    mean: f64,
    var: f64,
    err: f64,
    p: [f64; 3],
}

/// One tick's latencies mixed per service and per edge: the arrival-weighted sums of 1, the
/// latency, its square and success (`m*`, `ok` per service; `e*`, `eok` per edge), the requests
/// over the SLO, and each route's truth.
#[derive(Debug)]
/// A tick's per-service observations and truths, gathered service by service.
#[derive(Default)]
struct Observed {
    services: Vec<ServiceObs>,
    truths: Vec<ServiceTruth>,
    pods: Vec<PodObs>,
    pod_truth: Vec<PodTruth>,
    stateful: Vec<StatefulObs>,
}

struct Composed {
    m0: Vec<f64>,
    m1: Vec<f64>,
    m2: Vec<f64>,
    ok: Vec<f64>,
    e0: Vec<f64>,
    e1: Vec<f64>,
    e2: Vec<f64>,
    eok: Vec<f64>,
    over_slo: f64,
    route_truth: Vec<RouteTruth>,
}

/// The twin. See the module docs for the model.
#[derive(Debug, Clone)]
pub struct Twin {
    topo: Topology,
    cfg: TwinConfig,
    slo: SloConfig,
    shape: Shape,
    duration_s: f64,
    rng: ChaCha8Rng,
    now: f64,
    nodes: Vec<Node>,
    svc: Vec<Svc>,
    routes: Vec<FlatRoute>,
    /// Services with callers after their callers (Kahn's order of the call DAG).
    order: Vec<usize>,
    /// Per service, the (route, node) places it appears in.
    svc_nodes: Vec<Vec<(usize, usize)>>,
    /// Per route and node, the share of the route's requests that got through the node's
    /// service this step (product of pass-through ratios from the root).
    through: Vec<Vec<f64>>,
    edges: Vec<(usize, usize)>,
    tasks: Vec<(f64, Vec<usize>)>,
    mean_requests_per_task: f64,
    task_latency_s: Vec<f64>,
    route_arrivals: Vec<f64>,
    route_tick: Vec<f64>,
    slo_history: VecDeque<bool>,
    pod_seq: u64,
    ticks: u64,
}

impl Twin {
    /// Online Boutique (compiled in) with the default configuration and SLO, under `shape` for
    /// `duration_s` seconds, seeded: the twin that tests, benchmarks and examples start.
    pub fn online_boutique(shape: Shape, duration_s: f64, seed: u64) -> Result<Self> {
        let cfg = TwinConfig::default();
        let topo = Topology::online_boutique(&cfg.fanout_parameters)?;
        Self::new(topo, cfg, SloConfig::default(), shape, duration_s, seed)
    }

    /// A twin of `topo` under `shape` for `duration_s` seconds, seeded.
    pub fn new(
        topo: Topology,
        cfg: TwinConfig,
        slo: SloConfig,
        shape: Shape,
        duration_s: f64,
        seed: u64,
    ) -> Result<Self> {
        let mut cfg = cfg;
        if let Some(pools) = &topo.cluster {
            // The topology's node pools (a generated topology sizes its cluster) replace the
            // configuration's.
            cfg.cluster.node_types = pools.clone();
        }
        cfg.validate()?;
        let cfg_load = cfg.load.clone();
        let tasks_map = cfg.tasks_for(&topo)?;
        let route_idx = |name: &str| {
            topo.routes
                .iter()
                .position(|r| r.name == name)
                .expect("tasks_for checked route names")
        };
        let total_w: f64 = tasks_map.values().map(|t| t.weight).sum();
        let tasks: Vec<(f64, Vec<usize>)> = tasks_map
            .values()
            .map(|t| {
                (
                    t.weight / total_w,
                    t.requests.iter().map(|r| route_idx(r)).collect(),
                )
            })
            .collect();
        let mean_requests_per_task = tasks.iter().map(|(w, r)| w * r.len() as f64).sum();

        let mut nodes = Vec::new();
        for (ty, nt) in cfg.cluster.node_types.iter().enumerate() {
            for i in 0..nt.count {
                nodes.push(Node {
                    name: format!("{}-{}", nt.name, i),
                    ty,
                    req_cpu: 0.0,
                    req_mem: 0.0,
                    used_cpu_acc: 0.0,
                });
            }
        }

        let mut edges: Vec<(usize, usize)> = topo.edges.iter().map(|e| (e.from, e.to)).collect();
        edges.sort_unstable();
        edges.dedup();
        let edge_index: HashMap<(usize, usize), usize> =
            edges.iter().enumerate().map(|(i, &e)| (e, i)).collect();

        let mut routes = Vec::new();
        for r in &topo.routes {
            let mut nodes_f = vec![FlatNode {
                service: topo.entry,
                parent: None,
                write: false,
                count: 1.0,
                mult: 1.0,
                optional: false,
                timeout_s: None,
                edge: None,
                children: vec![],
            }];
            for c in &r.calls {
                flatten(&topo, &edge_index, c, 0, &mut nodes_f);
            }
            let mut visits: Vec<(usize, f64)> = Vec::new();
            for n in &nodes_f {
                match visits.iter_mut().find(|v| v.0 == n.service) {
                    Some(v) => v.1 += n.mult,
                    None => visits.push((n.service, n.mult)),
                }
            }
            routes.push(FlatRoute {
                nodes: nodes_f,
                visits,
            });
        }

        let svc = topo
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| Svc {
                name: s.name.clone(),
                stateful: s.stateful,
                spec_replicas: 0,
                cpu_req: s.cpu_request_m / 1000.0,
                cpu_lim: s.cpu_limit_m / 1000.0,
                mem_req: s.mem_request_mi * MIB,
                mem_lim: s.mem_limit_mi * MIB,
                prefer: None,
                pods: vec![],
                rev: 0,
                rolling: false,
                backlog: 0.0,
                cost_s: cfg.cpu_cost_s(s),
                startup_s: cfg.startup_delay(s),
                leaf: !topo.edges.iter().any(|e| e.from == i),
                acc: Acc::default(),
            })
            .collect();

        let n_tasks = tasks.len();
        let n_routes = routes.len();
        let mut svc_nodes = vec![vec![]; topo.services.len()];
        for (r, route) in routes.iter().enumerate() {
            for (n, node) in route.nodes.iter().enumerate() {
                svc_nodes[node.service].push((r, n));
            }
        }
        let through = routes.iter().map(|r| vec![1.0; r.nodes.len()]).collect();
        let order = topological_order(topo.services.len(), &topo.edges);
        let mut twin = Twin {
            topo,
            cfg,
            slo,
            shape: shape.seeded(seed, duration_s, &cfg_load),
            duration_s,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0.0,
            nodes,
            svc,
            routes,
            order,
            svc_nodes,
            through,
            edges,
            tasks,
            mean_requests_per_task,
            task_latency_s: vec![0.0; n_tasks],
            route_arrivals: vec![0.0; n_routes],
            route_tick: vec![0.0; n_routes],
            slo_history: VecDeque::new(),
            pod_seq: 0,
            ticks: 0,
        };
        // The manifests' replicas, Ready at time zero (the run starts from a settled cluster).
        for s in 0..twin.svc.len() {
            let n = twin.topo.services[s].replicas;
            twin.svc[s].spec_replicas = n;
            for _ in 0..n {
                twin.add_pod(s);
            }
        }
        twin.schedule();
        for s in &mut twin.svc {
            for p in &mut s.pods {
                if p.node.is_some() {
                    p.ready_s = Some(0.0);
                    p.sync_done_s = Some(0.0);
                }
            }
        }
        Ok(twin)
    }

    /// The topology being simulated.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The configuration in force.
    pub fn config(&self) -> &TwinConfig {
        &self.cfg
    }

    /// Simulated time, s.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Whether the run's duration has elapsed.
    pub fn done(&self) -> bool {
        self.now >= self.duration_s - 1e-9
    }

    /// The current `spec.replicas`, CPU request and CPU limit (cores) of `service`; actions
    /// change these at once, observations show them at the next tick.
    pub fn spec_of(&self, service: &str) -> Option<(u32, f64, f64)> {
        let s = self.svc.iter().find(|s| s.name == service)?;
        Some((s.spec_replicas, s.cpu_req, s.cpu_lim))
    }

    /// Allocatable CPU not requested by any bound pod, summed over the nodes, cores.
    pub fn free_cpu_cores(&self) -> f64 {
        self.nodes
            .iter()
            .map(|n| {
                (self.cfg.cluster.node_types[n.ty].allocatable_cpu_m / 1000.0 - n.req_cpu).max(0.0)
            })
            .sum()
    }

    /// The node type `service` prefers for new pods, if any.
    pub fn preferred_node_type(&self, service: &str) -> Option<String> {
        let s = self.svc.iter().find(|s| s.name == service)?;
        s.prefer
            .map(|t| self.cfg.cluster.node_types[t].name.clone())
    }

    /// The cluster's node types, by CPU model id (the topology's pools where it carries them).
    pub fn node_type_configs(&self) -> &[crate::config::NodeTypeConfig] {
        &self.cfg.cluster.node_types
    }

    /// Node type names, by CPU model id.
    pub fn node_types(&self) -> Vec<String> {
        self.cfg
            .cluster
            .node_types
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// Runs one observation period and returns what a scrape would see, with the ground truth.
    pub fn advance(&mut self) -> (ClusterObservation, TickTruth) {
        let steps = (self.cfg.observe_every_s / self.cfg.step_s).round() as usize;
        for _ in 0..steps {
            self.step();
        }
        self.ticks += 1;
        self.observe()
    }

    fn add_pod(&mut self, s: usize) {
        self.pod_seq += 1;
        let sv = &mut self.svc[s];
        // A stable, readable, deterministic name in the ReplicaSet style.
        let name = format!(
            "{}-{:05x}",
            sv.name,
            (self.pod_seq * 2_654_435_761) & 0xfffff
        );
        sv.pods.push(Pod {
            name,
            node: None,
            start_s: None,
            ready_s: None,
            cpu_req: sv.cpu_req,
            cpu_lim: sv.cpu_lim,
            mem_req: sv.mem_req,
            cpu_acc: 0.0,
            sample: None,
            sync_done_s: None,
            repl_backlog: 0.0,
            rev: sv.rev,
        });
    }

    /// Deletes pod `i` of service `s`, freeing what it requested on its node.
    fn remove_pod(&mut self, s: usize, i: usize) {
        let p = self.svc[s].pods.remove(i);
        if let Some(n) = p.node {
            self.nodes[n].req_cpu -= p.cpu_req;
            self.nodes[n].req_mem -= p.mem_req;
        }
    }

    /// One step of each rolling update, as the Deployment controller does it with maxSurge and
    /// maxUnavailable of 25 %: pods of the new template are added while the total stays within
    /// `replicas + maxSurge`; pods of the old one go, not-ready first, while at least
    /// `replicas − maxUnavailable` pods stay ready.
    fn roll(&mut self) {
        let now = self.now;
        for s in 0..self.svc.len() {
            if !self.svc[s].rolling {
                continue;
            }
            let sv = &self.svc[s];
            let (spec, rev) = (sv.spec_replicas as usize, sv.rev);
            let surge = (spec as f64 * 0.25).ceil() as usize;
            let unavailable = (spec as f64 * 0.25).floor() as usize;
            let new = sv.pods.iter().filter(|p| p.rev == rev).count();
            if new == sv.pods.len() {
                self.svc[s].rolling = false;
                continue;
            }
            let room = (spec + surge)
                .saturating_sub(sv.pods.len())
                .min(spec.saturating_sub(new));
            for _ in 0..room {
                self.add_pod(s);
            }
            let min_ready = spec.saturating_sub(unavailable);
            loop {
                let sv = &self.svc[s];
                let Some((victim, ready)) = sv
                    .pods
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.rev != rev)
                    .map(|(i, p)| (i, p.ready(now)))
                    .min_by_key(|&(i, ready)| (ready, std::cmp::Reverse(i)))
                else {
                    break;
                };
                let ready_now = sv.pods.iter().filter(|p| p.ready(now)).count();
                if ready && ready_now <= min_ready {
                    break;
                }
                self.remove_pod(s, victim);
            }
        }
    }

    fn schedule(&mut self) {
        let now = self.now;
        for s in 0..self.svc.len() {
            for p in 0..self.svc[s].pods.len() {
                if self.svc[s].pods[p].node.is_some() {
                    continue;
                }
                let (cpu, mem) = (self.svc[s].pods[p].cpu_req, self.svc[s].pods[p].mem_req);
                let prefer = self.svc[s].prefer;
                let mut best: Option<(usize, (u8, f64))> = None;
                for (i, n) in self.nodes.iter().enumerate() {
                    let nt = &self.cfg.cluster.node_types[n.ty];
                    let (ac, am) = (nt.allocatable_cpu_m / 1000.0, nt.allocatable_mem_mi * MIB);
                    if n.req_cpu + cpu > ac + 1e-9 || n.req_mem + mem > am + 1e-9 {
                        continue;
                    }
                    let score = (
                        u8::from(prefer == Some(n.ty)),
                        ((ac - n.req_cpu - cpu) / ac + (am - n.req_mem - mem) / am) / 2.0,
                    );
                    if best.is_none_or(|(_, b)| {
                        score.0 > b.0 || (score.0 == b.0 && score.1 > b.1 + 1e-12)
                    }) {
                        best = Some((i, score));
                    }
                }
                if let Some((i, _)) = best {
                    self.nodes[i].req_cpu += cpu;
                    self.nodes[i].req_mem += mem;
                    let startup = self.svc[s].startup_s;
                    let is_replica = self.svc[s].stateful && p > 0;
                    let full_sync = self.cfg.stateful.full_sync_s;
                    let pod = &mut self.svc[s].pods[p];
                    pod.node = Some(i);
                    pod.start_s = Some(now);
                    pod.ready_s = Some(now + startup);
                    pod.sync_done_s = Some(if is_replica {
                        now + startup + full_sync
                    } else {
                        now + startup
                    });
                }
            }
        }
    }

    fn step(&mut self) {
        let dt = self.cfg.step_s;
        self.now += dt;
        let now = self.now;
        if self.svc.iter().any(|s| s.rolling) {
            self.roll();
        }
        if self
            .svc
            .iter()
            .any(|s| s.pods.iter().any(|p| p.node.is_none()))
        {
            self.schedule();
        }

        // Load: closed-loop task starts, Poisson.
        let c = &self.cfg.load;
        let mean_wait = 0.5 * (c.wait_min_s + c.wait_max_s);
        let nominal = self.shape.rps(now, self.duration_s, c).max(0.0);
        let users = nominal * mean_wait / self.mean_requests_per_task;
        let cycle: f64 = self
            .tasks
            .iter()
            .zip(&self.task_latency_s)
            .map(|((w, _), t)| w * (mean_wait + t))
            .sum();
        for a in &mut self.route_arrivals {
            *a = 0.0;
        }
        for (w, reqs) in &self.tasks {
            let lambda = users * w / cycle * dt;
            let n = if lambda > 0.0 {
                Poisson::new(lambda)
                    .map(|d| d.sample(&mut self.rng))
                    .unwrap_or(0.0)
            } else {
                0.0
            };
            for &r in reqs {
                self.route_arrivals[r] += n;
            }
        }
        // Offered load (what every service would get if no caller were a bottleneck).
        let mut offered = vec![0.0; self.svc.len()];
        for (r, a) in self.route_arrivals.iter().enumerate() {
            if *a == 0.0 {
                continue;
            }
            for &(s, m) in &self.routes[r].visits {
                offered[s] += a * m;
            }
        }
        for (t, a) in self.route_tick.iter_mut().zip(&self.route_arrivals) {
            *t += a;
        }

        // Services.
        let timeout = self.cfg.request_timeout_s;
        let idle = self.cfg.idle_cpu_m / 1000.0;
        let st = &self.cfg.stateful;
        for &s in &self.order {
            // Arrivals: what the callers got through this step, along each route's call tree.
            let mut a = 0.0;
            let mut wr = 0.0;
            for &(r, n) in &self.svc_nodes[s] {
                let node = &self.routes[r].nodes[n];
                let anc = node.parent.map_or(1.0, |p| self.through[r][p]);
                let x = self.route_arrivals[r] * node.mult * anc;
                a += x;
                if node.write {
                    wr += x;
                }
            }
            let sv = &mut self.svc[s];
            let mut cap = 0.0;
            let mut cap_speed = 0.0;
            for (i, p) in sv.pods.iter().enumerate() {
                if serving(p, now, sv.stateful && i > 0) {
                    let speed =
                        self.cfg.cluster.node_types[self.nodes[p.node.unwrap_or(0)].ty].speed;
                    cap += p.cpu_lim * speed / sv.cost_s;
                    cap_speed += p.cpu_lim * speed * speed / sv.cost_s;
                }
            }
            let acc = &mut sv.acc;
            acc.arrivals += a;
            acc.demand_cpu += offered[s] * sv.cost_s;
            acc.writes += wr;
            let served;
            if cap <= 0.0 {
                acc.dropped += a + sv.backlog;
                sv.backlog = 0.0;
                served = 0.0;
            } else {
                served = (sv.backlog + a).min(cap * dt);
                sv.backlog += a - served;
                let max_backlog = cap * timeout;
                if sv.backlog > max_backlog {
                    acc.dropped += sv.backlog - max_backlog;
                    sv.backlog = max_backlog;
                }
            }
            acc.served += served;
            // Requests served this step make their downstream calls now; queued ones later.
            let pass = if a > 1e-12 {
                (served / a).min(10.0)
            } else {
                1.0
            };
            for &(r, n) in &self.svc_nodes[s] {
                let node = &self.routes[r].nodes[n];
                let anc = node.parent.map_or(1.0, |p| self.through[r][p]);
                self.through[r][n] = anc * pass;
            }
            acc.backlog_int += sv.backlog * dt;
            acc.capacity_int += cap * dt;
            acc.speed_int += cap_speed * dt;
            let util = if cap > 0.0 { served / (cap * dt) } else { 0.0 };
            let reads = if sv.stateful { a - wr } else { 0.0 };
            acc.reads += reads;
            let mut hits = 0.0;
            for (i, p) in sv.pods.iter_mut().enumerate() {
                let Some(node) = p.node else { continue };
                acc.alloc_cpu_int += p.cpu_req * dt;
                acc.alloc_mem_int += p.mem_req * dt;
                let speed = self.cfg.cluster.node_types[self.nodes[node].ty].speed;
                let is_replica = sv.stateful && i > 0;
                let mut used = idle * dt;
                if serving(p, now, is_replica) {
                    used += util * p.cpu_lim * dt;
                    let share = if cap > 0.0 {
                        p.cpu_lim * speed / sv.cost_s / cap
                    } else {
                        0.0
                    };
                    if sv.stateful {
                        let stale = if is_replica {
                            (replica_lag(p, now, wr / dt) / st.stale_horizon_s).min(1.0)
                        } else {
                            0.0
                        };
                        hits += reads * share * (1.0 - stale);
                    }
                }
                if is_replica && p.ready(now) {
                    // Applying the replication stream with the CPU the pod has left.
                    let mu = p.cpu_lim * speed / sv.cost_s;
                    let apply = mu / st.apply_cost_fraction * (1.0 - util).max(0.05) * dt;
                    let transferred = matches!(p.sync_done_s, Some(d) if d <= now);
                    if transferred {
                        let before = p.repl_backlog;
                        p.repl_backlog = (p.repl_backlog + wr - apply).max(0.0);
                        let applied = before + wr - p.repl_backlog;
                        used += applied * sv.cost_s * st.apply_cost_fraction / speed;
                    } else {
                        // During the transfer, writes pile up for the replica to apply later.
                        p.repl_backlog += wr;
                    }
                }
                let used = used.min(p.cpu_lim * dt);
                p.cpu_acc += used;
                acc.used_cpu += used;
                self.nodes[node].used_cpu_acc += used;
            }
            acc.hits += hits * st.base_hit_ratio;
        }
    }

    /// Each service's own latency this tick (mean, variance, percentiles, error share): its queue
    /// on the quota-bound capacity, its backlog, CFS throttling.
    fn own_latencies(&self) -> Vec<Own> {
        let now = self.now;
        let w = self.cfg.observe_every_s;
        let hop = self.cfg.hop_latency_ms / 1000.0;
        let timeout = self.cfg.request_timeout_s;
        let mut own = vec![Own::default(); self.svc.len()];
        for (s, sv) in self.svc.iter().enumerate() {
            let servers = sv
                .pods
                .iter()
                .enumerate()
                .filter(|(i, p)| serving(p, now, sv.stateful && *i > 0))
                .count() as u32;
            let cap = sv.acc.capacity_int / w;
            let lambda = sv.acc.arrivals / w;
            let o = &mut own[s];
            o.err = if sv.acc.arrivals > 0.0 {
                (sv.acc.dropped / sv.acc.arrivals).min(1.0)
            } else if servers == 0 {
                1.0
            } else {
                0.0
            };
            if servers == 0 || cap <= 0.0 {
                o.mean = timeout;
                o.var = 0.0;
                o.p = [timeout; 3];
                continue;
            }
            // Queueing from the quota-bound capacity; the request itself runs unthrottled on
            // the mean node speed of the serving pods (CFS only delays it once the quota of the
            // period is spent, which is what the wait term stands for).
            let mu = cap / servers as f64;
            let nu = (sv.acc.speed_int / sv.acc.capacity_int.max(1e-12)) / sv.cost_s;
            let q = Mmc::new(servers, lambda.min(0.98 * cap), mu);
            let backlog_delay = (sv.acc.backlog_int / w) / cap;
            // CFS throttling: in a period T a pod may use quota Q = limit·T of CPU. Its demand in
            // a period is compound Poisson (mean m, variance v, exponential request costs); a
            // request caught in a period whose demand exceeds Q waits out the rest of it,
            // uniform on (0, T − Q). P(throttled) from a normal tail on the demand.
            let t_cfs = self.cfg.cfs_period_s;
            let lim = sv.cpu_lim;
            let quota = lim * t_cfs;
            let per_pod = lambda.min(0.98 * cap) / servers as f64 * t_cfs;
            let c_eff = 1.0 / nu; // CPU seconds per request on these nodes
            let m = per_pod * c_eff;
            let v = 2.0 * per_pod * c_eff * c_eff;
            let (thr_mean, thr_var) = if quota < t_cfs && v > 0.0 {
                let p_thr = 1.0 - std_normal_cdf((quota - m) / v.sqrt());
                let gap = t_cfs - quota;
                let mean = p_thr * gap / 2.0;
                (mean, (p_thr * gap * gap / 3.0 - mean * mean).max(0.0))
            } else {
                (0.0, 0.0)
            };
            let shift = hop + backlog_delay + thr_mean;
            o.mean = (shift + q.mean_wait() + 1.0 / nu).min(timeout);
            o.var = q.var_wait() + 1.0 / (nu * nu) + thr_var;
            if sv.leaf {
                o.p = [
                    (shift + q.quantile_with_service(0.50, nu)).min(timeout),
                    (shift + q.quantile_with_service(0.95, nu)).min(timeout),
                    (shift + q.quantile_with_service(0.99, nu)).min(timeout),
                ];
            }
        }
        own
    }

    /// Composes the own latencies along every route's call tree and mixes them per service and
    /// per edge, weighted by this tick's arrivals; also each task's latency.
    fn compose(&mut self, own: &[Own]) -> Composed {
        let w = self.cfg.observe_every_s;
        let ns = self.svc.len();
        let mut m0 = vec![0.0; ns];
        let mut m1 = vec![0.0; ns];
        let mut m2 = vec![0.0; ns];
        let mut ok = vec![0.0; ns];
        let ne = self.edges.len();
        let mut e0 = vec![0.0; ne];
        let mut e1 = vec![0.0; ne];
        let mut e2 = vec![0.0; ne];
        let mut eok = vec![0.0; ne];
        let slo_s = self.slo.latency_ms / 1000.0;
        let mut over_slo = 0.0;
        let mut route_mean = vec![0.0; self.routes.len()];
        let mut route_truth = Vec::with_capacity(self.routes.len());
        for (r, route) in self.routes.iter().enumerate() {
            let arrivals = self.route_tick[r];
            let n = route.nodes.len();
            let mut mean = vec![0.0f64; n];
            let mut var = vec![0.0; n];
            let mut succ = vec![0.0f64; n];
            for i in (0..n).rev() {
                let node = &route.nodes[i];
                let o = own[node.service];
                let mut mn = o.mean;
                let mut vr = o.var;
                let mut sc = 1.0 - o.err;
                for &c in &node.children {
                    let ch = &route.nodes[c];
                    let cm = match ch.timeout_s {
                        Some(t) => mean[c].min(t),
                        None => mean[c],
                    };
                    mn += ch.count * cm;
                    vr += ch.count * var[c];
                    if !ch.optional {
                        sc *= succ[c].powf(ch.count);
                    }
                }
                mean[i] = mn;
                var[i] = vr;
                succ[i] = sc;
            }
            route_mean[r] = mean[0];
            route_truth.push(RouteTruth {
                name: self.topo.routes[r].name.clone(),
                rps: arrivals / w,
                mean_ms: mean[0] * 1000.0,
                p95_ms: gamma_quantile(mean[0], var[0], Z95) * 1000.0,
                error_rate: 1.0 - succ[0],
            });
            if arrivals > 0.0 {
                for (i, node) in route.nodes.iter().enumerate() {
                    let wgt = arrivals * node.mult;
                    let s = node.service;
                    m0[s] += wgt;
                    m1[s] += wgt * mean[i];
                    m2[s] += wgt * (var[i] + mean[i] * mean[i]);
                    ok[s] += wgt * succ[i];
                    if let Some(e) = node.edge {
                        e0[e] += wgt;
                        e1[e] += wgt * mean[i];
                        e2[e] += wgt * (var[i] + mean[i] * mean[i]);
                        eok[e] += wgt * succ[i];
                    }
                }
                over_slo += arrivals * succ[0] * gamma_survival(mean[0], var[0], slo_s);
            }
        }
        for (k, (_, reqs)) in self.tasks.iter().enumerate() {
            self.task_latency_s[k] = reqs.iter().map(|&r| route_mean[r]).sum();
        }
        Composed {
            m0,
            m1,
            m2,
            ok,
            e0,
            e1,
            e2,
            eok,
            over_slo,
            route_truth,
        }
    }

    fn observe(&mut self) -> (ClusterObservation, TickTruth) {
        let now = self.now;
        let w = self.cfg.observe_every_s;
        let own = self.own_latencies();
        let c = self.compose(&own);
        let ns = self.svc.len();

        let entry = self.topo.entry;
        let (entry_mean, entry_p) = percentiles(c.m0[entry], c.m1[entry], c.m2[entry]);
        let entry_err = if c.m0[entry] > 0.0 {
            1.0 - c.ok[entry] / c.m0[entry]
        } else {
            0.0
        };
        let violated = entry_p[1] * 1000.0 > self.slo.latency_ms || entry_err > self.slo.error_rate;
        self.slo_history.push_back(violated);
        while self.slo_history.len() > self.slo.window_ticks.max(1) {
            self.slo_history.pop_front();
        }

        let mut o = Observed::default();
        for s in 0..ns {
            self.observe_service(s, &c, &own, &mut o);
        }
        let (edge_truth, edges) = self.observe_edges(&c, &own);
        let (nodes, used_total, alloc_total) = self.observe_nodes();
        let entry_requests = self.svc[entry].acc.arrivals;
        let truth = TickTruth {
            time_s: now,
            window_s: w,
            offered_rps: self.shape.rps(now, self.duration_s, &self.cfg.load),
            entry_requests,
            entry_errors: entry_requests * entry_err,
            requests_over_slo: c.over_slo,
            entry_p95_ms: entry_p[1] * 1000.0,
            entry_mean_ms: entry_mean * 1000.0,
            slo_violated: violated,
            services: o.truths,
            routes: c.route_truth,
            edges: edge_truth,
            pods: o.pod_truth,
        };
        let obs = ClusterObservation {
            time_s: now,
            window_s: w,
            services: o.services,
            edges,
            nodes,
            pods: o.pods,
            stateful: o.stateful,
            global: GlobalObs {
                cluster_cpu_utilization: if alloc_total > 0.0 {
                    used_total / alloc_total
                } else {
                    0.0
                },
                slo_violation_rate: self.slo_history.iter().filter(|v| **v).count() as f64
                    / self.slo_history.len().max(1) as f64,
                entry_p95_ms: entry_p[1] * 1000.0,
                entry_error_rate: entry_err.clamp(0.0, 1.0),
                entry_rps: entry_requests / w,
            },
        };
        self.reset_tick();
        (obs, truth)
    }

    /// One service's observation and truth for the tick, with its pods' (and, stateful, its
    /// replication's), added to `o`.
    fn observe_service(&self, s: usize, c: &Composed, own: &[Own], o: &mut Observed) {
        let (now, w) = (self.now, self.cfg.observe_every_s);
        let mw = self.cfg.metrics_window_s;
        let sv = &self.svc[s];
        let (_, mixed) = percentiles(c.m0[s], c.m1[s], c.m2[s]);
        let p = if sv.leaf { own[s].p } else { mixed };
        let err = if c.m0[s] > 0.0 {
            1.0 - c.ok[s] / c.m0[s]
        } else {
            own[s].err
        };
        let ready = sv.pods.iter().filter(|p| p.ready(now)).count() as u32;
        let bound = sv.pods.iter().filter(|p| p.node.is_some()).count() as u32;
        let in_flight = (sv.acc.arrivals / w) * (c.m1[s] / c.m0[s].max(1e-12));
        let mut ws = 0.0;
        let mut max_lag: f64 = 0.0;
        let mut sum_lag = 0.0;
        let write_rate = sv.acc.writes / w;
        for (i, p) in sv.pods.iter().enumerate() {
            let is_replica = sv.stateful && i > 0;
            let working = if p.node.is_some() {
                (self.cfg.mem_base_fraction * p.mem_req
                    + self.cfg.mem_per_inflight_mib * MIB * in_flight / ready.max(1) as f64)
                    .min(sv.mem_lim)
            } else {
                0.0
            };
            ws += working;
            let lag = (is_replica && p.node.is_some()).then(|| replica_lag(p, now, write_rate));
            if let Some(lag) = lag {
                max_lag = max_lag.max(lag);
                sum_lag += lag;
            }
            if p.node.is_some() {
                o.pod_truth.push(PodTruth {
                    name: p.name.clone(),
                    service: s,
                    cpu_cores: p.cpu_acc / w,
                    working_set_bytes: working,
                    replica_lag_s: lag,
                });
            }
            // metrics-server serves the sample of its previous scrape: the HPA sees
            // usage one window old, and nothing for a pod younger than two windows.
            let sample = p.sample;
            o.pods.push(PodObs {
                name: p.name.clone(),
                service: sv.name.clone(),
                node: p.node.map(|n| self.nodes[n].name.clone()),
                phase: if p.node.is_some() {
                    PodPhase::Running
                } else {
                    PodPhase::Pending
                },
                ready: p.ready(now),
                start_time_s: p.start_s,
                ready_transition_s: p.ready_s.filter(|r| *r <= now + 1e-9),
                cpu_request_cores: p.cpu_req,
                cpu_limit_cores: Some(p.cpu_lim),
                cpu_usage_cores: sample.map(|s| s.0),
                metric_time_s: sample.map(|s| s.1),
                metric_window_s: mw,
            });
        }
        let replicas = sv.pods.iter().skip(1).filter(|p| p.node.is_some()).count() as u32;
        if sv.stateful {
            o.stateful.push(StatefulObs {
                service: sv.name.clone(),
                connected_replicas: sv
                    .pods
                    .iter()
                    .skip(1)
                    .filter(|p| matches!(p.sync_done_s, Some(d) if d <= now))
                    .count() as u32,
                max_replica_lag_s: max_lag,
                mean_replica_lag_s: if replicas > 0 {
                    sum_lag / replicas as f64
                } else {
                    0.0
                },
                hit_ratio: if sv.acc.reads > 0.0 {
                    sv.acc.hits / sv.acc.reads
                } else {
                    self.cfg.stateful.base_hit_ratio
                },
            });
        }
        let in_force = in_force(sv);
        o.services.push(ServiceObs {
            name: sv.name.clone(),
            replicas_spec: sv.spec_replicas,
            replicas_ready: ready,
            replicas_unready: sv.pods.len() as u32 - ready,
            cpu_request_cores: in_force.0,
            cpu_limit_cores: in_force.1,
            mem_request_bytes: sv.mem_req,
            mem_limit_bytes: sv.mem_lim,
            cpu_usage_cores: sv.acc.used_cpu / w,
            mem_working_set_bytes: ws,
            rps: sv.acc.arrivals / w,
            p50_ms: p[0] * 1000.0,
            p95_ms: p[1] * 1000.0,
            p99_ms: p[2] * 1000.0,
            error_rate: err.clamp(0.0, 1.0),
            stateful: sv.stateful,
            missing: vec![],
        });
        o.truths.push(ServiceTruth {
            replicas_spec: sv.spec_replicas,
            pods_ready: ready,
            pods_bound: bound,
            pods_unschedulable: sv.pods.len() as u32 - bound,
            cpu_request_cores: sv.cpu_req,
            allocated_cpu_cores: sv.acc.alloc_cpu_int / w,
            allocated_mem_bytes: sv.acc.alloc_mem_int / w,
            used_cpu_cores: sv.acc.used_cpu / w,
            demand_cpu_cores: sv.acc.demand_cpu / w,
            max_replica_lag_s: max_lag,
        });
    }

    /// The tick's call edges: the truth (moments of each edge's latency, the entry's included)
    /// and what Istio reports (rates, p95, error rates of the edges that carried requests).
    fn observe_edges(&self, c: &Composed, own: &[Own]) -> (Vec<EdgeTruth>, Vec<CallEdgeObs>) {
        let (entry, w) = (self.topo.entry, self.cfg.observe_every_s);
        let moments = |n: f64, s1: f64, s2: f64| {
            let mean = s1 / n;
            (mean, (s2 / n - mean * mean).max(0.0))
        };
        let mut edge_truth = Vec::with_capacity(self.edges.len() + 1);
        if c.m0[entry] > 0.0 {
            let (mean_s, var_s2) = moments(c.m0[entry], c.m1[entry], c.m2[entry]);
            edge_truth.push(EdgeTruth {
                source: None,
                destination: entry,
                requests: c.m0[entry],
                errors: c.m0[entry] - c.ok[entry],
                mean_s,
                var_s2,
            });
        }
        for (e, &(from, to)) in self.edges.iter().enumerate() {
            if c.e0[e] > 0.0 {
                let (mean_s, var_s2) = moments(c.e0[e], c.e1[e], c.e2[e]);
                edge_truth.push(EdgeTruth {
                    source: Some(from),
                    destination: to,
                    requests: c.e0[e],
                    errors: c.e0[e] - c.eok[e],
                    mean_s,
                    var_s2,
                });
            }
        }
        let edges = self
            .edges
            .iter()
            .enumerate()
            .filter(|(e, _)| c.e0[*e] > 0.0)
            .map(|(e, &(from, to))| {
                let (_, p) = percentiles(c.e0[e], c.e1[e], c.e2[e]);
                let p95 = if self.svc[to].leaf {
                    own[to].p[1]
                } else {
                    p[1]
                };
                CallEdgeObs {
                    source: self.svc[from].name.clone(),
                    destination: self.svc[to].name.clone(),
                    rps: c.e0[e] / w,
                    p95_ms: p95 * 1000.0,
                    error_rate: (1.0 - c.eok[e] / c.e0[e]).clamp(0.0, 1.0),
                }
            })
            .collect();
        (edge_truth, edges)
    }

    /// The nodes' observations, with the cluster's used and allocatable CPU (cores).
    fn observe_nodes(&self) -> (Vec<NodeObs>, f64, f64) {
        let w = self.cfg.observe_every_s;
        let mut used_total = 0.0;
        let mut alloc_total = 0.0;
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let nt = &self.cfg.cluster.node_types[n.ty];
                used_total += n.used_cpu_acc / w;
                alloc_total += nt.allocatable_cpu_m / 1000.0;
                NodeObs {
                    name: n.name.clone(),
                    node_type: nt.name.clone(),
                    cpu_model: nt.cpu_model.clone(),
                    cpu_model_id: n.ty as u32,
                    allocatable_cpu_cores: nt.allocatable_cpu_m / 1000.0,
                    allocatable_mem_bytes: nt.allocatable_mem_mi * MIB,
                    requested_cpu_cores: n.req_cpu,
                    requested_mem_bytes: n.req_mem,
                    cpu_usage_cores: n.used_cpu_acc / w,
                }
            })
            .collect();
        (nodes, used_total, alloc_total)
    }

    /// Resets the tick's accumulators; a pod running for a whole metrics window keeps its CPU
    /// sample for metrics-server's next answer.
    fn reset_tick(&mut self) {
        let (now, w) = (self.now, self.cfg.observe_every_s);
        for sv in &mut self.svc {
            sv.acc = Acc::default();
            for p in &mut sv.pods {
                let full =
                    matches!(p.start_s, Some(st) if now - st >= self.cfg.metrics_window_s - 1e-9);
                p.sample = full.then_some((p.cpu_acc / w, now));
                p.cpu_acc = 0.0;
            }
        }
        for n in &mut self.nodes {
            n.used_cpu_acc = 0.0;
        }
        for t in &mut self.route_tick {
            *t = 0.0;
        }
    }

    /// Applies an action in full, or refuses it with a reason and changes nothing; a CPU change
    /// goes in place where the cluster resizes pods in place, else through the pod template.
    pub fn apply(&mut self, action: &Action) -> ActionOutcome {
        self.apply_with(action, CpuResize::Auto)
    }

    /// [`Twin::apply`], with a CPU change taking the path `cpu` names, as the actuator with
    /// that `cpu_resize` setting does: [`CpuResize::InPlace`] resizes every pod at once (pods
    /// started later get the new size, as the actuator resizes them); [`CpuResize::Restart`]
    /// changes the pod template, and a rolling update replaces every pod.
    pub fn apply_with(&mut self, action: &Action, cpu: CpuResize) -> ActionOutcome {
        match self.try_apply(action, cpu) {
            Ok(()) => ActionOutcome::Applied,
            Err(reason) => ActionOutcome::refused(graphscaler_schemas::Refusal::Cluster, reason),
        }
    }

    /// The path a CPU change asked to take `want` takes on this cluster.
    pub fn cpu_path(&self, want: CpuResize) -> std::result::Result<CpuResize, String> {
        match (want, self.cfg.cluster.in_place_resize) {
            (CpuResize::Auto, true) | (CpuResize::InPlace, true) => Ok(CpuResize::InPlace),
            (CpuResize::Auto, false) | (CpuResize::Restart, _) => Ok(CpuResize::Restart),
            (CpuResize::InPlace, false) => Err(
                "in-place resize is not available on this cluster (twin.cluster.in_place_resize = false)".into(),
            ),
        }
    }

    fn try_apply(&mut self, action: &Action, cpu: CpuResize) -> std::result::Result<(), String> {
        let s = self
            .svc
            .iter()
            .position(|x| x.name == action.service)
            .ok_or_else(|| format!("unknown service `{}`", action.service))?;
        match &action.kind {
            ActionKind::SetReplicas { replicas } => self.set_replicas(s, *replicas as i64),
            ActionKind::ChangeReplicas { delta } => {
                let target = self.svc[s].spec_replicas as i64 + *delta as i64;
                self.set_replicas(s, target)
            }
            ActionKind::SetCpuLimit { millicores } => {
                self.set_cpu_limit(s, *millicores as f64, cpu)
            }
            ActionKind::ChangeCpuQuota { delta } => {
                if !delta.is_finite() || delta.abs() > 1.0 {
                    return Err(format!("cpu quota delta {delta} is outside [-1, 1]"));
                }
                let m = (self.svc[s].cpu_lim * 1000.0 * 2f64.powf(*delta)).round();
                self.set_cpu_limit(s, m, cpu)
            }
            ActionKind::PreferNodeType { node_type } => {
                let ty = match node_type {
                    None => None,
                    Some(n) => Some(
                        self.cfg
                            .cluster
                            .node_types
                            .iter()
                            .position(|t| &t.name == n)
                            .ok_or_else(|| format!("unknown node type `{n}`"))?,
                    ),
                };
                self.svc[s].prefer = ty;
                Ok(())
            }
        }
    }

    fn set_replicas(&mut self, s: usize, target: i64) -> std::result::Result<(), String> {
        let lim = &self.cfg.limits;
        if target < lim.min_replicas as i64 || target > lim.max_replicas as i64 {
            return Err(format!(
                "{} replicas of {} is outside [{}, {}]",
                target, self.svc[s].name, lim.min_replicas, lim.max_replicas
            ));
        }
        let target = target as u32;
        let now = self.now;
        let current = self.svc[s].pods.len() as u32;
        self.svc[s].spec_replicas = target;
        if target > current {
            for _ in current..target {
                self.add_pod(s);
            }
            self.schedule();
        } else {
            for _ in target..current {
                // ReplicaSet ranking: an older template's pods first (during a rolling update),
                // then unscheduled, then not ready, then the newest; a stateful store keeps its
                // primary (the oldest pod).
                let sv = &self.svc[s];
                let first = usize::from(sv.stateful);
                let victim = (first..sv.pods.len())
                    .max_by_key(|&i| {
                        let p = &sv.pods[i];
                        (p.rev != sv.rev, p.node.is_none(), !p.ready(now), i)
                    })
                    .expect("more pods than the target");
                self.remove_pod(s, victim);
            }
        }
        Ok(())
    }

    fn set_cpu_limit(
        &mut self,
        s: usize,
        millicores: f64,
        cpu: CpuResize,
    ) -> std::result::Result<(), String> {
        let path = self.cpu_path(cpu)?;
        let lim = &self.cfg.limits;
        if !(millicores >= lim.min_cpu_limit_m && millicores <= lim.max_cpu_limit_m) {
            return Err(format!(
                "cpu limit {millicores} m for {} is outside [{}, {}] m",
                self.svc[s].name, lim.min_cpu_limit_m, lim.max_cpu_limit_m
            ));
        }
        let new_lim = millicores / 1000.0;
        let sv = &self.svc[s];
        let new_req = sv.cpu_req * new_lim / sv.cpu_lim;
        if path == CpuResize::Restart {
            return self.set_template_cpu(s, new_req, new_lim);
        }
        // In-place resize: every bound pod's node must have room for the larger request.
        let mut extra = vec![0.0; self.nodes.len()];
        for p in &sv.pods {
            if let Some(n) = p.node {
                extra[n] += new_req - p.cpu_req;
            }
        }
        for (n, e) in extra.iter().enumerate() {
            let alloc = self.cfg.cluster.node_types[self.nodes[n].ty].allocatable_cpu_m / 1000.0;
            if *e > 0.0 && self.nodes[n].req_cpu + e > alloc + 1e-9 {
                return Err(format!(
                    "resize of {} to {millicores} m is infeasible: node {} lacks {:.0} m of CPU",
                    sv.name,
                    self.nodes[n].name,
                    (self.nodes[n].req_cpu + e - alloc) * 1000.0
                ));
            }
        }
        for (n, e) in extra.iter().enumerate() {
            self.nodes[n].req_cpu += e;
        }
        let sv = &mut self.svc[s];
        sv.cpu_lim = new_lim;
        sv.cpu_req = new_req;
        for p in &mut sv.pods {
            p.cpu_lim = new_lim;
            p.cpu_req = new_req;
        }
        Ok(())
    }
}

/// The CPU request and limit in force for a service, cores: its template's, unless its pods
/// differ (resized in place, or a rolling update under way), then their mean.
fn in_force(sv: &Svc) -> (f64, f64) {
    if sv.pods.is_empty()
        || sv
            .pods
            .iter()
            .all(|p| p.cpu_req == sv.cpu_req && p.cpu_lim == sv.cpu_lim)
    {
        return (sv.cpu_req, sv.cpu_lim);
    }
    let n = sv.pods.len() as f64;
    (
        sv.pods.iter().map(|p| p.cpu_req).sum::<f64>() / n,
        sv.pods.iter().map(|p| p.cpu_lim).sum::<f64>() / n,
    )
}

impl Twin {
    /// Changes the pod template's CPU request and limit (cores) of service `s`: a new revision,
    /// which a rolling update rolls out.
    fn set_template_cpu(
        &mut self,
        s: usize,
        request: f64,
        limit: f64,
    ) -> std::result::Result<(), String> {
        let sv = &mut self.svc[s];
        if !(request.is_finite() && limit.is_finite() && request > 0.0 && request <= limit) {
            return Err(format!(
                "{}: the CPU request {:.0} m must be positive and at most the limit {:.0} m",
                sv.name,
                request * 1000.0,
                limit * 1000.0
            ));
        }
        if request == sv.cpu_req && limit == sv.cpu_lim {
            return Ok(());
        }
        sv.cpu_req = request;
        sv.cpu_lim = limit;
        sv.rev += 1;
        sv.rolling = true;
        Ok(())
    }

    /// A patch of `service`'s pod template setting its CPU request and limit, millicores (the
    /// one left out keeps its value): the API server validates it (request at most limit, the
    /// twin's limit bounds) and the Deployment controller rolls it out, replacing every pod.
    pub fn patch_template_cpu(
        &mut self,
        service: &str,
        request_m: Option<f64>,
        limit_m: Option<f64>,
    ) -> std::result::Result<(), String> {
        let s = self
            .svc
            .iter()
            .position(|x| x.name == service)
            .ok_or_else(|| format!("unknown service `{service}`"))?;
        let lim = &self.cfg.limits;
        if let Some(m) = limit_m {
            if !(m >= lim.min_cpu_limit_m && m <= lim.max_cpu_limit_m) {
                return Err(format!(
                    "cpu limit {m} m for {service} is outside [{}, {}] m",
                    lim.min_cpu_limit_m, lim.max_cpu_limit_m
                ));
            }
        }
        let sv = &self.svc[s];
        let request = request_m.map_or(sv.cpu_req, |m| m / 1000.0);
        let limit = limit_m.map_or(sv.cpu_lim, |m| m / 1000.0);
        self.set_template_cpu(s, request, limit)
    }

    /// In-place resize of one pod (the `pods/{name}/resize` subresource) to a CPU request and
    /// limit, millicores (the one left out keeps its value). The template is not changed: pods
    /// the ReplicaSet starts later have the template's size. Refused when the cluster has no
    /// in-place resize, the pod does not exist, the request exceeds the limit, or the pod's
    /// node lacks room for a larger request (the kubelet's `Infeasible`).
    pub fn resize_pod(
        &mut self,
        pod: &str,
        request_m: Option<f64>,
        limit_m: Option<f64>,
    ) -> std::result::Result<(), ResizeError> {
        if !self.cfg.cluster.in_place_resize {
            return Err(ResizeError::Unsupported);
        }
        let Some((s, i)) = self
            .svc
            .iter()
            .enumerate()
            .find_map(|(s, sv)| sv.pods.iter().position(|p| p.name == pod).map(|i| (s, i)))
        else {
            return Err(ResizeError::NotFound(pod.into()));
        };
        let p = &self.svc[s].pods[i];
        let request = request_m.map_or(p.cpu_req, |m| m / 1000.0);
        let limit = limit_m.map_or(p.cpu_lim, |m| m / 1000.0);
        if !(request.is_finite() && limit.is_finite() && request > 0.0 && request <= limit) {
            return Err(ResizeError::Invalid(format!(
                "pod {pod}: the CPU request {:.0} m must be positive and at most the limit {:.0} m",
                request * 1000.0,
                limit * 1000.0
            )));
        }
        let extra = request - p.cpu_req;
        if let Some(n) = p.node {
            let alloc = self.cfg.cluster.node_types[self.nodes[n].ty].allocatable_cpu_m / 1000.0;
            if extra > 0.0 && self.nodes[n].req_cpu + extra > alloc + 1e-9 {
                return Err(ResizeError::Infeasible(format!(
                    "resize of pod {pod} to {:.0} m is infeasible: node {} lacks {:.0} m of CPU",
                    request * 1000.0,
                    self.nodes[n].name,
                    (self.nodes[n].req_cpu + extra - alloc) * 1000.0
                )));
            }
            self.nodes[n].req_cpu += extra;
        }
        let p = &mut self.svc[s].pods[i];
        p.cpu_req = request;
        p.cpu_lim = limit;
        Ok(())
    }

    /// The pod template of `service`: its CPU request and limit (cores) and revision (each
    /// template change, a rolling update, adds one).
    pub fn template_of(&self, service: &str) -> Option<(f64, f64, u32)> {
        let s = self.svc.iter().find(|s| s.name == service)?;
        Some((s.cpu_req, s.cpu_lim, s.rev))
    }
}

/// Why an in-place pod resize was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResizeError {
    /// The cluster has no `pods/{name}/resize` subresource (before Kubernetes 1.33).
    #[error("the server could not find the requested resource (no pods/resize subresource)")]
    Unsupported,
    /// No such pod.
    #[error("pods \"{0}\" not found")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The node lacks room for it.
    #[error("{0}")]
    Infeasible(String),
}

fn serving(p: &Pod, now: f64, is_replica: bool) -> bool {
    p.ready(now) && (!is_replica || matches!(p.sync_done_s, Some(d) if d <= now + 1e-9))
}

/// A replica's lag, s: while it syncs, the time since the sync began; afterwards its
/// replication backlog over the write rate.
/// The mean and the p50, p95 and p99 (gamma quantiles) of a latency from its moments: `m0`
/// requests, sums `m1` of latency and `m2` of its square; zeros for no request.
fn percentiles(m0: f64, m1: f64, m2: f64) -> (f64, [f64; 3]) {
    if m0 <= 0.0 {
        return (0.0, [0.0; 3]);
    }
    let mean = m1 / m0;
    let var = (m2 / m0 - mean * mean).max(0.0);
    (
        mean,
        [
            gamma_quantile(mean, var, Z50),
            gamma_quantile(mean, var, Z95),
            gamma_quantile(mean, var, Z99),
        ],
    )
}

fn replica_lag(p: &Pod, now: f64, write_rate: f64) -> f64 {
    match (p.ready_s, p.sync_done_s) {
        // During the initial transfer: the writes since the snapshot, which it will replay.
        (Some(r), Some(d)) if now < d => (now - r).max(0.0),
        (Some(_), Some(_)) if write_rate > 1e-9 => p.repl_backlog / write_rate,
        _ => 0.0,
    }
}

/// Kahn's algorithm over the call edges; services on a cycle (which the topology's call trees
/// cannot have) go last in index order.
fn topological_order(n: usize, edges: &[crate::topology::EdgeSpec]) -> Vec<usize> {
    let mut indeg = vec![0usize; n];
    for e in edges {
        indeg[e.to] += 1;
    }
    let mut ready: std::collections::VecDeque<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    while let Some(i) = ready.pop_front() {
        out.push(i);
        seen[i] = true;
        for e in edges.iter().filter(|e| e.from == i) {
            indeg[e.to] -= 1;
            if indeg[e.to] == 0 {
                ready.push_back(e.to);
            }
        }
    }
    out.extend((0..n).filter(|&i| !seen[i]));
    out
}

fn flatten(
    topo: &Topology,
    edge_index: &HashMap<(usize, usize), usize>,
    call: &CallNode,
    parent: usize,
    out: &mut Vec<FlatNode>,
) {
    let from = out[parent].service;
    let spec = topo.edge(from, call.service);
    let me = out.len();
    out.push(FlatNode {
        service: call.service,
        parent: Some(parent),
        write: call.write,
        count: call.count,
        mult: out[parent].mult * call.count,
        optional: spec.is_some_and(|e| e.optional),
        timeout_s: spec.and_then(|e| e.client_timeout_s),
        edge: edge_index.get(&(from, call.service)).copied(),
        children: vec![],
    });
    out[parent].children.push(me);
    for c in &call.children {
        flatten(topo, edge_index, c, me, out);
    }
}
