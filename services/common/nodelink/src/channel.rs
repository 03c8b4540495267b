//! The gateway side of `bosun.agent.v1.AgentChannel`: the connect handshake, one task per
//! node stream, and [`AgentEdge::run`], the background work of a replica (its inbox, batched
//! pings with presence refresh, periodic re-send, shutdown).
//!
//! Per stream: one spawned task, two small bounded channels (commands in, messages out) and
//! one timer, the idle deadline. The shared maps are behind `std` mutexes that are never held
//! across an `.await`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use bosun_core::ApiError;
use bosun_proto::agent::v1::agent_channel_server::{AgentChannel, AgentChannelServer};
use bosun_proto::agent::v1::close::Reason;
use bosun_proto::agent::v1::{
    AgentMessage, Challenge, Close, Delivery, HostFacts, ResultAck, ServerMessage, Welcome,
    agent_message, server_message,
};
use chrono::Utc;
use futures::StreamExt as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::store::{
    KIND_CONTROL, KIND_DELIVERY, NODE_HEADER, PENDING_BATCH, REASON_HEADER, from_timestamp,
    inbox_stream, is_valid_node_id, is_valid_topic, trace_context_problem,
};
use crate::{NodeDirectory, NodeLink, NodeResult, results_stream, topic_area};

/// The consumer group every replica reads its own inbox with.
pub const INBOX_GROUP: &str = "gateway";
/// What the agent signs, before `node_id || "\n" || nonce`.
pub const PROOF_CONTEXT: &[u8] = b"bosun-agent-connect-v1\n";
/// Metadata key of the retry hint on a shed stream.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// Messages waiting to be written to one agent; the sender waits when it is full.
const OUTBOUND_CAPACITY: usize = 8;
/// Commands (deliveries, close) waiting for one stream's task. A push beyond it is dropped
/// and the stream catches up from the store once it has time (see [`StreamHandle::catch_up`]).
const COMMAND_CAPACITY: usize = 8;
/// Most messages sent from the store on connect; the rest follow with the re-send.
const MAX_CONNECT_PAGES: usize = 10;
/// Inbox messages read at once, and how long one read waits.
const INBOX_BATCH: usize = 100;
const INBOX_BLOCK: Duration = Duration::from_secs(5);
/// Pause after a failed inbox read.
const INBOX_RETRY: Duration = Duration::from_secs(1);
/// Held nodes per re-send query, and the most messages re-sent per query.
const RESEND_CHUNK: usize = 500;
/// How long shutdown waits for streams to close after telling them to.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Room beyond the largest payload for the other fields of a message.
const ENVELOPE_BYTES: usize = 64 * 1024;
const MAX_RESULT_ID_LEN: usize = 128;
const MAX_MESSAGE_ID_LEN: usize = 64;

/// How a gateway replica serves agent streams.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// This replica's id: presence values and the inbox stream name `node-inbox.<id>`.
    pub replica_id: String,
    /// Told to agents in `Welcome`; a stream silent for three intervals is ended.
    pub heartbeat_interval: Duration,
    /// Most handshakes in flight; more are shed with RESOURCE_EXHAUSTED.
    pub max_handshakes: usize,
    /// A handshake not done by then ends with UNAUTHENTICATED.
    pub handshake_timeout: Duration,
    /// The retry hint given to shed streams.
    pub retry_hint: Duration,
    /// Unacknowledged messages are sent again this long after their last send.
    pub resend_after: Duration,
    /// How often heartbeats are written (batched) and presence is refreshed.
    pub ping_flush_interval: Duration,
    /// Largest payload of a message from an agent.
    pub max_message_bytes: usize,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            replica_id: format!("gw-{}", uuid::Uuid::new_v4().simple()),
            heartbeat_interval: Duration::from_secs(30),
            max_handshakes: 512,
            handshake_timeout: Duration::from_secs(10),
            retry_hint: Duration::from_secs(2),
            resend_after: Duration::from_secs(30),
            ping_flush_interval: Duration::from_secs(5),
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

impl ChannelOptions {
    /// How long a presence claim lives without refresh: three flushes.
    pub fn presence_ttl(&self) -> Duration {
        (self.ping_flush_interval * 3).max(Duration::from_secs(1))
    }

    fn idle_timeout(&self) -> Duration {
        self.heartbeat_interval * 3
    }
}

/// What other parts of the replica ask of one stream's task.
enum Command {
    Deliver(Box<Delivery>),
    Close(Reason, &'static str),
}

/// Acks and sends waiting to be written to `node_messages`.
#[derive(Default)]
struct StoreWrites {
    acked: Vec<(String, String)>,
    sent: Vec<String>,
}

/// How long the store writer lets acks and sends gather before writing them.
const WRITE_COALESCE: Duration = Duration::from_millis(20);
/// Acks waiting for the store beyond this are dropped (their messages are re-sent).
const MAX_PENDING_WRITES: usize = 200_000;

/// One item for the agent: boxed, so the per-stream channel blocks stay small.
type Outgoing = Result<Box<ServerMessage>, Box<Status>>;

struct StreamHandle {
    stream_id: u64,
    commands: mpsc::Sender<Command>,
    /// Signalled when a delivery for this stream did not fit in `commands`: the stream then
    /// sends the node's never-sent messages from the store. Without it a push dropped while
    /// the stream is busy (an agent answering a burst of work: results to queue, acks,
    /// deliveries to write) waited for the periodic re-send, `resend_after` (30 s) or
    /// more — a session's `sessions.start` then missed its 60 s attach deadline under load.
    catch_up: Arc<Notify>,
}

/// What a registered stream's task receives: commands, and the catch-up signal.
struct StreamInbox {
    commands: mpsc::Receiver<Command>,
    catch_up: Arc<Notify>,
}

struct Edge {
    link: NodeLink,
    directory: Arc<dyn NodeDirectory>,
    options: ChannelOptions,
    handshakes: Arc<Semaphore>,
    streams: Mutex<HashMap<String, StreamHandle>>,
    pings: Mutex<HashSet<String>>,
    /// Acks and sends to record in `node_messages`, written in batches by `write_loop`.
    writes: Mutex<StoreWrites>,
    writes_ready: Notify,
    next_stream_id: AtomicU64,
    closing: AtomicBool,
    random: SystemRandom,
}

/// The AgentChannel server of one gateway replica. Cheap to clone.
#[derive(Clone)]
pub struct AgentEdge {
    edge: Arc<Edge>,
}

impl std::fmt::Debug for AgentEdge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AgentEdge")
            .field("replica_id", &self.edge.options.replica_id)
            .finish_non_exhaustive()
    }
}

impl AgentEdge {
    /// A replica serving agent streams with `link` (store, queue, presence) and `directory`
    /// (node keys, facts, pings).
    pub fn new(link: NodeLink, directory: Arc<dyn NodeDirectory>, options: ChannelOptions) -> Self {
        let handshakes = Arc::new(Semaphore::new(options.max_handshakes));
        Self {
            edge: Arc::new(Edge {
                link,
                directory,
                options,
                handshakes,
                streams: Mutex::new(HashMap::new()),
                pings: Mutex::new(HashSet::new()),
                writes: Mutex::new(StoreWrites::default()),
                writes_ready: Notify::new(),
                next_stream_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                random: SystemRandom::new(),
            }),
        }
    }

    /// The tonic service, accepting messages up to the configured size.
    pub fn into_server(self) -> AgentChannelServer<AgentEdge> {
        let limit = self.edge.options.max_message_bytes + ENVELOPE_BYTES;
        AgentChannelServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(crate::store::MAX_PAYLOAD_BYTES + ENVELOPE_BYTES)
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.edge.options.replica_id
    }

    /// How many node streams this replica holds now.
    pub fn stream_count(&self) -> usize {
        self.edge.streams().len()
    }

    /// The replica's background work until `shutdown`: its inbox, ping flush with presence
    /// refresh, and re-send of unacknowledged messages. On shutdown every stream gets
    /// `Close{SHUTDOWN}` and this replica's presence claims are removed. Fails only when the
    /// inbox cannot be set up at start.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let edge = &self.edge;
        let inbox = inbox_stream(&edge.options.replica_id);
        edge.link
            .queue()
            .ensure_group(&inbox, INBOX_GROUP)
            .await
            .map_err(|error| anyhow::anyhow!("create the inbox group on {inbox}: {error}"))?;
        tokio::join!(
            edge.inbox_loop(&inbox, &shutdown),
            edge.flush_loop(&shutdown),
            edge.resend_loop(&shutdown),
            edge.write_loop(&shutdown),
        );
        edge.shut_down().await;
        Ok(())
    }
}

/// The stream tonic writes to the agent.
pub struct AgentStream {
    receiver: mpsc::Receiver<Outgoing>,
}

impl futures::Stream for AgentStream {
    type Item = Result<ServerMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver
            .poll_recv(context)
            .map(|item| item.map(|item| item.map(|message| *message).map_err(|status| *status)))
    }
}

#[tonic::async_trait]
impl AgentChannel for AgentEdge {
    type ConnectStream = AgentStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if self.edge.closing.load(Ordering::Acquire) {
            return Err(ApiError::Unavailable("gateway is shutting down".to_owned()).into());
        }
        // Shed before any work: a reconnect storm must not reach the database.
        let Ok(permit) = self.edge.handshakes.clone().try_acquire_owned() else {
            return Err(shed_status(self.edge.options.retry_hint));
        };
        let inbound = request.into_inner();
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        let edge = self.edge.clone();
        tokio::spawn(async move { edge.serve_stream(inbound, outbound, permit).await });
        Ok(Response::new(AgentStream { receiver }))
    }
}

/// RESOURCE_EXHAUSTED with the retry hint twice: as metadata for simple clients and as
/// `google.rpc.RetryInfo`. Built here rather than from an `ApiError` because `ApiError` has
/// no retry hint.
fn shed_status(retry_hint: Duration) -> Status {
    let mut status = Status::with_error_details(
        tonic::Code::ResourceExhausted,
        "too many agent handshakes in flight, retry later",
        ErrorDetails::with_retry_info(Some(retry_hint)),
    );
    let millis = u64::try_from(retry_hint.as_millis()).unwrap_or(u64::MAX);
    status.metadata_mut().insert(
        RETRY_AFTER_METADATA,
        tonic::metadata::MetadataValue::from(millis),
    );
    status
}

fn message(body: server_message::Body) -> Outgoing {
    Ok(Box::new(ServerMessage { body: Some(body) }))
}

fn close_message(reason: Reason, text: &str) -> Outgoing {
    message(server_message::Body::Close(Close {
        reason: reason as i32,
        message: text.to_owned(),
    }))
}

/// Hands a command to a stream's task without waiting. A close must arrive, so a full
/// channel gets it from a small task (deliveries go through `Edge::hand_delivery`).
fn send_command(commands: &mpsc::Sender<Command>, command: Command) -> bool {
    match commands.try_send(command) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(Command::Close(reason, text))) => {
            let commands = commands.clone();
            tokio::spawn(async move {
                let _closed = commands.send(Command::Close(reason, text)).await;
            });
            true
        }
        Err(_) => false,
    }
}

/// What to do after an agent's message.
enum Next {
    Continue,
    Close(Reason, String),
    End,
}

fn protocol_error(text: impl Into<String>) -> Next {
    Next::Close(Reason::ProtocolError, text.into())
}

impl Edge {
    fn streams(&self) -> MutexGuard<'_, HashMap<String, StreamHandle>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pings(&self) -> MutexGuard<'_, HashSet<String>> {
        self.pings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a pushed or re-sent delivery to the node's stream here, without waiting (one
    /// busy stream must not hold up the inbox of every node). When it does not fit, the
    /// stream is told to catch up from the store. False when the node has no stream here.
    fn hand_delivery(&self, node_id: &str, delivery: Delivery) -> bool {
        let Some((commands, catch_up)) = self
            .streams()
            .get(node_id)
            .map(|handle| (handle.commands.clone(), handle.catch_up.clone()))
        else {
            return false;
        };
        match commands.try_send(Command::Deliver(Box::new(delivery))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(%node_id, "stream busy: it catches up from the store");
                catch_up.notify_one();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn command_sender(&self, node_id: &str) -> Option<mpsc::Sender<Command>> {
        self.streams()
            .get(node_id)
            .map(|handle| handle.commands.clone())
    }

    fn held_nodes(&self) -> Vec<String> {
        self.streams().keys().cloned().collect()
    }

    /// One stream, from handshake to end.
    async fn serve_stream(
        self: Arc<Self>,
        mut inbound: Streaming<AgentMessage>,
        outbound: mpsc::Sender<Outgoing>,
        permit: OwnedSemaphorePermit,
    ) {
        let handshake = tokio::time::timeout(
            self.options.handshake_timeout,
            // Boxed, like the other rare paths below: the state of a database call must not
            // size every idle stream's task.
            Box::pin(self.handshake(&mut inbound, &outbound)),
        )
        .await;
        drop(permit);
        let (node_id, stream_id, stream_inbox) = match handshake {
            Ok(Ok(registered)) => registered,
            Ok(Err(status)) => {
                self.write(&outbound, Err(Box::new(status))).await;
                return;
            }
            Err(_elapsed) => {
                let status = ApiError::Unauthenticated(format!(
                    "agent handshake not completed within {:?}",
                    self.options.handshake_timeout
                ));
                self.write(&outbound, Err(Box::new(status.into()))).await;
                return;
            }
        };
        tracing::info!(%node_id, replica_id = %self.options.replica_id, "node connected");
        self.steady(&node_id, inbound, &outbound, stream_inbox)
            .await;
        // Only the node's current stream here gives up the claim: a replaced one must not.
        if self.unregister(&node_id, stream_id)
            && let Err(error) = self
                .link
                .presence()
                .remove_if(&node_id, &self.options.replica_id)
                .await
        {
            tracing::warn!(%node_id, %error, "removing presence of a closed stream failed");
        }
        tracing::info!(%node_id, "node stream ended");
    }

    /// Hello → Challenge → Proof, then the connect is recorded, presence claimed and the
    /// stream registered here. Returns the node, the stream's id and its command receiver.
    async fn handshake(
        &self,
        inbound: &mut Streaming<AgentMessage>,
        outbound: &mpsc::Sender<Outgoing>,
    ) -> Result<(String, u64, StreamInbox), Status> {
        let hello = match inbound.message().await?.and_then(|message| message.body) {
            Some(agent_message::Body::Hello(hello)) => hello,
            _ => {
                return Err(ApiError::Unauthenticated(
                    "agent stream must start with hello".to_owned(),
                )
                .into());
            }
        };
        let node_id = hello.node_id;
        if !is_valid_node_id(&node_id) {
            return Err(ApiError::invalid(
                "hello.node_id",
                "must be mi- followed by 17 lowercase hexadecimal digits",
            )
            .into());
        }
        let credentials =
            self.directory.credentials(&node_id).await?.ok_or_else(|| {
                ApiError::Unauthenticated("unknown or deregistered node".to_owned())
            })?;

        let mut nonce = [0_u8; 32];
        self.random
            .fill(&mut nonce)
            .map_err(|_| ApiError::internal("generate a connect challenge"))?;
        if outbound
            .send(message(server_message::Body::Challenge(Challenge {
                nonce: nonce.to_vec(),
            })))
            .await
            .is_err()
        {
            return Err(ApiError::Unavailable("agent went away".to_owned()).into());
        }
        let proof = match inbound.message().await?.and_then(|message| message.body) {
            Some(agent_message::Body::Proof(proof)) => proof,
            _ => {
                return Err(ApiError::Unauthenticated(
                    "agent must answer the challenge with a proof".to_owned(),
                )
                .into());
            }
        };
        let signed = [PROOF_CONTEXT, node_id.as_bytes(), b"\n", &nonce].concat();
        if UnparsedPublicKey::new(&ED25519, &credentials.public_key)
            .verify(&signed, &proof.signature)
            .is_err()
        {
            tracing::info!(%node_id, "node proof does not verify");
            return Err(ApiError::Unauthenticated(format!(
                "node {node_id}: proof does not verify"
            ))
            .into());
        }

        let facts = hello.facts.unwrap_or_else(HostFacts::default);
        self.directory
            .record_connect(&node_id, &facts, Utc::now())
            .await?;
        // Presence before the pending query: a message stored meanwhile is either pushed to
        // us or read from the store (see `send`).
        if let Err(error) = self
            .link
            .presence()
            .set(
                &node_id,
                &self.options.replica_id,
                self.options.presence_ttl(),
            )
            .await
        {
            // Degraded, not broken: pushes will not find us, the re-send still will.
            tracing::warn!(%node_id, %error, "claiming presence failed");
        }
        let (stream_id, stream_inbox) = self.register(&node_id);
        Ok((node_id, stream_id, stream_inbox))
    }

    /// Makes this stream the node's stream here; an older one is closed as replaced.
    fn register(&self, node_id: &str) -> (u64, StreamInbox) {
        let (sender, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let catch_up = Arc::new(Notify::new());
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let older = self.streams().insert(
            node_id.to_owned(),
            StreamHandle {
                stream_id,
                commands: sender,
                catch_up: catch_up.clone(),
            },
        );
        if let Some(older) = older {
            send_command(
                &older.commands,
                Command::Close(Reason::Replaced, "a newer stream of this node connected"),
            );
        }
        (
            stream_id,
            StreamInbox {
                commands: receiver,
                catch_up,
            },
        )
    }

    /// Forgets the stream if it is still the node's stream here; returns whether it was.
    fn unregister(&self, node_id: &str, stream_id: u64) -> bool {
        let mut streams = self.streams();
        if streams
            .get(node_id)
            .is_some_and(|handle| handle.stream_id == stream_id)
        {
            streams.remove(node_id);
            return true;
        }
        false
    }

    /// Welcome, what is pending, then messages both ways until the stream ends.
    async fn steady(
        &self,
        node_id: &str,
        mut inbound: Streaming<AgentMessage>,
        outbound: &mpsc::Sender<Outgoing>,
        stream_inbox: StreamInbox,
    ) {
        let StreamInbox {
            mut commands,
            catch_up,
        } = stream_inbox;
        if self.closing.load(Ordering::Acquire) {
            self.write(
                outbound,
                close_message(Reason::Shutdown, "gateway is shutting down"),
            )
            .await;
            return;
        }
        let welcome = Welcome {
            node_id: node_id.to_owned(),
            heartbeat_interval_seconds: u32::try_from(self.options.heartbeat_interval.as_secs())
                .unwrap_or(u32::MAX)
                .max(1),
            server_time: Some(crate::store::timestamp(Utc::now())),
        };
        if !self
            .write(outbound, message(server_message::Body::Welcome(welcome)))
            .await
            || !Box::pin(self.send_pending(node_id, outbound)).await
        {
            return;
        }

        let idle = self.options.idle_timeout();
        let deadline = tokio::time::sleep(idle);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                received = inbound.message() => match received {
                    Ok(Some(received)) => {
                        deadline.as_mut().reset(Instant::now() + idle);
                        Box::pin(self.on_agent_message(node_id, received, outbound)).await
                    }
                    Ok(None) => Next::End,
                    Err(status) if status.code() == tonic::Code::OutOfRange
                        || status.code() == tonic::Code::ResourceExhausted =>
                    {
                        protocol_error("message too large")
                    }
                    Err(status) => {
                        tracing::debug!(%node_id, %status, "agent stream broke");
                        Next::End
                    }
                },
                command = commands.recv() => match command {
                    Some(Command::Deliver(delivery)) => {
                        if Box::pin(self.deliver(node_id, *delivery, outbound)).await {
                            Next::Continue
                        } else {
                            Next::End
                        }
                    }
                    Some(Command::Close(reason, text)) => Next::Close(reason, text.to_owned()),
                    None => Next::End,
                },
                () = catch_up.notified() => {
                    if Box::pin(self.send_unsent(node_id, outbound)).await {
                        Next::Continue
                    } else {
                        Next::End
                    }
                }
                () = &mut deadline => {
                    tracing::info!(%node_id, "no message from the agent for three heartbeats");
                    Next::End
                }
            };
            match next {
                Next::Continue => {}
                Next::End => return,
                Next::Close(reason, text) => {
                    tracing::info!(%node_id, reason = reason.as_str_name(), "closing node stream");
                    self.write(outbound, close_message(reason, &text)).await;
                    return;
                }
            }
        }
    }

    /// Queues a message for the agent; false when the agent went away or has not read for
    /// the idle timeout (a dead peer must not pin the stream forever). The timer exists only
    /// while the channel is full.
    async fn write(&self, outbound: &mpsc::Sender<Outgoing>, item: Outgoing) -> bool {
        matches!(
            tokio::time::timeout(self.options.idle_timeout(), outbound.send(item)).await,
            Ok(Ok(()))
        )
    }

    /// Sends what the store holds for the node; false when the agent went away.
    async fn send_pending(&self, node_id: &str, outbound: &mpsc::Sender<Outgoing>) -> bool {
        let mut after = None;
        for _ in 0..MAX_CONNECT_PAGES {
            let page = match self.link.pending_page(node_id, after, PENDING_BATCH).await {
                Ok(page) => page,
                Err(error) => {
                    // The re-send will try again.
                    tracing::warn!(%node_id, %error, "reading pending messages failed");
                    return true;
                }
            };
            let Some(last) = page.last() else {
                return true;
            };
            after = Some((last.created_at, last.id.clone()));
            let full = page.len() as u64 == PENDING_BATCH;
            let mut sent = Vec::with_capacity(page.len());
            for pending in &page {
                let delivery = message(server_message::Body::Delivery(pending.to_delivery()));
                if !self.write(outbound, delivery).await {
                    self.record_sent(&sent).await;
                    return false;
                }
                sent.push(pending.id.clone());
            }
            self.record_sent(&sent).await;
            if !full {
                return true;
            }
        }
        true
    }

    /// Sends the node's messages the store has no send of (pushes this stream dropped while
    /// busy, see [`StreamHandle::catch_up`]), oldest first, at most [`MAX_CONNECT_PAGES`]
    /// pages (the rest come with the re-send). A message also still queued in the stream's
    /// commands (or sent a moment ago and not recorded yet) reaches the agent twice: it
    /// acknowledges it again and never runs it twice. False when the agent went away.
    async fn send_unsent(&self, node_id: &str, outbound: &mpsc::Sender<Outgoing>) -> bool {
        let mut after = None;
        for _ in 0..MAX_CONNECT_PAGES {
            let page = match self
                .link
                .unsent_pending(node_id, after, PENDING_BATCH)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    // The re-send still gets them there.
                    tracing::warn!(%node_id, %error, "reading unsent messages failed");
                    return true;
                }
            };
            let Some(last) = page.last() else {
                return true;
            };
            after = Some((last.created_at, last.id.clone()));
            let full = page.len() as u64 == PENDING_BATCH;
            let mut sent = Vec::with_capacity(page.len());
            for pending in &page {
                let delivery = message(server_message::Body::Delivery(pending.to_delivery()));
                if !self.write(outbound, delivery).await {
                    self.record_sent(&sent).await;
                    return false;
                }
                sent.push(pending.id.clone());
            }
            self.record_sent(&sent).await;
            if !full {
                return true;
            }
        }
        true
    }

    /// Queues the record that `ids` were written to their streams (see `write_loop`).
    async fn record_sent(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        {
            let mut writes = self.writes();
            // Only bookkeeping (when it was last sent): dropped if the store is not keeping up.
            let room = MAX_PENDING_WRITES.saturating_sub(writes.sent.len());
            writes.sent.extend(ids.iter().take(room).cloned());
        }
        self.writes_ready.notify_one();
    }

    fn writes(&self) -> MutexGuard<'_, StoreWrites> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes acks and sends to `node_messages` in batches: one statement per 500 instead of
    /// one transaction per message, which is what a fleet answering a command at once needs.
    /// A write lost to a crash or a store outage only means the message is sent again, and
    /// the agent, which never runs an id twice, acknowledges it again.
    async fn write_loop(&self, shutdown: &CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                () = self.writes_ready.notified() => false,
            };
            if !stopping {
                // Let a burst gather.
                tokio::time::sleep(WRITE_COALESCE).await;
            }
            let StoreWrites { acked, sent } = std::mem::take(&mut *self.writes());
            // Sends before acks: once an ack shows in the store, the sends before it do too.
            for chunk in sent.chunks(crate::store::STAGE_CHUNK) {
                if let Err(error) = self.link.mark_sent(chunk).await {
                    tracing::warn!(%error, "recording sent messages failed");
                }
            }
            if !acked.is_empty()
                && let Err(error) = self.link.mark_acked_many(&acked).await
            {
                tracing::warn!(%error, acks = acked.len(), "recording acks failed; the messages will be sent again");
            }
            if stopping {
                return;
            }
        }
    }

    /// Writes one pushed or re-sent delivery unless it expired; false when the agent went away.
    async fn deliver(
        &self,
        node_id: &str,
        delivery: Delivery,
        outbound: &mpsc::Sender<Outgoing>,
    ) -> bool {
        let expired = delivery
            .expires_at
            .as_ref()
            .and_then(from_timestamp)
            .is_some_and(|expires_at| expires_at <= Utc::now());
        if expired {
            tracing::debug!(%node_id, message_id = %delivery.message_id, "dropping an expired delivery");
            return true;
        }
        let id = delivery.message_id.clone();
        if !self
            .write(outbound, message(server_message::Body::Delivery(delivery)))
            .await
        {
            return false;
        }
        self.record_sent(&[id]).await;
        true
    }

    async fn on_agent_message(
        &self,
        node_id: &str,
        received: AgentMessage,
        outbound: &mpsc::Sender<Outgoing>,
    ) -> Next {
        match received.body {
            Some(agent_message::Body::Heartbeat(_)) => {
                self.pings().insert(node_id.to_owned());
                Next::Continue
            }
            Some(agent_message::Body::Ack(ack)) => {
                if ack.message_id.is_empty() || ack.message_id.len() > MAX_MESSAGE_ID_LEN {
                    return protocol_error("ack.message_id must be 1-64 characters");
                }
                {
                    let mut writes = self.writes();
                    if writes.acked.len() < MAX_PENDING_WRITES {
                        writes.acked.push((node_id.to_owned(), ack.message_id));
                    } else {
                        // The store is not keeping up: this message comes again and is acked
                        // again.
                        tracing::warn!(%node_id, "too many acks waiting to be recorded; dropping one");
                    }
                }
                self.writes_ready.notify_one();
                Next::Continue
            }
            Some(agent_message::Body::Result(result)) => {
                self.on_result(node_id, result, outbound).await
            }
            Some(agent_message::Body::Hello(_) | agent_message::Body::Proof(_)) => {
                protocol_error("hello and proof belong to the handshake")
            }
            None => protocol_error("empty agent message"),
        }
    }

    async fn on_result(
        &self,
        node_id: &str,
        result: bosun_proto::agent::v1::Result,
        outbound: &mpsc::Sender<Outgoing>,
    ) -> Next {
        if result.result_id.is_empty() || result.result_id.len() > MAX_RESULT_ID_LEN {
            return protocol_error("result.result_id must be 1-128 characters");
        }
        if result.message_id.len() > MAX_MESSAGE_ID_LEN {
            return protocol_error("result.message_id must be at most 64 characters");
        }
        if !is_valid_topic(&result.topic) {
            return protocol_error("result.topic must be <area>.<kind>");
        }
        if result.payload.len() > self.options.max_message_bytes {
            return protocol_error("result.payload too large");
        }
        if let Some(problem) = trace_context_problem(result.trace_context.iter()) {
            return protocol_error(format!("result.trace_context {problem}"));
        }
        let created_at = result
            .created_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now);
        let result_id = result.result_id.clone();
        let node_result = NodeResult {
            node_id: node_id.to_owned(),
            result_id: result.result_id,
            message_id: result.message_id,
            topic: result.topic,
            payload: result.payload,
            created_at,
            trace_context: result.trace_context.into_iter().collect(),
        };
        let stream = results_stream(topic_area(&node_result.topic));
        let (payload, headers) = node_result.to_queue();
        if let Err(error) = self.link.queue().publish(&stream, &payload, &headers).await {
            // Unacknowledged, the agent keeps the result and sends it again on reconnect.
            tracing::warn!(%node_id, %result_id, %error, "queueing a node result failed");
            return Next::Continue;
        }
        let ack = message(server_message::Body::ResultAck(ResultAck { result_id }));
        if !self.write(outbound, ack).await {
            return Next::End;
        }
        Next::Continue
    }

    /// Reads this replica's inbox until shutdown.
    async fn inbox_loop(&self, inbox: &str, shutdown: &CancellationToken) {
        let queue = self.link.queue();
        let consumer = &self.options.replica_id;
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return,
                batch = queue.consume(inbox, INBOX_GROUP, consumer, INBOX_BATCH, INBOX_BLOCK) => batch,
            };
            match batch {
                Ok(batch) => {
                    if batch.is_empty() {
                        continue;
                    }
                    let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
                    for delivery in &batch {
                        self.on_inbox_message(delivery);
                    }
                    if let Err(error) = queue.ack(inbox, INBOX_GROUP, &ids).await {
                        tracing::warn!(%error, "acking inbox messages failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %inbox, "reading the inbox failed");
                    if let Err(error) = queue.ensure_group(inbox, INBOX_GROUP).await {
                        tracing::debug!(%error, "re-creating the inbox group failed");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(INBOX_RETRY) => {}
                    }
                }
            }
        }
    }

    fn on_inbox_message(&self, delivery: &bosun_queue::Delivery) {
        let Some(node_id) = delivery.headers.get(NODE_HEADER) else {
            tracing::warn!(queue_id = %delivery.id, "inbox message without a node");
            return;
        };
        let Some(commands) = self.command_sender(node_id) else {
            // Not held here (any more): delivered from the store on the next connect.
            tracing::debug!(%node_id, "inbox message for a node not connected here");
            return;
        };
        match delivery
            .headers
            .get(crate::store::KIND_HEADER)
            .map(String::as_str)
        {
            Some(KIND_DELIVERY) => {
                match <Delivery as prost::Message>::decode(delivery.payload.as_ref()) {
                    Ok(decoded) => {
                        if !self.hand_delivery(node_id, decoded) {
                            tracing::debug!(%node_id, "stream gone, leaving the delivery to the store");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%node_id, queue_id = %delivery.id, %error, "undecodable inbox delivery");
                    }
                }
            }
            Some(KIND_CONTROL) => {
                let reason = delivery
                    .headers
                    .get(REASON_HEADER)
                    .and_then(|name| Reason::from_str_name(name))
                    .unwrap_or(Reason::Unspecified);
                send_command(&commands, Command::Close(reason, close_text(reason)));
            }
            other => {
                tracing::warn!(%node_id, kind = ?other, "inbox message of unknown kind");
            }
        }
    }

    /// Every flush interval: heartbeats to the directory in one batch, presence refreshed for
    /// every node held here, and streams whose node another replica claimed are closed.
    async fn flush_loop(&self, shutdown: &CancellationToken) {
        let mut ticks = tokio::time::interval(self.options.ping_flush_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.flush_pings().await;
                    return;
                }
                _ = ticks.tick() => {}
            }
            self.flush_pings().await;
            self.refresh_presence().await;
        }
    }

    async fn flush_pings(&self) {
        let pinged: Vec<String> = std::mem::take(&mut *self.pings()).into_iter().collect();
        if pinged.is_empty() {
            return;
        }
        match self.directory.record_pings(&pinged, Utc::now()).await {
            Ok(refused) => {
                for node_id in refused {
                    if let Some(commands) = self.command_sender(&node_id) {
                        tracing::info!(%node_id, "node is deregistered: closing its stream");
                        send_command(
                            &commands,
                            Command::Close(Reason::Deregistered, "the node was deregistered"),
                        );
                    }
                }
            }
            Err(error) => tracing::warn!(%error, nodes = pinged.len(), "recording pings failed"),
        }
    }

    async fn refresh_presence(&self) {
        let held = self.held_nodes();
        if held.is_empty() {
            return;
        }
        let lost = match self
            .link
            .presence()
            .refresh_many(&held, &self.options.replica_id, self.options.presence_ttl())
            .await
        {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(%error, "refreshing presence failed");
                return;
            }
        };
        for node_id in lost {
            if let Some(commands) = self.command_sender(&node_id) {
                tracing::info!(%node_id, "another gateway holds this node now");
                send_command(
                    &commands,
                    Command::Close(Reason::Replaced, "a newer stream of this node connected"),
                );
            }
        }
    }

    /// Every `resend_after`: unacknowledged messages of nodes held here, not sent for that
    /// long, are sent again.
    async fn resend_loop(&self, shutdown: &CancellationToken) {
        let mut ticks = tokio::time::interval(self.options.resend_after);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let cutoff = Utc::now()
                - chrono::Duration::from_std(self.options.resend_after)
                    .unwrap_or(chrono::Duration::MAX);
            let held = self.held_nodes();
            for chunk in held.chunks(RESEND_CHUNK) {
                if shutdown.is_cancelled() {
                    return;
                }
                let stale = match self
                    .link
                    .stale_pending(chunk, cutoff, RESEND_CHUNK as u64)
                    .await
                {
                    Ok(stale) => stale,
                    Err(error) => {
                        tracing::warn!(%error, "reading messages to re-send failed");
                        break;
                    }
                };
                for pending in stale {
                    self.hand_delivery(&pending.node_id, pending.to_delivery());
                }
            }
        }
    }

    /// Tells every stream the gateway is going, waits briefly for them to end, and gives up
    /// this replica's presence claims.
    async fn shut_down(&self) {
        self.closing.store(true, Ordering::Release);
        let held: Vec<(String, mpsc::Sender<Command>)> = self
            .streams()
            .iter()
            .map(|(node_id, handle)| (node_id.clone(), handle.commands.clone()))
            .collect();
        for (_, commands) in &held {
            send_command(
                commands,
                Command::Close(Reason::Shutdown, "gateway is shutting down"),
            );
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.streams().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let presence = self.link.presence();
        let replica_id = &self.options.replica_id;
        futures::stream::iter(held)
            .for_each_concurrent(64, |(node_id, _)| async move {
                if let Err(error) = presence.remove_if(&node_id, replica_id).await {
                    tracing::warn!(%node_id, %error, "removing presence at shutdown failed");
                }
            })
            .await;
        tracing::info!(replica_id = %self.options.replica_id, "agent edge stopped");
    }
}

fn close_text(reason: Reason) -> &'static str {
    match reason {
        Reason::Deregistered => "node deregistered",
        Reason::Replaced => "a newer stream of this node connected",
        Reason::Shutdown => "gateway is shutting down",
        Reason::ProtocolError => "protocol error",
        Reason::Unspecified => "closed by the control plane",
    }
}
