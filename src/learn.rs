//! `graphscaler train`, and the learned policies that `eval` and the policy stage load.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use graphscaler_eval::runner::Learned;
use graphscaler_eval::{EvalError, Policy};
use graphscaler_learn::agent::{AgentSpec, EncoderKind};
use graphscaler_learn::checkpoint;
use graphscaler_learn::envs::twin::{Handover, TwinEnv, TwinEnvConfig};
use graphscaler_learn::online::OnlineLearner;
use graphscaler_learn::serve::LearnedPolicy;
use graphscaler_learn::tensorboard::{CsvTee, EventWriter};
use graphscaler_learn::train::{self, Algo, TrainConfig};
use graphscaler_twin::Topology;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{graphscaler_vars, parse_duration, Config};

/// `graphscaler train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// gat, gcn, dysat or mlp.
    #[arg(long, default_value = "gat")]
    encoder: String,
    /// ppo, a2c or sac.
    #[arg(long, default_value = "ppo")]
    algo: String,
    /// `mix` (the four shapes) or comma-separated scenarios.
    #[arg(long, default_value = "mix")]
    scenario: String,
    /// Decisions to train for, over all environments.
    #[arg(long, default_value_t = 200_000)]
    steps: usize,
    /// Seed (model initialisation, sampling and the environments' runs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Environments (default: learn.train.num_envs).
    #[arg(long)]
    envs: Option<usize>,
    /// Episode length (default: learn.train.episode_s).
    #[arg(long, value_parser = parse_duration)]
    episode: Option<f64>,
    /// Checkpoint to write, without extension: NAME.safetensors, NAME.json, NAME.csv (default: <learn.checkpoint_dir>/<encoder>-<algo>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Topology file (default: twin.topology).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Threads libtorch may use.
    #[arg(long, default_value_t = 1)]
    torch_threads: i32,
    /// Start from this checkpoint's weights (the same encoder, sizes and cluster; PPO/A2C):
    /// a second stage of training, e.g. under another reward.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Also write the diagnostics as TensorBoard event files under this directory
    /// (`tensorboard --logdir DIR`).
    #[arg(long)]
    tensorboard: Option<PathBuf>,
}

/// The name a topology is known by in checkpoints: its file's stem, or `synthetic-N`.
pub fn topology_name(t: &Topology) -> String {
    Path::new(&t.source)
        .file_stem()
        .map_or_else(|| t.source.clone(), |s| s.to_string_lossy().into_owned())
}

/// `ppo`, `a2c` or `sac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlgoArg {
    OnPolicy(Algo),
    Sac,
}

fn algo(s: &str) -> Result<AlgoArg> {
    match s {
        "ppo" => Ok(AlgoArg::OnPolicy(Algo::Ppo)),
        "a2c" => Ok(AlgoArg::OnPolicy(Algo::A2c)),
        "sac" => Ok(AlgoArg::Sac),
        _ => bail!("unknown algorithm `{s}`: ppo, a2c or sac"),
    }
}

/// Runs `graphscaler train`.
pub fn run_train(cfg: &Config, a: TrainArgs) -> Result<()> {
    let encoder = EncoderKind::parse(&a.encoder)
        .with_context(|| format!("unknown encoder `{}`: gat, gcn, dysat or mlp", a.encoder))?;
    let algo_arg = algo(&a.algo)?;
    graphscaler_learn::tch::set_num_threads(a.torch_threads.max(1));
    let topology = cfg.topology(a.topology.as_deref())?;
    let scenarios = if a.scenario == "mix" {
        graphscaler_twin::Shape::all_named()
    } else {
        crate::scenarios(&a.scenario)?
    };
    let l = &cfg.learn;
    let t = &l.train;
    let n_envs = a.envs.unwrap_or(t.num_envs).max(1);
    let env_cfg = TwinEnvConfig {
        topology: topology.clone(),
        twin: cfg.twin.clone(),
        slo: cfg.slo.clone(),
        scenarios,
        episode_s: a.episode.unwrap_or(t.episode_s),
        reward: l.reward.reward(
            cfg.slo.latency_ms,
            cfg.slo.error_rate,
            cfg.eval.target_utilization,
        ),
        rules: l.actions.clone(),
        window: 1,
        handover: (t.handover_share > 0.0).then(|| Handover {
            hpa: cfg.hpa.clone(),
            target: cfg.hpa.tuned_target_cpu_utilization,
            share: t.handover_share,
            max_s: t.handover_max_s,
        }),
    };
    let probe = TwinEnv::new(env_cfg.clone(), a.seed)?;
    let mut rules = l.actions.clone();
    rules.min_replicas = cfg.twin.limits.min_replicas;
    rules.max_replicas = cfg.twin.limits.max_replicas;
    let spec = AgentSpec::new(
        encoder,
        topology_name(&topology),
        probe.services().to_vec(),
        probe.node_types().to_vec(),
        rules,
    );
    let env_cfg = TwinEnvConfig {
        window: spec.window,
        ..env_cfg
    };
    let envs = (0..n_envs)
        .map(|i| TwinEnv::new(env_cfg.clone(), a.seed * 1000 + i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let algo_name = match algo_arg {
        AlgoArg::OnPolicy(x) => x.name(),
        AlgoArg::Sac => "sac",
    };
    let name = format!("{}-{}", encoder.name(), algo_name);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| Path::new(&l.checkpoint_dir).join(&name));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = checkpoint::file(&out, "csv");
    let csv = std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    );
    let mut log: Box<dyn Write> = match &a.tensorboard {
        Some(dir) => {
            let events = EventWriter::create(dir)
                .with_context(|| format!("creating TensorBoard events in {}", dir.display()))?;
            say!("TensorBoard events: {}", events.path().display());
            Box::new(CsvTee::new(csv, events))
        }
        None => Box::new(csv),
    };
    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} decisions ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut on_update = |u: &train::Update| {
        bar.set_position(u.diagnostics.global_step as u64);
        bar.set_message(format!(
            "reward/tick {:.3}  slo {:.3} slack {:.3} over {:.3}",
            u.mean_reward, u.terms[0], u.terms[1], u.terms[2]
        ));
    };
    let (agent, vs, updates) = match algo_arg {
        AlgoArg::OnPolicy(algo) => {
            let mut ppo = t.ppo(spec.hidden);
            if algo == Algo::A2c {
                ppo.num_steps = t.a2c_num_steps;
            }
            let tc = TrainConfig {
                algo,
                ppo,
                a2c_learning_rate: t.a2c_learning_rate,
                init: a.init.clone(),
            };
            let r = train::train(
                envs,
                spec,
                &tc,
                a.steps,
                a.seed as i64,
                &mut log,
                &mut on_update,
            )?;
            (r.agent, r.vs, r.updates)
        }
        AlgoArg::Sac => {
            if a.init.is_some() {
                bail!("--init starts PPO or A2C from a checkpoint; SAC trains from scratch");
            }
            let sc = t.sac(spec.hidden);
            let r = graphscaler_learn::graph_sac::train(
                envs,
                spec,
                &sc,
                a.steps,
                a.seed,
                512,
                &mut log,
                &mut on_update,
            )?;
            (r.agent, r.vs, r.updates)
        }
    };
    log.flush()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let steps = updates.last().map_or(0, |u| u.diagnostics.global_step);
    // Settings given through the environment shape the run as much as the arguments do.
    let mut env: Vec<String> = graphscaler_vars()
        .into_iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    env.sort();
    let command = format!(
        "{}graphscaler train --encoder {} --algo {} --scenario {} --steps {} --seed {}{}{}",
        env.concat(),
        encoder.name(),
        algo_name,
        a.scenario,
        a.steps,
        a.seed,
        a.envs.map_or(String::new(), |n| format!(" --envs {n}")),
        a.init
            .as_ref()
            .map_or(String::new(), |p| format!(" --init {}", p.display()))
    );
    let m = agent.save(
        &out,
        &vs,
        algo_name,
        &command,
        serde_json::json!({
            "steps": steps,
            "seed": a.seed,
            "envs": n_envs,
            "scenarios": a.scenario,
            "episode_s": env_cfg.episode_s,
            "reward": cfg.learn.reward,
            "init": a.init.as_ref().map(|p| p.display().to_string()),
            "wall_s": secs,
        }),
    )?;
    say!(
        "trained {name} for {steps} decisions in {secs:.0} s ({:.0} decisions/s); {} parameters",
        steps as f64 / secs,
        m.params
            .values()
            .map(|s| s.iter().product::<i64>())
            .sum::<i64>()
    );
    if let Some(u) = updates.last() {
        say!(
            "last rollout: reward/tick {:.3} (SLO_vio {:.3}, Slack {:.3}, Overshoot {:.3}, ReplicaLag {:.3}), nothing {:.0}%",
            u.mean_reward,
            u.terms[0],
            u.terms[1],
            u.terms[2],
            u.terms[3],
            100.0 * u.nothing
        );
    }
    say!(
        "wrote {} (+ .json manifest) and {}",
        checkpoint::file(&out, "safetensors").display(),
        log_path.display()
    );
    Ok(())
}

/// Learned policies from checkpoints, for `eval`.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    topology: String,
    deterministic: bool,
}

impl Checkpoints {
    /// Policies under `cfg.learn.checkpoint_dir` for `topology`.
    pub fn new(cfg: &Config, topology: &Topology) -> Self {
        Self {
            dir: cfg.learn.checkpoint_dir.clone().into(),
            topology: topology_name(topology),
            deterministic: cfg.learn.act != "sample",
        }
    }
}

impl Learned for Checkpoints {
    fn build(&self, name: &str, path: Option<&str>) -> graphscaler_eval::Result<Box<dyn Policy>> {
        let path = path.map_or_else(|| self.dir.join(name), PathBuf::from);
        graphscaler_learn::tch::set_num_threads(1);
        let p = LearnedPolicy::load(&path, &self.topology, self.deterministic)
            .map_err(|e| EvalError::Policy(format!("policy `{name}`: {e}")))?;
        Ok(Box::new(p))
    }
}

/// The checkpoint a policy-stage name means: a learned baseline's name (under
/// `learn.checkpoint_dir`) or `checkpoint:PATH`.
pub fn learned_checkpoint(name: &str, cfg: &Config) -> Option<PathBuf> {
    if let Some(p) = name.strip_prefix("checkpoint:") {
        return Some(p.into());
    }
    graphscaler_eval::runner::LEARNED
        .contains(&name)
        .then(|| Path::new(&cfg.learn.checkpoint_dir).join(name))
}

/// A learned policy in the policy stage: decides on each snapshot; a snapshot it cannot trust
/// (other services, a non-finite feature) gets no action and a warning naming the problem.
/// With `learn.online.enabled` it also learns from the stream (guarded online learning).
#[derive(Debug)]
struct StagePolicy {
    name: String,
    policy: Served,
}

#[derive(Debug)]
enum Served {
    Fixed(Box<LearnedPolicy>),
    Online(Box<OnlineLearner>),
}

impl graphscaler_stages::stage::SnapshotPolicy for StagePolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn decide(&mut self, snap: &graphscaler_schemas::Snapshot) -> Vec<graphscaler_schemas::Action> {
        let decided = match &mut self.policy {
            Served::Fixed(p) => p.decide_snapshot(snap, None),
            Served::Online(o) => {
                let seen = o.reports.len();
                let d = o.decide(snap);
                for r in &o.reports[seen..] {
                    tracing::info!(policy = %self.name, time_s = r.time_s, version = o.version(), "online update: {:?}", r.verdict);
                }
                d
            }
        };
        match decided {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(policy = %self.name, time_s = snap.time_s, "no decision: {e}");
                vec![]
            }
        }
    }

    fn summary(&self) -> Option<String> {
        let Served::Online(o) = &self.policy else {
            return None;
        };
        let s = o.stats;
        Some(format!(
            "online learning: {} transitions ({} decisions without a reward), {} updates, {} promoted, {} rolled back; version {} live; versions and updates.csv in {}",
            s.transitions,
            s.dropped,
            s.updates,
            s.promotions,
            s.rollbacks,
            o.version(),
            o.dir().display()
        ))
    }
}

/// Loads the policy stage's learned policy (any topology; the services must match the model's).
pub fn stage_policy(
    name: &str,
    path: &Path,
    cfg: &Config,
) -> Result<Box<dyn graphscaler_stages::stage::SnapshotPolicy>> {
    graphscaler_learn::tch::set_num_threads(1);
    let policy = LearnedPolicy::load(path, "*", cfg.learn.act != "sample")
        .with_context(|| format!("loading policy `{name}`"))?;
    let l = &cfg.learn;
    let policy = if l.online.enabled {
        let reward = l.reward.reward(
            cfg.slo.latency_ms,
            cfg.slo.error_rate,
            cfg.eval.target_utilization,
        );
        let online = OnlineLearner::new(policy, l.online.clone(), l.train.ppo(0), reward)
            .with_context(|| format!("starting online learning for `{name}`"))?;
        Served::Online(Box::new(online))
    } else {
        Served::Fixed(Box::new(policy))
    };
    Ok(Box::new(StagePolicy {
        name: name.to_string(),
        policy,
    }))
}
