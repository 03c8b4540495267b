//! The server trace layer around a fake inner service: what the inner service sees, and what
//! each kind of response is counted as.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bosun_telemetry::{
    GrpcServerTraceLayer, LogFormat, Metrics, TelemetryConfig, current_trace_id,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use tower::{Layer as _, ServiceExt as _};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn init_without_export() -> bosun_telemetry::TelemetryGuard {
    bosun_telemetry::init(&TelemetryConfig {
        service_name: "layer-test".to_owned(),
        log_format: LogFormat::Pretty,
        log_filter: Some("info".to_owned()),
        otlp_endpoint: None,
    })
    .expect("telemetry starts without an otlp endpoint")
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("traceparent", TRACEPARENT)
        .body(())
        .expect("a well-formed request")
}

/// A response as tonic sends a failure: `grpc-status` in the headers, empty body.
fn trailers_only(code: tonic::Code) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", (code as i32).to_string())
        .body(Full::new(Bytes::new()))
        .expect("a well-formed response")
}

fn metric_line(service: &str, method: &str, code: &str) -> String {
    format!(r#"bosun_rpc_requests_total{{service="{service}",method="{method}",code="{code}"}} 1"#)
}

fn has_line(metrics: &Metrics, line: &str) -> bool {
    metrics.render().lines().any(|rendered| rendered == line)
}

#[tokio::test]
async fn inner_service_runs_in_the_callers_trace() {
    let _guard = init_without_export();
    let seen = Arc::new(Mutex::new(None));
    let seen_by_inner = Arc::clone(&seen);
    let inner = tower::service_fn(move |_request: http::Request<()>| {
        let seen_by_inner = Arc::clone(&seen_by_inner);
        async move {
            // Where an auth layer would record the principal.
            tracing::Span::current().record("principal", "user:alice");
            let name = tracing::Span::current()
                .metadata()
                .map(|metadata| metadata.name());
            *seen_by_inner.lock().expect("not poisoned") = Some((current_trace_id(), name));
            Ok::<_, Infallible>(trailers_only(tonic::Code::Ok))
        }
    });
    let metrics = Metrics::new("layer-test");
    let service = GrpcServerTraceLayer::new(metrics.clone()).layer(inner);

    let response = service
        .oneshot(grpc_request("/bosun.audit.v1.Audit/List"))
        .await
        .expect("the inner service does not fail");
    response
        .into_body()
        .collect()
        .await
        .expect("the body is readable");

    let seen = seen.lock().expect("not poisoned").take();
    assert_eq!(
        seen,
        Some((Some(TRACE_ID.to_owned()), Some("grpc.request"))),
        "the inner service runs inside the request span, parented on the caller"
    );
    assert!(has_line(
        &metrics,
        &metric_line("bosun.audit.v1.Audit", "List", "OK")
    ));
}

#[tokio::test]
async fn status_is_read_from_trailers_and_headers() {
    let _guard = init_without_export();
    let metrics = Metrics::new("layer-test");

    // Success: the status arrives in the trailers after the data.
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
            .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .expect("a well-formed response"),
        )
    });
    let response = GrpcServerTraceLayer::new(metrics.clone())
        .layer(inner)
        .oneshot(grpc_request("/bosun.parameters.v1.Parameters/Get"))
        .await
        .expect("the inner service does not fail");
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the body is readable");
    assert_eq!(
        collected.trailers().and_then(|t| t.get("grpc-status")),
        Some(&http::HeaderValue::from_static("0"))
    );
    assert!(has_line(
        &metrics,
        &metric_line("bosun.parameters.v1.Parameters", "Get", "OK")
    ));

    // Failure: trailers-only, the status in the headers.
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        Ok::<_, Infallible>(trailers_only(tonic::Code::PermissionDenied))
    });
    let response = GrpcServerTraceLayer::new(metrics.clone())
        .layer(inner)
        .oneshot(grpc_request("/bosun.parameters.v1.Parameters/Put"))
        .await
        .expect("the inner service does not fail");
    // hyper drops a body that reports its end without polling it; that is a normal finish.
    assert!(http_body::Body::is_end_stream(response.body()));
    drop(response);
    assert!(has_line(
        &metrics,
        &metric_line("bosun.parameters.v1.Parameters", "Put", "PermissionDenied")
    ));
}

#[tokio::test]
async fn unknown_and_malformed_routes_are_labelled_other() {
    let _guard = init_without_export();
    let metrics = Metrics::new("layer-test");

    // tonic answers routes it does not serve with Unimplemented; their names are the
    // caller's choice and must not become label values.
    for path in [
        "/grpc.health.v1.Health/NoSuchMethod",
        "/attacker.chosen.Name1/Anything",
    ] {
        let inner = tower::service_fn(|_request: http::Request<()>| async {
            Ok::<_, Infallible>(trailers_only(tonic::Code::Unimplemented))
        });
        drop(
            GrpcServerTraceLayer::new(metrics.clone())
                .layer(inner)
                .oneshot(grpc_request(path))
                .await
                .expect("the inner service does not fail"),
        );
    }
    let two_unimplemented =
        r#"bosun_rpc_requests_total{service="other",method="other",code="Unimplemented"} 2"#;
    assert!(
        has_line(&metrics, two_unimplemented),
        "{}",
        metrics.render()
    );

    // Plain HTTP on the same port (a garbage path) succeeds as plain HTTP.
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let request = http::Request::builder()
        .uri("/../../etc/passwd?x=%00")
        .body(())
        .expect("a well-formed request");
    let response = GrpcServerTraceLayer::new(metrics.clone())
        .layer(inner)
        .oneshot(request)
        .await
        .expect("the inner service does not fail");
    response.into_body().collect().await.expect("readable");
    assert!(
        has_line(&metrics, &metric_line("other", "other", "OK")),
        "{}",
        metrics.render()
    );

    let rendered = metrics.render();
    assert!(!rendered.contains("NoSuchMethod"));
    assert!(!rendered.contains("attacker"));
    assert!(!rendered.contains("passwd"));
}

#[tokio::test]
async fn a_response_abandoned_mid_stream_counts_as_canceled() {
    let _guard = init_without_export();
    let metrics = Metrics::new("layer-test");

    let inner = tower::service_fn(|_request: http::Request<()>| async {
        // A streaming response that has not ended: data still to come.
        let body =
            Full::new(Bytes::from_static(b"\0\0\0\0\0")).with_trailers(std::future::pending::<
                Option<Result<http::HeaderMap, Infallible>>,
            >());
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .expect("a well-formed response"),
        )
    });
    let response = GrpcServerTraceLayer::new(metrics.clone())
        .layer(inner)
        .oneshot(grpc_request("/bosun.agent.v1.Agents/Connect"))
        .await
        .expect("the inner service does not fail");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("readable");
    assert!(first.is_data());
    assert!(!has_line(
        &metrics,
        &metric_line("bosun.agent.v1.Agents", "Connect", "Canceled")
    ));
    drop(body);
    assert!(has_line(
        &metrics,
        &metric_line("bosun.agent.v1.Agents", "Connect", "Canceled")
    ));

    // Dropping the response future before the handler answered counts the same way.
    let inner = tower::service_fn(|_request: http::Request<()>| {
        std::future::pending::<Result<http::Response<Empty<Bytes>>, Infallible>>()
    });
    let future = GrpcServerTraceLayer::new(metrics.clone())
        .layer(inner)
        .oneshot(grpc_request("/bosun.agent.v1.Agents/Heartbeat"));
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), future).await;
    assert!(timed_out.is_err());
    assert!(has_line(
        &metrics,
        &metric_line("bosun.agent.v1.Agents", "Heartbeat", "Canceled")
    ));
}
