//! A campaign's finished runs, kept as they finish (`runs.journal` in the output directory), so
//! that an evaluation stopped by a time limit, a signal or the end of a session goes on where it
//! stopped instead of starting over: `graphscaler eval --resume` with the same arguments and
//! settings skips the runs the journal holds and runs the others (without `--resume` a campaign
//! starts a new journal).
//!
//! **Format**: length-prefixed bincode records (NaN metrics such as the lag of a run without
//! shortfalls survive, which JSON would turn into `null`): first a [`Header`] naming the format
//! and what the campaign is (its policies, scenarios, replays, length, first seed, and the
//! evaluation's settings down to the topology and the learned checkpoints' bytes), then one
//! [`RunResult`] per finished run. A record is written whole and flushed before the next run is
//! reported; a record cut short by a kill is dropped on reading (that run is run again).
//!
//! **What is refused** (with `--resume`): a journal of another campaign (its header differs: the
//! error names which parts) or of another format; a record that does not decode (not a cut-short
//! tail). Neither is overwritten: the error says to run without `--resume` (a new journal) or to
//! give another `--out`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::runner::RunResult;

/// The journal format this build writes and reads.
pub const FORMAT: &str = "graphscaler-eval-journal/1";

/// The file name of a campaign's journal in its output directory.
pub const FILE: &str = "runs.journal";

/// What a campaign is: every part that changes its results, as text, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// (part, its value): compared part by part.
    pub parts: Vec<(String, String)>,
}

impl Header {
    /// A header of `parts`.
    pub fn new(parts: Vec<(String, String)>) -> Self {
        Self {
            format: FORMAT.into(),
            parts,
        }
    }

    /// The names of the parts in which `self` and `other` differ.
    fn differences(&self, other: &Header) -> Vec<String> {
        let mut names: Vec<String> = vec![];
        for (k, v) in &self.parts {
            if other.parts.iter().find(|(o, _)| o == k).map(|(_, w)| w) != Some(v) {
                names.push(k.clone());
            }
        }
        for (k, _) in &other.parts {
            if !self.parts.iter().any(|(o, _)| o == k) {
                names.push(k.clone());
            }
        }
        names
    }
}

/// Which run a result is: (policy, scenario, replay, seed).
pub type RunKey = (String, String, usize, u64);

/// The key of `r`.
pub fn key_of(r: &RunResult) -> RunKey {
    (r.policy.clone(), r.scenario.clone(), r.replay, r.seed)
}

/// An open journal: the runs it held when opened, and the file new ones go to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    done: HashMap<RunKey, RunResult>,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> EvalError {
    EvalError::Journal {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads one record: `Ok(None)` at the end of the file or at a record cut short.
fn read_record(bytes: &[u8], at: &mut usize) -> Option<Vec<u8>> {
    let len = u64::from_le_bytes(bytes.get(*at..*at + 8)?.try_into().ok()?) as usize;
    let body = bytes.get(*at + 8..(*at + 8).checked_add(len)?)?;
    *at += 8 + len;
    Some(body.to_vec())
}

fn write_record(file: &mut File, body: &[u8]) -> std::io::Result<()> {
    let mut buf = (body.len() as u64).to_le_bytes().to_vec();
    buf.extend_from_slice(body);
    file.write_all(&buf)?;
    file.sync_data()
}

impl Journal {
    /// Starts a journal at `path` for the campaign `header` (`resume` false: one already there
    /// is replaced), or opens the one there (`resume`; none there: a new one): the runs it holds
    /// are [`Journal::take`]n instead of run again. A cut-short last record is cut off the file.
    pub fn open(path: &Path, header: &Header, resume: bool) -> Result<Self> {
        let mut done = HashMap::new();
        let mut bytes = vec![];
        match File::open(path) {
            Ok(_) if !resume => {}
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(|e| bad(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad(path, e)),
        }
        let mut good = 0;
        if !bytes.is_empty() {
            let mut at = 0;
            let found: Header = read_record(&bytes, &mut at)
                .and_then(|b| bincode::deserialize(&b).ok())
                .ok_or_else(|| bad(path, format!("not a journal of this build ({FORMAT})")))?;
            if found.format != FORMAT {
                return Err(bad(
                    path,
                    format!("format `{}`, this build reads {FORMAT}", found.format),
                ));
            }
            let differ = header.differences(&found);
            if !differ.is_empty() {
                return Err(bad(
                    path,
                    format!(
                        "it holds the runs of another campaign (different {}): run without --resume to start a new one, or give another --out",
                        differ.join(", ")
                    ),
                ));
            }
            good = at;
            let mut n = 0;
            while let Some(b) = read_record(&bytes, &mut at) {
                n += 1;
                let r: RunResult = bincode::deserialize(&b)
                    .map_err(|e| bad(path, format!("record {n} does not decode: {e}")))?;
                done.insert(key_of(&r), r);
                good = at;
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| bad(path, e))?;
        // Whatever follows the last whole record (a record cut short by a kill) goes.
        file.set_len(good as u64).map_err(|e| bad(path, e))?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| bad(path, e))?;
        if good == 0 {
            let h = bincode::serialize(header).map_err(|e| bad(path, e))?;
            write_record(&mut file, &h).map_err(|e| bad(path, e))?;
        }
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            done,
        })
    }

    /// How many finished runs it held when opened.
    pub fn held(&self) -> usize {
        self.done.len()
    }

    /// The held result of run `key`, if the journal has it.
    pub fn take(&self, key: &RunKey) -> Option<RunResult> {
        self.done.get(key).cloned()
    }

    /// Appends `r`, whole and synced, before it is reported.
    pub fn record(&self, r: &RunResult) -> Result<()> {
        let body = bincode::serialize(r).map_err(|e| bad(&self.path, e))?;
        let mut f = self
            .file
            .lock()
            .map_err(|_| EvalError::Internal("the journal's lock is poisoned".into()))?;
        write_record(&mut f, &body).map_err(|e| bad(&self.path, e))
    }
}
