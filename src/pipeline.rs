//! `graphscaler run` and the stage subcommands (`scrape`, `graph`, `policy`, `actuate`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use graphscaler_bus::stage::Clock;
use graphscaler_bus::transport::{Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_graph::stage::GraphStage;
use graphscaler_policy::{PolicySpec, SnapshotPolicy};
use graphscaler_schemas::events::{ActionsTopic, ServicesTopic, SnapshotsTopic};
use graphscaler_schemas::Topic;
use graphscaler_scrape::collect::Collector;

use crate::config::{parse_duration, Config};
use crate::Learning;

/// `graphscaler run`.
#[derive(Debug, Args)]
pub struct LoopArgs {
    /// off-peak, peak, rush, fluctuating, burst or trace:<file.csv>.
    #[arg(long, default_value = "peak")]
    scenario: String,
    /// Run length (4h, 30m, 90s).
    #[arg(long, default_value = "4h", value_parser = parse_duration)]
    duration: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// noop, hpa, tuned-hpa, hpa-<percent>, gat-ppo, mlp-ppo, gcn-sac, dysat-a2c or
    /// checkpoint:PATH (default: pipeline.policy).
    #[arg(long)]
    pub policy: Option<String>,
    /// Topology file (default: twin.topology).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Store the snapshots, with the decisions taken on them and the rewards after them, in
    /// this store directory (continued if it exists; default: pipeline.snapshot_store).
    #[arg(long, alias = "snapshots")]
    store: Option<PathBuf>,
    /// Write every decision of the actuator to this CSV file (the columns of `graphscaler
    /// eval`'s decisions.csv).
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Print these topics of the in-process bus as they are published, one JSON envelope per
    /// line on stdout before the summary: comma-separated actions, audit, decisions, snapshots.
    #[arg(long, value_delimiter = ',')]
    tail: Vec<String>,
}

/// The topic a short name names (`graphscaler run --tail`, `graphscaler <name> tail`).
pub fn topic_named(name: &str) -> Result<&'static str> {
    use graphscaler_schemas::events::{AuditTopic, DecisionsTopic};
    Ok(match name {
        "actions" => ActionsTopic::NAME,
        "audit" => AuditTopic::NAME,
        "decisions" => DecisionsTopic::NAME,
        "snapshots" => SnapshotsTopic::NAME,
        other => bail!("no topic `{other}` to tail (actions, audit, decisions, snapshots)"),
    })
}

/// `graphscaler actions|audit|decisions tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Where to start: end (what is published from now on), beginning, offset:N (of every
    /// partition) or time:T (T Unix seconds or YYYY-MM-DDTHH:MM:SSZ).
    #[arg(long, default_value = "end")]
    from: graphscaler_bus::tail::Start,
    /// Read as this consumer group: it goes on from the group's committed offsets and commits
    /// what it prints. Without it, the tail moves no one's position.
    #[arg(long)]
    group: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (90s, 30m); with neither this nor --count, at Ctrl-C.
    #[arg(long = "for", value_parser = parse_duration)]
    duration: Option<f64>,
}

/// Prints `topic` on the configured brokers as JSON lines (one envelope per line), from where
/// `a` says, until `a`'s count or time or Ctrl-C.
pub fn tail(cfg: &Config, topic: &'static str, a: TailArgs) -> Result<()> {
    use std::io::Write;
    let bus = cfg.pipeline.bus("tail");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (from, group) = (a.from, a.group.clone());
        let opened = tokio::task::spawn_blocking(move || {
            graphscaler_bus::tail::Tail::open(
                &bus,
                topic,
                from,
                group.as_deref(),
                Duration::from_secs(10),
            )
        })
        .await?;
        let t = opened
            .with_context(|| format!("tailing {topic} on {}", cfg.pipeline.kafka_bootstrap))?;
        let deadline = a
            .duration
            .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
        let mut printed = 0u64;
        let mut stdout = std::io::stdout().lock();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        while a.count.is_none_or(|n| printed < n) {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
            let msg = tokio::select! {
                m = t.next(Duration::from_millis(250)) => m?,
                _ = &mut interrupted => break,
            };
            let Some(m) = msg else { continue };
            stdout.write_all(&m.payload)?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
            t.done(&m)?;
            printed += 1;
        }
        Ok(())
    })
}

/// A policy for the policy stage by name (the grammar of [`PolicySpec::parse`]).
pub fn snapshot_policy(
    name: &str,
    cfg: &Config,
    learning: Option<&dyn Learning>,
) -> Result<Box<dyn SnapshotPolicy>> {
    let spec = PolicySpec::parse(name)?;
    let learned = learning.map(|l| l.policies(cfg, None));
    let fallback = PolicySpec::parse(&cfg.pipeline.fallback_policy)?;
    Ok(spec.build_served(&cfg.hpa, &fallback, learned.as_deref())?)
}

/// `graphscaler run`.
pub fn run_loop(cfg: &Config, a: LoopArgs, learning: Option<&dyn Learning>) -> Result<()> {
    let twin = cfg.twin(a.topology.as_deref(), &a.scenario, a.duration, a.seed)?;
    let name = a.policy.unwrap_or_else(|| cfg.pipeline.policy.clone());
    let policy = snapshot_policy(&name, cfg, learning)?;
    let metrics = [
        Metrics::new("scrape"),
        Metrics::new("graph"),
        Metrics::new("policy"),
        Metrics::new("actuate"),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let tail = if a.tail.is_empty() {
        None
    } else {
        Some(graphscaler_pipeline::run::InProcessTail {
            topics: a
                .tail
                .iter()
                .map(|n| topic_named(n))
                .collect::<Result<_>>()?,
            out: Box::new(std::io::stdout()),
        })
    };
    let sum = rt.block_on(graphscaler_pipeline::run::run(
        twin,
        cfg.pipeline.graph(),
        policy,
        cfg.pipeline.guardrails.clone(),
        &metrics,
        cfg.store(a.store.as_deref()),
        tail,
    ))?;
    let secs = started.elapsed().as_secs_f64();
    let pct = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    say!(
        "graphscaler run: {} on {} for {} s (seed {}), policy {name}, window {} s — {:.1} s wall",
        "the twin",
        a.scenario,
        a.duration,
        a.seed,
        cfg.pipeline.window_s,
        secs
    );
    say!(
        "  twin      {} ticks, {} of them violating the SLO ({:.1}%), {:.0} CPU core-seconds allocated",
        sum.ticks,
        sum.slo_violated_ticks,
        pct(sum.slo_violated_ticks, sum.ticks),
        sum.cpu_core_seconds
    );
    say!("  scrape    {} telemetry events published", sum.events);
    say!(
        "  graph     {} events in, {} snapshots out ({:?})",
        sum.graph.events,
        sum.graph.snapshots,
        sum.graph.ingest.unwrap_or_default()
    );
    if let Some(st) = &sum.graph.stored {
        say!(
            "            stored {} windows in {} file(s) ({} without a reward, {} late decisions, {} store failures)",
            st.windows,
            st.files,
            st.unrewarded,
            st.late_decisions,
            sum.graph.store_failures
        );
    }
    say!(
        "  policy    {} snapshots in, {} actions out",
        sum.policy.snapshots,
        sum.policy.actions
    );
    if let Some(note) = &sum.policy.note {
        say!("            {note}");
    }
    say!(
        "  actuate   {} actions in: {} applied, {} refused",
        sum.actuate.actions,
        sum.actuate.applied,
        sum.actuate.refused
    );
    let mut refusals: std::collections::BTreeMap<graphscaler_schemas::Refusal, usize> =
        Default::default();
    for d in &sum.audit {
        if let graphscaler_schemas::ActionOutcome::Refused { refusal, .. } = &d.record.outcome {
            *refusals.entry(*refusal).or_default() += 1;
        }
    }
    for (r, n) in refusals {
        say!("            refused ({}): {n}", r.name());
    }
    if sum.events != sum.graph.events
        || sum.graph.snapshots != sum.policy.snapshots
        || sum.policy.actions != sum.actuate.actions
        || sum.actuate.actions as usize != sum.audit.len()
    {
        bail!("counts do not match end to end (see above): something was lost");
    }
    say!("  counts match end to end: nothing lost");
    if let Some(path) = &a.decisions {
        let scenario = graphscaler_twin::Shape::parse(&a.scenario)?.name();
        let name = PolicySpec::parse(&name)?.name();
        graphscaler_eval::report::write_decisions(
            path,
            sum.audit.iter().map(|d| {
                graphscaler_eval::report::DecisionRow::new(&name, &scenario, 0, a.seed, d)
            }),
        )?;
        say!("  decisions written to {}", path.display());
    }
    if let Some(st) = cfg.store(a.store.as_deref()) {
        say!("  snapshots stored in {}", st.dir.display());
    }
    Ok(())
}

/// A stage subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `scrape`.
    Scrape,
    /// `graph`.
    Graph,
    /// `policy`.
    Policy,
    /// `actuate`.
    Actuate,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Scrape => "scrape",
            Stage::Graph => "graph",
            Stage::Policy => "policy",
            Stage::Actuate => "actuate",
        }
    }
}

/// Runs one stage on Kafka until Ctrl-C (or SIGTERM).
pub fn stage(cfg: &Config, which: Stage, learning: Option<&dyn Learning>) -> Result<()> {
    let p = &cfg.pipeline;
    if p.kafka_bootstrap.is_empty() {
        bail!(
            "`graphscaler {}` runs on Kafka: set pipeline.kafka_bootstrap (or GRAPHSCALER_PIPELINE__KAFKA_BOOTSTRAP); `graphscaler run` runs every stage in one process without a broker",
            which.name()
        );
    }
    let bus = p.bus(which.name());
    let group = bus.client_id.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let metrics = Metrics::new(which.name());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
        });
        if !p.metrics_listen.is_empty() {
            let listener = tokio::net::TcpListener::bind(&p.metrics_listen)
                .await
                .with_context(|| format!("pipeline.metrics_listen {}", p.metrics_listen))?;
            let m = vec![metrics.clone()];
            let mut s = stop.clone();
            let limit = Duration::from_secs_f64(p.ready_after_s);
            tokio::spawn(graphscaler_bus::metrics::serve(
                listener,
                m,
                limit,
                async move {
                    let _ = s.changed().await;
                },
            ));
        }
        let publisher = Publisher::kafka(&bus)?;
        let out = match which {
            Stage::Scrape => {
                let c = Collector::new(p.collect.clone(), (cfg.slo.latency_ms, cfg.slo.error_rate))
                    .await?;
                let s = graphscaler_scrape::stage::scrape(
                    c,
                    publisher,
                    Duration::from_secs_f64(p.collect.interval_s),
                    metrics,
                    stop,
                )
                .await;
                format!("{s:?}")
            }
            Stage::Graph if p.graph_process != 0 => {
                // A helper process of the graph job's timely cluster: it shares the dataflow's
                // work; process 0 reads the topics and publishes the snapshots.
                let g = graphscaler_graph::LiveGraph::spawn(&cfg.pipeline.graph());
                let mut s = stop.clone();
                let _ = s.changed().await;
                format!(
                    "graph process {} stopped: {:?}",
                    p.graph_process,
                    g.finish()?
                )
            }
            Stage::Graph => {
                let store = cfg.store(None);
                let topics = graphscaler_graph::stage::topics(store.is_some());
                let sub = Subscriber::kafka(&bus, &group, &topics)?;
                let g = GraphStage {
                    graph: cfg.pipeline.graph(),
                    grace: Duration::from_secs_f64(p.grace_s),
                    clock: Clock::Wall,
                    store,
                    max_clock_skew_s: p.guardrails.max_clock_skew_s,
                };
                format!(
                    "{:?}",
                    graphscaler_graph::stage::graph(sub, publisher, g, metrics, stop).await?
                )
            }
            Stage::Policy => {
                let sub = Subscriber::kafka(&bus, &group, &[SnapshotsTopic::NAME])?;
                let pol = snapshot_policy(&p.policy, cfg, learning)?;
                format!(
                    "{:?}",
                    graphscaler_policy::stage::policy(sub, publisher, pol, metrics, stop).await?
                )
            }
            Stage::Actuate => {
                let url = (!p.collect.kubernetes_url.is_empty())
                    .then_some(p.collect.kubernetes_url.as_str());
                let client = graphscaler_scrape::k8s::client(url).await?;
                // One actuator applies: it takes the Lease before it joins the consumer group.
                let elector = p.lease.enabled.then(|| {
                    graphscaler_actuate::lease::Elector::new(
                        client.clone(),
                        p.lease.clone(),
                        graphscaler_actuate::lease::identity(),
                    )
                });
                if let Some(e) = &elector {
                    say!(
                        "actuate: a candidate for the lease `{}` as {}",
                        p.lease.name,
                        e.identity()
                    );
                    if !e.acquire(&metrics, stop.clone()).await {
                        say!("actuate: stopped before it took the lease");
                        return Ok(());
                    }
                }
                let (lost_tx, lost) = tokio::sync::watch::channel(false);
                let (stage_stop_tx, stage_stop) = tokio::sync::watch::channel(false);
                let holder = elector.clone().map(|e| {
                    let (m, s) = (metrics.clone(), stop.clone());
                    tokio::spawn(async move { e.hold(&m, s, lost_tx).await })
                });
                // The stage stops on the process' stop or when the lease is lost.
                let mut outer = stop.clone();
                let mut lost_rx = lost.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = outer.changed() => {}
                        _ = lost_rx.changed() => {}
                    }
                    let _ = stage_stop_tx.send(true);
                });
                // A new actuator group starts at the end of the topics: it never replays old
                // actions (they would be refused by their time-to-live anyway).
                let sub = Subscriber::kafka_from_end(
                    &bus,
                    &group,
                    &[ActionsTopic::NAME, ServicesTopic::NAME],
                )?;
                let cluster =
                    graphscaler_actuate::k8s::KubeCluster::new(client, &p.collect.namespace)
                        .with_cpu_resize(p.guardrails.cpu_resize);
                let act = graphscaler_actuate::Actuator::open(p.guardrails.clone())?;
                let summary = graphscaler_actuate::stage::actuate(
                    sub,
                    publisher,
                    act,
                    Box::new(cluster),
                    Clock::Wall,
                    metrics,
                    stage_stop,
                )
                .await?;
                if let Some(h) = holder {
                    if let Err(lost) = h.await? {
                        bail!("actuate stopped applying: {lost}; exiting so that it restarts as a candidate ({summary:?})");
                    }
                }
                format!("{summary:?}")
            }
        };
        say!("{}: {out}", which.name());
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `graphscaler replay --policy` / `--publish`: stored snapshots back into the pipeline.
pub fn replay_into(
    cfg: &Config,
    paths: &[PathBuf],
    policy: Option<&str>,
    publish: bool,
    learning: Option<&dyn Learning>,
) -> Result<()> {
    if policy.is_none() && !publish {
        return Ok(());
    }
    let snaps: Vec<graphscaler_schemas::Snapshot> = graphscaler_graph::store::read_paths(paths)?
        .into_iter()
        .map(|t| t.snapshot)
        .collect();
    if let Some(name) = policy {
        let mut p = snapshot_policy(name, cfg, learning)?;
        let mut by_service: std::collections::BTreeMap<String, usize> = Default::default();
        let mut n = 0;
        for s in &snaps {
            for a in p.decide(s) {
                *by_service.entry(a.service).or_default() += 1;
                n += 1;
            }
        }
        say!(
            "  policy {name}: {n} actions over {} snapshots",
            snaps.len()
        );
        for (s, k) in by_service {
            say!("    {s}: {k}");
        }
    }
    if publish {
        let p = &cfg.pipeline;
        if p.kafka_bootstrap.is_empty() {
            bail!("--publish needs pipeline.kafka_bootstrap (or GRAPHSCALER_PIPELINE__KAFKA_BOOTSTRAP)");
        }
        let bus = p.bus("replay");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let n = snaps.len();
        rt.block_on(async move {
            let publisher = Publisher::kafka(&bus)?;
            for s in snaps {
                let env = graphscaler_schemas::Envelope::new("replay", s.time_s, s.window_s, s);
                publisher.publish::<SnapshotsTopic>(&env).await?;
            }
            anyhow::Ok(())
        })?;
        say!("  published {n} snapshots to {}", SnapshotsTopic::NAME);
    }
    Ok(())
}
