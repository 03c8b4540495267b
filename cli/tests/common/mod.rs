//! What the CLI's end-to-end tests share: serving a fake gRPC service on a free port, and
//! running the real `bosun` binary against it with a private config dir.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Serves `routes` on 127.0.0.1 until the test's runtime ends; returns the URL.
pub async fn serve(routes: Routes) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok(url)
}

/// Runs `bosun <args>` with a private config dir, none of the caller's BOSUN_* settings,
/// `env` added, and `stdin` fed in.
pub async fn run_bosun(
    config_dir: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bosun"));
    command
        .args(args)
        .env_remove("BOSUN_TOKEN")
        .env_remove("BOSUN_SERVER")
        .env("BOSUN_CONFIG_DIR", config_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("cannot start bosun")?;
    if let Some(mut input) = child.stdin.take() {
        // A command that fails before reading stdin closes it; that is not our failure.
        let _ = input.write_all(stdin.as_bytes()).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("bosun did not finish within 60 s")??;
    Ok(output)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
