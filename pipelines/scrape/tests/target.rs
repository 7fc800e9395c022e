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

/// The bearer token goes only to the endpoints configured to receive it: Kiali here, not
/// Prometheus (a collector pass against one local server playing both, recording every request's
/// `Authorization`); and a token target over plain http is refused unless allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_only_where_it_is_configured_to() {
    use graphscaler_scrape::collect::{CollectConfig, Collector};
    type Seen = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let record = |seen: Seen, path: &'static str, body: &'static str| {
        get(move |h: HeaderMap| async move {
            let auth = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            seen.lock().unwrap().push((path.to_string(), auth));
            (StatusCode::OK, body)
        })
    };
    let app = Router::new()
        .route(
            "/api/v1/query",
            record(
                seen.clone(),
                "prometheus",
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            ),
        )
        .route(
            "/api/namespaces/graph",
            record(
                seen.clone(),
                "kiali",
                r#"{"elements":{"nodes":[],"edges":[]}}"#,
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = std::env::temp_dir().join(format!("gs-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "secret\n").unwrap();
    let cfg = CollectConfig {
        namespace: "boutique".into(),
        prometheus_url: url.clone(),
        kiali_url: url.clone(),
        kubernetes_url: url.clone(),
        kubernetes_watch: false,
        bearer_token_file: token.to_string_lossy().into_owned(),
        bearer_token_targets: vec!["kiali".into()],
        allow_plain_http_token: false,
        ..CollectConfig::default()
    };
    // Over plain http the configuration is refused, naming the endpoint ...
    let problems = cfg.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("sends the token to kiali at `http://") && p.contains("not https")),
        "{problems:?}"
    );
    // ... and allowed explicitly, the token reaches Kiali only.
    let cfg = CollectConfig {
        allow_plain_http_token: true,
        ..cfg
    };
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let mut c = Collector::new(cfg, (200.0, 0.01)).await.unwrap();
    c.collect(1.7e9).await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(p, _)| p == "prometheus"), "{seen:?}");
    assert!(seen.iter().any(|(p, _)| p == "kiali"), "{seen:?}");
    for (path, auth) in &seen {
        match path.as_str() {
            "kiali" => assert_eq!(auth.as_deref(), Some("Bearer secret")),
            _ => assert_eq!(auth, &None, "{path} got the token"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
