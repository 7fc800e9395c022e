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
        let topo = Topology::from_file(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/topologies/online-boutique.json")),
            &cfg.fanout_parameters,
        ).unwrap();
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
