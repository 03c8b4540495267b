//! A fake control plane for the agent's tests: `AgentChannel` (handshake verified with
//! aws-lc-rs, deliveries pushed by the test, acks and results reported back) and the one
//! `NodeService` call the agent makes, `RegisterManagedInstance`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use bosun_agent::{
    Agent, AgentError, AgentOptions, BackoffConfig, EndpointConfig, Executor, Exit, Identity,
    Journal, challenge_message, collect_host_facts,
};
use bosun_proto::agent::v1::agent_channel_server::{AgentChannel, AgentChannelServer};
use bosun_proto::agent::v1::agent_message::Body as AgentBody;
use bosun_proto::agent::v1::server_message::Body as ServerBody;
use bosun_proto::agent::v1::{
    AgentMessage, Challenge, Close, Delivery, Result as AgentResult, ResultAck, ServerMessage,
    Welcome, close,
};
use bosun_proto::inventory::v1::node_service_server::{NodeService, NodeServiceServer};
use bosun_proto::inventory::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// What the fake server saw.
#[derive(Debug, Clone)]
pub enum Event {
    Hello(String),
    Proof { accepted: bool },
    Heartbeat,
    Ack(String),
    Result(AgentResult),
    StreamEnded,
}

type Outbound = mpsc::UnboundedSender<Result<ServerMessage, Status>>;

struct Shared {
    keys: Mutex<HashMap<String, Vec<u8>>>,
    current: Mutex<Option<Outbound>>,
    auto_ack: AtomicBool,
    reject_next: AtomicUsize,
    connects: AtomicUsize,
    peers: Mutex<Vec<std::net::SocketAddr>>,
    events: mpsc::UnboundedSender<Event>,
}

pub struct FakeServer {
    pub url: String,
    events: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Serves TLS with `fixtures/server.pem` (for 127.0.0.1, signed by `fixtures/ca.pem`).
    pub async fn start_tls() -> Self {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(fixtures.join("server.pem")).unwrap(),
            std::fs::read(fixtures.join("server.key")).unwrap(),
        );
        Self::start_with(Some(
            tonic::transport::ServerTlsConfig::new().identity(identity),
        ))
        .await
    }

    async fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            keys: Mutex::new(HashMap::new()),
            current: Mutex::new(None),
            auto_ack: AtomicBool::new(true),
            reject_next: AtomicUsize::new(0),
            connects: AtomicUsize::new(0),
            peers: Mutex::new(Vec::new()),
            events: events_tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let server = builder
            .add_service(AgentChannelServer::new(FakeChannel(shared.clone())))
            .add_service(NodeServiceServer::new(FakeNodes(shared.clone())))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Self {
            url,
            events,
            shared,
            stop,
        }
    }

    /// Registers a node's key as the real server would.
    pub fn know(&self, identity: &Identity) {
        self.shared
            .keys
            .lock()
            .unwrap()
            .insert(identity.node_id.clone(), identity.public_key());
    }

    pub fn set_auto_ack(&self, on: bool) {
        self.shared.auto_ack.store(on, Ordering::SeqCst);
    }

    pub fn reject_next(&self, count: usize) {
        self.shared.reject_next.store(count, Ordering::SeqCst);
    }

    /// The client addresses of the streams so far.
    pub fn peers(&self) -> Vec<std::net::SocketAddr> {
        self.shared.peers.lock().unwrap().clone()
    }

    pub fn connects(&self) -> usize {
        self.shared.connects.load(Ordering::SeqCst)
    }

    pub fn send(&self, body: ServerBody) {
        let current = self.shared.current.lock().unwrap();
        current
            .as_ref()
            .expect("a stream is open")
            .send(Ok(ServerMessage { body: Some(body) }))
            .unwrap();
    }

    pub fn deliver(&self, delivery: Delivery) {
        self.send(ServerBody::Delivery(delivery));
    }

    pub fn ack_result(&self, result_id: &str) {
        self.send(ServerBody::ResultAck(ResultAck {
            result_id: result_id.into(),
        }));
    }

    pub fn close(&self, reason: close::Reason) {
        self.send(ServerBody::Close(Close {
            reason: reason as i32,
            message: "test".into(),
        }));
    }

    /// Ends the current stream with an error, as a dying gateway would.
    pub fn break_stream(&self) {
        if let Some(current) = self.shared.current.lock().unwrap().take() {
            let _ = current.send(Err(Status::unavailable("the test broke the stream")));
        }
    }

    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("an event within 20 s")
            .expect("the server runs")
    }

    /// The next event that is not a heartbeat.
    pub async fn next(&mut self) -> Event {
        loop {
            match self.next_event().await {
                Event::Heartbeat => continue,
                event => return event,
            }
        }
    }

    /// Waits for the handshake to complete.
    pub async fn wait_connected(&mut self) {
        loop {
            match self.next().await {
                Event::Proof { accepted: true } => return,
                Event::Proof { accepted: false } => panic!("the proof was refused"),
                _ => continue,
            }
        }
    }

    pub async fn next_ack(&mut self) -> String {
        loop {
            match self.next().await {
                Event::Ack(id) => return id,
                Event::StreamEnded | Event::Hello(_) | Event::Proof { .. } => continue,
                other => panic!("expected an ack, got {other:?}"),
            }
        }
    }

    /// The next result that is not `InProgress` nor a `commands.output` chunk.
    pub async fn next_final_result(&mut self) -> AgentResult {
        loop {
            if let Event::Result(result) = self.next().await {
                if result.topic == "commands.output" {
                    continue; // output chunks of a running command
                }
                let status = serde_json::from_slice::<serde_json::Value>(&result.payload)
                    .ok()
                    .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned));
                if status.as_deref() != Some("InProgress") {
                    return result;
                }
            }
        }
    }

    /// Events seen within `wait`, no more.
    pub async fn events_for(&mut self, wait: Duration) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            seen.push(event);
        }
        seen
    }
}

struct FakeChannel(Arc<Shared>);

#[tonic::async_trait]
impl AgentChannel for FakeChannel {
    type ConnectStream = UnboundedReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let shared = self.0.clone();
        let rejecting = shared
            .reject_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if rejecting {
            let mut status = Status::resource_exhausted("too many handshakes");
            status
                .metadata_mut()
                .insert("retry-after-ms", "300".parse().unwrap());
            return Err(status);
        }
        shared.connects.fetch_add(1, Ordering::SeqCst);
        if let Some(peer) = request.remote_addr() {
            shared.peers.lock().unwrap().push(peer);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            let body = |message: Option<AgentMessage>| message.and_then(|m| m.body);
            let Some(AgentBody::Hello(hello)) = body(inbound.message().await.ok().flatten()) else {
                let _ = tx.send(Err(Status::invalid_argument("Hello first")));
                return;
            };
            let _ = shared.events.send(Event::Hello(hello.node_id.clone()));
            let mut nonce = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut nonce).unwrap();
            let _ = tx.send(Ok(ServerMessage {
                body: Some(ServerBody::Challenge(Challenge {
                    nonce: nonce.clone(),
                })),
            }));
            let Some(AgentBody::Proof(proof)) = body(inbound.message().await.ok().flatten()) else {
                let _ = tx.send(Err(Status::invalid_argument("Proof second")));
                return;
            };
            let key = shared.keys.lock().unwrap().get(&hello.node_id).cloned();
            let accepted = key.is_some_and(|key| {
                UnparsedPublicKey::new(&ED25519, key)
                    .verify(&challenge_message(&hello.node_id, &nonce), &proof.signature)
                    .is_ok()
            });
            let _ = shared.events.send(Event::Proof { accepted });
            if !accepted {
                let _ = tx.send(Err(Status::unauthenticated("bad proof")));
                return;
            }
            let _ = tx.send(Ok(ServerMessage {
                body: Some(ServerBody::Welcome(Welcome {
                    node_id: hello.node_id.clone(),
                    heartbeat_interval_seconds: 1,
                    server_time: None,
                })),
            }));
            *shared.current.lock().unwrap() = Some(tx.clone());
            while let Ok(Some(message)) = inbound.message().await {
                match message.body {
                    Some(AgentBody::Heartbeat(_)) => {
                        let _ = shared.events.send(Event::Heartbeat);
                    }
                    Some(AgentBody::Ack(ack)) => {
                        let _ = shared.events.send(Event::Ack(ack.message_id));
                    }
                    Some(AgentBody::Result(result)) => {
                        if shared.auto_ack.load(Ordering::SeqCst) {
                            let _ = tx.send(Ok(ServerMessage {
                                body: Some(ServerBody::ResultAck(ResultAck {
                                    result_id: result.result_id.clone(),
                                })),
                            }));
                        }
                        let _ = shared.events.send(Event::Result(result));
                    }
                    _ => {
                        let _ = tx.send(Err(Status::invalid_argument("out of order")));
                        break;
                    }
                }
            }
            let _ = shared.events.send(Event::StreamEnded);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct FakeNodes(Arc<Shared>);

#[tonic::async_trait]
impl NodeService for FakeNodes {
    async fn register_managed_instance(
        &self,
        request: Request<RegisterManagedInstanceRequest>,
    ) -> Result<Response<RegisterManagedInstanceResponse>, Status> {
        let request = request.into_inner();
        if request.activation_id != "act-1" || request.activation_code != "code-1" {
            return Err(Status::not_found("InvalidActivation"));
        }
        let facts = request.facts.unwrap_or_default();
        if facts.platform_type != "Linux" || facts.agent_version.is_empty() {
            return Err(Status::invalid_argument("facts missing"));
        }
        if request.public_key.len() != 32 {
            return Err(Status::invalid_argument("public key is not 32 bytes"));
        }
        let mut keys = self.0.keys.lock().unwrap();
        let node_id = format!("mi-{:017x}", keys.len() + 1);
        keys.insert(node_id.clone(), request.public_key);
        Ok(Response::new(RegisterManagedInstanceResponse {
            instance_id: node_id,
        }))
    }

    async fn create_activation(
        &self,
        _: Request<CreateActivationRequest>,
    ) -> Result<Response<CreateActivationResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn describe_activations(
        &self,
        _: Request<DescribeActivationsRequest>,
    ) -> Result<Response<DescribeActivationsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_activation(
        &self,
        _: Request<DeleteActivationRequest>,
    ) -> Result<Response<DeleteActivationResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn describe_instance_information(
        &self,
        _: Request<DescribeInstanceInformationRequest>,
    ) -> Result<Response<DescribeInstanceInformationResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn deregister_managed_instance(
        &self,
        _: Request<DeregisterManagedInstanceRequest>,
    ) -> Result<Response<DeregisterManagedInstanceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn add_tags_to_resource(
        &self,
        _: Request<AddTagsToResourceRequest>,
    ) -> Result<Response<AddTagsToResourceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_tags_from_resource(
        &self,
        _: Request<RemoveTagsFromResourceRequest>,
    ) -> Result<Response<RemoveTagsFromResourceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_tags_for_resource(
        &self,
        _: Request<ListTagsForResourceRequest>,
    ) -> Result<Response<ListTagsForResourceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn resolve_targets(
        &self,
        _: Request<ResolveTargetsRequest>,
    ) -> Result<Response<ResolveTargetsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A node identity the server knows.
pub fn known_identity(server: &FakeServer, number: u32) -> Identity {
    let identity = Identity::new(
        format!("mi-{number:017x}"),
        server.url.clone(),
        bosun_agent::generate_key().unwrap(),
    )
    .unwrap();
    server.know(&identity);
    identity
}

/// Options fit for tests: fast back-off, short grace.
pub fn test_options() -> AgentOptions {
    let mut options = AgentOptions::new(collect_host_facts());
    options.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        reset_after: Duration::from_secs(60),
    };
    options.shutdown_grace = Duration::from_secs(5);
    options.flush_timeout = Duration::from_secs(2);
    options
}

pub struct RunningAgent {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<Exit, AgentError>>,
}

impl RunningAgent {
    pub async fn stop(self) -> Exit {
        self.shutdown.cancel();
        self.join().await
    }

    pub async fn join(self) -> Exit {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the agent stops in time")
            .unwrap()
            .unwrap()
    }
}

pub fn start_agent(
    server: &FakeServer,
    identity: Identity,
    journal: Arc<dyn Journal>,
    executor: Arc<dyn Executor>,
) -> RunningAgent {
    let shutdown = CancellationToken::new();
    let agent = Agent::new(
        identity,
        EndpointConfig::new(server.url.clone()),
        journal,
        executor,
        test_options(),
    );
    let task = tokio::spawn(agent.run(shutdown.clone()));
    RunningAgent { shutdown, task }
}

pub fn delivery(id: &str, topic: &str, payload: serde_json::Value) -> Delivery {
    Delivery {
        message_id: id.into(),
        topic: topic.into(),
        payload: serde_json::to_vec(&payload).unwrap(),
        ..Default::default()
    }
}

pub fn json(result: &AgentResult) -> serde_json::Value {
    serde_json::from_slice(&result.payload).unwrap()
}
