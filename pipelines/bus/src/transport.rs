//! Where stages publish and what they subscribe to: Kafka topics (each stage its own process,
//! `graphscaler scrape | graph | policy | actuate`) or an in-process bus with the same topics and
//! the same JSON encoding (`graphscaler run`).
//!
//! The in-process bus gives every subscriber every message of its topics, in publishing order,
//! unbounded: a slow stage delays, it never drops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{BusConfig, BusError, Consumer, Producer, Received};
use graphscaler_schemas::{Envelope, Keyed, Topic};
use serde::Serialize;
use tokio::sync::mpsc;

/// One message as a stage sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Partition and offset on Kafka; `(0, sequence)` in process.
    pub position: (i32, i64),
    /// The JSON payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// Decodes the payload as an envelope of `T`, naming the topic and position when it fails.
    pub fn decode<T: Topic>(&self) -> Result<Envelope<T::Payload>, BusError> {
        serde_json::from_slice(&self.payload).map_err(|e| BusError::Decode {
            topic: self.topic.clone(),
            partition: self.position.0,
            offset: self.position.1,
            message: format!("not an event of {}: {e}", T::NAME),
        })
    }

    fn received(&self) -> Received {
        Received {
            topic: self.topic.clone(),
            partition: self.position.0,
            offset: self.position.1,
            key: None,
            payload: self.payload.clone(),
        }
    }

    /// Decodes a telemetry message by its topic.
    pub fn telemetry(&self) -> Result<graphscaler_schemas::TelemetryEvent, BusError> {
        crate::decode(&self.received())
    }
}

type Subscribers = HashMap<String, Vec<mpsc::UnboundedSender<Message>>>;

/// The in-process bus.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    subscribers: Arc<Mutex<Subscribers>>,
    sequence: Arc<std::sync::atomic::AtomicI64>,
    in_flight: Arc<std::sync::atomic::AtomicI64>,
}

impl MemoryBus {
    /// A subscriber to `topics`, receiving what is published from now on.
    pub fn subscribe(&self, topics: &[&str]) -> Subscriber {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        for t in topics {
            subs.entry((*t).to_string()).or_default().push(tx.clone());
        }
        Subscriber::Memory(rx, self.in_flight.clone())
    }

    /// Messages delivered and not yet committed by their subscriber.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every message delivered so far has been committed: everything published has
    /// been handled, including what handling it published in turn.
    pub async fn wait_idle(&self) {
        while self.in_flight() > 0 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) {
        let seq = self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = subs.get_mut(topic) {
            list.retain(|tx| {
                self.in_flight
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let sent = tx
                    .send(Message {
                        topic: topic.to_string(),
                        position: (0, seq),
                        payload: payload.clone(),
                    })
                    .is_ok();
                if !sent {
                    self.in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                sent
            });
        }
    }
}

/// Publishes envelopes.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// The in-process bus.
    Memory(MemoryBus),
    /// Kafka.
    Kafka(Arc<Producer>),
}

impl Publisher {
    /// A Kafka publisher.
    pub fn kafka(cfg: &BusConfig) -> Result<Self, BusError> {
        Ok(Publisher::Kafka(Arc::new(Producer::new(cfg)?)))
    }

    /// Publishes `event` on `T`'s topic (on Kafka: acknowledged by the broker when this returns).
    pub async fn publish<T: Topic>(&self, event: &Envelope<T::Payload>) -> Result<(), BusError>
    where
        T::Payload: Serialize + Keyed,
    {
        let value = crate::encode::<T>(event)?;
        self.publish_raw(T::NAME, &event.payload.key(), value).await
    }

    /// Publishes an encoded payload.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), BusError> {
        match self {
            Publisher::Memory(bus) => {
                bus.publish(topic, value);
                Ok(())
            }
            Publisher::Kafka(p) => p.send_raw(topic, key, &value).await,
        }
    }

    /// Publishes a telemetry event on its topic.
    pub async fn publish_telemetry(
        &self,
        e: &graphscaler_schemas::TelemetryEvent,
    ) -> Result<(), BusError> {
        use graphscaler_schemas::TelemetryEvent as T;
        let (topic, key) = e.topic_and_key();
        let value = match e {
            T::Service(x) => serde_json::to_vec(x),
            T::Call(x) => serde_json::to_vec(x),
            T::Node(x) => serde_json::to_vec(x),
            T::Pod(x) => serde_json::to_vec(x),
            T::Stateful(x) => serde_json::to_vec(x),
            T::Global(x) => serde_json::to_vec(x),
        }
        .map_err(|err| BusError::Encode {
            topic: topic.into(),
            message: err.to_string(),
        })?;
        self.publish_raw(topic, &key, value).await
    }
}

/// Receives messages.
#[derive(Debug)]
pub enum Subscriber {
    /// The in-process bus (and its in-flight count).
    Memory(
        mpsc::UnboundedReceiver<Message>,
        Arc<std::sync::atomic::AtomicI64>,
    ),
    /// A Kafka consumer group member.
    Kafka(Consumer),
}

impl Drop for Subscriber {
    /// An in-process subscriber that goes away (its stage stopped) no longer holds messages in
    /// flight: what it had not read, and what is published to it later, is not waited for.
    fn drop(&mut self) {
        if let Subscriber::Memory(rx, in_flight) = self {
            rx.close();
            while rx.try_recv().is_ok() {
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

impl Subscriber {
    /// A Kafka consumer in `group` reading `topics`.
    pub fn kafka(cfg: &BusConfig, group: &str, topics: &[&str]) -> Result<Self, BusError> {
        Ok(Subscriber::Kafka(Consumer::new(cfg, group, topics)?))
    }

    /// A Kafka consumer in `group` reading `topics` from their end when the group has no
    /// committed offsets (the actuator: a new group never replays old actions).
    pub fn kafka_from_end(cfg: &BusConfig, group: &str, topics: &[&str]) -> Result<Self, BusError> {
        Ok(Subscriber::Kafka(Consumer::with_reset(
            cfg,
            group,
            topics,
            crate::Reset::Latest,
        )?))
    }

    /// Whether the bus answers (on Kafka: the brokers give the topic's metadata within
    /// `timeout`; in process: always).
    pub async fn reachable(&self, timeout: Duration) -> Result<(), BusError> {
        match self {
            Subscriber::Memory(..) => Ok(()),
            Subscriber::Kafka(c) => c.reachable(timeout).await,
        }
    }

    /// The next message, or `None` if none arrives within `wait` (or the bus closed).
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Message>, BusError> {
        match self {
            Subscriber::Memory(rx, _) => {
                Ok(tokio::time::timeout(wait, rx.recv()).await.ok().flatten())
            }
            Subscriber::Kafka(c) => Ok(c.next(wait).await?.map(|r| Message {
                topic: r.topic,
                position: (r.partition, r.offset),
                payload: r.payload,
            })),
        }
    }

    /// Marks `msg` handled (on Kafka: commits its offset, so a restart resumes after it).
    pub fn commit(&self, msg: &Message) -> Result<(), BusError> {
        match self {
            Subscriber::Memory(_, in_flight) => {
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            Subscriber::Kafka(c) => c.commit(&msg.received()),
        }
    }
}
