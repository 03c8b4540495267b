//! A guard dropped without `shutdown`, on a current-thread runtime, still flushes, and does
//! not hang the runtime it is dropped on.

use std::time::Duration;

use bosun_telemetry::testing::OtlpCollector;
use bosun_telemetry::{LogFormat, TelemetryConfig};

#[test]
fn dropping_the_guard_flushes_without_blocking_the_runtime() {
    // The collector gets a runtime of its own, as a real collector is another process.
    let collector_runtime = tokio::runtime::Runtime::new().expect("a runtime for the collector");
    let collector = collector_runtime.block_on(OtlpCollector::start());
    let endpoint = collector.endpoint();

    let application = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    application.block_on(async {
        let guard = bosun_telemetry::init(&TelemetryConfig {
            service_name: "dropped-guard".to_owned(),
            log_format: LogFormat::Pretty,
            log_filter: Some("info".to_owned()),
            otlp_endpoint: Some(endpoint),
        })
        .expect("telemetry starts");
        tracing::info_span!("before.drop").in_scope(|| tracing::info!("working"));
        drop(guard);
        // The runtime still runs after the drop.
        tokio::task::yield_now().await;
    });

    let span = collector_runtime
        .block_on(collector.wait_for(|span| span.name == "before.drop", Duration::from_secs(10)));
    assert!(span.is_some(), "the drop flushed: {:#?}", collector.spans());
}
