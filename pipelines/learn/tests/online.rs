//! Guarded online learning on a snapshot stream from the twin: transitions and their rewards,
//! updates of a shadow copy, the trust region and the promotion check, versions on disk, and
//! rollback.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use graphscaler_learn::agent::{AgentSpec, EncoderKind, GraphAgent, HeadKind, Obs};
use graphscaler_learn::decide::ActionRules;
use graphscaler_learn::online::{OnlineConfig, OnlineLearner, Verdict};
use graphscaler_learn::policy::SampleMask;
use graphscaler_learn::ppo::PpoConfig;
use graphscaler_learn::reward::{reward, reward_of_snapshot, RewardConfig};
use graphscaler_learn::serve::{ActRule, LearnedPolicy};
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, Twin};
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// libtorch's generator is process-wide: tests that sample take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn twin(seed: u64) -> Twin {
    Twin::online_boutique(Shape::Peak, 4.0 * 3600.0, seed).unwrap()
}

/// A small GAT-PPO model for the twin's cluster, saved under `dir/start`.
fn start(dir: &Path, head: HeadKind) -> LearnedPolicy {
    let mut t = twin(1);
    let snap = Snapshot::from_observation(&t.advance().0);
    let mut spec = AgentSpec::new(
        EncoderKind::Gat,
        "online-boutique".into(),
        snap.services.clone(),
        t.node_types(),
        ActionRules::default(),
    );
    spec.dim = 16;
    spec.heads = 2;
    spec.hidden = 16;
    spec.head = head;
    let vs = VarStore::new(Device::Cpu);
    let agent = GraphAgent::new(&vs.root(), spec);
    let path = dir.join("start");
    agent
        .save(&path, &vs, "ppo", "tests/online.rs", serde_json::json!({}))
        .unwrap();
    LearnedPolicy::load(&path, "*", ActRule::Mode).unwrap()
}

fn config(dir: &Path) -> OnlineConfig {
    OnlineConfig {
        enabled: true,
        dir: dir.join("online").display().to_string(),
        update_every: 48,
        holdout_share: 0.25,
        epochs: 2,
        minibatch: 16,
        learning_rate: 1e-3,
        max_kl: 10.0,
        min_gain: -1e9,
        keep: 10,
        rollback_ticks: 0,
        rollback_margin: 0.25,
    }
}

/// Online learning from `live` with the default PPO settings and reward.
fn learner(live: LearnedPolicy, cfg: OnlineConfig) -> OnlineLearner {
    OnlineLearner::new(live, cfg, PpoConfig::default(), RewardConfig::default()).unwrap()
}

/// The pipeline's loop, in process: snapshot → decisions → the twin, for `ticks` ticks.
fn stream(learner: &mut OnlineLearner, t: &mut Twin, ticks: usize) {
    for _ in 0..ticks {
        let snap = Snapshot::from_observation(&t.advance().0);
        for a in learner.decide(&snap).unwrap() {
            let _ = t.apply(&a);
        }
    }
}

/// The model's value of one fixed input: equal values, equal weights (in practice).
fn value_of(agent: &GraphAgent) -> Tensor {
    let mut t = twin(9);
    let snap = Snapshot::from_observation(&t.advance().0);
    let k = agent.spec.node_types.len();
    let obs = Obs::new(&[&snap], SampleMask::all(snap.services.len(), k));
    tch::no_grad(|| agent.value(&[&obs]))
}

fn version(dir: &Path, v: u32) -> std::path::PathBuf {
    dir.join("online").join(format!("v{v:04}"))
}

#[test]
fn the_snapshot_reward_is_the_observation_reward() {
    let mut t = twin(3);
    let c = RewardConfig {
        slo_step: 0.5,
        ..RewardConfig::default()
    };
    let mut violated = 0;
    for _ in 0..240 {
        let obs = t.advance().0;
        let a = reward(&obs, &c);
        let b = reward_of_snapshot(&Snapshot::from_observation(&obs), &c).unwrap();
        violated += usize::from(a.slo_vio > 0.0);
        for (x, y) in [
            (a.slo_vio, b.slo_vio),
            (a.slack, b.slack),
            (a.overshoot, b.overshoot),
            (a.replica_lag, b.replica_lag),
            (a.value, b.value),
        ] {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
    // The static manifests violate the SLO at peak: both branches of SLO_vio were compared.
    assert!(violated > 0 && violated < 240, "{violated}");
    // Without the entry's figures there is no reward, and the error says what is missing.
    let mut snap = Snapshot::from_observation(&t.advance().0);
    snap.entry = None;
    let e = reward_of_snapshot(&snap, &c).unwrap_err().to_string();
    assert!(e.contains("entry p95"), "{e}");
    let mut snap = Snapshot::from_observation(&t.advance().0);
    snap.cpu_request_cores.clear();
    let e = reward_of_snapshot(&snap, &c).unwrap_err().to_string();
    assert!(e.contains("CPU request"), "{e}");
}

#[test]
fn learns_on_the_stream_promotes_and_keeps_versions() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(11);
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path(), HeadKind::Ppo);
    let before = value_of(live.agent());
    let mut cfg = config(dir.path());
    cfg.keep = 3;
    let mut learner = learner(live, cfg);
    let mut t = twin(5);
    stream(&mut learner, &mut t, 200);
    let s = learner.stats;
    assert!(s.updates >= 3, "{s:?}");
    assert_eq!(
        s.promotions, s.updates,
        "loose checks promote every update: {s:?}"
    );
    assert!(s.transitions >= 48 * s.updates, "{s:?}");
    assert_eq!(learner.version() as usize, s.promotions);
    // The live model changed, and the live version on disk is the live model.
    let now = value_of(learner.live().agent());
    assert!(!now.allclose(&before, 1e-6, 1e-6, false));
    let (saved, _vs, m) = GraphAgent::load(&version(dir.path(), learner.version()), "*").unwrap();
    assert!(value_of(&saved).equal(&now));
    assert!(
        m.produced_by.contains("online learning: version"),
        "{}",
        m.produced_by
    );
    // v0000 (the start) stays; only the last `keep` versions are kept.
    let versions = learner.versions();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[0], 0);
    assert_eq!(*versions.last().unwrap(), learner.version());
    assert!(version(dir.path(), 0)
        .with_extension("safetensors")
        .exists());
    assert!(!version(dir.path(), 1)
        .with_extension("safetensors")
        .exists());
    let (v0, _vs, _) = GraphAgent::load(&version(dir.path(), 0), "*").unwrap();
    assert!(value_of(&v0).equal(&before));
    // Every update is a row of updates.csv with its verdict.
    let csv = std::fs::read_to_string(dir.path().join("online/updates.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("time_s,version,train,holdout,epochs,losses/approx_kl"));
    assert_eq!(rows.len(), 1 + s.updates);
    assert!(rows[1..].iter().all(|r| r.contains(",promoted,")), "{csv}");
    // At least 48 transitions (a tick adds up to three), the most recent quarter held out.
    let (train, held) = learner.reports[0].transitions;
    assert!((48..51).contains(&(train + held)), "{train} + {held}");
    assert_eq!(held, ((train + held) as f64 * 0.25).round() as usize);
}

#[test]
fn the_trust_region_and_the_promotion_check_refuse() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(12);
    for (max_kl, min_gain, why) in [(1e-12, -1e9, "KL"), (10.0, 1e9, "surrogate gain")] {
        let dir = tempfile::tempdir().unwrap();
        let live = start(dir.path(), HeadKind::Ppo);
        let before = value_of(live.agent());
        let mut cfg = config(dir.path());
        cfg.learning_rate = 1e-2;
        cfg.max_kl = max_kl;
        cfg.min_gain = min_gain;
        let mut learner = learner(live, cfg);
        stream(&mut learner, &mut twin(6), 80);
        let s = learner.stats;
        assert!(s.updates >= 1 && s.promotions == 0, "{why}: {s:?}");
        for r in &learner.reports {
            // The trust region stops after a whole epoch (the one PPO update's target-KL
            // stop), never mid-epoch.
            if why == "KL" {
                assert_eq!(r.epochs, 1, "{r:?}");
            }
            match &r.verdict {
                Verdict::Rejected { reason } => assert!(reason.contains(why), "{reason}"),
                v => panic!("{why}: {v:?}"),
            }
        }
        // The live model is the one it started with, and no version was written.
        assert!(value_of(learner.live().agent()).equal(&before), "{why}");
        assert_eq!(learner.versions(), vec![0]);
        assert!(!version(dir.path(), 1).with_extension("json").exists());
    }
}

#[test]
fn a_promotion_that_lowers_the_reward_is_rolled_back() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(13);
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path(), HeadKind::Ppo);
    let before = value_of(live.agent());
    let mut cfg = config(dir.path());
    cfg.update_every = 400; // one promotion in the stream, then judged
    cfg.rollback_ticks = 10;
    // Any reward after the promotion counts as worse.
    cfg.rollback_margin = -1e9;
    let mut learner = learner(live, cfg);
    // Nothing to roll back to yet.
    let e = learner.rollback("by hand").unwrap_err().to_string();
    assert!(e.contains("no earlier version"), "{e}");
    let mut t = twin(7);
    while learner.stats.promotions == 0 {
        stream(&mut learner, &mut t, 1);
    }
    assert_eq!(learner.version(), 1);
    assert!(!value_of(learner.live().agent()).equal(&before));
    stream(&mut learner, &mut t, 12);
    assert_eq!(learner.stats.rollbacks, 1, "{:?}", learner.stats);
    assert_eq!(learner.version(), 0);
    assert_eq!(learner.versions(), vec![0]);
    assert!(value_of(learner.live().agent()).equal(&before));
    assert!(!version(dir.path(), 1)
        .with_extension("safetensors")
        .exists());
    match &learner.reports.last().unwrap().verdict {
        Verdict::RolledBack { to, reason } => {
            assert_eq!(*to, 0);
            assert!(reason.contains("since the promotion"), "{reason}");
        }
        v => panic!("{v:?}"),
    }
    let csv = std::fs::read_to_string(dir.path().join("online/updates.csv")).unwrap();
    assert!(
        csv.lines().last().unwrap().contains(",rolled_back,"),
        "{csv}"
    );
}

#[test]
fn no_transition_without_a_reward_and_no_action_on_bad_data() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(14);
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path(), HeadKind::Ppo);
    let mut learner = learner(live, config(dir.path()));
    let mut t = twin(8);
    stream(&mut learner, &mut t, 3);
    let s = learner.stats;
    assert!(s.transitions > 0 && s.dropped == 0, "{s:?}");
    // A snapshot without the entry's figures: the policy still decides on it, but the
    // previous tick's decisions get no reward and are not stored.
    let mut snap = Snapshot::from_observation(&t.advance().0);
    snap.entry = None;
    learner.decide(&snap).unwrap();
    assert_eq!(learner.stats.transitions, s.transitions);
    assert!(learner.stats.dropped > 0);
    // A NaN feature: no action, the error names it, and again no transition.
    let mut snap = Snapshot::from_observation(&t.advance().0);
    snap.service_x[2][0] = f32::NAN;
    let e = learner.decide(&snap).unwrap_err().to_string();
    assert!(e.contains("cpu_pct") && e.contains("NaN"), "{e}");
    // Nothing was pending after the bad snapshot, so the next good one adds nothing either.
    let n = learner.stats.transitions;
    stream(&mut learner, &mut t, 1);
    assert_eq!(learner.stats.transitions, n);
    stream(&mut learner, &mut t, 1);
    assert!(learner.stats.transitions > n);
}

#[test]
fn online_learning_needs_a_ppo_model() {
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path(), HeadKind::Sac);
    let e = OnlineLearner::new(
        live,
        config(dir.path()),
        PpoConfig::default(),
        RewardConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("SAC") && e.contains("PPO/A2C"), "{e}");
    assert!(!OnlineConfig::default().enabled);
}
