//! STACK trap 7: on a current-thread runtime, `TelemetryGuard::shutdown` still delivers the
//! buffered spans to a collector served by that same runtime.

use std::time::Duration;

use bosun_telemetry::testing::OtlpCollector;
use bosun_telemetry::{LogFormat, TelemetryConfig};

#[tokio::test(flavor = "current_thread")]
async fn shutdown_flushes_on_a_current_thread_runtime() {
    let collector = OtlpCollector::start().await;
    let guard = bosun_telemetry::init(&TelemetryConfig {
        service_name: "current-thread".to_owned(),
        log_format: LogFormat::Pretty,
        log_filter: Some("info".to_owned()),
        otlp_endpoint: Some(collector.endpoint()),
    })
    .expect("telemetry starts");

    tracing::info_span!("work.done").in_scope(|| tracing::info!("working"));
    // Nothing is exported before the flush: the batch interval is seconds long.
    guard.shutdown().await;

    let span = collector
        .wait_for(|span| span.name == "work.done", Duration::from_secs(10))
        .await
        .expect("the flush delivered the span");
    assert_eq!(span.service_name, "current-thread");
}
