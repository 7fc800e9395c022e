//! The mutation harness the policy stage's inputs go through (issue 13's fuzz target): real
//! snapshots of the twin, serialised as the snapshot topic carries them, then damaged — bytes
//! flipped, inserted or cut; JSON values replaced by others of any type, arrays cut or grown,
//! keys dropped; floats made NaN, infinite or absurd; edge indices pointed out of range — and
//! each result driven through what the policy stage runs: the decoder, `Snapshot::validate`,
//! the HPA, the learned GAT-PPO as the stage serves it, and the step that makes actions
//! absolute. Nothing may panic, and a snapshot that fails validation gets no action from any
//! policy.
//!
//! Bounded for CI: `PROPTEST_CASES` (default 256 per property) sets how many mutations each
//! property tries; `PROPTEST_CASES=100000 cargo test --workspace --test fuzz` runs longer.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use graphscaler_bus::transport::Message;
use graphscaler_learn::factory::Checkpoints;
use graphscaler_learn::serve::ActRule;
use graphscaler_policy::hpa::{Hpa, HpaConfig};
use graphscaler_policy::{Learned, SnapshotPolicy};
use graphscaler_schemas::events::SnapshotsTopic;
use graphscaler_schemas::{Envelope, Snapshot};
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use proptest::prelude::*;
use serde_json::Value;

/// Snapshots of Online Boutique on the twin (Peak and Rush), as envelopes on the topic.
fn corpus() -> &'static Vec<Vec<u8>> {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let cfg = TwinConfig::default();
        let topo = Topology::online_boutique(&cfg.fanout_parameters).unwrap();
        let mut out = vec![];
        for (shape, seed) in [(Shape::Peak, 1), (Shape::Rush, 2)] {
            let mut twin = Twin::new(
                topo.clone(),
                cfg.clone(),
                SloConfig::default(),
                shape,
                600.0,
                seed,
            )
            .unwrap();
            while !twin.done() {
                let s = Snapshot::from_observation(&twin.advance().0);
                let env = Envelope::new("fuzz", s.time_s, s.window_s, s);
                out.push(serde_json::to_vec(&env).unwrap());
            }
        }
        out
    })
}

struct Policies {
    hpa: Hpa,
    learned: Box<dyn SnapshotPolicy>,
}

/// The HPA and the shipped GAT-PPO as the policy stage builds it (one of each: the property
/// cases take turns).
fn policies() -> std::sync::MutexGuard<'static, Policies> {
    static P: OnceLock<Mutex<Policies>> = OnceLock::new();
    P.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let learned = Checkpoints {
            dir: root.join("checkpoints"),
            topology: "*".into(),
            act: ActRule::Mode,
            online: None,
        }
        .build_stage("gat-ppo", None)
        .unwrap();
        let h = HpaConfig::default();
        Mutex::new(Policies {
            hpa: Hpa::new(h.tuned_target_cpu_utilization, &h),
            learned,
        })
    })
    .lock()
    .unwrap_or_else(|p| p.into_inner())
}

/// What the policy stage does with a message's bytes.
fn drive(bytes: &[u8]) {
    let msg = Message {
        topic: "graphscaler.graph.snapshots.v1".into(),
        position: (0, 7),
        payload: bytes.to_vec(),
    };
    match msg.decode::<SnapshotsTopic>() {
        Err(e) => assert!(
            e.to_string()
                .starts_with("graphscaler.graph.snapshots.v1[0]@7: "),
            "{e}"
        ),
        Ok(env) => judge(&env.payload),
    }
}

/// The policies on a decoded snapshot, valid or not: no panic, and no action on an invalid one.
fn judge(snap: &Snapshot) {
    let valid = snap.validate().is_ok();
    let mut p = policies();
    let hpa = p.hpa.decide_snapshot(snap);
    let learned = p.learned.decide(snap);
    if !valid {
        assert!(
            hpa.is_empty() && learned.is_empty(),
            "acted on an invalid snapshot"
        );
        return;
    }
    let both = hpa.into_iter().chain(learned).collect();
    let _ = graphscaler_policy::stage::decided("fuzz", snap, both);
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A replacement for any JSON value: other types, edges of the integer range, absurd numbers.
fn poison() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(Value::from("x")),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({})),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        Just(Value::from(u32::MAX)),
        Just(Value::from(u64::from(u32::MAX) + 1)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(1e30)),
        Just(Value::from(-1e30)),
        Just(Value::from(f64::from(f32::MAX) * 2.0)),
        Just(Value::from(1e-45)),
    ]
}

/// One edit of a JSON tree along the path the choices pick.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Duplicate,
    Truncate,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => poison().prop_map(Edit::Replace),
        1 => Just(Edit::Remove),
        1 => Just(Edit::Duplicate),
        1 => Just(Edit::Truncate),
    ]
}

/// Walks `v` by `choices` (each picks a child) and applies `e` where the walk stops.
fn apply(v: &mut Value, choices: &[usize], e: &Edit) {
    let stop = choices.is_empty()
        || match v {
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => true,
        };
    if stop {
        if let Edit::Replace(x) = e {
            *v = x.clone();
        }
        return;
    }
    let c = choices[0];
    let last = choices.len() == 1;
    match v {
        Value::Array(a) => {
            let i = c % a.len();
            match (last, e) {
                (true, Edit::Remove) => {
                    a.remove(i);
                }
                (true, Edit::Duplicate) => {
                    let x = a[i].clone();
                    a.insert(i, x);
                }
                (true, Edit::Truncate) => a.truncate(i),
                _ => apply(&mut a[i], &choices[1..], e),
            }
        }
        Value::Object(o) => {
            let key = o.keys().nth(c % o.len()).unwrap().clone();
            if last && matches!(e, Edit::Remove) {
                o.remove(&key);
            } else {
                apply(o.get_mut(&key).unwrap(), &choices[1..], e);
            }
        }
        _ => {}
    }
}

/// A float the decoder lets through that no policy should trust.
fn bad_float() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(-1.0),
        Just(f32::MAX),
        Just(-f32::MAX),
        Just(f32::MIN_POSITIVE / 2.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Bytes flipped, inserted and cut.
    #[test]
    fn damaged_bytes(pick in any::<usize>(), edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..12)) {
        let c = corpus();
        let mut b = c[pick % c.len()].clone();
        for (at, byte, op) in edits {
            if b.is_empty() {
                break;
            }
            let i = at % b.len();
            match op {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                _ => {
                    b.remove(i);
                }
            }
        }
        drive(&b);
    }

    /// JSON values replaced, removed, duplicated or cut, anywhere in the envelope.
    #[test]
    fn damaged_structure(pick in any::<usize>(), edits in prop::collection::vec((prop::collection::vec(any::<usize>(), 1..6), edit()), 1..4)) {
        let c = corpus();
        let mut v: Value = serde_json::from_slice(&c[pick % c.len()]).unwrap();
        for (path, e) in &edits {
            apply(&mut v, path, e);
        }
        drive(&serde_json::to_vec(&v).unwrap());
    }

    /// Decoded snapshots with a float no JSON carries (NaN, ±inf) or an absurd one, or an edge
    /// pointing past the nodes, or replica counts at the end of their range.
    #[test]
    fn damaged_values(pick in any::<usize>(), at in any::<(usize, usize, usize)>(), x in bad_float(), idx in prop_oneof![Just(u32::MAX), Just(11u32), Just(5u32), 0u32..40], what in 0u8..9) {
        let c = corpus();
        let env: Envelope<Snapshot> = serde_json::from_slice(&c[pick % c.len()]).unwrap();
        let mut s = env.payload;
        let (i, j, k) = at;
        match what {
            0 => { let n = s.service_x.len(); let r = &mut s.service_x[i % n]; let m = r.len(); r[j % m] = x; }
            1 => { let n = s.node_x.len(); let r = &mut s.node_x[i % n]; let m = r.len(); r[j % m] = x; }
            2 => { let n = s.calls.attr.len(); if n > 0 { let r = &mut s.calls.attr[i % n]; let m = r.len(); r[j % m] = x; } }
            3 => s.global[j % 2] = x,
            4 => { let n = s.calls.src.len(); if n > 0 { if k % 2 == 0 { s.calls.src[i % n] = idx } else { s.calls.dst[i % n] = idx } } }
            5 => { let n = s.runs_on.dst.len(); if n > 0 { s.runs_on.dst[i % n] = idx } }
            6 => { let n = s.replicas_spec.len(); s.replicas_spec[i % n] = idx; }
            7 => { let n = s.cpu_limit_cores.len(); if n > 0 { s.cpu_limit_cores[i % n] = x } }
            _ => { s.window_s = f64::from(x); s.time_s = f64::from(x) * k as f64; }
        }
        judge(&s);
    }
}
