//! Fleet simulator and scale benchmark: registers N nodes and holds N real agent streams
//! (the `bosun-agent` library with an in-memory journal and a cheap echo executor) against a
//! `bosun server` it starts, then prints what the gateway process pays for them: resident
//! memory per stream, open descriptors, CPU while the fleet only heartbeats, and how long the
//! whole fleet takes to come back after the gateway is killed and restarted.
//!
//! ```text
//! cargo build --release -p bosun-cli -p bosun-tests --bins
//! target/release/fleet_sim --agents 10000 [--store sqlite|postgres] [--hold 60]
//!     [--heartbeat 30] [--ramp 5000] [--register-concurrency 64] [--restart]
//!     [--streams-per-connection 1] [--redis] [--send-command 3]
//! ```
//! `--send-command N` then runs N commands (AWS-RunShellScript, MaxConcurrency 100%) on every
//! node, one after the other, and prints how long each took from SendCommand until the command
//! and every invocation were terminal and stored; the simulated agents answer `commands.run`
//! as the real one does (an InProgress result, then the final one) without running anything.
//! `--redis` puts the server on Redis (queues, presence) as a distributed deployment is; with
//! `--store postgres` that is the configuration the Run Command target is measured on.
//! `--streams-per-connection N` multiplexes N agents over one HTTP/2 connection, as an HTTP/2
//! proxy in front of the gateways would: it separates what a stream costs the gateway from what
//! a connection costs, and lets one process hold more streams than it may open descriptors.
//! Runs as root raise their own open-file limit (the server inherits it); otherwise raise it
//! first (`ulimit -n`). One loopback source address carries at most ~28,000 connections to one
//! port, so agents are spread over 127.0.0.2, 127.0.0.3, … (20,000 each).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bosun_agent::{
    AgentOptions, EndpointConfig, Executor, Identity, MemoryJournal, ResultSink, protocol, register,
};
use bosun_proto::agent::v1::{Delivery, HostFacts};
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::inventory::v1::{
    CreateActivationRequest, DescribeInstanceInformationRequest, InstanceInformationFilter,
};
use bosun_tests::{Launch, Process, Store, authed};
use redis::AsyncCommands as _;
use tokio_util::sync::CancellationToken;

const AGENTS_PER_SOURCE: usize = 20_000;

struct Options {
    agents: usize,
    store: String,
    hold: u64,
    heartbeat: u64,
    ramp: usize,
    register_concurrency: usize,
    restart: bool,
    streams_per_connection: usize,
    redis: bool,
    send_command: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        agents: 1000,
        store: "sqlite".into(),
        hold: 60,
        heartbeat: 30,
        ramp: 5000,
        register_concurrency: 64,
        restart: false,
        streams_per_connection: 1,
        redis: false,
        send_command: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--agents" => options.agents = value()?.parse()?,
            "--store" => options.store = value()?,
            "--hold" => options.hold = value()?.parse()?,
            "--heartbeat" => options.heartbeat = value()?.parse()?,
            "--ramp" => options.ramp = value()?.parse()?,
            "--register-concurrency" => options.register_concurrency = value()?.parse()?,
            "--restart" => options.restart = true,
            "--streams-per-connection" => options.streams_per_connection = value()?.parse()?,
            "--redis" => options.redis = true,
            "--send-command" => options.send_command = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if !["sqlite", "postgres"].contains(&options.store.as_str()) {
        bail!("--store must be sqlite or postgres");
    }
    if options.agents == 0
        || options.ramp == 0
        || options.register_concurrency == 0
        || !(1..=200).contains(&options.streams_per_connection)
    {
        bail!(
            "--agents, --ramp and --register-concurrency must be positive, \
             --streams-per-connection 1-200"
        );
    }
    if options.heartbeat == 0 {
        bail!("--heartbeat must be at least 1 (seconds)");
    }
    Ok(options)
}

/// Cheap fake execution: a `commands.run` is answered as the real agent answers it (an
/// InProgress result as its first plugin starts, then the final result) without running
/// anything; any other delivery with its own payload.
struct Echo {
    handled: AtomicU64,
}

#[async_trait]
impl Executor for Echo {
    async fn handle(&self, delivery: Delivery, results: ResultSink) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        if delivery.topic != protocol::TOPIC_COMMANDS_RUN {
            let _ = results.complete(delivery.payload);
            return;
        }
        let Ok(command) = serde_json::from_slice::<protocol::RunCommand>(&delivery.payload) else {
            let _ = results.complete(delivery.payload);
            return;
        };
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let plugin = |spec: &protocol::PluginSpec, status| protocol::PluginResult {
            name: spec.name.clone(),
            step: spec.step.clone(),
            status,
            response_code: if status == protocol::CommandStatus::Success {
                0
            } else {
                -1
            },
            stdout: if status == protocol::CommandStatus::Success {
                "ok\n".into()
            } else {
                String::new()
            },
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_streamed: 0,
            stderr_streamed: 0,
            stream_truncated: false,
            error: None,
            started_at: Some(now.clone()),
            ended_at: (status == protocol::CommandStatus::Success).then(|| now.clone()),
        };
        let mut result = protocol::CommandResult {
            command_id: command.command_id.clone(),
            status: protocol::CommandStatus::InProgress,
            plugins: command
                .plugins
                .first()
                .map(|spec| plugin(spec, protocol::CommandStatus::InProgress))
                .into_iter()
                .collect(),
            error: None,
        };
        if let Ok(payload) = serde_json::to_vec(&result) {
            let _ = results.progress(payload);
        }
        result.status = protocol::CommandStatus::Success;
        result.plugins = command
            .plugins
            .iter()
            .map(|spec| plugin(spec, protocol::CommandStatus::Success))
            .collect();
        if let Ok(payload) = serde_json::to_vec(&result) {
            let _ = results.complete(payload);
        }
    }
}

/// Sends one command to every node and waits until it and all its invocations are terminal.
/// Prints and returns the time from SendCommand until then.
async fn run_command(server: &Process, token: &str, agents: usize) -> anyhow::Result<Duration> {
    use bosun_proto::commands::v1::command_service_client::CommandServiceClient;
    use bosun_proto::commands::v1::{ListCommandsRequest, ParameterValues, SendCommandRequest};
    let mut client = CommandServiceClient::new(server.channel().await?);
    let started = Instant::now();
    let command = client
        .send_command(authed(
            SendCommandRequest {
                document_name: "AWS-RunShellScript".into(),
                targets: vec![bosun_proto::inventory::v1::Target {
                    key: "InstanceIds".into(),
                    values: vec!["*".into()],
                }],
                parameters: [(
                    "commands".to_owned(),
                    ParameterValues {
                        values: vec!["echo ok".into()],
                    },
                )]
                .into_iter()
                .collect(),
                max_concurrency: "100%".into(),
                max_errors: "0".into(),
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner()
        .command
        .context("SendCommand answered no command")?;
    let accepted = started.elapsed();
    let mut first_done = None;
    let mut timeline = Vec::new();
    let mut next_sample = Duration::from_millis(500);
    loop {
        let listed = client
            .list_commands(authed(
                ListCommandsRequest {
                    command_id: command.command_id.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner()
            .commands
            .into_iter()
            .next()
            .context("the command is not listed")?;
        if first_done.is_none() && listed.completed_count > 0 {
            first_done = Some(started.elapsed());
        }
        if started.elapsed() >= next_sample {
            timeline.push(format!(
                "{:.1}s:{}",
                started.elapsed().as_secs_f64(),
                listed.completed_count
            ));
            next_sample += Duration::from_millis(500);
        }
        if ["Success", "Failed", "TimedOut", "Cancelled"].contains(&listed.status.as_str()) {
            let took = started.elapsed();
            println!(
                "SendCommand to {} nodes ({} targeted): accepted in {:.3} s, first invocation \
                 done at {:.3} s, all {} terminal at {:.3} s: {} ({}), {:.0} invocations/s",
                agents,
                listed.target_count,
                accepted.as_secs_f64(),
                first_done.unwrap_or(took).as_secs_f64(),
                listed.completed_count,
                took.as_secs_f64(),
                listed.status,
                listed.status_details,
                f64::from(listed.completed_count) / took.as_secs_f64(),
            );
            println!("  completed over time: {}", timeline.join(" "));
            return Ok(took);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the command did not finish within 600 s: {listed:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes every Redis key of this run's deployment (streams, presence, caches).
async fn remove_redis_keys(prefix: &str) -> anyhow::Result<()> {
    let url =
        std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = {
        let mut scan: redis::AsyncIter<'_, String> =
            connection.scan_match(format!("{prefix}*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = futures::StreamExt::next(&mut scan).await {
            keys.push(key?);
        }
        keys
    };
    for chunk in keys.chunks(500) {
        let _: () = redis::AsyncCommands::del(&mut connection, chunk).await?;
    }
    Ok(())
}

/// Raises the soft open-file limit (and the hard one, when allowed) to `wanted`; returns what
/// the soft limit is afterwards.
fn raise_open_files(wanted: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= wanted {
        return soft;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = wanted.min(nr_open);
    if setrlimit(Resource::RLIMIT_NOFILE, target, target.max(hard)).is_ok() {
        return target;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; the soft one may go up to the hard one.
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(target), hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(soft, _)| soft)
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start after ") ".
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// How many registered nodes are Online now.
async fn online(server: &Process, token: &str) -> anyhow::Result<usize> {
    let mut client = NodeServiceClient::new(server.channel().await?);
    let mut count = 0;
    let mut next_token = String::new();
    loop {
        let page = client
            .describe_instance_information(authed(
                DescribeInstanceInformationRequest {
                    filters: vec![InstanceInformationFilter {
                        key: "PingStatus".into(),
                        values: vec!["Online".into()],
                    }],
                    max_results: 1000,
                    next_token: next_token.clone(),
                },
                token,
            ))
            .await?
            .into_inner();
        count += page.instance_information_list.len();
        if page.next_token.is_empty() {
            return Ok(count);
        }
        next_token = page.next_token;
    }
}

/// Waits until `want` nodes are Online (or `limit` passes); returns the time it took and the
/// count reached.
async fn wait_online(
    server: &Process,
    token: &str,
    want: usize,
    limit: Duration,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < limit {
        last = online(server, token).await.unwrap_or(last);
        if last >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((started.elapsed(), last))
}

async fn register_fleet(
    server: &Process,
    token: &str,
    options: &Options,
) -> anyhow::Result<Vec<Identity>> {
    let mut nodes = NodeServiceClient::new(server.channel().await?);
    let mut activations = Vec::new();
    for first in (0..options.agents).step_by(1000) {
        let limit = (options.agents - first).min(1000);
        let created = nodes
            .create_activation(authed(
                CreateActivationRequest {
                    description: "fleet simulator".into(),
                    default_instance_name: "sim".into(),
                    registration_limit: i32::try_from(limit)?,
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner();
        activations.extend(std::iter::repeat_n(
            (created.activation_id, created.activation_code),
            limit,
        ));
    }
    let endpoint = EndpointConfig::new(server.url.clone());
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.register_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (id, code)) in activations.into_iter().enumerate() {
        let permit = semaphore.clone().acquire_owned().await?;
        let endpoint = endpoint.clone();
        tasks.spawn(async move {
            let _permit = permit;
            register(&endpoint, &id, &code, facts(index)).await
        });
    }
    let mut identities = Vec::with_capacity(options.agents);
    while let Some(joined) = tasks.join_next().await {
        identities.push(joined??);
    }
    Ok(identities)
}

fn facts(index: usize) -> HostFacts {
    HostFacts {
        platform_type: "Linux".into(),
        platform_name: "Simulated Linux".into(),
        platform_version: "1.0".into(),
        hostname: format!("sim-{index:06}"),
        ip_addresses: vec![format!(
            "10.{}.{}.{}",
            index >> 16 & 255,
            index >> 8 & 255,
            index & 255
        )],
        agent_version: env!("CARGO_PKG_VERSION").into(),
        architecture: std::env::consts::ARCH.into(),
    }
}

fn source_address(index: usize) -> IpAddr {
    let host = 2 + index / AGENTS_PER_SOURCE;
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        (host / 250) as u8,
        (host % 250) as u8 + 2,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let wanted = (options.agents as u64) * 2 + 4096;
    let limit = raise_open_files(wanted);
    if limit < wanted {
        eprintln!(
            "warning: open files limited to {limit} (the hard limit; raising it needs CAP_SYS_RESOURCE); {wanted} wanted for {} agents",
            options.agents
        );
    }
    let data = tempfile::tempdir()?;
    let store = match options.store.as_str() {
        "postgres" => Store::postgres().await,
        _ => Store::Sqlite,
    };
    let redis_prefix = format!("bosun-sim-{}:", uuid::Uuid::new_v4().simple());
    let launch = |data: &std::path::Path| {
        let launch = Launch::new(&["server"], data);
        let launch = if options.redis {
            launch
                .env(
                    "BOSUN_REDIS_URL",
                    &std::env::var("BOSUN_TEST_REDIS_URL")
                        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
                )
                .env("BOSUN_REDIS_PREFIX", &redis_prefix)
        } else {
            launch
        };
        launch
            .store(&store)
            .env("RUST_LOG", "warn")
            .env("BOSUN_AGENTS__LOCAL_AGENT", "false")
            .env(
                "BOSUN_AGENTS__HEARTBEAT_INTERVAL",
                &format!("{}s", options.heartbeat),
            )
            .env(
                "BOSUN_AGENTS__PING_TIMEOUT",
                &format!("{}s", options.heartbeat * 4),
            )
    };
    let mut server = Process::start(launch(data.path())).await?;
    let port = server.addr.port();
    let token = server.admin_token().await?;
    let pid = server.pid().context("server has no pid")?;
    println!(
        "fleet_sim: {} agents, store {}{}, heartbeat {} s, {} stream(s) per connection",
        options.agents,
        options.store,
        if options.redis { " + Redis" } else { "" },
        options.heartbeat,
        options.streams_per_connection
    );

    let started = Instant::now();
    let identities = register_fleet(&server, &token, &options).await?;
    let took = started.elapsed();
    println!(
        "registered {} nodes in {:.1} s ({:.0} registrations/s)",
        identities.len(),
        took.as_secs_f64(),
        identities.len() as f64 / took.as_secs_f64()
    );

    let baseline_rss = rss_kib(pid);
    let baseline_fds = open_fds(pid);
    let echo = Arc::new(Echo {
        handled: AtomicU64::new(0),
    });
    let shutdown = CancellationToken::new();
    let mut agents = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut shared = None;
    for (index, identity) in identities.into_iter().enumerate() {
        if index > 0 && index % options.ramp == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut endpoint = EndpointConfig::new(server.url.clone());
        endpoint.local_address = Some(source_address(index / options.streams_per_connection));
        if index % options.streams_per_connection == 0 {
            shared = Some(endpoint.channel()?);
        }
        let mut agent_options = AgentOptions::new(facts(index));
        agent_options.shutdown_grace = Duration::from_secs(1);
        agent_options.flush_timeout = Duration::from_secs(1);
        let agent = bosun_agent::Agent::new(
            identity,
            endpoint,
            Arc::new(MemoryJournal::new()),
            echo.clone(),
            agent_options,
        );
        let agent = match (&shared, options.streams_per_connection) {
            (Some(channel), n) if n > 1 => agent.with_channel(channel.clone()),
            _ => agent,
        };
        let stop = shutdown.clone();
        agents.spawn(async move { agent.run(stop).await });
    }
    let (took, reached) =
        wait_online(&server, &token, options.agents, Duration::from_secs(600)).await?;
    println!(
        "{reached} of {} agents Online {:.1} s after the first connected",
        options.agents,
        (started.elapsed()).as_secs_f64().max(took.as_secs_f64())
    );

    if options.send_command > 0 {
        let ticks_before = cpu_ticks(pid);
        let mut total = Duration::ZERO;
        for _ in 0..options.send_command {
            total += run_command(&server, &token, reached).await?;
        }
        println!(
            "{} command(s) to {reached} nodes: {:.3} s each on average; server CPU {:.1} s",
            options.send_command,
            total.as_secs_f64() / options.send_command as f64,
            cpu_ticks(pid).saturating_sub(ticks_before) as f64 / 100.0,
        );
    }

    let ticks_before = cpu_ticks(pid);
    let hold_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.hold)).await;
    let ticks = cpu_ticks(pid).saturating_sub(ticks_before);
    let held = hold_started.elapsed().as_secs_f64();
    let rss = rss_kib(pid);
    let clock_ticks = 100.0; // USER_HZ on Linux
    println!(
        "gateway holding {reached} streams: RSS {:.1} MiB (baseline {:.1} MiB before agents), \
         {:.1} KiB per stream, {} open descriptors, CPU {:.1}% of one core over {held:.0} s of heartbeats",
        rss as f64 / 1024.0,
        baseline_rss as f64 / 1024.0,
        rss.saturating_sub(baseline_rss) as f64 / reached.max(1) as f64,
        open_fds(pid),
        ticks as f64 / clock_ticks / held * 100.0,
    );

    if options.restart {
        server.kill().await?;
        let killed = Instant::now();
        server = Process::start_on(launch(data.path()), port).await?;
        let restarted_in = killed.elapsed();
        let new_pid = server.pid().context("server has no pid")?;
        // Every agent stream is one TCP connection, hence one descriptor of the new process
        // beyond what a server without agents holds.
        let mut back = 0;
        while killed.elapsed() < Duration::from_secs(600) {
            back = open_fds(new_pid).saturating_sub(baseline_fds);
            if back >= options.agents.div_ceil(options.streams_per_connection) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "gateway killed and restarted (serving again after {:.1} s): {back} of {} agent \
             connections back {:.1} s after the kill",
            restarted_in.as_secs_f64(),
            options.agents.div_ceil(options.streams_per_connection),
            killed.elapsed().as_secs_f64()
        );
        if let Some(pid) = server.pid() {
            println!(
                "after the storm: RSS {:.1} MiB, {} open descriptors",
                rss_kib(pid) as f64 / 1024.0,
                open_fds(pid)
            );
        }
    }

    shutdown.cancel();
    while agents.join_next().await.is_some() {}
    server.terminate(Duration::from_secs(30)).await?;
    if options.redis {
        remove_redis_keys(&redis_prefix).await?;
    }
    println!(
        "deliveries handled by the simulated fleet: {}",
        echo.handled.load(Ordering::Relaxed)
    );
    Ok(())
}
