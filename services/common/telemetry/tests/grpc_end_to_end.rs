//! One trace from a client span through a real tonic server wrapped in the trace layer,
//! exported over OTLP/gRPC to an in-process collector; the same calls show up in metrics.

use std::net::SocketAddr;
use std::time::Duration;

use bosun_telemetry::testing::{CapturedSpan, OtlpCollector};
use bosun_telemetry::{
    GrpcServerTraceLayer, LogFormat, Metrics, TelemetryConfig, current_trace_id, inject_interceptor,
};
use opentelemetry::trace::TraceContextExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const WAIT: Duration = Duration::from_secs(10);

/// tonic-health's server behind the trace layer on a free loopback port.
async fn start_backend(metrics: Metrics) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the backend to a loopback port");
    let address = listener
        .local_addr()
        .expect("bound listener has an address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(GrpcServerTraceLayer::new(metrics))
        .add_service(health)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::spawn(async move {
        server.await.expect("the backend serves until stopped");
    });
    (address, stop)
}

/// Waits until the server has recorded `line` in its metrics: the server closes its span
/// before counting, so after this the span is with the exporter.
async fn wait_for_metric_line(metrics: &Metrics, line: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !metrics.render().lines().any(|rendered| rendered == line) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {line:?}:\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_joins_the_client_trace_and_is_exported() {
    let collector = OtlpCollector::start().await;
    let guard = bosun_telemetry::init(&TelemetryConfig {
        service_name: "test-backend".to_owned(),
        log_format: LogFormat::Json,
        log_filter: Some("info".to_owned()),
        otlp_endpoint: Some(collector.endpoint()),
    })
    .expect("telemetry starts with the collector's endpoint");
    let metrics = Metrics::new("test-backend");
    let (address, stop_backend) = start_backend(metrics.clone()).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid endpoint")
        .connect()
        .await
        .expect("connecting to the backend");
    let mut client = HealthClient::with_interceptor(channel, inject_interceptor);

    let client_span = tracing::info_span!("client.check");
    let client_context = client_span.context();
    let client_trace_id = client_context.span().span_context().trace_id().to_string();
    let client_span_id = client_context.span().span_context().span_id().to_string();
    assert_eq!(
        client_span.in_scope(current_trace_id).as_deref(),
        Some(client_trace_id.as_str())
    );

    async {
        let response = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("the server as a whole is serving");
        assert_eq!(response.into_inner().status, 1, "SERVING");
        let missing = client
            .check(HealthCheckRequest {
                service: "bosun.missing.v1.Missing".to_owned(),
            })
            .await
            .expect_err("unregistered services are not found");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
    .instrument(client_span.clone())
    .await;
    drop(client_span);

    wait_for_metric_line(
        &metrics,
        r#"bosun_rpc_requests_total{service="grpc.health.v1.Health",method="Check",code="OK"} 1"#,
    )
    .await;
    wait_for_metric_line(
        &metrics,
        r#"bosun_rpc_requests_total{service="grpc.health.v1.Health",method="Check",code="NotFound"} 1"#,
    )
    .await;
    let rendered = metrics.render();
    assert!(
        rendered.contains(
            r#"bosun_rpc_duration_seconds_count{service="grpc.health.v1.Health",method="Check"} 2"#
        ),
        "{rendered}"
    );

    guard.shutdown().await;

    let is_server_span = |span: &CapturedSpan, code: &str| {
        span.name == "grpc.request"
            && span
                .attributes
                .get("rpc.grpc.status_code")
                .map(String::as_str)
                == Some(code)
    };
    let ok_span = collector
        .wait_for(|span| is_server_span(span, "0"), WAIT)
        .await
        .unwrap_or_else(|| panic!("no OK server span among {:#?}", collector.spans()));
    assert_eq!(
        ok_span.trace_id, client_trace_id,
        "one trace across the call"
    );
    assert_eq!(
        ok_span.parent_span_id, client_span_id,
        "parented on the client span"
    );
    assert_eq!(ok_span.service_name, "test-backend");
    assert_eq!(ok_span.kind, "server");
    assert_eq!(ok_span.attributes["rpc.system"], "grpc");
    assert_eq!(ok_span.attributes["rpc.service"], "grpc.health.v1.Health");
    assert_eq!(ok_span.attributes["rpc.method"], "Check");

    let not_found_span = collector
        .wait_for(|span| is_server_span(span, "5"), WAIT)
        .await
        .unwrap_or_else(|| panic!("no NotFound server span among {:#?}", collector.spans()));
    assert_eq!(not_found_span.trace_id, client_trace_id);
    assert_eq!(not_found_span.parent_span_id, client_span_id);
    assert_ne!(not_found_span.span_id, ok_span.span_id);

    let exported_client_span = collector
        .wait_for(|span| span.name == "client.check", WAIT)
        .await
        .expect("the client span is exported too");
    assert_eq!(exported_client_span.span_id, client_span_id);
    assert_eq!(
        exported_client_span.parent_span_id, "",
        "the client span is a root"
    );

    let _ = stop_backend.send(());
}
