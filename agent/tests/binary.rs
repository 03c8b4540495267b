//! The `bosun-agent` binary end to end against the fake control plane: register (code from
//! the environment), run, SIGTERM → exit 0, deregistered → exit 3. Prints the idle footprint
//! (set `BOSUN_AGENT_BIN` to a release build to measure that one).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use bosun_proto::agent::v1::close::Reason;
use common::*;
use serde_json::json;

fn binary() -> String {
    std::env::var("BOSUN_AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bosun-agent").into())
}

/// (RSS in KiB, CPU ticks used so far) of a process.
fn footprint(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; after the `)` they are 12th and 13th.
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

fn run_agent(state: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(binary())
        .args(["--log-format", "json", "run", "--state-dir"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_binary_registers_runs_and_stops_cleanly() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let register = || {
        let mut command = tokio::process::Command::new(binary());
        command
            .args([
                "register",
                "--server",
                &server.url,
                "--activation-id",
                "act-1",
                "--state-dir",
            ])
            .arg(&state)
            .env("BOSUN_ACTIVATION_CODE", "code-1");
        command
    };
    let output = register().output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let node_id = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(node_id.starts_with("mi-"), "{node_id}");
    let again = register().output().await.unwrap();
    assert!(
        !again.status.success(),
        "no re-registration without --force"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let mut agent = run_agent(&state);
    server.wait_connected().await;
    server.deliver(delivery("m-1", "system.echo", json!("ping")));
    assert_eq!(server.next_ack().await, "m-1");
    let result = server.next_final_result().await;
    assert_eq!(json(&result), json!("ping"));

    let pid = agent.id().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_before, ticks_before) = footprint(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_after, ticks_after) = footprint(pid);
    eprintln!(
        "idle footprint of {}: RSS {rss_before} KiB -> {rss_after} KiB, CPU {} ticks in 5 s",
        binary(),
        ticks_after - ticks_before
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let mut agent = run_agent(&state);
    server.wait_connected().await;
    server.close(Reason::Deregistered);
    let status = tokio::time::timeout(Duration::from_secs(30), agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}
