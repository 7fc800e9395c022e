//! `graphscaler run`: the whole loop in one process — the twin as the cluster, the in-process
//! bus between the stages, the same stage code that runs on Kafka.
//!
//! The twin stands in for the scrape stage (its observations become the events the scrapers
//! would publish, one featurization) and for the cluster the actuator changes. The loop runs in
//! lock step and faster than real time: after each observation tick the twin waits until every
//! message it caused — telemetry, the snapshot of a finished window, actions, audit records — has
//! been handled, so a run is deterministic for a seed.

use std::sync::{Arc, Mutex};

use graphscaler_actuate::{Actuator, Guardrails};
use graphscaler_graph::GraphConfig;
use graphscaler_schemas::events::{ActionsTopic, AuditTopic, ServicesTopic, SnapshotsTopic};
use graphscaler_schemas::{TelemetryEvent, Topic};
use graphscaler_twin::Twin;
use tokio::sync::watch;

use graphscaler_actuate::stage::{self as actuate, ActuateSummary};
use graphscaler_bus::stage::Clock;
use graphscaler_bus::transport::{MemoryBus, Publisher};
use graphscaler_bus::Metrics;
use graphscaler_graph::stage::{self as graph_stage, GraphStage, GraphSummary};
use graphscaler_policy::stage::{self as policy_stage, PolicySummary};
use graphscaler_policy::SnapshotPolicy;

use crate::served::Decision;
pub use crate::served::TwinCluster;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Observation ticks.
    pub ticks: u64,
    /// Ticks whose entry p95 or error rate broke the SLO.
    pub slo_violated_ticks: u64,
    /// Telemetry events published.
    pub events: u64,
    /// Snapshot, action and audit counts, and the stages' own summaries.
    pub graph: GraphSummary,
    /// The policy stage.
    pub policy: PolicySummary,
    /// The actuator stage.
    pub actuate: ActuateSummary,
    /// The audit records, in order, each with the time of the snapshot its action was decided
    /// on.
    pub audit: Vec<Decision>,
    /// Allocated CPU core-seconds over the run.
    pub cpu_core_seconds: f64,
}

/// Topics of the in-process bus printed as they are published (`graphscaler run --tail`): each
/// message's envelope, as the topic carries it, one JSON line to `out`.
pub struct InProcessTail {
    /// The topics.
    pub topics: Vec<&'static str>,
    /// Where the lines go.
    pub out: Box<dyn std::io::Write + Send>,
}

impl std::fmt::Debug for InProcessTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessTail")
            .field("topics", &self.topics)
            .finish()
    }
}

/// Runs the loop until the twin's episode ends, printing the `tail` topics as they are published.
pub async fn run(
    twin: Twin,
    graph: GraphConfig,
    policy: Box<dyn SnapshotPolicy>,
    rails: Guardrails,
    metrics: &[Metrics; 4],
    store: Option<graphscaler_graph::stage::StoreSpec>,
    tail: Option<InProcessTail>,
) -> anyhow::Result<RunSummary> {
    let bus = MemoryBus::default();
    let publisher = Publisher::Memory(bus.clone());
    let twin = Arc::new(Mutex::new(twin));
    // One stop signal per stage, given in pipeline order once the one before has drained.
    let (stop_graph_tx, stop_graph) = watch::channel(false);
    let (stop_policy_tx, stop_policy) = watch::channel(false);
    let (stop_act_tx, stop_act) = watch::channel(false);
    let (stop_audit_tx, stop) = watch::channel(false);

    let graph_sub = bus.subscribe(&graph_stage::topics(store.is_some()));
    let policy_sub = bus.subscribe(&[SnapshotsTopic::NAME]);
    let act_sub = bus.subscribe(&[ActionsTopic::NAME, ServicesTopic::NAME]);
    let mut audit_sub = bus.subscribe(&[AuditTopic::NAME]);
    let tail = tail.map(|t| {
        let mut sub = bus.subscribe(&t.topics);
        let mut out = t.out;
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                match sub.next(std::time::Duration::from_millis(200)).await {
                    Ok(Some(m)) => {
                        let mut line = m.payload.clone();
                        line.push(b'\n');
                        let written = out.write_all(&line);
                        let _ = sub.commit(&m);
                        written?;
                    }
                    Ok(None) if *stop.borrow() => break,
                    _ => {}
                }
            }
            out.flush()
        })
    });

    let g = tokio::spawn(graph_stage::graph(
        graph_sub,
        publisher.clone(),
        GraphStage {
            graph,
            grace: std::time::Duration::ZERO,
            clock: Clock::Event,
            store,
            max_clock_skew_s: rails.max_clock_skew_s,
        },
        metrics[1].clone(),
        stop_graph,
    ));
    let p = tokio::spawn(policy_stage::policy(
        policy_sub,
        publisher.clone(),
        policy,
        metrics[2].clone(),
        stop_policy,
    ));
    let cluster = Box::new(TwinCluster(twin.clone(), rails.cpu_resize));
    let a = tokio::spawn(actuate::actuate(
        act_sub,
        publisher.clone(),
        Actuator::new(rails),
        cluster,
        Clock::Event,
        metrics[3].clone(),
        stop_act,
    ));
    let audit = tokio::spawn(async move {
        let mut out = vec![];
        loop {
            match audit_sub.next(std::time::Duration::from_millis(200)).await {
                Ok(Some(m)) => {
                    if let Ok(e) = m.decode::<AuditTopic>() {
                        out.push(Decision {
                            at_s: e.observed_at_s,
                            record: e.payload,
                        });
                    }
                    let _ = audit_sub.commit(&m);
                }
                Ok(None) if *stop.borrow() => break,
                _ => {}
            }
        }
        out
    });

    let mut sum = RunSummary::default();
    let mut prev = None;
    loop {
        let (obs, truth) = {
            let mut t = twin.lock().unwrap_or_else(|p| p.into_inner());
            if t.done() {
                break;
            }
            t.advance()
        };
        sum.ticks += 1;
        sum.slo_violated_ticks += u64::from(truth.slo_violated);
        sum.cpu_core_seconds += truth
            .services
            .iter()
            .map(|s| s.allocated_cpu_cores)
            .sum::<f64>()
            * obs.window_s;
        for e in TelemetryEvent::changes_since(prev.as_ref(), &obs, "twin") {
            publisher.publish_telemetry(&e).await?;
            metrics[0].add(
                "graphscaler_events_out_total",
                &[("topic", e.topic_and_key().0)],
                1.0,
            );
            sum.events += 1;
        }
        prev = Some(obs);
        bus.wait_idle().await;
    }
    let _ = stop_graph_tx.send(true);
    sum.graph = g.await??;
    bus.wait_idle().await;
    let _ = stop_policy_tx.send(true);
    sum.policy = p.await??;
    bus.wait_idle().await;
    let _ = stop_act_tx.send(true);
    sum.actuate = a.await??;
    bus.wait_idle().await;
    let _ = stop_audit_tx.send(true);
    sum.audit = audit.await?;
    if let Some(t) = tail {
        t.await?
            .map_err(|e| anyhow::anyhow!("writing the tail of the in-process bus: {e}"))?;
    }
    Ok(sum)
}
