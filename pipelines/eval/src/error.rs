//! The evaluation harness's errors.

use std::path::PathBuf;

/// What went wrong in an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The twin refused its input.
    #[error(transparent)]
    Twin(#[from] graphscaler_twin::TwinError),
    /// A policy that could not be named or built (a learned policy's checkpoint, for example).
    #[error(transparent)]
    Policy(#[from] graphscaler_policy::PolicyError),
    /// The graph job of the served loop failed.
    #[error(transparent)]
    Graph(#[from] graphscaler_graph::GraphError),
    /// Writing a result file failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// A campaign's journal that cannot be read or written, or is another campaign's.
    #[error("journal {path}: {message}")]
    Journal {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EvalError {
    pub(crate) fn write(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        EvalError::Write {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}

/// The harness's result type.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
