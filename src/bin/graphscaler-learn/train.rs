//! `graphscaler train`, and the learned policies that `eval` and the policy stage load.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use graphscaler_learn::agent::{AgentSpec, EncoderKind};
use graphscaler_learn::checkpoint;
use graphscaler_learn::envs::twin::{Handover, TwinEnv, TwinEnvConfig};
use graphscaler_learn::factory::{Checkpoints, OnlineSetup};
use graphscaler_learn::resume::Checkpointing;
use graphscaler_learn::tensorboard::{CsvTee, EventWriter};
use graphscaler_learn::train::{self, Algo, FromSettings, TrainConfig};
use graphscaler_twin::Topology;
use indicatif::{ProgressBar, ProgressStyle};

use graphscaler::config::{graphscaler_vars, Config};
use graphscaler::{say, TrainArgs};

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
    // --time-limit counts from here: the bootstrap and the set-up are part of the session.
    let began = std::time::Instant::now();
    let encoder = EncoderKind::parse(&a.encoder).with_context(|| {
        format!(
            "unknown encoder `{}`: gat, gcn, dysat, tgat or mlp",
            a.encoder
        )
    })?;
    let algo_arg = algo(&a.algo)?;
    graphscaler_learn::tch::set_num_threads(a.torch_threads.max(1));
    let topologies = if a.topology.is_empty() {
        vec![cfg.topology(None)?]
    } else {
        a.topology
            .iter()
            .map(|p| cfg.topology(Some(p)))
            .collect::<Result<Vec<_>>>()?
    };
    let topology = &topologies[0];
    let l = &cfg.learn;
    let t = &l.train;
    let rows = if a.from.is_empty() {
        vec![]
    } else {
        graphscaler_graph::store::read_paths(&a.from)?
    };
    let episode_s = a.episode.unwrap_or(t.episode_s);
    let (scenario, scenarios) = training_load(&a, &rows, episode_s)?;
    let n_envs = a.envs.unwrap_or(t.num_envs).max(1);
    let (env_cfg, mut spec) =
        environment_and_model(cfg, &a, topology, scenarios, episode_s, encoder)?;
    let env_cfgs = distribution(&a, &topologies, &env_cfg, &spec, algo_arg, n_envs)?;
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
    // The state a stopped training saved, to resume or to replace.
    let state_dir = checkpoint::file(&out, "resume");
    let saved = saved_state(&a, &state_dir)?;
    let resumed = saved.as_ref();
    // A resumed run's episodes start afresh, from seeds of their own.
    let env_seed = |i: usize| {
        let k = resumed.map_or(0, |s| s.resumed_at.len() as u64 + 1);
        a.seed * 1000 + i as u64 + 1_000_000 * k
    };
    let envs = (0..n_envs)
        .map(|i| TwinEnv::new(env_cfgs[i % env_cfgs.len()].clone(), env_seed(i)))
        .collect::<Result<Vec<_>, _>>()?;
    if topologies.len() > 1 {
        // Environment i runs topology i (i < N).
        spec.topologies = topologies
            .iter()
            .zip(&envs)
            .map(|(t, e)| graphscaler_learn::agent::TrainedTopology {
                name: topology_name(t),
                services: e.services().to_vec(),
            })
            .collect();
    }
    let bootstrapped = if a.from.is_empty() || resumed.is_some() {
        // Resuming, the saved state holds the model the bootstrap started.
        None
    } else {
        if algo_arg == AlgoArg::Sac {
            bail!("--from bootstraps the PPO heads (ppo, a2c); SAC's discrete actor is not bootstrapped yet");
        }
        let clone_out = if a.steps == 0 {
            out.clone()
        } else {
            let mut name = out.file_name().unwrap_or_default().to_os_string();
            name.push("-bc");
            out.with_file_name(name)
        };
        bootstrap(cfg, &a, &rows, &spec, &clone_out)?;
        Some(clone_out)
    };
    if a.steps == 0 {
        if bootstrapped.is_none() {
            bail!("--steps 0 trains nothing: give --from to bootstrap from a store, or steps to train on the twin");
        }
        return Ok(());
    }
    let init = bootstrapped.or_else(|| a.init.clone());
    let log_path = checkpoint::file(&out, "csv");
    let mut log = open_log(&log_path, resumed, a.tensorboard.as_deref())?;
    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} decisions ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(resumed.map_or(0, |s| s.global_step as u64));
    let mut on_update = |u: &train::Update| {
        bar.set_position(u.diagnostics.global_step as u64);
        bar.set_message(format!(
            "reward/tick {:.3}  slo {:.3} slack {:.3} over {:.3}",
            u.mean_reward, u.terms[0], u.terms[1], u.terms[2]
        ));
    };
    let command = command_line(&a, encoder, algo_name, &scenario);
    // The manifests' `training` section: the candidates' as it is, the result's with its
    // decisions, reward scale and time added.
    let training = serde_json::json!({
        "seed": a.seed,
        "envs": n_envs,
        "scenarios": scenario,
        "episode_s": env_cfg.episode_s,
        "reward": cfg.learn.reward,
        "init": init.as_ref().map(|p| p.display().to_string()),
        "from": a.from.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    let keep = train::Keep {
        every: a.keep_every,
        prefix: out.clone(),
        algo: algo_name.to_string(),
        produced_by: command.clone(),
        extra: training.clone(),
    };
    let keep = (a.keep_every > 0).then_some(keep);
    // Where the training stopped (if early), the updates planned, where it resumed, seconds
    // over every run, decisions.
    let run: (Option<usize>, usize, Vec<usize>, f64, usize);
    let checkpointing = Checkpointing {
        dir: state_dir.clone(),
        every: a.save_every,
        resume: resumed.is_some(),
        deadline: a
            .time_limit
            .map(|s| began + std::time::Duration::from_secs_f64(s)),
        stop_after: None,
    };
    let (agent, vs, updates, reward_norm) = match algo_arg {
        AlgoArg::OnPolicy(algo) => {
            let mut ppo = t.ppo(spec.hidden);
            if algo == Algo::A2c {
                ppo.num_steps = t.a2c_num_steps;
            }
            let tc = TrainConfig {
                algo,
                ppo,
                a2c_learning_rate: t.a2c_learning_rate,
                a2c_normalize_advantage: t.a2c_normalize_advantage,
                init: init.clone(),
                checkpointing: Some(checkpointing),
                keep: keep.clone(),
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
            run = (
                r.stopped,
                r.iterations,
                r.resumed_at,
                r.wall_s,
                r.global_step,
            );
            (r.agent, r.vs, r.updates, Some(r.reward_norm))
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
                keep.as_ref(),
                Some(&checkpointing),
            )?;
            run = (
                r.stopped,
                r.iterations,
                r.resumed_at,
                r.wall_s,
                r.global_step,
            );
            (r.agent, r.vs, r.updates, None)
        }
    };
    log.flush()?;
    bar.finish_and_clear();
    let (stopped, iterations, resumed_at, wall_s, global_step) = run;
    if let Some(k) = stopped {
        // Stopped at the time limit: the state is saved and the command ends.
        say!(
            "stopped at the time limit after update {k} of {iterations} ({global_step} decisions): the state is in {}; the same command with --resume continues",
            state_dir.display()
        );
        return Ok(());
    }
    // Over every run of a resumed training.
    let secs = wall_s;
    // A training resumed after its last update has none of its own to count from.
    let steps = updates
        .last()
        .map_or(global_step, |u| u.diagnostics.global_step);
    let mut training = training;
    if let Some(t) = training.as_object_mut() {
        t.insert("steps".into(), steps.into());
        t.insert("reward_norm".into(), serde_json::to_value(reward_norm)?);
        t.insert("wall_s".into(), secs.into());
        t.insert("resumed_at".into(), serde_json::to_value(&resumed_at)?);
    }
    let m = agent.save(&out, &vs, algo_name, &command, training)?;
    if state_dir.exists() {
        // The checkpoint is the result; the state was only the way to it.
        std::fs::remove_dir_all(&state_dir)
            .with_context(|| format!("removing {}", state_dir.display()))?;
    }
    let params: i64 = m.params.values().map(|s| s.iter().product::<i64>()).sum();
    say!(
        "trained {name} for {steps} decisions in {secs:.0} s ({:.0} decisions/s); {params} parameters",
        steps as f64 / secs,
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

/// The twin environments' settings and the model's specification (its services and node types
/// those of the twin on `topology`; an `--init` checkpoint's actor keeps its inputs).
fn environment_and_model(
    cfg: &Config,
    a: &TrainArgs,
    topology: &Topology,
    scenarios: Vec<graphscaler_twin::Shape>,
    episode_s: f64,
    encoder: EncoderKind,
) -> Result<(TwinEnvConfig, AgentSpec)> {
    let env_cfg = TwinEnvConfig {
        topology: topology.clone(),
        twin: cfg.twin.clone(),
        slo: cfg.slo.clone(),
        scenarios,
        episode_s,
        reward: cfg.reward(),
        rules: cfg.learn.actions.clone(),
        window: 1,
        handover: (cfg.learn.train.handover_share > 0.0).then(|| Handover {
            hpa: cfg.hpa.clone(),
            target: cfg.hpa.tuned_target_cpu_utilization,
            share: cfg.learn.train.handover_share,
            max_s: cfg.learn.train.handover_max_s,
        }),
        graph: cfg.pipeline.graph(),
        rails: cfg.pipeline.guardrails.clone(),
    };
    let probe = TwinEnv::new(env_cfg.clone(), a.seed)?;
    let mut rules = cfg.learn.actions.clone();
    rules.min_replicas = cfg.twin.limits.min_replicas;
    rules.max_replicas = cfg.twin.limits.max_replicas;
    let mut spec = AgentSpec::new(
        encoder,
        topology_name(topology),
        probe.services().to_vec(),
        probe.node_types().to_vec(),
        rules,
    );
    spec.actor_global = !a.no_actor_global;
    spec.node_type_features = probe.node_type_configs();
    if let Some(init) = &a.init {
        // A second stage keeps the first's model: the actor of a checkpoint written before the
        // actor read the global scalars goes on without them.
        spec.actor_global = AgentSpec::of_checkpoint(init)?.actor_global;
    }
    let env_cfg = TwinEnvConfig {
        window: spec.window,
        ..env_cfg
    };
    Ok((env_cfg, spec))
}

/// The environments' settings per topology: `env_cfg` (the first topology's) alone, or with
/// `--topology` given several times one per topology, checked to train together: graph encoders
/// under PPO or A2C, no `--from`, at least one environment per topology, and the node types of
/// `spec` (the first topology's) in the same order (a machine's type is its index in that list).
fn distribution(
    a: &TrainArgs,
    topologies: &[Topology],
    env_cfg: &TwinEnvConfig,
    spec: &AgentSpec,
    algo: AlgoArg,
    n_envs: usize,
) -> Result<Vec<TwinEnvConfig>> {
    if topologies.len() < 2 {
        return Ok(vec![env_cfg.clone()]);
    }
    let names: Vec<String> = topologies.iter().map(topology_name).collect();
    if spec.encoder == EncoderKind::Mlp {
        bail!("--topology given {} times trains on a distribution of topologies; the MLP's input is sized to one cluster's services (it does not transfer): use a graph encoder", names.len());
    }
    if algo == AlgoArg::Sac {
        bail!("--topology given {} times: a distribution of topologies trains PPO or A2C; SAC's replay buffer and critics are sized to one cluster", names.len());
    }
    if !a.from.is_empty() {
        bail!("--from bootstraps from one cluster's store; give one --topology with it");
    }
    if n_envs < topologies.len() {
        bail!(
            "{} topologies need at least as many environments (--envs {n_envs}): environment i runs topology i mod {}",
            topologies.len(),
            topologies.len()
        );
    }
    let mut cfgs = vec![env_cfg.clone()];
    for (t, name) in topologies.iter().zip(&names).skip(1) {
        let c = TwinEnvConfig {
            topology: t.clone(),
            ..env_cfg.clone()
        };
        let probe = TwinEnv::new(c.clone(), a.seed)
            .with_context(|| format!("the twin on topology `{name}` ({})", t.source))?;
        if probe.node_types() != spec.node_types.as_slice() {
            bail!(
                "topology `{name}` ({}) has node types {:?}, `{}` has {:?}: topologies trained together need the same node types in the same order (a machine's type is its index; set them in each file's `cluster.node_types`)",
                t.source,
                probe.node_types(),
                names[0],
                spec.node_types
            );
        }
        cfgs.push(c);
    }
    say!(
        "training on {} topologies ({}), environment i on topology i mod {}",
        names.len(),
        names.join(", "),
        names.len()
    );
    Ok(cfgs)
}

/// The training load: the scenario's name (`--scenario`, by default `mix`, or `recorded` when
/// `--from` bootstraps a fine-tuning) and its loads (for `recorded`, the entry request rates the
/// store's snapshots recorded, cut into episodes of `episode_s`).
fn training_load(
    a: &TrainArgs,
    rows: &[graphscaler_graph::store::Transition],
    episode_s: f64,
) -> Result<(String, Vec<graphscaler_twin::Shape>)> {
    let scenario = a.scenario.clone().unwrap_or_else(|| {
        if a.from.is_empty() || a.steps == 0 {
            "mix".into()
        } else {
            "recorded".into()
        }
    });
    let loads = match scenario.as_str() {
        "mix" => graphscaler_twin::Shape::all_named(),
        "recorded" if a.from.is_empty() => {
            bail!("--scenario recorded replays the load stored in the snapshots that --from names: give --from")
        }
        "recorded" => {
            let loads = graphscaler_learn::offline::recorded_loads(rows, episode_s)
                .context("the fine-tuning load (--scenario recorded)")?;
            say!(
                "fine-tuning load: the recorded entry request rates, {} episode(s) of up to {episode_s:.0} s",
                loads.len()
            );
            loads
        }
        s => graphscaler::scenarios(s)?,
    };
    Ok((scenario, loads))
}

/// The state a stopped training saved in `state_dir`: returned when `--resume` asks for it (an
/// error when there is none), removed (and `None`) when a new training replaces it.
fn saved_state(
    a: &TrainArgs,
    state_dir: &Path,
) -> Result<Option<graphscaler_learn::resume::SavedState>> {
    let saved = graphscaler_learn::resume::read_state(state_dir)?;
    match (saved, a.resume) {
        (None, true) => bail!(
            "--resume: no saved training state in {} (a training saves one every --save-every updates and when it stops early); start without --resume",
            state_dir.display()
        ),
        (Some(s), true) => {
            say!(
                "resuming after update {} of {} ({} decisions; resumed {} time(s) before) from {}",
                s.iteration,
                s.iterations,
                s.global_step,
                s.resumed_at.len(),
                state_dir.display()
            );
            Ok(Some(s))
        }
        (Some(s), false) => {
            say!(
                "replacing the saved state of an unfinished training in {} (update {} of {}; --resume continues it instead)",
                state_dir.display(),
                s.iteration,
                s.iterations
            );
            std::fs::remove_dir_all(state_dir)
                .with_context(|| format!("removing {}", state_dir.display()))?;
            Ok(None)
        }
        (None, false) => Ok(None),
    }
}

/// The training's log: the CSV at `path` (new, or for a resumed training its header and the rows
/// of the updates the state counts, rows logged after it dropped), teed to TensorBoard events in
/// `tensorboard` when given.
fn open_log(
    path: &Path,
    resumed: Option<&graphscaler_learn::resume::SavedState>,
    tensorboard: Option<&Path>,
) -> Result<Box<dyn Write>> {
    let csv = std::io::BufWriter::new(match resumed {
        Some(s) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {} to resume it", path.display()))?;
            let kept: String = text
                .lines()
                .take(s.iteration + 1)
                .map(|l| format!("{l}\n"))
                .collect();
            if kept.lines().count() != s.iteration + 1 {
                bail!(
                    "{} has {} rows, the saved state counts {} updates: it is not this training's log",
                    path.display(),
                    kept.lines().count().saturating_sub(1),
                    s.iteration
                );
            }
            std::fs::write(path, kept).with_context(|| format!("rewriting {}", path.display()))?;
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?
        }
        None => {
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?
        }
    });
    Ok(match tensorboard {
        Some(dir) => {
            let events = EventWriter::create(dir)
                .with_context(|| format!("creating TensorBoard events in {}", dir.display()))?;
            say!("TensorBoard events: {}", events.path().display());
            Box::new(CsvTee::new(csv, events))
        }
        None => Box::new(csv),
    })
}

/// The command that made a checkpoint, for its manifest: the settings given through the
/// environment (they shape the run as much as the arguments do) and the arguments the user gave
/// (with `--from`, the clone it fine-tunes from is its own, not an `--init`).
fn command_line(a: &TrainArgs, encoder: EncoderKind, algo: &str, scenario: &str) -> String {
    let mut env: Vec<String> = graphscaler_vars()
        .into_iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    env.sort();
    let mut cmd = format!(
        "{}graphscaler train --encoder {} --algo {algo} --scenario {scenario} --steps {} --seed {}",
        env.concat(),
        encoder.name(),
        a.steps,
        a.seed,
    );
    if let Some(n) = a.envs {
        cmd += &format!(" --envs {n}");
    }
    for t in &a.topology {
        cmd += &format!(" --topology {}", t.display());
    }
    if a.no_actor_global {
        cmd += " --no-actor-global";
    }
    if let Some(p) = &a.init {
        cmd += &format!(" --init {}", p.display());
    }
    if let Some(n) = a.bc_epochs {
        cmd += &format!(" --bc-epochs {n}");
    }
    if !a.from.is_empty() {
        let from: Vec<String> = a.from.iter().map(|p| p.display().to_string()).collect();
        cmd += &format!(" --from {}", from.join(" "));
    }
    cmd
}

/// The bootstrap of `graphscaler train --from`: clones the stored decisions into a fresh `spec`
/// model (or `--init`'s weights), fits its critic on the stored rewards and writes it to `out`.
fn bootstrap(
    cfg: &Config,
    a: &TrainArgs,
    rows: &[graphscaler_graph::store::Transition],
    spec: &AgentSpec,
    out: &Path,
) -> Result<()> {
    use graphscaler_learn::offline::{self, BootstrapConfig};
    let b = &cfg.learn.bootstrap;
    let t = &cfg.learn.train;
    let bcfg = BootstrapConfig {
        epochs: a.bc_epochs.unwrap_or(b.epochs).max(1),
        minibatch: b.minibatch,
        learning_rate: b.learning_rate,
        vf_coef: b.vf_coef,
        cpu_coef: b.cpu_coef,
        max_grad_norm: t.max_grad_norm,
        holdout_share: b.holdout_share,
        gamma: t.gamma,
    };
    let named = a
        .from
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let data =
        offline::dataset(rows, spec, &bcfg).with_context(|| format!("learning from {named}"))?;
    let d = &data.summary;
    say!(
        "{named}: {} rows in {} run(s), {} decided ({}), {} rewarded; training on {} windows ({} sub-decisions), holding out {} ({})",
        d.rows,
        d.runs,
        d.decided,
        d.decided_by
            .iter()
            .map(|(k, v)| format!("{v} by {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        d.rewarded,
        d.train_windows,
        d.train_steps,
        d.held_out_windows,
        d.held_out_steps
    );
    if d.invalid > 0 {
        say!(
            "skipped {} rows unfit for a policy; the first: {}",
            d.invalid,
            d.first_invalid.as_deref().unwrap_or("")
        );
    }
    if d.notes > 0 {
        say!(
            "{} recorded changes the action space expresses otherwise, e.g. {}",
            d.notes,
            d.first_notes.join("; ")
        );
    }
    graphscaler_learn::tch::manual_seed(a.seed as i64);
    let mut vs = graphscaler_learn::tch::nn::VarStore::new(graphscaler_learn::tch::Device::Cpu);
    let agent = graphscaler_learn::agent::GraphAgent::new(&vs.root(), spec.clone());
    if let Some(init) = &a.init {
        checkpoint::load(init, &mut vs, &spec.topology)?;
    }
    let started = std::time::Instant::now();
    let before = offline::agreement(&agent, data.held_out());
    let log_path = checkpoint::file(out, "csv");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    );
    let epochs = offline::bootstrap(&agent, &vs, &data, &bcfg, a.seed, &mut log, &mut |e| {
        say!(
            "epoch {:>3}: nll {:.4} (held out {:.4}), value {:.4} (held out {:.4})",
            e.epoch,
            e.nll,
            e.held_out_nll,
            e.value_loss,
            e.held_out_value_loss
        );
    })?;
    log.flush()?;
    let after = offline::agreement(&agent, data.held_out());
    let secs = started.elapsed().as_secs_f64();
    say!("{}", after.describe(&before));
    let algo = a.algo.as_str();
    let command = format!(
        "graphscaler train --encoder {} --algo {algo} --from {named} --steps 0 --seed {}{}",
        spec.encoder.name(),
        a.seed,
        a.bc_epochs
            .map_or(String::new(), |n| format!(" --bc-epochs {n}"))
    );
    agent.save(
        out,
        &vs,
        algo,
        &command,
        serde_json::json!({
            "from": a.from.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "seed": a.seed,
            "bootstrap": {
                "epochs": bcfg.epochs,
                "minibatch": bcfg.minibatch,
                "learning_rate": bcfg.learning_rate,
                "holdout_share": bcfg.holdout_share,
                "data": d,
                "last_epoch": epochs.last(),
                "agreement": after,
                "agreement_before": before,
            },
            "reward": cfg.learn.reward,
            "reward_norm": data.norm,
            "init": a.init.as_ref().map(|p| p.display().to_string()),
            "wall_s": secs,
        }),
    )?;
    say!(
        "wrote {} (+ .json manifest) and {} in {secs:.0} s",
        checkpoint::file(out, "safetensors").display(),
        log_path.display()
    );
    Ok(())
}

/// Learned policies from checkpoints: for `eval` on `topology` (`None`: the policy stage, any
/// topology whose services match, with online learning when `learn.online.enabled`).
pub fn checkpoints(cfg: &Config, topology: Option<&Topology>) -> Checkpoints {
    let l = &cfg.learn;
    let online = (topology.is_none() && l.online.enabled).then(|| OnlineSetup {
        config: l.online.clone(),
        ppo: l.train.ppo(0),
        reward: cfg.reward(),
    });
    Checkpoints {
        dir: l.checkpoint_dir.clone().into(),
        topology: topology.map_or_else(|| "*".into(), topology_name),
        act: l.act,
        online,
    }
}
