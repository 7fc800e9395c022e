//! The graph job against a plain recomputation (seeded random streams with inserts, updates,
//! deletes, duplicates, out-of-order and late events; one and several workers), and against the
//! in-process featurization of the twin's observations (one featurization).

#![allow(clippy::unwrap_used)]

use graphscaler_graph::{recompute, run, GraphConfig};
use graphscaler_schemas::{
    CallEdgeObs, Envelope, GlobalObs, NodeObs, PodChange, PodObs, ServiceObs, Snapshot,
    StatefulObs, TelemetryEvent,
};
use graphscaler_twin::{Shape, Twin};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn service(name: &str, rng: &mut impl Rng) -> ServiceObs {
    let ready = rng.random_range(0..4);
    ServiceObs {
        name: name.into(),
        replicas_spec: ready + rng.random_range(0..2),
        replicas_ready: ready,
        replicas_unready: rng.random_range(0..2),
        cpu_request_cores: 0.1,
        cpu_limit_cores: [0.2, 0.5, 1.0][rng.random_range(0..3)],
        mem_request_bytes: 64e6,
        mem_limit_bytes: 128e6,
        cpu_usage_cores: rng.random::<f64>(),
        mem_working_set_bytes: rng.random::<f64>() * 1e8,
        rps: rng.random::<f64>() * 100.0,
        p50_ms: 1.0,
        p95_ms: rng.random::<f64>() * 300.0,
        p99_ms: 400.0,
        error_rate: rng.random::<f64>() * 0.1,
        stateful: name.ends_with('0'),
        missing: vec![],
    }
}

/// A random event stream over `n` services and 3 nodes: upserts with changing values, call
/// edges appearing and going quiet, pods created, moved and deleted, duplicates re-sent,
/// out-of-order and late events.
fn stream(seed: u64, n: usize, windows: u64, window_s: f64) -> Vec<TelemetryEvent> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let names: Vec<String> = (0..n).map(|i| format!("svc-{i}")).collect();
    let nodes = ["node-a", "node-b", "node-c"];
    let mut out: Vec<TelemetryEvent> = vec![];
    let mut pod_seq = 0;
    let mut live_pods: Vec<(String, String)> = vec![];
    for w in 0..windows {
        let t0 = w as f64 * window_s;
        let t = |rng: &mut rand_chacha::ChaCha8Rng| t0 + rng.random::<f64>() * window_s * 0.99;
        for name in &names {
            if rng.random_bool(0.8) {
                let at = t(&mut rng);
                out.push(TelemetryEvent::Service(Envelope::new(
                    "prometheus",
                    at,
                    window_s,
                    service(name, &mut rng),
                )));
            }
            if name.ends_with('0') && rng.random_bool(0.7) {
                let st = StatefulObs {
                    service: name.clone(),
                    connected_replicas: rng.random_range(0..3),
                    max_replica_lag_s: rng.random::<f64>() * 5.0,
                    mean_replica_lag_s: 1.0,
                    hit_ratio: rng.random::<f64>(),
                };
                let at = t(&mut rng);
                out.push(TelemetryEvent::Stateful(Envelope::new(
                    "redis", at, window_s, st,
                )));
            }
        }
        for _ in 0..(n * 2) {
            let (a, b) = (rng.random_range(0..n + 1), rng.random_range(0..n));
            // index n is a service that never reports: its edges must not appear.
            let src = if a == n {
                "ghost".to_string()
            } else {
                names[a].clone()
            };
            let e = CallEdgeObs {
                source: src,
                destination: names[b].clone(),
                rps: rng.random::<f64>() * 50.0,
                p95_ms: 10.0,
                error_rate: 0.0,
            };
            let at = t(&mut rng);
            out.push(TelemetryEvent::Call(Envelope::new(
                "kiali", at, window_s, e,
            )));
        }
        if w == 0 || rng.random_bool(0.2) {
            for (i, node) in nodes.iter().enumerate() {
                let nd = NodeObs {
                    name: (*node).into(),
                    node_type: "t".into(),
                    cpu_model: "m".into(),
                    cpu_model_id: i as u32,
                    allocatable_cpu_cores: 4.0,
                    allocatable_mem_bytes: 16e9,
                    requested_cpu_cores: rng.random::<f64>() * 4.0,
                    requested_mem_bytes: rng.random::<f64>() * 16e9,
                    cpu_usage_cores: 1.0,
                };
                let at = t(&mut rng);
                out.push(TelemetryEvent::Node(Envelope::new(
                    "kubernetes",
                    at,
                    0.0,
                    nd,
                )));
            }
        }
        for _ in 0..rng.random_range(0..4) {
            pod_seq += 1;
            let name = format!("pod-{pod_seq}");
            let svc = names[rng.random_range(0..n)].clone();
            live_pods.push((name.clone(), svc.clone()));
            let p = pod(
                &name,
                &svc,
                rng.random_bool(0.8).then(|| nodes[rng.random_range(0..3)]),
            );
            let at = t(&mut rng);
            out.push(TelemetryEvent::Pod(Envelope::new(
                "kubernetes",
                at,
                0.0,
                PodChange::Upsert(p),
            )));
        }
        if !live_pods.is_empty() && rng.random_bool(0.5) {
            let (name, svc) = live_pods[rng.random_range(0..live_pods.len())].clone();
            let at = t(&mut rng);
            let change = if rng.random_bool(0.5) {
                live_pods.retain(|p| p.0 != name);
                PodChange::Delete { name }
            } else {
                PodChange::Upsert(pod(&name, &svc, Some(nodes[rng.random_range(0..3)])))
            };
            out.push(TelemetryEvent::Pod(Envelope::new(
                "kubernetes",
                at,
                0.0,
                change,
            )));
        }
        if rng.random_bool(0.9) {
            let g = GlobalObs {
                cluster_cpu_utilization: rng.random(),
                slo_violation_rate: rng.random(),
                entry_p95_ms: 1.0,
                entry_error_rate: 0.0,
                entry_rps: 1.0,
            };
            let at = t(&mut rng);
            out.push(TelemetryEvent::Global(Envelope::new(
                "prometheus",
                at,
                window_s,
                g,
            )));
        }
    }
    // Arrival order: mostly by time, with duplicates and swaps (out of order, late).
    out.sort_by(|a, b| a.observed_at_s().total_cmp(&b.observed_at_s()));
    let len = out.len();
    for _ in 0..len / 10 {
        let i = rng.random_range(0..len);
        let j = (i + rng.random_range(1..30)).min(len - 1);
        out.swap(i, j);
    }
    for _ in 0..len / 20 {
        let i = rng.random_range(0..out.len());
        let dup = out[i].clone();
        let at = (i + rng.random_range(0..50)).min(out.len());
        out.insert(at, dup);
    }
    out
}

fn pod(name: &str, svc: &str, node: Option<&str>) -> PodObs {
    PodObs::placed(name, svc, node, 0.1)
}

fn check(
    seed: u64,
    n: usize,
    windows: u64,
    stale_windows: u64,
) -> graphscaler_graph::ingest::IngestStats {
    let events = stream(seed, n, windows, 30.0);
    let reference = recompute(
        &events,
        &GraphConfig {
            stale_windows,
            ..GraphConfig::default()
        },
    );
    for workers in [1, 3] {
        let cfg = GraphConfig {
            window_s: 30.0,
            stale_windows,
            workers,
            cluster: None,
        };
        let got = run(events.clone(), &cfg).unwrap();
        assert_eq!(got.stats, reference.stats);
        assert_eq!(got.snapshots.len(), reference.snapshots.len());
        for (i, (a, b)) in got.snapshots.iter().zip(&reference.snapshots).enumerate() {
            assert_eq!(a, b, "seed {seed}, {workers} workers, window {i}");
        }
    }
    reference.stats
}

#[test]
fn incremental_equals_recomputation_on_random_streams() {
    for (seed, n, windows, stale) in [(1, 12, 25, 2), (2, 30, 15, 1), (3, 5, 40, 3)] {
        let stats = check(seed, n, windows, stale);
        // The streams exercise every path of ingestion.
        assert!(
            stats.duplicates > 0 && stats.stale > 0 && stats.late > 0 && stats.expired > 0,
            "{stats:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_recomputation_property(seed in 0u64..1_000_000, n in 2usize..20, windows in 1u64..20, stale in 1u64..4) {
        check(seed, n, windows, stale);
    }
}

/// For the same twin state, the stream path (events → graph job) and the in-process path
/// (`Snapshot::from_observation`) give the same snapshot, bit for bit.
#[test]
fn the_stream_path_featurizes_like_the_in_process_path() {
    let mut twin = Twin::online_boutique(Shape::Rush, 1800.0, 5).unwrap();
    let mut events = vec![];
    let mut expected = vec![];
    let mut prev = None;
    let mut tick = 0;
    while !twin.done() {
        let (obs, _) = twin.advance();
        // Scale now and then, so that pods come and go.
        if tick % 7 == 3 {
            let n = 1 + (tick % 5) as u32;
            let _ = twin.apply(&graphscaler_schemas::Action::new(
                "frontend",
                graphscaler_schemas::ActionKind::SetReplicas { replicas: n },
            ));
        }
        tick += 1;
        // Observed just before the tick's end, so that tick k is window k − 1.
        let mut obs_at = obs.clone();
        obs_at.time_s -= 0.5;
        events.extend(TelemetryEvent::changes_since(
            prev.as_ref(),
            &obs_at,
            "twin",
        ));
        prev = Some(obs_at);
        expected.push(Snapshot::from_observation(&obs));
    }
    for workers in [1, 2] {
        let got = run(
            events.clone(),
            &GraphConfig {
                window_s: 15.0,
                stale_windows: 1,
                workers,
                cluster: None,
            },
        )
        .unwrap();
        assert_eq!(got.snapshots.len(), expected.len());
        for (i, (a, b)) in got.snapshots.iter().zip(&expected).enumerate() {
            assert_eq!(a.time_s, b.time_s, "window {i}");
            assert_eq!(a, b, "tick {i}, {workers} workers");
        }
    }
}

#[test]
fn snapshots_round_trip_through_parquet_and_bad_files_are_named() {
    use graphscaler_graph::store;
    let events = stream(11, 8, 6, 30.0);
    let snaps = run(events, &GraphConfig::default()).unwrap().snapshots;
    assert!(
        snaps.len() >= 6
            && snaps
                .iter()
                .any(|s| !s.calls.is_empty() && !s.runs_on.is_empty())
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("snapshots.parquet");
    store::write(&f, &snaps).unwrap();
    assert_eq!(store::read(&f).unwrap(), snaps);
    assert!(
        snaps.iter().any(|s| s.entry.is_some())
            && snaps
                .iter()
                .all(|s| s.cpu_request_cores.len() == s.services.len())
    );
    // A file written before `cpu_request_cores` and `entry` existed reads, with them unknown.
    let old = dir.path().join("old.parquet");
    {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let mut w = None;
        for b in reader {
            let b = b.unwrap();
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| {
                    !graphscaler_schemas::arrow::OPTIONAL_COLUMNS
                        .contains(&b.schema().field(i).name().as_str())
                })
                .collect();
            let b = b.project(&keep).unwrap();
            w.get_or_insert_with(|| {
                parquet::arrow::ArrowWriter::try_new(
                    std::fs::File::create(&old).unwrap(),
                    b.schema(),
                    None,
                )
                .unwrap()
            })
            .write(&b)
            .unwrap();
        }
        w.unwrap().close().unwrap();
    }
    let back = store::read(&old).unwrap();
    assert_eq!(back.len(), snaps.len());
    for (a, b) in back.iter().zip(&snaps) {
        assert!(a.entry.is_none() && a.entry_rps.is_none() && a.cpu_request_cores.is_empty());
        assert!(a.cpu_limit_cores.is_empty() && a.service_missing.is_empty() && !a.global_missing);
        let mut a = a.clone();
        a.entry = b.entry;
        a.entry_rps = b.entry_rps;
        a.cpu_request_cores = b.cpu_request_cores.clone();
        a.cpu_limit_cores = b.cpu_limit_cores.clone();
        a.service_missing = b.service_missing.clone();
        a.global_missing = b.global_missing;
        assert_eq!(&a, b);
    }
    // Not Parquet.
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"PAR1 but not really").unwrap();
    let e = store::read(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.parquet") && e.contains("not a readable Parquet file"),
        "{e}"
    );
    // Parquet, but not snapshots: the eval harness's runs file.
    let other = dir.path().join("other.parquet");
    {
        use std::sync::Arc;
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Float64,
            false,
        )]));
        let batch = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow_array::Float64Array::from(vec![1.0]))],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&other).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let e = store::read(&other).unwrap_err().to_string();
    assert!(
        e.contains("not a graphscaler snapshot file: no column `schema_version`"),
        "{e}"
    );
    let e = store::read(&dir.path().join("missing.parquet"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.parquet"), "{e}");
}

/// The live form, fed event by event with windows cut by the caller, gives what the batch form
/// gives on the same stream.
#[test]
fn the_live_graph_job_matches_the_batch_run() {
    use graphscaler_graph::LiveGraph;
    let events = stream(21, 10, 12, 30.0);
    let cfg = GraphConfig {
        workers: 2,
        ..GraphConfig::default()
    };
    let batch = run(events.clone(), &cfg).unwrap();
    let live = LiveGraph::spawn(&cfg);
    let mut open: Option<u64> = None;
    let mut got = vec![];
    for e in events {
        let w = (e.observed_at_s() / cfg.window_s).floor() as u64;
        match open {
            Some(o) if w > o => {
                live.close(w - 1).unwrap();
                open = Some(w);
            }
            None => open = Some(w),
            _ => {}
        }
        live.push(e).unwrap();
    }
    live.close(open.unwrap()).unwrap();
    while got.len() < batch.snapshots.len() {
        got.push(
            live.next_snapshot(std::time::Duration::from_secs(30))
                .expect("a snapshot per window"),
        );
    }
    let stats = live.finish().unwrap();
    assert_eq!(got, batch.snapshots);
    assert_eq!(stats, batch.stats);
}

/// The graph job over two processes (timely's cluster mode on loopback, here two threads of one
/// test each running a process): process 0 ingests and cuts snapshots, process 1 shares the
/// dataflow; the snapshots equal the one-process run's.
#[test]
fn two_processes_equal_one() {
    let events = stream(11, 12, 20, 30.0);
    let one = run(events.clone(), &GraphConfig::default()).unwrap();
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let cfg = |process: usize| GraphConfig {
        window_s: 30.0,
        stale_windows: 2,
        workers: 2,
        cluster: Some((process, addresses.clone())),
    };
    let helper = {
        let c = cfg(1);
        std::thread::spawn(move || run(vec![], &c).unwrap())
    };
    let main = run(events, &cfg(0)).unwrap();
    let helper = helper.join().unwrap();
    assert!(helper.snapshots.is_empty(), "only process 0 cuts snapshots");
    assert_eq!(main.stats, one.stats);
    assert_eq!(main.snapshots, one.snapshots);
    assert!(!main.snapshots.is_empty());
}

/// A window far ahead (a year of 30 s windows, as one event stamped a year ahead once made the
/// job loop over ~3 M windows and grow without bound) is cut in a bounded number of steps: the
/// windows until every metrics entity has expired, then the far one; the rest are counted as
/// skipped. The snapshot after the gap is what the full loop would give: the graph less what
/// expired.
#[test]
fn a_long_gap_is_cut_in_bounded_steps() {
    use graphscaler_graph::LiveGraph;
    let cfg = GraphConfig::default();
    let events = stream(5, 6, 3, cfg.window_s);
    let live = LiveGraph::spawn(&cfg);
    let mut open = None;
    for e in events {
        let w = (e.observed_at_s() / cfg.window_s).floor() as u64;
        if open.is_some_and(|o| w > o) {
            live.close(w - 1).unwrap();
        }
        open = Some(w);
        live.push(e).unwrap();
    }
    let last = open.unwrap();
    let far = last + 365 * 24 * 120;
    let t0 = std::time::Instant::now();
    live.close(far).unwrap();
    let mut cut = vec![];
    while let Some(s) = live.next_snapshot(std::time::Duration::from_secs(5)) {
        cut.push(s);
    }
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    let expected_windows = (last + 1) as usize + cfg.stale_windows as usize + 2;
    assert_eq!(
        cut.len(),
        expected_windows,
        "windows before the gap, the expiry ones, the far one"
    );
    let after = cut.last().unwrap();
    assert_eq!(after.time_s, (far + 1) as f64 * cfg.window_s);
    assert!(after.services.is_empty(), "services expired over the gap");
    assert!(after.global_missing && after.entry.is_none());
    let stats = live.finish().unwrap();
    assert_eq!(
        stats.skipped_windows,
        far - (last + 1) - (cfg.stale_windows + 1)
    );
}

/// The stage's windows over the plain recomputation cut what they cut over the dataflow, event
/// for event: the same snapshots at the same offers (a long gap included, cut in the same
/// bounded steps), the same ingestion counters; an event stamped implausibly far ahead is
/// refused by both and changes nothing.
#[test]
fn windows_over_the_plain_job_equal_windows_over_the_dataflow() {
    use graphscaler_bus::stage::Clock;
    use graphscaler_graph::windows::{job, Offer, Windows};
    let cfg = GraphConfig::default();
    let mut events = stream(33, 8, 10, cfg.window_s);
    let mut far = events
        .iter()
        .rev()
        .find(|e| matches!(e, TelemetryEvent::Service(_)))
        .unwrap()
        .clone();
    if let TelemetryEvent::Service(e) = &mut far {
        e.observed_at_s += 1000.0 * cfg.window_s;
    }
    let mut ahead = far.clone();
    if let TelemetryEvent::Service(e) = &mut ahead {
        e.observed_at_s += 1e9;
        e.event_id = "ahead".into();
    }
    events.push(ahead);
    events.push(far);
    let drive = |plain: bool| {
        let mut w = Windows::new(job(&cfg, plain), cfg.window_s, Clock::Event, 1e6);
        let mut cuts = vec![];
        for e in events.clone() {
            cuts.push(w.offer(e).unwrap());
        }
        let last = w.cut_open().unwrap();
        let stats = w.finish().unwrap();
        (cuts, last, stats)
    };
    let (plain, dataflow) = (drive(true), drive(false));
    assert_eq!(plain, dataflow);
    let refused = plain
        .0
        .iter()
        .filter(|o| matches!(o, Offer::Refused(_)))
        .count();
    assert_eq!(refused, 1, "the event stamped 1e9 s ahead");
    assert!(plain.2.skipped_windows > 0, "the gap was skipped");
    let cut: usize = plain
        .0
        .iter()
        .map(|o| match o {
            Offer::Taken(s) => s.len(),
            Offer::Refused(_) => 0,
        })
        .sum();
    assert!(cut >= 10, "{cut} snapshots");
}
