//! Scaling actions and what became of them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One scaling decision about one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Action {
    /// The workload to change.
    pub service: String,
    /// What to change.
    pub kind: ActionKind,
}

impl Action {
    /// An action on `service`.
    pub fn new(service: impl Into<String>, kind: ActionKind) -> Self {
        Self {
            service: service.into(),
            kind,
        }
    }
}

/// The change an [`Action`] asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionKind {
    /// Set `spec.replicas` (the scale subresource).
    SetReplicas {
        /// The new replica count.
        replicas: u32,
    },
    /// Add `delta` replicas (negative removes).
    ChangeReplicas {
        /// Replicas to add, in the learned action space −2..=+2.
        delta: i32,
    },
    /// Set the container CPU limit (the CFS quota), millicores, resized in place. The request is
    /// scaled by the same factor, keeping the request:limit ratio of the manifest.
    SetCpuLimit {
        /// The new limit, millicores.
        millicores: u32,
    },
    /// Multiply the CPU limit by `2^delta`, with `delta` in [−1, 1] (the learned Δquota).
    ChangeCpuQuota {
        /// Relative change on a log2 scale.
        delta: f64,
    },
    /// Prefer nodes of this type for new pods (preferred node affinity); `None` clears it.
    PreferNodeType {
        /// A node type of the cluster, or none.
        node_type: Option<String>,
    },
}

impl ActionKind {
    /// The part of a service it changes — `replicas`, `cpu` or `node_type` — each with its own
    /// last writer in the actuator, and its own decision id.
    pub fn part(&self) -> &'static str {
        match self {
            ActionKind::SetReplicas { .. } | ActionKind::ChangeReplicas { .. } => "replicas",
            ActionKind::SetCpuLimit { .. } | ActionKind::ChangeCpuQuota { .. } => "cpu",
            ActionKind::PreferNodeType { .. } => "node_type",
        }
    }

    /// Whether it states the desired value (safe to apply twice), not a change of the current
    /// one.
    pub fn is_absolute(&self) -> bool {
        matches!(
            self,
            ActionKind::SetReplicas { .. }
                | ActionKind::SetCpuLimit { .. }
                | ActionKind::PreferNodeType { .. }
        )
    }
}

/// How a CPU change reaches a service's pods (`pipeline.guardrails.cpu_resize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CpuResize {
    /// In place where the cluster supports it (the `pods/{name}/resize` subresource, Kubernetes
    /// 1.33 and later), else `restart`.
    #[default]
    Auto,
    /// Resize the running pods in place: no restart, requests and limits together.
    InPlace,
    /// Patch the Deployment's pod template: a rolling restart of every pod (maxSurge and
    /// maxUnavailable 25 %).
    Restart,
}

impl CpuResize {
    /// The setting's name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            CpuResize::Auto => "auto",
            CpuResize::InPlace => "in_place",
            CpuResize::Restart => "restart",
        }
    }
}

/// What became of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Applied in full.
    Applied,
    /// Refused; nothing was changed.
    Refused {
        /// Why, in words a user can act on.
        reason: String,
        /// Which rule refused it (absent in records written before refusals had kinds).
        #[serde(default)]
        refusal: Refusal,
    },
}

/// Which rule refused an action: the actuator's guardrails, in their order, or the cluster.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// A newer decision for the same part of the same service was already made.
    Superseded,
    /// Stamped implausibly far ahead of now.
    Implausible,
    /// Older than the actions' time-to-live.
    Expired,
    /// The service's telemetry is stale, absent or lacks a metric.
    Hold,
    /// The cluster has no such workload.
    UnknownWorkload,
    /// The service changed within the cooldown.
    Cooldown,
    /// The action would change nothing (after the bounds and the step limit).
    NoChange,
    /// Not enough free CPU for the added replicas.
    Capacity,
    /// The action itself is malformed (a CPU quota change that is not a number).
    Invalid,
    /// The cluster (the twin or the Kubernetes API) refused to apply it.
    Cluster,
    /// A CPU action on a workload none of whose containers has a CPU limit: there is no limit
    /// to scale, and the actuator never invents one.
    NoCpuLimit,
    /// Recorded without a kind.
    #[default]
    Unknown,
}

impl Refusal {
    /// The words tables and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Superseded => "superseded",
            Refusal::Implausible => "implausible",
            Refusal::Expired => "expired",
            Refusal::Hold => "hold",
            Refusal::UnknownWorkload => "unknown workload",
            Refusal::Cooldown => "cooldown",
            Refusal::NoChange => "no change",
            Refusal::Capacity => "capacity",
            Refusal::Invalid => "invalid",
            Refusal::Cluster => "the cluster refused",
            Refusal::NoCpuLimit => "no cpu limit",
            Refusal::Unknown => "unknown",
        }
    }
}

impl ActionOutcome {
    /// A refusal by `refusal`, with its reason in words.
    pub fn refused(refusal: Refusal, reason: impl Into<String>) -> Self {
        ActionOutcome::Refused {
            reason: reason.into(),
            refusal,
        }
    }

    /// Whether the action was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, ActionOutcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_json() {
        let a = Action::new("cartservice", ActionKind::ChangeCpuQuota { delta: -0.5 });
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(
            s,
            r#"{"service":"cartservice","kind":{"type":"change_cpu_quota","delta":-0.5}}"#
        );
        assert_eq!(serde_json::from_str::<Action>(&s).unwrap(), a);
    }
}
