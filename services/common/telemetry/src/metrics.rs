//! Prometheus metrics for one process: a shared registry, the RPC metrics every server
//! records, and the rules that keep their label sets closed.

use std::collections::HashSet;
use std::ops::DerefMut;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// Label value for anything outside the closed sets.
const OTHER: &str = "other";
/// Distinct `(service, method)` pairs that get their own series; later ones become `other`.
/// Far above what Bosun serves, low enough that a misbehaving caller cannot flood Prometheus.
const MAX_RPC_ROUTES: usize = 256;
const MAX_SERVICE_LEN: usize = 128;
const MAX_METHOD_LEN: usize = 64;
/// Seconds; from a cache hit to a slow database round trip, then a long-poll.
const RPC_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// gRPC status code names as Prometheus labels, indexed by code number. The spelling is the
/// one gRPC's own Go and C++ metrics use, so dashboards carry over.
const GRPC_CODE_LABELS: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The `code` label for a gRPC status code, e.g. `NotFound`.
pub fn grpc_code_label(code: tonic::Code) -> &'static str {
    // Every `tonic::Code` is 0..=16, so the fallback never shows; it keeps this panic-free.
    GRPC_CODE_LABELS
        .get(usize::try_from(code as i32).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or(OTHER)
}

/// Maps what a caller passed as `code` into the closed set: a label name as above, tonic's
/// `Debug` spelling, or the code number; anything else is `other`.
fn normalize_code(code: &str) -> &'static str {
    if let Some(label) = GRPC_CODE_LABELS.iter().find(|label| **label == code) {
        return label;
    }
    match code {
        "Ok" => return "OK",
        "Cancelled" => return "Canceled",
        _ => {}
    }
    code.parse::<usize>()
        .ok()
        .and_then(|number| GRPC_CODE_LABELS.get(number).copied())
        .unwrap_or(OTHER)
}

/// A fully qualified gRPC service name: `pkg.Service`, dotted identifiers.
pub(crate) fn is_service_name(service: &str) -> bool {
    service.len() <= MAX_SERVICE_LEN
        && service.contains('.')
        && service.split('.').all(is_identifier)
}

/// A gRPC method name: one identifier.
pub(crate) fn is_method_name(method: &str) -> bool {
    method.len() <= MAX_METHOD_LEN && is_identifier(method)
}

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `/<pkg>.<Service>/<Method>`; `None` for any other shape.
pub(crate) fn parse_grpc_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (is_service_name(service) && is_method_name(method)).then_some((service, method))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCodeLabels {
    service: String,
    method: String,
    code: &'static str,
}

struct MetricsInner {
    registry: Mutex<Registry>,
    rpc_requests: Family<RpcCodeLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    rpc_routes: Mutex<HashSet<(String, String)>>,
}

/// The process's metrics registry and the RPC metrics. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn new_rpc_duration_histogram() -> Histogram {
    Histogram::new(RPC_DURATION_BUCKETS)
}

/// Locks even after a panic elsewhere: the guarded values stay consistent between calls.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// A registry for the process `process` (e.g. `gateway`), exported as
    /// `bosun_process_info{process="..."} 1`, with the RPC metrics registered.
    pub fn new(process: &str) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "bosun_process",
            "The Bosun process serving these metrics",
            Info::new(vec![("process".to_owned(), process.to_owned())]),
        );
        let rpc_requests = Family::<RpcCodeLabels, Counter>::default();
        registry.register(
            "bosun_rpc_requests",
            "gRPC requests served, by service, method and status code",
            rpc_requests.clone(),
        );
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            new_rpc_duration_histogram,
        );
        registry.register(
            "bosun_rpc_duration_seconds",
            "gRPC request duration until the response ended, by service and method",
            rpc_duration.clone(),
        );
        Metrics {
            inner: Arc::new(MetricsInner {
                registry: Mutex::new(registry),
                rpc_requests,
                rpc_duration,
                rpc_routes: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// OpenMetrics text for a `/metrics` endpoint
    /// (content type `application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut text, &lock(&self.inner.registry))
        {
            tracing::warn!(%error, "encoding metrics failed");
        }
        text
    }

    /// Counts one RPC and its duration. `service` (`pkg.Service`) and `method` are kept only
    /// when well formed and among the first routes seen; `code` only when it is a gRPC code
    /// (see [`grpc_code_label`]). Anything else is labelled `other`.
    pub fn observe_rpc(&self, service: &str, method: &str, code: &str, seconds: f64) {
        let (service, method) = if self.admit_route(service, method) {
            (service.to_owned(), method.to_owned())
        } else {
            (OTHER.to_owned(), OTHER.to_owned())
        };
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        self.inner
            .rpc_duration
            .get_or_create(&RpcLabels {
                service: service.clone(),
                method: method.clone(),
            })
            .observe(seconds);
        self.inner
            .rpc_requests
            .get_or_create(&RpcCodeLabels {
                service,
                method,
                code: normalize_code(code),
            })
            .inc();
    }

    fn admit_route(&self, service: &str, method: &str) -> bool {
        if !is_service_name(service) || !is_method_name(method) {
            return false;
        }
        let mut routes = lock(&self.inner.rpc_routes);
        if routes.contains(&(service.to_owned(), method.to_owned())) {
            return true;
        }
        if routes.len() >= MAX_RPC_ROUTES {
            return false;
        }
        routes.insert((service.to_owned(), method.to_owned()));
        true
    }

    /// The registry, for services that add their own metrics. Keep their names `bosun_*` and
    /// their label values drawn from closed sets. Do not hold the guard across `.await`.
    pub fn registry_mut(&self) -> impl DerefMut<Target = Registry> {
        lock(&self.inner.registry)
    }

    /// Registers one metric; shorthand for `registry_mut().register(..)`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.inner.registry).register(name, help, metric);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_are_parsed_only_when_well_formed() {
        assert_eq!(
            parse_grpc_path("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        assert_eq!(
            parse_grpc_path("/bosun.parameters.v1.Parameters/Get_Parameter2"),
            Some(("bosun.parameters.v1.Parameters", "Get_Parameter2"))
        );
        for path in [
            "",
            "/",
            "/metrics",
            "grpc.health.v1.Health/Check",
            "/Health/Check",
            "/grpc.health.v1.Health/",
            "/grpc.health.v1.Health/Check/extra",
            "/grpc..Health/Check",
            "/.Health/Check",
            "/grpc.health.v1.Health/Ch-eck",
            "/grpc.health.v1.Health/9Check",
            "/gr%70c.Health/Check",
            "/grpc.heälth.Health/Check",
        ] {
            assert_eq!(parse_grpc_path(path), None, "{path:?}");
        }
        let long_method = format!("/a.B/{}", "m".repeat(MAX_METHOD_LEN + 1));
        assert_eq!(parse_grpc_path(&long_method), None);
        let long_service = format!("/a.{}/M", "s".repeat(MAX_SERVICE_LEN));
        assert_eq!(parse_grpc_path(&long_service), None);
    }

    #[test]
    fn codes_are_normalised_into_the_closed_set() {
        assert_eq!(normalize_code("OK"), "OK");
        assert_eq!(normalize_code("Ok"), "OK");
        assert_eq!(normalize_code("Cancelled"), "Canceled");
        assert_eq!(normalize_code("5"), "NotFound");
        assert_eq!(normalize_code("16"), "Unauthenticated");
        assert_eq!(normalize_code("17"), "other");
        assert_eq!(normalize_code("-1"), "other");
        assert_eq!(normalize_code("not found"), "other");
        assert_eq!(grpc_code_label(tonic::Code::Ok), "OK");
        assert_eq!(
            grpc_code_label(tonic::Code::Unauthenticated),
            "Unauthenticated"
        );
        assert_eq!(grpc_code_label(tonic::Code::Cancelled), "Canceled");
    }
}
