//! Trace context survives a trip through queue message headers and HTTP headers, and
//! malformed context from outside starts a new trace instead of failing.

use std::collections::BTreeMap;

use bosun_telemetry::{
    LogFormat, TelemetryConfig, current_trace_id, extract_http, extract_map, init, inject_http,
    inject_map,
};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// No exporter: trace ids are still generated and propagated.
fn init_without_export() -> bosun_telemetry::TelemetryGuard {
    init(&TelemetryConfig {
        service_name: "propagation-test".to_owned(),
        log_format: LogFormat::Pretty,
        log_filter: Some("info".to_owned()),
        otlp_endpoint: None,
    })
    .expect("telemetry starts without an otlp endpoint")
}

fn trace_id_of(context: &opentelemetry::Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[test]
fn queue_headers_carry_the_trace_to_the_consumer() {
    let _guard = init_without_export();

    let producer = tracing::info_span!("queue.push");
    let mut headers = BTreeMap::new();
    headers.insert("content-type".to_owned(), "application/json".to_owned());
    let producer_trace_id = producer.in_scope(|| {
        inject_map(&mut headers);
        current_trace_id()
    });
    let producer_trace_id = producer_trace_id.expect("a span has a trace id");
    assert_eq!(producer_trace_id.len(), 32);
    assert!(producer_trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        headers["traceparent"].contains(&producer_trace_id),
        "traceparent {:?} names the producer's trace",
        headers["traceparent"]
    );
    assert_eq!(
        headers["content-type"], "application/json",
        "other headers stay"
    );
    drop(producer);

    // The consumer runs later, outside the producer's span.
    assert_eq!(current_trace_id(), None);
    let extracted = extract_map(&headers);
    assert_eq!(
        trace_id_of(&extracted).as_deref(),
        Some(producer_trace_id.as_str())
    );
    assert!(extracted.span().span_context().is_remote());

    let consumer = tracing::info_span!("queue.handle");
    consumer
        .set_parent(extracted)
        .expect("the consumer span has not started yet");
    let consumer_trace_id = consumer.in_scope(current_trace_id);
    assert_eq!(consumer_trace_id, Some(producer_trace_id));
}

#[test]
fn http_headers_carry_the_trace() {
    let _guard = init_without_export();

    let client = tracing::info_span!("client.call");
    let mut headers = http::HeaderMap::new();
    let (client_trace_id, client_span_id) = client.in_scope(|| {
        inject_http(&mut headers);
        let context = tracing::Span::current().context();
        (
            current_trace_id(),
            context.span().span_context().span_id().to_string(),
        )
    });
    let client_trace_id = client_trace_id.expect("a span has a trace id");

    let extracted = extract_http(&headers);
    let span = extracted.span();
    let span_context = span.span_context();
    assert_eq!(span_context.trace_id().to_string(), client_trace_id);
    assert_eq!(
        span_context.span_id().to_string(),
        client_span_id,
        "the remote parent is the injecting span"
    );
    assert!(span_context.is_sampled());
}

#[test]
fn a_new_span_in_the_same_scope_replaces_stale_headers() {
    let _guard = init_without_export();

    let mut headers = http::HeaderMap::new();
    tracing::info_span!("first").in_scope(|| inject_http(&mut headers));
    let first = trace_id_of(&extract_http(&headers)).expect("first trace injected");
    let second_span = tracing::info_span!("second");
    let second = second_span.in_scope(|| {
        inject_http(&mut headers);
        current_trace_id()
    });
    assert_eq!(trace_id_of(&extract_http(&headers)), second);
    assert_ne!(Some(first), second);
    assert_eq!(headers.get_all("traceparent").iter().count(), 1);
}

#[test]
fn malformed_trace_context_extracts_as_no_parent() {
    let _guard = init_without_export();

    let garbage = [
        "garbage",
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473G-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra-fields-here",
    ];
    for traceparent in garbage {
        let mut map = BTreeMap::new();
        map.insert("traceparent".to_owned(), traceparent.to_owned());
        map.insert("tracestate".to_owned(), "\u{0}=\u{7f}".to_owned());
        assert_eq!(trace_id_of(&extract_map(&map)), None, "map {traceparent:?}");

        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(traceparent) {
            headers.insert("traceparent", value);
        }
        assert_eq!(
            trace_id_of(&extract_http(&headers)),
            None,
            "header {traceparent:?}"
        );

        // A span parented on garbage is a root span of a fresh trace.
        let span = tracing::info_span!("consumer");
        let _ = span.set_parent(extract_map(&map));
        let trace_id = span
            .in_scope(current_trace_id)
            .expect("the span starts a trace");
        assert_ne!(trace_id, "00000000000000000000000000000000");
    }

    // Header values that are not visible ASCII are skipped, not a panic.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_bytes(b"00-\xff\xfe-01").expect("obs-text is a valid header value"),
    );
    assert_eq!(trace_id_of(&extract_http(&headers)), None);
}
