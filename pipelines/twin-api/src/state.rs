//! The live twin behind the HTTP interfaces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use graphscaler_schemas::{Action, ActionKind, ActionOutcome, ClusterObservation};
use graphscaler_twin::{TickTruth, Twin};

use crate::exposition::Exposition;

/// A twin advanced by a clock, with the counters and the latest observation the endpoints
/// serve.
#[derive(Debug)]
pub struct LiveTwin {
    twin: Twin,
    exposition: Exposition,
    obs: ClusterObservation,
    truth: TickTruth,
    /// Namespace the workloads live in.
    pub namespace: String,
    /// Cluster name (Kiali's `cluster` field).
    pub cluster: String,
    /// Unix time of twin time 0.
    pub epoch_s: f64,
    resource_version: u64,
    applied: u64,
    refused: u64,
    history: std::collections::VecDeque<(u64, ClusterObservation, HashMap<String, String>)>,
    /// Leases (leader election), kept apart from the simulated cluster.
    pub leases: crate::lease::Leases,
}

/// The live twin shared by the server's handlers and its clock.
pub type Shared = Arc<Mutex<LiveTwin>>;

impl LiveTwin {
    /// Wraps `twin`, running its first tick so that every endpoint has data.
    pub fn new(mut twin: Twin, namespace: &str, cluster: &str, epoch_s: f64) -> Self {
        let (obs, truth) = twin.advance();
        let mut exposition = Exposition::new(namespace);
        exposition.update(twin.topology(), &obs, &truth);
        Self {
            twin,
            exposition,
            obs,
            truth,
            namespace: namespace.into(),
            cluster: cluster.into(),
            epoch_s,
            resource_version: 1,
            applied: 0,
            refused: 0,
            history: Default::default(),
            leases: Default::default(),
        }
        .recorded()
    }

    fn recorded(mut self) -> Self {
        self.record();
        self
    }

    /// Remembers the current state under its resource version (for watches).
    fn record(&mut self) {
        let prefs = self.preferences();
        self.history
            .push_back((self.resource_version, self.obs.clone(), prefs));
        while self.history.len() > crate::watch::HISTORY {
            self.history.pop_front();
        }
    }

    /// The observation and node-type preferences at resource version `rv`, if still kept.
    pub fn at(&self, rv: u64) -> Option<(&ClusterObservation, &HashMap<String, String>)> {
        self.history
            .iter()
            .find(|(v, _, _)| *v == rv)
            .map(|(_, o, p)| (o, p))
    }

    /// Shares it.
    pub fn shared(self) -> Shared {
        Arc::new(Mutex::new(self))
    }

    /// Advances one observation period; false once the run's duration has elapsed.
    pub fn tick(&mut self) -> bool {
        if self.twin.done() {
            return false;
        }
        let (obs, truth) = self.twin.advance();
        self.exposition.update(self.twin.topology(), &obs, &truth);
        self.obs = obs;
        self.truth = truth;
        self.resource_version += 1;
        self.record();
        true
    }

    /// The twin.
    pub fn twin(&self) -> &Twin {
        &self.twin
    }

    /// The latest observation, with the spec of every service as it is now (actions show at once).
    pub fn observation(&self) -> &ClusterObservation {
        &self.obs
    }

    /// The latest ground truth.
    pub fn truth(&self) -> &TickTruth {
        &self.truth
    }

    /// The resource version objects carry.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Node type preferences by service.
    pub fn preferences(&self) -> HashMap<String, String> {
        self.obs
            .services
            .iter()
            .filter_map(|s| {
                self.twin
                    .preferred_node_type(&s.name)
                    .map(|t| (s.name.clone(), t))
            })
            .collect()
    }

    /// The Prometheus exposition.
    pub fn metrics_text(&self) -> String {
        self.exposition.render(&self.obs)
    }

    /// (applied, refused) actions so far.
    pub fn action_counts(&self) -> (u64, u64) {
        (self.applied, self.refused)
    }

    /// Applies every change to `service` or none: they are tried on a copy first.
    pub fn apply_all(&mut self, service: &str, kinds: Vec<ActionKind>) -> Result<(), String> {
        let mut trial = self.twin.clone();
        for k in &kinds {
            if let ActionOutcome::Refused { reason, .. } =
                trial.apply(&Action::new(service, k.clone()))
            {
                self.refused += 1;
                return Err(reason);
            }
        }
        self.twin = trial;
        self.applied += kinds.len() as u64;
        self.resource_version += 1;
        if let (Some((replicas, req, lim)), Some(s)) = (
            self.twin.spec_of(service),
            self.obs.services.iter_mut().find(|s| s.name == service),
        ) {
            s.replicas_spec = replicas;
            s.cpu_request_cores = req;
            s.cpu_limit_cores = lim;
        }
        self.record();
        Ok(())
    }
}
