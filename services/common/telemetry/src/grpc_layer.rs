//! Server-side tower layer: one span per gRPC request, parented on the caller's trace, kept
//! open until the response body ends, plus one RPC metrics observation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{Metrics, grpc_code_label, parse_grpc_path};
use crate::propagation::extract_http;

/// Wraps a server's services in [`GrpcServerTrace`]. Put it outermost, so auth failures and
/// timeouts are traced and counted too.
#[derive(Clone, Debug)]
pub struct GrpcServerTraceLayer {
    metrics: Metrics,
}

impl GrpcServerTraceLayer {
    pub fn new(metrics: Metrics) -> Self {
        GrpcServerTraceLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcServerTraceLayer {
    type Service = GrpcServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTrace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service built by [`GrpcServerTraceLayer`].
#[derive(Clone, Debug)]
pub struct GrpcServerTrace<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for GrpcServerTrace<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    ResponseBody: Body,
{
    type Response = http::Response<GrpcTraceBody<ResponseBody>>;
    type Error = S::Error;
    type Future = GrpcTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let route = parse_grpc_path(request.uri().path());
        let (service, method) = route.unwrap_or(("other", "other"));
        let span = tracing::info_span!(
            "grpc.request",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            otel.status_code = Empty,
            rpc.grpc.status_code = Empty,
            principal = Empty,
            node_id = Empty,
        );
        let parent = extract_http(request.headers());
        // A span filtered out by the log filter cannot carry the parent; attaching the
        // caller's context around the inner service instead keeps the trace going through
        // this process to the next hop.
        let fallback_context = span.set_parent(parent.clone()).err().map(|_| parent);
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc"));

        let completion = Completion {
            span,
            fallback_context,
            metrics: self.metrics.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            is_grpc,
            started: Instant::now(),
            header_code: None,
            finished: false,
        };
        let future = {
            let _entered = completion.span.enter();
            let _attached = completion.fallback_context.clone().map(|cx| cx.attach());
            self.inner.call(request)
        };
        GrpcTraceFuture {
            inner: Box::pin(future),
            completion: Some(completion),
        }
    }
}

/// The span and the facts needed to record the outcome once, when the response ends.
struct Completion {
    span: Span,
    fallback_context: Option<opentelemetry::Context>,
    metrics: Metrics,
    service: String,
    method: String,
    is_grpc: bool,
    started: Instant,
    /// `grpc-status` from the response headers: a trailers-only response, usually an error.
    header_code: Option<tonic::Code>,
    finished: bool,
}

impl Completion {
    /// Runs `f` inside the request's span (and fallback context), for one synchronous poll.
    fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        let _entered = self.span.enter();
        let _attached = self.fallback_context.clone().map(|cx| cx.attach());
        f()
    }

    /// The code when the body ended without `grpc-status` trailers.
    fn code_without_trailers(&self, http_status: Option<http::StatusCode>) -> tonic::Code {
        if let Some(code) = self.header_code {
            return code;
        }
        match http_status {
            // A gRPC response that ends without a status is broken; plain HTTP is fine.
            Some(status) if status.is_success() => {
                if self.is_grpc {
                    tonic::Code::Unknown
                } else {
                    tonic::Code::Ok
                }
            }
            Some(status) => code_from_http_status(status),
            None => tonic::Code::Unknown,
        }
    }

    fn finish(&mut self, code: tonic::Code) {
        if self.finished {
            return;
        }
        self.finished = true;
        let seconds = self.started.elapsed().as_secs_f64();
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        let label = grpc_code_label(code);
        self.span.in_scope(|| {
            tracing::debug!(code = label, duration_seconds = seconds, "rpc finished");
        });
        // Close the span before counting, so whoever sees the count can rely on the span
        // having been handed to the exporter.
        drop(std::mem::replace(&mut self.span, Span::none()));
        self.fallback_context = None;
        // Unknown routes are answered `Unimplemented`; their names are caller-chosen, so they
        // never become label values.
        let (service, method) = if code == tonic::Code::Unimplemented {
            ("other", "other")
        } else {
            (self.service.as_str(), self.method.as_str())
        };
        self.metrics.observe_rpc(service, method, label, seconds);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped before the response ended: the client went away or the server shut down.
        self.finish(tonic::Code::Cancelled);
    }
}

/// Server errors in the OpenTelemetry gRPC conventions; the rest leave the status unset.
fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// gRPC's mapping for responses that carry no `grpc-status`
/// (grpc/doc/http-grpc-status-mapping.md).
fn code_from_http_status(status: http::StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502..=504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.trim().parse::<i32>().ok().map(tonic::Code::from_i32)
}

/// Response future of [`GrpcServerTrace`]; boxed so no `unsafe` pin projection is needed.
pub struct GrpcTraceFuture<F> {
    inner: Pin<Box<F>>,
    completion: Option<Completion>,
}

impl<F, ResponseBody, Error> Future for GrpcTraceFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, Error>>,
    ResponseBody: Body,
{
    type Output = Result<http::Response<GrpcTraceBody<ResponseBody>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        let result = match &this.completion {
            Some(completion) => ready!(completion.in_scope(|| inner.as_mut().poll(cx))),
            None => ready!(inner.as_mut().poll(cx)),
        };
        let completion = this.completion.take();
        Poll::Ready(match result {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let completion = completion.map(|mut completion| {
                    completion.header_code = grpc_status(&parts.headers);
                    completion
                });
                let body = GrpcTraceBody {
                    inner: Box::pin(body),
                    completion,
                    http_status: parts.status,
                    trailer_code: None,
                };
                Ok(http::Response::from_parts(parts, body))
            }
            Err(error) => {
                if let Some(mut completion) = completion {
                    completion.finish(tonic::Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

/// Response body of [`GrpcServerTrace`]: passes frames through, reads `grpc-status` from the
/// trailers and closes the span when the stream ends.
pub struct GrpcTraceBody<B: Body> {
    inner: Pin<Box<B>>,
    completion: Option<Completion>,
    http_status: http::StatusCode,
    trailer_code: Option<tonic::Code>,
}

impl<B: Body> GrpcTraceBody<B> {
    fn finish_normally(&mut self) {
        if let Some(mut completion) = self.completion.take() {
            let code = self
                .trailer_code
                .unwrap_or_else(|| completion.code_without_trailers(Some(self.http_status)));
            completion.finish(code);
        }
    }
}

impl<B: Body> Body for GrpcTraceBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        let polled = match &this.completion {
            Some(completion) => ready!(completion.in_scope(|| inner.as_mut().poll_frame(cx))),
            None => ready!(inner.as_mut().poll_frame(cx)),
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.trailer_code = grpc_status(trailers);
                }
                if this.inner.is_end_stream() {
                    this.finish_normally();
                }
            }
            Some(Err(_)) => {
                if let Some(mut completion) = this.completion.take() {
                    completion.finish(tonic::Code::Internal);
                }
            }
            None => this.finish_normally(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for GrpcTraceBody<B> {
    fn drop(&mut self) {
        let Some(completion) = &self.completion else {
            return;
        };
        // hyper stops polling a body that reports its end, so an ended body dropped here
        // finished normally; otherwise the client went away mid-response.
        let ended = self.trailer_code.is_some()
            || completion.header_code.is_some()
            || self.inner.is_end_stream();
        if ended {
            self.finish_normally();
        } else if let Some(mut completion) = self.completion.take() {
            completion.finish(tonic::Code::Cancelled);
        }
    }
}
