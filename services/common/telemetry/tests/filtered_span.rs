//! With a log filter that drops the request span, the caller's trace still reaches the inner
//! service, so outgoing calls and audit records stay in the caller's trace.

use std::convert::Infallible;

use bosun_telemetry::{
    GrpcServerTraceLayer, LogFormat, Metrics, TelemetryConfig, current_trace_id,
};
use bytes::Bytes;
use http_body_util::Full;
use tower::{Layer as _, ServiceExt as _};

#[tokio::test]
async fn trace_passes_through_a_filtered_out_request_span() {
    let _guard = bosun_telemetry::init(&TelemetryConfig {
        service_name: "filtered-test".to_owned(),
        log_format: LogFormat::Pretty,
        log_filter: Some("warn".to_owned()),
        otlp_endpoint: None,
    })
    .expect("telemetry starts");

    let inner = tower::service_fn(|_request: http::Request<()>| async {
        let mut outgoing = http::HeaderMap::new();
        bosun_telemetry::inject_http(&mut outgoing);
        let response = http::Response::builder()
            .header("grpc-status", "0")
            .header("x-seen-trace-id", current_trace_id().unwrap_or_default())
            .header(
                "x-seen-traceparent",
                outgoing
                    .get("traceparent")
                    .cloned()
                    .unwrap_or_else(|| http::HeaderValue::from_static("")),
            )
            .body(Full::new(Bytes::new()))
            .expect("a well-formed response");
        Ok::<_, Infallible>(response)
    });
    let request = http::Request::builder()
        .uri("/bosun.audit.v1.Audit/List")
        .header("content-type", "application/grpc")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(())
        .expect("a well-formed request");
    let response = GrpcServerTraceLayer::new(Metrics::new("filtered-test"))
        .layer(inner)
        .oneshot(request)
        .await
        .expect("the inner service does not fail");

    assert_eq!(
        response.headers()["x-seen-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // Without a span of its own, this process forwards the caller's span as the parent.
    assert_eq!(
        response.headers()["x-seen-traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
}
