//! One HTTP target: its client (timeout, bearer token, CA) and one scrape — GET, check the
//! status, parse with one pure parse function.
//!
//! A failure (connection refused, timeout, HTTP error status, a body the parser rejects) is a
//! [`ScrapeError`] naming the target; nothing is passed on from a failed scrape, so no action can
//! follow from it. The one scrape loop is the scrape stage's ([`crate::stage::scrape`]), which
//! counts failures and logs them once per streak.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use crate::{ParseError, Parsed};

/// How to reach a target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// A name for logs and counters (`kiali`, `prometheus`, …).
    pub name: String,
    /// The URL to GET.
    pub url: String,
    /// Limit on one scrape.
    pub timeout: Duration,
    /// A bearer token (an in-cluster service account token, for example).
    pub bearer_token: Option<String>,
    /// A PEM CA bundle to trust besides the system's (the cluster CA, for example).
    pub ca_cert: Option<PathBuf>,
}

impl TargetConfig {
    /// A target with a 10 s timeout, no token and the system's CAs.
    pub fn new(name: &str, url: &str) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            timeout: Duration::from_secs(10),
            bearer_token: None,
            ca_cert: None,
        }
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Building the client (a bad CA file or token).
    #[error("{target}: {message}")]
    Client {
        /// Target name.
        target: String,
        /// What is wrong.
        message: String,
    },
    /// The request failed or timed out.
    #[error("{target}: request failed: {source}")]
    Request {
        /// Target name.
        target: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// An HTTP error status.
    #[error("{target}: HTTP {status}")]
    Status {
        /// Target name.
        target: String,
        /// The status.
        status: u16,
    },
    /// The body did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// An HTTP client for `cfg`: its timeout, bearer token and CA.
pub fn client(cfg: &TargetConfig) -> Result<reqwest::Client, ScrapeError> {
    let bad = |message: String| ScrapeError::Client {
        target: cfg.name.clone(),
        message,
    };
    let mut headers = HeaderMap::new();
    if let Some(t) = &cfg.bearer_token {
        let v = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
            .map_err(|_| bad("the bearer token is not a valid header value".into()))?;
        headers.insert(AUTHORIZATION, v);
    }
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .default_headers(headers);
    if let Some(path) = &cfg.ca_cert {
        let pem =
            std::fs::read(path).map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| bad(e.to_string()))
}

/// One scrape: GET, check the status, parse.
pub async fn scrape_once<T>(
    client: &reqwest::Client,
    cfg: &TargetConfig,
    parse: &impl Fn(&[u8]) -> Result<Parsed<T>, ParseError>,
) -> Result<Parsed<T>, ScrapeError> {
    let resp = client
        .get(&cfg.url)
        .send()
        .await
        .map_err(|source| ScrapeError::Request {
            target: cfg.name.clone(),
            source,
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(ScrapeError::Status {
            target: cfg.name.clone(),
            status: status.as_u16(),
        });
    }
    let body = resp.bytes().await.map_err(|source| ScrapeError::Request {
        target: cfg.name.clone(),
        source,
    })?;
    Ok(parse(&body)?)
}
