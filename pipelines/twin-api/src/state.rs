//! The live twin behind the HTTP interfaces.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use graphscaler_schemas::{Action, ActionOutcome, ClusterObservation};
use graphscaler_twin::{ResizeError, TickTruth, Twin};

use crate::exposition::Exposition;
use crate::kube::{Change, Template};

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
    history: std::collections::VecDeque<(u64, ClusterObservation, HashMap<String, Template>)>,
    /// Annotations patched onto each Deployment.
    annotations: HashMap<String, BTreeMap<String, String>>,
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
            annotations: Default::default(),
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
        let prefs = self.templates();
        self.history
            .push_back((self.resource_version, self.obs.clone(), prefs));
        while self.history.len() > crate::watch::HISTORY {
            self.history.pop_front();
        }
    }

    /// The observation and node-type preferences at resource version `rv`, if still kept.
    pub fn at(&self, rv: u64) -> Option<(&ClusterObservation, &HashMap<String, Template>)> {
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

    /// Each Deployment's pod template and annotations, by service.
    pub fn templates(&self) -> HashMap<String, Template> {
        self.obs
            .services
            .iter()
            .filter_map(|s| {
                let (req, lim, _) = self.twin.template_of(&s.name)?;
                Some((
                    s.name.clone(),
                    Template {
                        prefer: self.twin.preferred_node_type(&s.name),
                        cpu_request_cores: req,
                        cpu_limit_cores: lim,
                        annotations: self.annotations.get(&s.name).cloned().unwrap_or_default(),
                    },
                ))
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

    /// Applies every change to `service` or none: they are tried on a copy first. A change of
    /// the pod template's CPU is rolled out as the Deployment controller does (a rolling
    /// update); annotations change nothing else.
    pub fn apply_all(&mut self, service: &str, changes: Vec<Change>) -> Result<(), String> {
        let mut trial = self.twin.clone();
        let mut notes = self.annotations.get(service).cloned().unwrap_or_default();
        for c in &changes {
            let r = match c {
                Change::Act(k) => match trial.apply(&Action::new(service, k.clone())) {
                    ActionOutcome::Refused { reason, .. } => Err(reason),
                    ActionOutcome::Applied => Ok(()),
                },
                Change::TemplateCpu { request_m, limit_m } => {
                    trial.patch_template_cpu(service, *request_m, *limit_m)
                }
                Change::Annotate(set) => {
                    for (k, v) in set {
                        match v {
                            Some(v) => notes.insert(k.clone(), v.clone()),
                            None => notes.remove(k),
                        };
                    }
                    Ok(())
                }
            };
            if let Err(reason) = r {
                self.refused += 1;
                return Err(reason);
            }
        }
        self.twin = trial;
        self.annotations.insert(service.to_string(), notes);
        self.applied += changes.len() as u64;
        self.resource_version += 1;
        if let (Some((replicas, _, _)), Some(s)) = (
            self.twin.spec_of(service),
            self.obs.services.iter_mut().find(|s| s.name == service),
        ) {
            s.replicas_spec = replicas;
        }
        self.record();
        Ok(())
    }

    /// Resizes one pod in place (the `pods/{name}/resize` subresource), millicores.
    pub fn resize(
        &mut self,
        pod: &str,
        request_m: Option<f64>,
        limit_m: Option<f64>,
    ) -> Result<(), ResizeError> {
        self.twin.resize_pod(pod, request_m, limit_m)?;
        if let Some(p) = self.obs.pods.iter_mut().find(|p| p.name == pod) {
            if let Some(r) = request_m {
                p.cpu_request_cores = r / 1000.0;
            }
            if let Some(l) = limit_m {
                p.cpu_limit_cores = Some(l / 1000.0);
            }
        }
        self.applied += 1;
        self.resource_version += 1;
        self.record();
        Ok(())
    }
}
