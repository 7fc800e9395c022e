//! The snapshot store: transitions round trip, a recorder's directory is durable (every closed
//! window readable after a crash, a restart continues and never overwrites), and files,
//! directories and globs read back in time order.
#![allow(clippy::unwrap_used)]

use graphscaler_graph::recorder::Recorder;
use graphscaler_graph::store::{self, RecordedDecision, RecordedReward, Transition};
use graphscaler_graph::{run, GraphConfig};
use graphscaler_learn_config::reward::{reward_of_snapshot, RewardConfig};
use graphscaler_schemas::{Action, ActionKind, Snapshot, TelemetryEvent};
use graphscaler_twin::{Shape, Twin};

/// Snapshots of 30 s windows of a rush on Online Boutique, as the graph job cuts them.
fn snapshots(minutes: f64) -> Vec<Snapshot> {
    let mut twin = Twin::online_boutique(Shape::Rush, minutes * 60.0, 3).unwrap();
    let mut events = vec![];
    let mut prev = None;
    while !twin.done() {
        let (obs, _) = twin.advance();
        events.extend(TelemetryEvent::changes_since(prev.as_ref(), &obs, "twin"));
        prev = Some(obs);
    }
    run(events, &GraphConfig::default()).unwrap().snapshots
}

fn scale(service: &str, replicas: u32) -> Action {
    Action::new(service, ActionKind::SetReplicas { replicas })
}

#[test]
fn transitions_round_trip_and_plain_files_read_without_them() {
    let snaps = snapshots(5.0);
    assert!(snaps.len() >= 9);
    let rows: Vec<Transition> = snaps
        .iter()
        .enumerate()
        .map(|(i, s)| Transition {
            snapshot: s.clone(),
            decision: (i % 3 != 2).then(|| RecordedDecision {
                by: "policy/tuned-hpa".into(),
                actions: if i % 3 == 0 {
                    vec![]
                } else {
                    vec![scale("frontend", 3), scale("cartservice", 2)]
                },
            }),
            reward: (i % 4 != 3).then_some(RecordedReward {
                value: -0.5 - i as f64,
                terms: [0.0, 0.25, 0.125, 0.0],
            }),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.parquet");
    store::write_transitions(&f, &rows).unwrap();
    assert_eq!(store::read_transitions(&f).unwrap(), rows);
    assert_eq!(store::read(&f).unwrap(), snaps);
    assert!(
        !store::tmp_path(&f).exists(),
        "the write was renamed into place"
    );
    // A plain snapshot file reads as transitions with nothing recorded.
    let plain = dir.path().join("plain.parquet");
    store::write(&plain, &snaps).unwrap();
    let back = store::read_transitions(&plain).unwrap();
    assert!(back
        .iter()
        .all(|t| t.decision.is_none() && t.reward.is_none()));
    // Read together, the two are two runs, one after the other; one file named twice is
    // refused.
    let both = store::read_paths(&[f.clone(), plain.clone()]).unwrap();
    let runs = store::runs(&both);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0], &rows[..]);
    let e = store::read_paths(&[f.clone(), dir.path().to_path_buf()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.parquet") && e.contains("named twice"), "{e}");
}

#[test]
fn a_recorder_appends_durably_continues_after_a_restart_and_never_overwrites() {
    let snaps = snapshots(6.0);
    let n = snaps.len();
    assert!(n >= 11, "{n}");
    let reward = RewardConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let (first, second) = snaps.split_at(7);
    {
        let mut r = Recorder::open(&store_dir, 3, reward).unwrap();
        for (i, s) in first.iter().enumerate() {
            r.push(s.clone()).unwrap();
            let actions = if i % 2 == 0 {
                vec![]
            } else {
                vec![scale("frontend", 2)]
            };
            assert!(r.decided(s.time_s, "policy/tuned-hpa", actions).unwrap());
            // After every window, everything closed so far reads back: a crash here loses
            // nothing but what was never pushed.
            let back = store::read_paths(std::slice::from_ref(&store_dir)).unwrap();
            assert_eq!(back.len(), i + 1);
            assert_eq!(back.last().unwrap().snapshot, *s);
        }
        // A decision for a snapshot never stored is counted, not recorded.
        assert!(!r.decided(1e9, "policy/tuned-hpa", vec![]).unwrap());
        assert_eq!(r.stats().late_decisions, 1);
        // The recorder is not finished: a crash.
        std::mem::forget(r);
    }
    let files = store::files_of(&store_dir).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "part-000000.parquet",
            "part-000001.parquet",
            "part-000002.parquet"
        ]
    );
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    // A leftover unfinished write of the crashed run is removed on restart.
    std::fs::write(store_dir.join("part-000002.parquet.tmp"), b"half").unwrap();
    let mut r = Recorder::open(&store_dir, 3, reward).unwrap();
    assert!(r.file().ends_with("part-000003.parquet"));
    assert!(!store_dir.join("part-000002.parquet.tmp").exists());
    for s in second {
        r.push(s.clone()).unwrap();
        r.decided(s.time_s, "policy/tuned-hpa", vec![scale("frontend", 3)])
            .unwrap();
    }
    let stats = r.finish().unwrap();
    assert_eq!(stats.windows as usize, second.len());
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(f).unwrap(),
            b,
            "{} was rewritten",
            f.display()
        );
    }
    // Both runs read back as one sequence, in time order, every window there.
    let rows = store::read_paths(std::slice::from_ref(&store_dir)).unwrap();
    assert_eq!(rows.len(), n);
    for (row, s) in rows.iter().zip(&snaps) {
        assert_eq!(&row.snapshot, s);
        assert_eq!(row.decision.as_ref().unwrap().by, "policy/tuned-hpa");
    }
    assert_eq!(
        rows[1].decision.as_ref().unwrap().actions,
        [scale("frontend", 2)]
    );
    assert!(rows[0].decision.as_ref().unwrap().actions.is_empty());
    // Each row's reward is the next snapshot's, within a run; the last window of each run
    // has none (the crash lost its successor's reward, and the second run's last has none).
    for (i, row) in rows.iter().enumerate() {
        let expect = (i + 1 < n && i + 1 != first.len())
            .then(|| reward_of_snapshot(&snaps[i + 1], &reward).unwrap().value);
        assert_eq!(row.reward.map(|r| r.value), expect, "row {i}");
    }
    // A glob names the same files; one file alone reads too.
    let glob = store_dir.join("part-00000[!x]*");
    assert!(
        store::files_of(&glob).is_err(),
        "[ is not a wildcard: nothing matches"
    );
    let glob = store_dir.join("part-*.parquet");
    assert_eq!(store::read_paths(&[glob]).unwrap().len(), n);
    assert_eq!(store::read_paths(&[files[0].clone()]).unwrap().len(), 3);
    let e = store::read_paths(&[dir.path().join("nothing-here")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing-here"), "{e}");
}
