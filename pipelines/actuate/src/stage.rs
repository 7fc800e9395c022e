//! The actuate stage: actions (and service telemetry, for the hold guardrail) in, through the
//! [`Actuator`]'s guardrails to a [`Cluster`], and one audit record per action out.

use graphscaler_bus::stage::{publish_counted, Clock, DeadLetters, Inbox};
use graphscaler_bus::transport::{Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_schemas::events::{ActionsTopic, AuditTopic, ServicesTopic};
use graphscaler_schemas::{Envelope, Topic};
use tokio::sync::watch;

use crate::{Actuator, Cluster};

/// What the actuator stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActuateSummary {
    /// Actions consumed.
    pub actions: u64,
    /// Applied (or would have been, in dry run).
    pub applied: u64,
    /// Refused.
    pub refused: u64,
    /// Messages that were not actions or service events (dead-lettered).
    pub undecodable: u64,
    /// Service telemetry stamped implausibly far ahead, ignored by the staleness guard.
    pub implausible: u64,
}

/// The actuator stage: actions (and service telemetry, for the hold guardrail) in, audit
/// records out. `sub` must be subscribed to the actions and the services topics.
pub async fn actuate(
    sub: Subscriber,
    publisher: Publisher,
    mut actuator: Actuator,
    mut cluster: Box<dyn Cluster + Send>,
    clock: Clock,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ActuateSummary> {
    let mut sum = ActuateSummary::default();
    let letters = DeadLetters::new("actuate", publisher.clone(), metrics.clone(), stop.clone());
    let mut inbox = Inbox::new(sub, metrics.clone(), stop.clone());
    while let Some(msg) = inbox.next().await {
        let undecodable = if msg.topic == ServicesTopic::NAME {
            match msg.decode::<ServicesTopic>() {
                Ok(e) => {
                    let plausible = actuator.on_service(
                        &e.payload.name,
                        e.observed_at_s,
                        &e.payload.missing,
                        clock,
                    );
                    if plausible {
                        // Pods started since an in-place resize come at the template's size.
                        let n = cluster.reconcile(&e.payload.name);
                        if n > 0 {
                            metrics.add("graphscaler_pods_resized_total", &[], n as f64);
                        }
                    } else {
                        if sum.implausible == 0 {
                            tracing::warn!(event = %e.event_id, at = e.observed_at_s, "service telemetry stamped implausibly far ahead; ignored by the staleness guard");
                        }
                        sum.implausible += 1;
                        metrics.add(
                            "graphscaler_events_rejected_total",
                            &[("reason", "implausible_time")],
                            1.0,
                        );
                    }
                    None
                }
                Err(e) => Some(e),
            }
        } else {
            match msg.decode::<ActionsTopic>() {
                Ok(env) => {
                    sum.actions += 1;
                    let record = actuator.on_action(cluster.as_mut(), &env, clock);
                    metrics.set(
                        "graphscaler_actuator_state_write_failures_total",
                        &[],
                        actuator.stats.state_write_failures as f64,
                    );
                    let outcome = if !record.outcome.is_applied() {
                        sum.refused += 1;
                        "refused"
                    } else if record.dry_run {
                        sum.applied += 1;
                        "dry_run"
                    } else {
                        sum.applied += 1;
                        "applied"
                    };
                    metrics.add("graphscaler_actions_total", &[("outcome", outcome)], 1.0);
                    let audit = Envelope::new("actuator", env.observed_at_s, env.window_s, record);
                    publish_counted::<AuditTopic>("audit", &publisher, &metrics, &stop, &audit)
                        .await;
                    None
                }
                Err(e) => Some(e),
            }
        };
        if let Some(e) = undecodable {
            if !letters
                .send(&mut sum.undecodable, &msg, "undecodable", e.to_string())
                .await
            {
                continue;
            }
        }
        inbox.commit(&msg);
    }
    Ok(sum)
}
