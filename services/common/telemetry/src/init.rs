//! Builds the process-wide tracing subscriber and the OpenTelemetry tracer provider behind it,
//! and the guard that flushes exported spans at shutdown.

use std::fmt;
use std::io::IsTerminal as _;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_log::AsLog as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How long one OTLP export may take before the exporter gives up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for the flush in [`TelemetryGuard::shutdown`].
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for the best-effort flush when the guard is dropped without `shutdown`.
/// Shorter, because a drop may happen on an async worker thread.
const DROP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log format name that is neither `pretty` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLogFormatError(String);

impl fmt::Display for ParseLogFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log format {:?}: expected pretty or json", self.0)
    }
}

impl std::error::Error for ParseLogFormatError {}

impl FromStr for LogFormat {
    type Err = ParseLogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(ParseLogFormatError(s.to_owned())),
        }
    }
}

/// What [`init`] needs. The caller reads the environment (`RUST_LOG` aside) and passes it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `service.name` on every exported span, e.g. `bosun-gateway`.
    pub service_name: String,
    pub log_format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives; `None` reads `RUST_LOG`, else `info`
    /// (with OpenTelemetry's own chatter at `warn`).
    pub log_filter: Option<String>,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Pretty logs, filter from `RUST_LOG`, no export.
    pub fn new(service_name: impl Into<String>) -> Self {
        TelemetryConfig {
            service_name: service_name.into(),
            log_format: LogFormat::Pretty,
            log_filter: None,
            otlp_endpoint: None,
        }
    }
}

/// Installs the global subscriber and the W3C trace-context propagator.
///
/// The OpenTelemetry layer is installed even without an OTLP endpoint: spans then get real
/// trace ids that are propagated to the next hop and stored by audit, but nothing is exported.
///
/// When a global subscriber is already set (tests call this repeatedly) nothing is installed
/// and the returned guard does nothing.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    // Libraries that read the global propagator see the same format as our own helpers.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // Concurrent callers (tests on several threads) wait here until the first one has
    // finished, so none of them emits spans before the subscriber is in place.
    let _serialised = INIT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if tracing::dispatcher::has_been_set() {
        return Ok(TelemetryGuard { inner: None });
    }

    let env_filter = build_env_filter(config.log_filter.as_deref())?;
    let export = build_tracer_provider(config)?;
    let tracer = export.provider.tracer("bosun");

    let fmt_layer = match config.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // The exporter's own transport logs through tracing too; sending those spans and events
    // to OpenTelemetry would make every export produce more to export.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            !is_export_machinery(metadata.target())
        }));

    let subscriber = Registry::default()
        .with(env_filter)
        .with(fmt_layer)
        .with(otel_layer);

    if tracing::subscriber::set_global_default(subscriber).is_err() {
        // Lost a race with another initialiser: theirs stays, ours never saw a span.
        export.shutdown_blocking(DROP_FLUSH_TIMEOUT);
        return Ok(TelemetryGuard { inner: None });
    }
    // Crates that still use `log` reach the same subscriber. Failure means some other logger
    // owns `log`; our subscriber works regardless, so it is not an error.
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(tracing::level_filters::LevelFilter::current().as_log())
        .init();
    opentelemetry::global::set_tracer_provider(export.provider.clone());

    Ok(TelemetryGuard {
        inner: Some(export),
    })
}

fn build_env_filter(directives: Option<&str>) -> anyhow::Result<EnvFilter> {
    match directives {
        Some(directives) => EnvFilter::try_new(directives)
            .with_context(|| format!("parsing log filter {directives:?}")),
        None => match std::env::var("RUST_LOG") {
            Ok(value) if !value.trim().is_empty() => {
                EnvFilter::try_new(&value).with_context(|| format!("parsing RUST_LOG {value:?}"))
            }
            // OpenTelemetry announces its own set-up at info; keep start-up quiet.
            _ => Ok(EnvFilter::new("info,opentelemetry=warn")),
        },
    }
}

/// Targets of the crates that carry OTLP export traffic.
fn is_export_machinery(target: &str) -> bool {
    const CRATES: [&str; 5] = ["h2", "hyper", "hyper_util", "tower", "tonic"];
    target.starts_with("opentelemetry")
        || CRATES.iter().any(|name| {
            target == *name
                || target
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
}

struct TraceExport {
    provider: SdkTracerProvider,
    /// Drives the exporter's tonic channel. Owning it, rather than borrowing the application's
    /// runtime, means a flush never waits on a runtime that is itself blocked in the flush
    /// (STACK trap 7), and `init` works before or outside the application's runtime.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TraceExport {
    /// Flushes and stops the provider, then the export runtime. Blocks up to `timeout`.
    ///
    /// Without an exporter there is nothing to flush, and the provider stays up: a stopped
    /// provider hands out invalid span contexts, which would end trace propagation (and
    /// `current_trace_id`) for the rest of the process.
    fn shutdown_blocking(self, timeout: Duration) {
        let Some(runtime) = self.runtime else {
            return;
        };
        if let Err(error) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(%error, "flushing traces at shutdown failed");
        }
        // `shutdown_background`, because dropping a runtime from async code panics.
        runtime.shutdown_background();
    }
}

fn build_tracer_provider(config: &TelemetryConfig) -> anyhow::Result<TraceExport> {
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);

    let endpoint = config
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty());
    let Some(endpoint) = endpoint else {
        return Ok(TraceExport {
            provider: builder.build(),
            runtime: None,
        });
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bosun-otlp-export")
        .enable_all()
        .build()
        .context("starting the otlp export runtime")?;
    let exporter = {
        // The lazily connecting channel spawns its worker on the runtime entered here.
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    };
    match exporter {
        Ok(exporter) => Ok(TraceExport {
            provider: builder.with_batch_exporter(exporter).build(),
            runtime: Some(runtime),
        }),
        Err(error) => {
            runtime.shutdown_background();
            Err(anyhow::Error::new(error)
                .context(format!("building the otlp span exporter for {endpoint}")))
        }
    }
}

/// Keeps the tracer provider alive; flush it with [`TelemetryGuard::shutdown`] as the last
/// step of shutdown, so the spans of the shutdown itself are exported too.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    inner: Option<TraceExport>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("active", &self.inner.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Exports the buffered spans and stops the exporter.
    pub async fn shutdown(mut self) {
        let Some(export) = self.inner.take() else {
            return;
        };
        // Flushing blocks the calling thread; keep it off the async workers (STACK trap 7).
        if tokio::runtime::Handle::try_current().is_ok() {
            let flush = tokio::task::spawn_blocking(move || {
                export.shutdown_blocking(SHUTDOWN_TIMEOUT);
            });
            if let Err(error) = flush.await {
                tracing::warn!(%error, "the telemetry flush task failed");
            }
        } else {
            export.shutdown_blocking(SHUTDOWN_TIMEOUT);
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Best effort: the export runs on our own runtime, so this is bounded by the timeout
        // even on a current-thread runtime, and it lets spans out when `main` returns early.
        if let Some(export) = self.inner.take() {
            export.shutdown_blocking(DROP_FLUSH_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_case_insensitively() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" Pretty ".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        let error = "yaml"
            .parse::<LogFormat>()
            .expect_err("yaml is not a log format");
        assert_eq!(
            error.to_string(),
            "log format \"yaml\": expected pretty or json"
        );
    }

    #[test]
    fn export_machinery_is_recognised_by_crate_not_prefix() {
        assert!(is_export_machinery("h2::codec"));
        assert!(is_export_machinery("tonic::transport"));
        assert!(is_export_machinery("opentelemetry-otlp"));
        assert!(is_export_machinery("hyper"));
        assert!(!is_export_machinery("tower_http::trace"));
        assert!(!is_export_machinery("tonic_health"));
        assert!(!is_export_machinery("bosun_telemetry"));
    }

    #[test]
    fn invalid_log_filter_is_an_error() {
        let error = build_env_filter(Some("bosun=loud")).expect_err("the filter is malformed");
        assert!(error.to_string().starts_with("parsing log filter"));
    }
}
