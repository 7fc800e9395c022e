//! From events to upserts: deduplication, ordering, lateness and expiry, shared by the
//! dataflow driver and the plain recomputation it is tested against.
//!
//! * **Duplicates** (an `event_id` seen before) are dropped and counted.
//! * **Out of order**: an event older than the latest one applied for the same entity is stale;
//!   it is dropped and counted (the newer value stands).
//! * **Late**: an event whose window has already been cut is applied to the window being built
//!   and counted; snapshots already emitted are never revised.
//! * **Expiry**: metrics-derived entities (services, calls, stateful stores, the global scalars)
//!   that nothing refreshed for `stale_windows` windows are retracted — a call edge without
//!   traffic disappears. Nodes and pods come from the Kubernetes API and leave only when deleted.

use std::collections::{HashMap, HashSet, VecDeque};

use graphscaler_schemas::{PodChange, TelemetryEvent};
use serde::{Deserialize, Serialize};

use crate::rows::{self, Row};

/// A name (of a service, node or pod) as the dataflow carries it: an integer id given by
/// [`Ingest`], so that joins and arrangements compare and hash integers, not strings.
pub type Id = u32;

/// One fact the dataflow holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    /// A service and its encoded [`graphscaler_schemas::ServiceObs`].
    Service(Id, Row),
    /// A stateful store and its encoded [`graphscaler_schemas::StatefulObs`].
    Stateful(Id, Row),
    /// A node and its encoded [`graphscaler_schemas::NodeObs`].
    Node(Id, Row),
    /// A call edge (source, destination) and its encoded attributes.
    Call(Id, Id, Row),
    /// A pod: name, service, node if bound.
    Pod(Id, Id, Option<Id>),
    /// The global scalars.
    Global(Row),
}

/// Names and their ids, in the order first seen.
#[derive(Debug, Clone, Default)]
pub struct Names {
    ids: HashMap<String, Id>,
    names: Vec<String>,
}

impl Names {
    /// The id of `name`, given on first sight.
    pub fn id(&mut self, name: &str) -> Id {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as Id;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), i);
        i
    }

    /// The name of `id`.
    pub fn name(&self, id: Id) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

impl Entity {
    fn expires(&self) -> bool {
        !matches!(self, Entity::Node(..) | Entity::Pod(..))
    }
}

/// Counters of what ingestion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Events offered.
    pub events: u64,
    /// Dropped as duplicates.
    pub duplicates: u64,
    /// Dropped as older than the entity's current value.
    pub stale: u64,
    /// Applied to a later window than their own.
    pub late: u64,
    /// Entities retracted for lack of refresh.
    pub expired: u64,
    /// Empty windows not cut because they followed a long gap (see the driver's close).
    pub skipped_windows: u64,
}

#[derive(Debug, Clone)]
struct Current {
    observed_at_s: f64,
    window: u64,
    entity: Entity,
}

/// Turns events into upserts (retract the old value, insert the new).
#[derive(Debug, Clone)]
pub struct Ingest {
    window_s: f64,
    stale_windows: u64,
    seen: HashSet<String>,
    seen_order: VecDeque<(u64, String)>,
    current: HashMap<(&'static str, String), Current>,
    /// The names behind the entities' ids.
    pub names: Names,
    /// What ingestion did so far.
    pub stats: IngestStats,
}

impl Ingest {
    /// Windows of `window_s` seconds; entities expire after `stale_windows` windows unrefreshed.
    pub fn new(window_s: f64, stale_windows: u64) -> Self {
        Self {
            window_s,
            stale_windows: stale_windows.max(1),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            current: HashMap::new(),
            names: Names::default(),
            stats: IngestStats::default(),
        }
    }

    /// Windows after which an unrefreshed metrics entity is retracted.
    pub fn stale_windows(&self) -> u64 {
        self.stale_windows
    }

    /// The window an observation time falls in.
    pub fn window_of(&self, t: f64) -> u64 {
        (t / self.window_s).floor().max(0.0) as u64
    }

    /// Offers one event while window `open` is being built; returns the changes to apply.
    pub fn offer(&mut self, ev: &TelemetryEvent, open: u64) -> Vec<(Entity, isize)> {
        self.stats.events += 1;
        if !self.seen.insert(ev.event_id().to_string()) {
            self.stats.duplicates += 1;
            return vec![];
        }
        self.seen_order.push_back((open, ev.event_id().to_string()));
        let t = ev.observed_at_s();
        let (topic, key) = ev.topic_and_key();
        let n = &mut self.names;
        let entity = match ev {
            TelemetryEvent::Service(e) => Some(Entity::Service(
                n.id(&e.payload.name),
                rows::service(&e.payload),
            )),
            TelemetryEvent::Stateful(e) => Some(Entity::Stateful(
                n.id(&e.payload.service),
                rows::stateful(&e.payload),
            )),
            TelemetryEvent::Node(e) => {
                Some(Entity::Node(n.id(&e.payload.name), rows::node(&e.payload)))
            }
            TelemetryEvent::Call(e) => Some(Entity::Call(
                n.id(&e.payload.source),
                n.id(&e.payload.destination),
                rows::call(&e.payload),
            )),
            TelemetryEvent::Pod(e) => match &e.payload {
                PodChange::Upsert(p) => Some(Entity::Pod(
                    n.id(&p.name),
                    n.id(&p.service),
                    p.node.as_deref().map(|x| n.id(x)),
                )),
                PodChange::Delete { .. } => None,
            },
            TelemetryEvent::Global(e) => Some(Entity::Global(rows::global(&e.payload))),
        };
        let slot = (topic, key);
        if let Some(cur) = self.current.get(&slot) {
            if t < cur.observed_at_s {
                self.stats.stale += 1;
                return vec![];
            }
        }
        if self.window_of(t) < open {
            self.stats.late += 1;
        }
        let mut out = vec![];
        match entity {
            Some(entity) => {
                let prev = self.current.insert(
                    slot,
                    Current {
                        observed_at_s: t,
                        window: open,
                        entity: entity.clone(),
                    },
                );
                match prev {
                    Some(p) if p.entity == entity => {} // refreshed, unchanged
                    Some(p) => {
                        out.push((p.entity, -1));
                        out.push((entity, 1));
                    }
                    None => out.push((entity, 1)),
                }
            }
            None => {
                if let Some(p) = self.current.remove(&slot) {
                    out.push((p.entity, -1));
                }
            }
        }
        out
    }

    /// Closing window `w`: retracts what was not refreshed for `stale_windows` windows, and
    /// forgets event ids old enough that no duplicate can still arrive in time to matter.
    pub fn close(&mut self, w: u64) -> Vec<(Entity, isize)> {
        let horizon = self.stale_windows;
        let mut gone: Vec<(&'static str, String)> = self
            .current
            .iter()
            .filter(|(_, c)| c.entity.expires() && w.saturating_sub(c.window) + 1 > horizon)
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort();
        let mut out = vec![];
        for k in gone {
            if let Some(c) = self.current.remove(&k) {
                self.stats.expired += 1;
                out.push((c.entity, -1));
            }
        }
        while self
            .seen_order
            .front()
            .is_some_and(|(win, _)| w.saturating_sub(*win) > 4 * horizon + 4)
        {
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen.remove(&id);
            }
        }
        out
    }
}
