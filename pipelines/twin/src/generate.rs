//! Generated applications: microservice graphs shaped like production call graphs, in the
//! topology file format, with a cluster sized to them (`graphscaler twin synth-topology`).
//!
//! What the generator follows, from public studies of Alibaba's production traces:
//!
//! * call graphs grow like trees, and their sizes and a service's dependencies are heavy-tailed
//!   (Luo et al., "Characterizing Microservice Dependency and Performance: Alibaba Trace
//!   Analysis", SoCC 2021): each service is attached under one caller chosen with probability
//!   growing with the callers it already has (preferential attachment), so a few services fan out
//!   widely and most call few;
//! * a service is shared by several call graphs (Winchester et al., "Complexity at Scale: A
//!   Quantitative Analysis of an Alibaba Microservice Deployment", 2025, who count 13 % entry,
//!   39 % leaf and 48 % middle microservices): a fifth of the services get a second caller
//!   nearer the entry;
//! * call graphs are shallow: no route goes deeper than [`MAX_DEPTH`] hops below the entry (the
//!   twin adds the latencies of a route's calls, which run one after another, so a route of tens
//!   of sequential calls could not meet any latency objective);
//! * front-end functions are unequally popular: one route per service the entry calls, its
//!   share of the user tasks Zipf-distributed.
//!
//! Languages are mixed (Go, Java, Python, Node.js, C#) with per-request CPU costs in the ranges
//! Online Boutique's estimates use for each (docs/twin.md#per-service-parameters-and-per-request-cpu-costs);
//! about one leaf in eight is a Redis store.
//!
//! **The cluster is sized to the application**: the CPU each service needs at `peak_rps`
//! (its per-request cost times the calls a user request makes to it, averaged over the routes'
//! shares) is turned into replicas at half their CPU limit, at least the manifest's; the pods'
//! requests at that size, times 1.5 for scaling headroom, give the allocatable CPU (memory
//! likewise) the cluster needs. The node pools are the given ones (the configuration's
//! `twin.cluster.node_types` by default), their counts multiplied by the smallest factor that
//! reaches it, keeping their proportions. The topology carries them (`cluster.node_types`) and
//! the twin uses them instead of the configuration's.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::config::NodeTypeConfig;

/// The deepest a route goes below the entry.
pub const MAX_DEPTH: usize = 4;

/// Most callees of a service other than the entry.
const MAX_FANOUT: usize = 6;

/// Share of the services that get a second caller.
const SHARED: f64 = 0.2;

/// Headroom over the CPU and memory the pods request at the sized replicas.
const HEADROOM: f64 = 1.5;

/// A language of generated services.
struct Language {
    name: &'static str,
    /// Share of the services.
    share: f64,
    /// CPU cost per request, ms: uniform in this range.
    cost_ms: (f64, f64),
    /// Memory request and limit, MiB.
    mem_mi: (u32, u32),
}

const LANGUAGES: [Language; 5] = [
    Language {
        name: "Go",
        share: 0.35,
        cost_ms: (0.3, 1.0),
        mem_mi: (64, 128),
    },
    Language {
        name: "Java",
        share: 0.25,
        cost_ms: (0.5, 1.5),
        mem_mi: (256, 512),
    },
    Language {
        name: "Python",
        share: 0.15,
        cost_ms: (1.5, 4.0),
        mem_mi: (128, 256),
    },
    Language {
        name: "Node.js",
        share: 0.15,
        cost_ms: (0.5, 1.5),
        mem_mi: (64, 128),
    },
    Language {
        name: "C#",
        share: 0.10,
        cost_ms: (0.5, 1.5),
        mem_mi: (128, 256),
    },
];

/// What [`generate`] needs besides the size and the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Frontend requests per second the cluster is sized for (the configuration's highest load
    /// level by default).
    pub peak_rps: f64,
    /// Node pools whose counts are scaled (their proportions kept).
    pub pools: Vec<NodeTypeConfig>,
}

struct Svc {
    name: String,
    language: &'static str,
    cost_ms: f64,
    cpu_request_m: u32,
    mem: (u32, u32),
    store: bool,
    depth: usize,
    callees: Vec<usize>,
    replicas: u32,
}

fn pick_language(rng: &mut ChaCha8Rng) -> usize {
    let mut u: f64 = rng.random();
    for (i, l) in LANGUAGES.iter().enumerate() {
        if u < l.share {
            return i;
        }
        u -= l.share;
    }
    0
}

/// A generated application of `n` services (at least 3: the entry and two more) in the topology
/// file format, with its cluster (`cluster.node_types`) sized for `opts.peak_rps`.
pub fn generate(n: usize, seed: u64, opts: &GenerateOptions) -> Value {
    let n = n.max(3);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut svcs = vec![Svc {
        name: "frontend".into(),
        language: "Go",
        cost_ms: 1.5,
        cpu_request_m: 200,
        mem: (64, 128),
        store: false,
        depth: 0,
        callees: vec![],
        replicas: 1,
    }];
    let mut callers: Vec<Vec<usize>> = vec![vec![]];
    for i in 1..n {
        // The caller: preferential attachment among services that may still call one more.
        let open: Vec<usize> = (0..svcs.len())
            .filter(|&p| {
                !svcs[p].store
                    && svcs[p].depth < MAX_DEPTH
                    && (p == 0 || svcs[p].callees.len() < MAX_FANOUT)
            })
            .collect();
        let weights: Vec<f64> = open
            .iter()
            .map(|&p| 1.0 + svcs[p].callees.len() as f64)
            .collect();
        let mut u = rng.random::<f64>() * weights.iter().sum::<f64>();
        let mut parent = open[open.len() - 1];
        for (&p, w) in open.iter().zip(&weights) {
            if u < *w {
                parent = p;
                break;
            }
            u -= w;
        }
        let depth = svcs[parent].depth + 1;
        let store = depth >= 2 && rng.random::<f64>() < 0.125;
        let (name, language, cost_ms, cpu_request_m, mem) = if store {
            (format!("store-{i:03}"), "Redis", 0.1, 100, (128, 256))
        } else {
            let l = &LANGUAGES[pick_language(&mut rng)];
            let cost = rng.random_range(l.cost_ms.0..=l.cost_ms.1);
            let req = if rng.random::<f64>() < 0.25 { 200 } else { 100 };
            (format!("svc-{i:03}"), l.name, cost, req, l.mem_mi)
        };
        svcs.push(Svc {
            name,
            language,
            cost_ms: (cost_ms * 100.0_f64).round() / 100.0,
            cpu_request_m,
            mem,
            store,
            depth,
            callees: vec![],
            replicas: 1,
        });
        svcs[parent].callees.push(i);
        callers.push(vec![parent]);
    }
    // Shared services: a second caller nearer the entry (the graph stays acyclic).
    for i in 2..n {
        if rng.random::<f64>() >= SHARED {
            continue;
        }
        let d = svcs[i].depth;
        let cands: Vec<usize> = (1..n)
            .filter(|&q| {
                !svcs[q].store
                    && svcs[q].depth < d
                    && !callers[i].contains(&q)
                    && svcs[q].callees.len() < MAX_FANOUT
            })
            .collect();
        if cands.is_empty() {
            continue;
        }
        let q = cands[rng.random_range(0..cands.len())];
        svcs[q].callees.push(i);
        callers[i].push(q);
    }
    // One route per service the entry calls: the call tree below it, every callee once.
    fn call(svcs: &[Svc], i: usize, calls: &mut [f64]) -> String {
        calls[i] += 1.0;
        let s = &svcs[i];
        let op = if s.store { "GET" } else { "Handle" };
        if s.callees.is_empty() {
            return format!("{}.{op} x1", s.name);
        }
        let inner: Vec<String> = s.callees.iter().map(|&c| call(svcs, c, calls)).collect();
        format!("{}.{op} x1 (-> {})", s.name, inner.join(", "))
    }
    let mut fanout = serde_json::Map::new();
    let mut tasks = serde_json::Map::new();
    // Calls per user request to each service, weighted by the routes' shares.
    let mut per_request = vec![0.0; n];
    per_request[0] = 1.0;
    let roots = svcs[0].callees.clone();
    let zipf: Vec<f64> = (0..roots.len())
        .map(|k| 1.0 / (k as f64 + 1.0).powf(0.9))
        .collect();
    let total: f64 = zipf.iter().sum();
    for (k, &r) in roots.iter().enumerate() {
        let mut calls = vec![0.0; n];
        let route = format!("GET /api/{}", svcs[r].name);
        fanout.insert(route.clone(), json!([call(&svcs, r, &mut calls)]));
        let w = zipf[k] / total;
        for (acc, c) in per_request.iter_mut().zip(&calls) {
            *acc += w * c;
        }
        tasks.insert(
            format!("task-{}", svcs[r].name),
            json!({"weight": (w * 1e4).round() / 1e4, "requests": [route]}),
        );
    }
    // Replicas at half the CPU limit for peak_rps, then the cluster for them.
    let (mut cpu_m, mut mem_mi) = (0.0, 0.0);
    for (s, calls) in svcs.iter_mut().zip(&per_request) {
        let cores = opts.peak_rps * calls * s.cost_ms / 1000.0;
        let limit = 2.0 * f64::from(s.cpu_request_m) / 1000.0;
        s.replicas = ((cores / (0.5 * limit)).ceil() as u32).max(1);
        cpu_m += f64::from(s.replicas * s.cpu_request_m);
        mem_mi += f64::from(s.replicas * s.mem.0);
    }
    let (cpu_m, mem_mi) = (cpu_m * HEADROOM, mem_mi * HEADROOM);
    let pools = size_pools(&opts.pools, cpu_m, mem_mi);
    let mut services: Vec<Value> = svcs
        .iter()
        .map(|s| {
            let mut v = json!({
                "name": s.name, "language": s.language,
                "cpu_request_m": s.cpu_request_m, "cpu_limit_m": 2 * s.cpu_request_m,
                "mem_request_mi": s.mem.0, "mem_limit_mi": s.mem.1,
                "stateful": s.store, "container_port": if s.store { 6379 } else { 8080 },
                "replicas_in_manifest": if s.depth == 0 { 2 } else { 1 },
                "cpu_cost_ms": s.cost_ms,
            });
            if s.store {
                v["engine"] = json!("redis");
            }
            v
        })
        .collect();
    services.push(json!({
        "name": "loadgenerator", "language": "Python/Locust", "cpu_request_m": 300,
        "cpu_limit_m": 500, "mem_request_mi": 256, "mem_limit_mi": 512, "stateful": false,
        "container_port": null, "replicas_in_manifest": 1
    }));
    let mut calls = vec![
        json!({"from": "loadgenerator", "to": "frontend", "protocol": "http", "rpcs": "HTTP"}),
    ];
    for s in &svcs {
        for &c in &s.callees {
            let proto = if svcs[c].store { "redis" } else { "grpc" };
            calls.push(json!({"from": s.name, "to": svcs[c].name, "protocol": proto, "rpcs": if svcs[c].store { "GET" } else { "Handle" }}));
        }
    }
    json!({
        "provenance": {
            "generator": format!("graphscaler twin synth-topology --services {n} --seed {seed} (pipelines/twin/src/generate.rs)"),
            "sized_for_rps": opts.peak_rps,
            "sized_cpu_m": cpu_m.round(),
            "sized_mem_mi": mem_mi.round(),
        },
        "services": services,
        "calls": calls,
        "frontend_endpoint_fanout": fanout,
        "user_tasks": tasks,
        "cluster": {"node_types": pools},
    })
}

/// `pools` with their counts multiplied by the smallest factor (in steps of an eighth) whose
/// allocatable CPU and memory reach `cpu_m` and `mem_mi`; at least one node. Pools with no
/// allocatable CPU or memory at all (which the configuration refuses) come back as they are.
pub fn size_pools(pools: &[NodeTypeConfig], cpu_m: f64, mem_mi: f64) -> Vec<NodeTypeConfig> {
    let scaled = |f: f64| -> Vec<NodeTypeConfig> {
        pools
            .iter()
            .map(|p| NodeTypeConfig {
                count: (f64::from(p.count) * f).ceil() as u32,
                ..p.clone()
            })
            .collect()
    };
    let cap = |of: fn(&NodeTypeConfig) -> f64| -> f64 {
        pools.iter().map(|p| f64::from(p.count) * of(p)).sum()
    };
    let (cap_cpu, cap_mem) = (cap(|p| p.allocatable_cpu_m), cap(|p| p.allocatable_mem_mi));
    if !(cap_cpu > 0.0 && cap_mem > 0.0) {
        return pools.to_vec();
    }
    let fits = |ps: &[NodeTypeConfig]| {
        let c: f64 = ps
            .iter()
            .map(|p| f64::from(p.count) * p.allocatable_cpu_m)
            .sum();
        let m: f64 = ps
            .iter()
            .map(|p| f64::from(p.count) * p.allocatable_mem_mi)
            .sum();
        c >= cpu_m && m >= mem_mi && ps.iter().map(|p| p.count).sum::<u32>() > 0
    };
    // Rounding each pool's count up adds at most one node per pool: no factor below `low` fits,
    // and `high` (the factor the totals need, up to an eighth) always does.
    let eighths = |f: f64| (f * 8.0).ceil() / 8.0;
    let high = eighths((cpu_m / cap_cpu).max(mem_mi / cap_mem)).max(0.125);
    let one_each = |of: fn(&NodeTypeConfig) -> f64| -> f64 { pools.iter().map(of).sum() };
    let low = ((cpu_m - one_each(|p| p.allocatable_cpu_m)) / cap_cpu)
        .max((mem_mi - one_each(|p| p.allocatable_mem_mi)) / cap_mem);
    let mut f = ((low * 8.0).floor() / 8.0).max(0.125);
    loop {
        let ps = scaled(f);
        if f >= high || fits(&ps) {
            return ps;
        }
        f += 0.125;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shape, SloConfig, Topology, Twin, TwinConfig};

    fn opts() -> GenerateOptions {
        GenerateOptions {
            peak_rps: 500.0,
            pools: TwinConfig::default().cluster.node_types,
        }
    }

    fn depth(route: &str) -> usize {
        let (mut d, mut max) = (0usize, 0usize);
        for c in route.chars() {
            if c == '(' {
                d += 1;
                max = max.max(d);
            } else if c == ')' {
                d -= 1;
            }
        }
        max + 1
    }

    #[test]
    fn generated_applications_read_back_are_shallow_and_fit_their_cluster() {
        for (n, seed) in [(5, 1), (20, 2), (60, 3), (200, 4)] {
            let v = generate(n, seed, &opts());
            let t = Topology::from_json_str(
                &v.to_string(),
                &format!("generated-{n}"),
                &Default::default(),
            )
            .expect("the generator writes a valid topology");
            assert_eq!(t.services.len(), n, "every generated service is simulated");
            for r in v["frontend_endpoint_fanout"].as_object().unwrap().values() {
                let s = r[0].as_str().unwrap();
                assert!(depth(s) <= MAX_DEPTH, "{s}");
            }
            let pools = t
                .cluster
                .as_ref()
                .expect("the topology carries its cluster");
            let alloc: f64 = pools
                .iter()
                .map(|p| f64::from(p.count) * p.allocatable_cpu_m)
                .sum();
            let requested: f64 = t
                .services
                .iter()
                .map(|s| s.cpu_request_m * f64::from(s.replicas))
                .sum();
            assert!(
                alloc >= 1.5 * requested,
                "n={n}: {alloc} < 1.5 x {requested}"
            );
            // Same seed, same application.
            assert_eq!(v, generate(n, seed, &opts()));
        }
    }

    #[test]
    fn a_topologys_cluster_replaces_the_configured_one() {
        let v = generate(200, 1, &opts());
        let t =
            Topology::from_json_str(&v.to_string(), "generated-200", &Default::default()).unwrap();
        let nodes: u32 = t.cluster.as_ref().unwrap().iter().map(|p| p.count).sum();
        let configured: u32 = TwinConfig::default()
            .cluster
            .node_types
            .iter()
            .map(|p| p.count)
            .sum();
        assert!(
            nodes > configured,
            "200 services need more than {configured} nodes"
        );
        let mut twin = Twin::new(
            t,
            TwinConfig::default(),
            SloConfig::default(),
            Shape::OffPeak,
            60.0,
            1,
        )
        .unwrap();
        let (obs, _) = twin.advance();
        assert_eq!(obs.nodes.len() as u32, nodes);
    }

    /// The smallest eighth that fits, found by counting up from an eighth (what `size_pools`
    /// must return without counting through every step).
    fn counted(pools: &[NodeTypeConfig], cpu_m: f64, mem_mi: f64) -> Vec<NodeTypeConfig> {
        let mut f = 0.125;
        loop {
            let ps: Vec<NodeTypeConfig> = pools
                .iter()
                .map(|p| NodeTypeConfig {
                    count: (f64::from(p.count) * f).ceil() as u32,
                    ..p.clone()
                })
                .collect();
            let c: f64 = ps
                .iter()
                .map(|p| f64::from(p.count) * p.allocatable_cpu_m)
                .sum();
            let m: f64 = ps
                .iter()
                .map(|p| f64::from(p.count) * p.allocatable_mem_mi)
                .sum();
            if c >= cpu_m && m >= mem_mi {
                return ps;
            }
            f += 0.125;
        }
    }

    #[test]
    fn pools_are_sized_to_the_smallest_eighth_that_fits() {
        let mut pools = TwinConfig::default().cluster.node_types;
        pools[0].count = 3;
        for cpu in [0.0, 1.0, 3_000.0, 27_600.0, 51_234.0, 200_000.0] {
            for mem in [0.0, 10_000.0, 90_000.0, 400_000.0] {
                assert_eq!(
                    size_pools(&pools, cpu, mem),
                    counted(&pools, cpu, mem),
                    "{cpu} {mem}"
                );
            }
        }
        // A demand a million times the pools' still fits, at once.
        let cap: f64 = pools
            .iter()
            .map(|p| f64::from(p.count) * p.allocatable_cpu_m)
            .sum();
        let big = size_pools(&pools, cap * 2e6, 0.0);
        let c: f64 = big
            .iter()
            .map(|p| f64::from(p.count) * p.allocatable_cpu_m)
            .sum();
        assert!(c >= cap * 2e6);
        // Pools without capacity come back as they are.
        let mut none = pools.clone();
        for p in &mut none {
            p.count = 0;
        }
        assert_eq!(size_pools(&none, 1.0, 1.0), none);
    }
}
