//! The agent's session plugin end to end, against a tiny in-test gateway (`SessionData` with one
//! session: verifies the agent's attach proof, relays frames between the agent's `Attach` and
//! the client's `Connect` like the broker does) and the real `SessionClient`: shells through a
//! real PTY, resize, Ctrl-C, exit status, interactive commands, run-as refusal, port forwarding
//! with concurrent connections, the deny-list, terminate, and client and agent re-attaches.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use bosun_agent::{Executor, Identity, MemoryJournal, ResultSink, SessionManager, SessionOptions};
use bosun_proto::agent::v1::Delivery;
use bosun_proto::sessions::v1::frame::Kind;
use bosun_proto::sessions::v1::session_data_server::{SessionData, SessionDataServer};
use bosun_proto::sessions::v1::{AttachChallenge, Closed, Frame, PeerAttached, Ready, Signal};
use bosun_session::client::{SessionClient, SessionEvent};
use bosun_session::wire::{SessionKind, SessionResult, StartSession, TerminateSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(20);

type Sender = mpsc::UnboundedSender<Result<Frame, Status>>;

#[derive(Default)]
struct Ends {
    agent: Option<Sender>,
    client: Option<Sender>,
    attaches: usize,
}

/// One session's gateway: relays `Packet`/`Ack`/`Resume` between the ends, sends `Ready` and
/// `PeerAttached` as the broker does, drops frames for an absent end.
#[derive(Clone)]
struct Gateway {
    ends: Arc<Mutex<Ends>>,
    public_key: Vec<u8>,
    node_id: String,
}

fn frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

impl Gateway {
    fn relay(&self, mut inbound: Streaming<Frame>, from_agent: bool, me: Sender) {
        let ends = self.ends.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = inbound.message().await {
                if matches!(
                    frame.kind,
                    Some(Kind::Packet(_) | Kind::Ack(_) | Kind::Resume(_))
                ) {
                    let ends = ends.lock().unwrap();
                    let to = if from_agent {
                        &ends.client
                    } else {
                        &ends.agent
                    };
                    if let Some(to) = to {
                        let _ = to.send(Ok(frame));
                    }
                }
            }
            let mut ends = ends.lock().unwrap();
            let slot = if from_agent {
                &mut ends.agent
            } else {
                &mut ends.client
            };
            if slot
                .as_ref()
                .is_some_and(|current| current.same_channel(&me))
            {
                *slot = None;
            }
        });
    }

    /// Ends the agent's stream with an error (a gateway replica dying).
    fn break_agent(&self) {
        if let Some(agent) = self.ends.lock().unwrap().agent.take() {
            let _ = agent.send(Err(Status::unavailable("the test broke the stream")));
        }
    }

    /// `Closed` to both ends, then their streams end.
    fn close(&self, reason: &str) {
        let mut ends = self.ends.lock().unwrap();
        for end in [ends.agent.take(), ends.client.take()]
            .into_iter()
            .flatten()
        {
            let _ = end.send(Ok(frame(Kind::Closed(Closed {
                status: "Terminated".into(),
                reason: reason.into(),
            }))));
        }
    }

    fn attaches(&self) -> usize {
        self.ends.lock().unwrap().attaches
    }
}

#[tonic::async_trait]
impl SessionData for Gateway {
    type ConnectStream = UnboundedReceiverStream<Result<Frame, Status>>;
    type AttachStream = UnboundedReceiverStream<Result<Frame, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let Ok(Some(Frame {
            kind: Some(Kind::ClientOpen(open)),
        })) = inbound.message().await
        else {
            return Err(Status::invalid_argument("ClientOpen first"));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Ok(frame(Kind::Ready(Ready {
            session_id: open.session_id,
            ..Default::default()
        }))))
        .unwrap();
        {
            let mut ends = self.ends.lock().unwrap();
            ends.client = Some(tx.clone());
            if let Some(agent) = &ends.agent {
                let _ = agent.send(Ok(frame(Kind::PeerAttached(PeerAttached {}))));
            }
        }
        self.relay(inbound, false, tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn attach(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let Ok(Some(Frame {
            kind: Some(Kind::AgentOpen(open)),
        })) = inbound.message().await
        else {
            return Err(Status::invalid_argument("AgentOpen first"));
        };
        if open.node_id != self.node_id {
            return Err(Status::permission_denied("not this session's node"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let gateway = self.clone();
        tokio::spawn(async move {
            let mut nonce = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut nonce).unwrap();
            let _ = tx.send(Ok(frame(Kind::Challenge(AttachChallenge {
                nonce: nonce.clone(),
            }))));
            let Ok(Some(Frame {
                kind: Some(Kind::Proof(proof)),
            })) = inbound.message().await
            else {
                let _ = tx.send(Err(Status::invalid_argument("AttachProof second")));
                return;
            };
            let message = bosun_session::attach_message(&open.session_id, &open.node_id, &nonce);
            if UnparsedPublicKey::new(&ED25519, &gateway.public_key)
                .verify(&message, &proof.signature)
                .is_err()
            {
                let _ = tx.send(Err(Status::unauthenticated("bad proof")));
                return;
            }
            let _ = tx.send(Ok(frame(Kind::Ready(Ready {
                session_id: open.session_id,
                ..Default::default()
            }))));
            {
                let mut ends = gateway.ends.lock().unwrap();
                ends.attaches += 1;
                ends.agent = Some(tx.clone());
                if let Some(client) = &ends.client {
                    let _ = client.send(Ok(frame(Kind::PeerAttached(PeerAttached {}))));
                }
            }
            gateway.relay(inbound, true, tx);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Harness {
    gateway: Gateway,
    channel: tonic::transport::Channel,
    manager: Arc<SessionManager>,
    _stop: CancellationToken,
    results: mpsc::UnboundedReceiver<SessionResult>,
    results_sender: mpsc::UnboundedSender<SessionResult>,
}

const SESSION_ID: &str = "user-0123456789abcdef0";

impl Harness {
    async fn start() -> Self {
        let identity = Identity::new(
            "mi-0123456789abcdef0".into(),
            "http://unused".into(),
            bosun_agent::generate_key().unwrap(),
        )
        .unwrap();
        let gateway = Gateway {
            ends: Default::default(),
            public_key: identity.public_key(),
            node_id: identity.node_id.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SessionDataServer::new(gateway.clone()))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_lazy();
        let options = SessionOptions {
            reattach_initial_delay: Duration::from_millis(50),
            reattach_for: Duration::from_secs(10),
            first_resize_wait: Duration::from_secs(2),
            exit_ack_wait: Duration::from_secs(2),
            ..SessionOptions::default()
        };
        let (results_sender, results) = mpsc::unbounded_channel();
        Self {
            gateway,
            manager: Arc::new(SessionManager::new(channel.clone(), identity, options)),
            channel,
            _stop: stop,
            results,
            results_sender,
        }
    }

    /// Delivers a `sessions.*` message as the agent would (in a task of its own); its result
    /// arrives on `self.results`.
    fn deliver(&self, topic: &str, payload: Vec<u8>) {
        let delivery = Delivery {
            message_id: uuid_like(),
            topic: topic.into(),
            payload,
            ..Default::default()
        };
        // A journal per delivery: each task reads back its own result.
        let journal = Arc::new(MemoryJournal::new());
        let sink = ResultSink::new(
            journal.clone(),
            Arc::new(Notify::new()),
            &delivery,
            CancellationToken::new(),
        );
        let manager = self.manager.clone();
        let results = self.results_sender.clone();
        tokio::spawn(async move {
            manager.handle(delivery, sink).await;
            for pending in bosun_agent::Journal::pending_after(journal.as_ref(), None, 1000) {
                let result = bosun_agent::Journal::load_result(journal.as_ref(), pending.sequence)
                    .unwrap()
                    .unwrap();
                let _ = bosun_agent::Journal::remove_result(journal.as_ref(), &result.result_id);
                if let Ok(result) = serde_json::from_slice(&result.payload) {
                    let _ = results.send(result);
                }
            }
        });
    }

    fn start_session(&self, kind: SessionKind, run_as: &str) {
        let start = StartSession {
            session_id: SESSION_ID.into(),
            kind,
            run_as: run_as.into(),
            idle_timeout_seconds: 1200,
            max_duration_seconds: 0,
            attach_by: String::new(),
        };
        self.deliver("sessions.start", serde_json::to_vec(&start).unwrap());
    }

    async fn client(&self) -> SessionClient {
        SessionClient::connect(self.channel.clone(), "test-bearer", SESSION_ID, "token")
            .await
            .unwrap()
    }

    async fn result(&mut self) -> SessionResult {
        tokio::time::timeout(WAIT, self.results.recv())
            .await
            .expect("a session result in time")
            .unwrap()
    }
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads output until it holds `needle`; returns all of it.
async fn read_until(client: &mut SessionClient, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Err(_) => panic!("no {needle:?} in time; output so far: {seen:?}"),
            Ok(SessionEvent::Output(data)) => seen.push_str(&String::from_utf8_lossy(&data)),
            Ok(other) => panic!("expected output with {needle:?}, got {other:?} after {seen:?}"),
        }
    }
    seen
}

/// Reads until `Exit`; returns its code and the output before it.
async fn read_exit(client: &mut SessionClient) -> (i32, String) {
    let mut seen = String::new();
    loop {
        match tokio::time::timeout(WAIT, client.next_event())
            .await
            .expect("an exit in time")
        {
            SessionEvent::Output(data) => seen.push_str(&String::from_utf8_lossy(&data)),
            SessionEvent::Exit(code) => return (code, seen),
            other => panic!("expected output or exit, got {other:?} after {seen:?}"),
        }
    }
}

fn shell() -> SessionKind {
    SessionKind::Shell {
        shell_profile: String::new(),
    }
}

#[tokio::test]
async fn a_shell_runs_commands_sees_resizes_and_reports_its_exit_status() {
    let mut harness = Harness::start().await;
    harness.start_session(shell(), "root");
    let mut client = harness.client().await;
    client
        .resize(100, 30, Some("xterm-256color"))
        .await
        .unwrap();
    client
        .send_input(b"echo hi-$((40+2)) $TERM\n")
        .await
        .unwrap();
    read_until(&mut client, "hi-42 xterm-256color").await;
    client.send_input(b"stty size\n").await.unwrap();
    read_until(&mut client, "30 100").await;
    client.resize(132, 50, None).await.unwrap();
    client.send_input(b"stty size\n").await.unwrap();
    read_until(&mut client, "50 132").await;
    client.send_input(b"exit 7\n").await.unwrap();
    let (code, _) = read_exit(&mut client).await;
    assert_eq!(code, 7);
    let result = harness.result().await;
    assert_eq!(
        (result.status.as_str(), result.exit_code),
        ("Success", Some(7))
    );
}

#[tokio::test]
async fn ctrl_c_and_the_interrupt_signal_stop_the_foreground_command() {
    let mut harness = Harness::start().await;
    harness.start_session(shell(), "root");
    let mut client = harness.client().await;
    client.resize(80, 24, Some("xterm")).await.unwrap();
    client.send_input(b"echo ready-$((0+1))\n").await.unwrap();
    read_until(&mut client, "ready-1\r\n").await;
    client.send_input(b"sleep 100\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.send_input(b"\x03").await.unwrap();
    client.send_input(b"echo after-$((6*7))\n").await.unwrap();
    read_until(&mut client, "after-42").await;
    client.send_input(b"sleep 100\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.signal(Signal::Interrupt).await.unwrap();
    client
        .send_input(b"echo signalled-$((1+1))\n")
        .await
        .unwrap();
    read_until(&mut client, "signalled-2").await;
    client.send_input(b"exit\n").await.unwrap();
    let (code, _) = read_exit(&mut client).await;
    assert_eq!(code, 0);
    harness.result().await;
}

#[tokio::test]
async fn an_interactive_command_runs_alone_and_exits_with_its_status() {
    let mut harness = Harness::start().await;
    harness.start_session(
        SessionKind::Command {
            command: "read line; echo got-$line; exit 3".into(),
        },
        "root",
    );
    let mut client = harness.client().await;
    client.resize(80, 24, Some("dumb")).await.unwrap();
    client.send_input(b"abc\n").await.unwrap();
    let (code, output) = read_exit(&mut client).await;
    assert!(output.contains("got-abc"), "{output:?}");
    assert_eq!(code, 3);
    let result = harness.result().await;
    assert_eq!(result.exit_code, Some(3));
}

#[tokio::test]
async fn a_user_that_does_not_exist_is_refused_with_a_reason() {
    let mut harness = Harness::start().await;
    harness.start_session(shell(), "no-such-user-xyz");
    let mut client = harness.client().await;
    let (code, output) = read_exit(&mut client).await;
    assert_eq!(code, 126);
    assert!(
        output.contains("user no-such-user-xyz does not exist"),
        "{output:?}"
    );
    let result = harness.result().await;
    assert_eq!(result.status, "Failed");
}

#[tokio::test]
async fn terminate_kills_the_session() {
    let mut harness = Harness::start().await;
    harness.start_session(shell(), "root");
    let mut client = harness.client().await;
    client.resize(80, 24, None).await.unwrap();
    client
        .send_input(b"echo pid-$$-end-$((1+1))\n")
        .await
        .unwrap();
    let output = read_until(&mut client, "-end-2\r\n").await;
    let pid: u32 = output
        .rsplit("pid-")
        .next()
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the shell's pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let terminate = TerminateSession {
        session_id: SESSION_ID.into(),
        reason: "terminated by user/alice".into(),
    };
    harness.deliver(
        "sessions.terminate",
        serde_json::to_vec(&terminate).unwrap(),
    );
    let details = [harness.result().await.detail, harness.result().await.detail];
    assert_eq!(details, ["terminated", "terminated"]);
    assert_eq!(harness.manager.running_sessions(), 0);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the shell is gone"
    );
}

#[tokio::test]
async fn the_default_user_is_unprivileged_and_the_shell_profile_runs_first() {
    let mut harness = Harness::start().await;
    harness.start_session(
        SessionKind::Shell {
            shell_profile: "export PROFILE_MARK=mark-$((20+1))".into(),
        },
        "bosun-user",
    );
    let mut client = harness.client().await;
    client.resize(80, 24, None).await.unwrap();
    client
        .send_input(b"echo who-$(id -un)-$(id -u)-$HOME-$PROFILE_MARK-$((0))\n")
        .await
        .unwrap();
    let output = read_until(&mut client, "-0\r\n").await;
    // The typed line is echoed too; the answer is the line where the expansions happened.
    let line = output
        .split("\r\n")
        .filter_map(|line| line.find("who-").map(|at| &line[at..]))
        .find(|line| !line.contains("$("))
        .expect("the answer line");
    let parts: Vec<&str> = line.split('-').collect();
    assert_eq!(&parts[1..3], ["bosun", "user"], "{line}");
    assert_ne!(parts[3], "0", "not root: {line}");
    assert!(line.contains("/home/bosun-user-mark-21"), "{line}");
    client.send_input(b"exit\n").await.unwrap();
    read_exit(&mut client).await;
    harness.result().await;
}

#[tokio::test]
async fn the_gateway_closing_the_session_ends_it() {
    let mut harness = Harness::start().await;
    harness.start_session(shell(), "root");
    let mut client = harness.client().await;
    client.resize(80, 24, None).await.unwrap();
    client.send_input(b"echo up-$((1+1))\n").await.unwrap();
    read_until(&mut client, "up-2\r\n").await;
    harness.gateway.close("idle timeout (20m)");
    let result = harness.result().await;
    assert!(result.detail.contains("idle timeout"), "{result:?}");
    loop {
        match client.next_event().await {
            SessionEvent::Closed { reason, .. } => {
                assert_eq!(reason, "idle timeout (20m)");
                break;
            }
            SessionEvent::Output(_) => continue,
            other => panic!("expected Closed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn output_survives_a_client_blip_and_an_agent_reattach_without_loss_or_repetition() {
    let mut harness = Harness::start().await;
    harness.start_session(shell(), "root");
    let mut client = harness.client().await;
    client.resize(200, 50, None).await.unwrap();
    client
        .send_input(b"stty -echo; echo go-$((0+1))\n")
        .await
        .unwrap();
    read_until(&mut client, "go-1\r\n").await;
    client
        .send_input(
            b"for i in $(seq 1 3000); do echo line-$i; [ $((i % 500)) = 0 ] && sleep 0.3; done; echo done-$((0+1))\n",
        )
        .await
        .unwrap();
    let mut seen = read_until(&mut client, "line-500\r\n").await;
    // The client blips; the agent goes on producing output into its window.
    client.drop_connection();
    loop {
        match client.next_event().await {
            SessionEvent::Output(data) => seen.push_str(&String::from_utf8_lossy(&data)),
            SessionEvent::Disconnected(_) => break,
            other => panic!("{other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .reconnect(harness.channel.clone(), "test-bearer", "token-2")
        .await
        .unwrap();
    seen.push_str(&read_until(&mut client, "line-1500\r\n").await);
    // The gateway the agent is attached to dies; the agent re-attaches.
    harness.gateway.break_agent();
    seen.push_str(&read_until(&mut client, "done-1").await);
    assert!(harness.gateway.attaches() >= 2, "the agent re-attached");
    let lines: Vec<&str> = seen
        .split("\r\n")
        .filter_map(|line| line.find("line-").map(|at| &line[at..]))
        .collect();
    let expected: Vec<String> = (1..=3000).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, expected, "every line once, in order");
    // Input typed while detached arrives too.
    client.send_input(b"exit 5\n").await.unwrap();
    let (code, _) = read_exit(&mut client).await;
    assert_eq!(code, 5);
    assert_eq!(harness.result().await.exit_code, Some(5));
}

/// A TCP server that answers each line with it upper-cased, on 127.0.0.1.
async fn upper_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    let upper = buffer[..read].to_ascii_uppercase();
                    if socket.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn port_forwarding_carries_several_concurrent_connections() {
    let port = upper_server().await;
    let mut harness = Harness::start().await;
    harness.start_session(
        SessionKind::Port {
            host: "localhost".into(),
            port,
        },
        "",
    );
    let mut client = harness.client().await;
    let writer = client.writer();
    let payloads: HashMap<u32, Vec<u8>> = (1..=6u32)
        .map(|id| {
            let text = format!("conn-{id}-").repeat(20_000);
            (id, text.into_bytes())
        })
        .collect();
    for id in payloads.keys() {
        writer.port_open(*id).await.unwrap();
    }
    let sending = {
        let payloads = payloads.clone();
        tokio::spawn(async move {
            for (id, data) in &payloads {
                writer.port_data(*id, data).await.unwrap();
            }
        })
    };
    let mut received: HashMap<u32, Vec<u8>> = HashMap::new();
    let complete = |received: &HashMap<u32, Vec<u8>>| {
        payloads
            .iter()
            .all(|(id, data)| received.get(id).map_or(0, Vec::len) >= data.len())
    };
    while !complete(&received) {
        match tokio::time::timeout(WAIT, client.next_event())
            .await
            .expect("data in time")
        {
            SessionEvent::PortData {
                connection_id,
                data,
            } => received.entry(connection_id).or_default().extend(data),
            other => panic!("expected port data, got {other:?}"),
        }
    }
    sending.await.unwrap();
    for (id, data) in &payloads {
        assert_eq!(received[id], data.to_ascii_uppercase(), "connection {id}");
    }
    // Closing one connection leaves the session open for new ones.
    client.port_close(1, "").await.unwrap();
    client.port_open(7).await.unwrap();
    client.port_data(7, b"x").await.unwrap();
    match tokio::time::timeout(WAIT, client.next_event())
        .await
        .unwrap()
    {
        SessionEvent::PortData {
            connection_id,
            data,
        } => {
            assert_eq!((connection_id, data.as_slice()), (7, b"X".as_slice()));
        }
        other => panic!("{other:?}"),
    }
    harness.gateway.close("terminated by user/alice");
    harness.result().await;
}

#[tokio::test]
async fn deny_listed_and_refused_destinations_close_the_connection_with_a_reason() {
    let mut harness = Harness::start().await;
    harness.start_session(
        SessionKind::Port {
            host: "169.254.169.254".into(),
            port: 80,
        },
        "",
    );
    let mut client = harness.client().await;
    client.port_open(1).await.unwrap();
    match tokio::time::timeout(WAIT, client.next_event())
        .await
        .unwrap()
    {
        SessionEvent::PortClose {
            connection_id,
            error,
        } => {
            assert_eq!(connection_id, 1);
            assert!(error.contains("169.254.169.254 is not allowed"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    harness.gateway.close("done");
    harness.result().await;

    // A closed port: connection refused.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut harness = Harness::start().await;
    harness.start_session(
        SessionKind::Port {
            host: "127.0.0.1".into(),
            port,
        },
        "",
    );
    let mut client = harness.client().await;
    client.port_open(9).await.unwrap();
    match tokio::time::timeout(WAIT, client.next_event())
        .await
        .unwrap()
    {
        SessionEvent::PortClose { error, .. } => assert_eq!(error, "connection refused"),
        other => panic!("{other:?}"),
    }
    harness.gateway.close("done");
    harness.result().await;
}

#[tokio::test]
async fn output_larger_than_the_window_arrives_whole_and_in_order() {
    let mut harness = Harness::start().await;
    harness.start_session(
        SessionKind::Command {
            command: "seq 1 2000000".into(),
        },
        "root",
    );
    let mut client = harness.client().await;
    client.resize(80, 24, None).await.unwrap();
    let started = std::time::Instant::now();
    let mut output = Vec::new();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(60), client.next_event())
            .await
            .expect("output in time")
        {
            SessionEvent::Output(data) => output.extend(data),
            SessionEvent::Exit(code) => break code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 0);
    let text = String::from_utf8(output).unwrap();
    let mut expected = 1u64;
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        assert_eq!(line, expected.to_string());
        expected += 1;
    }
    assert_eq!(expected, 2_000_001);
    eprintln!(
        "{} bytes through a PTY and the session in {:?}",
        text.len(),
        started.elapsed()
    );
    harness.result().await;
}
