//! Events on the bus: one versioned topic per kind, each with its JSON Schema in
//! `schemas/json/<topic>.schema.json` beside the Rust type (a test checks that they agree).
//!
//! Every event is an [`Envelope`] around a payload from [`crate::obs`], [`crate::action`] or
//! [`crate::snapshot`], so that what the scrapers publish and what the twin hands to a policy in
//! process are the same types, featurized by the same functions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionOutcome};
use crate::obs::{CallEdgeObs, GlobalObs, NodeObs, PodObs, ServiceObs, StatefulObs};
use crate::snapshot::Snapshot;

/// An event: a payload with where and when it was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    /// Unique per event (`<source>/<kind>/<key>/<observed_at_ms>`): consumers drop duplicates
    /// by it.
    pub event_id: String,
    /// The producer (`kiali`, `prometheus`, `kubernetes`, `twin`, …).
    pub source: String,
    /// When the values were observed, seconds (Unix time for a real cluster).
    pub observed_at_s: f64,
    /// Width of the window rates and latencies cover, seconds (0 for state).
    pub window_s: f64,
    /// The observation.
    pub payload: T,
}

impl<T: Keyed> Envelope<T> {
    /// Wraps `payload`, deriving the event id from the source, kind, key and time.
    pub fn new(source: &str, observed_at_s: f64, window_s: f64, payload: T) -> Self {
        Self {
            event_id: event_id(source, T::KIND, &payload.key(), observed_at_s),
            source: source.into(),
            observed_at_s,
            window_s,
            payload,
        }
    }
}

impl Envelope<Action> {
    /// A decision about one part of a service, stamped with the snapshot it was decided on
    /// (`observed_at_s` is the snapshot's time, `window_s` its window): its id
    /// `<source>/action/<service>/<part>/<snapshot_ms>` is unique per part, so that the
    /// replica, CPU and node-type parts of one decision are three actions to the actuator.
    pub fn decision(source: &str, snapshot_time_s: f64, window_s: f64, action: Action) -> Self {
        let key = format!("{}/{}", action.service, action.kind.part());
        Self {
            event_id: event_id(source, Action::KIND, &key, snapshot_time_s),
            source: source.into(),
            observed_at_s: snapshot_time_s,
            window_s,
            payload: action,
        }
    }
}

/// `<source>/<kind>/<key>/<observed_at_ms>`.
fn event_id(source: &str, kind: &str, key: &str, observed_at_s: f64) -> String {
    format!(
        "{source}/{kind}/{key}/{}",
        (observed_at_s * 1000.0).round() as i64
    )
}

/// A payload with a partition key (the entity it is about).
pub trait Keyed {
    /// What kind of entity (`service`, `call`, …): with the key, it names the entity.
    const KIND: &'static str;
    /// The entity key.
    fn key(&self) -> String;
}

impl Keyed for ServiceObs {
    const KIND: &'static str = "service";
    fn key(&self) -> String {
        self.name.clone()
    }
}
impl Keyed for CallEdgeObs {
    const KIND: &'static str = "call";
    fn key(&self) -> String {
        format!("{}->{}", self.source, self.destination)
    }
}
impl Keyed for NodeObs {
    const KIND: &'static str = "node";
    fn key(&self) -> String {
        self.name.clone()
    }
}
impl Keyed for StatefulObs {
    const KIND: &'static str = "stateful";
    fn key(&self) -> String {
        self.service.clone()
    }
}
impl Keyed for GlobalObs {
    const KIND: &'static str = "global";
    fn key(&self) -> String {
        "cluster".into()
    }
}
impl Keyed for PodChange {
    const KIND: &'static str = "pod";
    fn key(&self) -> String {
        match self {
            PodChange::Upsert(p) => p.name.clone(),
            PodChange::Delete { name } => name.clone(),
        }
    }
}
impl Keyed for Action {
    const KIND: &'static str = "action";
    fn key(&self) -> String {
        self.service.clone()
    }
}
impl Keyed for DecisionRecord {
    const KIND: &'static str = "decision";
    fn key(&self) -> String {
        self.policy.clone()
    }
}
impl Keyed for AuditRecord {
    const KIND: &'static str = "audit";
    fn key(&self) -> String {
        self.action_id.clone()
    }
}
impl Keyed for Snapshot {
    const KIND: &'static str = "snapshot";
    fn key(&self) -> String {
        "graph".into()
    }
}

/// A pod appeared or changed, or is gone (from a Kubernetes watch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PodChange {
    /// Created or changed.
    Upsert(PodObs),
    /// Deleted.
    Delete {
        /// Pod name.
        name: String,
    },
}

/// What the actuator did with an action, for the audit topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    /// The action's event id.
    pub action_id: String,
    /// The action.
    pub action: Action,
    /// Applied, or refused with the reason.
    pub outcome: ActionOutcome,
    /// Whether the actuator was in dry-run mode (an `Applied` outcome then says what would
    /// have been applied; nothing was).
    pub dry_run: bool,
    /// What the guardrails changed (a clamp), if anything.
    #[serde(default)]
    pub note: Option<String>,
}

/// A policy's whole decision on one snapshot, stamped with the snapshot's time: the actions it
/// published on the action topic, or that it decided nothing. The graph stage records it beside
/// the snapshot in its store (a transition's `a_t`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionRecord {
    /// The policy (`policy/NAME`).
    pub policy: String,
    /// Its actions, absolute, as published (empty: it decided nothing).
    pub actions: Vec<Action>,
    /// Relative actions that could not be made absolute, and why (dropped, not published).
    #[serde(default)]
    pub dropped: Vec<String>,
    /// Set when the configured policy could not decide on the snapshot and its fallback did
    /// (`policy` then names the fallback): why the configured one could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// A topic: its name and its payload type.
pub trait Topic {
    /// The versioned topic name.
    const NAME: &'static str;
    /// The payload carried in [`Envelope`]s.
    type Payload: Keyed + Serialize + for<'de> Deserialize<'de> + JsonSchema;
}

macro_rules! topics {
    ($($(#[$doc:meta])* $ty:ident = $name:literal, $payload:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $ty;
            impl Topic for $ty {
                const NAME: &'static str = $name;
                type Payload = $payload;
            }
        )*
        /// Every topic's name and the JSON Schema of its envelope.
        pub fn all_schemas() -> Vec<(&'static str, serde_json::Value)> {
            vec![$(($name, schemars::schema_for!(Envelope<$payload>).to_value()),)*]
        }
    };
}

topics! {
    /// Per-service metrics (Prometheus: cAdvisor, Istio, kube-state-metrics).
    ServicesTopic = "graphscaler.telemetry.services.v1", ServiceObs;
    /// Service→service call edges (Kiali, or `istio_requests_total` when Kiali fails).
    CallsTopic = "graphscaler.telemetry.calls.v1", CallEdgeObs;
    /// Nodes (Kubernetes API).
    NodesTopic = "graphscaler.telemetry.nodes.v1", NodeObs;
    /// Pods and their placement (Kubernetes watch).
    PodsTopic = "graphscaler.telemetry.pods.v1", PodChange;
    /// Stateful stores (redis/MySQL exporters).
    StatefulTopic = "graphscaler.telemetry.stateful.v1", StatefulObs;
    /// Cluster-wide scalars (Prometheus).
    GlobalTopic = "graphscaler.telemetry.global.v1", GlobalObs;
    /// Graph snapshots (graph job).
    SnapshotsTopic = "graphscaler.graph.snapshots.v1", Snapshot;
    /// Scaling actions (policy stage).
    ActionsTopic = "graphscaler.actions.v1", Action;
    /// What the actuator did (actuator).
    AuditTopic = "graphscaler.audit.v1", AuditRecord;
    /// Each snapshot's whole decision, actions or none (policy stage).
    DecisionsTopic = "graphscaler.decisions.v1", DecisionRecord;
}

/// Where the committed JSON Schemas live, relative to the repository root.
pub const SCHEMA_DIR: &str = "schemas/json";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ActionKind;
    use std::path::Path;

    fn dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("json")
    }

    /// The committed schema of every topic is the one the Rust type generates. To update after a
    /// deliberate change: `GRAPHSCALER_WRITE_SCHEMAS=1 cargo test -p graphscaler-schemas`.
    #[test]
    fn committed_json_schemas_match_the_rust_types() {
        let write = std::env::var_os("GRAPHSCALER_WRITE_SCHEMAS").is_some();
        for (name, schema) in all_schemas() {
            let path = dir().join(format!("{name}.schema.json"));
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if write {
                std::fs::create_dir_all(dir()).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate with GRAPHSCALER_WRITE_SCHEMAS=1)",
                    path.display()
                )
            });
            assert_eq!(
                committed, text,
                "{name}: the schema and the Rust type disagree"
            );
        }
    }

    fn validate<T: Topic>(payload: T::Payload) {
        let path = dir().join(format!("{}.schema.json", T::NAME));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let event = serde_json::to_value(Envelope::new("test", 1.5, 15.0, payload)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", T::NAME);
        // And a broken event fails.
        let mut bad = event.clone();
        bad["payload"] = serde_json::json!({"unexpected": true});
        assert!(!validator.is_valid(&bad), "{}", T::NAME);
    }

    #[test]
    fn events_validate_against_their_schemas() {
        validate::<ActionsTopic>(Action::new(
            "frontend",
            ActionKind::ChangeReplicas { delta: 1 },
        ));
        validate::<CallsTopic>(CallEdgeObs {
            source: "a".into(),
            destination: "b".into(),
            rps: 1.0,
            p95_ms: 2.0,
            error_rate: 0.0,
        });
        validate::<PodsTopic>(PodChange::Delete { name: "p".into() });
        validate::<GlobalTopic>(GlobalObs {
            cluster_cpu_utilization: 0.1,
            slo_violation_rate: 0.0,
            entry_p95_ms: 1.0,
            entry_error_rate: 0.0,
            entry_rps: 3.0,
        });
        let e = Envelope::new(
            "kiali",
            12.0,
            15.0,
            CallEdgeObs {
                source: "a".into(),
                destination: "b".into(),
                rps: 1.0,
                p95_ms: 2.0,
                error_rate: 0.0,
            },
        );
        assert_eq!(e.event_id, "kiali/call/a->b/12000");
    }
}

/// Any telemetry event, as the graph job consumes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "topic", content = "event")]
pub enum TelemetryEvent {
    /// [`ServicesTopic`].
    Service(Envelope<ServiceObs>),
    /// [`CallsTopic`].
    Call(Envelope<CallEdgeObs>),
    /// [`NodesTopic`].
    Node(Envelope<NodeObs>),
    /// [`PodsTopic`].
    Pod(Envelope<PodChange>),
    /// [`StatefulTopic`].
    Stateful(Envelope<StatefulObs>),
    /// [`GlobalTopic`].
    Global(Envelope<GlobalObs>),
}

impl TelemetryEvent {
    /// The event id.
    pub fn event_id(&self) -> &str {
        match self {
            TelemetryEvent::Service(e) => &e.event_id,
            TelemetryEvent::Call(e) => &e.event_id,
            TelemetryEvent::Node(e) => &e.event_id,
            TelemetryEvent::Pod(e) => &e.event_id,
            TelemetryEvent::Stateful(e) => &e.event_id,
            TelemetryEvent::Global(e) => &e.event_id,
        }
    }

    /// When it was observed, seconds.
    pub fn observed_at_s(&self) -> f64 {
        match self {
            TelemetryEvent::Service(e) => e.observed_at_s,
            TelemetryEvent::Call(e) => e.observed_at_s,
            TelemetryEvent::Node(e) => e.observed_at_s,
            TelemetryEvent::Pod(e) => e.observed_at_s,
            TelemetryEvent::Stateful(e) => e.observed_at_s,
            TelemetryEvent::Global(e) => e.observed_at_s,
        }
    }

    /// The topic it belongs to and the entity key (upserts replace by these).
    pub fn topic_and_key(&self) -> (&'static str, String) {
        match self {
            TelemetryEvent::Service(e) => (ServicesTopic::NAME, e.payload.key()),
            TelemetryEvent::Call(e) => (CallsTopic::NAME, e.payload.key()),
            TelemetryEvent::Node(e) => (NodesTopic::NAME, e.payload.key()),
            TelemetryEvent::Pod(e) => (PodsTopic::NAME, e.payload.key()),
            TelemetryEvent::Stateful(e) => (StatefulTopic::NAME, e.payload.key()),
            TelemetryEvent::Global(e) => (GlobalTopic::NAME, e.payload.key()),
        }
    }

    /// The events of `obs` ([`TelemetryEvent::from_observation`]) preceded by a delete for
    /// every pod of `prev` that `obs` no longer has, as a Kubernetes watch reports them.
    pub fn changes_since(
        prev: Option<&crate::ClusterObservation>,
        obs: &crate::ClusterObservation,
        source: &str,
    ) -> Vec<TelemetryEvent> {
        let now: std::collections::HashSet<&str> =
            obs.pods.iter().map(|p| p.name.as_str()).collect();
        let mut out: Vec<TelemetryEvent> = prev
            .into_iter()
            .flat_map(|p| p.pods.iter())
            .filter(|p| !now.contains(p.name.as_str()))
            .map(|p| {
                let gone = PodChange::Delete {
                    name: p.name.clone(),
                };
                TelemetryEvent::Pod(Envelope::new(source, obs.time_s, 0.0, gone))
            })
            .collect();
        out.extend(Self::from_observation(obs, source));
        out
    }

    /// Every event an observation amounts to (what the scrapers publish for one scrape of a
    /// cluster in this state), stamped `source` at the observation's time.
    pub fn from_observation(obs: &crate::ClusterObservation, source: &str) -> Vec<TelemetryEvent> {
        let (t, w) = (obs.time_s, obs.window_s);
        let mut out = Vec::new();
        out.extend(
            obs.services
                .iter()
                .map(|s| TelemetryEvent::Service(Envelope::new(source, t, w, s.clone()))),
        );
        out.extend(
            obs.edges
                .iter()
                .map(|e| TelemetryEvent::Call(Envelope::new(source, t, w, e.clone()))),
        );
        out.extend(
            obs.nodes
                .iter()
                .map(|n| TelemetryEvent::Node(Envelope::new(source, t, 0.0, n.clone()))),
        );
        out.extend(obs.pods.iter().map(|p| {
            TelemetryEvent::Pod(Envelope::new(source, t, 0.0, PodChange::Upsert(p.clone())))
        }));
        out.extend(
            obs.stateful
                .iter()
                .map(|s| TelemetryEvent::Stateful(Envelope::new(source, t, w, s.clone()))),
        );
        out.push(TelemetryEvent::Global(Envelope::new(
            source,
            t,
            w,
            obs.global.clone(),
        )));
        out
    }
}
