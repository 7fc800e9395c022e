//! What every stage loop shares: its clock, reading the next message through a bus that may
//! go away, publishing with retries, committing, and the dead-letter topic for messages it
//! cannot use.

use std::time::Duration;

use graphscaler_schemas::{Envelope, Keyed, Topic};
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::transport::{Message, Publisher, Subscriber};

/// Where a stage's "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Unix time: a real cluster, or the twin served over HTTP.
    Wall,
    /// The latest event time seen: the twin in process, running faster than real time.
    Event,
}

impl Clock {
    /// Now, seconds: the wall clock, or the newest plausible event time `newest` (the time `t`
    /// of the event at hand when there is none yet).
    pub fn now(self, newest: f64, t: f64) -> f64 {
        match self {
            Clock::Wall => unix_now(),
            Clock::Event if newest.is_finite() => newest,
            Clock::Event => t,
        }
    }
}

/// Unix time now, seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long a stage waits for a message before it looks at its clock and its stop signal.
pub const POLL: Duration = Duration::from_millis(200);

/// What one poll of an [`Inbox`] gave.
#[derive(Debug)]
pub enum Polled {
    /// A message (counted in `graphscaler_events_in_total`).
    Message(Message),
    /// Nothing within [`POLL`] (or the bus failed and was waited out); the stage goes on.
    Idle,
    /// Nothing within [`POLL`], and the stage was asked to stop.
    Stopped,
}

/// A stage's input: its subscription, read through a bus that may go away. A bus error (a
/// broker that went away) is counted, logged once per streak and waited out: a stage outlives
/// its broker.
#[derive(Debug)]
pub struct Inbox {
    sub: Subscriber,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
    errors: u32,
    probed: Option<std::time::Instant>,
    unanswered: bool,
}

/// How often an idle stage asks the bus whether it answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long it waits for the answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Inbox {
    /// Reads `sub` until `stop` is set, counting in `metrics`.
    pub fn new(sub: Subscriber, metrics: Metrics, stop: watch::Receiver<bool>) -> Self {
        Self {
            sub,
            metrics,
            stop,
            errors: 0,
            probed: None,
            unanswered: false,
        }
    }

    /// Waits up to [`POLL`] for the next message.
    pub async fn poll(&mut self) -> Polled {
        let got = match self.sub.next(POLL).await {
            Ok(m) => {
                if m.is_some() {
                    self.metrics.progressed();
                }
                if self.errors > 0 {
                    tracing::info!(after = self.errors, "the bus is back");
                    self.errors = 0;
                }
                m
            }
            Err(e) => {
                if self.errors == 0 {
                    tracing::warn!(error = %e, "reading from the bus failed; retrying");
                }
                self.errors += 1;
                self.metrics.add(
                    "graphscaler_events_rejected_total",
                    &[("reason", "bus_error")],
                    1.0,
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        };
        if got.is_none() && self.errors == 0 {
            self.probe().await;
        }
        match got {
            Some(msg) => {
                self.metrics
                    .add("graphscaler_events_in_total", &[("topic", &msg.topic)], 1.0);
                Polled::Message(msg)
            }
            None if stopped(&self.stop) => Polled::Stopped,
            None => Polled::Idle,
        }
    }

    /// While idle, asks the bus every [`PROBE_EVERY`] whether it answers: an answer is progress
    /// (what `/readyz` reads); no answer is warned once per streak and counted
    /// (`graphscaler_bus_unanswered_total`).
    async fn probe(&mut self) {
        if self.probed.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return;
        }
        self.probed = Some(std::time::Instant::now());
        match self.sub.reachable(PROBE_TIMEOUT).await {
            Ok(()) => {
                if self.unanswered {
                    tracing::info!("the bus answers again");
                    self.unanswered = false;
                }
                self.metrics.progressed();
            }
            Err(e) => {
                if !self.unanswered {
                    tracing::warn!(error = %e, "the bus does not answer; /readyz will say so (warned once until it does)");
                    self.unanswered = true;
                }
                self.metrics
                    .add("graphscaler_bus_unanswered_total", &[], 1.0);
            }
        }
    }

    /// The next message; `None` once the stage is asked to stop and nothing is waiting.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            match self.poll().await {
                Polled::Message(m) => return Some(m),
                Polled::Idle => {}
                Polled::Stopped => return None,
            }
        }
    }

    /// Commits a handled message (see [`commit`]).
    pub fn commit(&self, msg: &Message) {
        commit(&self.sub, msg, &self.metrics);
    }
}

/// Publishes `event` on `T`'s topic with [`publish_retrying`] and counts it in
/// `graphscaler_events_out_total{topic}`; whether it was published.
pub async fn publish_counted<T: Topic>(
    what: &str,
    publisher: &Publisher,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
    event: &Envelope<T::Payload>,
) -> bool
where
    T::Payload: Serialize + Keyed,
{
    let ok = publish_retrying(what, metrics, stop, || publisher.publish::<T>(event)).await;
    if ok {
        metrics.add("graphscaler_events_out_total", &[("topic", T::NAME)], 1.0);
    }
    ok
}

/// A message a stage could not use, as it goes to `<topic>.dlq`: where it came from, why it was
/// refused, and the original payload (as text; bytes that are not UTF-8 are replaced).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition (0 in process).
    pub partition: i32,
    /// Its offset (the sequence number in process).
    pub offset: i64,
    /// The stage that refused it.
    pub stage: String,
    /// Why, in words that name what was wrong.
    pub reason: String,
    /// The payload as it was read.
    pub payload: String,
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Where a stage sends the messages it cannot use: `<topic>.dlq`, with the reason.
#[derive(Debug)]
pub struct DeadLetters {
    stage: &'static str,
    publisher: Publisher,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
}

impl DeadLetters {
    /// The dead-letter sender of `stage`.
    pub fn new(
        stage: &'static str,
        publisher: Publisher,
        metrics: Metrics,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            stage,
            publisher,
            metrics,
            stop,
        }
    }

    /// Sends `msg` to `<topic>.dlq` with the reason, counts it in `count` and in
    /// `graphscaler_dead_letters_total{topic, reason}` (`kind` is the short label) and logs it.
    /// Returns whether the letter was published: only then may the caller commit `msg`, so the
    /// partition moves on and nothing is lost (a stage stopping while the broker is away leaves
    /// it uncommitted, to come again).
    pub async fn send(&self, count: &mut u64, msg: &Message, kind: &str, reason: String) -> bool {
        *count += 1;
        self.metrics.add(
            "graphscaler_dead_letters_total",
            &[("topic", &msg.topic), ("reason", kind)],
            1.0,
        );
        tracing::warn!(stage = self.stage, topic = %msg.topic, partition = msg.position.0, offset = msg.position.1, %reason, "message refused; sent to the dead-letter topic");
        let letter = DeadLetter {
            topic: msg.topic.clone(),
            partition: msg.position.0,
            offset: msg.position.1,
            stage: self.stage.into(),
            reason,
            payload: String::from_utf8_lossy(&msg.payload).into_owned(),
        };
        let bytes = match serde_json::to_vec(&letter) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "a dead letter could not be encoded; the message stays uncommitted");
                return false;
            }
        };
        let topic = dead_letter_topic(&msg.topic);
        let key = format!("{}/{}", msg.position.0, msg.position.1);
        publish_retrying("dead letter", &self.metrics, &self.stop, || {
            self.publisher.publish_raw(&topic, &key, bytes.clone())
        })
        .await
    }
}

/// Commits a handled message; a failed commit is logged (the message may come again after a
/// restart, and the consumers are idempotent: the graph job drops duplicate event ids, the
/// actuator repeats its first decision for an action id).
fn commit(sub: &Subscriber, msg: &Message, metrics: &Metrics) {
    if let Err(e) = sub.commit(msg) {
        metrics.add(
            "graphscaler_events_rejected_total",
            &[("reason", "commit_failed")],
            1.0,
        );
        tracing::warn!(error = %e, topic = %msg.topic, offset = msg.position.1, "commit failed");
    }
}

/// Whether `stop` has been set.
pub fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Publishes with retries: a broker that goes away delays events, it does not lose them.
/// Gives up only when `stop` is set and the broker stays away.
pub async fn publish_retrying<F, Fut>(
    what: &str,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
    mut send: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::BusError>>,
{
    let mut wait = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        match send().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(what, failures, "publishing recovered");
                }
                return true;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(what, error = %e, "publishing failed; retrying");
                }
                failures += 1;
                metrics.add(
                    "graphscaler_events_rejected_total",
                    &[("reason", "publish_retry")],
                    1.0,
                );
                if stopped(stop) && failures > 3 {
                    return false;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
