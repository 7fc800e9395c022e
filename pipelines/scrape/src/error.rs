//! Parse errors: each names the target and the place that was wrong.

/// What was wrong with a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or truncated.
    #[error("{target}: malformed JSON: {message}")]
    Json {
        /// The target (`kiali graph`, `prometheus query`, …).
        target: &'static str,
        /// serde's message, with line and column.
        message: String,
    },
    /// JSON of the wrong shape.
    #[error("{target}: field `{path}`: {message}")]
    Field {
        /// The target.
        target: &'static str,
        /// JSON path of the field.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The server answered with an error status in the body.
    #[error("{target}: the server reported {error_type}: {message}")]
    Remote {
        /// The target.
        target: &'static str,
        /// Its error type.
        error_type: String,
        /// Its message.
        message: String,
    },
}

impl ParseError {
    pub(crate) fn json(target: &'static str, e: serde_json::Error) -> Self {
        ParseError::Json {
            target,
            message: e.to_string(),
        }
    }
    pub(crate) fn field(
        target: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ParseError::Field {
            target,
            path: path.into(),
            message: message.into(),
        }
    }
}
