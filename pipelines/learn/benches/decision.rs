//! Decision latency (snapshot → action, one core) for Online Boutique and a 1,000-service graph,
//! the same GAT forward pass in PyTorch Geometric timed in the same run (as a ratio), and GAT-PPO
//! training throughput on the twin.
//!
//!     cargo bench -p graphscaler-learn --bench decision
//!
//! Goals (docs/benchmarks.md): p99 under 2 ms for Online Boutique and under 50 ms for 1,000
//! services. Prints its figures; asserts nothing about time.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use graphscaler_learn::agent::{AgentSpec, EncoderKind, GraphAgent, Obs};
use graphscaler_learn::decide::{ActionRules, DecisionState};
use graphscaler_learn::encoder::{Encoder, GatEncoder, GatEncoderConfig};
use graphscaler_learn::envs::twin::{TwinEnv, TwinEnvConfig};
use graphscaler_learn::ppo::PpoConfig;
use graphscaler_learn::reward::RewardConfig;
use graphscaler_learn::train::{self, Algo, TrainConfig};
use graphscaler_learn::HeteroGraph;
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, SloConfig, Topology, Twin, TwinConfig};
use tch::nn::VarStore;
use tch::Device;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * v.len() as f64) as usize).min(v.len() - 1)];
    (q(0.5), q(0.99))
}

fn snapshot(topo: &Topology, cfg: &TwinConfig) -> Snapshot {
    let mut twin = Twin::new(
        topo.clone(),
        cfg.clone(),
        SloConfig::default(),
        Shape::Peak,
        3600.0,
        1,
    )
    .expect("twin");
    let mut last = None;
    for _ in 0..20 {
        last = Some(twin.advance().0);
    }
    Snapshot::from_observation(&last.expect("ticks"))
}

fn write_graph(s: &Snapshot, path: &Path) {
    let flat = |e: &graphscaler_schemas::snapshot::EdgeSet| {
        let mut v: Vec<u32> = e.src.clone();
        v.extend(&e.dst);
        v
    };
    let attrs = |e: &graphscaler_schemas::snapshot::EdgeSet| -> Vec<f32> {
        e.attr.iter().flatten().copied().collect()
    };
    let doc = serde_json::json!({
        "x_service": s.service_x.iter().flatten().collect::<Vec<_>>(),
        "x_node": s.node_x.iter().flatten().collect::<Vec<_>>(),
        "calls": flat(&s.calls), "calls_attr": attrs(&s.calls),
        "runs_on": flat(&s.runs_on), "runs_on_attr": attrs(&s.runs_on),
        "hosts": flat(&s.hosts), "hosts_attr": attrs(&s.hosts),
    });
    std::fs::write(path, doc.to_string()).expect("write graph");
}

fn pyg(graph: &Path, reps: usize) -> Option<(f64, f64)> {
    let python = root().join(".venv/bin/python");
    let out = Command::new(python)
        .arg(root().join("scripts/pyg_forward_bench.py"))
        .arg(graph)
        .arg(reps.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("pyg: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some((it.next()??, it.next()??))
}

fn latency(name: &str, topo: &Topology, reps: usize) {
    let cfg = TwinConfig::default();
    let s = snapshot(topo, &cfg);
    let node_types: Vec<String> = cfg
        .cluster
        .node_types
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let rules = ActionRules::default();
    let spec = AgentSpec::new(
        EncoderKind::Gat,
        name.into(),
        s.services.clone(),
        node_types.clone(),
        rules.clone(),
    );
    let vs = VarStore::new(Device::Cpu);
    let agent = GraphAgent::new(&vs.root(), spec);
    // Snapshot → tensors → encoder → heads → one decision, as the policy stage takes it.
    let mut state = DecisionState::new(s.services.clone(), node_types);
    let mut decide = || {
        let t0 = Instant::now();
        state.tick(&s);
        let obs = Obs::new(&[&s], state.mask(&rules, &s, None));
        let step = tch::no_grad(|| agent.act(&[&obs], true));
        std::hint::black_box(step.actions);
        t0.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..5 {
        decide();
    }
    let (p50, p99) = quantiles((0..reps).map(|_| decide()).collect());
    // The encoder's forward pass alone, against PyG's.
    let vs2 = VarStore::new(Device::Cpu);
    let enc = GatEncoder::new(&vs2.root(), GatEncoderConfig::default());
    let g = HeteroGraph::from_snapshot(&s, Device::Cpu);
    let fwd = || {
        let t0 = Instant::now();
        std::hint::black_box(tch::no_grad(|| enc.encode(&g)));
        t0.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..5 {
        fwd();
    }
    let (f50, f99) = quantiles((0..reps).map(|_| fwd()).collect());
    let dir = std::env::temp_dir().join(format!("graphscaler-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.json"));
    write_graph(&s, &file);
    let py = pyg(&file, reps);
    println!(
        "{name}: {} services, {} machines, {} calls edges",
        s.services.len(),
        s.nodes.len(),
        s.calls.len()
    );
    println!("  decision (snapshot -> action), 1 thread: p50 {p50:.3} ms, p99 {p99:.3} ms ({reps} decisions)");
    println!("  GAT encoder forward, graphscaler (tch): p50 {f50:.3} ms, p99 {f99:.3} ms");
    match py {
        Some((y50, y99)) => println!(
            "  GAT encoder forward, PyTorch Geometric 2.8.1: p50 {y50:.3} ms, p99 {y99:.3} ms; ratio graphscaler / PyG at p50 {:.2}",
            f50 / y50
        ),
        None => println!("  PyTorch Geometric: not run (no .venv/bin/python with torch_geometric)"),
    }
}

fn throughput() {
    let twin = TwinConfig::default();
    let topology = Topology::online_boutique(&twin.fanout_parameters).expect("topology");
    let cfg = TwinEnvConfig {
        topology,
        twin,
        slo: SloConfig::default(),
        scenarios: Shape::all_named(),
        episode_s: 7200.0,
        reward: RewardConfig::default(),
        rules: ActionRules::default(),
        window: 1,
        handover: None,
        graph: graphscaler_graph::GraphConfig::default(),
        rails: graphscaler_actuate::Guardrails::default(),
    };
    let envs: Vec<TwinEnv> = (0..8)
        .map(|i| TwinEnv::new(cfg.clone(), i).expect("env"))
        .collect();
    let spec = AgentSpec::new(
        EncoderKind::Gat,
        "online-boutique".into(),
        envs[0].services().to_vec(),
        envs[0].node_types().to_vec(),
        ActionRules::default(),
    );
    let tc = TrainConfig {
        algo: Algo::Ppo,
        ppo: PpoConfig {
            num_steps: 64,
            learning_rate: 3e-4,
            gamma: 0.98,
            clip_vloss: false,
            ..PpoConfig::default()
        },
        a2c_learning_rate: 7e-4,
        a2c_normalize_advantage: true,
        init: None,
        checkpointing: None,
        keep: None,
    };
    let steps = 8 * 64 * 3;
    let t0 = Instant::now();
    let t =
        train::train(envs, spec, &tc, steps, 1, &mut std::io::sink(), &mut |_| {}).expect("train");
    let secs = t0.elapsed().as_secs_f64();
    let ticks = t.updates.last().map_or(0, |u| u.ticks);
    println!(
        "GAT-PPO training on the twin (8 envs x 64 decisions, 4 epochs x 4 minibatches, 1 thread): {:.0} decisions/s, {:.0} twin ticks/s ({steps} decisions in {secs:.1} s)",
        steps as f64 / secs,
        ticks as f64 / secs
    );
}

fn main() {
    tch::set_num_threads(1);
    let cfg = TwinConfig::default();
    let ob = Topology::online_boutique(&cfg.fanout_parameters).expect("topology");
    latency("online-boutique", &ob, 500);
    latency("synthetic-1000", &Topology::synthetic(1000, 1), 50);
    throughput();
}
