//! The scrape loop: one generic loop per target — interval, timeout, backoff, shutdown — around
//! one pure parse function.
//!
//! A failure (connection refused, timeout, HTTP error status, a body the parser rejects) is
//! counted every time and logged once per streak (a warning when it starts, a note when the
//! target recovers); nothing is passed on from a failed scrape, so no action can follow from it.
//! After `n` consecutive failures the next attempt waits `min(backoff_max, interval · 2ⁿ)`.

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
    /// Time between scrapes.
    pub interval: Duration,
    /// Limit on one scrape.
    pub timeout: Duration,
    /// Longest wait after failures.
    pub backoff_max: Duration,
    /// A bearer token (an in-cluster service account token, for example).
    pub bearer_token: Option<String>,
    /// A PEM CA bundle to trust besides the system's (the cluster CA, for example).
    pub ca_cert: Option<PathBuf>,
}

impl TargetConfig {
    /// A target with a 15 s interval, a 10 s timeout and a 5-minute backoff cap.
    pub fn new(name: &str, url: &str) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            bearer_token: None,
            ca_cert: None,
        }
    }

    /// The wait before the next attempt after `failures` consecutive failures.
    pub fn next_wait(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        let factor = 2u32.saturating_pow(failures.min(16));
        self.interval
            .saturating_mul(factor)
            .min(self.backoff_max.max(self.interval))
    }
}

/// What a target's loop did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeStats {
    /// Successful scrapes.
    pub ok: u64,
    /// Failed scrapes.
    pub failures: u64,
    /// Items parsed and passed on.
    pub items: u64,
    /// Items the parser rejected (NaN samples, unreadable edges, …).
    pub rejected: u64,
    /// Failures in the current streak.
    pub consecutive_failures: u32,
    /// The last failure, in words.
    pub last_error: Option<String>,
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

/// Scrapes `cfg` until `shutdown` turns true, passing every successful scrape's items to `sink`.
pub async fn run<T>(
    cfg: TargetConfig,
    parse: impl Fn(&[u8]) -> Result<Parsed<T>, ParseError>,
    mut sink: impl FnMut(Vec<T>),
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<ScrapeStats, ScrapeError> {
    let client = client(&cfg)?;
    let mut stats = ScrapeStats::default();
    loop {
        if *shutdown.borrow() {
            return Ok(stats);
        }
        match scrape_once(&client, &cfg, &parse).await {
            Ok(p) => {
                if stats.consecutive_failures > 0 {
                    tracing::info!(target = %cfg.name, after = stats.consecutive_failures, "scrape target recovered");
                }
                stats.ok += 1;
                stats.consecutive_failures = 0;
                stats.items += p.items.len() as u64;
                stats.rejected += p.rejected.len() as u64;
                for r in p.rejected.iter().take(1) {
                    tracing::debug!(target = %cfg.name, rejected = %r, count = p.rejected.len(), "items rejected");
                }
                sink(p.items);
            }
            Err(e) => {
                if stats.consecutive_failures == 0 {
                    tracing::warn!(target = %cfg.name, error = %e, "scrape failing; retrying with backoff");
                }
                stats.failures += 1;
                stats.consecutive_failures += 1;
                stats.last_error = Some(e.to_string());
            }
        }
        let wait = cfg.next_wait(stats.consecutive_failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}
