//! The scrape loop against a local server that answers well, with errors, slowly, with garbage,
//! or not at all: failures are counted, nothing from a failed scrape is passed on, backoff grows,
//! and a recovered target is scraped again.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use graphscaler_scrape::parse::kiali;
use graphscaler_scrape::target::{run, ScrapeStats, TargetConfig};

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

/// Runs the loop on `url` for `for_ms`, returning its stats and how many items reached the sink.
async fn scrape_for(url: String, token: Option<&str>, for_ms: u64) -> (ScrapeStats, usize, usize) {
    let mut cfg = TargetConfig::new("kiali", &url);
    cfg.interval = Duration::from_millis(40);
    cfg.timeout = Duration::from_millis(300);
    cfg.backoff_max = Duration::from_millis(400);
    cfg.bearer_token = token.map(Into::into);
    let got = Arc::new(Mutex::new((0usize, 0usize)));
    let sink = got.clone();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(
        cfg,
        kiali::parse,
        move |items| {
            let mut g = sink.lock().unwrap();
            g.0 += 1;
            g.1 += items.len();
        },
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    tx.send(true).unwrap();
    let stats = task.await.unwrap().unwrap();
    let g = *got.lock().unwrap();
    (stats, g.0, g.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_bad_slow_garbage_and_flaky_targets() {
    let base = server().await;

    let (s, batches, items) = scrape_for(format!("{base}/graph"), Some("secret"), 400).await;
    assert!(s.ok >= 3 && s.failures == 0, "{s:?}");
    assert_eq!(
        items,
        batches * 14,
        "every scrape passes the 14 workload edges on"
    );
    assert_eq!(s.rejected, s.ok * 4);

    let (s, batches, _) = scrape_for(format!("{base}/graph"), None, 200).await;
    assert!(s.failures >= 1 && s.ok == 0 && batches == 0, "{s:?}");
    assert_eq!(s.last_error.as_deref(), Some("kiali: HTTP 401"));

    // 500s: counted, nothing passed on, and the backoff keeps attempts far below one per 40 ms.
    let (s, batches, _) = scrape_for(format!("{base}/fail"), None, 800).await;
    assert!(s.failures >= 2 && batches == 0, "{s:?}");
    assert!(
        s.failures <= 6,
        "backoff: {} attempts in 800 ms",
        s.failures
    );
    assert_eq!(s.last_error.as_deref(), Some("kiali: HTTP 500"));

    let (s, batches, _) = scrape_for(format!("{base}/slow"), None, 500).await;
    assert!(s.failures >= 1 && batches == 0, "{s:?}");
    assert!(s.last_error.unwrap().contains("request failed"));

    let (s, batches, _) = scrape_for(format!("{base}/garbage"), None, 200).await;
    assert!(s.failures >= 1 && batches == 0, "{s:?}");
    assert!(s
        .last_error
        .unwrap()
        .contains("kiali graph: malformed JSON"));

    let (s, batches, _) = scrape_for(format!("{base}/flaky"), None, 2500).await;
    assert_eq!(s.failures, 3, "{s:?}");
    assert!(
        s.ok >= 1 && batches >= 1 && s.consecutive_failures == 0,
        "recovered: {s:?}"
    );

    // Nothing listens here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (s, batches, _) = scrape_for(format!("http://127.0.0.1:{port}/graph"), None, 200).await;
    assert!(s.failures >= 1 && batches == 0, "{s:?}");
}

#[test]
fn backoff_and_client_errors() {
    let mut cfg = TargetConfig::new("prometheus", "http://127.0.0.1:1/");
    assert_eq!(cfg.next_wait(0), Duration::from_secs(15));
    assert_eq!(cfg.next_wait(1), Duration::from_secs(30));
    assert_eq!(cfg.next_wait(3), Duration::from_secs(120));
    assert_eq!(cfg.next_wait(10), Duration::from_secs(300));
    cfg.ca_cert = Some("/nonexistent/ca.pem".into());
    let e = graphscaler_scrape::target::client(&cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("prometheus: CA file /nonexistent/ca.pem"),
        "{e}"
    );
    cfg.ca_cert = None;
    cfg.bearer_token = Some("bad\ntoken".into());
    assert!(graphscaler_scrape::target::client(&cfg)
        .unwrap_err()
        .to_string()
        .contains("bearer token"));
}
