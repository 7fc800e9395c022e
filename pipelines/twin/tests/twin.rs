//! Behaviour of the whole twin: queueing against closed forms, Little's law, determinism,
//! overload, scheduling, start-up, actions, stateful replicas, traces, scale.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::collections::BTreeMap;
use std::path::Path;

use graphscaler_schemas::{Action, ActionKind, ActionOutcome, ClusterObservation, CpuResize};
use graphscaler_twin::config::NodeTypeConfig;
use graphscaler_twin::queue::Mmc;
use graphscaler_twin::topology::UserTask;
use graphscaler_twin::{Shape, SloConfig, Topology, Trace, Twin, TwinConfig};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn online_boutique(cfg: &TwinConfig) -> Topology {
    Topology::online_boutique(&cfg.fanout_parameters).unwrap()
}

/// Online Boutique on the default twin.
fn ob_twin(shape: Shape, duration_s: f64, seed: u64) -> Twin {
    Twin::online_boutique(shape, duration_s, seed).unwrap()
}

/// One service `api` (limit = request = `cpu_m`), one route, one task.
fn single_service(cpu_m: u32) -> Topology {
    let json = format!(
        r#"{{"services":[{{"name":"api","language":"Go","cpu_request_m":{cpu_m},"cpu_limit_m":{cpu_m},
            "mem_request_mi":100,"mem_limit_mi":100000,"stateful":false,"container_port":80}}],
            "calls":[],"entry":"api","frontend_endpoint_fanout":{{"GET /":[]}},
            "user_tasks":{{"t":{{"weight":1,"requests":["GET /"]}}}}}}"#
    );
    Topology::from_json_str(&json, "single", &BTreeMap::new()).unwrap()
}

/// A configuration where one pod of `single_service(1000)` is exactly an M/M/1 server with
/// μ = 100/s: no hop latency, no CFS throttling (limit = 1 core), speed 1, 10 ms per request.
fn queueing_config(rps: f64, dir: &Path) -> (TwinConfig, Shape) {
    let mut c = TwinConfig::default();
    c.hop_latency_ms = 0.0;
    c.idle_cpu_m = 0.0;
    c.mem_base_fraction = 0.0;
    c.mem_per_inflight_mib = 1.0;
    c.cpu_cost_ms.insert("api".into(), 10.0);
    c.cluster.node_types = vec![NodeTypeConfig {
        name: "std".into(),
        cpu_model: "test".into(),
        speed: 1.0,
        allocatable_cpu_m: 64000.0,
        allocatable_mem_mi: 1_000_000.0,
        count: 1,
    }];
    c.load.trace_peak_rps = rps;
    let trace = dir.join("flat.csv");
    std::fs::write(&trace, "offset_s,requests\n0,10\n1,10\n2,10\n").unwrap();
    (c, Shape::Trace(Trace::from_csv(&trace).unwrap()))
}

fn run_all(twin: &mut Twin) -> Vec<ClusterObservation> {
    let mut out = vec![];
    while !twin.done() {
        out.push(twin.advance().0);
    }
    out
}

#[test]
fn a_leaf_service_matches_mm1_and_mmc_closed_forms() {
    let dir = tempfile::tempdir().unwrap();
    for (pods, rps) in [(1u32, 50.0), (4, 300.0)] {
        let (cfg, shape) = queueing_config(rps, dir.path());
        let mut twin = Twin::new(
            single_service(1000),
            cfg,
            SloConfig::default(),
            shape,
            3600.0,
            3,
        )
        .unwrap();
        if pods > 1 {
            assert!(twin
                .apply(&Action::new(
                    "api",
                    ActionKind::SetReplicas { replicas: pods }
                ))
                .is_applied());
        }
        let obs = run_all(&mut twin);
        // Skip the first minute (new pods start up); compare each tick with the closed form at
        // that tick's arrival rate.
        let (mut r50, mut r95, mut n) = (0.0, 0.0, 0.0);
        for o in obs.iter().skip(4) {
            let s = &o.services[0];
            let q = Mmc::new(pods, s.rps, 100.0);
            r50 += s.p50_ms / (1000.0 * q.sojourn_quantile(0.5));
            r95 += s.p95_ms / (1000.0 * q.sojourn_quantile(0.95));
            n += 1.0;
        }
        let (r50, r95) = (r50 / n, r95 / n);
        assert!((r50 - 1.0).abs() < 0.03, "{pods} pods: p50 ratio {r50}");
        assert!((r95 - 1.0).abs() < 0.03, "{pods} pods: p95 ratio {r95}");
        if pods == 1 {
            // M/M/1: p95 = ln 20 / (μ − λ) ≈ 60 ms at λ ≈ 50.
            let p95 = obs
                .iter()
                .skip(4)
                .map(|o| o.services[0].p95_ms)
                .sum::<f64>()
                / n;
            assert!((p95 - 1000.0 * 20f64.ln() / 50.0).abs() < 5.0, "{p95}");
        }
    }
}

#[test]
fn littles_law_holds_for_requests_in_flight() {
    // With 1 MiB of working set per request in flight and none at rest, the working set counts
    // the requests in the system; Little: L = λ·W, W = p50 / ln 2 for M/M/1's exponential sojourn.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, shape) = queueing_config(70.0, dir.path());
    let mut twin = Twin::new(
        single_service(1000),
        cfg,
        SloConfig::default(),
        shape,
        1800.0,
        9,
    )
    .unwrap();
    let obs = run_all(&mut twin);
    let (mut l, mut lw) = (0.0, 0.0);
    for o in &obs[2..] {
        let s = &o.services[0];
        l += s.mem_working_set_bytes / (1024.0 * 1024.0);
        lw += s.rps * (s.p50_ms / 1000.0) / std::f64::consts::LN_2;
    }
    assert!((l / lw - 1.0).abs() < 0.02, "L = {l}, λW = {lw}");
    // And the level is M/M/1's L = ρ/(1 − ρ) ≈ 2.33 at ρ ≈ 0.7.
    let mean_l = l / (obs.len() - 2) as f64;
    assert!((mean_l - 0.7 / 0.3).abs() < 0.25, "{mean_l}");
}

#[test]
fn overload_builds_a_backlog_and_then_errors() {
    let dir = tempfile::tempdir().unwrap();
    // μ = 100/s, offered 300/s: the backlog grows by ~200/s until waits pass the 5 s timeout;
    // even users slowed down by 5 s responses offer more than 100/s.
    let (cfg, shape) = queueing_config(300.0, dir.path());
    let mut twin = Twin::new(
        single_service(1000),
        cfg,
        SloConfig::default(),
        shape,
        600.0,
        1,
    )
    .unwrap();
    let obs = run_all(&mut twin);
    assert!(
        obs[0].services[0].p95_ms > 1000.0,
        "queues build: {}",
        obs[0].services[0].p95_ms
    );
    let late = &obs[obs.len() - 1].services[0];
    assert!(
        late.error_rate > 0.1,
        "timeouts become errors: {}",
        late.error_rate
    );
    assert!(
        late.p95_ms <= 5000.0 + 1e-6,
        "latency is capped by the timeout: {}",
        late.p95_ms
    );
    // The closed loop slows the users: fewer requests arrive than the shape offers.
    assert!(late.rps < 300.0 && late.rps > 100.0, "{}", late.rps);
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let cfg = TwinConfig::default();
    let run = |seed| {
        let mut t = Twin::new(
            online_boutique(&cfg),
            cfg.clone(),
            SloConfig::default(),
            Shape::Rush,
            1800.0,
            seed,
        )
        .unwrap();
        let mut out = vec![];
        while !t.done() {
            let (o, _) = t.advance();
            if (o.time_s as u64).is_multiple_of(300) {
                let _ = t.apply(&Action::new(
                    "frontend",
                    ActionKind::ChangeReplicas { delta: 1 },
                ));
            }
            out.push(serde_json::to_string(&o).unwrap());
        }
        out
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
}

#[test]
fn pods_start_after_their_readiness_probe_and_pend_when_nothing_fits() {
    let mut twin = ob_twin(Shape::OffPeak, 600.0, 1);
    let (o0, _) = twin.advance(); // t = 15
    assert_eq!(o0.service("frontend").unwrap().replicas_ready, 1);
    assert!(twin
        .apply(&Action::new(
            "frontend",
            ActionKind::SetReplicas { replicas: 3 }
        ))
        .is_applied());
    // Frontend: container 2 s + probes at 10 s → Ready 12 s after binding (t = 27).
    let (o1, _) = twin.advance(); // t = 30
    let fe = o1.service("frontend").unwrap();
    assert_eq!((fe.replicas_spec, fe.replicas_ready), (3, 3));
    let started: Vec<_> = o1
        .pods_of("frontend")
        .filter(|p| p.start_time_s == Some(15.0))
        .collect();
    assert_eq!(started.len(), 2);
    assert!(started.iter().all(|p| p.ready_transition_s == Some(27.0)));
    // A new pod has no CPU sample until the metrics pipeline has a full window, one scrape ago.
    assert!(started.iter().all(|p| p.cpu_usage_cores.is_none()));
    let (o2, _) = twin.advance(); // t = 45
    assert!(o2
        .pods_of("frontend")
        .filter(|p| p.start_time_s == Some(15.0))
        .all(|p| p.cpu_usage_cores.is_some()));

    // recommendationservice requests 100m: 40 pods is over what is left of the cluster's
    // allocatable CPU once other workloads are placed? Use a CPU-heavy quota to fill it.
    assert!(twin
        .apply(&Action::new(
            "recommendationservice",
            ActionKind::SetCpuLimit { millicores: 4000 }
        ))
        .is_applied());
    // request becomes 100 · 4000/200 = 2000 m per pod; 40 pods = 80 cores > 27.5 allocatable.
    assert!(twin
        .apply(&Action::new(
            "recommendationservice",
            ActionKind::SetReplicas { replicas: 40 }
        ))
        .is_applied());
    let (o3, _) = twin.advance();
    let pending = o3
        .pods_of("recommendationservice")
        .filter(|p| p.node.is_none())
        .count();
    assert!(pending > 0 && pending < 40, "{pending}");
    for n in &o3.nodes {
        assert!(
            n.requested_cpu_cores <= n.allocatable_cpu_cores + 1e-9,
            "{}",
            n.name
        );
    }
    // Scaling down removes the unschedulable pods first.
    assert!(twin
        .apply(&Action::new(
            "recommendationservice",
            ActionKind::SetReplicas {
                replicas: 40 - pending as u32
            }
        ))
        .is_applied());
    let (o4, _) = twin.advance();
    assert_eq!(
        o4.pods_of("recommendationservice")
            .filter(|p| p.node.is_none())
            .count(),
        0
    );
}

#[test]
fn invalid_actions_are_refused_and_change_nothing() {
    let mut twin = ob_twin(Shape::OffPeak, 600.0, 1);
    let (before, _) = twin.advance();
    let refused = |o: ActionOutcome, words: &str| match o {
        ActionOutcome::Refused { reason, .. } => assert!(reason.contains(words), "{reason}"),
        ActionOutcome::Applied => panic!("applied, expected a refusal mentioning {words}"),
    };
    refused(
        twin.apply(&Action::new(
            "nosuch",
            ActionKind::ChangeReplicas { delta: 1 },
        )),
        "unknown service `nosuch`",
    );
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::ChangeReplicas { delta: -2 },
        )),
        "outside [1, 40]",
    );
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::SetReplicas { replicas: 41 },
        )),
        "outside [1, 40]",
    );
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::SetCpuLimit { millicores: 10 },
        )),
        "outside [50, 4000]",
    );
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::ChangeCpuQuota { delta: 1.5 },
        )),
        "outside [-1, 1]",
    );
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::ChangeCpuQuota { delta: f64::NAN },
        )),
        "outside [-1, 1]",
    );
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::PreferNodeType {
                node_type: Some("gpu".into()),
            },
        )),
        "unknown node type `gpu`",
    );
    // Resize that cannot fit in place: 20 frontend pods at 4 cores of limit (2 cores request).
    assert!(twin
        .apply(&Action::new(
            "frontend",
            ActionKind::SetReplicas { replicas: 12 }
        ))
        .is_applied());
    let (mid, _) = twin.advance();
    refused(
        twin.apply(&Action::new(
            "frontend",
            ActionKind::SetCpuLimit { millicores: 4000 },
        )),
        "infeasible",
    );
    let (after, _) = twin.advance();
    let fe = after.service("frontend").unwrap();
    assert_eq!(
        fe.cpu_limit_cores,
        before.service("frontend").unwrap().cpu_limit_cores
    );
    assert_eq!(fe.replicas_spec, 12);
    let req_mid: f64 = mid.nodes.iter().map(|n| n.requested_cpu_cores).sum();
    let req_after: f64 = after.nodes.iter().map(|n| n.requested_cpu_cores).sum();
    assert!(
        (req_mid - req_after).abs() < 1e-9,
        "a refused resize reserves nothing"
    );
}

#[test]
fn quota_changes_resize_in_place_and_node_preference_places_pods() {
    let mut twin = ob_twin(Shape::OffPeak, 600.0, 1);
    twin.advance();
    // Double the quota: limit 200 m → 400 m, request 100 m → 200 m, on the running pod too.
    assert!(twin
        .apply(&Action::new(
            "currencyservice",
            ActionKind::ChangeCpuQuota { delta: 1.0 }
        ))
        .is_applied());
    assert!(twin
        .apply(&Action::new(
            "currencyservice",
            ActionKind::PreferNodeType {
                node_type: Some("c2d-standard-8".into())
            }
        ))
        .is_applied());
    assert!(twin
        .apply(&Action::new(
            "currencyservice",
            ActionKind::SetReplicas { replicas: 4 }
        ))
        .is_applied());
    let (o, _) = twin.advance();
    let s = o.service("currencyservice").unwrap();
    assert!((s.cpu_limit_cores - 0.4).abs() < 1e-12 && (s.cpu_request_cores - 0.2).abs() < 1e-12);
    let pods: Vec<_> = o.pods_of("currencyservice").collect();
    assert!(pods
        .iter()
        .all(|p| (p.cpu_request_cores - 0.2).abs() < 1e-12));
    // The three new pods went to the preferred type.
    let on_c2d = pods
        .iter()
        .filter(|p| p.node.as_deref().is_some_and(|n| n.starts_with("c2d")))
        .count();
    assert!(on_c2d >= 3, "{on_c2d}");
}

/// The names and CPU limits of a service's pods, sorted.
fn pods_of(o: &ClusterObservation, service: &str) -> Vec<(String, Option<f64>, bool)> {
    let mut v: Vec<_> = o
        .pods_of(service)
        .map(|p| (p.name.clone(), p.cpu_limit_cores, p.ready))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_cpu_change_in_place_keeps_the_pods_and_through_the_template_rolls_them() {
    let start = |cpu: CpuResize| {
        let mut twin = ob_twin(Shape::OffPeak, 1800.0, 3);
        assert!(twin
            .apply(&Action::new(
                "frontend",
                ActionKind::SetReplicas { replicas: 4 }
            ))
            .is_applied());
        for _ in 0..8 {
            twin.advance();
        }
        let before = pods_of(&twin.advance().0, "frontend");
        assert_eq!(before.len(), 4);
        assert!(twin
            .apply_with(
                &Action::new("frontend", ActionKind::SetCpuLimit { millicores: 1000 }),
                cpu
            )
            .is_applied());
        (twin, before)
    };

    // In place: the same four pods, resized, at the next observation; the template too.
    let (mut twin, before) = start(CpuResize::InPlace);
    let (o, _) = twin.advance();
    let after = pods_of(&o, "frontend");
    assert_eq!(
        after.iter().map(|p| &p.0).collect::<Vec<_>>(),
        before.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    assert!(after.iter().all(|p| p.1 == Some(1.0) && p.2), "{after:?}");
    assert_eq!(
        twin.template_of("frontend").unwrap().2,
        0,
        "no new revision"
    );

    // Through the template: nothing changes at once, then a rolling update replaces every pod,
    // never leaving fewer than 4 − ⌊4/4⌋ = 3 ready nor more than 4 + ⌈4/4⌉ = 5 pods.
    let (mut twin, before) = start(CpuResize::Restart);
    let (req, lim, rev) = twin.template_of("frontend").unwrap();
    assert_eq!((lim, rev), (1.0, 1));
    assert!(
        (req - 0.5).abs() < 1e-12,
        "request scaled with the limit: {req}"
    );
    let old: Vec<&String> = before.iter().map(|p| &p.0).collect();
    let mut done = false;
    for _ in 0..40 {
        let (o, _) = twin.advance();
        let pods = pods_of(&o, "frontend");
        let ready = pods.iter().filter(|p| p.2).count();
        assert!(ready >= 3 && pods.len() <= 5, "{pods:?}");
        let s = o.service("frontend").unwrap();
        if pods
            .iter()
            .all(|p| !old.contains(&&p.0) && p.1 == Some(1.0) && p.2)
        {
            assert_eq!(pods.len(), 4);
            assert_eq!(s.cpu_limit_cores, 1.0);
            done = true;
            break;
        }
        // While old and new pods run side by side, the limit in force is between the two.
        assert!(s.cpu_limit_cores > 0.5 - 1e-9 && s.cpu_limit_cores <= 1.0 + 1e-9);
    }
    assert!(done, "the rolling update did not finish in 40 ticks");

    // A cluster without in-place resize: `auto` rolls, `in_place` is refused.
    let mut cfg = TwinConfig::default();
    cfg.cluster.in_place_resize = false;
    let topo = online_boutique(&cfg);
    let mut twin = Twin::new(topo, cfg, SloConfig::default(), Shape::OffPeak, 600.0, 1).unwrap();
    twin.advance();
    let set = Action::new("frontend", ActionKind::SetCpuLimit { millicores: 1000 });
    let r = twin.apply_with(&set, CpuResize::InPlace);
    assert!(
        matches!(&r, ActionOutcome::Refused { reason, .. } if reason.contains("in_place_resize")),
        "{r:?}"
    );
    assert!(twin.apply(&set).is_applied());
    assert_eq!(twin.template_of("frontend").unwrap().2, 1);
    assert_eq!(
        twin.resize_pod("frontend-x", None, Some(900.0)),
        Err(graphscaler_twin::ResizeError::Unsupported)
    );
}

#[test]
fn one_pod_resized_in_place_leaves_the_template() {
    let mut twin = ob_twin(Shape::OffPeak, 600.0, 2);
    let (o, _) = twin.advance();
    let pod = o.pods_of("cartservice").next().unwrap().name.clone();
    let template = twin.template_of("cartservice").unwrap();
    twin.resize_pod(&pod, Some(300.0), Some(600.0)).unwrap();
    let (o, _) = twin.advance();
    let p = o.pods.iter().find(|p| p.name == pod).unwrap();
    assert_eq!((p.cpu_request_cores, p.cpu_limit_cores), (0.3, Some(0.6)));
    assert_eq!(twin.template_of("cartservice").unwrap(), template);
    // The request above the limit, an unknown pod and a node without room are refused.
    let e = twin.resize_pod(&pod, Some(700.0), None).unwrap_err();
    assert!(e.to_string().contains("at most the limit"), "{e}");
    assert!(matches!(
        twin.resize_pod("nope", None, Some(1.0)),
        Err(graphscaler_twin::ResizeError::NotFound(_))
    ));
    let e = twin
        .resize_pod(&pod, Some(9_000.0), Some(9_000.0))
        .unwrap_err();
    assert!(
        matches!(e, graphscaler_twin::ResizeError::Infeasible(_)),
        "{e}"
    );
}

#[test]
fn a_new_redis_replica_syncs_with_lag() {
    let mut twin = ob_twin(Shape::Peak, 1200.0, 5);
    for _ in 0..8 {
        twin.advance();
    }
    let (o, _) = twin.advance();
    let st = o
        .stateful
        .iter()
        .find(|s| s.service == "redis-cart")
        .unwrap();
    assert_eq!((st.connected_replicas, st.max_replica_lag_s), (0, 0.0));
    assert!(twin
        .apply(&Action::new(
            "redis-cart",
            ActionKind::SetReplicas { replicas: 2 }
        ))
        .is_applied());
    let mut lags = vec![];
    let mut connected = vec![];
    let mut hits = vec![];
    for _ in 0..8 {
        let (o, _) = twin.advance();
        let st = o
            .stateful
            .iter()
            .find(|s| s.service == "redis-cart")
            .unwrap()
            .clone();
        lags.push(st.max_replica_lag_s);
        connected.push(st.connected_replicas);
        hits.push(st.hit_ratio);
    }
    // Ready after ~7 s, transferring for 20 s: lag grows, then the replica connects and drains.
    assert!(lags.iter().cloned().fold(0.0, f64::max) > 5.0, "{lags:?}");
    assert_eq!(connected[0], 0, "{connected:?}");
    assert_eq!(*connected.last().unwrap(), 1, "{connected:?}");
    assert!(
        *lags.last().unwrap() < 0.5,
        "the replica catches up: {lags:?}"
    );
    assert!(
        hits.iter().all(|h| (0.0..=0.9 + 1e-9).contains(h)),
        "{hits:?}"
    );
    // Scaling down keeps the primary.
    assert!(twin
        .apply(&Action::new(
            "redis-cart",
            ActionKind::SetReplicas { replicas: 1 }
        ))
        .is_applied());
    let (o, _) = twin.advance();
    assert_eq!(o.service("redis-cart").unwrap().replicas_ready, 1);
    assert_eq!(o.service("redis-cart").unwrap().error_rate, 0.0);
}

#[test]
fn observations_are_consistent() {
    let mut twin = ob_twin(Shape::Fluctuating, 900.0, 2);
    while !twin.done() {
        let (o, truth) = twin.advance();
        for s in &o.services {
            for v in [
                s.cpu_usage_cores,
                s.rps,
                s.p50_ms,
                s.p95_ms,
                s.p99_ms,
                s.error_rate,
                s.mem_working_set_bytes,
            ] {
                assert!(v.is_finite() && v >= 0.0, "{}: {v}", s.name);
            }
            assert!(
                s.p50_ms <= s.p95_ms + 1e-9 && s.p95_ms <= s.p99_ms + 1e-9,
                "{s:?}"
            );
            assert!(s.cpu_usage_cores <= s.cpu_limit_cores * s.replicas_spec as f64 + 1e-9);
        }
        // Kiali-like edges: frontend calls currencyservice 9 times per GET / and more.
        let fe = o.service("frontend").unwrap();
        let cur = o
            .edges
            .iter()
            .find(|e| e.source == "frontend" && e.destination == "currencyservice")
            .unwrap();
        assert!(cur.rps > fe.rps, "{} vs {}", cur.rps, fe.rps);
        assert!(o
            .edges
            .iter()
            .any(|e| e.source == "cartservice" && e.destination == "redis-cart"));
        let used: f64 = o.nodes.iter().map(|n| n.cpu_usage_cores).sum();
        let svc_used: f64 = o.services.iter().map(|s| s.cpu_usage_cores).sum();
        assert!((used - svc_used).abs() < 1e-6);
        assert!((o.global.entry_p95_ms - truth.entry_p95_ms).abs() < 1e-9);
        // End to end per route: the home page (9 conversions and more) is slower than setting
        // the currency (no calls), and route rates add up to the frontend's.
        let route = |n: &str| truth.routes.iter().find(|r| r.name == n).unwrap();
        assert!(route("GET /").mean_ms > route("POST /setCurrency").mean_ms + 10.0);
        let total: f64 = truth.routes.iter().map(|r| r.rps).sum();
        assert!(
            (total - fe.rps).abs() < 1e-6 * fe.rps.max(1.0),
            "{total} vs {}",
            fe.rps
        );
        assert!((0.0..=1.0).contains(&o.global.slo_violation_rate));
    }
}

#[test]
fn a_trace_replays_and_other_topologies_run() {
    let cfg = TwinConfig::default();
    let shape = Shape::parse(&format!(
        "trace:{}",
        root()
            .join("data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv")
            .display()
    ))
    .unwrap();
    let mut twin = Twin::new(
        online_boutique(&cfg),
        cfg.clone(),
        SloConfig::default(),
        shape,
        900.0,
        1,
    )
    .unwrap();
    let obs = run_all(&mut twin);
    assert_eq!(obs.len(), 60);
    assert!(obs.iter().any(|o| o.global.entry_rps > 10.0));

    let topo = Topology::synthetic(1000, 1);
    let mut twin = Twin::new(
        topo,
        cfg.clone(),
        SloConfig::default(),
        Shape::Peak,
        300.0,
        1,
    )
    .unwrap();
    let obs = run_all(&mut twin);
    assert_eq!(obs[0].services.len(), 1000);
    assert!(obs.last().unwrap().edges.len() > 1000);
}

#[test]
fn tasks_naming_missing_routes_are_rejected() {
    let mut cfg = TwinConfig::default();
    cfg.load.tasks.insert(
        "ghost".into(),
        UserTask {
            weight: 1.0,
            requests: vec!["GET /ghost".into()],
        },
    );
    let e = Twin::new(
        online_boutique(&cfg),
        cfg,
        SloConfig::default(),
        Shape::Peak,
        60.0,
        1,
    )
    .unwrap_err();
    assert!(e.to_string().contains("route `GET /ghost`"), "{e}");
}

#[test]
fn the_twin_featurizes_into_heterogeneous_snapshots() {
    use graphscaler_schemas::Snapshot;
    let mut twin = ob_twin(Shape::Peak, 600.0, 3);
    let mut last = None;
    while !twin.done() {
        last = Some(twin.advance().0);
    }
    let obs = last.unwrap();
    let s = Snapshot::from_observation(&obs);
    assert_eq!((s.services.len(), s.nodes.len()), (11, 5));
    assert_eq!(s.calls.len(), obs.edges.len());
    assert_eq!(
        s.calls.len(),
        15,
        "every call edge of Online Boutique carries traffic at peak"
    );
    let placed: f32 = s.runs_on.attr.iter().map(|a| a[0]).sum();
    assert_eq!(
        placed as usize,
        obs.pods.iter().filter(|p| p.node.is_some()).count()
    );
    assert_eq!(s.hosts.len(), s.runs_on.len());
    for x in &s.service_x {
        assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
    }
    let redis = s.services.iter().position(|n| n == "redis-cart").unwrap();
    assert_eq!(s.service_x[redis][3], 1.0, "stateful flag");
}
