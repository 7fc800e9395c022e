//! Leader election on a Kubernetes Lease (`coordination.k8s.io/v1`), as client-go's
//! `leaderelection` does it, so that only one actuator applies actions — during a rolling update
//! two run side by side in one consumer group.
//!
//! A candidate reads the Lease and [`decide`]s: create it when there is none, renew it when it
//! holds it, take it over when its holder has not renewed it for `leaseDurationSeconds` (or it
//! was released), and otherwise wait. Every write carries the resourceVersion it read, so when two
//! candidates race the API server accepts one and refuses the other (409 Conflict). The holder
//! renews every `retry_s`; when it has not renewed for `renew_deadline_s` (shorter than the
//! duration, so it stops before anyone else may start) or finds another holder, it has lost the
//! lease: the stage stops applying and the process exits with an error naming why, to be
//! restarted as a candidate. On a clean stop the holder releases the lease (holder cleared), so
//! the next candidate takes it at once instead of waiting out the duration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graphscaler_bus::Metrics;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// `[pipeline.lease]`: the actuator's leader election.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// Take the lease before applying anything (the stage `graphscaler actuate` on the
    /// Kubernetes API; `graphscaler run` has one actuator and no lease).
    pub enabled: bool,
    /// The Lease's name.
    pub name: String,
    /// Its namespace; empty: the client's default namespace (in a pod, its own).
    pub namespace: String,
    /// Seconds a candidate waits after the holder's last renewal before taking the lease.
    pub duration_s: f64,
    /// Seconds the holder keeps applying without a successful renewal; less than `duration_s`.
    pub renew_deadline_s: f64,
    /// Seconds between attempts to take or renew the lease.
    pub retry_s: f64,
}

impl LeaseConfig {
    /// Why these settings cannot elect safely, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.name.is_empty() {
            return Some("pipeline.lease.name is empty".into());
        }
        let finite = [self.duration_s, self.renew_deadline_s, self.retry_s]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0);
        if !finite {
            return Some(
                "pipeline.lease: duration_s, renew_deadline_s and retry_s must be positive".into(),
            );
        }
        if self.renew_deadline_s >= self.duration_s || self.retry_s >= self.renew_deadline_s {
            return Some(format!(
                "pipeline.lease: retry_s ({}) < renew_deadline_s ({}) < duration_s ({}) is needed, so that a holder that cannot renew stops before another may start",
                self.retry_s, self.renew_deadline_s, self.duration_s
            ));
        }
        None
    }
}

/// What a candidate does with the lease it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// There is none: create it.
    Create,
    /// It holds it: renew.
    Renew,
    /// Its holder let it expire or released it: take it over.
    TakeOver {
        /// The previous holder (empty: released).
        from: String,
    },
    /// Another holds it: wait.
    Wait {
        /// The holder.
        holder: String,
        /// Unix time at which it expires unless renewed.
        until_s: f64,
    },
}

fn unix(t: &MicroTime) -> f64 {
    t.0.as_microsecond() as f64 / 1e6
}

fn micro(unix_s: f64) -> MicroTime {
    MicroTime(Timestamp::from_microsecond((unix_s * 1e6) as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// What `me` does at `now_s` with `lease` (None: there is none).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now_s: f64) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver { from: holder };
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map_or(0.0, unix);
    let until_s = renewed + f64::from(spec.lease_duration_seconds.unwrap_or(0));
    if until_s <= now_s {
        Decision::TakeOver { from: holder }
    } else {
        Decision::Wait { holder, until_s }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// It holds the lease now.
    Leading,
    /// Another holds it.
    Held {
        /// The holder.
        holder: String,
        /// Unix time at which it expires unless renewed.
        until_s: f64,
    },
    /// Another candidate wrote first (409); try again.
    Conflict,
}

/// A candidate for one lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    identity: String,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("lease", &self.cfg.name)
            .field("identity", &self.identity)
            .finish()
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This process's identity: the host name (a pod's name) and the process id.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "graphscaler".into());
    format!("{host}_{}", std::process::id())
}

/// Why the lease was lost (or could not be taken).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("lease {namespace}/{name}: {why}")]
pub struct Lost {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What happened.
    pub why: String,
}

impl Elector {
    /// `identity` as a candidate for the lease `cfg` names, through `client`.
    pub fn new(client: Client, cfg: LeaseConfig, identity: String) -> Self {
        let api = if cfg.namespace.is_empty() {
            Api::default_namespaced(client)
        } else {
            Api::namespaced(client, &cfg.namespace)
        };
        Self { api, cfg, identity }
    }

    /// Its identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lost(&self, why: String) -> Lost {
        Lost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            why,
        }
    }

    fn spec(&self, now: f64, acquired: Option<f64>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.cfg.duration_s.ceil() as i32),
            acquire_time: acquired.map(micro),
            renew_time: Some(micro(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the lease at `now` (Unix seconds).
    pub async fn try_once(&self, now: f64) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.cfg.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.clone());
        let decision = match (&current, &spec) {
            (None, _) => Decision::Create,
            (Some(_), None) => Decision::TakeOver {
                from: String::new(),
            },
            (Some(_), Some(s)) => decide(Some(s), &self.identity, now),
        };
        let transitions = spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
        let write = |spec: LeaseSpec| {
            let mut l = current.clone().unwrap_or_default();
            l.metadata = ObjectMeta {
                name: Some(self.cfg.name.clone()),
                ..l.metadata
            };
            l.spec = Some(spec);
            l
        };
        let outcome = match decision {
            Decision::Wait { holder, until_s } => return Ok(Attempt::Held { holder, until_s }),
            Decision::Create => {
                self.api
                    .create(&PostParams::default(), &write(self.spec(now, Some(now), 0)))
                    .await
            }
            Decision::Renew => {
                let acquired = spec
                    .as_ref()
                    .and_then(|s| s.acquire_time.as_ref())
                    .map(unix);
                self.api
                    .replace(
                        &self.cfg.name,
                        &PostParams::default(),
                        &write(self.spec(now, acquired.or(Some(now)), transitions)),
                    )
                    .await
            }
            Decision::TakeOver { .. } => {
                self.api
                    .replace(
                        &self.cfg.name,
                        &PostParams::default(),
                        &write(self.spec(now, Some(now), transitions + 1)),
                    )
                    .await
            }
        };
        match outcome {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Waits until it holds the lease (true) or `stop` fires (false), saying once per holder
    /// who holds it. `graphscaler_leader` is 0 meanwhile.
    pub async fn acquire(&self, metrics: &Metrics, mut stop: watch::Receiver<bool>) -> bool {
        metrics.set("graphscaler_leader", &[], 0.0);
        let mut said: Option<String> = None;
        let mut errors = 0u64;
        loop {
            match self.try_once(now_s()).await {
                Ok(Attempt::Leading) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.identity, "took the lease: applying actions");
                    metrics.set("graphscaler_leader", &[], 1.0);
                    metrics.progressed();
                    return true;
                }
                Ok(Attempt::Held { holder, until_s }) => {
                    if said.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %self.cfg.name, %holder, expires_in_s = until_s - now_s(), "the lease is held by another actuator; waiting as a candidate");
                        said = Some(holder);
                    }
                    // Waiting is progress: this candidate is doing what it should.
                    metrics.progressed();
                    errors = 0;
                }
                Ok(Attempt::Conflict) => {}
                Err(e) => {
                    if errors == 0 {
                        tracing::warn!(lease = %self.cfg.name, error = %e, "cannot read or write the lease; retrying");
                    }
                    errors += 1;
                    metrics.add("graphscaler_lease_errors_total", &[], 1.0);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(self.cfg.retry_s)) => {}
                _ = stop.changed() => return false,
            }
            if *stop.borrow() {
                return false;
            }
        }
    }

    /// Renews the lease it holds every `retry_s` until `stop` fires (then releases it, Ok) or
    /// it is lost (Err: another holds it, or no renewal succeeded for `renew_deadline_s`).
    /// `lost` is set to true the moment it is lost, before this returns.
    pub async fn hold(
        &self,
        metrics: &Metrics,
        mut stop: watch::Receiver<bool>,
        lost: watch::Sender<bool>,
    ) -> Result<(), Lost> {
        let mut last = now_s();
        let mut errors = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(self.cfg.retry_s)) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                self.release().await;
                metrics.set("graphscaler_leader", &[], 0.0);
                return Ok(());
            }
            let now = now_s();
            let why = match self.try_once(now).await {
                Ok(Attempt::Leading) => {
                    last = now;
                    errors = 0;
                    continue;
                }
                Ok(Attempt::Held { holder, .. }) => Some(format!("taken over by {holder}")),
                Ok(Attempt::Conflict) => None,
                Err(e) => {
                    if errors == 0 {
                        tracing::warn!(lease = %self.cfg.name, error = %e, "cannot renew the lease; retrying until the renew deadline");
                    }
                    errors += 1;
                    metrics.add("graphscaler_lease_errors_total", &[], 1.0);
                    None
                }
            };
            let why = why.or_else(|| {
                (now - last >= self.cfg.renew_deadline_s).then(|| {
                    format!(
                        "not renewed for {:.1} s (renew_deadline_s {})",
                        now - last,
                        self.cfg.renew_deadline_s
                    )
                })
            });
            if let Some(why) = why {
                let _ = lost.send(true);
                metrics.set("graphscaler_leader", &[], 0.0);
                return Err(self.lost(why));
            }
        }
    }

    /// Gives the lease up (holder cleared), if it still holds it; failures are only logged:
    /// the lease then expires after its duration.
    pub async fn release(&self) {
        let Ok(Some(mut l)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = l.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro(now_s()));
        if let Err(e) = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &l)
            .await
        {
            tracing::warn!(lease = %self.cfg.name, error = %e, "could not release the lease; it expires on its own");
        } else {
            tracing::info!(lease = %self.cfg.name, "released the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: f64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: Some(micro(renewed)),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_candidate_creates_renews_waits_and_takes_over() {
        assert_eq!(decide(None, "a", 100.0), Decision::Create);
        assert_eq!(
            decide(Some(&spec(Some("a"), 90.0, 15)), "a", 100.0),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 90.0, 15)), "a", 100.0),
            Decision::Wait {
                holder: "b".into(),
                until_s: 105.0
            }
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 90.0, 15)), "a", 105.0),
            Decision::TakeOver { from: "b".into() }
        );
        assert_eq!(
            decide(Some(&spec(None, 100.0, 1)), "a", 100.0),
            Decision::TakeOver {
                from: String::new()
            }
        );
        // Microseconds survive the round trip through the API's MicroTime.
        assert!((unix(&micro(1_764_950_400.123_456)) - 1_764_950_400.123_456).abs() < 1e-6);
    }

    #[test]
    fn settings_that_cannot_elect_safely_are_refused() {
        let ok = LeaseConfig {
            enabled: true,
            name: "graphscaler-actuator".into(),
            namespace: String::new(),
            duration_s: 15.0,
            renew_deadline_s: 10.0,
            retry_s: 2.0,
        };
        assert_eq!(ok.problem(), None);
        let bad = LeaseConfig {
            renew_deadline_s: 20.0,
            ..ok.clone()
        };
        assert!(bad.problem().unwrap().contains("renew_deadline_s (20)"));
        let bad = LeaseConfig {
            retry_s: f64::NAN,
            ..ok
        };
        assert!(bad.problem().is_some());
    }
}
