//! Session Manager end to end: real `bosun` servers on PostgreSQL and Redis, real
//! `bosun-agent` processes running real shells in PTYs, driven through `SessionService`, the
//! `SessionData` stream (`bosun_session::client`) and the `bosun session` CLI, as an operator
//! would: a shell round trip, resize, Ctrl-C and exit status; idle timeout and max duration;
//! policies and interactive-command restrictions; port forwarding of concurrent HTTP requests;
//! transcripts as asciicast v2; a client and an agent on different gateway replicas; a client
//! network blip resumed with no byte lost or repeated.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use bosun_proto::auth::v1::{CreateRoleRequest, CreateUserRequest, RolePolicy};
use bosun_proto::documents::v1::document_service_client::DocumentServiceClient;
use bosun_proto::documents::v1::{CreateDocumentRequest, DocumentType};
use bosun_proto::sessions::v1::{
    DescribeSessionsRequest, GetSessionTranscriptRequest, Session, SessionFilter, Signal,
    StartSessionRequest,
};
use bosun_tests::sessions::{
    Asciicast, Deployment, Node, Transcript, expect_output, open, params, read_to_close,
    read_until, resume, sessions, start_session,
};
use bosun_tests::terminal::TestTerminal;
use bosun_tests::{Process, authed, bosun_binary};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A server with one node whose agent dials it.
async fn server_with_node() -> anyhow::Result<(Deployment, Process, String, Node)> {
    let deployment = Deployment::new().await?;
    let server = deployment.server().await?;
    let token = server.admin_token().await?;
    let node = Node::start(&server, &token, &server.url).await?;
    Ok((deployment, server, token, node))
}

/// The session as DescribeSessions lists it in `state` (Active or History).
async fn describe(
    server: &Process,
    token: &str,
    state: &str,
    session_id: &str,
) -> anyhow::Result<Option<Session>> {
    Ok(sessions(server)
        .await?
        .describe_sessions(authed(
            DescribeSessionsRequest {
                state: state.into(),
                filters: vec![SessionFilter {
                    key: "SessionId".into(),
                    value: session_id.into(),
                }],
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner()
        .sessions
        .into_iter()
        .find(|session| session.session_id == session_id))
}

/// Waits until the session is listed in History; returns it.
async fn wait_ended(server: &Process, token: &str, session_id: &str) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(session) = describe(server, token, "History", session_id).await? {
            return Ok(session);
        }
        if Instant::now() > deadline {
            let active = describe(server, token, "Active", session_id).await?;
            bail!("session {session_id} not ended within 20 s: {active:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The transcript through GetSessionTranscript, once it holds `needle` in its output.
async fn transcript_with(
    server: &Process,
    token: &str,
    session_id: &str,
    needle: &str,
) -> anyhow::Result<Asciicast> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut bytes = Vec::new();
        let result = sessions(server)
            .await?
            .get_session_transcript(authed(
                GetSessionTranscriptRequest {
                    session_id: session_id.into(),
                },
                token,
            ))
            .await;
        if let Ok(response) = result {
            let mut chunks = response.into_inner();
            while let Some(chunk) = chunks.message().await? {
                assert!(
                    chunk.data.ends_with(b"\n"),
                    "a chunk of whole lines ends in a newline"
                );
                bytes.extend_from_slice(&chunk.data);
            }
            let cast = Asciicast::parse(&bytes)?;
            if cast.output().contains(needle) {
                return Ok(cast);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no transcript with {needle:?} within 20 s: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_shell_round_trips_resizes_takes_ctrl_c_and_returns_its_exit_status() -> anyhow::Result<()>
{
    let (_deployment, server, token, node) = server_with_node().await?;
    let (session_id, mut client) = open(&server, &token, &node.id, "", &[]).await?;
    assert_eq!(client.ready().session_type, "Standard_Stream");
    let mut seen = Transcript::default();
    // The shell's echo of the line shows `hel''lo-$((6*7))`; only the shell prints this.
    client.send_input(b"echo hel''lo-$((6*7))\n").await?;
    expect_output(&mut client, &mut seen, "hello-42").await?;

    // The remote process sees the size the client sets.
    client.send_input(b"stty size\n").await?;
    expect_output(&mut client, &mut seen, "24 80").await?;
    client.resize(132, 43, None).await?;
    client.send_input(b"stty size\n").await?;
    expect_output(&mut client, &mut seen, "43 132").await?;

    // Ctrl-C as a keystroke interrupts the foreground command: the next command runs long
    // before `sleep 100` would have ended.
    client.send_input(b"sleep 100\n").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.send_input(b"\x03").await?;
    client.send_input(b"echo after-$((1+1))\n").await?;
    expect_output(&mut client, &mut seen, "after-2").await?;
    // And as a signal, for clients without a terminal.
    client.send_input(b"sleep 100\n").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.signal(Signal::Interrupt).await?;
    client.send_input(b"echo again-$((1+2))\n").await?;
    expect_output(&mut client, &mut seen, "again-3").await?;

    // Listed as active while it runs.
    let active = describe(&server, &token, "Active", &session_id)
        .await?
        .context("a running session is not listed as Active")?;
    assert_eq!(active.status, "Connected", "{active:?}");
    assert_eq!(active.owner, "user/admin", "{active:?}");
    assert_eq!(active.target, node.id);

    client.send_input(b"exit 7\n").await?;
    read_to_close(&mut client, &mut seen, Duration::from_secs(20)).await?;
    assert_eq!(seen.exit, Some(7), "{}", seen.text());
    assert_eq!(
        seen.closed,
        Some(("Terminated".to_owned(), "exit status 7".to_owned()))
    );
    let ended = wait_ended(&server, &token, &session_id).await?;
    assert_eq!(ended.status, "Terminated", "{ended:?}");
    assert_eq!(ended.exit_code, Some(7), "{ended:?}");
    assert_eq!(ended.details, "exit status 7", "{ended:?}");
    assert_eq!(ended.reason, "e2e");
    assert!(ended.end_date.is_some(), "{ended:?}");
    assert!(ended.bytes_in > 0 && ended.bytes_out > 0, "{ended:?}");

    // The transcript is stored and replayable: asciicast v2 holding what the shell printed.
    let cast = transcript_with(&server, &token, &session_id, "hello-42").await?;
    assert_eq!(cast.header["width"], 80, "{}", cast.header);
    assert_eq!(cast.header["height"], 24, "{}", cast.header);
    assert!(cast.output().contains("43 132"));
    assert!(
        cast.events
            .iter()
            .any(|(_, code, data)| code == "r" && data == "132x43"),
        "the resize is not in the transcript"
    );
    // Keystrokes are not recorded by default.
    assert!(cast.events.iter().all(|(_, code, _)| code != "i"));
    // The CLI writes the same file.
    let (ok, stdout, stderr) = bosun_tests::cli(
        &["session", "transcript", &session_id],
        &[("BOSUN_SERVER", &server.url), ("BOSUN_TOKEN", &token)],
        "",
    )
    .await?;
    assert!(ok, "bosun session transcript failed: {stderr}");
    assert!(
        Asciicast::parse(stdout.as_bytes())?
            .output()
            .contains("hello-42")
    );
    Ok(())
}

/// Creates a Session document named `name` owned by the caller.
async fn create_session_document(
    server: &Process,
    token: &str,
    name: &str,
    content: &str,
) -> anyhow::Result<()> {
    DocumentServiceClient::new(server.channel().await?)
        .create_document(authed(
            CreateDocumentRequest {
                content: content.into(),
                name: name.into(),
                document_type: DocumentType::Session as i32,
                ..Default::default()
            },
            token,
        ))
        .await?;
    Ok(())
}

fn shell_preferences(idle: &str, max: &str) -> String {
    serde_json::json!({
        "schemaVersion": "1.0",
        "description": "e2e shell preferences",
        "sessionType": "Standard_Stream",
        "inputs": {
            "runAsEnabled": false,
            "runAsDefaultUser": "",
            "idleSessionTimeout": idle,
            "maxSessionDuration": max,
            "shellProfile": {"linux": "", "windows": ""}
        }
    })
    .to_string()
}

#[tokio::test]
async fn idle_timeout_and_max_duration_close_sessions() -> anyhow::Result<()> {
    let (_deployment, server, token, node) = server_with_node().await?;
    // One document "minute" lasts 2 s on these servers.
    create_session_document(&server, &token, "Quick-Idle", &shell_preferences("1", "")).await?;
    create_session_document(&server, &token, "Quick-Max", &shell_preferences("20", "1")).await?;

    // Idle: nothing typed for a "minute" ends it.
    let (session_id, mut client) = open(&server, &token, &node.id, "Quick-Idle", &[]).await?;
    let opened = Instant::now();
    let mut seen = Transcript::default();
    read_to_close(&mut client, &mut seen, Duration::from_secs(20)).await?;
    assert_eq!(
        seen.closed,
        Some(("Terminated".to_owned(), "idle timeout (1m)".to_owned()))
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(1500),
        "closed for idleness after {:?}",
        opened.elapsed()
    );
    let ended = wait_ended(&server, &token, &session_id).await?;
    assert_eq!(ended.details, "idle timeout (1m)", "{ended:?}");
    assert_eq!(ended.idle_session_timeout, 1, "{ended:?}");

    // Max duration: typing all along does not keep it open past its "minute".
    let (session_id, mut client) = open(&server, &token, &node.id, "Quick-Max", &[]).await?;
    let opened = Instant::now();
    let mut seen = Transcript::default();
    while seen.closed.is_none() {
        if opened.elapsed() > Duration::from_secs(20) {
            bail!("not closed after 20 s of typing: {}", seen.text());
        }
        if client.send_input(b"true\n").await.is_err() {
            // Closed between two looks: the reason is in the queue.
            read_to_close(&mut client, &mut seen, Duration::from_secs(5)).await?;
            break;
        }
        let _ = read_until(
            &mut client,
            &mut seen,
            Duration::from_millis(300),
            "the close",
            |seen| seen.closed.is_some(),
        )
        .await;
    }
    assert_eq!(
        seen.closed,
        Some((
            "Terminated".to_owned(),
            "max session duration (1m)".to_owned()
        ))
    );
    assert!(opened.elapsed() >= Duration::from_millis(1500));
    let ended = wait_ended(&server, &token, &session_id).await?;
    assert_eq!(ended.max_session_duration, 1, "{ended:?}");
    Ok(())
}

#[tokio::test]
async fn a_user_allowed_only_interactive_commands_cannot_get_a_shell() -> anyhow::Result<()> {
    let (_deployment, server, admin, node) = server_with_node().await?;
    let mut auth = AuthServiceClient::new(server.channel().await?);
    auth.create_role(authed(
        CreateRoleRequest {
            role_name: "commands-only".into(),
            description: String::new(),
            policies: vec![RolePolicy {
                policy_name: "interactive-commands".into(),
                policy_document: r#"{"Statement":[
                    {"Effect":"Allow","Action":"sessions:StartSession",
                     "Resource":["node:*","document:Bosun-StartInteractiveCommand"]},
                    {"Effect":"Allow","Action":"documents:GetDocument","Resource":"*"},
                    {"Effect":"Allow","Action":"sessions:*","Resource":"session:*"}]}"#
                    .into(),
            }],
        },
        &admin,
    ))
    .await?;
    auth.create_user(authed(
        CreateUserRequest {
            username: "carl".into(),
            password: "carl-has-a-long-password".into(),
            roles: vec!["commands-only".into()],
        },
        &admin,
    ))
    .await?;
    let carl = server.login("carl", "carl-has-a-long-password").await?;
    for document in [
        "",
        "Bosun-StartShellSession",
        "Bosun-StartPortForwardingSession",
    ] {
        let denied = start_session(
            &server,
            &carl,
            StartSessionRequest {
                target: node.id.clone(),
                document_name: document.into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("a session the policy does not allow was started");
        assert_eq!(
            denied.code(),
            Code::PermissionDenied,
            "{document}: {denied:?}"
        );
    }
    // What the policy allows works.
    let (_, mut client) = open(
        &server,
        &carl,
        &node.id,
        "Bosun-StartInteractiveCommand",
        &[("command", "echo only-$((2*21))")],
    )
    .await?;
    let mut seen = Transcript::default();
    read_to_close(&mut client, &mut seen, Duration::from_secs(20)).await?;
    assert!(seen.text().contains("only-42"), "{}", seen.text());
    assert_eq!(seen.exit, Some(0));
    Ok(())
}

#[tokio::test]
async fn an_interactive_command_document_runs_only_its_command() -> anyhow::Result<()> {
    let (_deployment, server, token, node) = server_with_node().await?;
    let document = serde_json::json!({
        "schemaVersion": "1.0",
        "description": "Shows one file",
        "sessionType": "InteractiveCommands",
        "parameters": {
            "path": {"type": "String", "allowedPattern": "^[a-zA-Z0-9/._-]+$"}
        },
        "properties": {"linux": {"commands": "cat {{ path }}", "runAsElevated": false}}
    });
    create_session_document(&server, &token, "Show-File", &document.to_string()).await?;
    for path in ["x; sh", "$(sh)", "a b", "`id`"] {
        let refused = start_session(
            &server,
            &token,
            StartSessionRequest {
                target: node.id.clone(),
                document_name: "Show-File".into(),
                parameters: params(&[("path", path)]),
                ..Default::default()
            },
        )
        .await
        .expect_err("a parameter outside its pattern was accepted");
        assert_eq!(refused.code(), Code::InvalidArgument, "{path}: {refused:?}");
        assert!(
            refused.message().contains("path"),
            "{path}: the parameter is not named: {}",
            refused.message()
        );
    }
    // Readable by an unprivileged run-as user.
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let file = dir.path().join("motd.txt");
    std::fs::write(&file, "the file's own words\n")?;
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let path = file.to_string_lossy().into_owned();
    let (_, mut client) = open(&server, &token, &node.id, "Show-File", &[("path", &path)]).await?;
    let mut seen = Transcript::default();
    // Typing into it reaches `cat`'s terminal, never a shell.
    client.send_input(b"echo typed-$((1+1))\n").await?;
    read_to_close(&mut client, &mut seen, Duration::from_secs(20)).await?;
    assert!(
        seen.text().contains("the file's own words"),
        "{}",
        seen.text()
    );
    assert!(!seen.text().contains("typed-2"), "{}", seen.text());
    assert_eq!(seen.exit, Some(0));
    Ok(())
}

/// A tiny HTTP/1.0 server on the node's side: `GET /<n>` answers `<n>` repeated to 64 KiB
/// (so each response spans several packets), then closes.
async fn http_server() -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).await.is_err() {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).await.is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
                let body = http_body(path.trim_start_matches('/'));
                let mut stream = reader.into_inner();
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((port, task))
}

fn http_body(name: &str) -> Vec<u8> {
    name.as_bytes()
        .iter()
        .copied()
        .chain(std::iter::once(b'\n'))
        .cycle()
        .take(64 << 10)
        .collect()
}

async fn http_get(port: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET /{name} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("no end of headers")?;
    anyhow::ensure!(response.starts_with(b"HTTP/1.0 200 OK"), "{response:?}");
    Ok(response[split + 4..].to_vec())
}

#[tokio::test]
async fn the_cli_forwards_concurrent_connections_and_pipes_a_shell() -> anyhow::Result<()> {
    let (_deployment, server, token, node) = server_with_node().await?;
    let (remote_port, _http) = http_server().await?;

    // `bosun session forward`: prints the local port, then carries every connection.
    let mut forward = tokio::process::Command::new(bosun_binary()?)
        .args(["session", "forward", &node.id, "--remote-port"])
        .arg(remote_port.to_string())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOSUN_SERVER", &server.url)
        .env("BOSUN_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = forward.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("bosun session forward printed nothing within 30 s")??
        .context("bosun session forward ended without printing its port")?;
    let local_port: u16 = first
        .rsplit(':')
        .next()
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("no port in {first:?}"))?;
    let names: Vec<String> = (0..8).map(|n| format!("request-{n}")).collect();
    let responses =
        futures::future::join_all(names.iter().map(|name| http_get(local_port, name))).await;
    for (name, response) in names.iter().zip(responses) {
        let body = response.with_context(|| format!("GET /{name} through the forward"))?;
        assert!(
            body == http_body(name),
            "{name}: wrong body of {} bytes",
            body.len()
        );
    }
    // And again on the same session: connections come and go.
    assert_eq!(http_get(local_port, "again").await?, http_body("again"));
    // Ctrl-C ends the forward and its session.
    let pid = forward.id().context("forward has no pid")?;
    std::process::Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(15), forward.wait())
        .await
        .context("bosun session forward did not stop on Ctrl-C")??;
    assert!(status.success(), "{status:?}");
    // Ended, with the bytes the hub counted (reported with its next touch).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = sessions(&server)
            .await?
            .describe_sessions(authed(
                DescribeSessionsRequest {
                    state: "History".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await?
            .into_inner()
            .sessions;
        let port_session = listed.iter().find(|session| session.session_type == "Port");
        if port_session.is_some_and(|session| session.bytes_out >= 9 * (64 << 10)) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the forward's session did not end with its bytes counted: {listed:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `bosun session start` with piped stdin: a script's way in, exiting with the remote
    // status.
    let mut shell = tokio::process::Command::new(bosun_binary()?)
        .args(["session", "start", &node.id])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOSUN_SERVER", &server.url)
        .env("BOSUN_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = shell.stdin.take().context("no stdin")?;
    stdin.write_all(b"echo piped''-$((40+2))\nexit 3\n").await?;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), shell.wait_with_output())
        .await
        .context("bosun session start did not end")??;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("piped-42"),
        "stdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn a_client_on_one_gateway_reaches_an_agent_on_another() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let first = deployment.server().await?;
    let second = Process::start(deployment.launch(&["serve", "gateway"])).await?;
    let token = first.admin_token().await?;
    // The agent dials the second replica; the client uses the first.
    let node = Node::start(&first, &token, &second.url).await?;
    let (session_id, mut client) = open(&first, &token, &node.id, "", &[]).await?;
    let mut seen = Transcript::default();
    client.send_input(b"echo across-$((3*3))\n").await?;
    expect_output(&mut client, &mut seen, "across-9").await?;
    // Bulk through the relay: every byte arrives, in order.
    client
        .send_input(b"seq 1 20000 | tr -d '\\n' | wc -c; echo coun''ted-$((1))\n")
        .await?;
    expect_output(&mut client, &mut seen, "counted-1").await?;
    let text = seen.text();
    assert!(text.contains("88894"), "{text}");

    // The CLI lists it and terminates it; the client is told.
    let env = [
        ("BOSUN_SERVER", first.url.as_str()),
        ("BOSUN_TOKEN", &token),
    ];
    let (ok, listed, stderr) = bosun_tests::cli(&["session", "ls"], &env, "").await?;
    assert!(ok && listed.contains(&session_id), "{listed}{stderr}");
    let (ok, _, stderr) =
        bosun_tests::cli(&["session", "terminate", &session_id], &env, "").await?;
    assert!(ok, "{stderr}");
    read_to_close(&mut client, &mut seen, Duration::from_secs(20)).await?;
    assert_eq!(
        seen.closed.as_ref().map(|(status, _)| status.as_str()),
        Some("Terminated"),
        "{:?}",
        seen.closed
    );
    let ended = wait_ended(&first, &token, &session_id).await?;
    assert_eq!(ended.details, "terminated by user/admin", "{ended:?}");
    Ok(())
}

#[tokio::test]
async fn a_client_blip_resumes_without_losing_or_repeating_a_byte() -> anyhow::Result<()> {
    let (_deployment, server, token, node) = server_with_node().await?;
    // 20,000 numbered lines over about 5 s.
    let count = 20_000;
    let command = format!(
        "i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo $i; \
         [ $((i % 200)) -eq 0 ] && sleep 0.05; done; true"
    );
    let (session_id, mut client) = open(
        &server,
        &token,
        &node.id,
        "Bosun-StartInteractiveCommand",
        &[("command", &command)],
    )
    .await?;
    let mut seen = Transcript::default();
    read_until(
        &mut client,
        &mut seen,
        Duration::from_secs(20),
        "the first lines",
        |seen| seen.output.len() > 2_000,
    )
    .await?;
    // The network goes away for a moment; output piles up at the agent meanwhile.
    client.drop_connection();
    tokio::time::sleep(Duration::from_secs(1)).await;
    resume(&server, &token, &session_id, &mut client).await?;
    read_to_close(&mut client, &mut seen, Duration::from_secs(60)).await?;
    assert_eq!(seen.exit, Some(0));
    let received = seen.text().replace("\r\n", "\n");
    let expected: String = (1..=count).map(|i| format!("{i}\n")).collect();
    if received != expected {
        let first_difference = received
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(received.len().min(expected.len()));
        let from = first_difference.saturating_sub(40);
        bail!(
            "the stream differs at byte {first_difference} (received {} bytes, expected {}): \
             received {:?}… expected {:?}…",
            received.len(),
            expected.len(),
            &received[from..(first_difference + 40).min(received.len())],
            &expected[from..(first_difference + 40).min(expected.len())],
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_cli_is_a_raw_terminal_that_follows_resizes_and_restores_itself() -> anyhow::Result<()>
{
    let (_deployment, server, token, node) = server_with_node().await?;
    let terminal = TestTerminal::open(100, 30)?;
    assert!(terminal.is_cooked()?, "a new terminal starts cooked");
    // In a session of its own with the terminal as its controlling terminal, as a shell
    // would start it, so window changes reach it as SIGWINCH.
    let mut cli = tokio::process::Command::new("setsid")
        .args(["--ctty", "--wait"])
        .arg(bosun_binary()?)
        .args(["session", "start", &node.id])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "screen-256color")
        .env("BOSUN_SERVER", &server.url)
        .env("BOSUN_TOKEN", &token)
        .stdin(terminal.slave.try_clone()?)
        .stdout(terminal.slave.try_clone()?)
        .stderr(terminal.slave.try_clone()?)
        .kill_on_drop(true)
        .spawn()?;
    terminal.wait_for("Starting session").await?;
    // Raw mode: the local terminal neither echoes nor edits nor turns keys into signals.
    let deadline = Instant::now() + Duration::from_secs(10);
    while terminal.is_cooked()? {
        if Instant::now() > deadline {
            bail!("the terminal never went raw:\n{}", terminal.text());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminal.type_keys(b"stty size; echo $TERM\r")?;
    terminal.wait_for("30 100").await?;
    terminal.wait_for("screen-256color").await?;
    terminal.resize(120, 40)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminal.type_keys(b"stty size\r")?;
    terminal.wait_for("40 120").await?;
    // Ctrl-C typed locally interrupts the remote command, not the CLI.
    terminal.type_keys(b"sleep 100\r")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminal.type_keys(b"\x03")?;
    terminal.type_keys(b"echo still-$((2+2))\r")?;
    terminal.wait_for("still-4").await?;
    terminal.type_keys(b"exit 5\r")?;
    let status = tokio::time::timeout(Duration::from_secs(20), cli.wait())
        .await
        .with_context(|| format!("the CLI did not exit:\n{}", terminal.text()))??;
    assert_eq!(status.code(), Some(5), "{}", terminal.text());
    assert!(
        terminal.is_cooked()?,
        "the terminal was left raw:\n{}",
        terminal.text()
    );
    Ok(())
}

#[tokio::test]
async fn the_cli_rides_out_a_network_failure_without_losing_a_byte() -> anyhow::Result<()> {
    let (_deployment, server, token, node) = server_with_node().await?;
    // The CLI reaches the server through a forwarder whose connections the test cuts.
    let network = bosun_tests::agents::Balancer::start(vec![server.addr]).await?;
    let count = 20_000;
    let command = format!(
        "i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo $i; \
         [ $((i % 200)) -eq 0 ] && sleep 0.05; done; exit 9"
    );
    let mut cli = tokio::process::Command::new(bosun_binary()?)
        .args([
            "session",
            "start",
            &node.id,
            "--doc",
            "StartInteractiveCommand",
        ])
        .arg("--param")
        .arg(format!("command={command}"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOSUN_SERVER", network.url())
        .env("BOSUN_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = cli.stdout.take().context("no stdout")?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut cut = false;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), stdout.read(&mut buffer))
            .await
            .context("the CLI's output stalled")??;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
        if !cut && received.len() > 2_000 {
            network.cut_connections();
            cut = true;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), cli.wait())
        .await
        .context("the CLI did not exit")??;
    let mut stderr = String::new();
    if let Some(mut pipe) = cli.stderr.take() {
        pipe.read_to_string(&mut stderr).await?;
    }
    assert!(cut, "the output ended before the cut: {stderr}");
    assert!(stderr.contains("reconnected"), "no reconnection: {stderr}");
    assert_eq!(status.code(), Some(9), "{stderr}");
    let received = String::from_utf8_lossy(&received).replace("\r\n", "\n");
    let expected: String = (1..=count).map(|i| format!("{i}\n")).collect();
    assert!(
        received == expected,
        "the output differs after the network failure ({} bytes, expected {}); stderr: {stderr}",
        received.len(),
        expected.len()
    );
    Ok(())
}

#[tokio::test]
async fn session_service_runs_on_its_own_behind_the_gateway() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    // The gateway routes SessionService to `bosun serve sessions` and keeps the data streams.
    let sessions_port = bosun_tests::free_port()?;
    let gateway = Process::start(deployment.launch(&["server"]).config(&format!(
        "[routes]\n\"bosun.sessions.v1.SessionService\" = \"http://127.0.0.1:{sessions_port}\"\n"
    )))
    .await?;
    let service =
        Process::start_on(deployment.launch(&["serve", "sessions"]), sessions_port).await?;
    let token = gateway.admin_token().await?;
    let node = Node::start(&gateway, &token, &gateway.url).await?;
    let (_, mut client) = open(&gateway, &token, &node.id, "", &[]).await?;
    let mut seen = Transcript::default();
    client.send_input(b"echo apart-$((5*5))\nexit\n").await?;
    read_to_close(&mut client, &mut seen, Duration::from_secs(20)).await?;
    assert!(
        seen.text().contains("apart-25"),
        "{}\nsessions service:\n{}",
        seen.text(),
        service.stderr()
    );
    assert_eq!(seen.exit, Some(0));
    // It was the service process that started it.
    assert!(
        service.stderr().contains("session started"),
        "{}",
        service.stderr()
    );
    Ok(())
}
