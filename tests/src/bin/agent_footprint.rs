//! Benchmark: what `bosun-agent` costs a node. Starts a `bosun server`, registers the real agent
//! binary beside this one, lets it connect, then samples its resident memory and CPU time
//! while it idles (heartbeats only), and prints the binary's size, stripped.
//!
//! ```text
//! cargo build --release -p bosun-cli -p bosun-agent -p bosun-tests --bins
//! target/release/agent_footprint [--seconds 60] [--heartbeat 30]
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::inventory::v1::{
    CreateActivationRequest, DescribeInstanceInformationRequest, PingStatus,
};
use bosun_tests::agents::{AgentProcess, agent_binary, register};
use bosun_tests::{Launch, Process, authed};

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut seconds = 60u64;
    let mut heartbeat = 30u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => seconds = value()?.parse()?,
            "--heartbeat" => heartbeat = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let binary = agent_binary()?;
    let size = std::fs::metadata(&binary)?.len();
    let stripped_dir = tempfile::tempdir()?;
    let stripped = stripped_dir.path().join("bosun-agent");
    std::fs::copy(&binary, &stripped)?;
    let stripped_size = match std::process::Command::new("strip").arg(&stripped).status() {
        Ok(status) if status.success() => Some(std::fs::metadata(&stripped)?.len()),
        _ => None,
    };

    let data = tempfile::tempdir()?;
    let server = Process::start(
        Launch::new(&["server"], data.path())
            .env("RUST_LOG", "warn")
            .env("BOSUN_AGENTS__LOCAL_AGENT", "false")
            .env("BOSUN_AGENTS__HEARTBEAT_INTERVAL", &format!("{heartbeat}s"))
            .env("BOSUN_AGENTS__PING_TIMEOUT", &format!("{}s", heartbeat * 4)),
    )
    .await?;
    let token = server.admin_token().await?;
    let mut nodes = NodeServiceClient::new(server.channel().await?);
    let activation = nodes
        .create_activation(authed(CreateActivationRequest::default(), &token))
        .await?
        .into_inner();
    let state = tempfile::tempdir()?;
    let (ok, _, stderr) = register(
        &server.url,
        &activation.activation_id,
        &activation.activation_code,
        state.path(),
    )
    .await?;
    if !ok {
        bail!("register failed: {stderr}");
    }
    let agent = AgentProcess::start(&server.url, state.path())?;
    let pid = agent.pid().context("agent has no pid")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = nodes
            .describe_instance_information(authed(
                DescribeInstanceInformationRequest::default(),
                &token,
            ))
            .await?
            .into_inner()
            .instance_information_list;
        if list
            .first()
            .is_some_and(|node| node.ping_status == PingStatus::Online as i32)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent did not come Online:\n{}", agent.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settle after the handshake, then measure the idle span.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks_before = cpu_ticks(pid);
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        peak = peak.max(status_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ticks = cpu_ticks(pid) - ticks_before;
    let rss = status_kib(pid, "VmRSS:");
    println!("bosun-agent ({}):", binary.display());
    println!(
        "  binary {:.1} MiB, stripped {}",
        size as f64 / 1048576.0,
        stripped_size.map_or("(no strip tool)".to_owned(), |bytes| format!(
            "{:.1} MiB",
            bytes as f64 / 1048576.0
        ))
    );
    println!(
        "  idle {seconds} s connected (heartbeat {heartbeat} s): RSS {:.1} MiB (peak {:.1} MiB), \
         CPU {} ticks = {:.3}% of one core",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        ticks,
        ticks as f64 / 100.0 / started.elapsed().as_secs_f64() * 100.0
    );
    Ok(())
}
