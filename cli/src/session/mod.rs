//! `bosun session …`: Session Manager from the terminal. `start` opens a shell (or one
//! interactive command) on a node as a real raw-mode terminal, `forward` carries local TCP
//! connections to a port on (or reachable from) the node, `ls`, `terminate` and `transcript`
//! manage sessions. The bytes travel over `SessionData.Connect` through
//! `bosun_session::client`; this module only wires the terminal and sockets to it.

mod forward;
mod shell;
mod terminal;

use std::collections::HashMap;
use std::io::Write;

use std::time::{Duration, Instant};

use bosun_proto::sessions::v1 as proto;
use bosun_session::client::SessionClient;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use tonic::Code;
use tonic::transport::Channel;

use crate::commands::Context;
use crate::commands::run::parse_param;
use crate::connection::SessionsClient;
use crate::output::{Render, Table, text_cell, time_cell};
use crate::views::{MessageView, timestamp};

/// The built-in documents, by the short names people type (`--doc StartInteractiveCommand`).
const BUILTIN_SHORT_NAMES: &[&str] = &[
    "StartShellSession",
    "StartInteractiveCommand",
    "StartPortForwardingSession",
    "StartPortForwardingSessionToRemoteHost",
];
const PORT_DOCUMENT: &str = "Bosun-StartPortForwardingSession";
const REMOTE_PORT_DOCUMENT: &str = "Bosun-StartPortForwardingSessionToRemoteHost";
/// The largest page DescribeSessions returns.
const PAGE_SIZE: i32 = 200;
/// How long a broken stream is retried before giving up (the session itself lives on until
/// its idle timeout; `bosun session ls` shows it Disconnected meanwhile).
const RECONNECT_FOR: Duration = Duration::from_secs(300);
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(200);
const RECONNECT_LONGEST_DELAY: Duration = Duration::from_secs(5);

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Open a shell on a node (a real terminal when stdin is one; stdin and stdout are piped
    /// otherwise), or run one interactive command with `--doc StartInteractiveCommand --param
    /// command=...`. Exits with the remote exit status.
    Start(StartArgs),
    /// Forward a local TCP port to a port on the node (or on a host the node reaches, with
    /// --host): every connection to the local port is carried over one session.
    Forward(ForwardArgs),
    /// List active sessions (or ended ones with --history), newest first.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// End a session: its processes and connections on the node are stopped.
    Terminate {
        /// Session id.
        id: String,
    },
    /// Write a session's transcript to stdout as asciicast v2 (replay with `asciinema play`).
    Transcript {
        /// Session id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The node id (mi-…).
    pub node: String,
    /// The Session document [default: Bosun-StartShellSession]; built-ins also by their
    /// short names (StartInteractiveCommand) and AWS- names.
    #[arg(long = "doc", value_name = "NAME")]
    pub document: Option<String>,
    /// A document parameter as NAME=VALUE; repeat a name to give a list.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Why the session is opened (shown in `session ls` and the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The OS user to run as, when the document allows run-as [default: the document's].
    #[arg(long = "run-as", value_name = "USER")]
    pub run_as: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// The node id (mi-…).
    pub node: String,
    /// The port to reach on the node (or on --host).
    #[arg(long = "remote-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub remote_port: u16,
    /// The local port to listen on [default: any free port, printed].
    #[arg(long = "local-port", value_name = "PORT")]
    pub local_port: Option<u16>,
    /// A host the node connects to instead of itself (the document
    /// Bosun-StartPortForwardingSessionToRemoteHost).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The local address to listen on.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,
    /// Why the session is opened (shown in `session ls` and the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Ended sessions (the last 30 days) instead of active ones.
    #[arg(long)]
    pub history: bool,
    /// Only sessions on this node.
    #[arg(long, value_name = "NODE_ID")]
    pub target: Option<String>,
    /// Only sessions started by this principal (user/alice).
    #[arg(long, value_name = "PRINCIPAL")]
    pub owner: Option<String>,
    /// Only sessions with this status: Connecting, Connected, Disconnected, Terminating,
    /// Terminated or Failed.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Show at most this many sessions.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,
}

/// The remote side's exit status, to become this process's (not an error to print).
#[derive(Debug)]
pub struct RemoteExit(pub i32);

impl std::fmt::Display for RemoteExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for RemoteExit {}

pub async fn run(ctx: &Context, command: SessionCommand) -> anyhow::Result<()> {
    match command {
        SessionCommand::Start(args) => {
            let code = shell::start(ctx, args).await?;
            if code != 0 {
                return Err(RemoteExit(code).into());
            }
            Ok(())
        }
        SessionCommand::Forward(args) => forward::forward(ctx, args).await,
        SessionCommand::Ls(args) => {
            let mut client = sessions_client(ctx).await?;
            let mut request = list_request(&args);
            let wanted = usize::try_from(args.max).unwrap_or(usize::MAX);
            let mut sessions = Vec::new();
            while sessions.len() < wanted {
                request.max_results =
                    i32::try_from((wanted - sessions.len()).min(PAGE_SIZE as usize))
                        .unwrap_or(PAGE_SIZE);
                let page = client
                    .describe_sessions(request.clone())
                    .await?
                    .into_inner();
                sessions.extend(page.sessions.into_iter().map(SessionView::from));
                match crate::commands::next_page(&request.next_token, page.next_token)? {
                    Some(next) => request.next_token = next,
                    None => break,
                }
            }
            sessions.truncate(wanted);
            ctx.emit(&SessionList { sessions })
        }
        SessionCommand::Terminate { id } => {
            let mut client = sessions_client(ctx).await?;
            let ended = client
                .terminate_session(proto::TerminateSessionRequest { session_id: id })
                .await?
                .into_inner();
            ctx.emit(&MessageView::new(format!(
                "terminated session {}",
                ended.session_id
            )))
        }
        SessionCommand::Transcript { id } => {
            let mut client = sessions_client(ctx).await?;
            let mut chunks = client
                .get_session_transcript(proto::GetSessionTranscriptRequest { session_id: id })
                .await?
                .into_inner();
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = chunks.message().await? {
                stdout.write_all(&chunk.data)?;
            }
            stdout.flush()?;
            Ok(())
        }
    }
}

/// A SessionService client with the caller's token.
async fn sessions_client(ctx: &Context) -> anyhow::Result<SessionsClient> {
    Ok(ctx.connect().await?.sessions())
}

/// After the stream broke: a new token from ResumeSession and the stream again, retried with
/// back-off while the server is unreachable. `false` when the session ended meanwhile (or may
/// not be resumed); nothing sent or received is lost or repeated either way.
pub async fn reconnect(
    sessions: &mut SessionsClient,
    client: &mut SessionClient,
    channel: &Channel,
    bearer: &str,
    session_id: &str,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + RECONNECT_FOR;
    let mut delay = RECONNECT_FIRST_DELAY;
    loop {
        let attempt = sessions
            .resume_session(proto::ResumeSessionRequest {
                session_id: session_id.to_owned(),
            })
            .await;
        let error = match attempt {
            Ok(resumed) => {
                let token = resumed.into_inner().token_value;
                match client.reconnect(channel.clone(), bearer, &token).await {
                    Ok(()) => return Ok(true),
                    Err(bosun_session::client::SessionError::Closed { .. }) => return Ok(false),
                    Err(error) => error.to_string(),
                }
            }
            // The session is over, or this caller may not resume it: nothing to wait for.
            Err(status)
                if matches!(
                    status.code(),
                    Code::NotFound
                        | Code::FailedPrecondition
                        | Code::PermissionDenied
                        | Code::Unauthenticated
                ) =>
            {
                tracing::debug!(code = ?status.code(), "the session cannot be resumed");
                return Ok(false);
            }
            Err(status) => status.message().to_owned(),
        };
        if Instant::now() + delay > deadline {
            anyhow::bail!(
                "could not reconnect to session {session_id} within {}s: {error}",
                RECONNECT_FOR.as_secs()
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_LONGEST_DELAY);
    }
}

/// `--doc` as the server knows it: short built-in names get their `Bosun-` prefix.
pub fn document_name(name: Option<&str>) -> String {
    match name {
        None => String::new(),
        Some(name) if BUILTIN_SHORT_NAMES.contains(&name) => format!("Bosun-{name}"),
        Some(name) => name.to_owned(),
    }
}

/// `--param` pairs as the request's lists (a repeated name makes a list).
pub fn parameters(pairs: &[(String, String)]) -> HashMap<String, proto::ParameterValues> {
    let mut parameters: HashMap<String, proto::ParameterValues> = HashMap::new();
    for (name, value) in pairs {
        parameters
            .entry(name.clone())
            .or_default()
            .values
            .push(value.clone());
    }
    parameters
}

/// The StartSession request of `session start`.
pub fn start_request(args: &StartArgs) -> proto::StartSessionRequest {
    proto::StartSessionRequest {
        target: args.node.clone(),
        document_name: document_name(args.document.as_deref()),
        reason: args.reason.clone().unwrap_or_default(),
        parameters: parameters(&args.params),
        run_as: args.run_as.clone().unwrap_or_default(),
    }
}

/// The StartSession request of `session forward`: the port document, or its remote-host
/// variant when a host is named.
pub fn forward_request(args: &ForwardArgs) -> proto::StartSessionRequest {
    let mut pairs = vec![
        ("portNumber".to_owned(), args.remote_port.to_string()),
        (
            "localPortNumber".to_owned(),
            args.local_port.unwrap_or(0).to_string(),
        ),
    ];
    let document = match &args.host {
        Some(host) => {
            pairs.push(("host".to_owned(), host.clone()));
            REMOTE_PORT_DOCUMENT
        }
        None => PORT_DOCUMENT,
    };
    proto::StartSessionRequest {
        target: args.node.clone(),
        document_name: document.to_owned(),
        reason: args.reason.clone().unwrap_or_default(),
        parameters: parameters(&pairs),
        run_as: String::new(),
    }
}

/// The DescribeSessions request of `session ls`, without paging.
pub fn list_request(args: &ListArgs) -> proto::DescribeSessionsRequest {
    let mut filters = Vec::new();
    let mut filter = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            filters.push(proto::SessionFilter {
                key: key.to_owned(),
                value: value.clone(),
            });
        }
    };
    filter("Target", &args.target);
    filter("Owner", &args.owner);
    filter("Status", &args.status);
    proto::DescribeSessionsRequest {
        state: if args.history { "History" } else { "Active" }.to_owned(),
        max_results: PAGE_SIZE,
        next_token: String::new(),
        filters,
    }
}

/// A session as the CLI prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub target: String,
    pub status: String,
    pub session_type: String,
    pub document_name: String,
    pub owner: String,
    pub run_as: String,
    pub reason: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub details: String,
    pub exit_code: Option<i32>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub idle_session_timeout: i32,
    pub max_session_duration: i32,
    pub output_url: String,
}

impl From<proto::Session> for SessionView {
    fn from(session: proto::Session) -> Self {
        Self {
            session_id: session.session_id,
            target: session.target,
            status: session.status,
            session_type: session.session_type,
            document_name: session.document_name,
            owner: session.owner,
            run_as: session.run_as,
            reason: session.reason,
            start_date: timestamp(session.start_date),
            end_date: timestamp(session.end_date),
            details: session.details,
            exit_code: session.exit_code,
            bytes_in: session.bytes_in,
            bytes_out: session.bytes_out,
            idle_session_timeout: session.idle_session_timeout,
            max_session_duration: session.max_session_duration,
            output_url: session.output_url,
        }
    }
}

/// The result of `session ls`.
#[derive(Debug, Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

impl Render for SessionList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "SESSION", "NODE", "STATUS", "TYPE", "OWNER", "STARTED", "ENDED", "DETAILS",
        ]);
        for session in &self.sessions {
            table.row(vec![
                session.session_id.clone(),
                session.target.clone(),
                session.status.clone(),
                text_cell(&session.session_type),
                session.owner.clone(),
                time_cell(session.start_date),
                time_cell(session.end_date),
                text_cell(&session.details),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_builtin_names_get_their_prefix() {
        assert_eq!(document_name(None), "");
        assert_eq!(
            document_name(Some("StartInteractiveCommand")),
            "Bosun-StartInteractiveCommand"
        );
        assert_eq!(
            document_name(Some("AWS-StartInteractiveCommand")),
            "AWS-StartInteractiveCommand"
        );
        assert_eq!(document_name(Some("My-Session")), "My-Session");
    }

    #[test]
    fn repeated_parameters_make_a_list() {
        let args = StartArgs {
            node: "mi-0123456789abcdef0".into(),
            document: Some("StartInteractiveCommand".into()),
            params: vec![
                ("command".into(), "top".into()),
                ("a".into(), "1".into()),
                ("a".into(), "2".into()),
            ],
            reason: Some("debugging".into()),
            run_as: None,
        };
        let request = start_request(&args);
        assert_eq!(request.document_name, "Bosun-StartInteractiveCommand");
        assert_eq!(request.parameters["command"].values, ["top"]);
        assert_eq!(request.parameters["a"].values, ["1", "2"]);
        assert_eq!(request.reason, "debugging");
        assert_eq!(request.run_as, "");
    }

    #[test]
    fn forwarding_to_a_host_uses_the_remote_host_document() {
        let mut args = ForwardArgs {
            node: "mi-0123456789abcdef0".into(),
            remote_port: 5432,
            local_port: Some(15432),
            host: None,
            listen: std::net::IpAddr::from([127, 0, 0, 1]),
            reason: None,
        };
        let request = forward_request(&args);
        assert_eq!(request.document_name, PORT_DOCUMENT);
        assert_eq!(request.parameters["portNumber"].values, ["5432"]);
        assert_eq!(request.parameters["localPortNumber"].values, ["15432"]);
        assert!(!request.parameters.contains_key("host"));
        args.host = Some("db.internal".into());
        let request = forward_request(&args);
        assert_eq!(request.document_name, REMOTE_PORT_DOCUMENT);
        assert_eq!(request.parameters["host"].values, ["db.internal"]);
    }

    #[test]
    fn listing_filters_map_to_the_api() {
        let args = ListArgs {
            history: true,
            target: Some("mi-1".into()),
            owner: None,
            status: Some("Failed".into()),
            max: 10,
        };
        let request = list_request(&args);
        assert_eq!(request.state, "History");
        let keys: Vec<_> = request.filters.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["Target", "Status"]);
    }
}
