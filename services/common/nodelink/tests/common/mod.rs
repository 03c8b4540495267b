//! Shared test rig: backends (SQLite + in-process queue and presence, PostgreSQL + Redis), a
//! fake node directory, a gateway replica on a loopback port, and a small test agent.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use bosun_core::ApiError;
use bosun_nodelink::channel::{AgentEdge, ChannelOptions};
use bosun_nodelink::presence::{MemoryPresence, Presence, RedisPresence};
use bosun_nodelink::store::NodeLink;
use bosun_nodelink::{Migrator, NodeCredentials, NodeDirectory, Outbound};
use bosun_proto::agent::v1::agent_channel_client::AgentChannelClient;
use bosun_proto::agent::v1::{
    Ack, AgentMessage, Close, Delivery, Heartbeat, Hello, HostFacts, Proof, ServerMessage,
    agent_message, close::Reason, server_message,
};
use bosun_queue::{MemoryQueue, Queue, QueueOptions, RedisQueue};
use bosun_store::testing::TestDatabase;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// Generous: tests assert what happens, not how fast.
pub const WAIT: Duration = Duration::from_secs(15);
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A database with a queue and presence to match.
pub struct Backend {
    pub name: &'static str,
    pub test_db: TestDatabase,
    pub queue: Arc<dyn Queue>,
    pub presence: Arc<dyn Presence>,
    /// Set for the Redis backend: new queue and presence handles on the same keys, as
    /// another process would have.
    pub redis_prefix: Option<String>,
}

impl Backend {
    /// SQLite with the in-process queue and presence (the all-in-one server).
    pub async fn memory() -> Backend {
        let test_db = bosun_store::testing::sqlite().await;
        bosun_store::migrate::<Migrator>(&test_db.db)
            .await
            .expect("migrations apply");
        Backend {
            name: "sqlite+memory",
            test_db,
            queue: Arc::new(MemoryQueue::new(QueueOptions::default())),
            presence: Arc::new(MemoryPresence::new()),
            redis_prefix: None,
        }
    }

    /// PostgreSQL with Redis queue and presence under a random prefix.
    pub async fn redis() -> Backend {
        let test_db = bosun_store::testing::postgres().await;
        bosun_store::migrate::<Migrator>(&test_db.db)
            .await
            .expect("migrations apply");
        let prefix = format!("test-nodelink-{}:", uuid::Uuid::new_v4().simple());
        let (queue, presence) = redis_handles(&prefix).await;
        Backend {
            name: "postgres+redis",
            test_db,
            queue,
            presence,
            redis_prefix: Some(prefix),
        }
    }

    pub async fn both() -> Vec<Backend> {
        vec![Backend::memory().await, Backend::redis().await]
    }

    pub fn link(&self) -> NodeLink {
        NodeLink::new(
            self.test_db.db.clone(),
            self.queue.clone(),
            self.presence.clone(),
        )
    }
}

pub async fn redis_handles(prefix: &str) -> (Arc<dyn Queue>, Arc<dyn Presence>) {
    let queue = RedisQueue::connect(REDIS_URL, prefix, QueueOptions::default())
        .await
        .expect("tests need Redis at 127.0.0.1:6379");
    let presence = RedisPresence::connect(REDIS_URL, prefix)
        .await
        .expect("tests need Redis at 127.0.0.1:6379");
    (Arc::new(queue), Arc::new(presence))
}

/// What the directory recorded.
#[derive(Default)]
pub struct DirectoryLog {
    pub connects: Vec<(String, HostFacts)>,
    pub pings: Vec<String>,
}

/// A node directory in memory.
#[derive(Default)]
pub struct FakeDirectory {
    keys: Mutex<HashMap<String, [u8; 32]>>,
    pub log: Mutex<DirectoryLog>,
}

impl FakeDirectory {
    pub fn register(&self, node_id: &str, public_key: [u8; 32]) {
        self.keys
            .lock()
            .expect("lock")
            .insert(node_id.to_owned(), public_key);
    }

    pub fn pings_of(&self, node_id: &str) -> usize {
        let log = self.log.lock().expect("lock");
        log.pings.iter().filter(|n| *n == node_id).count()
    }

    pub fn connects_of(&self, node_id: &str) -> Vec<HostFacts> {
        let log = self.log.lock().expect("lock");
        log.connects
            .iter()
            .filter(|(n, _)| n == node_id)
            .map(|(_, facts)| facts.clone())
            .collect()
    }
}

#[async_trait]
impl NodeDirectory for FakeDirectory {
    async fn credentials(&self, node_id: &str) -> Result<Option<NodeCredentials>, ApiError> {
        Ok(self
            .keys
            .lock()
            .expect("lock")
            .get(node_id)
            .map(|key| NodeCredentials { public_key: *key }))
    }

    async fn record_connect(
        &self,
        node_id: &str,
        facts: &HostFacts,
        _at: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        self.log
            .lock()
            .expect("lock")
            .connects
            .push((node_id.to_owned(), facts.clone()));
        Ok(())
    }

    async fn record_pings(
        &self,
        node_ids: &[String],
        _at: DateTime<Utc>,
    ) -> Result<Vec<String>, ApiError> {
        self.log
            .lock()
            .expect("lock")
            .pings
            .extend(node_ids.iter().cloned());
        Ok(Vec::new())
    }
}

/// Options for tests: fast flushes, short handshakes.
pub fn test_options() -> ChannelOptions {
    ChannelOptions {
        ping_flush_interval: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(5),
        ..ChannelOptions::default()
    }
}

/// One gateway replica serving on a loopback port, with its background work running.
pub struct Replica {
    pub addr: SocketAddr,
    pub edge: AgentEdge,
    pub shutdown: CancellationToken,
    server: JoinHandle<()>,
    run: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    pub async fn start(
        link: NodeLink,
        directory: Arc<FakeDirectory>,
        options: ChannelOptions,
    ) -> Replica {
        let edge = AgentEdge::new(link, directory, options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let service = edge.clone().into_server();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let edge = edge.clone();
            let shutdown = shutdown.clone();
            async move { edge.run(shutdown).await }
        });
        Replica {
            addr,
            edge,
            shutdown,
            server,
            run,
        }
    }

    /// Cancels the background work (which closes every stream) and drops the server.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.run)
            .await
            .expect("run returns after shutdown")
            .expect("run task")
            .expect("run succeeds");
        self.server.abort();
    }
}

/// A registered node with its key.
pub struct TestAgent {
    pub node_id: String,
    pub key: Ed25519KeyPair,
}

pub fn random_node_id() -> String {
    format!("mi-{}", &uuid::Uuid::new_v4().simple().to_string()[..17])
}

pub fn new_key() -> Ed25519KeyPair {
    let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate key");
    Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("parse key")
}

pub fn public_key(key: &Ed25519KeyPair) -> [u8; 32] {
    key.public_key().as_ref().try_into().expect("32-byte key")
}

pub fn signed_bytes(node_id: &str, nonce: &[u8]) -> Vec<u8> {
    [
        b"bosun-agent-connect-v1\n".as_slice(),
        node_id.as_bytes(),
        b"\n",
        nonce,
    ]
    .concat()
}

impl TestAgent {
    /// A node registered in `directory`.
    pub fn registered(directory: &FakeDirectory) -> TestAgent {
        let agent = TestAgent {
            node_id: random_node_id(),
            key: new_key(),
        };
        directory.register(&agent.node_id, public_key(&agent.key));
        agent
    }

    pub fn facts() -> HostFacts {
        HostFacts {
            platform_type: "Linux".to_owned(),
            platform_name: "Ubuntu".to_owned(),
            platform_version: "24.04".to_owned(),
            hostname: "test-host".to_owned(),
            ip_addresses: vec!["10.0.0.7".to_owned()],
            agent_version: "0.1.0".to_owned(),
            architecture: "x86_64".to_owned(),
        }
    }

    /// Opens a stream and sends Hello; returns it with the challenge nonce.
    pub async fn hello(&self, addr: SocketAddr) -> Result<(AgentConn, Vec<u8>), tonic::Status> {
        let mut conn = AgentConn::open(addr).await?;
        conn.send(agent_message::Body::Hello(Hello {
            node_id: self.node_id.clone(),
            facts: Some(Self::facts()),
        }))
        .await;
        match conn.next().await?.body {
            Some(server_message::Body::Challenge(challenge)) => Ok((conn, challenge.nonce)),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// The whole handshake; returns the stream after Welcome.
    pub async fn connect(&self, addr: SocketAddr) -> Result<AgentConn, tonic::Status> {
        let (mut conn, nonce) = self.hello(addr).await?;
        let signature = self.key.sign(&signed_bytes(&self.node_id, &nonce));
        conn.send(agent_message::Body::Proof(Proof {
            signature: signature.as_ref().to_vec(),
        }))
        .await;
        match conn.next().await?.body {
            Some(server_message::Body::Welcome(welcome)) => {
                assert_eq!(welcome.node_id, self.node_id);
                assert!(welcome.heartbeat_interval_seconds > 0);
                Ok(conn)
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

/// One agent stream.
pub struct AgentConn {
    sender: mpsc::Sender<AgentMessage>,
    receiver: Streaming<ServerMessage>,
}

impl AgentConn {
    pub async fn open(addr: SocketAddr) -> Result<AgentConn, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the test gateway");
        let mut client = AgentChannelClient::new(channel);
        let (sender, receiver) = mpsc::channel(16);
        let response = client.connect(ReceiverStream::new(receiver)).await?;
        Ok(AgentConn {
            sender,
            receiver: response.into_inner(),
        })
    }

    pub async fn send(&self, body: agent_message::Body) {
        self.sender
            .send(AgentMessage { body: Some(body) })
            .await
            .expect("stream open");
    }

    /// The next message; an error status ends the stream; the stream ending is a panic.
    pub async fn next(&mut self) -> Result<ServerMessage, tonic::Status> {
        match tokio::time::timeout(WAIT, self.receiver.message()).await {
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => panic!("the server ended the stream"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no message from the server within {WAIT:?}"),
        }
    }

    /// Whether the server ended the stream (cleanly or with a status) within `wait`.
    pub async fn ended_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.receiver.message()).await,
            Ok(Ok(None) | Err(_))
        )
    }

    pub async fn next_delivery(&mut self) -> Delivery {
        match self.next().await.expect("stream healthy").body {
            Some(server_message::Body::Delivery(delivery)) => delivery,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// Deliveries until `count` distinct message ids were seen (re-sends are allowed).
    pub async fn deliveries(&mut self, count: usize) -> BTreeMap<String, Delivery> {
        let mut seen = BTreeMap::new();
        while seen.len() < count {
            let delivery = self.next_delivery().await;
            seen.insert(delivery.message_id.clone(), delivery);
        }
        seen
    }

    pub async fn expect_close(&mut self) -> Close {
        match self.next().await.expect("stream healthy").body {
            Some(server_message::Body::Close(close)) => close,
            other => panic!("expected close, got {other:?}"),
        }
    }

    /// The next close, skipping deliveries.
    pub async fn expect_close_skipping(&mut self) -> Close {
        loop {
            match self.next().await.expect("stream healthy").body {
                Some(server_message::Body::Close(close)) => return close,
                Some(server_message::Body::Delivery(_)) => {}
                other => panic!("expected close, got {other:?}"),
            }
        }
    }

    pub async fn ack(&self, message_id: &str) {
        self.send(agent_message::Body::Ack(Ack {
            message_id: message_id.to_owned(),
        }))
        .await;
    }

    pub async fn heartbeat(&self) {
        self.send(agent_message::Body::Heartbeat(Heartbeat {}))
            .await;
    }
}

pub fn reason_of(close: &Close) -> Reason {
    Reason::try_from(close.reason).unwrap_or(Reason::Unspecified)
}

pub fn outbound(node_id: &str, topic: &str, payload: &[u8]) -> Outbound {
    Outbound {
        node_id: node_id.to_owned(),
        topic: topic.to_owned(),
        payload: payload.to_vec(),
        ..Outbound::default()
    }
}

/// Waits until `check` holds, polling; panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
