//! Telemetry for every Bosun process: one tracing subscriber (logs, OTLP trace export),
//! W3C trace-context propagation across gRPC, HTTP and queue messages, and Prometheus metrics.
//!
//! Entry points:
//! - [`init`] once at start-up, keep the [`TelemetryGuard`], call [`TelemetryGuard::shutdown`]
//!   last during shutdown.
//! - [`GrpcServerTraceLayer`] outermost in every gRPC server's tower stack: one span and one
//!   metrics observation per request, parented on the caller's trace.
//! - [`inject_interceptor`] on every tonic client, [`inject_map`] / [`extract_map`] on queue
//!   message headers.
//! - [`Metrics`] per process, rendered on `/metrics`.
//!
//! Layers further in (auth, agent registry) fill the span's `principal` and `node_id` fields
//! with `tracing::Span::current().record("principal", ...)`: the request span is current
//! while inner services run.

mod grpc_layer;
mod init;
mod metrics;
mod propagation;
pub mod testing;

pub use grpc_layer::{GrpcServerTrace, GrpcServerTraceLayer, GrpcTraceBody, GrpcTraceFuture};
pub use init::{LogFormat, ParseLogFormatError, TelemetryConfig, TelemetryGuard, init};
pub use metrics::{Metrics, grpc_code_label};
pub use propagation::{
    current_trace_id, extract_http, extract_map, inject_http, inject_interceptor, inject_map,
};
