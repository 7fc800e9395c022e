//! The policy stage: snapshots in (validated first: one that fails goes to the dead-letter
//! topic), a [`SnapshotPolicy`]'s decisions made absolute and published as actions, then the
//! whole decision (actions, or none) on the decisions topic.

use graphscaler_bus::stage::{publish_counted, DeadLetters, Inbox};
use graphscaler_bus::transport::{Publisher, Subscriber};
use graphscaler_bus::Metrics;
use graphscaler_schemas::events::{ActionsTopic, DecisionRecord, DecisionsTopic, SnapshotsTopic};
use graphscaler_schemas::{Action, Envelope, Snapshot};
use tokio::sync::watch;

use crate::SnapshotPolicy;

/// The desired state an action asks for, from the snapshot it was decided on: a change of
/// replicas becomes the replica count, a change of CPU quota the CPU limit, so that the action
/// means the same however often, and however late, it is delivered.
pub fn absolute(a: Action, snap: &Snapshot) -> Result<Action, String> {
    use graphscaler_schemas::ActionKind as K;
    if a.kind.is_absolute() {
        return Ok(a);
    }
    let i = snap
        .services
        .iter()
        .position(|s| *s == a.service)
        .ok_or_else(|| format!("`{}` is not in the snapshot", a.service))?;
    let kind = match a.kind {
        K::ChangeReplicas { delta } => {
            let spec = snap.replicas_spec.get(i).copied().unwrap_or(0);
            K::SetReplicas {
                replicas: (i64::from(spec) + i64::from(delta)).clamp(0, i64::from(u32::MAX)) as u32,
            }
        }
        K::ChangeCpuQuota { delta } => {
            if !delta.is_finite() {
                return Err(format!(
                    "cpu quota delta {delta} for `{}` is not a number",
                    a.service
                ));
            }
            let limit = snap
                .cpu_limit_cores
                .get(i)
                .copied()
                .filter(|l| l.is_finite() && *l > 0.0)
                .ok_or_else(|| format!("the snapshot has no CPU limit for `{}`", a.service))?;
            let m = (f64::from(limit) * 1000.0 * 2f64.powf(delta.clamp(-1.0, 1.0))).round();
            K::SetCpuLimit {
                millicores: m.clamp(1.0, f64::from(u32::MAX)) as u32,
            }
        }
        k => k,
    };
    Ok(Action::new(a.service, kind))
}

/// A policy's decisions on one snapshot, as the policy stage publishes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decided {
    /// The actions, absolute, stamped with the snapshot's time (in the order decided).
    pub actions: Vec<Envelope<Action>>,
    /// Why each relative action that could not be made absolute was dropped.
    pub dropped: Vec<String>,
}

/// `decided` on `snap` by the policy named `source` (`policy/NAME`): each made [`absolute`]
/// and enveloped, stamped with the snapshot's time; what cannot be made absolute is dropped.
pub fn decided(source: &str, snap: &Snapshot, decided: Vec<Action>) -> Decided {
    let mut out = Decided::default();
    for a in decided {
        match absolute(a, snap) {
            Ok(a) => out
                .actions
                .push(Envelope::decision(source, snap.time_s, snap.window_s, a)),
            Err(why) => out.dropped.push(why),
        }
    }
    out
}

/// The source the policy stage stamps on a policy's actions.
pub fn source(policy: &dyn SnapshotPolicy) -> String {
    format!("policy/{}", policy.name())
}

/// What the policy stage did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySummary {
    /// Snapshots consumed.
    pub snapshots: u64,
    /// Actions published.
    pub actions: u64,
    /// Messages that were not snapshots, or snapshots whose parts disagree (dead-lettered).
    pub undecodable: u64,
    /// Relative actions that could not be made absolute (the snapshot lacked what they
    /// change), dropped and counted.
    pub dropped: u64,
    /// Snapshots its fallback decided because the policy could not ([`crate::WithFallback`]).
    pub fallbacks: u64,
    /// The policy's own summary ([`SnapshotPolicy::summary`]).
    pub note: Option<String>,
}

/// The policy stage: snapshots in, actions out.
pub async fn policy(
    sub: Subscriber,
    publisher: Publisher,
    policy: Box<dyn SnapshotPolicy>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<PolicySummary> {
    let mut sum = PolicySummary::default();
    let letters = DeadLetters::new("policy", publisher.clone(), metrics.clone(), stop.clone());
    let source = source(policy.as_ref());
    let mut worker = Worker::spawn(policy)?;
    let mut inbox = Inbox::new(sub, metrics.clone(), stop.clone());
    while let Some(msg) = inbox.next().await {
        let decoded = msg
            .decode::<SnapshotsTopic>()
            .map_err(|e| ("undecodable", e.to_string()))
            .and_then(|env| match env.payload.validate() {
                Ok(()) => Ok(env),
                Err(e) => Err((
                    "invalid_snapshot",
                    format!("snapshot at {} s: {e}", env.observed_at_s),
                )),
            });
        match decoded {
            Ok(env) => {
                sum.snapshots += 1;
                let (snap, actions, fell) = worker.decide(env.payload).await?;
                // What a fallback decided is published as its own.
                let by = match &fell {
                    Some((fallback, _)) => {
                        sum.fallbacks += 1;
                        metrics.add("graphscaler_policy_fallback_total", &[], 1.0);
                        format!("policy/{fallback}")
                    }
                    None => source.clone(),
                };
                let out = decided(&by, &snap, actions);
                let record = Envelope::new(
                    &by,
                    snap.time_s,
                    snap.window_s,
                    DecisionRecord {
                        policy: by.clone(),
                        actions: out.actions.iter().map(|e| e.payload.clone()).collect(),
                        dropped: out.dropped.clone(),
                        fallback: fell.map(|(_, why)| why),
                    },
                );
                for why in out.dropped {
                    if sum.dropped == 0 {
                        tracing::warn!(%why, "an action could not be made absolute; dropped");
                    }
                    sum.dropped += 1;
                    metrics.add("graphscaler_actions_dropped_total", &[], 1.0);
                }
                for e in out.actions {
                    if publish_counted::<ActionsTopic>("action", &publisher, &metrics, &stop, &e)
                        .await
                    {
                        sum.actions += 1;
                        metrics.add(
                            "graphscaler_policy_actions_total",
                            &[
                                ("policy", by.trim_start_matches("policy/")),
                                ("service", e.payload.service.as_str()),
                                ("part", e.payload.kind.part()),
                            ],
                            1.0,
                        );
                    }
                }
                // After its actions: whoever records the decision has seen them go out.
                publish_counted::<DecisionsTopic>("decision", &publisher, &metrics, &stop, &record)
                    .await;
            }
            Err((kind, e)) => {
                if !letters.send(&mut sum.undecodable, &msg, kind, e).await {
                    continue;
                }
            }
        }
        inbox.commit(&msg);
    }
    sum.note = worker.finish()?;
    Ok(sum)
}

/// A decision: the snapshot, the actions, and who decided when a fallback did (with why).
type Decision = (Snapshot, Vec<Action>, Option<(String, String)>);

type Job = (Snapshot, tokio::sync::oneshot::Sender<Decision>);

/// The policy on a thread of its own: a decision — and an online learner's update, which runs
/// inside one — never blocks the async runtime, whose other tasks (the bus, `/metrics`, the other
/// stages of `graphscaler run`) go on meanwhile.
struct Worker {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl Worker {
    fn spawn(mut policy: Box<dyn SnapshotPolicy>) -> anyhow::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("policy".into())
            .spawn(move || {
                for (snap, reply) in rx {
                    let actions = policy.decide(&snap);
                    let fell = policy.fell_back();
                    let _ = reply.send((snap, actions, fell));
                }
                policy.summary()
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    async fn decide(&mut self, snap: Snapshot) -> anyhow::Result<Decision> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send((snap, tx)).is_ok());
        match (sent, rx.await) {
            (true, Ok(out)) => Ok(out),
            _ => Err(self.died()),
        }
    }

    /// The error when the policy's thread is gone (it panicked): its panic message.
    fn died(&mut self) -> anyhow::Error {
        self.jobs = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(p)) => panicked(p),
            _ => anyhow::anyhow!("the policy's thread stopped"),
        }
    }

    /// Stops the thread and returns the policy's summary.
    fn finish(mut self) -> anyhow::Result<Option<String>> {
        self.jobs = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(summary)) => Ok(summary),
            Some(Err(p)) => Err(panicked(p)),
            None => Ok(None),
        }
    }
}

fn panicked(p: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let why = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic".into());
    anyhow::anyhow!("the policy's thread stopped: {why}")
}
