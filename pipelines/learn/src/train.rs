//! Training the graph agents on the twin: vectorised [`TwinEnv`]s, rollouts of hybrid actions
//! with a semi-Markov GAE (time, not decisions, is discounted: a decision that does not advance
//! the twin has discount 1), rewards scaled by the running deviation of the return
//! ([`RewardNorm`], Gymnasium's `NormalizeReward`), and the updates of PPO (CleanRL's) and A2C
//! (Stable-Baselines3's: n-step returns, one RMSprop step per rollout): [`ppo::update`] and
//! [`a2c::update`], the very updates CartPole's tests use (and, for PPO, online learning).

use std::io::Write;

use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::a2c;
use crate::agent::{AgentSpec, GraphAgent, Obs};
use crate::config::TrainSettings;
use crate::envs::twin::{StepResult, TwinEnv};
use crate::optim::{Optim, Rule, Stateful};
use crate::policy::ActionTensors;
use crate::ppo::{self, Diagnostics, PpoConfig};
use crate::resume::{self, Checkpointing, Identity, SavedState};
use crate::rollout::explained_variance_of;

/// Which update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// PPO.
    Ppo,
    /// A2C.
    A2c,
}

impl Algo {
    /// The name.
    pub fn name(&self) -> &'static str {
        match self {
            Algo::Ppo => "ppo",
            Algo::A2c => "a2c",
        }
    }
}

/// The algorithms' settings from `[learn.train]`.
pub trait FromSettings {
    /// SAC's settings, with `hidden` units.
    fn sac(&self, hidden: i64) -> crate::sac::SacConfig;
    /// PPO's (and A2C's) settings, with `hidden` units.
    fn ppo(&self, hidden: i64) -> PpoConfig;
}

impl FromSettings for TrainSettings {
    fn sac(&self, hidden: i64) -> crate::sac::SacConfig {
        crate::sac::SacConfig {
            buffer_size: self.sac_buffer_size,
            gamma: self.gamma,
            tau: self.sac_tau,
            batch_size: self.sac_batch_size,
            learning_starts: self.sac_learning_starts,
            policy_lr: self.sac_learning_rate,
            q_lr: self.sac_learning_rate,
            update_frequency: self.sac_update_frequency,
            target_network_frequency: self.sac_target_network_frequency,
            autotune: true,
            alpha: 0.2,
            target_entropy_scale: self.sac_target_entropy_scale,
            hidden,
        }
    }

    fn ppo(&self, hidden: i64) -> PpoConfig {
        PpoConfig {
            learning_rate: self.learning_rate,
            num_steps: self.num_steps,
            anneal_lr: self.anneal_lr,
            gamma: self.gamma,
            gae_lambda: self.gae_lambda,
            num_minibatches: self.num_minibatches,
            update_epochs: self.update_epochs,
            norm_adv: true,
            clip_coef: self.clip_coef,
            clip_vloss: self.clip_vloss,
            ent_coef: self.ent_coef,
            vf_coef: self.vf_coef,
            max_grad_norm: self.max_grad_norm,
            target_kl: (self.target_kl > 0.0).then_some(self.target_kl),
            hidden,
        }
    }
}

/// Settings of graph training (`[learn.train]`; PPO's names as CleanRL's).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The algorithm.
    pub algo: Algo,
    /// PPO / A2C hyperparameters (`num_steps` per environment per rollout, …).
    pub ppo: PpoConfig,
    /// A2C's RMSprop learning rate.
    pub a2c_learning_rate: f64,
    /// A2C: normalise each rollout's advantages.
    pub a2c_normalize_advantage: bool,
    /// Start from this checkpoint's weights (same model and cluster) instead of a fresh
    /// initialisation: a second stage of training, e.g. under another reward.
    pub init: Option<std::path::PathBuf>,
    /// Save the training's state and stop or resume it ([`crate::resume`]); `None`: neither.
    pub checkpointing: Option<Checkpointing>,
    /// Keep candidate checkpoints along the way, for choosing one on validation seeds.
    pub keep: Option<Keep>,
}

/// Candidate checkpoints kept during a training (`graphscaler train --keep-every`): after the
/// first update at or past each multiple of `every` decisions, the model as it is then, written
/// as `<prefix>-at<decisions>` (safetensors and manifest, loadable like the final checkpoint), so
/// that a protocol can choose among them on validation seeds rather than take the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Keep {
    /// Decisions between candidates (over all environments); 0 keeps none.
    pub every: usize,
    /// Path prefix of the candidates.
    pub prefix: std::path::PathBuf,
    /// The algorithm's name in the manifests.
    pub algo: String,
    /// The producing command, for the manifests.
    pub produced_by: String,
    /// The manifests' `training` section (its `steps` set to the candidate's decisions).
    pub extra: serde_json::Value,
}

impl Keep {
    /// The candidate written at `decisions`.
    pub fn path(&self, decisions: usize) -> std::path::PathBuf {
        let mut p = self.prefix.clone().into_os_string();
        p.push(format!("-at{decisions}"));
        p.into()
    }

    /// Writes the candidate if `decisions` passed a multiple of `every` since `before`.
    pub fn maybe_save(
        &self,
        before: usize,
        decisions: usize,
        agent: &GraphAgent,
        vs: &VarStore,
    ) -> std::io::Result<()> {
        if self.every == 0 || decisions / self.every == before / self.every {
            return Ok(());
        }
        let mut extra = self.extra.clone();
        if let Some(m) = extra.as_object_mut() {
            m.insert("steps".into(), decisions.into());
            m.insert("candidate".into(), true.into());
        }
        agent
            .save(
                &self.path(decisions),
                vs,
                &self.algo,
                &self.produced_by,
                extra,
            )
            .map(|_| ())
            .map_err(err)
    }
}

/// One rollout over every environment, step-major.
#[derive(Debug)]
pub struct GraphRollout {
    obs: Vec<Obs>,
    actions: ActionTensors,
    logprobs: Tensor,
    values: Tensor,
    advantages: Tensor,
    returns: Tensor,
    /// Mean reward of the steps that advanced time.
    pub mean_reward: f64,
    /// Mean SLO_vio, Slack, Overshoot, ReplicaLag over those steps.
    pub terms: [f64; 4],
    /// Share of decisions that were "nothing".
    pub nothing: f64,
    /// Cluster actions the twin refused.
    pub refused: usize,
}

/// Gymnasium's `NormalizeReward`, as CleanRL's continuous-action PPO wraps its environments:
/// each reward is divided by the running standard deviation of the discounted return (per
/// environment, pooled statistics), so the critic sees returns of order one whatever the
/// reward's scale. Here the return is discounted per tick, as the advantages are.
#[derive(Debug, Clone)]
pub struct RewardNorm {
    returns: Vec<f64>,
    count: f64,
    mean: f64,
    var: f64,
}

/// The running statistics of a [`RewardNorm`]: what a checkpoint keeps (`reward_norm` in its
/// manifest's `config.training`), so that a training started from it (`--init`, a bootstrap's
/// fine-tuning) scales rewards as the critic it inherits was fitted to.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NormStats {
    /// Returns seen.
    pub count: f64,
    /// Their mean.
    pub mean: f64,
    /// Their variance.
    pub var: f64,
}

impl NormStats {
    /// The scale rewards are divided by.
    pub fn std(&self) -> f64 {
        (self.var + 1e-8).sqrt()
    }

    /// The statistics in `manifest`'s `config.training.reward_norm`, if it has them.
    pub fn of_manifest(m: &crate::checkpoint::Manifest) -> Option<Self> {
        m.config
            .get("training")
            .and_then(|t| t.get("reward_norm"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

impl RewardNorm {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            returns: vec![0.0; n],
            count: 1e-4,
            mean: 0.0,
            var: 1.0,
        }
    }

    /// `n` environments' scaling, continuing from `stats`.
    pub fn seeded(n: usize, stats: NormStats) -> Self {
        Self {
            returns: vec![0.0; n],
            count: stats.count,
            mean: stats.mean,
            var: stats.var,
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> NormStats {
        NormStats {
            count: self.count,
            mean: self.mean,
            var: self.var,
        }
    }

    /// The scaled reward of environment `i`.
    pub(crate) fn scale(&mut self, i: usize, r: f64, discount: f64, done: bool) -> f64 {
        self.returns[i] = self.returns[i] * discount + r;
        // Welford's update with one sample (Gymnasium's RunningMeanStd).
        let x = self.returns[i];
        let total = self.count + 1.0;
        let delta = x - self.mean;
        self.mean += delta / total;
        let m2 = self.var * self.count + delta * delta * self.count / total;
        self.var = m2 / total;
        self.count = total;
        if done {
            self.returns[i] = 0.0;
        }
        r / self.stats().std()
    }
}

/// Environments stepping together.
#[derive(Debug)]
pub struct GraphEnvs {
    envs: Vec<TwinEnv>,
    norm: RewardNorm,
    /// Decisions so far, over all environments.
    pub global_step: usize,
    /// Observation ticks so far.
    pub ticks: usize,
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl GraphEnvs {
    /// The environments.
    pub fn new(envs: Vec<TwinEnv>) -> Self {
        Self {
            norm: RewardNorm::new(envs.len()),
            envs,
            global_step: 0,
            ticks: 0,
        }
    }

    /// Scale rewards continuing from `stats` (a checkpoint's) instead of from scratch.
    pub fn with_norm(mut self, stats: NormStats) -> Self {
        self.norm = RewardNorm::seeded(self.envs.len(), stats);
        self
    }

    /// The reward scaling's statistics so far.
    pub fn norm(&self) -> NormStats {
        self.norm.stats()
    }

    /// The first environment.
    pub fn first(&self) -> &TwinEnv {
        &self.envs[0]
    }

    /// The most services and the most machines of any environment's cluster (they differ when
    /// the environments run several topologies).
    pub fn largest(&self) -> (usize, usize) {
        self.envs.iter().fold((0, 0), |(s, n), e| {
            let w = e.window();
            let last = w.last();
            (
                s.max(e.services().len()),
                n.max(last.map_or(0, |x| x.nodes.len())),
            )
        })
    }

    fn observe(&self) -> Vec<Obs> {
        self.envs
            .iter()
            .map(|e| Obs::new(&e.window(), e.mask()))
            .collect()
    }

    /// `num_steps` decisions of every environment under `agent`, then GAE(γ, λ) with discount 1
    /// on decisions that did not advance time.
    pub fn rollout(
        &mut self,
        agent: &GraphAgent,
        num_steps: usize,
        gamma: f64,
        gae_lambda: f64,
    ) -> std::io::Result<GraphRollout> {
        let n = self.envs.len();
        let mut obs = Vec::with_capacity(n * num_steps);
        let (mut choice, mut reps, mut cpu) = (vec![], vec![], vec![]);
        let (mut logp, mut val) = (Vec::<f32>::new(), Vec::<f32>::new());
        let (mut rew, mut disc, mut nonterm) = (vec![], vec![], vec![]);
        let mut tally = Tally::default();
        let mut current = self.observe();
        for _ in 0..num_steps {
            let refs: Vec<&Obs> = current.iter().collect();
            let step = tch::no_grad(|| agent.act(&refs, false));
            choice.extend(Vec::<i64>::try_from(&step.tensors.choice).map_err(err)?);
            reps.extend(Vec::<i64>::try_from(&step.tensors.replicas).map_err(err)?);
            cpu.extend(Vec::<f32>::try_from(&step.tensors.cpu).map_err(err)?);
            logp.extend(Vec::<f32>::try_from(&step.logprob).map_err(err)?);
            val.extend(Vec::<f32>::try_from(&step.value).map_err(err)?);
            for (i, (env, a)) in self.envs.iter_mut().zip(&step.actions).enumerate() {
                let r = env.step(a).map_err(err)?;
                tally.record(a, &r);
                let g = if r.advanced { gamma } else { 1.0 };
                rew.push(self.norm.scale(i, f64::from(r.reward), g, r.truncated) as f32);
                disc.push(g as f32);
                nonterm.push(if r.truncated { 0.0f32 } else { 1.0 });
            }
            self.global_step += n;
            obs.append(&mut current);
            current = self.observe();
        }
        self.ticks += tally.ticks();
        let refs: Vec<&Obs> = current.iter().collect();
        let next_value: Vec<f32> =
            Vec::try_from(&tch::no_grad(|| agent.value(&refs))).map_err(err)?;
        let batch = n * num_steps;
        let mut adv = vec![0f32; batch];
        let mut last = vec![0f32; n];
        for t in (0..num_steps).rev() {
            for i in 0..n {
                let k = t * n + i;
                let next_v = if t == num_steps - 1 {
                    next_value[i]
                } else {
                    val[k + n]
                };
                let delta = rew[k] + disc[k] * next_v * nonterm[k] - val[k];
                last[i] = delta + disc[k] * gae_lambda as f32 * nonterm[k] * last[i];
                adv[k] = last[i];
            }
        }
        let values = Tensor::from_slice(&val);
        let advantages = Tensor::from_slice(&adv);
        Ok(GraphRollout {
            obs,
            actions: ActionTensors {
                choice: Tensor::from_slice(&choice),
                replicas: Tensor::from_slice(&reps),
                cpu: Tensor::from_slice(&cpu),
            },
            logprobs: Tensor::from_slice(&logp),
            returns: &advantages + &values,
            values,
            advantages,
            mean_reward: tally.mean_reward(),
            terms: tally.mean_terms(),
            nothing: tally.nothing_share(),
            refused: tally.refused(),
        })
    }
}

/// What a stretch of decisions saw, as the training log reports it: the reward and its terms per
/// observation tick, the share of "nothing", the cluster actions refused (PPO and A2C per rollout,
/// SAC per logged stretch).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    decisions: usize,
    ticks: usize,
    reward: f64,
    terms: [f64; 4],
    nothing: usize,
    refused: usize,
}

impl Tally {
    /// Counts decision `a` and what its step returned.
    pub(crate) fn record(&mut self, a: &crate::policy::HybridAction, r: &StepResult) {
        self.decisions += 1;
        self.nothing += usize::from(matches!(a, crate::policy::HybridAction::Nothing));
        self.refused += r.refused;
        if let Some(t) = &r.terms {
            self.ticks += 1;
            self.reward += t.value;
            for (acc, x) in
                self.terms
                    .iter_mut()
                    .zip([t.slo_vio, t.slack, t.overshoot, t.replica_lag])
            {
                *acc += x;
            }
        }
    }

    /// Decisions.
    pub(crate) fn decisions(&self) -> usize {
        self.decisions
    }

    /// Observation ticks.
    pub(crate) fn ticks(&self) -> usize {
        self.ticks
    }

    /// Mean reward per tick.
    pub(crate) fn mean_reward(&self) -> f64 {
        self.reward / self.ticks.max(1) as f64
    }

    /// Mean SLO_vio, Slack, Overshoot, ReplicaLag per tick.
    pub(crate) fn mean_terms(&self) -> [f64; 4] {
        let k = self.ticks.max(1) as f64;
        self.terms.map(|x| x / k)
    }

    /// Share of "nothing" decisions.
    pub(crate) fn nothing_share(&self) -> f64 {
        self.nothing as f64 / self.decisions.max(1) as f64
    }

    /// Cluster actions refused.
    pub(crate) fn refused(&self) -> usize {
        self.refused
    }
}

/// One update's figures: the algorithm's diagnostics and the rollout's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Update {
    /// PPO / A2C diagnostics (CleanRL's names).
    pub diagnostics: Diagnostics,
    /// Observation ticks so far.
    pub ticks: usize,
    /// Mean reward per tick in the rollout.
    pub mean_reward: f64,
    /// Mean SLO_vio, Slack, Overshoot, ReplicaLag per tick.
    pub terms: [f64; 4],
    /// Share of "nothing" decisions.
    pub nothing: f64,
    /// Refused cluster actions.
    pub refused: usize,
}

impl Update {
    /// The CSV header.
    pub fn header() -> String {
        format!("{},charts/ticks,charts/mean_reward,charts/slo_vio,charts/slack,charts/overshoot,charts/replica_lag,charts/nothing_frac,charts/refused", Diagnostics::HEADER)
    }

    /// One CSV row.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{}",
            self.diagnostics.csv(),
            self.ticks,
            self.mean_reward,
            self.terms[0],
            self.terms[1],
            self.terms[2],
            self.terms[3],
            self.nothing,
            self.refused
        )
    }
}

/// What training produced.
#[derive(Debug)]
pub struct TrainedAgent {
    /// The model.
    pub agent: GraphAgent,
    /// Its variables.
    pub vs: VarStore,
    /// Every update.
    pub updates: Vec<Update>,
    /// The reward scaling at the end (for the manifest: [`NormStats`]).
    pub reward_norm: NormStats,
    /// Updates planned.
    pub iterations: usize,
    /// `Some(k)`: stopped early, after update `k`, its state saved ([`Checkpointing`]).
    pub stopped: Option<usize>,
    /// The update counts at which this training resumed.
    pub resumed_at: Vec<usize>,
    /// Seconds spent training, over every run of a resumed training.
    pub wall_s: f64,
    /// Decisions so far, over all environments (and every run of a resumed training).
    pub global_step: usize,
}

/// Trains a fresh `spec` agent for `total_steps` decisions on `envs`, seeded, writing
/// diagnostics as CSV to `log` and calling `progress` after every update.
pub fn train(
    envs: Vec<TwinEnv>,
    spec: AgentSpec,
    cfg: &TrainConfig,
    total_steps: usize,
    seed: i64,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(&Update),
) -> std::io::Result<TrainedAgent> {
    tch::manual_seed(seed);
    let started = std::time::Instant::now();
    let mut envs = GraphEnvs::new(envs);
    let n = envs.envs.len();
    let mut vs = VarStore::new(Device::Cpu);
    let topology = spec.topology.clone();
    let p = &cfg.ppo;
    let (rule, base_lr) = match cfg.algo {
        Algo::Ppo => (
            Rule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-5,
            },
            p.learning_rate,
        ),
        Algo::A2c => (
            Rule::RmsProp {
                alpha: 0.99,
                eps: 1e-5,
            },
            cfg.a2c_learning_rate,
        ),
    };
    let batch = n * p.num_steps;
    let iterations = (total_steps / batch).max(1);
    let id = Identity {
        spec: &spec,
        algo: cfg.algo.name(),
        // A2C's advantage normalisation came later: a state saved before it (without) resumes
        // only without it.
        settings: if cfg.algo == Algo::A2c && cfg.a2c_normalize_advantage {
            format!(
                "{:?} a2c_learning_rate={} a2c_normalize_advantage=true",
                cfg.ppo, cfg.a2c_learning_rate
            )
        } else {
            format!("{:?} a2c_learning_rate={}", cfg.ppo, cfg.a2c_learning_rate)
        },
        envs: n,
        total_steps,
    };
    let mut agent = GraphAgent::new(&vs.root(), spec.clone());
    // Environments of several topologies: every batch padded to the largest.
    let (ps, pn) = envs.largest();
    agent.pad_to(ps, pn);
    let mut opt = Stateful::new(&vs, rule, base_lr);
    let ck = cfg.checkpointing.as_ref();
    let mut state = SavedState::start(iterations, total_steps, n, envs.norm());
    if let Some(c) = ck.filter(|c| c.resume) {
        state = resume::load(&c.dir, &mut vs, &mut opt, &id).map_err(err)?;
        state.resumed_at.push(state.iteration);
        envs = envs.with_norm(state.reward_norm);
        envs.global_step = state.global_step;
        envs.ticks = state.ticks;
        // Another stream than the first run's, the same on every resume at this update.
        tch::manual_seed(seed.wrapping_add(1_000_003 * state.iteration as i64));
    } else {
        if let Some(init) = &cfg.init {
            let m = crate::checkpoint::load(init, &mut vs, &topology).map_err(err)?;
            if let Some(stats) = NormStats::of_manifest(&m) {
                envs = envs.with_norm(stats);
            }
        }
        writeln!(log, "{}", Update::header())?;
    }
    let prior_wall_s = state.wall_s;
    let first = state.iteration + 1;
    let mut updates = vec![];
    let mut stopped = None;
    for iteration in first..=iterations {
        let lr = if p.anneal_lr {
            (1.0 - (iteration - 1) as f64 / iterations as f64) * base_lr
        } else {
            base_lr
        };
        opt.set_lr(lr);
        let lambda = match cfg.algo {
            Algo::Ppo => p.gae_lambda,
            Algo::A2c => 1.0,
        };
        let before = envs.global_step;
        let r = envs.rollout(&agent, p.num_steps, p.gamma, lambda)?;
        let mut d = Diagnostics {
            global_step: envs.global_step,
            learning_rate: lr,
            ..Diagnostics::default()
        };
        match cfg.algo {
            Algo::Ppo => {
                let minibatch = (batch / p.num_minibatches.max(1)).max(1);
                ppo::update(p, &mut opt, batch, minibatch, &mut d, |idx| {
                    let mb = Tensor::from_slice(idx);
                    let obs: Vec<&Obs> = idx.iter().map(|&i| &r.obs[i as usize]).collect();
                    let (new_logp, entropy, new_value) =
                        agent.evaluate(&obs, &r.actions.select(&mb));
                    Ok(ppo::Batch {
                        new_logp,
                        entropy,
                        new_value,
                        old_logp: r.logprobs.index_select(0, &mb),
                        old_value: r.values.index_select(0, &mb),
                        advantages: r.advantages.index_select(0, &mb),
                        returns: r.returns.index_select(0, &mb),
                    })
                })
                .map_err(err)?;
            }
            Algo::A2c => {
                let obs: Vec<&Obs> = r.obs.iter().collect();
                let (logp, entropy, value) = agent.evaluate(&obs, &r.actions);
                let terms = a2c::A2cTerms {
                    norm_adv: cfg.a2c_normalize_advantage,
                    ent_coef: p.ent_coef,
                    vf_coef: p.vf_coef,
                    max_grad_norm: p.max_grad_norm,
                };
                let b = a2c::A2cBatch {
                    logp,
                    entropy,
                    value,
                    advantages: r.advantages.shallow_clone(),
                    returns: r.returns.shallow_clone(),
                };
                a2c::update(&terms, &mut opt, &b, &mut d);
            }
        }
        d.explained_variance = explained_variance_of(&r.returns, &r.values);
        let u = Update {
            diagnostics: d,
            ticks: envs.ticks,
            mean_reward: r.mean_reward,
            terms: r.terms,
            nothing: r.nothing,
            refused: r.refused,
        };
        writeln!(log, "{}", u.csv())?;
        progress(&u);
        updates.push(u);
        if let Some(k) = &cfg.keep {
            k.maybe_save(before, envs.global_step, &agent, &vs)?;
        }
        if let Some(c) = ck {
            let stop = iteration < iterations
                && (c.stop_after.is_some_and(|k| iteration >= k)
                    || c.deadline.is_some_and(|t| std::time::Instant::now() >= t));
            if stop || (c.every > 0 && iteration.is_multiple_of(c.every)) {
                // What the log says must be on disk before the state that counts it.
                log.flush()?;
                state = resume::save(
                    &c.dir,
                    &vs,
                    &opt,
                    &id,
                    SavedState {
                        iteration,
                        global_step: envs.global_step,
                        ticks: envs.ticks,
                        reward_norm: envs.norm(),
                        wall_s: prior_wall_s + started.elapsed().as_secs_f64(),
                        ..state
                    },
                )
                .map_err(err)?;
            }
            if stop {
                stopped = Some(iteration);
                break;
            }
        }
    }
    Ok(TrainedAgent {
        agent,
        vs,
        updates,
        reward_norm: envs.norm(),
        iterations,
        stopped,
        resumed_at: state.resumed_at,
        wall_s: prior_wall_s + started.elapsed().as_secs_f64(),
        global_step: envs.global_step,
    })
}
