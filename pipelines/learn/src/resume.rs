//! Saving and resuming a training on the twin (`graphscaler train --resume`): a training of
//! hours survives being stopped — by a time limit, a signal, the end of a session — and goes on
//! from its last saved update.
//!
//! **What is saved**, after every `every` updates and whenever a training stops early, in a
//! directory of its own (`<out>.resume/` for `graphscaler train`):
//!
//! * `state-NNNNNN.safetensors` — the model's parameters (`model/<name>`) and the optimiser's
//!   moments (`opt/m/<name>`, `opt/v/<name>`: [`crate::optim::Stateful`], Adam or RMSprop as
//!   PyTorch defines them);
//! * `state.json` — what names them ([`SavedState`]): the updates done and planned, the
//!   decisions and ticks so far, the optimiser's step count, the reward scaling's statistics,
//!   the seconds trained, the updates at which earlier runs resumed, the model's specification
//!   and the algorithm's settings, and the weights file's SHA-256.
//!
//! The weights are written first, then `state.json` (each to a temporary file renamed into
//! place), then older weights files are removed: a training killed at any instant leaves a
//! state that loads — the last one whose `state.json` was renamed.
//!
//! **What a resumed training continues exactly**: the parameters, the optimiser's moments and
//! bias correction, the learning-rate schedule (the update number), the reward scale, the
//! counters and the diagnostics' global step. **What it does not**: the twin's episodes in
//! progress at the save are cut there and new ones start (from seeds the caller derives from the
//! run's and the resume), and libtorch's generator is reseeded from the seed and the update
//! number. A resumed training is therefore a training of the same length and schedule, not the
//! bit-identical run an uninterrupted one would have been; the saved update numbers
//! (`resumed_at`) go into the checkpoint's manifest.
//!
//! A state is refused, naming the difference, when the training asking for it is not the one
//! that saved it: another model (encoder, sizes, services, node types, rules), algorithm,
//! settings, number of environments or length.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::agent::AgentSpec;
use crate::optim::Stateful;
use crate::train::NormStats;

/// The format of `state.json`.
pub const FORMAT: &str = "graphscaler-train-state/1";

/// Where a training saves its state and when it stops early.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpointing {
    /// The directory of the state.
    pub dir: PathBuf,
    /// Save after every this many updates; 0: only when stopping early.
    pub every: usize,
    /// Continue from the state in `dir` (it must be there) instead of starting afresh.
    pub resume: bool,
    /// Stop, having saved, after the update during which this instant passed.
    pub deadline: Option<std::time::Instant>,
    /// Stop, having saved, once this many updates are done in all.
    pub stop_after: Option<usize>,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// [`FORMAT`].
    pub format: String,
    /// `ppo`, `a2c` or `sac`.
    pub algo: String,
    /// Updates done.
    pub iteration: usize,
    /// Updates planned.
    pub iterations: usize,
    /// Decisions planned, over all environments.
    pub total_steps: usize,
    /// Environments.
    pub envs: usize,
    /// Decisions so far, over all environments.
    pub global_step: usize,
    /// Observation ticks so far.
    pub ticks: usize,
    /// The (first) optimiser's steps so far.
    pub optimizer_steps: i64,
    /// The other optimisers' steps, by name (SAC's critics and temperature).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub other_optimizer_steps: std::collections::BTreeMap<String, i64>,
    /// The reward scaling's statistics.
    pub reward_norm: NormStats,
    /// Seconds spent training so far, over every run.
    pub wall_s: f64,
    /// The update counts at which earlier runs resumed.
    pub resumed_at: Vec<usize>,
    /// The model.
    pub spec: serde_json::Value,
    /// The algorithm's settings (their debug form: compared, not parsed).
    pub settings: String,
    /// The weights file, in the same directory.
    pub weights: String,
    /// Its SHA-256.
    pub sha256: String,
}

impl SavedState {
    /// The state of a training of `iterations` updates and `total_steps` decisions on `envs`
    /// environments that has not begun.
    pub fn start(
        iterations: usize,
        total_steps: usize,
        envs: usize,
        reward_norm: NormStats,
    ) -> Self {
        Self {
            format: String::new(),
            algo: String::new(),
            iteration: 0,
            iterations,
            total_steps,
            envs,
            global_step: 0,
            ticks: 0,
            optimizer_steps: 0,
            other_optimizer_steps: std::collections::BTreeMap::new(),
            reward_norm,
            wall_s: 0.0,
            resumed_at: vec![],
            spec: serde_json::Value::Null,
            settings: String::new(),
            weights: String::new(),
            sha256: String::new(),
        }
    }
}

/// Why a state cannot be saved or resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Nothing to resume.
    #[error("no saved training state in {dir}: nothing to resume (a training saves one every few updates and when it stops early; start without --resume)")]
    Missing {
        /// The directory.
        dir: PathBuf,
    },
    /// The state is not this training's.
    #[error("the training state in {dir} is not this training's: {what}")]
    Mismatch {
        /// The directory.
        dir: PathBuf,
        /// The difference.
        what: String,
    },
    /// A file could not be read, written or parsed.
    #[error("training state {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> ResumeError {
    ResumeError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The state saved in `dir`, if there is one.
pub fn read_state(dir: &Path) -> Result<Option<SavedState>, ResumeError> {
    let path = dir.join("state.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_err(&path, e)),
    };
    let s: SavedState = serde_json::from_str(&text).map_err(|e| file_err(&path, e))?;
    if s.format != FORMAT {
        return Err(file_err(
            &path,
            format!("format `{}`, expected `{FORMAT}`", s.format),
        ));
    }
    Ok(Some(s))
}

/// What identifies a training: its model, algorithm, settings, environments and length.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    /// The model.
    pub spec: &'a AgentSpec,
    /// `ppo`, `a2c` or `sac`.
    pub algo: &'a str,
    /// The settings' debug form.
    pub settings: String,
    /// Environments.
    pub envs: usize,
    /// Decisions planned.
    pub total_steps: usize,
}

impl Identity<'_> {
    fn spec_json(&self) -> Result<serde_json::Value, String> {
        serde_json::to_value(self.spec).map_err(|e| e.to_string())
    }

    /// Why `s` is not this training's state, if it is not.
    fn differs(&self, s: &SavedState) -> Option<String> {
        if s.algo != self.algo {
            return Some(format!("it trains {}, this {}", s.algo, self.algo));
        }
        if s.envs != self.envs {
            return Some(format!("{} environments, this {}", s.envs, self.envs));
        }
        if s.total_steps != self.total_steps {
            return Some(format!(
                "{} decisions planned, this {} (give the same --steps)",
                s.total_steps, self.total_steps
            ));
        }
        match self.spec_json() {
            Ok(v) if v != s.spec => {
                return Some(
                    "another model (encoder, sizes, services, node types or action rules)".into(),
                )
            }
            Err(e) => return Some(e),
            _ => {}
        }
        (s.settings != self.settings).then(|| {
            format!(
                "other settings: saved {}, now {}",
                s.settings, self.settings
            )
        })
    }
}

/// What a training's state holds besides `state.json`, each under a name: its variable stores
/// (`<name>/<variable>`), its optimisers' moments (`<name>/m/<variable>`, `<name>/v/<variable>`)
/// and other tensors, named in full (a replay buffer's `buffer/…`). PPO and A2C save one store,
/// `model`, and one optimiser, `opt`; SAC the actor (`model`), the critics, their targets, the
/// temperature, three optimisers and its replay buffer.
#[derive(Debug, Default)]
pub struct Parts<'a> {
    /// Variable stores by name; the first is the model.
    pub stores: Vec<(&'a str, &'a VarStore)>,
    /// Optimisers by name; the first's steps are [`SavedState::optimizer_steps`], the others'
    /// [`SavedState::other_optimizer_steps`].
    pub optims: Vec<(&'a str, &'a Stateful)>,
    /// Other tensors, by full name.
    pub tensors: Vec<(String, Tensor)>,
}

/// Writes the state after update `s.iteration` into `dir`: the weights and moments, then
/// `state.json`, then removes older weights files.
pub fn save(
    dir: &Path,
    vs: &VarStore,
    opt: &Stateful,
    id: &Identity<'_>,
    s: SavedState,
) -> Result<SavedState, ResumeError> {
    let parts = Parts {
        stores: vec![("model", vs)],
        optims: vec![("opt", opt)],
        tensors: vec![],
    };
    save_parts(dir, parts, id, s)
}

/// [`save`] of any [`Parts`].
pub fn save_parts(
    dir: &Path,
    parts: Parts<'_>,
    id: &Identity<'_>,
    mut s: SavedState,
) -> Result<SavedState, ResumeError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut named: Vec<(String, Tensor)> = vec![];
    for (name, vs) in &parts.stores {
        named.extend(
            vs.variables()
                .into_iter()
                .map(|(k, t)| (format!("{name}/{k}"), t.detach().copy())),
        );
    }
    s.other_optimizer_steps.clear();
    for (i, (name, opt)) in parts.optims.iter().enumerate() {
        let (moments, steps) = opt.state();
        named.extend(moments.into_iter().map(|(k, t)| (format!("{name}/{k}"), t)));
        if i == 0 {
            s.optimizer_steps = steps;
        } else {
            s.other_optimizer_steps.insert((*name).to_owned(), steps);
        }
    }
    named.extend(parts.tensors);
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let weights = format!("state-{:06}.safetensors", s.iteration);
    let path = dir.join(&weights);
    let tmp = dir.join(format!("state-{:06}.tmp.safetensors", s.iteration));
    Tensor::write_safetensors(&named, &tmp).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| file_err(&path, e))?;
    s.format = FORMAT.into();
    s.spec = id.spec_json().map_err(|e| file_err(&path, e))?;
    s.settings = id.settings.clone();
    s.algo = id.algo.into();
    s.envs = id.envs;
    s.total_steps = id.total_steps;
    s.sha256 = crate::checkpoint::sha256_of(&path).map_err(|e| file_err(&path, e))?;
    s.weights = weights;
    let json = dir.join("state.json");
    let json_tmp = dir.join("state.tmp.json");
    let text = serde_json::to_string_pretty(&s).map_err(|e| file_err(&json, e))?;
    std::fs::write(&json_tmp, text + "\n").map_err(|e| file_err(&json_tmp, e))?;
    std::fs::rename(&json_tmp, &json).map_err(|e| file_err(&json, e))?;
    // Older weights are no longer named by state.json.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("state-") && name.ends_with(".safetensors") && name != s.weights {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(s)
}

/// Loads the state in `dir` into `vs` and `opt`, after checking that it is `id`'s: every
/// parameter and moment present with its shape, and the weights' SHA-256 the one saved.
pub fn load(
    dir: &Path,
    vs: &mut VarStore,
    opt: &mut Stateful,
    id: &Identity<'_>,
) -> Result<SavedState, ResumeError> {
    load_parts(dir, &[("model", vs)], &mut [("opt", opt)], &[], id).map(|(s, _)| s)
}

/// [`load`] of any parts: the stores and optimisers by the names they were saved under, and
/// the other tensors whose names begin with one of `prefixes` (returned by full name). A tensor
/// of no part, or a part's tensor missing or of another shape, is an error naming it.
pub fn load_parts(
    dir: &Path,
    stores: &[(&str, &VarStore)],
    optims: &mut [(&str, &mut Stateful)],
    prefixes: &[&str],
    id: &Identity<'_>,
) -> Result<(SavedState, HashMap<String, Tensor>), ResumeError> {
    let s = read_state(dir)?.ok_or_else(|| ResumeError::Missing {
        dir: dir.to_path_buf(),
    })?;
    if let Some(what) = id.differs(&s) {
        return Err(ResumeError::Mismatch {
            dir: dir.to_path_buf(),
            what,
        });
    }
    let path = dir.join(&s.weights);
    let sha = crate::checkpoint::sha256_of(&path).map_err(|e| file_err(&path, e))?;
    if sha != s.sha256 {
        return Err(file_err(
            &path,
            format!("SHA-256 {sha}, state.json says {}", s.sha256),
        ));
    }
    let mut named: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .map_err(|e| file_err(&path, e))?
        .into_iter()
        .collect();
    tch::no_grad(|| -> Result<(), ResumeError> {
        for (name, vs) in stores {
            for (k, mut t) in vs.variables() {
                let key = format!("{name}/{k}");
                let saved = named
                    .remove(&key)
                    .ok_or_else(|| file_err(&path, format!("no `{key}`")))?;
                if saved.size() != t.size() {
                    return Err(file_err(
                        &path,
                        format!(
                            "`{key}` has shape {:?}, the model {:?}",
                            saved.size(),
                            t.size()
                        ),
                    ));
                }
                t.copy_(&saved);
            }
        }
        Ok(())
    })?;
    for (i, (name, opt)) in optims.iter_mut().enumerate() {
        let head = format!("{name}/");
        let keys: Vec<String> = named
            .keys()
            .filter(|k| {
                k.starts_with(&head)
                    && (k[head.len()..].starts_with("m/") || k[head.len()..].starts_with("v/"))
            })
            .cloned()
            .collect();
        let mut moments = HashMap::new();
        for k in keys {
            if let Some(t) = named.remove(&k) {
                moments.insert(k[head.len()..].to_owned(), t);
            }
        }
        let steps = if i == 0 {
            s.optimizer_steps
        } else {
            *s.other_optimizer_steps.get(*name).ok_or_else(|| {
                file_err(
                    &dir.join("state.json"),
                    format!("no step count of `{name}`"),
                )
            })?
        };
        opt.restore(&moments, steps)
            .map_err(|e| file_err(&path, format!("`{name}`: {e}")))?;
    }
    let (extra, unknown): (HashMap<String, Tensor>, HashMap<String, Tensor>) = named
        .into_iter()
        .partition(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)));
    if let Some(k) = unknown.keys().min() {
        return Err(file_err(
            &path,
            format!(
                "`{k}` belongs to no part of this training ({} such tensors)",
                unknown.len()
            ),
        ));
    }
    Ok((s, extra))
}
