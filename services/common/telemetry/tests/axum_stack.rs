//! The trace layer in an axum stack: gRPC and plain HTTP routes on one port, as the gateway
//! serves them, with `/metrics` rendering the registry.

use bosun_telemetry::{GrpcServerTraceLayer, LogFormat, Metrics, TelemetryConfig};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

#[tokio::test]
async fn layer_wraps_an_axum_router_with_grpc_and_http_routes() {
    let _guard = bosun_telemetry::init(&TelemetryConfig {
        service_name: "axum-test".to_owned(),
        log_format: LogFormat::Pretty,
        log_filter: Some("info".to_owned()),
        otlp_endpoint: None,
    })
    .expect("telemetry starts");
    let metrics = Metrics::new("axum-test");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let metrics_for_route = metrics.clone();
    let router = tonic::service::Routes::new(health)
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics_for_route.clone();
                async move { metrics.render() }
            }),
        )
        .layer(GrpcServerTraceLayer::new(metrics.clone()));

    let response = router
        .clone()
        .oneshot(
            http::Request::builder()
                .uri("/metrics")
                .body(axum::body::Body::empty())
                .expect("a well-formed request"),
        )
        .await
        .expect("axum routers do not fail");
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("readable")
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains(r#"bosun_process_info{process="axum-test"} 1"#)
    );

    // A path nobody serves: tonic's router answers it as an unimplemented gRPC method,
    // counted under `other`.
    let response = router
        .oneshot(
            http::Request::builder()
                .uri("/no/such/page")
                .body(axum::body::Body::empty())
                .expect("a well-formed request"),
        )
        .await
        .expect("axum routers do not fail");
    assert_eq!(
        response.headers().get("grpc-status"),
        Some(&http::HeaderValue::from_static("12"))
    );
    drop(response);

    let rendered = metrics.render();
    assert!(
        rendered
            .contains(r#"bosun_rpc_requests_total{service="other",method="other",code="OK"} 1"#),
        "{rendered}"
    );
    assert!(
        rendered.contains(
            r#"bosun_rpc_requests_total{service="other",method="other",code="Unimplemented"} 1"#
        ),
        "{rendered}"
    );
}
