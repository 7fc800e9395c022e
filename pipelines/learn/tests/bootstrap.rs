//! Learning from a store (`graphscaler train --from`): the tuned HPA recorded on the twin through
//! the served loop, cloned, and compared with it on held-out windows; then fine-tuning on the
//! twin from the clone against fine-tuning from scratch at the same budget.

#![allow(clippy::unwrap_used)]

use graphscaler_actuate::Guardrails;
use graphscaler_graph::recorder::Recorder;
use graphscaler_graph::store::read_paths;
use graphscaler_graph::GraphConfig;
use graphscaler_learn::agent::{AgentSpec, EncoderKind, GraphAgent, Obs};
use graphscaler_learn::decide::ActionRules;
use graphscaler_learn::envs::twin::{TwinEnv, TwinEnvConfig};
use graphscaler_learn::offline::{self, BootstrapConfig, OfflineError};
use graphscaler_learn::ppo::PpoConfig;
use graphscaler_learn::reward::RewardConfig;
use graphscaler_learn::train::{self, Algo, NormStats, TrainConfig};
use graphscaler_pipeline::served::{Cut, Served};
use graphscaler_policy::{Hpa, HpaConfig};
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use tch::nn::VarStore;
use tch::Device;

/// libtorch's generator is process-wide: tests that train take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn topology(twin: &TwinConfig) -> Topology {
    Topology::online_boutique(&twin.fanout_parameters).unwrap()
}

fn hpa() -> (u32, HpaConfig) {
    let h = HpaConfig::default();
    (h.tuned_target_cpu_utilization, h)
}

fn rules(twin: &TwinConfig) -> ActionRules {
    ActionRules {
        min_replicas: twin.limits.min_replicas,
        max_replicas: twin.limits.max_replicas,
        ..ActionRules::default()
    }
}

/// The tuned HPA on `shapes` (one run each, `secs` long), recorded into `dir` by the served loop.
fn record(dir: &std::path::Path, shapes: &[(Shape, u64)], secs: f64) {
    let tcfg = TwinConfig::default();
    let (target, hcfg) = hpa();
    for (shape, seed) in shapes {
        let twin = Twin::new(
            topology(&tcfg),
            tcfg.clone(),
            SloConfig::default(),
            shape.clone(),
            secs,
            *seed,
        )
        .unwrap();
        let store = Recorder::open(dir, 1000, RewardConfig::default()).unwrap();
        let mut policy = Hpa::new(target, &hcfg);
        let run = Served::new(
            twin,
            &GraphConfig::default(),
            Cut::Plain,
            Guardrails::default(),
        )
        .with_store(store)
        .run(&mut policy)
        .unwrap();
        assert_eq!(run.counts.store_failures, 0);
    }
}

fn spec(twin: &TwinConfig, services: Vec<String>, node_types: Vec<String>) -> AgentSpec {
    AgentSpec::new(
        EncoderKind::Gat,
        "online-boutique".into(),
        services,
        node_types,
        rules(twin),
    )
}

fn bcfg() -> BootstrapConfig {
    BootstrapConfig {
        epochs: 30,
        minibatch: 64,
        learning_rate: 1e-3,
        vf_coef: 0.5,
        cpu_coef: 1.0,
        max_grad_norm: 0.5,
        holdout_share: 0.25,
        gamma: 0.98,
    }
}

fn env_config(scenarios: Vec<Shape>, episode_s: f64) -> TwinEnvConfig {
    let twin = TwinConfig::default();
    TwinEnvConfig {
        topology: topology(&twin),
        rules: rules(&twin),
        twin,
        slo: SloConfig::default(),
        scenarios,
        episode_s,
        reward: RewardConfig::default(),
        window: 1,
        handover: None,
        graph: GraphConfig::default(),
        rails: Guardrails::default(),
    }
}

/// The mean reward per window and the share of windows violating the SLO of `agent` acting
/// greedily on one episode of `env`.
fn score(agent: &GraphAgent, mut env: TwinEnv) -> (f64, f64) {
    let (mut sum, mut violating, mut ticks) = (0.0, 0usize, 0usize);
    loop {
        let obs = Obs::new(&env.window(), env.mask());
        let a = tch::no_grad(|| agent.act(&[&obs], true)).actions[0];
        let r = env.step(&a).unwrap();
        if let Some(t) = r.terms {
            sum += t.value;
            violating += usize::from(t.slo_vio > 0.0);
            ticks += 1;
        }
        if r.truncated {
            break;
        }
    }
    (
        sum / ticks.max(1) as f64,
        violating as f64 / ticks.max(1) as f64,
    )
}

/// Cloning the tuned HPA from its recordings agrees with its choices on windows it was not
/// trained on, far beyond what doing nothing would; fine-tuning on the twin from that clone beats
/// fine-tuning from scratch for the same number of decisions, on an evaluation seed.
#[test]
fn a_clone_of_the_tuned_hpa_agrees_with_it_and_fine_tunes_better_than_scratch() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    tch::set_num_threads(1);
    tch::manual_seed(1);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    record(
        &store,
        &[
            (Shape::Rush, 11),
            (Shape::Fluctuating, 12),
            (Shape::Peak, 13),
            (Shape::OffPeak, 14),
        ],
        4.0 * 3600.0,
    );
    let rows = read_paths(&[store]).unwrap();
    let tcfg = TwinConfig::default();
    let probe = TwinEnv::new(env_config(vec![Shape::Rush], 600.0), 1).unwrap();
    let spec = spec(
        &tcfg,
        probe.services().to_vec(),
        probe.node_types().to_vec(),
    );
    let data = offline::dataset(&rows, &spec, &bcfg()).unwrap();
    let d = &data.summary;
    assert_eq!((d.rows, d.runs, d.invalid), (rows.len(), 4, 0));
    assert_eq!(
        d.decided, d.rows,
        "every window of the served loop is decided"
    );
    assert_eq!(d.decided_by.keys().collect::<Vec<_>>(), ["policy/hpa-50"]);
    assert!(d.held_out_windows * 5 > d.decided && d.held_out_windows * 3 < d.decided);

    let vs = VarStore::new(Device::Cpu);
    let agent = GraphAgent::new(&vs.root(), spec.clone());
    let before = offline::agreement(&agent, data.held_out());
    let mut log = Vec::new();
    let epochs = offline::bootstrap(&agent, &vs, &data, &bcfg(), 1, &mut log, &mut |_| {}).unwrap();
    let after = offline::agreement(&agent, data.held_out());
    eprintln!(
        "{}; nll {:.3} -> {:.3} (held out {:.3})",
        after.describe(&before),
        epochs[0].nll,
        epochs.last().unwrap().nll,
        epochs.last().unwrap().held_out_nll,
    );
    let text = String::from_utf8(log).unwrap();
    assert_eq!(text.lines().count(), epochs.len() + 1);
    assert!(epochs.last().unwrap().nll < 0.5 * epochs[0].nll);
    // Scale-ups follow from what a snapshot shows (CPU over request above the target); the
    // HPA's scale-downs also depend on its stabilisation window and the replica count, which the
    // model does not see: the clone gets most ups and some downs.
    assert!(after.ups.0 >= 10 && after.downs.0 >= 10, "{after:?}");
    assert!(after.ups.1 * 2 >= after.ups.0, "scale-ups made: {after:?}");
    assert!(
        after.downs.1 * 5 >= after.downs.0,
        "scale-downs made: {after:?}"
    );
    assert!(after.precision() >= 0.5, "{after:?}");
    // Most windows are left alone by both: a clone that acted at random would fall far below
    // the share a policy that never acts gets.
    assert!(
        after.share() >= after.nothing_share() - 0.05,
        "the clone agrees on {:.3} of windows, doing nothing on {:.3}",
        after.share(),
        after.nothing_share()
    );

    // The clone as a checkpoint, with the reward scale its critic was fitted to.
    let clone = dir.path().join("clone");
    agent
        .save(
            &clone,
            &vs,
            "ppo",
            "test",
            serde_json::json!({ "reward_norm": data.norm }),
        )
        .unwrap();
    let m = graphscaler_learn::checkpoint::manifest(&clone).unwrap();
    assert_eq!(NormStats::of_manifest(&m), Some(data.norm));

    // The same short fine-tuning from the clone and from scratch, on the load the store
    // recorded (`--scenario recorded`, the default after `--from`); both judged on one
    // evaluation episode of Rush with a seed neither trained on.
    let loads = offline::recorded_loads(&rows, 3600.0).unwrap();
    assert_eq!(loads.len(), 16, "four 4 h runs in 1 h pieces");
    let tune = |init: Option<std::path::PathBuf>| {
        tch::manual_seed(2);
        let envs = (0..2)
            .map(|i| TwinEnv::new(env_config(loads.clone(), 3600.0), 100 + i).unwrap())
            .collect();
        let cfg = TrainConfig {
            algo: Algo::Ppo,
            ppo: PpoConfig {
                num_steps: 64,
                learning_rate: 3e-4,
                num_minibatches: 2,
                update_epochs: 2,
                gamma: 0.98,
                ent_coef: 0.001,
                target_kl: Some(0.05),
                clip_vloss: false,
                hidden: spec.hidden,
                ..PpoConfig::default()
            },
            a2c_learning_rate: 7e-4,
            a2c_normalize_advantage: true,
            init,
            checkpointing: None,
            keep: None,
        };
        let t = train::train(
            envs,
            spec.clone(),
            &cfg,
            512,
            2,
            &mut Vec::new(),
            &mut |_| {},
        )
        .unwrap();
        score(
            &t.agent,
            TwinEnv::new(env_config(vec![Shape::Rush], 4.0 * 3600.0), 9001).unwrap(),
        )
    };
    let (cloned, cloned_vio) = tune(Some(clone));
    let (scratch, scratch_vio) = tune(None);
    eprintln!(
        "after 512 decisions of fine-tuning, on Rush seed 9001: from the clone {cloned:.3}/tick ({:.1}% violating), from scratch {scratch:.3}/tick ({:.1}%)",
        100.0 * cloned_vio,
        100.0 * scratch_vio
    );
    assert!(cloned > scratch, "clone {cloned} vs scratch {scratch}");
}

/// The fine-tuning load of `--from` replays the entry request rates the store recorded: the
/// twin driven by a recorded piece serves, window by window, about what the recording served;
/// rows without a rate cut a run, and a store without any is refused.
#[test]
fn the_recorded_load_replays_what_the_store_saw() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    record(&store, &[(Shape::Rush, 21)], 2.0 * 3600.0);
    let rows = read_paths(&[store]).unwrap();
    let rates: Vec<f64> = rows
        .iter()
        .map(|r| f64::from(r.snapshot.entry_rps.unwrap()))
        .collect();
    let loads = offline::recorded_loads(&rows, 3600.0).unwrap();
    assert_eq!(loads.len(), 2);
    let Shape::Trace(first) = &loads[0] else {
        panic!("{:?}", loads[0])
    };
    assert_eq!(first.name, "recorded-r1-p1");
    assert_eq!(first.duration_s(), 3600.0);
    let c = TwinConfig::default().load;
    for (k, r) in rates[..120].iter().enumerate() {
        let at = loads[0].rps(30.0 * k as f64 + 15.0, 3600.0, &c);
        assert!(
            (at - r).abs() < 1e-3 * r.max(1.0),
            "window {k}: {at} vs {r}"
        );
    }
    // Replayed by the twin under the same HPA (another seed): the served rate follows.
    let replay = dir.path().join("replay");
    let tcfg = TwinConfig::default();
    let (target, hcfg) = hpa();
    let twin = Twin::new(
        topology(&tcfg),
        tcfg.clone(),
        SloConfig::default(),
        loads[1].clone(),
        3600.0,
        77,
    )
    .unwrap();
    Served::new(
        twin,
        &GraphConfig::default(),
        Cut::Plain,
        Guardrails::default(),
    )
    .with_store(Recorder::open(&replay, 1000, RewardConfig::default()).unwrap())
    .run(&mut Hpa::new(target, &hcfg))
    .unwrap();
    let served: Vec<f64> = read_paths(&[replay])
        .unwrap()
        .iter()
        .map(|r| f64::from(r.snapshot.entry_rps.unwrap()))
        .collect();
    let recorded = &rates[120..];
    let n = served.len().min(recorded.len());
    assert!(n >= 110, "{n} windows replayed");
    let total = |x: &[f64]| x[..n].iter().sum::<f64>();
    let ratio = total(&served) / total(recorded);
    assert!((0.95..1.05).contains(&ratio), "served/recorded {ratio}");
    let mean = |x: &[f64]| total(x) / n as f64;
    let (ms, mr) = (mean(&served), mean(recorded));
    let cov: f64 = (0..n).map(|i| (served[i] - ms) * (recorded[i] - mr)).sum();
    let var = |x: &[f64], m: f64| (0..n).map(|i| (x[i] - m).powi(2)).sum::<f64>();
    let corr = cov / (var(&served, ms) * var(recorded, mr)).sqrt();
    eprintln!("replay of a recorded Rush hour: served/recorded {ratio:.3}, correlation {corr:.3} over {n} windows");
    assert!(corr > 0.9, "correlation {corr}");

    // A row without a rate cuts its run; a store without any rate is refused.
    let mut cut = rows.clone();
    cut[100].snapshot.entry_rps = None;
    let loads = offline::recorded_loads(&cut, 3600.0).unwrap();
    let lens: Vec<f64> = loads
        .iter()
        .map(|l| match l {
            Shape::Trace(t) => t.duration_s(),
            _ => 0.0,
        })
        .collect();
    // 100 windows before the gap; the 1 h piece after it takes the remainder.
    let after = 30.0 * (rows.len() - 101) as f64;
    assert_eq!(lens, [3000.0, after], "{lens:?}");
    for r in &mut cut {
        r.snapshot.entry_rps = None;
    }
    let e = offline::recorded_loads(&cut, 3600.0).unwrap_err();
    assert!(
        matches!(e, OfflineError::NoRates { rows } if rows == cut.len()),
        "{e}"
    );
    assert!(e.to_string().contains("entry request rate"), "{e}");
}

/// A store of another cluster, one without decisions and a split that leaves nothing held out
/// are refused with what was wrong.
#[test]
fn stores_it_cannot_learn_from_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    record(&store, &[(Shape::Peak, 1)], 600.0);
    let rows = read_paths(&[store]).unwrap();
    let tcfg = TwinConfig::default();
    let services = rows[0].snapshot.services.clone();
    let types = vec!["t0".to_string(), "t1".to_string()];
    let mut other = services.clone();
    other[0] = "ledger".into();
    let e = offline::dataset(&rows, &spec(&tcfg, other, types.clone()), &bcfg()).unwrap_err();
    assert!(
        matches!(&e, OfflineError::Services { row: 0, missing, .. } if missing == &["ledger".to_string()]),
        "{e}"
    );
    assert!(e.to_string().contains("ledger"), "{e}");

    let plain: Vec<_> = rows
        .iter()
        .map(|r| graphscaler_graph::store::Transition::plain(r.snapshot.clone()))
        .collect();
    let e = offline::dataset(
        &plain,
        &spec(&tcfg, services.clone(), types.clone()),
        &bcfg(),
    )
    .unwrap_err();
    assert!(
        matches!(e, OfflineError::NoDecisions { rows } if rows == plain.len()),
        "{e}"
    );

    let none_held = BootstrapConfig {
        holdout_share: 0.0,
        ..bcfg()
    };
    let e = offline::dataset(&rows, &spec(&tcfg, services, types), &none_held).unwrap_err();
    assert!(
        matches!(
            e,
            OfflineError::Split {
                side: "held out",
                ..
            }
        ),
        "{e}"
    );
}
