//! W3C trace context (`traceparent`, `tracestate`) into and out of HTTP/gRPC headers and
//! queue message headers, so one trace follows a request across processes.
//!
//! The helpers use the W3C propagator directly rather than the global one: they behave the
//! same whether or not [`crate::init`] ran, which keeps other crates' unit tests honest.

use std::collections::BTreeMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The context to send onwards: the current tracing span's, or, when that span is filtered
/// out, the OpenTelemetry context attached around it (the server layer attaches the caller's
/// context there so a filtered-out span does not break the trace).
fn outgoing_context() -> Context {
    let span_context = tracing::Span::current().context();
    if span_context.span().span_context().is_valid() {
        span_context
    } else {
        Context::current()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only writes its own well-formed keys; skip rather than panic anyway.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the current span's context as `traceparent` (and `tracestate`) headers.
/// Writes nothing when there is no valid current context.
pub fn inject_http(headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&outgoing_context(), &mut HeaderInjector(headers));
}

/// Reads a remote parent from `traceparent`/`tracestate`. Missing or malformed headers give a
/// context without a valid span, so the next span starts a new trace.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the current span's context into queue message headers.
pub fn inject_map(map: &mut BTreeMap<String, String>) {
    TraceContextPropagator::new().inject_context(&outgoing_context(), &mut MapInjector(map));
}

/// Reads the producer's context from queue message headers; use it with
/// `OpenTelemetrySpanExt::set_parent` on the consumer's span.
pub fn extract_map(map: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(map))
}

/// The current trace id as 32 lowercase hex characters, when there is a valid trace.
pub fn current_trace_id() -> Option<String> {
    let context = outgoing_context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// tonic client interceptor: puts the current span's context into the request metadata.
///
/// `Channel` stacks take it as `SomeClient::with_interceptor(channel, inject_interceptor)`.
pub fn inject_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject_http(request.metadata_mut().as_mut());
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extracts_a_well_formed_traceparent() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
        let context = extract_http(&headers);
        let span = context.span();
        let span_context = span.span_context();
        assert!(span_context.is_valid());
        assert!(span_context.is_remote());
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span_context.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn nothing_is_injected_without_a_current_trace() {
        let mut map = BTreeMap::new();
        inject_map(&mut map);
        assert!(map.is_empty());
        assert_eq!(current_trace_id(), None);
    }

    #[test]
    fn attached_context_is_propagated_without_a_span() {
        let mut map = BTreeMap::new();
        map.insert("traceparent".to_owned(), TRACEPARENT.to_owned());
        let _attached = extract_map(&map).attach();

        assert_eq!(
            current_trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut headers = http::HeaderMap::new();
        inject_http(&mut headers);
        assert_eq!(
            headers.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(TRACEPARENT)
        );
    }
}
