//! A durable snapshot store: a directory of rolling Parquet files (`part-000000.parquet`, …),
//! appended as each window closes. The open file is rewritten whole after every window (written
//! beside it and renamed over it), so a crash loses at most the window still open; a file holds
//! `per_file` windows and then the next begins. Opening a directory that holds files continues
//! their sequence: nothing is ever overwritten.
//!
//! Beside each snapshot the recorder keeps the decision taken on it ([`Recorder::decided`]) and
//! the reward of the next window (`reward_of_snapshot` of the next snapshot, with the run's
//! [`RewardConfig`]): a store is a file of transitions, which `graphscaler train --from` reads.

use std::path::{Path, PathBuf};

use graphscaler_learn_config::reward::{reward_of_snapshot, RewardConfig};
use graphscaler_schemas::{Action, Snapshot};

use crate::store::{
    tmp_path, write_transitions, RecordedDecision, RecordedReward, StoreError, Transition,
};

/// Windows per file unless told otherwise: an hour of 30 s windows.
pub const DEFAULT_PER_FILE: usize = 120;

/// What a recorder wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Snapshots stored.
    pub windows: u64,
    /// Files begun.
    pub files: u64,
    /// Snapshots whose successor carried no reward (its data missing): stored without one.
    pub unrewarded: u64,
    /// Decisions for a snapshot no longer in the open file (or never stored): not recorded.
    pub late_decisions: u64,
}

/// Appends transitions to a store directory.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    seq: u64,
    per_file: usize,
    reward: RewardConfig,
    rows: Vec<Transition>,
    /// The file closed last, kept until the next closes: a decision that comes after its
    /// snapshot's file closed is still recorded.
    closed: Vec<Transition>,
    stats: RecorderStats,
    unrewarded_streak: bool,
}

/// `part-NNNNNN.parquet`'s number, if `name` is one.
fn part_number(name: &str) -> Option<u64> {
    name.strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

impl Recorder {
    /// Opens (creating it) the store `dir`; the first file written is the one after the last
    /// there. Unfinished writes of a run that crashed (`.tmp`) are removed, with a warning.
    pub fn open(dir: &Path, per_file: usize, reward: RewardConfig) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut next = 0;
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = part_number(&name) {
                next = next.max(n + 1);
            } else if name.starts_with("part-") && name.ends_with(".tmp") {
                tracing::warn!(file = %e.path().display(), "removing an unfinished write of an earlier run");
                std::fs::remove_file(e.path()).map_err(io)?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            seq: next,
            per_file: per_file.max(1),
            reward,
            rows: vec![],
            closed: vec![],
            stats: RecorderStats::default(),
            unrewarded_streak: false,
        })
    }

    /// The file the open windows go to.
    pub fn file(&self) -> PathBuf {
        self.part(self.seq)
    }

    fn part(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("part-{seq:06}.parquet"))
    }

    /// What was written so far.
    pub fn stats(&self) -> RecorderStats {
        self.stats
    }

    fn persist(&self) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        write_transitions(&self.file(), &self.rows)
    }

    /// Stores the snapshot of a window that closed; it is the reward of the one before.
    pub fn push(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        if let Some(prev) = self.rows.last_mut() {
            match reward_of_snapshot(&snap, &self.reward) {
                Ok(r) => {
                    prev.reward = Some(RecordedReward {
                        value: r.value,
                        terms: [r.slo_vio, r.slack, r.overshoot, r.replica_lag].map(|x| x as f32),
                    });
                    self.unrewarded_streak = false;
                }
                Err(e) => {
                    self.stats.unrewarded += 1;
                    if !self.unrewarded_streak {
                        tracing::warn!(error = %e, "stored without a reward (warned once until a reward comes back)");
                        self.unrewarded_streak = true;
                    }
                }
            }
            if self.rows.len() >= self.per_file {
                self.persist()?;
                self.closed = std::mem::take(&mut self.rows);
                self.seq += 1;
            }
        }
        if self.rows.is_empty() {
            self.stats.files += 1;
        }
        self.rows.push(Transition::plain(snap));
        self.stats.windows += 1;
        self.persist()
    }

    /// Records that the policy `by` decided `actions` on the snapshot of `time_s` (called once
    /// with every action, or once per action as the action topic delivers them; an empty list
    /// records a decision to do nothing). `false`: that snapshot is not in the open file (a
    /// late decision, counted, not recorded).
    pub fn decided(
        &mut self,
        time_s: f64,
        by: &str,
        actions: Vec<Action>,
    ) -> Result<bool, StoreError> {
        let find = |rows: &[Transition]| rows.iter().rposition(|r| r.snapshot.time_s == time_s);
        let (open, i) = if let Some(i) = find(&self.rows) {
            (true, i)
        } else if let Some(i) = find(&self.closed) {
            (false, i)
        } else {
            self.stats.late_decisions += 1;
            return Ok(false);
        };
        let row = if open {
            &mut self.rows[i]
        } else {
            &mut self.closed[i]
        };
        match &mut row.decision {
            Some(d) if d.by == by => d.actions.extend(actions),
            d => {
                *d = Some(RecordedDecision {
                    by: by.to_string(),
                    actions,
                })
            }
        }
        if open {
            self.persist()?;
        } else {
            write_transitions(&self.part(self.seq - 1), &self.closed)?;
        }
        Ok(true)
    }

    /// Writes what is open (the last snapshot stays without a reward) and says what was written.
    pub fn finish(self) -> Result<RecorderStats, StoreError> {
        self.persist()?;
        debug_assert!(!tmp_path(&self.file()).exists());
        Ok(self.stats)
    }
}
