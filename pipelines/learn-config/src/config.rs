//! The `[learn]` section of the configuration: the reward's weights, the action rules, training
//! hyperparameters and where checkpoints live.

use serde::{Deserialize, Serialize};

use crate::reward::RewardConfig;

/// How a served policy picks its action (`learn.act`; any other value is refused when the
/// configuration is read, naming the key and the values it takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActRule {
    /// The most likely action (the argmax of the pair-or-nothing choice, then of Δreplicas, the
    /// Beta's mode).
    Mode,
    /// Drawn from the policy, as in training (reproducibly: `graphscaler_learn::serve::draw`).
    Sample,
    /// The rule the checkpoint's manifest names (`act`, chosen with it on validation seeds);
    /// `Mode` when it names none.
    Checkpoint,
}

/// `[learn]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnConfig {
    /// Where `graphscaler train` writes and `eval` looks for checkpoints by policy name.
    pub checkpoint_dir: String,
    /// How a served policy picks its action.
    pub act: ActRule,
    /// `[learn.reward]`.
    pub reward: RewardWeights,
    /// `[learn.actions]`.
    pub actions: ActionRules,
    /// `[learn.train]`.
    pub train: TrainSettings,
    /// `[learn.online]`: guarded online learning in the policy stage (off by default).
    pub online: OnlineConfig,
    /// `[learn.bootstrap]`: learning from stored transitions (`graphscaler train --from`).
    pub bootstrap: BootstrapSettings,
}

impl LearnConfig {
    /// What is wrong with `[learn]`, one message per problem (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        let mut errs = vec![];
        let r = &self.reward;
        if !(0.0..=1.0).contains(&r.slo_step) || !(0.0..0.99).contains(&r.slo_margin) {
            errs.push(format!(
                "learn.reward needs slo_step in [0, 1] and slo_margin in [0, 0.99), got {} and {}",
                r.slo_step, r.slo_margin
            ));
        }
        let b = &self.bootstrap;
        if b.epochs == 0 || b.minibatch == 0 || !(0.0..1.0).contains(&b.holdout_share) {
            errs.push(format!(
                "learn.bootstrap needs epochs and minibatch above 0 and holdout_share in [0, 1), got {}, {} and {}",
                b.epochs, b.minibatch, b.holdout_share
            ));
        }
        errs
    }
}

/// `[learn.reward]`: `r = −w_slo·SLO_vio − w_slack·Slack − w_overshoot·Overshoot −
/// w_replica_lag·ReplicaLag` (the SLO objectives come from `[slo]`, `u*` from
/// `eval.target_utilization`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardWeights {
    /// Weight of SLO_vio.
    pub w_slo: f64,
    /// SLO_vio's step at the objective, σ ∈ [0, 1]: 0 grades only the excess over the
    /// objective, 1 counts every violating tick in full (as the evaluation does). Absent in
    /// manifests written before it existed, which trained with 0.
    #[serde(default)]
    pub slo_step: f64,
    /// Headroom the reward keeps under the SLO objectives, in [0, 1): SLO_vio counts p95 past
    /// `(1 − slo_margin) · latency_ms` (and the error rate past `(1 − slo_margin) ·
    /// error_rate`). 0 (the default, and in manifests written before it existed): the
    /// objectives themselves. The evaluation always counts against `[slo]` itself.
    #[serde(default)]
    pub slo_margin: f64,
    /// Weight of Slack.
    pub w_slack: f64,
    /// Weight of Overshoot.
    pub w_overshoot: f64,
    /// Weight of ReplicaLag.
    pub w_replica_lag: f64,
    /// Replica lag that counts as 1, s.
    pub lag_scale_s: f64,
}

impl RewardWeights {
    /// The reward with the SLO objectives (tightened by `slo_margin`) and `u*`.
    pub fn reward(&self, slo_latency_ms: f64, slo_error_rate: f64, u: f64) -> RewardConfig {
        let keep = 1.0 - self.slo_margin.clamp(0.0, 0.99);
        RewardConfig {
            w_slo: self.w_slo,
            slo_step: self.slo_step,
            w_slack: self.w_slack,
            w_overshoot: self.w_overshoot,
            w_replica_lag: self.w_replica_lag,
            slo_latency_ms: slo_latency_ms * keep,
            slo_error_rate: slo_error_rate * keep,
            target_utilization: u,
            lag_scale_s: self.lag_scale_s,
        }
    }
}

/// `[learn.train]`: the environments and PPO's (CleanRL's names) and A2C's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Twin environments stepping together.
    pub num_envs: usize,
    /// Length of a training episode (one twin run), s.
    pub episode_s: f64,
    /// Share of episodes that start where the tuned HPA left the cluster.
    pub handover_share: f64,
    /// The HPA runs up to this long before such a handover, s.
    pub handover_max_s: f64,
    /// Decisions per environment per rollout.
    pub num_steps: usize,
    /// Adam's learning rate (PPO).
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0.
    pub anneal_lr: bool,
    /// Discount per observation tick.
    pub gamma: f64,
    /// GAE λ (PPO; A2C uses 1).
    pub gae_lambda: f64,
    /// Minibatches per epoch.
    pub num_minibatches: usize,
    /// Epochs per rollout.
    pub update_epochs: usize,
    /// Surrogate clipping.
    pub clip_coef: f64,
    /// Clip the value loss.
    pub clip_vloss: bool,
    /// Entropy bonus.
    pub ent_coef: f64,
    /// Value loss weight.
    pub vf_coef: f64,
    /// Gradient norm limit.
    pub max_grad_norm: f64,
    /// Stop an update's epochs past this approximate KL (0: never).
    pub target_kl: f64,
    /// A2C: decisions per environment per rollout.
    pub a2c_num_steps: usize,
    /// A2C: RMSprop learning rate.
    pub a2c_learning_rate: f64,
    /// A2C: normalise each rollout's advantages, as PPO does (Stable-Baselines3's
    /// `normalize_advantage`; see config/default.toml for why it is on).
    pub a2c_normalize_advantage: bool,
    /// SAC: replay buffer size (decisions).
    pub sac_buffer_size: usize,
    /// SAC: minibatch size.
    pub sac_batch_size: usize,
    /// SAC: decisions before learning starts.
    pub sac_learning_starts: usize,
    /// SAC: actor and critic learning rate.
    pub sac_learning_rate: f64,
    /// SAC: a gradient step every this many vector steps.
    pub sac_update_frequency: usize,
    /// SAC: a target update every this many vector steps.
    pub sac_target_network_frequency: usize,
    /// SAC: Polyak factor of the target update.
    pub sac_tau: f64,
    /// SAC: target entropy as a share of log |valid actions|.
    pub sac_target_entropy_scale: f64,
}

/// The rules of the action space (`[learn.actions]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRules {
    /// Decisions a policy may take per observation tick.
    pub decisions_per_tick: usize,
    /// Seconds after a change during which a service is masked (0: the rest of the tick only).
    pub cooldown_s: f64,
    /// |Δcpu| below this leaves the CPU limit alone.
    pub cpu_deadband: f64,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
}

graphscaler_schemas::default_from!(ActionRules, "learn.actions");

/// `[learn.bootstrap]`: behaviour cloning of stored decisions and the critic fitted on stored
/// rewards (`graphscaler train --from`; the discount and gradient limit are `[learn.train]`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSettings {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Sub-decisions per gradient step.
    pub minibatch: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Weight of the value error.
    pub vf_coef: f64,
    /// Weight of the Δcpu mean's squared error.
    pub cpu_coef: f64,
    /// Share of each recorded run (its last rows) held out to measure agreement.
    pub holdout_share: f64,
}

graphscaler_schemas::default_from!(BootstrapSettings, "learn.bootstrap");

/// `[learn.online]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineConfig {
    /// Learn while serving (off by default).
    pub enabled: bool,
    /// Where versions and `updates.csv` go.
    pub dir: String,
    /// Transitions (decisions with their reward) per update.
    pub update_every: usize,
    /// Most recent share of them held out for the promotion check.
    pub holdout_share: f64,
    /// PPO epochs over the rest.
    pub epochs: usize,
    /// Minibatch size.
    pub minibatch: usize,
    /// Adam's learning rate for the shadow.
    pub learning_rate: f64,
    /// Trust region: the most approximate KL(live ‖ shadow) an update may reach.
    pub max_kl: f64,
    /// Least clipped surrogate gain on the held-out transitions for a promotion.
    pub min_gain: f64,
    /// Versions kept on disk (the starting `v0000` is always kept).
    pub keep: usize,
    /// Ticks after a promotion before it is judged (0: never roll back automatically).
    pub rollback_ticks: usize,
    /// Roll back when the mean reward per tick fell by more than this.
    pub rollback_margin: f64,
}

graphscaler_schemas::default_from!(OnlineConfig, "learn.online");
