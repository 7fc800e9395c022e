//! Checkpoints: the parameters as `.safetensors` and a JSON manifest beside them — what was
//! trained (algorithm, encoder, sizes), on what (topology, feature schema version), and every
//! parameter's shape — so that loading checks the model before trusting the numbers.
//!
//! `save(path)` writes `path.safetensors` and `path.json`, each to a temporary file renamed into
//! place (a crash mid-write leaves the previous checkpoint whole), with the weights' SHA-256 in
//! the manifest; `load` refuses, with the reason, a missing file, an unreadable manifest, another
//! feature schema, another topology, any parameter whose name or shape differs from the model it
//! is loaded into, weights whose SHA-256 is not the manifest's (a damaged or changed file), and
//! weights that are not all finite (naming the parameter).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

/// Version of the manifest format.
pub const FORMAT: u32 = 1;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// `ppo`, `a2c`, `sac`.
    pub algo: String,
    /// `gat`, `gcn`, `dysat`, `tgat`, `mlp`.
    pub encoder: String,
    /// The feature schema the model reads ([`graphscaler_schemas::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The topology it was trained on (its name; `*` for any).
    pub topology: String,
    /// The settings that shape the model (sizes, heads, layers), by name.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Every parameter's shape, by name.
    pub params: BTreeMap<String, Vec<i64>>,
    /// The SHA-256 of the `.safetensors` file, in hex (absent in manifests written before
    /// checksums: such a checkpoint loads with a warning, its weights still checked finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The command that produced it.
    pub produced_by: String,
    /// How it picks its action when served with `learn.act = "checkpoint"`: `mode` or
    /// `sample`, the rule chosen with the checkpoint on validation seeds (scripts/select.py);
    /// absent: `mode`. Not covered by `sha256`, which is the weights'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
}

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file is missing or unreadable.
    #[error("checkpoint {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// The manifest does not parse or is of another format.
    #[error("checkpoint manifest {path}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint does not fit the model or the cluster it is meant for.
    #[error("checkpoint {path} does not fit: {message}")]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

fn files(path: &Path) -> (PathBuf, PathBuf) {
    (file(path, "safetensors"), file(path, "json"))
}

/// The checkpoint `path`'s file with extension `ext`: `path.ext`, where `path` names the
/// checkpoint without an extension — a dot in the name stays (`runs/lr3e-4.v2` →
/// `runs/lr3e-4.v2.json`) — or with one of its own files' extensions (`.safetensors`, `.json`,
/// `.csv`), which is replaced.
pub fn file(path: &Path, ext: &str) -> PathBuf {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors" | "json" | "csv") => path.with_extension(ext),
        _ => {
            let mut s = path.as_os_str().to_os_string();
            s.push(".");
            s.push(ext);
            PathBuf::from(s)
        }
    }
}

/// The SHA-256 of the file at `path`, in hex.
pub fn sha256_of(path: &Path) -> Result<String, CheckpointError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Where `final_path` is written before it is renamed into place: `.tmp` before its extension
/// (`agent.tmp.safetensors`), which keeps the extension that picks the weights' format.
fn temporary(final_path: &Path) -> PathBuf {
    let stem = final_path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = final_path.extension().unwrap_or_default().to_string_lossy();
    final_path.with_file_name(format!("{stem}.tmp.{ext}"))
}

fn rename(from: &Path, to: &Path) -> Result<(), CheckpointError> {
    std::fs::rename(from, to).map_err(|e| CheckpointError::Io {
        path: to.to_path_buf(),
        message: format!("renaming {} into place: {e}", from.display()),
    })
}

/// The shapes of `vs`'s parameters, by name.
pub fn shapes(vs: &VarStore) -> BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect()
}

/// Writes `path.safetensors` and `path.json` (`manifest.params` is filled from `vs`).
pub fn save(
    path: &Path,
    vs: &VarStore,
    mut manifest: Manifest,
) -> Result<Manifest, CheckpointError> {
    let (weights, json) = files(path);
    if let Some(dir) = weights.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| CheckpointError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    manifest.format = FORMAT;
    manifest.params = shapes(vs);
    // The weights first, then the manifest that vouches for them; each whole or not at all.
    let weights_tmp = temporary(&weights);
    vs.save(&weights_tmp).map_err(|e| CheckpointError::Io {
        path: weights_tmp.clone(),
        message: e.to_string(),
    })?;
    manifest.sha256 = Some(sha256_of(&weights_tmp)?);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| CheckpointError::Manifest {
        path: json.clone(),
        message: e.to_string(),
    })?;
    let json_tmp = temporary(&json);
    std::fs::write(&json_tmp, text + "\n").map_err(|e| CheckpointError::Io {
        path: json_tmp.clone(),
        message: e.to_string(),
    })?;
    rename(&weights_tmp, &weights)?;
    rename(&json_tmp, &json)?;
    Ok(manifest)
}

/// Reads a manifest.
pub fn manifest(path: &Path) -> Result<Manifest, CheckpointError> {
    let (_, json) = files(path);
    let text = std::fs::read_to_string(&json).map_err(|e| CheckpointError::Io {
        path: json.clone(),
        message: e.to_string(),
    })?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| CheckpointError::Manifest {
        path: json.clone(),
        message: e.to_string(),
    })?;
    if m.format != FORMAT {
        return Err(CheckpointError::Manifest {
            path: json,
            message: format!("format {} (this build reads {FORMAT})", m.format),
        });
    }
    if let Some(act) = m
        .act
        .as_deref()
        .filter(|a| !matches!(*a, "mode" | "sample"))
    {
        return Err(CheckpointError::Manifest {
            path: json,
            message: format!("act must be \"mode\" or \"sample\", got \"{act}\""),
        });
    }
    Ok(m)
}

/// Loads `path` into `vs` after checking that it was trained on `topology` (unless either side
/// is `*`), reads this build's feature schema, and has exactly `vs`'s parameters and shapes.
pub fn load(path: &Path, vs: &mut VarStore, topology: &str) -> Result<Manifest, CheckpointError> {
    let m = manifest(path)?;
    let mismatch = |message: String| CheckpointError::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    if m.schema_version != graphscaler_schemas::SCHEMA_VERSION {
        return Err(mismatch(format!(
            "trained on feature schema v{}, this build produces v{}",
            m.schema_version,
            graphscaler_schemas::SCHEMA_VERSION
        )));
    }
    if m.topology != topology && m.topology != "*" && topology != "*" {
        return Err(mismatch(format!(
            "trained on topology `{}`, not `{topology}`",
            m.topology
        )));
    }
    let want = shapes(vs);
    for (name, shape) in &want {
        match m.params.get(name) {
            None => {
                return Err(mismatch(format!(
                    "no parameter `{name}` (the model has one of shape {shape:?})"
                )))
            }
            Some(s) if s != shape => {
                return Err(mismatch(format!(
                    "parameter `{name}` has shape {s:?}, the model's is {shape:?}"
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = m.params.keys().find(|k| !want.contains_key(*k)) {
        return Err(mismatch(format!("parameter `{extra}` is not in the model")));
    }
    let (weights, _) = files(path);
    if !weights.is_file() {
        return Err(CheckpointError::Io {
            path: weights,
            message: "no such file".into(),
        });
    }
    let sha = sha256_of(&weights)?;
    match &m.sha256 {
        Some(want) if *want != sha => {
            let file = weights.display();
            return Err(mismatch(format!(
                "the weights' SHA-256 is {sha}, the manifest says {want}: \
                 {file} was changed or damaged"
            )));
        }
        Some(_) => {}
        None => tracing::warn!(
            checkpoint = %path.display(),
            "the manifest has no sha256 (written before checksums): the weights cannot be checked against it"
        ),
    }
    vs.load(&weights).map_err(|e| CheckpointError::Io {
        path: weights.clone(),
        message: e.to_string(),
    })?;
    let mut vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        let finite = t.isfinite().all().int64_value(&[]) == 1;
        if !finite {
            return Err(mismatch(format!(
                "parameter `{name}` holds a NaN or an infinite weight"
            )));
        }
    }
    Ok(m)
}
