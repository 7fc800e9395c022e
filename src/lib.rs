//! `graphscaler`: the command line. Each subcommand starts a stage or a whole workflow; this
//! crate parses arguments, loads the configuration and calls the crate that does the work.
//!
//! Two binaries share it. `graphscaler` does not link libtorch, so a stage, the HPA, the twin
//! and a configuration error start at once; a command that needs a learned policy (`train`, or
//! a policy name such as `gat-ppo`) re-executes `graphscaler-learn`, built beside it with the
//! `learn` feature, which is the same command line with [`Learning`] filled in.

/// Prints to stdout; a closed pipe (`graphscaler eval | head`) ends the output quietly.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

pub mod config;
mod pipeline;
mod probe;
pub mod train_args;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use graphscaler_eval::{report, sweep, Campaign, RunResult, Setup};
use graphscaler_policy::{Learned, PolicySpec};
use graphscaler_twin::load::{AZURE_CONV_PER_MINUTE, AZURE_CONV_PER_SECOND};
use graphscaler_twin::{Shape, Topology, Trace};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{parse_duration, Config};
pub use crate::train_args::TrainArgs;

/// What only the learning build (`graphscaler-learn`, which links libtorch) can do.
pub trait Learning {
    /// Learned policies from checkpoints: for `eval` on `topology`, or (`None`) for the policy
    /// stage, any topology whose services match the model's.
    fn policies(&self, cfg: &Config, topology: Option<&Topology>) -> Box<dyn Learned>;
    /// `graphscaler train`.
    fn train(&self, cfg: &Config, args: TrainArgs) -> Result<()>;
}

#[derive(Debug, Parser)]
#[command(
    name = "graphscaler",
    version,
    about = "A graph-aware, learning autoscaler for Kubernetes microservices."
)]
struct Cli {
    /// A TOML file layered over the embedded defaults (then GRAPHSCALER_<SECTION>__<KEY> variables).
    #[arg(long, global = true, env = "GRAPHSCALER_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, global = true, default_value = "warn", env = "RUST_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster twin.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// Run policies side by side on the twin: metrics, 95% CIs, Cliff's δ, CSV, Parquet, PNG.
    Eval(EvalArgs),
    /// Sweep the HPA's CPU target to find the tuned HPA.
    HpaSweep(SweepArgs),
    /// Train a learned policy on the twin: checkpoint (.safetensors + .json manifest) and
    /// diagnostics (.csv).
    Train(TrainArgs),
    /// Read stored snapshots back (Parquet) and report what they hold.
    Replay {
        /// Stored snapshots: files, store directories or globs (`store/part-00*`), read in
        /// time order.
        #[arg(long, num_args = 1.., required = true)]
        snapshots: Vec<PathBuf>,
        /// Temporal window length T (DySAT's input).
        #[arg(long, default_value_t = 4)]
        window: usize,
        /// Run this policy (noop, hpa, tuned-hpa, hpa-<percent>) over the snapshots, as the
        /// policy stage would, and report its actions.
        #[arg(long)]
        policy: Option<String>,
        /// Publish the snapshots, in order, to the snapshot topic (needs
        /// pipeline.kafka_bootstrap), for a running policy stage to consume.
        #[arg(long)]
        publish: bool,
    },
    /// The whole loop in one process on the twin: twin -> graph job -> policy -> actuator, on an
    /// in-process bus.
    Run(pipeline::LoopArgs),
    /// The scrape stage: Kubernetes, Prometheus and Kiali into the telemetry topics (Kafka).
    Scrape,
    /// The graph stage: telemetry topics into one snapshot per window (Kafka, Parquet).
    Graph,
    /// The policy stage: snapshots into actions (Kafka).
    Policy,
    /// The actuator: actions through guardrails to the Kubernetes API, decisions to the audit
    /// topic (Kafka).
    Actuate,
    /// The actions topic (the policy stage's scaling actions), read from outside the pipeline.
    #[command(subcommand)]
    Actions(TopicCommand),
    /// The audit topic (what the actuator did with each action), read from outside.
    #[command(subcommand)]
    Audit(TopicCommand),
    /// The decisions topic (each snapshot's whole decision, actions or none), read from outside.
    #[command(subcommand)]
    Decisions(TopicCommand),
    /// Print the effective configuration as TOML.
    Config,
    /// GET a stage's /healthz or /readyz (for container healthchecks): exit 0 on a 2xx
    /// answer, else print the status and the stage's reason and exit 1.
    Probe {
        /// For example http://127.0.0.1:9464/readyz.
        url: String,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Print the topic as JSON lines, one envelope per line, from its end (default), its
    /// beginning, an offset or a time, on pipeline.kafka_bootstrap (`graphscaler run --tail`
    /// does the same on its in-process bus).
    Tail(pipeline::TailArgs),
}

#[derive(Debug, Subcommand)]
enum TwinCommand {
    /// Run one policy on one scenario.
    Run(RunArgs),
    /// Serve the twin over HTTP: Prometheus /metrics, the Kiali graph API and a Kubernetes API
    /// subset, advancing it in (accelerated) real time.
    Serve(ServeArgs),
    /// Plot the nominal frontend rps of load shapes over a run (docs/img/shapes.png).
    Shapes {
        /// Comma-separated scenarios, or `all` (the four shapes and the bundled Azure trace).
        #[arg(long, default_value = "all")]
        scenarios: String,
        /// Run length (4h, 30m, 90s).
        #[arg(long, default_value = "4h", value_parser = parse_duration)]
        duration: f64,
        /// Output PNG.
        #[arg(long, default_value = "docs/img/shapes.png")]
        out: PathBuf,
    },
    /// Run a policy on the twin, stream its observations through the graph job, and store the
    /// snapshots as Parquet.
    Record(RecordArgs),
    /// Fit a twin topology to recorded snapshots (a cluster's, recorded by the pipeline):
    /// CPU cost per request and idle CPU per service, call ratios per edge, requests, limits
    /// and replicas; what the snapshots cannot give comes from `--base` (docs/twin.md#a-twin-fitted-from-a-clusters-telemetry).
    Fit {
        /// Stored snapshots: files, store directories or globs.
        #[arg(long, num_args = 1.., required = true)]
        from: Vec<PathBuf>,
        /// A topology file naming every recorded service, for what snapshots do not carry
        /// (memory sizes, languages, ports, start-up times, probes): one written from the
        /// manifests.
        #[arg(long)]
        base: Option<PathBuf>,
        /// The fitted topology.
        #[arg(long)]
        out: PathBuf,
        /// Also write the fit's report (Markdown) here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Write a generated application in the topology file format, with a cluster sized to it
    /// (docs/twin.md#generated-applications), or with `--layered` the scale tests' layered graph.
    SynthTopology {
        /// Number of services.
        #[arg(long, default_value_t = 40)]
        services: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Frontend requests per second the cluster is sized for (default: the configuration's
        /// highest load level).
        #[arg(long)]
        rps: Option<f64>,
        /// The layered graph of the scale tests and benchmarks instead (an entry, 5 % of the
        /// services with one route each, 20 % in a second layer, the rest in a third; no CPU
        /// costs, no cluster).
        #[arg(long)]
        layered: bool,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Bucket a file of one row per request into a trace (request counts per bucket,
    /// `offset_s,requests`) for `--scenario trace:<file>`.
    Bucket {
        /// The per-request CSV (a header, a timestamp per row: seconds or YYYY-MM-DD HH:MM:SS).
        file: PathBuf,
        /// The timestamp column (default: the first).
        #[arg(long)]
        column: Option<String>,
        /// Bucket width, s.
        #[arg(long, default_value_t = 1.0)]
        bucket_s: f64,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Run length (4h, 30m, 90s).
    #[arg(long, default_value = "4h", value_parser = parse_duration)]
    duration: f64,
    /// Seed of the first replay.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Topology file (default: twin.topology from the configuration).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Output directory (default: eval.out_dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads (runs are independent).
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    /// Skip the PNG plots.
    #[arg(long)]
    no_plots: bool,
    /// Go on from the runs a stopped campaign with the same arguments and settings left in the
    /// output directory (its runs.journal); without it a campaign starts a new journal.
    #[arg(long)]
    resume: bool,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Args)]
struct RunArgs {
    /// off-peak, peak, rush, fluctuating, burst or trace:<file.csv>.
    #[arg(long, default_value = "peak")]
    scenario: String,
    /// static, hpa, tuned-hpa, hpa-<percent>, or a learned policy (gat-ppo, NAME=PATH, ...).
    #[arg(long, default_value = "hpa")]
    policy: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// off-peak, peak, rush, fluctuating, burst or trace:<file.csv>.
    #[arg(long, default_value = "peak")]
    scenario: String,
    /// static, hpa, tuned-hpa, hpa-<percent>, or a learned policy (gat-ppo, NAME=PATH, ...).
    #[arg(long, default_value = "hpa")]
    policy: String,
    /// Run length (4h, 30m, 90s).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Snapshot window (default: pipeline.window_s).
    #[arg(long, value_parser = parse_duration)]
    window: Option<f64>,
    /// Timely worker threads of the graph job (default: pipeline.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Topology file (default: twin.topology from the configuration).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// The store directory to write (continued if it exists: a new file after its last).
    #[arg(long, default_value = "results/store")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// off-peak, peak, rush, fluctuating, burst or trace:<file.csv>.
    #[arg(long, default_value = "peak")]
    scenario: String,
    /// Run length (4h, 30m, 90s).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    duration: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Topology file (default: twin.topology from the configuration).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Namespace the workloads appear in (default: pipeline.collect.namespace, the one the
    /// scrape stage reads).
    #[arg(long)]
    namespace: Option<String>,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Comma-separated policies: static, hpa, tuned-hpa, hpa-<percent>, the learned gat-ppo,
    /// mlp-ppo, gcn-sac, dysat-a2c (from learn.checkpoint_dir), or NAME=CHECKPOINT.
    #[arg(long, default_value = "static,hpa,tuned-hpa")]
    policies: String,
    /// Comma-separated scenarios, or `all` for the four shapes.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Replays per scenario (seeds seed, seed+1, …).
    #[arg(long, default_value_t = 5)]
    replays: usize,
    /// Also place each policy against this HPA frontier (`graphscaler hpa-sweep`'s
    /// frontier.csv): printed, and plotted per scenario (frontier-<scenario>.png).
    #[arg(long)]
    frontier: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// Comma-separated CPU targets, percent.
    #[arg(long, default_value = "40,50,60,70,80")]
    targets: String,
    /// Comma-separated scenarios, or `all`.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Replays per scenario.
    #[arg(long, default_value_t = 3)]
    replays: usize,
    #[command(flatten)]
    common: Common,
}

/// Parses the command line and runs it; `learning` is `None` in the binary without libtorch.
pub fn main_with(learning: Option<&dyn Learning>) {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli, learning) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Whether `command` names a learned policy (a name the grammar reads as learned); `train`
/// re-executes in its own match arm.
fn needs_learning(command: &Command, cfg: &Config) -> bool {
    let learned = |name: &str| {
        matches!(
            PolicySpec::parse(name.trim()),
            Ok(PolicySpec::Learned { .. })
        )
    };
    match command {
        Command::Eval(a) => a.policies.split(',').any(learned),
        Command::Twin(TwinCommand::Run(a)) => learned(&a.policy),
        Command::Twin(TwinCommand::Record(a)) => learned(&a.policy),
        Command::Run(a) => learned(a.policy.as_deref().unwrap_or(&cfg.pipeline.policy)),
        Command::Policy => learned(&cfg.pipeline.policy),
        Command::Replay { policy, .. } => policy.as_deref().is_some_and(learned),
        _ => false,
    }
}

/// Replaces this process with `graphscaler-learn` (beside this binary), same arguments.
fn exec_learning_build() -> Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let learn = exe.with_file_name(format!("graphscaler-learn{}", std::env::consts::EXE_SUFFIX));
    if !learn.is_file() {
        bail!(
            "this command needs a learned policy, and {} is not there: build with the `learn` feature (the default), which also builds graphscaler-learn",
            learn.display()
        );
    }
    let mut cmd = std::process::Command::new(&learn);
    cmd.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        Err(anyhow::anyhow!("starting {}: {e}", learn.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("starting {}", learn.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

fn run(cli: Cli, learning: Option<&dyn Learning>) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    if learning.is_none() && needs_learning(&cli.command, &cfg) {
        return exec_learning_build();
    }
    match cli.command {
        Command::Config => {
            say!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Probe { url } => {
            say!("{}", probe::probe(&url)?);
            Ok(())
        }
        Command::Twin(TwinCommand::Fit {
            from,
            base,
            out,
            report,
        }) => {
            let snapshots: Vec<graphscaler_schemas::Snapshot> =
                graphscaler_graph::store::read_paths(&from)?
                    .into_iter()
                    .map(|t| t.snapshot)
                    .collect();
            let base = base
                .map(|b| -> Result<serde_json::Value> {
                    let text = std::fs::read_to_string(&b)
                        .with_context(|| format!("reading {}", b.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a topology file (JSON)", b.display()))
                })
                .transpose()?;
            let speeds: Vec<f64> = cfg
                .twin
                .cluster
                .node_types
                .iter()
                .map(|t| t.speed)
                .collect();
            let fit = graphscaler_twin::fit::fit(&snapshots, base.as_ref(), &speeds)?;
            // What the twin would refuse is refused here, naming the fitted file.
            graphscaler_twin::Topology::from_json_str(
                &fit.topology.to_string(),
                &out.display().to_string(),
                &cfg.twin.fanout_parameters,
            )?;
            std::fs::write(&out, serde_json::to_string_pretty(&fit.topology)?)
                .with_context(|| format!("writing {}", out.display()))?;
            let text = fit.report();
            if let Some(r) = &report {
                std::fs::write(r, &text).with_context(|| format!("writing {}", r.display()))?;
            }
            say!("{text}");
            say!(
                "wrote {} ({} services fitted from {} snapshots)",
                out.display(),
                fit.services.len(),
                snapshots.len()
            );
            Ok(())
        }
        Command::Twin(TwinCommand::SynthTopology {
            services,
            seed,
            rps,
            layered,
            out,
        }) => {
            let v = if layered {
                graphscaler_twin::Topology::synthetic_json(services, seed)
            } else {
                let opts = graphscaler_twin::generate::GenerateOptions {
                    peak_rps: rps.unwrap_or_else(|| cfg.twin.load.highest_rps()),
                    pools: cfg.twin.cluster.node_types.clone(),
                };
                if !(opts.peak_rps.is_finite() && opts.peak_rps > 0.0) {
                    bail!(
                        "--rps {}: a positive number of requests per second",
                        opts.peak_rps
                    );
                }
                graphscaler_twin::generate::generate(services, seed, &opts)
            };
            std::fs::write(&out, serde_json::to_string_pretty(&v)?)
                .with_context(|| format!("writing {}", out.display()))?;
            match v["cluster"]["node_types"].as_array() {
                Some(pools) => say!(
                    "wrote {} ({services} services; a cluster of {} nodes sized for {} rps)",
                    out.display(),
                    pools
                        .iter()
                        .filter_map(|p| p["count"].as_u64())
                        .sum::<u64>(),
                    v["provenance"]["sized_for_rps"]
                ),
                None => say!("wrote {} ({services} services)", out.display()),
            }
            Ok(())
        }
        Command::Twin(TwinCommand::Bucket {
            file,
            column,
            bucket_s,
            out,
        }) => {
            let csv = graphscaler_twin::load::bucket_requests(&file, column.as_deref(), bucket_s)?;
            std::fs::write(&out, &csv).with_context(|| format!("writing {}", out.display()))?;
            say!(
                "wrote {} ({} buckets of {bucket_s} s)",
                out.display(),
                csv.lines().count() - 1
            );
            Ok(())
        }
        Command::Twin(TwinCommand::Shapes {
            scenarios: names,
            duration,
            out,
        }) => {
            let shapes = if names == "all" {
                let mut v = Shape::all_named();
                v.push(Shape::Trace(Trace::shipped(AZURE_CONV_PER_MINUTE)?));
                v.push(Shape::parse("burst")?);
                v
            } else {
                scenarios(&names)?
            };
            // A burst shape as seed 1 of a run draws it.
            let shapes: Vec<Shape> = shapes
                .into_iter()
                .map(|s| s.seeded(1, duration, &cfg.twin.load))
                .collect();
            let series: Vec<(String, Vec<(f64, f64)>)> = shapes
                .iter()
                .map(|s| {
                    let pts = (0..=(duration as usize))
                        .step_by(15)
                        .map(|t| (t as f64 / 60.0, s.rps(t as f64, duration, &cfg.twin.load)))
                        .collect();
                    (s.name(), pts)
                })
                .collect();
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            graphscaler_eval::plot::lines(
                &out,
                "load shapes: nominal frontend requests per second",
                "rps",
                &series,
            )?;
            say!("wrote {}", out.display());
            Ok(())
        }
        Command::Twin(TwinCommand::Serve(a)) => serve(&cfg, a),
        Command::Twin(TwinCommand::Record(a)) => record(&cfg, a, learning),
        Command::Replay {
            snapshots,
            window,
            policy,
            publish,
        } => {
            replay(&snapshots, window)?;
            pipeline::replay_into(&cfg, &snapshots, policy.as_deref(), publish, learning)
        }
        Command::Run(a) => pipeline::run_loop(&cfg, a, learning),
        Command::Train(a) => match learning {
            Some(l) => l.train(&cfg, a),
            None => exec_learning_build(),
        },
        Command::Actions(TopicCommand::Tail(a)) => {
            pipeline::tail(&cfg, pipeline::topic_named("actions")?, a)
        }
        Command::Audit(TopicCommand::Tail(a)) => {
            pipeline::tail(&cfg, pipeline::topic_named("audit")?, a)
        }
        Command::Decisions(TopicCommand::Tail(a)) => {
            pipeline::tail(&cfg, pipeline::topic_named("decisions")?, a)
        }
        Command::Scrape => pipeline::stage(&cfg, pipeline::Stage::Scrape, learning),
        Command::Graph => pipeline::stage(&cfg, pipeline::Stage::Graph, learning),
        Command::Policy => pipeline::stage(&cfg, pipeline::Stage::Policy, learning),
        Command::Actuate => pipeline::stage(&cfg, pipeline::Stage::Actuate, learning),
        Command::Twin(TwinCommand::Run(a)) => {
            let policy = PolicySpec::parse(&a.policy)?;
            let shape = Shape::parse(&a.scenario)?;
            campaign(&cfg, vec![policy], vec![shape], 1, &a.common, learning).map(|_| ())
        }
        Command::Eval(a) => {
            let policies = a
                .policies
                .split(',')
                .map(|p| PolicySpec::parse(p.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            let frontier = match &a.frontier {
                Some(f) => Some(sweep::read_frontier(f).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let runs = campaign(
                &cfg,
                policies,
                scenarios(&a.scenarios)?,
                a.replays,
                &a.common,
                learning,
            )?;
            if let Some(points) = frontier {
                against_frontier(&runs, &points, &out_dir(&cfg, &a.common), a.common.no_plots)?;
            }
            Ok(())
        }
        Command::HpaSweep(a) => {
            let targets = a
                .targets
                .split(',')
                .map(|t| {
                    t.trim()
                        .parse::<u32>()
                        .with_context(|| format!("target `{t}` is not a whole percentage"))
                })
                .collect::<Result<Vec<_>>>()?;
            let policies = targets.iter().map(|t| PolicySpec::HpaAt(*t)).collect();
            let runs = campaign(
                &cfg,
                policies,
                scenarios(&a.scenarios)?,
                a.replays,
                &a.common,
                learning,
            )?;
            let rows = sweep::rows(&runs, &targets);
            let out = out_dir(&cfg, &a.common);
            let points = sweep::frontier(&runs, &targets);
            let file = out.join("frontier.csv");
            sweep::write_frontier(&file, &points)?;
            let mut f = String::from(
                "the HPA frontier per scenario (* Pareto-optimal: no target both violates less and costs less)\nscenario      target  SLO viol %        CAF\n",
            );
            for p in &points {
                f.push_str(&format!(
                    "{:<13} {:>5}%{} {:>6.2} ± {:<6.2} {:>5.2} ± {:<5.2}\n",
                    p.scenario,
                    p.target,
                    if p.pareto { "*" } else { " " },
                    p.slo_violation_pct,
                    p.slo_violation_hw,
                    p.caf,
                    p.caf_hw
                ));
            }
            f.push_str(&format!("wrote {}", file.display()));
            if !a.common.no_plots {
                let scen = sweep::first_seen(points.iter().map(|p| p.scenario.as_str()));
                for sc in scen {
                    let file = out.join(format!("frontier-{}.png", sc.replace([':', '/'], "_")));
                    graphscaler_eval::plot::frontier(&file, sc, &points, &[])?;
                    f.push_str(&format!(", {}", file.display()));
                }
            }
            say!("{f}");
            let mut t = sweep_table(&rows);
            if let Some(c) = sweep::choose(&rows) {
                t.push_str(&format!(
                    "\nchosen target: {c}% (the cheapest whose SLO violation % interval overlaps the best target's)\nset it with: [hpa] tuned_target_cpu_utilization = {c}\n"
                ));
            }
            say!("{t}");
            Ok(())
        }
    }
}

fn sweep_table(rows: &[sweep::SweepRow]) -> String {
    let mut s = String::from("target  SLO viol % (95% CI)   slack %   core-seconds\n");
    for r in rows {
        s.push_str(&format!(
            "{:>5}%  {:>7.2} ± {:<8.2}   {:>6.1}   {:>12.0}\n",
            r.target,
            r.slo_violation_pct.mean,
            r.slo_violation_pct.half_width,
            r.slack_pct.mean,
            r.cpu_core_seconds.mean
        ));
    }
    s
}

fn record(cfg: &Config, a: RecordArgs, learning: Option<&dyn Learning>) -> Result<()> {
    use graphscaler_pipeline::served::{Cut, Served};
    let twin = cfg.twin(a.topology.as_deref(), &a.scenario, a.duration, a.seed)?;
    let mut policy = pipeline::snapshot_policy(&a.policy, cfg, learning)?;
    let gcfg = graphscaler_graph::GraphConfig {
        window_s: a.window.unwrap_or(cfg.pipeline.window_s),
        workers: a.workers.unwrap_or(cfg.pipeline.workers).max(1),
        cluster: None,
        ..cfg.pipeline.graph()
    };
    let Some(spec) = cfg.store(Some(&a.out)) else {
        bail!("--out names no store directory");
    };
    let store = spec.open()?;
    let first = store.file();
    let run = Served::new(twin, &gcfg, Cut::Dataflow, cfg.pipeline.guardrails.clone())
        .with_store(store)
        .run(policy.as_mut())?;
    let c = run.counts;
    let (Some(stored), 0) = (run.stored, c.store_failures) else {
        bail!(
            "{} snapshots or decisions could not be stored in {} (see the warnings above)",
            c.store_failures,
            spec.dir.display()
        );
    };
    say!(
        "{} events -> {} snapshots of {} s ({:?}); {} decided by {}, {} actions ({} applied)",
        c.events,
        c.snapshots,
        gcfg.window_s,
        run.ingest,
        stored.windows,
        policy.name(),
        c.actions,
        run.decisions
            .iter()
            .filter(|d| d.record.outcome.is_applied())
            .count()
    );
    say!(
        "wrote {} ({} file(s) from {}; {} windows without a reward)",
        spec.dir.display(),
        stored.files,
        first.display(),
        stored.unrewarded
    );
    Ok(())
}

fn replay(paths: &[PathBuf], t: usize) -> Result<()> {
    let rows = graphscaler_graph::store::read_paths(paths)?;
    let named = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let snaps: Vec<&graphscaler_schemas::Snapshot> = rows.iter().map(|r| &r.snapshot).collect();
    let (Some(first), Some(last)) = (snaps.first().copied(), snaps.last().copied()) else {
        bail!("{named} holds no snapshot");
    };
    let runs = graphscaler_graph::store::runs(&rows);
    let mut full = 0;
    for run in &runs {
        let mut window = graphscaler_schemas::TemporalWindow::new(t);
        for r in *run {
            if window.push(r.snapshot.clone()).is_err() {
                bail!(
                    "{named}: snapshot at {} s is out of time order",
                    r.snapshot.time_s
                );
            }
            full += usize::from(window.is_full());
        }
    }
    say!(
        "{named}: {} snapshots in {} run(s) from {} s to {} s (window {} s, schema v{})",
        snaps.len(),
        runs.len(),
        first.time_s,
        last.time_s,
        first.window_s,
        first.schema_version
    );
    for (label, s) in [("first", first), ("last", last)] {
        say!(
            "  {label}: {} services, {} nodes, {} calls, {} runs_on, global {:?}",
            s.services.len(),
            s.nodes.len(),
            s.calls.len(),
            s.runs_on.len(),
            s.global
        );
    }
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &rows {
        if let Some(d) = &r.decision {
            *by.entry(d.by.as_str()).or_default() += 1;
        }
    }
    let transitions = rows
        .iter()
        .filter(|r| r.decision.is_some() && r.reward.is_some())
        .count();
    say!(
        "  {transitions} transitions (a decision and the reward after it); decisions by {}",
        if by.is_empty() {
            "none recorded".to_string()
        } else {
            by.iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    say!("  {full} full temporal windows of T = {t}");
    Ok(())
}

fn serve(cfg: &Config, a: ServeArgs) -> Result<()> {
    if !(a.speedup.is_finite() && (1e-3..=1e4).contains(&a.speedup)) {
        bail!(
            "--speedup must lie in [0.001, 10000] simulated seconds per second, got {}",
            a.speedup
        );
    }
    let twin = cfg.twin(a.topology.as_deref(), &a.scenario, a.duration, a.seed)?;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let namespace = a
        .namespace
        .as_deref()
        .unwrap_or(&cfg.pipeline.collect.namespace);
    let state = graphscaler_twin_api::LiveTwin::new(twin, namespace, "twin", epoch).shared();
    let tick = std::time::Duration::from_secs_f64(cfg.twin.observe_every_s / a.speedup);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr()?;
        say!(
            "twin serving on http://{addr}: /metrics, /api/namespaces/graph, /api/v1/..., /apis/apps/v1/... (one {} s tick every {:.3} s)",
            cfg.twin.observe_every_s,
            tick.as_secs_f64()
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        graphscaler_twin_api::serve(listener, state, tick, shutdown).await?;
        Ok(())
    })
}

/// `all` (the four shapes), `bursty-mix` (the four shapes, the burst generator and the
/// shipped Azure conversation trace: the training load with bursts in it) or comma-separated
/// scenarios.
pub fn scenarios(s: &str) -> Result<Vec<Shape>> {
    if s == "all" {
        return Ok(Shape::all_named());
    }
    if s == "bursty-mix" {
        let mut v = Shape::all_named();
        v.push(Shape::parse("burst")?);
        v.push(Shape::Trace(Trace::shipped(AZURE_CONV_PER_SECOND)?));
        return Ok(v);
    }
    let out = s
        .split(',')
        .map(|x| Shape::parse(x.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        bail!("no scenario given");
    }
    Ok(out)
}

fn out_dir(cfg: &Config, common: &Common) -> PathBuf {
    common
        .out
        .clone()
        .unwrap_or_else(|| cfg.eval.out_dir.clone().into())
}

/// Each policy's point of `runs` against the HPA frontier of `points`, per scenario: printed,
/// and plotted with the frontier to `out/frontier-<scenario>.png` unless `no_plots`.
fn against_frontier(
    runs: &[RunResult],
    points: &[sweep::FrontierPoint],
    out: &std::path::Path,
    no_plots: bool,
) -> Result<()> {
    let mut text = String::from(
        "against the HPA frontier (SLO violation % of the frontier at the policy's CAF; gap ≤ 0: on or below it)\nscenario      policy        SLO viol %        CAF            frontier   gap\n",
    );
    for sc in sweep::first_seen(runs.iter().map(|r| r.scenario.as_str())) {
        let policies = sweep::first_seen(
            runs.iter()
                .filter(|r| r.scenario == sc)
                .map(|r| r.policy.as_str()),
        );
        let mut plotted = vec![];
        for p in policies {
            let mine: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.scenario == sc && r.policy == p)
                .collect();
            let (slo, caf) = sweep::slo_and_caf(&mine);
            let (at, gap) = match (
                sweep::frontier_at(points, sc, caf.mean),
                sweep::cheapest(points, sc),
            ) {
                (Some(f), _) => (format!("{f:>8.2}"), format!("{:+.2}", slo.mean - f)),
                (None, Some(c)) if slo.mean <= c.slo_violation_pct => (
                    format!("{:>8.2}", c.slo_violation_pct),
                    format!(
                        "{:+.2} (cheaper than every HPA target and no worse than the cheapest: below the frontier)",
                        slo.mean - c.slo_violation_pct
                    ),
                ),
                (None, Some(_)) => (
                    "       —".into(),
                    "cheaper than every HPA target but violating more: not comparable".into(),
                ),
                (None, None) => ("       —".into(), format!("no frontier for {sc}")),
            };
            text.push_str(&format!(
                "{sc:<13} {p:<13} {:>6.2} ± {:<6.2} {:>5.2} ± {:<5.2}   {at}   {gap}\n",
                slo.mean, slo.half_width, caf.mean, caf.half_width
            ));
            plotted.push(graphscaler_eval::plot::PolicyPoint {
                name: p.to_string(),
                slo,
                caf,
            });
        }
        if !no_plots && points.iter().any(|x| x.scenario == sc) {
            let file = out.join(format!("frontier-{}.png", sc.replace([':', '/'], "_")));
            graphscaler_eval::plot::frontier(&file, sc, points, &plotted)?;
            text.push_str(&format!("  plotted to {}\n", file.display()));
        }
    }
    say!("{text}");
    Ok(())
}

/// What a campaign's journal must know of its learned policies beyond their names: how they act
/// (`learn.act`, the settings they are built with) and the SHA-256 of each one's checkpoint files,
/// so that a retrained checkpoint under the same name is another campaign.
fn learned_parts(cfg: &Config, policies: &[PolicySpec]) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    let mut parts = vec![];
    for p in policies {
        let PolicySpec::Learned { name, path } = p else {
            continue;
        };
        let base = path.clone().map_or_else(
            || std::path::Path::new(&cfg.learn.checkpoint_dir).join(name),
            PathBuf::from,
        );
        let mut digests = vec![];
        for ext in ["safetensors", "json"] {
            let f = PathBuf::from(format!("{}.{ext}", base.display()));
            if let Ok(bytes) = std::fs::read(&f) {
                digests.push(format!("{}: {:x}", f.display(), Sha256::digest(&bytes)));
            }
        }
        parts.push((format!("checkpoint of {name}"), digests.join(", ")));
    }
    if !parts.is_empty() {
        parts.push(("learn settings".into(), format!("{:?}", cfg.learn)));
    }
    parts
}

fn campaign(
    cfg: &Config,
    policies: Vec<PolicySpec>,
    scenarios: Vec<Shape>,
    replays: usize,
    common: &Common,
    learning: Option<&dyn Learning>,
) -> Result<Vec<RunResult>> {
    if replays == 0 {
        bail!("--replays must be at least 1");
    }
    let topology = cfg.topology(common.topology.as_deref())?;
    let setup = Setup {
        topology,
        twin: cfg.twin.clone(),
        slo: cfg.slo.clone(),
        hpa: cfg.hpa.clone(),
        eval: cfg.eval.clone(),
        graph: cfg.pipeline.graph(),
        rails: cfg.pipeline.guardrails.clone(),
        fallback: PolicySpec::parse(&cfg.pipeline.fallback_policy)?,
    };
    let c = Campaign {
        policies,
        scenarios,
        replays,
        duration_s: common.duration,
        seed: common.seed,
        threads: common.threads,
    };
    let bar = ProgressBar::new(c.run_count() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} runs {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let learned = learning.map(|l| l.policies(cfg, Some(&setup.topology)));
    let out = out_dir(cfg, common);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let journal = graphscaler_eval::journal::Journal::open(
        &out.join(graphscaler_eval::journal::FILE),
        &c.header(&setup, learned_parts(cfg, &c.policies)),
        common.resume,
    )?;
    if journal.held() > 0 {
        say!(
            "resuming: {} of {} runs are in {} already",
            journal.held(),
            c.run_count(),
            out.join(graphscaler_eval::journal::FILE).display()
        );
    }
    let runs = c.run_journaled(&setup, learned.as_deref(), Some(&journal), &|r| {
        bar.set_message(format!("{} on {} #{}", r.policy, r.scenario, r.replay));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let summary = report::summarize(&runs);
    let deltas = report::deltas(&runs, &PolicySpec::TunedHpa.name());
    say!(
        "{} on {} ({} s each, {} replays, seeds {}..{}): {} runs in {:.1} s",
        setup.topology.source,
        "the twin",
        common.duration,
        replays,
        common.seed,
        common.seed + replays as u64 - 1,
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    say!("{}", report::table(&summary, &deltas));
    say!("mean ± 95% CI half-width (Student t); δ = Cliff's delta against tuned-hpa (negative: lower values)");
    report::write_files(&out, &runs, &summary, &deltas)?;
    let mut written = vec![
        "runs.csv",
        "summary.csv",
        "cliffs_delta.csv",
        "decisions.csv",
        "runs.parquet",
        "timeseries.parquet",
    ]
    .into_iter()
    .map(|f| out.join(f).display().to_string())
    .collect::<Vec<_>>();
    if !common.no_plots {
        for p in graphscaler_eval::plot::write_plots(&out, &runs, &summary)? {
            written.push(p.display().to_string());
        }
    }
    say!("wrote:\n  {}", written.join("\n  "));
    Ok(runs)
}
