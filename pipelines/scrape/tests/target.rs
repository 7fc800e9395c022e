//! One scrape against a local server that answers well, with errors, slowly, with garbage, or
//! not at all: each failure is an error naming the target and what went wrong, nothing from a
//! failed scrape is passed on, and a target that recovers is read again. (The scrape stage's
//! loop, which counts these, is tested in `pipelines/pipeline/tests`.)

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use graphscaler_scrape::parse::kiali;
use graphscaler_scrape::target::{client, scrape_once, TargetConfig};

fn graph() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/kiali/test_workload_graph.json"),
    )
    .unwrap()
}

async fn server() -> String {
    let flaky = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/graph",
            get(|h: HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer secret") {
                    return (StatusCode::UNAUTHORIZED, Vec::new());
                }
                (StatusCode::OK, graph())
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                (StatusCode::OK, graph())
            }),
        )
        .route(
            "/garbage",
            get(|| async { (StatusCode::OK, "{\"elements\": {\"nodes\": [") }),
        )
        .route(
            "/flaky",
            get(move || {
                let n = flaky.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        (StatusCode::SERVICE_UNAVAILABLE, Vec::new())
                    } else {
                        (StatusCode::OK, graph())
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Scrapes `url` `n` times, 40 ms apart: the items of each success, or the error of each failure.
async fn scrape_n(url: String, token: Option<&str>, n: usize) -> Vec<Result<usize, String>> {
    let mut cfg = TargetConfig::new("kiali", &url);
    cfg.timeout = Duration::from_millis(300);
    cfg.bearer_token = token.map(Into::into);
    let http = client(&cfg).unwrap();
    let mut out = vec![];
    for _ in 0..n {
        out.push(
            scrape_once(&http, &cfg, &kiali::parse)
                .await
                .map(|p| {
                    assert_eq!(
                        p.rejected.len(),
                        4,
                        "the four items every read of this graph rejects"
                    );
                    p.items.len()
                })
                .map_err(|e| e.to_string()),
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    out
}

fn errors(r: &[Result<usize, String>]) -> Vec<&str> {
    r.iter()
        .filter_map(|x| x.as_ref().err().map(String::as_str))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_bad_slow_garbage_and_flaky_targets() {
    let base = server().await;

    let r = scrape_n(format!("{base}/graph"), Some("secret"), 3).await;
    assert!(
        r.iter().all(|x| x == &Ok(14)),
        "every scrape passes the 14 workload edges on: {r:?}"
    );

    let r = scrape_n(format!("{base}/graph"), None, 1).await;
    assert_eq!(errors(&r), ["kiali: HTTP 401"]);

    let r = scrape_n(format!("{base}/fail"), None, 2).await;
    assert_eq!(errors(&r), ["kiali: HTTP 500", "kiali: HTTP 500"]);

    let r = scrape_n(format!("{base}/slow"), None, 1).await;
    assert!(errors(&r)[0].contains("request failed"), "{r:?}");

    let r = scrape_n(format!("{base}/garbage"), None, 1).await;
    assert!(
        errors(&r)[0].contains("kiali graph: malformed JSON"),
        "{r:?}"
    );

    let r = scrape_n(format!("{base}/flaky"), None, 5).await;
    assert_eq!(errors(&r), ["kiali: HTTP 503"; 3], "{r:?}");
    assert_eq!(r[3..], [Ok(14), Ok(14)], "recovered: {r:?}");

    // Nothing listens here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = scrape_n(format!("http://127.0.0.1:{port}/graph"), None, 1).await;
    assert!(errors(&r)[0].contains("request failed"), "{r:?}");
}

#[test]
fn client_errors() {
    let mut cfg = TargetConfig::new("prometheus", "http://127.0.0.1:1/");
    cfg.ca_cert = Some("/nonexistent/ca.pem".into());
    let e = client(&cfg).unwrap_err().to_string();
    assert!(
        e.starts_with("prometheus: CA file /nonexistent/ca.pem"),
        "{e}"
    );
    cfg.ca_cert = None;
    cfg.bearer_token = Some("bad\ntoken".into());
    assert!(client(&cfg)
        .unwrap_err()
        .to_string()
        .contains("bearer token"));
}
