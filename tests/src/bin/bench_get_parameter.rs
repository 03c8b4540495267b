//! Benchmark: GetParameter throughput and latency through the gateway, printed beside a bare
//! tonic unary server (grpc.health.v1 Check, no auth, no store) measured in the same run on
//! the same machine with the same client. A program that prints figures, not a test.
//!
//! ```text
//! cargo run --release -p bosun-tests --bin bench_get_parameter -- [--store sqlite|postgres]
//!     [--clients 64] [--connections 4] [--seconds 10] [--parameters 100]
//! ```
//! `--store postgres` runs the server on a fresh PostgreSQL schema with Redis
//! (BOSUN_TEST_DATABASE_URL / BOSUN_TEST_REDIS_URL or the local defaults). The `bosun` binary
//! is taken from beside this one, so build both with the same profile first:
//! `cargo build --release -p bosun-cli -p bosun-tests`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::parameters::v1::parameter_service_client::ParameterServiceClient;
use bosun_proto::parameters::v1::{GetParameterRequest, ParameterType, PutParameterRequest};
use bosun_tests::{Launch, Process, Store, authed};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Options {
    store: String,
    clients: usize,
    connections: usize,
    seconds: u64,
    parameters: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        store: "sqlite".into(),
        clients: 64,
        connections: 4,
        seconds: 10,
        parameters: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => options.store = value()?,
            "--clients" => options.clients = value()?.parse()?,
            "--connections" => options.connections = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--parameters" => options.parameters = value()?.parse()?,
            "--serve-echo" => {}
            other => bail!("unknown flag {other}"),
        }
    }
    if !["sqlite", "postgres"].contains(&options.store.as_str()) {
        bail!("--store must be sqlite or postgres");
    }
    if options.clients == 0 || options.connections == 0 || options.seconds == 0 {
        bail!("--clients, --connections and --seconds must be positive");
    }
    Ok(options)
}

/// Latencies of one run, in microseconds.
struct Figures {
    calls: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<u32>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[index]) / 1000.0
    }
}

/// Runs `call` from `clients` tasks over `channels` for `seconds`, after a one-second warm-up.
async fn drive<F, Fut>(channels: &[Channel], clients: usize, seconds: u64, call: F) -> Figures
where
    F: Fn(Channel, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let channel = channels[client % channels.len()].clone();
        let (call, measuring, stop) = (call.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut i = client;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = call(channel.clone(), i).await;
                if measuring.load(Ordering::Relaxed) {
                    latencies
                        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if !ok {
                        errors += 1;
                    }
                }
                i += clients;
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((task_latencies, task_errors)) = task.await {
            latencies.extend(task_latencies);
            errors += task_errors;
        }
    }
    latencies.sort_unstable();
    Figures {
        calls: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

async fn channels(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count {
        channels.push(
            Endpoint::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// `--serve-echo PORT`: the baseline server, in its own process like the gateway.
async fn serve_echo() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .skip_while(|arg| arg != "--serve-echo")
        .nth(1)
        .context("--serve-echo needs a port")?
        .parse()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .serve(format!("127.0.0.1:{port}").parse()?)
        .await?;
    Ok(())
}

fn print(label: &str, figures: &Figures) {
    println!(
        "{label:<34} {:>10.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {}",
        figures.rate(),
        figures.percentile(0.50),
        figures.percentile(0.99),
        figures.errors
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--serve-echo") {
        return serve_echo().await;
    }
    let options = options()?;
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    println!(
        "GetParameter benchmark: store {}, {} clients over {} connections, {} s, {} cores",
        options.store, options.clients, options.connections, options.seconds, cores
    );

    // Baseline: a bare tonic unary call in a separate process.
    let port = bosun_tests::free_port()?;
    let mut echo = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--serve-echo")
        .arg(port.to_string())
        .kill_on_drop(true)
        .spawn()?;
    let echo_url = format!("http://127.0.0.1:{port}");
    let mut echo_channels = None;
    for _ in 0..100 {
        if let Ok(found) = channels(&echo_url, options.connections).await {
            echo_channels = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echo_channels = echo_channels.context("echo server did not start")?;
    let echo_figures = drive(
        &echo_channels,
        options.clients,
        options.seconds,
        |channel, _| async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        },
    )
    .await;
    echo.kill().await?;

    // Bosun: the all-in-one server, gateway authentication and all.
    let store = match options.store.as_str() {
        "postgres" => Store::postgres().await,
        _ => Store::Sqlite,
    };
    let data = tempfile::tempdir()?;
    let mut launch = Launch::new(&["server"], data.path())
        .store(&store)
        .env("RUST_LOG", "warn");
    if options.store == "postgres" {
        let redis = std::env::var("BOSUN_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        launch = launch.env("BOSUN_REDIS_URL", &redis);
    }
    let server = Process::start(launch).await?;
    let token: Arc<str> = Arc::from(server.admin_token().await?);
    let bosun_channels = channels(&server.url, options.connections).await?;
    let mut client = ParameterServiceClient::new(bosun_channels[0].clone());
    for index in 0..options.parameters {
        client
            .put_parameter(authed(
                PutParameterRequest {
                    name: format!("/bench/app/param-{index}"),
                    value: format!("value-{index}"),
                    r#type: ParameterType::String as i32,
                    overwrite: true,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .context("seed parameters")?;
    }
    // The same path with no store behind it: how much of a call is the gateway and auth.
    let identity_figures = drive(&bosun_channels, options.clients, options.seconds, {
        let token = token.clone();
        move |channel, _| {
            let token = token.clone();
            async move {
                bosun_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel)
                    .get_caller_identity(authed(
                        bosun_proto::auth::v1::GetCallerIdentityRequest {},
                        &token,
                    ))
                    .await
                    .is_ok()
            }
        }
    })
    .await;
    let parameters = options.parameters;
    let bosun_figures = drive(
        &bosun_channels,
        options.clients,
        options.seconds,
        move |channel, i| {
            let token = token.clone();
            async move {
                ParameterServiceClient::new(channel)
                    .get_parameter(authed(
                        GetParameterRequest {
                            name: format!("/bench/app/param-{}", i % parameters),
                            with_decryption: false,
                        },
                        &token,
                    ))
                    .await
                    .is_ok()
            }
        },
    )
    .await;

    print("bare tonic unary (health Check)", &echo_figures);
    print("bosun GetCallerIdentity (no store)", &identity_figures);
    print(
        &format!("bosun GetParameter ({})", options.store),
        &bosun_figures,
    );
    println!(
        "GetParameter reaches {:.0}% of the bare server's rate",
        100.0 * bosun_figures.rate() / echo_figures.rate().max(1.0)
    );
    Ok(())
}
