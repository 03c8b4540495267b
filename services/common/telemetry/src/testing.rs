//! Test support: an in-process OTLP/gRPC trace collector that records every exported span,
//! so tests can assert on what a real collector would receive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::sync::{Notify, oneshot};

/// One span as the collector received it, ids in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `service.name` of the exporting process's resource.
    pub service_name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// Attribute values rendered as text: strings as they are, numbers in decimal.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
struct Captured {
    spans: Mutex<Vec<CapturedSpan>>,
    arrived: Notify,
}

struct Receiver(Arc<Captured>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| {
                    resource
                        .attributes
                        .iter()
                        .find(|attribute| attribute.key == "service.name")
                })
                .and_then(|attribute| attribute.value.as_ref())
                .map(any_value_text)
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(CapturedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span_kind_name(span.kind).to_owned(),
                        name: span.name,
                        service_name: service_name.clone(),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.0
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(received);
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn span_kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|attribute| {
            let value = attribute
                .value
                .as_ref()
                .map(any_value_text)
                .unwrap_or_default();
            (attribute.key.clone(), value)
        })
        .collect()
}

fn any_value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        Some(Value::BytesValue(bytes)) => hex(bytes),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// An OTLP/gRPC trace collector on `127.0.0.1:<free port>`; stops when dropped.
pub struct OtlpCollector {
    address: SocketAddr,
    captured: Arc<Captured>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for OtlpCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpCollector")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl OtlpCollector {
    /// Starts the collector on the current tokio runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound: a test cannot go on without its collector.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test otlp collector to 127.0.0.1:0");
        let address = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let captured = Arc::new(Captured::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(Arc::clone(&captured))))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "the test otlp collector stopped");
            }
        });
        OtlpCollector {
            address,
            captured,
            stop: Some(stop),
        }
    }

    /// The endpoint to put in `TelemetryConfig::otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.captured
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The first received span matching `pred`, waiting up to `timeout` for it to arrive.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&CapturedSpan) -> bool,
        timeout: Duration,
    ) -> Option<CapturedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the wake-up before looking, so an export landing in between is
            // not missed.
            let arrived = self.captured.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(span) = self.spans().into_iter().find(|span| pred(span)) {
                return Some(span);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.spans().into_iter().find(|span| pred(span));
            }
        }
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
