//! `graphscaler probe URL`: a GET of a stage's `/healthz` or `/readyz`, for container
//! healthchecks where the image has no HTTP client (compose). Exit status 0 on a 2xx answer;
//! otherwise an error naming the status and the stage's reason (or why nothing answered).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long a probe waits for the connection and the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `url` (`http://host:port/path`): the body on a 2xx answer, else an error.
pub fn probe(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("probe speaks plain http to a local listener: `{url}` is not an http:// URL");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("probe {url}: `{authority}` is not host:port"))?
        .next()
        .with_context(|| format!("probe {url}: `{authority}` resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("probe {url}: nothing answers at {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("probe {url}: reading the answer"))?;
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("probe {url}: not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    if (200..300).contains(&status) {
        Ok(body.to_string())
    } else {
        bail!("probe {url}: {status}: {body}")
    }
}
