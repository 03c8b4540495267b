//! Benchmark: Session Manager through real processes — a `bosun server` on PostgreSQL and
//! Redis and a registered `bosun-agent` on this machine. A program that prints figures, not a
//! test; nothing is asserted about time.
//!
//! ```text
//! cargo build --release -p bosun-cli -p bosun-agent -p bosun-tests --bins
//! target/release/session_bench [--concurrency 32] [--seconds 10] [--bulk-mib 1024]
//!     [--keystrokes 2000]
//! ```
//! (BOSUN_TEST_DATABASE_URL / BOSUN_TEST_REDIS_URL or the local defaults.)
//!
//! - starts: `--concurrency` callers doing StartSession back to back for `--seconds`
//!   (StartSession/s: the control plane alone — row, token, node message; the agent attaches
//!   and runs each one meanwhile, on the same cores), then the same callers doing the whole
//!   thing a user waits for: StartSession + Connect + the output and exit of the interactive
//!   command `true` (sessions/s).
//! - relay: a port-forwarding session to a local TCP source writing `--bulk-mib` MiB; MB/s
//!   received by the client (source → agent → gateway → client).
//! - keystrokes: one byte at a time echoed by `stty raw -echo; cat` through a session, against
//!   the same on a local PTY; p50/p90/p99 and the added p50.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::sessions::v1::StartSessionRequest;
use bosun_session::client::{SessionClient, SessionEvent};
use bosun_tests::Process;
use bosun_tests::sessions::{Deployment, Node, params, start_session};
use tokio::io::AsyncWriteExt;

struct Options {
    concurrency: usize,
    seconds: u64,
    bulk_mib: u64,
    keystrokes: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        concurrency: 32,
        seconds: 10,
        bulk_mib: 1024,
        keystrokes: 2000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--concurrency" => options.concurrency = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--bulk-mib" => options.bulk_mib = value()?.parse()?,
            "--keystrokes" => options.keystrokes = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if options.concurrency == 0 || options.seconds == 0 || options.keystrokes == 0 {
        bail!("--concurrency, --seconds and --keystrokes must be positive");
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let deployment = Deployment::new().await?;
    // Real minutes: nothing in the benchmark should time out.
    let server = Process::start(
        deployment
            .launch(&["server"])
            .env("BOSUN_SESSIONS__TIME_UNIT", "60s")
            .env("RUST_LOG", "warn"),
    )
    .await?;
    let token = server.admin_token().await?;
    let node = Node::start(&server, &token, &server.url).await?;
    println!(
        "session_bench: server {} on postgres + redis, node {}, {} cores",
        server.url,
        node.id,
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    full_starts(&server, &token, &node.id, &options).await?;
    relay(&server, &token, &node.id, options.bulk_mib).await?;
    keystrokes(&server, &token, &node.id, options.keystrokes).await?;
    // Last: it leaves the agent thousands of sessions to attach and run.
    starts(&server, &token, &node.id, &options).await?;
    Ok(())
}

fn interactive(node: &str, command: &str) -> StartSessionRequest {
    StartSessionRequest {
        target: node.to_owned(),
        document_name: "Bosun-StartInteractiveCommand".into(),
        parameters: params(&[("command", command)]),
        reason: "bench".into(),
        ..Default::default()
    }
}

/// Runs `callers` loops of `one` for `seconds`; returns (successes, failures) within that
/// window and the window. Calls still running at its end are waited for but not counted (a
/// straggler shows in the latencies instead of stretching the window).
async fn closed_loop<F, Fut>(callers: usize, seconds: u64, one: F) -> (u64, u64, Duration)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (stop, done, failed, one) = (stop.clone(), done.clone(), failed.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            let mut reported = false;
            while !stop.load(Ordering::Relaxed) {
                match one().await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        if !reported {
                            eprintln!("  a call failed: {error:#}");
                            reported = true;
                        }
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let counted = (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed(),
    );
    for task in tasks {
        let _ = task.await;
    }
    counted
}

async fn starts(
    server: &Process,
    token: &str,
    node: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let channel = server.channel().await?;
    let (url, token_owned, node_owned) = (server.url.clone(), token.to_owned(), node.to_owned());
    let (ok, failed, elapsed) = closed_loop(options.concurrency, options.seconds, move || {
        let (channel, token, node) = (channel.clone(), token_owned.clone(), node_owned.clone());
        async move {
            let mut client =
                bosun_proto::sessions::v1::session_service_client::SessionServiceClient::new(
                    channel,
                );
            client
                .start_session(bosun_tests::authed(interactive(&node, "true"), &token))
                .await?;
            Ok(())
        }
    })
    .await;
    let _ = url;
    println!(
        "starts: StartSession only: {:.0}/s ({ok} in {:.1} s, {failed} failed, {} callers; \
         the agent attaches to and runs each meanwhile, on the same cores)",
        ok as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        options.concurrency
    );
    Ok(())
}

/// What a user waits for: StartSession, Connect, the command's output and exit.
async fn full_starts(
    server: &Process,
    token: &str,
    node: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let channel = server.channel().await?;
    let (token_owned, node_owned) = (token.to_owned(), node.to_owned());
    let latencies: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let recorded = latencies.clone();
    let (ok, failed, elapsed) = closed_loop(options.concurrency, options.seconds, move || {
        let (channel, token, node) = (channel.clone(), token_owned.clone(), node_owned.clone());
        let recorded = recorded.clone();
        async move {
            let began = Instant::now();
            let started =
                bosun_proto::sessions::v1::session_service_client::SessionServiceClient::new(
                    channel.clone(),
                )
                .start_session(bosun_tests::authed(
                    interactive(&node, "echo ready"),
                    &token,
                ))
                .await?
                .into_inner();
            let mut client =
                SessionClient::connect(channel, &token, &started.session_id, &started.token_value)
                    .await?;
            client.resize(80, 24, Some("xterm")).await?;
            let mut output = Vec::new();
            loop {
                match client.next_event().await {
                    SessionEvent::Output(bytes) => output.extend_from_slice(&bytes),
                    SessionEvent::Exit(_) => break,
                    SessionEvent::Closed { status, reason } => {
                        bail!("closed before the exit: {status}: {reason}")
                    }
                    SessionEvent::Disconnected(_) => bail!("stream broke"),
                    SessionEvent::PortData { .. } | SessionEvent::PortClose { .. } => {}
                }
            }
            if !String::from_utf8_lossy(&output).contains("ready") {
                bail!(
                    "exited without its output: {:?}",
                    String::from_utf8_lossy(&output)
                );
            }
            recorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(began.elapsed());
            Ok(())
        }
    })
    .await;
    println!(
        "starts: StartSession + Connect + output + exit of `echo ready`: {:.0} sessions/s \
         ({ok} in {:.1} s, {failed} failed, {} callers)",
        ok as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        options.concurrency
    );
    let mut latencies = std::mem::take(
        &mut *latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    latencies.sort();
    if !latencies.is_empty() {
        println!(
            "starts: time to the exit of one session: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, \
             max {:.0} ms",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.9).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

/// A TCP source that writes `bytes` zero bytes to each connection, then closes.
async fn bulk_source(bytes: u64) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let block = vec![0u8; 256 << 10];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    if stream.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(port)
}

async fn relay(server: &Process, token: &str, node: &str, mib: u64) -> anyhow::Result<()> {
    let bytes = mib << 20;
    let port = bulk_source(bytes).await?;
    let started = start_session(
        server,
        token,
        StartSessionRequest {
            target: node.to_owned(),
            document_name: "Bosun-StartPortForwardingSession".into(),
            parameters: params(&[("portNumber", &port.to_string())]),
            reason: "bench".into(),
            ..Default::default()
        },
    )
    .await?;
    let mut client = SessionClient::connect(
        server.channel().await?,
        token,
        &started.session_id,
        &started.token_value,
    )
    .await?;
    let began = Instant::now();
    client.port_open(1).await?;
    let mut received: u64 = 0;
    loop {
        match client.next_event().await {
            SessionEvent::PortData {
                connection_id: 1,
                data,
            } => received += data.len() as u64,
            SessionEvent::PortClose {
                connection_id: 1,
                error,
            } => {
                if !error.is_empty() {
                    bail!("the forwarded connection failed: {error}");
                }
                break;
            }
            SessionEvent::Closed { status, reason } => bail!("closed: {status} {reason}"),
            SessionEvent::Disconnected(_) => bail!("the stream broke"),
            _ => {}
        }
    }
    let elapsed = began.elapsed();
    if received != bytes {
        bail!("received {received} of {bytes} bytes");
    }
    println!(
        "relay: port forwarding, {mib} MiB from a local TCP source: {:.0} MB/s ({:.1} s)",
        received as f64 / 1e6 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    println!(
        "keystrokes: {label}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms ({} keys)",
        p50.as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
    p50
}

const ECHO_COMMAND: &str = "stty raw -echo; echo go; exec cat";

async fn keystrokes(server: &Process, token: &str, node: &str, count: usize) -> anyhow::Result<()> {
    // Through a session.
    let started = start_session(server, token, interactive(node, ECHO_COMMAND)).await?;
    let mut client = SessionClient::connect(
        server.channel().await?,
        token,
        &started.session_id,
        &started.token_value,
    )
    .await?;
    client.resize(80, 24, Some("xterm")).await?;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("go") {
        match client.next_event().await {
            SessionEvent::Output(bytes) => seen.extend_from_slice(&bytes),
            other => bail!("before the echo started: {other:?}"),
        }
    }
    // Give `cat` its moment to start reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        client.send_input(&[key]).await?;
        loop {
            match client.next_event().await {
                SessionEvent::Output(bytes) if bytes.contains(&key) => break,
                SessionEvent::Output(_) => {}
                other => bail!("keystroke {i}: {other:?}"),
            }
        }
        samples.push(sent.elapsed());
    }
    let session = report("through a session", samples);
    client.send_input(b"\x04").await?;

    // The same on a local PTY.
    let local = local_pty_round_trips(count).await?;
    let direct = report("local PTY", local);
    println!(
        "keystrokes: added by the session at p50: {:.3} ms",
        (session.saturating_sub(direct)).as_secs_f64() * 1e3
    );
    Ok(())
}

/// Round trips of one byte through `sh -c 'stty raw -echo; cat'` on a PTY of this process,
/// with plain blocking reads and writes on a thread of its own (the least a local terminal
/// could add).
async fn local_pty_round_trips(count: usize) -> anyhow::Result<Vec<Duration>> {
    tokio::task::spawn_blocking(move || local_pty_blocking(count)).await?
}

fn local_pty_blocking(count: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::{Read, Write};
    use std::os::unix::ffi::OsStrExt;

    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
    let mut child = std::process::Command::new("sh")
        .args(["-c", ECHO_COMMAND])
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .spawn()?;
    let mut pty = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("go") {
        let n = pty.read(&mut buffer)?;
        if n == 0 {
            bail!("the local PTY closed");
        }
        seen.extend_from_slice(&buffer[..n]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        pty.write_all(&[key])?;
        loop {
            let n = pty.read(&mut buffer)?;
            if n == 0 {
                bail!("the local PTY closed");
            }
            if buffer[..n].contains(&key) {
                break;
            }
        }
        samples.push(sent.elapsed());
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(samples)
}
