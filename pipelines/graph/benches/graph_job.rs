//! Graph job throughput and per-window latency, incremental against full recomputation.
//!
//! What it isolates: ingestion, the differential dataflow and snapshot assembly of
//! `graphscaler_graph::run`, against `graphscaler_graph::recompute` (the same ingestion, then
//! every window's snapshot rebuilt from all current entities), on the same event streams in the
//! same process:
//!
//! * Online Boutique: every observation of a 4-hour twin run (peak shape) as events, 15 s windows;
//! * synthetic: 1,000 services, 5,000 call edges, 50 nodes and 3,000 pods; each 30 s window
//!   changes 5% of services, edges and pods (moves), 40 windows.
//!
//! Run: `cargo bench -p graphscaler-graph --bench graph_job`

use std::time::Instant;

use graphscaler_graph::{recompute, run, GraphConfig};
use graphscaler_schemas::{
    CallEdgeObs, Envelope, GlobalObs, NodeObs, PodChange, PodObs, PodPhase, ServiceObs,
    TelemetryEvent,
};
use graphscaler_twin::{Shape, Twin};
use rand::{Rng, SeedableRng};

fn twin_events() -> Vec<TelemetryEvent> {
    let mut twin = Twin::online_boutique(Shape::Peak, 4.0 * 3600.0, 1).expect("twin");
    let mut out = vec![];
    while !twin.done() {
        let (mut obs, _) = twin.advance();
        obs.time_s -= 0.5;
        out.extend(TelemetryEvent::from_observation(&obs, "twin"));
    }
    out
}

/// An event of the bench's source at `t`, over `dt` seconds.
fn at<T: graphscaler_schemas::Keyed>(t: f64, dt: f64, payload: T) -> Envelope<T> {
    Envelope::new("bench", t, dt, payload)
}

fn synthetic_events(windows: u64, window_s: f64) -> Vec<TelemetryEvent> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (ns, ne, nn, np) = (1000usize, 5000usize, 50usize, 3000usize);
    let svc = |i: usize, rng: &mut rand_chacha::ChaCha8Rng| ServiceObs {
        name: format!("svc-{i:04}"),
        replicas_spec: 3,
        replicas_ready: 3,
        replicas_unready: 0,
        cpu_request_cores: 0.1,
        cpu_limit_cores: 0.2,
        mem_request_bytes: 64e6,
        mem_limit_bytes: 128e6,
        cpu_usage_cores: rng.random::<f64>() * 0.6,
        mem_working_set_bytes: 1e8,
        rps: rng.random::<f64>() * 100.0,
        p50_ms: 5.0,
        p95_ms: rng.random::<f64>() * 200.0,
        p99_ms: 300.0,
        error_rate: 0.0,
        stateful: false,
        missing: vec![],
    };
    let edges: Vec<(usize, usize)> = (0..ne)
        .map(|_| (rng.random_range(0..ns), rng.random_range(0..ns)))
        .collect();
    let call = |e: usize, rng: &mut rand_chacha::ChaCha8Rng| CallEdgeObs {
        source: format!("svc-{:04}", edges[e].0),
        destination: format!("svc-{:04}", edges[e].1),
        rps: rng.random::<f64>() * 50.0,
        p95_ms: rng.random::<f64>() * 100.0,
        error_rate: 0.0,
    };
    let pod = |p: usize, rng: &mut rand_chacha::ChaCha8Rng| PodObs {
        name: format!("pod-{p:05}"),
        service: format!("svc-{:04}", p % ns),
        node: Some(format!("node-{:02}", rng.random_range(0..nn))),
        phase: PodPhase::Running,
        ready: true,
        start_time_s: None,
        ready_transition_s: None,
        cpu_request_cores: 0.1,
        cpu_limit_cores: Some(0.2),
        cpu_usage_cores: None,
        metric_time_s: None,
        metric_window_s: 15.0,
    };
    let mut out = vec![];
    for w in 0..windows {
        let t = w as f64 * window_s + 1.0;
        let frac = if w == 0 { 1.0 } else { 0.05 };
        for i in 0..ns {
            if w == 0 || rng.random_bool(frac) {
                out.push(TelemetryEvent::Service(at(t, window_s, svc(i, &mut rng))));
            }
        }
        for e in 0..ne {
            if w == 0 || rng.random_bool(frac) {
                out.push(TelemetryEvent::Call(at(t, window_s, call(e, &mut rng))));
            }
        }
        for p in 0..np {
            if w == 0 || rng.random_bool(frac) {
                out.push(TelemetryEvent::Pod(at(
                    t,
                    0.0,
                    PodChange::Upsert(pod(p, &mut rng)),
                )));
            }
        }
        if w == 0 {
            for n in 0..nn {
                let node = NodeObs {
                    name: format!("node-{n:02}"),
                    node_type: "t".into(),
                    cpu_model: "m".into(),
                    cpu_model_id: (n % 3) as u32,
                    allocatable_cpu_cores: 8.0,
                    allocatable_mem_bytes: 32e9,
                    requested_cpu_cores: 4.0,
                    requested_mem_bytes: 8e9,
                    cpu_usage_cores: 2.0,
                };
                out.push(TelemetryEvent::Node(at(t, 0.0, node)));
            }
        }
        let g = GlobalObs {
            cluster_cpu_utilization: rng.random(),
            slo_violation_rate: 0.0,
            entry_p95_ms: 1.0,
            entry_error_rate: 0.0,
            entry_rps: 1.0,
        };
        out.push(TelemetryEvent::Global(at(t, window_s, g)));
    }
    out
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Best of 3 runs: (total seconds, p50 and p99 seconds of the windows after the first).
fn best_of_3(mut f: impl FnMut() -> Vec<f64>) -> (f64, f64, f64) {
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for _ in 0..3 {
        let t0 = Instant::now();
        let w = f();
        let total = t0.elapsed().as_secs_f64();
        if total < best.0 {
            // The first window loads the whole graph; steady state is the rest.
            let steady = if w.len() > 1 { &w[1..] } else { &w[..] };
            best = (total, pct(steady, 0.5), pct(steady, 0.99));
        }
    }
    best
}

fn measure(name: &str, events: &[TelemetryEvent], window_s: f64, stale_windows: u64) {
    let n = events.len() as f64;
    let mut rows = vec![];
    for workers in [1, 2] {
        let cfg = GraphConfig {
            window_s,
            stale_windows,
            workers,
            cluster: None,
        };
        let r = best_of_3(|| run(events.to_vec(), &cfg).expect("graph job").window_secs);
        rows.push((format!("incremental, {workers} worker(s)"), r));
    }
    let cfg = GraphConfig {
        window_s,
        stale_windows,
        workers: 1,
        cluster: None,
    };
    rows.push((
        "full recomputation".to_string(),
        best_of_3(|| recompute(events, &cfg).window_secs),
    ));
    println!(
        "{name}: {} events (best of 3 runs each; window latency over windows after the first)",
        events.len()
    );
    let (full_total, full_p50, _) = rows[2].1;
    for (label, (total, p50, p99)) in &rows {
        println!(
            "  {label:<28} {total:>7.3} s  {:>9.0} events/s  window p50 {:>7.3} ms  p99 {:>7.3} ms  vs recomputation: total {:>5.2}x, window p50 {:>5.2}x",
            n / total,
            p50 * 1e3,
            p99 * 1e3,
            full_total / total,
            full_p50 / p50
        );
    }
}

fn main() {
    measure(
        "online-boutique twin, 4 h peak, 15 s windows",
        &twin_events(),
        15.0,
        1,
    );
    measure(
        "synthetic 1000 services / 5000 edges, 5% churn per 30 s window",
        &synthetic_events(40, 30.0),
        30.0,
        1_000_000,
    );
}
