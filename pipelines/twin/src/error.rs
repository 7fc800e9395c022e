//! The twin's errors. Every variant names the file, field or line that was wrong.

use std::path::PathBuf;

/// What went wrong while building or driving the twin.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The topology file is not valid JSON or lacks a field.
    #[error("topology {path}: {message}")]
    TopologyParse {
        /// The file.
        path: String,
        /// What is wrong, with the line and column serde reports.
        message: String,
    },
    /// The topology parses but is inconsistent.
    #[error("topology {path}: field `{field}`: {message}")]
    Topology {
        /// The file (or `<inline>`).
        path: String,
        /// The offending field, as a JSON path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A load trace has a bad line.
    #[error("trace {path}, line {line}: {message}")]
    Trace {
        /// The file.
        path: String,
        /// 1-based line number (the header is line 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The twin configuration is invalid; all problems are listed.
    #[error("twin configuration is invalid:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// An unknown scenario name.
    #[error(
        "unknown scenario `{0}`; expected off-peak, peak, rush, fluctuating, burst or trace:<file.csv>"
    )]
    Scenario(String),
}

impl TwinError {
    /// Whether retrying the same call could succeed (never, for the twin: its errors are the
    /// user's input).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TwinError::Io { .. })
    }
}

/// The twin's result type.
pub type Result<T, E = TwinError> = std::result::Result<T, E>;
