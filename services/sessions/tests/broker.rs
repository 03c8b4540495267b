//! The session broker over real gRPC: synthetic agents (Ed25519 proofs) and clients (bearer
//! tokens through `VerifyLayer`) speaking raw frames, sessions in PostgreSQL / SQLite, and
//! two broker replicas sharing a Redis prefix for the cross-replica relay.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use bosun_auth::{
    DEFAULT_ISSUER, INTERNAL_AUDIENCE, Principal, SigningKey, TokenIssuer, TokenVerifier,
    VerifyLayer,
};
use bosun_core::ApiError;
use bosun_nodelink::{NodeCredentials, NodeDirectory};
use bosun_objects::{ObjectStoreConfig, Objects};
use bosun_proto::agent::v1::HostFacts;
use bosun_proto::sessions::v1::session_data_client::SessionDataClient;
use bosun_proto::sessions::v1::{
    Ack, AgentOpen, AttachProof, ClientOpen, Exit, Frame, Packet, TerminalSize, frame, packet,
};
use bosun_sessions::broker::RelayRedis;
use bosun_sessions::entities::session;
use bosun_sessions::store::SessionEnd;
use bosun_sessions::{Broker, SessionStatus, SessionStore, SessionsConfig};
use bosun_store::testing::TestDatabase;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _, Set};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const ATTACH_PATH: &str = "/bosun.sessions.v1.SessionData/Attach";
const WAIT: Duration = Duration::from_secs(15);
const OWNER: &str = "user/alice";

/// A node directory that knows one key per node.
#[derive(Default)]
struct FakeDirectory {
    keys: std::sync::Mutex<std::collections::HashMap<String, [u8; 32]>>,
}

#[async_trait]
impl NodeDirectory for FakeDirectory {
    async fn credentials(&self, node_id: &str) -> Result<Option<NodeCredentials>, ApiError> {
        Ok(self
            .keys
            .lock()
            .unwrap()
            .get(node_id)
            .map(|public_key| NodeCredentials {
                public_key: *public_key,
            }))
    }

    async fn record_connect(
        &self,
        _node_id: &str,
        _facts: &HostFacts,
        _at: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    async fn record_pings(
        &self,
        _node_ids: &[String],
        _at: DateTime<Utc>,
    ) -> Result<Vec<String>, ApiError> {
        Ok(Vec::new())
    }
}

struct Node {
    id: String,
    key: Ed25519KeyPair,
}

fn random_hex(digits: usize) -> String {
    let text = uuid::Uuid::new_v4().simple().to_string();
    text[..digits].to_owned()
}

fn config() -> SessionsConfig {
    SessionsConfig {
        attach_timeout: Duration::from_secs(5),
        hub_touch_interval: Duration::from_millis(200),
        hub_lost_after: Duration::from_secs(1),
        transcript_flush_interval: Duration::from_millis(200),
        time_unit: Duration::from_secs(1),
        ..SessionsConfig::default()
    }
}

/// One test's world: a database, objects, node keys, the token issuer, broker replicas.
struct World {
    db: TestDatabase,
    store: SessionStore,
    objects: Arc<Objects>,
    _objects_dir: TempDir,
    directory: Arc<FakeDirectory>,
    issuer: TokenIssuer,
    verifier: Arc<TokenVerifier>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for a test session row.
#[derive(Clone)]
struct SessionOptions {
    idle_minutes: i32,
    max_minutes: i32,
    transcript: bool,
    record_input: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            idle_minutes: 60,
            max_minutes: 0,
            transcript: false,
            record_input: false,
        }
    }
}

impl World {
    /// Ends the session as TerminateSession does (the row first; the hub notices on a touch).
    async fn terminate(&self, session_id: &str) {
        self.store
            .end(
                session_id,
                SessionEnd {
                    status: SessionStatus::Terminated,
                    details: "terminated by user/alice".to_owned(),
                    exit_code: None,
                    bytes_in: 0,
                    bytes_out: 0,
                },
            )
            .await
            .expect("end");
    }

    async fn new(test_db: TestDatabase) -> World {
        bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
            .await
            .expect("audit migrations");
        bosun_store::migrate::<bosun_sessions::Migrator>(&test_db.db)
            .await
            .expect("sessions migrations");
        let audit = bosun_audit::AuditLog::new(test_db.db.clone());
        let store = SessionStore::new(test_db.db.clone(), audit, config());
        let dir = std::env::temp_dir().join(format!("bosun-broker-{}", random_hex(16)));
        let objects = Arc::new(
            Objects::open(&ObjectStoreConfig::Local { root: dir.clone() }).expect("objects"),
        );
        let key = SigningKey::generate().expect("signing key");
        let verifier =
            Arc::new(TokenVerifier::new(&[key.verifying_key()], DEFAULT_ISSUER).expect("verifier"));
        World {
            db: test_db,
            store,
            objects,
            _objects_dir: TempDir(dir),
            directory: Arc::new(FakeDirectory::default()),
            issuer: TokenIssuer::new(key, DEFAULT_ISSUER),
            verifier,
            stops: Vec::new(),
        }
    }

    async fn postgres() -> World {
        World::new(bosun_store::testing::postgres().await).await
    }

    async fn sqlite() -> World {
        World::new(bosun_store::testing::sqlite().await).await
    }

    fn node(&self) -> Node {
        let random = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random).expect("key");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key parses");
        let id = format!("mi-{}", random_hex(17));
        let public: [u8; 32] = key.public_key().as_ref().try_into().expect("32 bytes");
        self.directory
            .keys
            .lock()
            .unwrap()
            .insert(id.clone(), public);
        Node { id, key }
    }

    /// A broker replica served on a loopback port behind `VerifyLayer` (Attach open).
    async fn replica(&mut self, redis: Option<RelayRedis>) -> (Broker, Channel) {
        let broker = Broker::start(
            self.store.clone(),
            self.directory.clone(),
            self.objects.clone(),
            config(),
            format!("gw-{}", random_hex(8)),
            redis,
        )
        .await
        .expect("broker starts");
        let layer =
            VerifyLayer::new(self.verifier.clone(), INTERNAL_AUDIENCE).public_path(ATTACH_PATH);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(layer)
            .add_service(broker.clone().into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(async move { server.await.expect("server runs") });
        self.stops.push(stop);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        (broker, channel)
    }

    /// A Connecting session row on `node` owned by `user/alice`; returns its id and token.
    async fn session(&self, node: &Node, options: SessionOptions) -> (String, String) {
        let id = format!("alice-{}", random_hex(17));
        let token = format!("token-{}", random_hex(32));
        let now = Utc::now();
        session::Model {
            id: id.clone(),
            node_id: node.id.clone(),
            owner: OWNER.to_owned(),
            status: "Connecting".to_owned(),
            session_type: "Standard_Stream".to_owned(),
            document_name: "Bosun-StartShellSession".to_owned(),
            document_version: "1".to_owned(),
            reason: String::new(),
            run_as: "bosun-user".to_owned(),
            host: String::new(),
            port_number: 0,
            local_port_number: 0,
            parameters: "{}".to_owned(),
            idle_timeout_minutes: options.idle_minutes,
            max_duration_minutes: options.max_minutes,
            transcript: options.transcript,
            record_input: options.record_input,
            token_hash: hex::encode(Sha256::digest(token.as_bytes())),
            token_expires_at: now + chrono::Duration::seconds(60),
            token_used: false,
            hub: None,
            hub_seen_at: None,
            created_at: now,
            ended_at: None,
            details: String::new(),
            exit_code: None,
            bytes_in: 0,
            bytes_out: 0,
        }
        .into_active_model()
        .insert(&self.db.db)
        .await
        .expect("insert session");
        (id, token)
    }

    /// A new token for the session (what ResumeSession does).
    async fn new_token(&self, session_id: &str) -> String {
        let token = format!("token-{}", random_hex(32));
        let mut row = session::Entity::find_by_id(session_id.to_owned())
            .one(&self.db.db)
            .await
            .expect("read")
            .expect("row")
            .into_active_model();
        row.token_hash = Set(hex::encode(Sha256::digest(token.as_bytes())));
        row.token_used = Set(false);
        row.token_expires_at = Set(Utc::now() + chrono::Duration::seconds(60));
        row.update(&self.db.db).await.expect("update token");
        token
    }

    async fn row(&self, session_id: &str) -> session::Model {
        session::Entity::find_by_id(session_id.to_owned())
            .one(&self.db.db)
            .await
            .expect("read")
            .expect("row")
    }

    /// Waits until the row's status is `status`.
    async fn wait_status(&self, session_id: &str, status: &str) -> session::Model {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = self.row(session_id).await;
            if row.status == status {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {session_id} is {} (details {:?}), not {status}",
                row.status,
                row.details
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn bearer(&self, principal: &str) -> String {
        let (token, _) = self
            .issuer
            .issue(
                &Principal::parse(principal).expect("principal"),
                INTERNAL_AUDIENCE,
                "login-1",
                Vec::new(),
                Vec::new(),
                Duration::from_secs(60),
            )
            .expect("token");
        token
    }

    /// Opens Connect as `principal` and sends ClientOpen.
    async fn open_client(
        &self,
        channel: &Channel,
        principal: &str,
        session_id: &str,
        token: &str,
    ) -> TestEnd {
        let (sender, receiver) = mpsc::channel(64);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.bearer(principal))
                .parse()
                .expect("header"),
        );
        sender
            .send(kind(frame::Kind::ClientOpen(ClientOpen {
                session_id: session_id.to_owned(),
                token: token.to_owned(),
            })))
            .await
            .expect("queue open");
        let inbound = SessionDataClient::new(channel.clone())
            .connect(request)
            .await
            .expect("connect answers")
            .into_inner();
        TestEnd { sender, inbound }
    }

    /// A client that got Ready.
    async fn client(&self, channel: &Channel, session_id: &str, token: &str) -> TestEnd {
        let mut client = self.open_client(channel, OWNER, session_id, token).await;
        let ready = client.next().await;
        assert!(
            matches!(ready, frame::Kind::Ready(ref ready) if ready.session_id == session_id),
            "{ready:?}"
        );
        client
    }
}

/// Opens Attach for `session_id` as `node_id`, signing with `key`.
async fn open_agent(
    channel: &Channel,
    session_id: &str,
    node_id: &str,
    key: &Ed25519KeyPair,
) -> TestEnd {
    let (sender, receiver) = mpsc::channel(64);
    sender
        .send(kind(frame::Kind::AgentOpen(AgentOpen {
            session_id: session_id.to_owned(),
            node_id: node_id.to_owned(),
        })))
        .await
        .expect("queue open");
    let inbound = SessionDataClient::new(channel.clone())
        .attach(tonic::Request::new(ReceiverStream::new(receiver)))
        .await
        .expect("attach answers")
        .into_inner();
    let mut agent = TestEnd { sender, inbound };
    let Ok(Some(Frame {
        kind: Some(frame::Kind::Challenge(challenge)),
    })) = agent.receive().await
    else {
        panic!("no challenge");
    };
    let signature = key.sign(&bosun_session::attach_message(
        session_id,
        node_id,
        &challenge.nonce,
    ));
    agent
        .send(frame::Kind::Proof(AttachProof {
            signature: signature.as_ref().to_vec(),
        }))
        .await;
    agent
}

/// An agent that got Ready.
async fn agent(channel: &Channel, session_id: &str, node: &Node) -> TestEnd {
    let mut agent = open_agent(channel, session_id, &node.id, &node.key).await;
    let ready = agent.next().await;
    assert!(matches!(ready, frame::Kind::Ready(_)), "{ready:?}");
    agent
}

fn kind(kind: frame::Kind) -> Frame {
    Frame { kind: Some(kind) }
}

fn packet(seq: u64, body: packet::Body) -> frame::Kind {
    frame::Kind::Packet(Packet {
        seq,
        body: Some(body),
    })
}

fn input(seq: u64, bytes: &[u8]) -> frame::Kind {
    packet(seq, packet::Body::Input(bytes.to_vec()))
}

fn output(seq: u64, bytes: &[u8]) -> frame::Kind {
    packet(seq, packet::Body::Output(bytes.to_vec()))
}

/// One end of a session stream, speaking raw frames.
struct TestEnd {
    sender: mpsc::Sender<Frame>,
    inbound: Streaming<Frame>,
}

impl TestEnd {
    async fn send(&self, frame: frame::Kind) {
        self.sender.send(kind(frame)).await.expect("stream open");
    }

    async fn receive(&mut self) -> Result<Option<Frame>, Status> {
        tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("a frame in time")
    }

    /// The next frame; panics on an error or the end.
    async fn next(&mut self) -> frame::Kind {
        match self.receive().await {
            Ok(Some(Frame { kind: Some(kind) })) => kind,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, skipping PeerAttached.
    async fn next_data(&mut self) -> frame::Kind {
        loop {
            match self.next().await {
                frame::Kind::PeerAttached(_) => {}
                other => return other,
            }
        }
    }

    /// The stream's error.
    async fn error(&mut self) -> Status {
        match self.receive().await {
            Err(status) => status,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// The stream's error, after any frames still before it.
    async fn error_after_frames(&mut self) -> Status {
        loop {
            match self.receive().await {
                Err(status) => return status,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("expected an error, the stream ended"),
            }
        }
    }

    /// Expects `Closed{status, reason}` then the end of the stream (frames before it are
    /// skipped).
    async fn expect_closed(&mut self, status: &str, reason: &str) {
        loop {
            match self.next().await {
                frame::Kind::Closed(closed) => {
                    assert_eq!(
                        (closed.status.as_str(), closed.reason.as_str()),
                        (status, reason)
                    );
                    break;
                }
                _ => continue,
            }
        }
        assert!(
            matches!(self.receive().await, Ok(None)),
            "stream ends after Closed"
        );
    }
}

/// Input from client to agent and output back, in order; Exit ends it Terminated.
async fn relay_round_trip(world: &mut World, redis: Option<RelayRedis>) {
    let (_broker, channel) = world.replica(redis).await;
    let node = world.node();
    let options = SessionOptions {
        transcript: true,
        ..SessionOptions::default()
    };
    let (session_id, token) = world.session(&node, options).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    world.wait_status(&session_id, "Connected").await;

    client
        .send(packet(
            1,
            packet::Body::Resize(TerminalSize {
                cols: 100,
                rows: 30,
                term: "xterm".to_owned(),
            }),
        ))
        .await;
    for seq in 2..=50_u64 {
        client
            .send(input(seq, format!("in{seq};").as_bytes()))
            .await;
    }
    assert!(matches!(
        agent.next().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));
    for seq in 2..=50_u64 {
        match agent.next().await {
            frame::Kind::Packet(Packet {
                seq: got,
                body: Some(packet::Body::Input(bytes)),
            }) => {
                assert_eq!(got, seq);
                assert_eq!(bytes, format!("in{seq};").into_bytes());
            }
            other => panic!("{other:?}"),
        }
    }
    agent.send(frame::Kind::Ack(Ack { seq: 50 })).await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Ack(Ack { seq: 50 })
    ));
    for seq in 1..=50_u64 {
        agent
            .send(output(seq, format!("out{seq}\n").as_bytes()))
            .await;
    }
    for seq in 1..=50_u64 {
        match client.next().await {
            frame::Kind::Packet(Packet {
                seq: got,
                body: Some(packet::Body::Output(bytes)),
            }) => {
                assert_eq!(got, seq);
                assert_eq!(bytes, format!("out{seq}\n").into_bytes());
            }
            other => panic!("{other:?}"),
        }
    }
    agent
        .send(packet(51, packet::Body::Exit(Exit { code: 3 })))
        .await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet {
            seq: 51,
            body: Some(packet::Body::Exit(Exit { code: 3 }))
        })
    ));
    client.send(frame::Kind::Ack(Ack { seq: 51 })).await;
    client.expect_closed("Terminated", "exit status 3").await;
    agent.expect_closed("Terminated", "exit status 3").await;
    let row = world.wait_status(&session_id, "Terminated").await;
    assert_eq!(row.details, "exit status 3");
    assert_eq!(row.exit_code, Some(3));
    let expected_in: usize = (2..=50).map(|seq: u64| format!("in{seq};").len()).sum();
    let expected_out: usize = (1..=50).map(|seq: u64| format!("out{seq}\n").len()).sum();
    assert_eq!(row.bytes_in, expected_in as i64);
    assert_eq!(row.bytes_out, expected_out as i64);

    let cast = bosun_sessions::transcript::export_asciicast(&world.objects, &session_id)
        .await
        .expect("export")
        .expect("a transcript");
    let text = String::from_utf8(cast).expect("utf-8");
    let header = text.lines().next().expect("header");
    assert!(header.contains("\"width\":100"), "{header}");
    assert!(text.contains("out1\\n"), "{text}");
    assert!(text.contains("out50\\n"), "{text}");
    // Input is not recorded unless the session says so.
    assert!(!text.contains("in2;"), "{text}");
}

#[tokio::test]
async fn relays_in_order_both_ways_and_exit_ends_terminated_postgres() {
    let mut world = World::postgres().await;
    relay_round_trip(&mut world, None).await;
}

#[tokio::test]
async fn relays_in_order_both_ways_and_exit_ends_terminated_sqlite() {
    let mut world = World::sqlite().await;
    relay_round_trip(&mut world, None).await;
}

#[tokio::test]
async fn relays_on_one_replica_with_redis_configured() {
    let mut world = World::postgres().await;
    let redis = relay_redis(&random_prefix());
    relay_round_trip(&mut world, Some(redis)).await;
}

#[tokio::test]
async fn attach_refuses_bad_proofs_other_nodes_and_ended_sessions() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let other = world.node();
    let (session_id, _token) = world.session(&node, SessionOptions::default()).await;

    // Signed with another node's key.
    let mut forged = open_agent(&channel, &session_id, &node.id, &other.key).await;
    assert_eq!(forged.error().await.code(), Code::Unauthenticated);

    // A genuine node, but not the session's.
    let mut wrong = open_agent(&channel, &session_id, &other.id, &other.key).await;
    assert_eq!(wrong.error().await.code(), Code::PermissionDenied);

    // An unknown node.
    // An unknown node gets no challenge.
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(kind(frame::Kind::AgentOpen(AgentOpen {
            session_id: session_id.clone(),
            node_id: "mi-00000000000000000".to_owned(),
        })))
        .await
        .expect("queue open");
    let mut unknown = TestEnd {
        sender,
        inbound: SessionDataClient::new(channel.clone())
            .attach(tonic::Request::new(ReceiverStream::new(receiver)))
            .await
            .expect("attach answers")
            .into_inner(),
    };
    let status = unknown.error().await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // An ended session.
    world.terminate(&session_id).await;
    let mut late = open_agent(&channel, &session_id, &node.id, &node.key).await;
    assert_eq!(late.error().await.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn connect_refuses_wrong_used_and_foreign_tokens() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let _agent = agent(&channel, &session_id, &node).await;

    let mut wrong = world
        .open_client(&channel, OWNER, &session_id, "not-the-token")
        .await;
    assert_eq!(wrong.error().await.code(), Code::Unauthenticated);

    let mut foreign = world
        .open_client(&channel, "user/mallory", &session_id, &token)
        .await;
    assert_eq!(foreign.error().await.code(), Code::PermissionDenied);

    let mut missing = world
        .open_client(&channel, OWNER, "alice-00000000000000000", &token)
        .await;
    assert_eq!(missing.error().await.code(), Code::NotFound);

    let _client = world.client(&channel, &session_id, &token).await;
    let mut again = world
        .open_client(&channel, OWNER, &session_id, &token)
        .await;
    assert_eq!(again.error().await.code(), Code::Unauthenticated);

    // Without a bearer token the edge's layer refuses the call.
    let (_sender, receiver) = mpsc::channel::<Frame>(1);
    let status = SessionDataClient::new(channel.clone())
        .connect(tonic::Request::new(ReceiverStream::new(receiver)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn client_before_agent_waits_for_it_on_one_replica() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    client.send(input(1, b"early")).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    assert!(matches!(client.next().await, frame::Kind::PeerAttached(_)));
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    match agent.next().await {
        frame::Kind::Packet(Packet {
            seq: 1,
            body: Some(packet::Body::Input(bytes)),
        }) => assert_eq!(bytes, b"early"),
        other => panic!("{other:?}"),
    }
    agent.send(output(1, b"hello")).await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));
    world.wait_status(&session_id, "Connected").await;
}

#[tokio::test]
async fn client_of_a_session_attached_elsewhere_is_refused_without_redis() {
    let mut world = World::postgres().await;
    let (_a, channel_a) = world.replica(None).await;
    let (_b, channel_b) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let _agent = agent(&channel_b, &session_id, &node).await;
    let client = world.client(&channel_b, &session_id, &token).await;
    drop(client.sender);
    world.wait_status(&session_id, "Disconnected").await;
    let token = world.new_token(&session_id).await;
    let mut elsewhere = world
        .open_client(&channel_a, OWNER, &session_id, &token)
        .await;
    let status = elsewhere.error().await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("not attached to this gateway"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_reconnecting_client_is_announced_to_the_agent() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let client = world.client(&channel, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    drop(client);
    world.wait_status(&session_id, "Disconnected").await;
    // Output while nobody listens is dropped by the broker (the agent keeps it unacked).
    agent.send(output(1, b"lost")).await;

    let token = world.new_token(&session_id).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    world.wait_status(&session_id, "Connected").await;
    client
        .send(frame::Kind::Resume(bosun_proto::sessions::v1::Resume {
            received: 0,
        }))
        .await;
    assert!(matches!(agent.next().await, frame::Kind::Resume(_)));
    agent.send(output(1, b"lost")).await;
    match client.next().await {
        frame::Kind::Packet(Packet {
            seq: 1,
            body: Some(packet::Body::Output(bytes)),
        }) => assert_eq!(bytes, b"lost"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_agent_attaching_again_replaces_its_old_stream() {
    let mut world = World::postgres().await;
    let (broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut first = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    assert!(matches!(first.next().await, frame::Kind::PeerAttached(_)));
    let mut second = agent(&channel, &session_id, &node).await;
    assert!(matches!(client.next().await, frame::Kind::PeerAttached(_)));
    assert!(first.receive().await.is_err(), "the old stream is ended");
    second.send(output(1, b"again")).await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));
    client.send(input(1, b"x")).await;
    assert!(matches!(
        second.next().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));
    assert_eq!(broker.hub_count(), 1);
}

#[tokio::test]
async fn idle_timeout_closes_both_ends_and_ends_the_session() {
    let mut world = World::postgres().await;
    let (broker, channel) = world.replica(None).await;
    let node = world.node();
    let options = SessionOptions {
        idle_minutes: 1,
        ..SessionOptions::default()
    };
    let (session_id, token) = world.session(&node, options).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    // Output does not keep a session alive; input does, for a while.
    for seq in 1..=4_u64 {
        client.send(input(seq, b"k")).await;
        agent.send(output(seq, b"o")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let started = tokio::time::Instant::now();
    client
        .expect_closed("Terminated", "idle timeout (1m)")
        .await;
    agent.expect_closed("Terminated", "idle timeout (1m)").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let row = world.wait_status(&session_id, "Terminated").await;
    assert_eq!(row.details, "idle timeout (1m)");
    assert_eq!(row.bytes_in, 4);
    assert_eq!(broker.hub_count(), 0);
}

#[tokio::test]
async fn max_duration_closes_an_active_session() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let options = SessionOptions {
        max_minutes: 2,
        ..SessionOptions::default()
    };
    let (session_id, token) = world.session(&node, options).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let client = world.client(&channel, &session_id, &token).await;
    let typing = tokio::spawn(async move {
        for seq in 1..=40_u64 {
            if client.sender.send(kind(input(seq, b"k"))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
    });
    agent
        .expect_closed("Terminated", "max session duration (2m)")
        .await;
    let mut client = typing.await.expect("typing");
    client
        .expect_closed("Terminated", "max session duration (2m)")
        .await;
    world.wait_status(&session_id, "Terminated").await;
}

#[tokio::test]
async fn a_session_ended_elsewhere_is_closed_at_the_next_touch() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    client.send(input(1, b"abc")).await;
    assert!(matches!(agent.next_data().await, frame::Kind::Packet(_)));
    world.terminate(&session_id).await;
    // Both ends are told who ended it.
    client
        .expect_closed("Terminated", "terminated by user/alice")
        .await;
    agent
        .expect_closed("Terminated", "terminated by user/alice")
        .await;
    // The hub's last touch still records the bytes it relayed.
    let deadline = tokio::time::Instant::now() + WAIT;
    while world.row(&session_id).await.bytes_in != 3 {
        assert!(tokio::time::Instant::now() < deadline, "bytes recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lost_agent_fails_the_session_after_hub_lost_after() {
    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let agent = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    drop(agent);
    client.expect_closed("Failed", "agent disconnected").await;
    let row = world.wait_status(&session_id, "Failed").await;
    assert_eq!(row.details, "agent disconnected");
}

#[tokio::test]
async fn shutdown_breaks_local_ends_without_ending_the_session() {
    let mut world = World::postgres().await;
    let (broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    world.wait_status(&session_id, "Connected").await;
    broker.shutdown().await;
    // A break, not `Closed`: both ends reconnect elsewhere and the session lives on.
    for end in [&mut agent, &mut client] {
        let status = end.error_after_frames().await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("gateway shutting down"),
            "{status:?}"
        );
    }
    assert_eq!(world.row(&session_id).await.status, "Connected");
}

fn random_prefix() -> String {
    format!("test-{}:", random_hex(12))
}

fn relay_redis(prefix: &str) -> RelayRedis {
    RelayRedis {
        url: REDIS_URL.to_owned(),
        prefix: prefix.to_owned(),
    }
}

/// Client on replica A, agent on replica B; `client_first`: the client connects before the
/// agent attaches.
async fn cross_replica(client_first: bool) {
    let mut world = World::postgres().await;
    let prefix = random_prefix();
    let (_a, channel_a) = world.replica(Some(relay_redis(&prefix))).await;
    let (_b, channel_b) = world.replica(Some(relay_redis(&prefix))).await;
    let node = world.node();
    let options = SessionOptions {
        transcript: true,
        record_input: true,
        ..SessionOptions::default()
    };
    let (session_id, token) = world.session(&node, options).await;
    let (mut agent, mut client) = if client_first {
        let mut client = world.client(&channel_a, &session_id, &token).await;
        client.send(input(1, b"early")).await;
        let agent = agent(&channel_b, &session_id, &node).await;
        assert!(matches!(client.next().await, frame::Kind::PeerAttached(_)));
        (agent, client)
    } else {
        let agent = agent(&channel_b, &session_id, &node).await;
        let client = world.client(&channel_a, &session_id, &token).await;
        (agent, client)
    };
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    world.wait_status(&session_id, "Connected").await;
    let first = if client_first {
        match agent.next().await {
            frame::Kind::Packet(Packet {
                seq: 1,
                body: Some(packet::Body::Input(bytes)),
            }) => assert_eq!(bytes, b"early"),
            other => panic!("{other:?}"),
        }
        2
    } else {
        1
    };
    for seq in first..=first + 20 {
        client.send(input(seq, format!("i{seq}").as_bytes())).await;
    }
    for seq in first..=first + 20 {
        match agent.next().await {
            frame::Kind::Packet(Packet {
                seq: got,
                body: Some(packet::Body::Input(bytes)),
            }) => {
                assert_eq!(got, seq);
                assert_eq!(bytes, format!("i{seq}").into_bytes());
            }
            other => panic!("{other:?}"),
        }
    }
    // A bulk of output crosses in order.
    let chunk = vec![b'x'; 32 << 10];
    for seq in 1..=64_u64 {
        agent.send(output(seq, &chunk)).await;
    }
    for seq in 1..=64_u64 {
        match client.next().await {
            frame::Kind::Packet(Packet {
                seq: got,
                body: Some(packet::Body::Output(bytes)),
            }) => {
                assert_eq!(got, seq);
                assert_eq!(bytes.len(), chunk.len());
            }
            other => panic!("{other:?}"),
        }
    }
    agent
        .send(packet(65, packet::Body::Exit(Exit { code: 0 })))
        .await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet { seq: 65, .. })
    ));
    client.send(frame::Kind::Ack(Ack { seq: 65 })).await;
    client.expect_closed("Terminated", "exit status 0").await;
    agent.expect_closed("Terminated", "exit status 0").await;
    let row = world.wait_status(&session_id, "Terminated").await;
    assert_eq!(row.exit_code, Some(0));
    assert_eq!(row.bytes_out, 64 * (32 << 10));
    // The streams go shortly after the end.
    let redis = redis::Client::open(REDIS_URL).expect("redis url");
    let mut connection = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for suffix in ["c2a", "a2c"] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}sessions:{session_id}:{suffix}"))
            .query_async(&mut connection)
            .await
            .expect("pttl");
        assert!(ttl > 0 && ttl <= 30_000, "{suffix} expires in {ttl} ms");
    }
    let cast = bosun_sessions::transcript::export_asciicast(&world.objects, &session_id)
        .await
        .expect("export")
        .expect("a transcript");
    let text = String::from_utf8(cast).expect("utf-8");
    // Input is recorded when the session says so.
    assert!(text.contains("\"i\""), "{}", &text[..text.len().min(400)]);
}

#[tokio::test]
async fn relays_between_replicas_through_redis_agent_first() {
    cross_replica(false).await;
}

#[tokio::test]
async fn relays_between_replicas_through_redis_client_first() {
    cross_replica(true).await;
}

#[tokio::test]
async fn a_remote_client_reconnecting_is_announced_and_relayed() {
    let mut world = World::postgres().await;
    let prefix = random_prefix();
    let (_a, channel_a) = world.replica(Some(relay_redis(&prefix))).await;
    let (_b, channel_b) = world.replica(Some(relay_redis(&prefix))).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut agent = agent(&channel_b, &session_id, &node).await;
    let client = world.client(&channel_a, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    drop(client);
    world.wait_status(&session_id, "Disconnected").await;
    // Back on the hub's own replica this time.
    let token = world.new_token(&session_id).await;
    let mut client = world.client(&channel_b, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    agent.send(output(1, b"here")).await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));
    // And away again, to the other replica.
    drop(client);
    world.wait_status(&session_id, "Disconnected").await;
    let token = world.new_token(&session_id).await;
    let mut client = world.client(&channel_a, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));
    agent.send(output(2, b"there")).await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet { seq: 2, .. })
    ));
}

#[tokio::test]
async fn an_agent_re_attaching_to_another_replica_takes_the_session_over() {
    let mut world = World::postgres().await;
    let prefix = random_prefix();
    let (_a, channel_a) = world.replica(Some(relay_redis(&prefix))).await;
    let (b, channel_b) = world.replica(Some(relay_redis(&prefix))).await;
    let (c, channel_c) = world.replica(Some(relay_redis(&prefix))).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut first = agent(&channel_b, &session_id, &node).await;
    let mut client = world.client(&channel_a, &session_id, &token).await;
    assert!(matches!(first.next().await, frame::Kind::PeerAttached(_)));
    first.send(output(1, b"one")).await;
    assert!(matches!(
        client.next().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));

    // The agent's stream to B breaks; it attaches to C.
    drop(first);
    let mut second = agent(&channel_c, &session_id, &node).await;
    assert!(matches!(client.next().await, frame::Kind::PeerAttached(_)));
    assert!(matches!(second.next().await, frame::Kind::PeerAttached(_)));
    second.send(output(2, b"two")).await;
    assert!(matches!(
        client.next_data().await,
        frame::Kind::Packet(Packet { seq: 2, .. })
    ));
    client.send(input(1, b"x")).await;
    assert!(matches!(
        second.next_data().await,
        frame::Kind::Packet(Packet { seq: 1, .. })
    ));

    // B steps down instead of failing the session when its agent-lost deadline passes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.hub_count(), 0);
    assert_eq!(c.hub_count(), 1);
    let row = world.row(&session_id).await;
    assert_eq!(row.status, "Connected", "{}", row.details);
    assert_eq!(row.hub.as_deref(), Some(c.replica_id()));
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_the_agent_back() {
    use std::sync::atomic::{AtomicU64, Ordering};

    let mut world = World::postgres().await;
    let (_broker, channel) = world.replica(None).await;
    let node = world.node();
    let (session_id, token) = world.session(&node, SessionOptions::default()).await;
    let mut agent = agent(&channel, &session_id, &node).await;
    let mut client = world.client(&channel, &session_id, &token).await;
    assert!(matches!(agent.next().await, frame::Kind::PeerAttached(_)));

    // 128 MiB offered while the client reads nothing.
    const PACKETS: u64 = 4096;
    let sent = Arc::new(AtomicU64::new(0));
    let sender = agent.sender.clone();
    let counted = sent.clone();
    let producer = tokio::spawn(async move {
        let chunk = vec![b'y'; 32 << 10];
        for seq in 1..=PACKETS {
            let packet = kind(output(seq, &chunk));
            if sender.send(packet).await.is_err() {
                return;
            }
            counted.store(seq, Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_reading = sent.load(Ordering::Relaxed);
    assert!(
        before_reading < PACKETS / 4,
        "{before_reading} packets went out to a client that reads nothing"
    );
    // Once the client reads, everything arrives in order.
    for seq in 1..=PACKETS {
        match client.next().await {
            frame::Kind::Packet(Packet { seq: got, .. }) => assert_eq!(got, seq),
            other => panic!("{other:?}"),
        }
    }
    producer.await.expect("producer");
}
