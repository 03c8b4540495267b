//! Session Manager deployments for end-to-end tests and benchmarks: `bosun` servers on
//! PostgreSQL and Redis with short session timings, real registered `bosun-agent` nodes, and
//! helpers that start sessions and read what a session prints.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bosun_proto::sessions::v1::session_service_client::SessionServiceClient;
use bosun_proto::sessions::v1::{
    ParameterValues, ResumeSessionRequest, StartSessionRequest, StartSessionResponse,
};
use bosun_session::client::{SessionClient, SessionEvent};
use tonic::transport::Channel;

use crate::agents::AgentProcess;
use crate::nodes::{register_node, wait_online};
use crate::{Launch, Process, Store, authed};

pub fn redis_url() -> String {
    std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One deployment: a fresh PostgreSQL schema, a fresh Redis prefix and a data directory that
/// every server process of it shares (keys, objects), so several replicas can run side by side.
pub struct Deployment {
    pub data: tempfile::TempDir,
    pub store: Store,
    pub prefix: String,
}

impl Deployment {
    pub async fn new() -> anyhow::Result<Self> {
        Ok(Deployment {
            data: tempfile::tempdir()?,
            store: Store::postgres().await,
            prefix: format!("bosun-e2e-{}:", uuid::Uuid::new_v4().simple()),
        })
    }

    /// `args` (`["server"]`, `["serve", "gateway"]`) with fast heartbeats and session timings
    /// scaled down: a document's "minute" lasts 2 s, hubs touch their sessions twice a second.
    pub fn launch(&self, args: &[&str]) -> Launch {
        Launch::new(args, self.data.path())
            .store(&self.store)
            .env("BOSUN_REDIS_URL", &redis_url())
            .env("BOSUN_REDIS_PREFIX", &self.prefix)
            .env("BOSUN_AGENTS__LOCAL_AGENT", "false")
            .env("BOSUN_AGENTS__HEARTBEAT_INTERVAL", "1s")
            .env("BOSUN_AGENTS__PING_TIMEOUT", "3s")
            .env("BOSUN_SESSIONS__TIME_UNIT", "2s")
            .env("BOSUN_SESSIONS__HUB_TOUCH_INTERVAL", "500ms")
            .env("BOSUN_SESSIONS__HUB_LOST_AFTER", "3s")
            .env("BOSUN_SESSIONS__REAP_INTERVAL", "500ms")
            .env("BOSUN_SESSIONS__TRANSCRIPT_FLUSH_INTERVAL", "200ms")
    }

    /// The all-in-one server of this deployment.
    pub async fn server(&self) -> anyhow::Result<Process> {
        Process::start(self.launch(&["server"])).await
    }
}

/// A registered node with its running agent.
pub struct Node {
    pub id: String,
    pub state: tempfile::TempDir,
    pub agent: AgentProcess,
}

impl Node {
    /// Registers a node through `server` and starts its agent against `agent_url` (the same
    /// server, or another replica of the deployment); returns once it is Online.
    pub async fn start(server: &Process, token: &str, agent_url: &str) -> anyhow::Result<Node> {
        let state = tempfile::tempdir()?;
        let id = register_node(server, token, "sessions-e2e", Vec::new(), state.path()).await?;
        let agent = AgentProcess::start(agent_url, state.path())?;
        let node = Node { id, state, agent };
        if let Err(error) = wait_online(server, token, &node.id).await {
            bail!("{error}\nagent log:\n{}", node.agent.log());
        }
        Ok(node)
    }
}

/// Document parameters as the API takes them.
pub fn params(entries: &[(&str, &str)]) -> HashMap<String, ParameterValues> {
    let mut parameters: HashMap<String, ParameterValues> = HashMap::new();
    for (name, value) in entries {
        parameters
            .entry((*name).to_owned())
            .or_default()
            .values
            .push((*value).to_owned());
    }
    parameters
}

pub async fn sessions(server: &Process) -> anyhow::Result<SessionServiceClient<Channel>> {
    Ok(SessionServiceClient::new(server.channel().await?))
}

/// StartSession as `token`.
pub async fn start_session(
    server: &Process,
    token: &str,
    request: StartSessionRequest,
) -> Result<StartSessionResponse, tonic::Status> {
    let channel = server
        .channel()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    SessionServiceClient::new(channel)
        .start_session(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A shell (or `document` with `parameters`) on `node`, connected, first packet sent: a
/// resize to 80x24 with `xterm`.
pub async fn open(
    server: &Process,
    token: &str,
    node: &str,
    document: &str,
    parameters: &[(&str, &str)],
) -> anyhow::Result<(String, SessionClient)> {
    let started = start_session(
        server,
        token,
        StartSessionRequest {
            target: node.to_owned(),
            document_name: document.to_owned(),
            parameters: params(parameters),
            reason: "e2e".into(),
            ..Default::default()
        },
    )
    .await?;
    let client = SessionClient::connect(
        server.channel().await?,
        token,
        &started.session_id,
        &started.token_value,
    )
    .await?;
    if client.ready().session_type != "Port" {
        client.resize(80, 24, Some("xterm")).await?;
    }
    Ok((started.session_id, client))
}

/// Reconnects `client` through `server` after a drop: a new token from ResumeSession.
pub async fn resume(
    server: &Process,
    token: &str,
    session_id: &str,
    client: &mut SessionClient,
) -> anyhow::Result<()> {
    let resumed = sessions(server)
        .await?
        .resume_session(authed(
            ResumeSessionRequest {
                session_id: session_id.to_owned(),
            },
            token,
        ))
        .await?
        .into_inner();
    client
        .reconnect(server.channel().await?, token, &resumed.token_value)
        .await?;
    Ok(())
}

/// What a terminal session printed, and how it ended when it did.
#[derive(Debug, Default)]
pub struct Transcript {
    pub output: Vec<u8>,
    pub exit: Option<i32>,
    /// (status, reason) of `Closed`.
    pub closed: Option<(String, String)>,
}

impl Transcript {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

/// Reads output into `seen` until `done(seen)` holds, the session closes, or `limit` passes
/// (an error naming `what`, with the output so far).
pub async fn read_until(
    client: &mut SessionClient,
    seen: &mut Transcript,
    limit: Duration,
    what: &str,
    done: impl Fn(&Transcript) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(seen) {
        if seen.closed.is_some() {
            bail!(
                "session closed before {what}: {:?}\noutput:\n{}",
                seen.closed,
                seen.text()
            );
        }
        let event = match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(event) => event,
            Err(_) => bail!("no {what} within {limit:?}; output:\n{}", seen.text()),
        };
        match event {
            SessionEvent::Output(bytes) => seen.output.extend_from_slice(&bytes),
            SessionEvent::Exit(code) => seen.exit = Some(code),
            SessionEvent::Closed { status, reason } => seen.closed = Some((status, reason)),
            SessionEvent::Disconnected(_) => {
                bail!(
                    "the session's stream broke before {what}; output:\n{}",
                    seen.text()
                )
            }
            SessionEvent::PortData { .. } | SessionEvent::PortClose { .. } => {}
        }
    }
    Ok(())
}

/// Reads until the output contains `needle`.
pub async fn expect_output(
    client: &mut SessionClient,
    seen: &mut Transcript,
    needle: &str,
) -> anyhow::Result<()> {
    read_until(
        client,
        seen,
        Duration::from_secs(20),
        &format!("{needle:?} in the output"),
        |seen| seen.text().contains(needle),
    )
    .await
}

/// Reads until the session is closed; returns the transcript.
pub async fn read_to_close(
    client: &mut SessionClient,
    seen: &mut Transcript,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while seen.closed.is_none() {
        let event = match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(event) => event,
            Err(_) => bail!(
                "the session did not close within {limit:?}; output:\n{}",
                seen.text()
            ),
        };
        match event {
            SessionEvent::Output(bytes) => seen.output.extend_from_slice(&bytes),
            SessionEvent::Exit(code) => seen.exit = Some(code),
            SessionEvent::Closed { status, reason } => seen.closed = Some((status, reason)),
            SessionEvent::Disconnected(_) => bail!(
                "the session's stream broke instead of closing; output:\n{}",
                seen.text()
            ),
            SessionEvent::PortData { .. } | SessionEvent::PortClose { .. } => {}
        }
    }
    Ok(())
}

/// An asciicast v2 file, checked line by line.
pub struct Asciicast {
    pub header: serde_json::Value,
    /// (time, code, data)
    pub events: Vec<(f64, String, String)>,
}

impl Asciicast {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(bytes).context("asciicast is UTF-8")?;
        let mut lines = text.lines();
        let header: serde_json::Value =
            serde_json::from_str(lines.next().context("no header line")?)?;
        anyhow::ensure!(header["version"] == 2, "header: {header}");
        anyhow::ensure!(
            header["width"].as_u64().is_some() && header["height"].as_u64().is_some(),
            "header: {header}"
        );
        let mut events = Vec::new();
        let mut last = 0.0;
        for line in lines {
            let event: (f64, String, String) =
                serde_json::from_str(line).with_context(|| format!("event line {line}"))?;
            anyhow::ensure!(event.0 >= last, "time goes backwards at {line}");
            anyhow::ensure!(
                matches!(event.1.as_str(), "o" | "i" | "r"),
                "unknown event code in {line}"
            );
            last = event.0;
            events.push(event);
        }
        Ok(Asciicast { header, events })
    }

    /// The `"o"` events' data, concatenated.
    pub fn output(&self) -> String {
        self.events
            .iter()
            .filter(|(_, code, _)| code == "o")
            .map(|(_, _, data)| data.as_str())
            .collect()
    }
}
