//! Property tests: whatever actions a policy sends, the twin's invariants hold.

#![allow(clippy::unwrap_used)]

use graphscaler_schemas::{Action, ActionKind, ActionOutcome};
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = ActionKind> {
    prop_oneof![
        (0u32..50).prop_map(|replicas| ActionKind::SetReplicas { replicas }),
        (-3i32..4).prop_map(|delta| ActionKind::ChangeReplicas { delta }),
        (0u32..5000).prop_map(|millicores| ActionKind::SetCpuLimit { millicores }),
        (-1.5f64..1.5).prop_map(|delta| ActionKind::ChangeCpuQuota { delta }),
        prop_oneof![
            Just(None),
            Just(Some("n2-standard-4".to_string())),
            Just(Some("c2d-standard-8".to_string())),
            Just(Some("tpu".to_string()))
        ]
        .prop_map(|node_type| ActionKind::PreferNodeType { node_type }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_any_actions(
        seed in 0u64..1000,
        plan in proptest::collection::vec((0usize..12, kind()), 1..40),
    ) {
        let cfg = TwinConfig::default();
        let topo = Topology::online_boutique(&cfg.fanout_parameters).unwrap();
        let names: Vec<String> = topo.services.iter().map(|s| s.name.clone()).chain(["ghost".to_string()]).collect();
        let lim = cfg.limits.clone();
        let mut twin = Twin::new(topo, cfg, SloConfig::default(), Shape::Rush, 15.0 * plan.len() as f64, seed).unwrap();
        for (svc, k) in plan {
            let (before, _) = twin.advance();
            let action = Action::new(names[svc].clone(), k);
            let outcome = twin.apply(&action);
            let (after, _) = twin.advance();
            // Capacity is never over-committed.
            for n in &after.nodes {
                prop_assert!(n.requested_cpu_cores <= n.allocatable_cpu_cores + 1e-9);
                prop_assert!(n.requested_mem_bytes <= n.allocatable_mem_bytes + 1e-6);
            }
            for s in &after.services {
                // Pods match spec.replicas, within the bounds.
                prop_assert_eq!(after.pods_of(&s.name).count() as u32, s.replicas_spec);
                prop_assert!(s.replicas_spec >= lim.min_replicas && s.replicas_spec <= lim.max_replicas);
                prop_assert!(s.cpu_limit_cores * 1000.0 >= lim.min_cpu_limit_m - 1e-9);
                prop_assert!(s.cpu_limit_cores * 1000.0 <= lim.max_cpu_limit_m + 1e-9);
                prop_assert!(s.error_rate.is_finite() && s.p95_ms.is_finite());
            }
            // A refusal changes nothing the action could have touched.
            if let ActionOutcome::Refused { .. } = outcome {
                if let (Some(b), Some(a)) = (before.service(&action.service), after.service(&action.service)) {
                    prop_assert_eq!(b.replicas_spec, a.replicas_spec);
                    prop_assert_eq!(b.cpu_limit_cores, a.cpu_limit_cores);
                }
            }
        }
    }
}

/// Online Boutique's topology text with `edits` applied: each `(position, kind, byte)` deletes,
/// replaces or inserts one byte (from the grammar's own characters, digits and letters, so that
/// many mutants still parse as JSON and reach the call-string parser and the checks behind it).
fn mutate(text: &str, edits: &[(usize, u8, u8)]) -> String {
    const ALPHABET: &[u8] = b"(),.x-> 0123456789<=\"{}[]:nulabcXYZ_";
    let mut b = text.as_bytes().to_vec();
    for &(at, kind, c) in edits {
        if b.is_empty() {
            break;
        }
        let i = at % b.len();
        let c = ALPHABET[c as usize % ALPHABET.len()];
        match kind % 3 {
            0 => {
                b.remove(i);
            }
            1 => b[i] = c,
            _ => b.insert(i, c),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A fuzz of the trace reader: any text answers Ok or an error naming the file, never a
    /// panic; a trace it accepts has a positive bucket and levels in [0, 1] that replay.
    #[test]
    fn the_trace_reader_never_panics_and_what_it_accepts_replays(
        rows in proptest::collection::vec(
            (prop_oneof![Just(String::new()), "[0-9]{1,3}", "-?[0-9]{1,2}\\.[0-9]", "[a-z]{1,3}", Just("NaN".to_string())],
             prop_oneof!["[0-9]{1,4}", "-?[0-9]\\.[0-9]", Just("inf".to_string()), Just(String::new())],
             proptest::bool::weighted(0.1)),
            0..12),
        header in prop_oneof![Just("offset_s,requests"), Just("requests,offset_s"), Just("bucket_start,offset_s,count"), Just("t,x")],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.csv");
        let cols = header.split(',').count();
        let mut text = format!("{header}\n");
        for (offset, count, extra_field) in &rows {
            let mut fields = vec![offset.clone(), count.clone()];
            if cols == 3 {
                fields.insert(0, "x".into());
            }
            if *extra_field {
                fields.push("1".into());
            }
            text += &format!("{}\n", fields.join(","));
        }
        std::fs::write(&path, text).unwrap();
        match graphscaler_twin::Trace::from_csv(&path) {
            Ok(t) => {
                prop_assert!(t.bucket_s > 0.0);
                prop_assert!(t.levels.iter().all(|l| (0.0..=1.0).contains(l)));
                let shape = Shape::Trace(t);
                let load = TwinConfig::default().load;
                for k in 0..50 {
                    prop_assert!(shape.rps(k as f64 * 7.3, 3600.0, &load).is_finite());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz.csv"), "{}", e),
        }
    }
}

/// A mutation fuzz of the topology reader: 600 seeded mutants of Online Boutique's file (one to
/// five byte edits each). Each answers Ok or an error, never a panic; each one accepted
/// simulates 20 ticks without panic. Both outcomes must occur, or the fuzz tests nothing.
#[test]
fn the_topology_reader_never_panics_and_what_it_accepts_runs() {
    use rand::{Rng, SeedableRng};
    let cfg = TwinConfig::default();
    let text = graphscaler_twin::topology::ONLINE_BOUTIQUE_JSON;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..600 {
        let edits: Vec<(usize, u8, u8)> = (0..rng.random_range(1..=5))
            .map(|_| (rng.random_range(0..text.len()), rng.random(), rng.random()))
            .collect();
        let mutant = mutate(text, &edits);
        match Topology::from_json_str(&mutant, "<mutant>", &cfg.fanout_parameters) {
            Ok(topo) => {
                accepted += 1;
                if let Ok(mut twin) = Twin::new(
                    topo,
                    cfg.clone(),
                    SloConfig::default(),
                    Shape::Rush,
                    300.0,
                    1,
                ) {
                    for _ in 0..20 {
                        let (obs, _) = twin.advance();
                        assert!(obs.services.iter().all(|s| s.p95_ms.is_finite()));
                    }
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().contains("<mutant>"), "{e}");
            }
        }
    }
    eprintln!("topology mutants: {accepted} accepted, {refused} refused");
    assert!(
        accepted > 50 && refused > 50,
        "accepted {accepted}, refused {refused}"
    );
}
