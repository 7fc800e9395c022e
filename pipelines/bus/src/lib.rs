//! The event bus: graphscaler's envelopes on versioned Kafka topics, through rdkafka.
//!
//! * [`Producer`] publishes an [`Envelope`] as JSON, keyed by its entity (so that one entity's
//!   events stay in order on one partition), idempotently (`enable.idempotence`).
//! * [`Consumer`] reads topics in a consumer group and commits offsets only after the caller has
//!   handled a message, so a restart resumes where handling stopped: nothing is lost.
//! * [`decode`] turns a message back into a [`TelemetryEvent`], with an error naming the topic,
//!   partition and offset for a payload that does not parse.
//! * [`transport`] is what the stage loops use: the same [`transport::Publisher`] and
//!   [`transport::Subscriber`] over Kafka or the in-process [`transport::MemoryBus`].
//! * [`tail`] reads a topic from outside the pipeline (`graphscaler actions tail`).
//! * [`stage`] holds what every stage loop shares (its clock, retries, commits, dead letters) and
//!   [`metrics`] the stages' typed Prometheus metrics, served on `/metrics`.

pub mod metrics;
pub mod stage;
pub mod tail;
pub mod transport;

pub use metrics::Metrics;

use std::time::Duration;

use graphscaler_schemas::events::{
    CallsTopic, GlobalTopic, NodesTopic, PodsTopic, ServicesTopic, StatefulTopic,
};
use graphscaler_schemas::{Envelope, Keyed, TelemetryEvent, Topic};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The client could not be created or the broker refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A message that is not an event of its topic.
    #[error("{topic}[{partition}]@{offset}: {message}")]
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What is wrong.
        message: String,
    },
    /// A request to the bus that did not come back.
    #[error("the bus did not answer: {0}")]
    Unanswered(String),
    /// An event that could not be serialised.
    #[error("encoding an event for {topic}: {message}")]
    Encode {
        /// Topic.
        topic: String,
        /// What is wrong.
        message: String,
    },
}

/// An envelope as its topic carries it (JSON).
pub fn encode<T: Topic>(event: &Envelope<T::Payload>) -> Result<Vec<u8>, BusError>
where
    T::Payload: Serialize,
{
    serde_json::to_vec(event).map_err(|e| BusError::Encode {
        topic: T::NAME.into(),
        message: e.to_string(),
    })
}

/// Connection settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// `client.id`.
    pub client_id: String,
    /// librdkafka properties passed to every client: the security ones only
    /// ([`passed_through`]), e.g. `security.protocol`, `sasl.mechanism`, `ssl.ca.location`.
    pub properties: Vec<(String, String)>,
}

/// Whether `key` is a librdkafka property the configuration may pass to the clients: the security
/// ones (`security.protocol`, `sasl.*`, `ssl.*`, `enable.ssl.certificate.verification`); the
/// others are graphscaler's own (group, offsets, commits, timeouts) and are not overridden.
pub fn passed_through(key: &str) -> bool {
    key == "security.protocol"
        || key == "enable.ssl.certificate.verification"
        || key.starts_with("sasl.")
        || key.starts_with("ssl.")
}

/// `c` with `cfg`'s properties set.
fn with_properties(mut c: ClientConfig, cfg: &BusConfig) -> ClientConfig {
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Publishes envelopes.
pub struct Producer {
    inner: FutureProducer,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

impl Producer {
    /// An idempotent producer.
    pub fn new(cfg: &BusConfig) -> Result<Self, BusError> {
        let inner = with_properties(ClientConfig::new(), cfg)
            .set("bootstrap.servers", &cfg.bootstrap)
            .set("client.id", &cfg.client_id)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            // A control loop, not a firehose: send at once rather than batch for 5 ms.
            .set("linger.ms", "0")
            .create()?;
        Ok(Self { inner })
    }

    /// Publishes `event` on `T`'s topic and waits for the broker's acknowledgement.
    pub async fn send<T: Topic>(&self, event: &Envelope<T::Payload>) -> Result<(), BusError>
    where
        T::Payload: Serialize + Keyed,
    {
        self.send_raw(T::NAME, &event.payload.key(), &encode::<T>(event)?)
            .await
    }

    /// Publishes an already-encoded event on `topic` under `key` and waits for the broker's
    /// acknowledgement.
    pub async fn send_raw(&self, topic: &str, key: &str, value: &[u8]) -> Result<(), BusError> {
        self.inner
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| BusError::Kafka(e))?;
        Ok(())
    }

    /// Publishes a telemetry event on its topic.
    pub async fn send_telemetry(&self, e: &TelemetryEvent) -> Result<(), BusError> {
        match e {
            TelemetryEvent::Service(x) => self.send::<ServicesTopic>(x).await,
            TelemetryEvent::Call(x) => self.send::<CallsTopic>(x).await,
            TelemetryEvent::Node(x) => self.send::<NodesTopic>(x).await,
            TelemetryEvent::Pod(x) => self.send::<PodsTopic>(x).await,
            TelemetryEvent::Stateful(x) => self.send::<StatefulTopic>(x).await,
            TelemetryEvent::Global(x) => self.send::<GlobalTopic>(x).await,
        }
    }
}

/// The telemetry topics.
pub const TELEMETRY_TOPICS: [&str; 6] = [
    ServicesTopic::NAME,
    CallsTopic::NAME,
    NodesTopic::NAME,
    PodsTopic::NAME,
    StatefulTopic::NAME,
    GlobalTopic::NAME,
];

/// Reads topics in a consumer group.
pub struct Consumer {
    inner: std::sync::Arc<StreamConsumer>,
    topics: Vec<String>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Consumer")
    }
}

/// One message, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Where a consumer group without committed offsets starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// At the oldest message kept (nothing published before is missed).
    Earliest,
    /// At the end (only what is published from now on).
    Latest,
}

impl Consumer {
    /// A consumer in `group` subscribed to `topics`, starting from the earliest offset when the
    /// group has none, committing manually.
    pub fn new(cfg: &BusConfig, group: &str, topics: &[&str]) -> Result<Self, BusError> {
        Self::with_reset(cfg, group, topics, Reset::Earliest)
    }

    /// [`Consumer::new`], starting at `reset` when the group has no committed offsets.
    pub fn with_reset(
        cfg: &BusConfig,
        group: &str,
        topics: &[&str],
        reset: Reset,
    ) -> Result<Self, BusError> {
        let inner: StreamConsumer = with_properties(ClientConfig::new(), cfg)
            .set("bootstrap.servers", &cfg.bootstrap)
            .set("client.id", &cfg.client_id)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set(
                "auto.offset.reset",
                match reset {
                    Reset::Earliest => "earliest",
                    Reset::Latest => "latest",
                },
            )
            // Brokers may hold an empty fetch this long (librdkafka's default is 500 ms, which
            // would add up to half a second per stage to the sample-to-action latency).
            .set("fetch.wait.max.ms", "10")
            .create()?;
        inner.subscribe(topics)?;
        Ok(Self {
            inner: std::sync::Arc::new(inner),
            topics: topics.iter().map(|t| (*t).to_string()).collect(),
        })
    }

    /// Whether the brokers answer: the metadata of the first subscribed topic fetched within
    /// `timeout` (on a blocking thread; librdkafka's fetch blocks).
    pub async fn reachable(&self, timeout: Duration) -> Result<(), BusError> {
        let c = self.inner.clone();
        let topic = self.topics.first().cloned();
        tokio::task::spawn_blocking(move || c.fetch_metadata(topic.as_deref(), timeout))
            .await
            .map_err(|e| BusError::Unanswered(format!("the metadata fetch stopped: {e}")))??;
        Ok(())
    }

    /// The next message, or `None` if none arrives within `wait`.
    pub async fn next(&self, wait: Duration) -> Result<Option<Received>, BusError> {
        match tokio::time::timeout(wait, self.inner.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(m)) => Ok(Some(owned(&m))),
        }
    }

    /// Commits everything up to and including `msg` (after it was handled).
    pub fn commit(&self, msg: &Received) -> Result<(), BusError> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(
            &msg.topic,
            msg.partition,
            rdkafka::Offset::Offset(msg.offset + 1),
        )?;
        self.inner.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    }
}

fn owned(m: &BorrowedMessage<'_>) -> Received {
    Received {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Decodes a telemetry message by its topic.
pub fn decode(msg: &Received) -> Result<TelemetryEvent, BusError> {
    let err = |message: String| BusError::Decode {
        topic: msg.topic.clone(),
        partition: msg.partition,
        offset: msg.offset,
        message,
    };
    let p = &msg.payload;
    let parsed = match msg.topic.as_str() {
        t if t == ServicesTopic::NAME => serde_json::from_slice(p).map(TelemetryEvent::Service),
        t if t == CallsTopic::NAME => serde_json::from_slice(p).map(TelemetryEvent::Call),
        t if t == NodesTopic::NAME => serde_json::from_slice(p).map(TelemetryEvent::Node),
        t if t == PodsTopic::NAME => serde_json::from_slice(p).map(TelemetryEvent::Pod),
        t if t == StatefulTopic::NAME => serde_json::from_slice(p).map(TelemetryEvent::Stateful),
        t if t == GlobalTopic::NAME => serde_json::from_slice(p).map(TelemetryEvent::Global),
        other => return Err(err(format!("`{other}` is not a telemetry topic"))),
    };
    parsed.map_err(|e| err(format!("not an event of this topic: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use graphscaler_schemas::CallEdgeObs;

    #[tokio::test]
    async fn security_properties_reach_librdkafka_which_has_tls_and_sasl() {
        assert!(passed_through("security.protocol"));
        assert!(passed_through("sasl.password") && passed_through("ssl.ca.location"));
        assert!(!passed_through("group.id") && !passed_through("enable.auto.commit"));
        let cfg = |props: &[(&str, &str)]| BusConfig {
            bootstrap: "127.0.0.1:1".into(),
            client_id: "t".into(),
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        };
        // TLS with SCRAM: built in (without OpenSSL librdkafka refuses SASL_SSL at creation).
        let scram = cfg(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "graphscaler"),
            ("sasl.password", "secret"),
        ]);
        Producer::new(&scram).unwrap();
        Consumer::new(&scram, "g", &["t"]).unwrap();
        // The settings are read, not dropped: a CA file that is not there is named.
        let ca = cfg(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/graphscaler-ca.pem"),
        ]);
        let e = Producer::new(&ca).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/graphscaler-ca.pem") || e.contains("ssl.ca.location"),
            "{e}"
        );
        let e = Consumer::new(&cfg(&[("sasl.nonsense", "1")]), "g", &["t"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sasl.nonsense"), "{e}");
    }

    #[test]
    fn decode_names_the_message() {
        let e = Envelope::new(
            "kiali",
            1.0,
            15.0,
            CallEdgeObs {
                source: "a".into(),
                destination: "b".into(),
                rps: 1.0,
                p95_ms: 1.0,
                error_rate: 0.0,
            },
        );
        let msg = Received {
            topic: CallsTopic::NAME.into(),
            partition: 0,
            offset: 7,
            key: None,
            payload: serde_json::to_vec(&e).unwrap(),
        };
        assert_eq!(decode(&msg).unwrap(), TelemetryEvent::Call(e));
        let bad = Received {
            payload: b"{\"event_id\": 3".to_vec(),
            ..msg.clone()
        };
        let m = decode(&bad).unwrap_err().to_string();
        assert!(
            m.starts_with("graphscaler.telemetry.calls.v1[0]@7: not an event of this topic"),
            "{m}"
        );
        let wrong = Received {
            topic: "other".into(),
            ..msg
        };
        assert!(decode(&wrong)
            .unwrap_err()
            .to_string()
            .contains("`other` is not a telemetry topic"));
    }
}
