//! The twin as an environment, the graph agent's checkpoints, the served policy, and a short
//! training run of each algorithm on the twin.

#![allow(clippy::unwrap_used)]

use graphscaler_learn::agent::{AgentSpec, EncoderKind, GraphAgent, Obs};
use graphscaler_learn::decide::ActionRules;
use graphscaler_learn::envs::twin::{TwinEnv, TwinEnvConfig};
use graphscaler_learn::policy::HybridAction;
use graphscaler_learn::ppo::PpoConfig;
use graphscaler_learn::reward::RewardConfig;
use graphscaler_learn::serve::{ActRule, LearnedPolicy, ServeError};
use graphscaler_learn::train::{self, Algo, TrainConfig};
use graphscaler_schemas::ActionKind;
use graphscaler_twin::{Shape, SloConfig, Topology, TwinConfig};
use tch::nn::VarStore;
use tch::Device;

/// libtorch's generator is process-wide: tests that train take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn env_config(window: usize) -> TwinEnvConfig {
    let twin = TwinConfig::default();
    let topology = Topology::online_boutique(&twin.fanout_parameters).unwrap();
    TwinEnvConfig {
        topology,
        twin,
        slo: SloConfig::default(),
        scenarios: vec![Shape::Peak],
        episode_s: 600.0,
        reward: RewardConfig::default(),
        rules: ActionRules::default(),
        window,
        handover: None,
        graph: graphscaler_graph::GraphConfig::default(),
        rails: graphscaler_actuate::Guardrails::default(),
    }
}

/// Two environments with `window` snapshots, seeded `seed` and `seed + 1`.
fn two_envs(window: usize, seed: u64) -> Vec<TwinEnv> {
    (0..2)
        .map(|i| TwinEnv::new(env_config(window), seed + i).unwrap())
        .collect()
}

fn spec(env: &TwinEnv, encoder: EncoderKind) -> AgentSpec {
    let mut s = AgentSpec::new(
        encoder,
        "online-boutique".into(),
        env.services().to_vec(),
        env.node_types().to_vec(),
        ActionRules::default(),
    );
    s.dim = 16;
    s.heads = 2;
    s.hidden = 16;
    s
}

fn change(service: i64, delta: i64) -> HybridAction {
    HybridAction::Change {
        service,
        node_type: 1,
        delta_replicas: delta,
        delta_cpu: 0.0,
    }
}

#[test]
fn decisions_ticks_masks_and_episodes() {
    let mut env = TwinEnv::new(env_config(1), 3).unwrap();
    let s = env.services().len();
    assert_eq!(env.node_types().len(), 2);
    let t0 = env.snapshot().time_s;
    let spec0 = env.snapshot().replicas_spec.clone();
    // Every service starts at the manifests' one replica: Δ −1 and −2 are masked.
    let m = env.mask();
    assert!(m.replicas[0..2].iter().all(|x| !x) && m.replicas[2..5].iter().all(|x| *x));
    assert!(m.pairs.iter().all(|x| *x));
    // A change does not advance time and masks that service for the rest of the tick.
    let r = env.step(&change(0, 2)).unwrap();
    assert!(!r.advanced && r.reward == 0.0 && r.terms.is_none());
    assert_eq!(env.snapshot().time_s, t0);
    let m = env.mask();
    assert!(!m.pairs[0] && !m.pairs[1] && m.pairs[2]);
    // The third decision of the tick (the default allows 3) advances it.
    env.step(&change(1, 1)).unwrap();
    let r = env.step(&change(2, 1)).unwrap();
    assert!(r.advanced && r.terms.is_some() && r.reward <= 0.0);
    assert!(env.snapshot().time_s > t0);
    assert_eq!(env.snapshot().replicas_spec[0], spec0[0] + 2);
    assert_eq!(env.snapshot().replicas_spec[1], spec0[1] + 1);
    assert!(env.mask().pairs.iter().all(|x| *x), "a new tick unmasks");
    // "Nothing" advances at once.
    let t1 = env.snapshot().time_s;
    assert!(env.step(&HybridAction::Nothing).unwrap().advanced);
    assert!(env.snapshot().time_s > t1);
    // The episode (600 s = 40 ticks) ends with a truncation and starts over.
    let mut ticks = 2;
    loop {
        let r = env.step(&HybridAction::Nothing).unwrap();
        ticks += 1;
        if r.truncated {
            break;
        }
        assert!(ticks < 100);
    }
    assert_eq!(env.episodes(), 1);
    assert!(env.snapshot().time_s < t1);
    assert!(env.snapshot().replicas_spec.iter().all(|&r| r == 1));
    assert!(s > 5);
}

#[test]
fn checkpoints_round_trip_and_refuse_what_does_not_fit() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(4);
    let env = TwinEnv::new(env_config(4), 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for enc in [
        EncoderKind::Gat,
        EncoderKind::Gcn,
        EncoderKind::Dysat,
        EncoderKind::Tgat,
        EncoderKind::Mlp,
    ] {
        let vs = VarStore::new(Device::Cpu);
        let agent = GraphAgent::new(&vs.root(), spec(&env, enc));
        let path = dir.path().join(enc.name());
        agent
            .save(
                &path,
                &vs,
                "ppo",
                "tests/twin_env.rs",
                serde_json::json!({}),
            )
            .unwrap();
        let (back, _vs2, m) = GraphAgent::load(&path, "online-boutique").unwrap();
        assert_eq!(m.encoder, enc.name());
        assert_eq!(back.spec, agent.spec);
        let obs = Obs::new(&env.window(), env.mask());
        let (a, b) = tch::no_grad(|| (agent.act(&[&obs], true), back.act(&[&obs], true)));
        assert_eq!(a.actions, b.actions);
        assert!(
            a.value.equal(&b.value) && a.logprob.equal(&b.logprob),
            "{enc:?}"
        );
    }
    // Another topology; a missing file; weights of another shape under the same manifest.
    let e = GraphAgent::load(&dir.path().join("gat"), "synthetic-1000")
        .unwrap_err()
        .to_string();
    assert!(e.contains("trained on topology `online-boutique`"), "{e}");
    let e = GraphAgent::load(&dir.path().join("nope"), "*")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.json"), "{e}");
    std::fs::copy(
        dir.path().join("gcn.safetensors"),
        dir.path().join("gat.safetensors"),
    )
    .unwrap();
    let json = dir.path().join("gat.json");
    let text = std::fs::read_to_string(&json).unwrap();
    let gcn = std::fs::read_to_string(dir.path().join("gcn.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&gcn).unwrap();
    m["config"] = serde_json::from_str::<serde_json::Value>(&text).unwrap()["config"].clone();
    std::fs::write(&json, m.to_string()).unwrap();
    let e = GraphAgent::load(&dir.path().join("gat"), "*")
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit") && e.contains("parameter"), "{e}");
}

/// A fresh GAT agent for `env`, saved as the checkpoint `<dir>/gat`.
fn saved_gat(env: &TwinEnv) -> (tempfile::TempDir, std::path::PathBuf) {
    let vs = VarStore::new(Device::Cpu);
    let agent = GraphAgent::new(&vs.root(), spec(env, EncoderKind::Gat));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gat");
    agent
        .save(&path, &vs, "ppo", "tests", serde_json::json!({}))
        .unwrap();
    (dir, path)
}

#[test]
fn a_checkpoint_acts_by_the_rule_its_manifest_names() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(11);
    let mut env = TwinEnv::new(env_config(1), 5).unwrap();
    let (_dir, path) = saved_gat(&env);
    let snaps: Vec<_> = (0..20)
        .map(|_| {
            let s = env.snapshot().clone();
            env.step(&HybridAction::Nothing).unwrap();
            s
        })
        .collect();
    let decisions = |rule: ActRule| -> Vec<String> {
        let mut p = LearnedPolicy::load(&path, "online-boutique", rule).unwrap();
        snaps
            .iter()
            .map(|s| format!("{:?}", p.decide_snapshot(s, None).unwrap()))
            .collect()
    };
    let (mode, sample) = (decisions(ActRule::Mode), decisions(ActRule::Sample));
    // Sampling is reproducible, and a fresh (broad) policy's draws are not its mode.
    assert_eq!(sample, decisions(ActRule::Sample));
    assert_ne!(mode, sample);
    // No rule named: the mode; `sample` named: drawn.
    assert_eq!(decisions(ActRule::Checkpoint), mode);
    let json = path.with_extension("json");
    let text = std::fs::read_to_string(&json).unwrap();
    std::fs::write(&json, text.replacen("{", "{\n  \"act\": \"sample\",", 1)).unwrap();
    assert_eq!(decisions(ActRule::Checkpoint), sample);
    assert_eq!(decisions(ActRule::Mode), mode);
}

#[test]
fn the_served_policy_acts_within_the_rules_and_never_on_bad_data() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(7);
    let mut env = TwinEnv::new(env_config(1), 9).unwrap();
    let (dir, path) = saved_gat(&env);
    let mut p = LearnedPolicy::load(&path, "online-boutique", ActRule::Sample).unwrap();
    let mut acted = 0;
    for _ in 0..20 {
        let snap = env.snapshot().clone();
        let actions = p.decide_snapshot(&snap, None).unwrap();
        let mut services: Vec<&str> = actions.iter().map(|a| a.service.as_str()).collect();
        services.dedup();
        assert!(services.len() <= 3, "{actions:?}");
        for a in &actions {
            if let ActionKind::ChangeReplicas { delta } = a.kind {
                let i = snap.services.iter().position(|s| *s == a.service).unwrap();
                assert!(i64::from(snap.replicas_spec[i]) + i64::from(delta) >= 1);
            }
        }
        acted += actions.len();
        env.step(&HybridAction::Nothing).unwrap();
    }
    assert!(acted > 0);
    // A NaN feature, a missing service: no action, and the reason.
    let mut bad = env.snapshot().clone();
    bad.service_x[2][0] = f32::NAN;
    let e = p.decide_snapshot(&bad, None).unwrap_err();
    assert!(
        matches!(
            e,
            ServeError::NotFinite {
                feature: "cpu_pct",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&bad.services[2]));
    let mut missing = env.snapshot().clone();
    missing.services.remove(4);
    missing.service_x.remove(4);
    let e = p.decide_snapshot(&missing, None).unwrap_err();
    assert!(matches!(e, ServeError::Invalid(_)), "{e}");
    assert_eq!(p.refused.0, 2);

    // Another application (a service renamed, the order kept): the GAT serves it with the same
    // weights — the same decisions, on the renamed service — and says once that it is outside
    // its training; the flat MLP cannot, and says why.
    let snap = env.snapshot().clone();
    let mut renamed = snap.clone();
    let old = renamed.services[4].clone();
    renamed.services[4] = format!("{old}-v2");
    let mut a = LearnedPolicy::load(&path, "online-boutique", ActRule::Mode).unwrap();
    let mut b = LearnedPolicy::load(&path, "online-boutique", ActRule::Mode).unwrap();
    let here = a.decide_snapshot(&snap, None).unwrap();
    let there = b.decide_snapshot(&renamed, None).unwrap();
    let named = |x: &[graphscaler_schemas::Action]| -> Vec<String> {
        x.iter()
            .map(|a| format!("{} {:?}", a.service.replace("-v2", ""), a.kind))
            .collect()
    };
    assert_eq!(named(&here), named(&there));
    let said = b.outside.clone().unwrap();
    assert!(
        said.contains(&format!("missing [\"{old}\"], unknown [\"{old}-v2\"]")),
        "{said}"
    );
    assert!(b.decide_snapshot(&renamed, None).is_ok());
    assert_eq!((a.outside, b.refused.0), (None, 0));
    // A cluster with a node of a CPU model it was not trained on: it still decides, saying so
    // once.
    let mut c = LearnedPolicy::load(&path, "online-boutique", ActRule::Mode).unwrap();
    let mut other = snap.clone();
    other.node_x[0][graphscaler_schemas::snapshot::node_feature::CPU_MODEL_ID] = 7.0;
    assert!(c.decide_snapshot(&other, None).is_ok());
    assert!(c.decide_snapshot(&other, None).is_ok());
    let said = c.outside.clone().unwrap();
    assert_eq!(
        said.matches("node types it was not trained on").count(),
        1,
        "{said}"
    );
    assert!(said.contains("CPU model ids [7]"), "{said}");
    assert_eq!(c.refused.0, 0);
    let vs = VarStore::new(Device::Cpu);
    let mlp = GraphAgent::new(&vs.root(), spec(&env, EncoderKind::Mlp));
    let mpath = dir.path().join("mlp");
    mlp.save(&mpath, &vs, "ppo", "tests", serde_json::json!({}))
        .unwrap();
    let mut m = LearnedPolicy::load(&mpath, "online-boutique", ActRule::Mode).unwrap();
    let e = m.decide_snapshot(&renamed, None).unwrap_err().to_string();
    assert!(
        e.contains("it does not transfer") && e.contains(&old),
        "{e}"
    );
    assert_eq!(m.refused.0, 1);
}

#[test]
fn ppo_and_a2c_run_on_the_twin_and_log_their_diagnostics() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for (algo, enc) in [
        (Algo::Ppo, EncoderKind::Gat),
        (Algo::A2c, EncoderKind::Dysat),
    ] {
        let envs = two_envs(4, 0);
        let spec = spec(&envs[0], enc);
        let cfg = TrainConfig {
            algo,
            ppo: PpoConfig {
                num_steps: 16,
                ..PpoConfig::default()
            },
            a2c_learning_rate: 7e-4,
            a2c_normalize_advantage: true,
            init: None,
            checkpointing: None,
            keep: None,
        };
        let mut log = vec![];
        let mut seen = 0;
        let t = train::train(envs, spec, &cfg, 64, 1, &mut log, &mut |_| seen += 1).unwrap();
        assert_eq!(seen, 2);
        assert_eq!(t.updates.len(), 2);
        let u = t.updates[1];
        assert_eq!(u.diagnostics.global_step, 64);
        assert!(u.ticks > 0 && u.mean_reward <= 0.0);
        assert!(u.diagnostics.value_loss.is_finite() && u.diagnostics.entropy > 0.0);
        let text = String::from_utf8(log).unwrap();
        assert!(text.starts_with("global_step,charts/learning_rate,losses/value_loss"));
        assert!(text.lines().next().unwrap().contains("charts/slo_vio"));
        assert_eq!(text.lines().count(), 3);
    }
}

#[test]
fn the_same_seed_trains_the_same_weights() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let keep = train::Keep {
        every: 32,
        prefix: dir.path().join("gat"),
        algo: "ppo".into(),
        produced_by: "tests/twin_env.rs".into(),
        extra: serde_json::json!({ "seed": 9 }),
    };
    let run = |keep: Option<train::Keep>| {
        let envs = two_envs(1, 40);
        let spec = spec(&envs[0], EncoderKind::Gat);
        let cfg = TrainConfig {
            algo: Algo::Ppo,
            ppo: PpoConfig {
                num_steps: 16,
                ..PpoConfig::default()
            },
            a2c_learning_rate: 7e-4,
            a2c_normalize_advantage: true,
            init: None,
            checkpointing: None,
            keep,
        };
        train::train(envs, spec, &cfg, 64, 9, &mut std::io::sink(), &mut |_| {}).unwrap()
    };
    // Keeping candidates along the way does not change the training.
    let (a, b) = (run(Some(keep.clone())), run(None));
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "{name} differs");
    }
    // One candidate per 32 decisions (2 envs x 16 per update), loadable; the last is the result.
    let mut kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "gat-at32.json",
            "gat-at32.safetensors",
            "gat-at64.json",
            "gat-at64.safetensors"
        ]
    );
    let (_, vs, m) = GraphAgent::load(&keep.path(64), "online-boutique").unwrap();
    assert_eq!(m.config["training"]["steps"], 64);
    assert_eq!(m.config["training"]["candidate"], true);
    for (name, t) in &vs.variables() {
        assert!(t.equal(&va[name]), "{name} differs from the result");
    }
    let (_, first, _) = GraphAgent::load(&keep.path(32), "online-boutique").unwrap();
    assert!(first
        .variables()
        .iter()
        .any(|(name, t)| !t.equal(&va[name])));
}

#[test]
fn sac_runs_on_the_twin_and_its_actor_serves() {
    use graphscaler_learn::graph_sac;
    use graphscaler_learn::sac::SacConfig;
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let envs = two_envs(1, 20);
    let spec = spec(&envs[0], EncoderKind::Gcn);
    let cfg = SacConfig {
        buffer_size: 500,
        batch_size: 16,
        learning_starts: 32,
        update_frequency: 1,
        target_network_frequency: 1,
        tau: 0.005,
        target_entropy_scale: 0.3,
        hidden: 16,
        ..SacConfig::default()
    };
    let mut log = vec![];
    let kept = tempfile::tempdir().unwrap();
    let keep = train::Keep {
        every: 48,
        prefix: kept.path().join("sac"),
        algo: "sac".into(),
        produced_by: "tests/twin_env.rs".into(),
        extra: serde_json::json!({}),
    };
    let t = graph_sac::train(
        envs,
        spec,
        &cfg,
        96,
        2,
        48,
        &mut log,
        &mut |_| {},
        Some(&keep),
        None,
    )
    .unwrap();
    assert_eq!(t.updates.len(), 2);
    // Its candidates are actors like the result: the last one is the result.
    let (_, last, m) = GraphAgent::load(&keep.path(96), "online-boutique").unwrap();
    assert_eq!(m.algo, "sac");
    for (name, w) in &last.variables() {
        assert!(w.equal(&t.vs.variables()[name]), "{name}");
    }
    assert!(keep.path(48).with_extension("json").exists());
    let text = String::from_utf8(log).unwrap();
    assert!(text
        .lines()
        .next()
        .unwrap()
        .ends_with("losses/qf_loss,losses/actor_loss,losses/alpha,losses/alpha_loss"));
    let last = text.lines().last().unwrap();
    let qf: f64 = last.split(',').rev().nth(3).unwrap().parse().unwrap();
    assert!(qf.is_finite() && qf > 0.0, "{last}");
    // The actor saves, loads and decides like any policy; Δcpu comes from the bins.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gcn-sac");
    t.agent
        .save(&path, &t.vs, "sac", "tests", serde_json::json!({}))
        .unwrap();
    let mut p = LearnedPolicy::load(&path, "online-boutique", ActRule::Sample).unwrap();
    let env = TwinEnv::new(env_config(1), 30).unwrap();
    for _ in 0..5 {
        for a in p.decide_snapshot(env.snapshot(), None).unwrap() {
            if let ActionKind::ChangeCpuQuota { delta } = a.kind {
                assert!((delta.abs() - 0.5).abs() < 1e-9, "{delta}");
            }
        }
    }
    // The joint index round-trips.
    let k = 2;
    let n = 11 * k * 15 + 1;
    for i in [0, 7, 44, n - 2, n - 1] {
        assert_eq!(graph_sac::encode(&graph_sac::decode(i, n, k), n, k), i);
    }
}

/// A training stopped after update 3 of 6 and resumed from its saved state ends where an
/// uninterrupted one does: the same number of updates, decisions and learning-rate schedule,
/// from exactly the weights it saved; its log continues without a second header; a state of
/// another training is refused with the difference.
#[test]
fn a_stopped_training_resumes_where_it_saved() {
    use graphscaler_learn::optim::{Rule, Stateful};
    use graphscaler_learn::resume::{self, Checkpointing, Identity, ResumeError};
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run.resume");
    let envs = |seed: u64| two_envs(1, seed);
    let gat = spec(&envs(60)[0], EncoderKind::Gat);
    let cfg = |resume: bool, stop_after: Option<usize>| TrainConfig {
        algo: Algo::Ppo,
        ppo: PpoConfig {
            num_steps: 16,
            ..PpoConfig::default()
        },
        a2c_learning_rate: 7e-4,
        a2c_normalize_advantage: true,
        init: None,
        checkpointing: Some(Checkpointing {
            dir: state.clone(),
            every: 2,
            resume,
            deadline: None,
            stop_after,
        }),
        keep: None,
    };
    let total = 6 * 2 * 16;
    let mut log = vec![];
    let first = train::train(
        envs(60),
        gat.clone(),
        &cfg(false, Some(3)),
        total,
        5,
        &mut log,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((first.stopped, first.iterations), (Some(3), 6));
    assert_eq!(first.updates.len(), 3);
    let saved = resume::read_state(&state).unwrap().unwrap();
    assert_eq!((saved.iteration, saved.global_step), (3, 96));
    // One weights file: the one state.json names (update 2's was removed).
    let files: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(files, std::slice::from_ref(&saved.weights));

    // The saved state is the stopped training's model, to the bit.
    let id = Identity {
        spec: &gat,
        algo: "ppo",
        settings: format!(
            "{:?} a2c_learning_rate={}",
            cfg(false, None).ppo,
            cfg(false, None).a2c_learning_rate
        ),
        envs: 2,
        total_steps: total,
    };
    let mut vs = VarStore::new(Device::Cpu);
    let _model = GraphAgent::new(&vs.root(), gat.clone());
    let rule = Rule::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-5,
    };
    let mut opt = Stateful::new(&vs, rule, 1e-3);
    resume::load(&state, &mut vs, &mut opt, &id).unwrap();
    let theirs = first.vs.variables();
    for (k, t) in vs.variables() {
        assert!(t.equal(&theirs[&k]), "{k}");
    }
    assert!(opt.steps() > 0);

    // Resumed (on fresh episodes), it does the three updates left.
    let rest = train::train(
        envs(70),
        gat.clone(),
        &cfg(true, None),
        total,
        5,
        &mut log,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rest.stopped, None);
    assert_eq!(rest.resumed_at, [3]);
    let steps: Vec<usize> = first
        .updates
        .iter()
        .chain(&rest.updates)
        .map(|u| u.diagnostics.global_step)
        .collect();
    assert_eq!(steps, [32, 64, 96, 128, 160, 192]);
    let lr: Vec<f64> = first
        .updates
        .iter()
        .chain(&rest.updates)
        .map(|u| u.diagnostics.learning_rate)
        .collect();
    let expected: Vec<f64> = (0..6).map(|k| (1.0 - k as f64 / 6.0) * 2.5e-4).collect();
    for (a, b) in lr.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-12, "{lr:?} vs {expected:?}");
    }
    let text = String::from_utf8(log).unwrap();
    assert_eq!(text.lines().count(), 7, "{text}");
    assert_eq!(text.matches("global_step").count(), 1);
    assert!(rest.wall_s >= first.wall_s);
    assert_eq!(rest.global_step, 192);
    // Killed after its last save and before its checkpoint was written, it resumes to nothing
    // left to do and still knows how far it went.
    let again = train::train(
        envs(80),
        gat.clone(),
        &cfg(true, None),
        total,
        5,
        &mut std::io::sink(),
        &mut |_| {},
    )
    .unwrap();
    assert!(again.updates.is_empty());
    assert_eq!(
        (again.global_step, again.resumed_at.clone()),
        (192, vec![3, 6])
    );

    // Another length or another model is not this state's training; no state, nothing to resume.
    let e = train::train(
        envs(70),
        gat.clone(),
        &cfg(true, None),
        2 * total,
        5,
        &mut std::io::sink(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("decisions planned"), "{e}");
    let other = spec(&envs(60)[0], EncoderKind::Gcn);
    let e = train::train(
        envs(70),
        other,
        &cfg(true, None),
        total,
        5,
        &mut std::io::sink(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    let mut vs = VarStore::new(Device::Cpu);
    let _model = GraphAgent::new(&vs.root(), gat.clone());
    let mut opt = Stateful::new(&vs, rule, 1e-3);
    let e = resume::load(&dir.path().join("none"), &mut vs, &mut opt, &id).unwrap_err();
    assert!(matches!(e, ResumeError::Missing { .. }), "{e}");
}

/// SAC saves and resumes as PPO does, with its replay buffer: saving changes nothing in the
/// training (the same seed with a state saved after every logged update gives the same
/// weights as without); a training stopped after logged update 2 of 4 has its buffer in the
/// state, resumes to the 4 updates and the decisions an uninterrupted one does, with one log
/// header; another SAC setting is refused with the difference.
#[test]
fn a_stopped_sac_training_resumes_with_its_replay_buffer() {
    use graphscaler_learn::graph_sac;
    use graphscaler_learn::resume::{self, Checkpointing};
    use graphscaler_learn::sac::SacConfig;
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sac.resume");
    let envs = |seed: u64| two_envs(1, seed);
    let gcn = spec(&envs(40)[0], EncoderKind::Gcn);
    let cfg = SacConfig {
        buffer_size: 100,
        batch_size: 16,
        learning_starts: 32,
        update_frequency: 1,
        target_network_frequency: 1,
        hidden: 16,
        ..SacConfig::default()
    };
    let ck = |every: usize, resume: bool, stop_after: Option<usize>| Checkpointing {
        dir: state.clone(),
        every,
        resume,
        deadline: None,
        stop_after,
    };
    let run =
        |envs: Vec<TwinEnv>, cfg: &SacConfig, ck: Option<&Checkpointing>, log: &mut Vec<u8>| {
            graph_sac::train(
                envs,
                gcn.clone(),
                cfg,
                128,
                3,
                32,
                log,
                &mut |_| {},
                None,
                ck,
            )
        };
    let plain = run(envs(40), &cfg, None, &mut vec![]).unwrap();
    let saving = run(envs(40), &cfg, Some(&ck(1, false, None)), &mut vec![]).unwrap();
    let theirs = plain.vs.variables();
    for (k, t) in saving.vs.variables() {
        assert!(t.equal(&theirs[&k]), "{k}");
    }
    assert_eq!((saving.iterations, saving.stopped), (4, None));
    std::fs::remove_dir_all(&state).unwrap();

    let mut log = vec![];
    let first = run(envs(40), &cfg, Some(&ck(0, false, Some(2))), &mut log).unwrap();
    assert_eq!((first.stopped, first.global_step), (Some(2), 64));
    let saved = resume::read_state(&state).unwrap().unwrap();
    assert_eq!(
        (saved.algo.as_str(), saved.iteration, saved.global_step),
        ("sac", 2, 64)
    );
    assert!(saved.optimizer_steps > 0);
    assert_eq!(
        saved.other_optimizer_steps.keys().collect::<Vec<_>>(),
        ["opt_alpha", "opt_q"]
    );
    let tensors: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(state.join(&saved.weights))
            .unwrap()
            .into_iter()
            .collect();
    // 64 decisions, each one transition; 64 + 2 distinct observations (one per environment
    // to start from).
    assert_eq!(tensors["buffer/obs"].size(), [64]);
    assert_eq!(tensors["buffer/window"].size(), [66]);
    for part in [
        "critics/qf1.",
        "critics/qf2.",
        "targets/qf1.",
        "targets/qf2.",
        "opt_q/m/qf1.",
    ] {
        assert!(tensors.keys().any(|k| k.starts_with(part)), "{part}");
    }
    assert!(tensors.contains_key("alpha/log_alpha"));
    for (k, t) in first.vs.variables() {
        assert!(t.equal(&tensors[&format!("model/{k}")]), "{k}");
    }

    let rest = run(envs(50), &cfg, Some(&ck(0, true, None)), &mut log).unwrap();
    assert_eq!((rest.stopped, rest.resumed_at.clone()), (None, vec![2]));
    let steps: Vec<usize> = first
        .updates
        .iter()
        .chain(&rest.updates)
        .map(|u| u.diagnostics.global_step)
        .collect();
    assert_eq!(steps, [32, 64, 96, 128]);
    assert_eq!(rest.global_step, 128);
    assert!(rest.wall_s >= first.wall_s);
    let text = String::from_utf8(log).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert_eq!(text.matches("global_step").count(), 1);

    // Another setting is another training.
    let run2 = run(envs(50), &cfg, Some(&ck(0, false, Some(2))), &mut vec![]).unwrap();
    assert_eq!(run2.stopped, Some(2));
    let other = SacConfig {
        tau: 0.01,
        ..cfg.clone()
    };
    let e = run(envs(50), &other, Some(&ck(0, true, None)), &mut vec![]).unwrap_err();
    assert!(e.to_string().contains("other settings"), "{e}");
}
