//! The session broker: `bosun.sessions.v1.SessionData` on a gateway replica — `Attach` for
//! agents (Ed25519 proof over a fresh nonce, like `AgentChannel.Connect`) and `Connect` for
//! clients (bearer principal + single-use session token).
//!
//! The replica holding a session's agent stream is its *hub* (`hub.rs`): one task per session
//! that relays frames between the ends and does the session's bookkeeping (timeouts, bytes,
//! transcript, liveness, the end). A client whose `Connect` lands on the hub's replica is
//! handed to the hub in memory; one that lands elsewhere is relayed through two Redis streams
//! (`relay.rs`). Without Redis (the all-in-one server) every end is on the one replica.
//!
//! Client before agent: a client may redeem its token while the session is still Connecting.
//! With Redis it is relayed at once (its `attach` record waits in the stream and the hub reads
//! the stream from the start when the agent attaches). Without Redis it gets `Ready` and waits
//! for the local hub up to `attach_timeout`, then is handed to it (and told `PeerAttached`).
//!
//! Every channel is bounded; a slow end stops the broker reading the other end's stream, so
//! backpressure reaches the sender through gRPC flow control and the ends' windows.

mod duties;
mod hub;
mod relay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use bosun_auth::auth_context;
use bosun_core::ApiError;
use bosun_nodelink::NodeDirectory;
use bosun_objects::Objects;
use bosun_proto::sessions::v1::session_data_server::{SessionData, SessionDataServer};
use bosun_proto::sessions::v1::{AttachChallenge, Closed, Frame, Ready, frame};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::config::SessionsConfig;
use crate::store::{SessionRecord, SessionStatus, SessionStore};

pub use relay::RelayRedis;

/// A handshake (Attach: open → challenge → proof; Connect: the first frame) not done by then
/// ends with UNAUTHENTICATED.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting to be written to one end. Small: the ends' windows bound what is in
/// flight, this only smooths the hand-off to tonic.
const END_CAPACITY: usize = 16;
/// Commands waiting for one hub (attachments, what the touch task learned).
const HUB_COMMANDS: usize = 8;
/// How long `shutdown` waits for the session tasks to close their streams.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// What a local end is told when the replica stops.
const SHUTTING_DOWN: &str = "gateway shutting down";

/// How a stopping gateway ends an end's stream: a break (UNAVAILABLE), never `Closed`, so the
/// agent re-attaches and the client resumes elsewhere and the session lives on.
fn shutting_down() -> Status {
    Status::unavailable(format!("{SHUTTING_DOWN}; reconnect"))
}

/// One item written to an end's response stream.
type Outgoing = Result<Frame, Status>;

/// The response stream of `Connect` and `Attach`.
pub type FrameStream = ReceiverStream<Outgoing>;

/// One attached end: its request stream and the sender feeding its response stream.
struct End {
    inbound: Streaming<Frame>,
    outbound: mpsc::Sender<Outgoing>,
}

/// What the registry knows of a local hub.
struct HubHandle {
    hub_id: u64,
    commands: mpsc::Sender<hub::HubCommand>,
}

/// State shared by the RPC handlers and the session tasks of one replica.
struct Shared {
    store: SessionStore,
    directory: Arc<dyn NodeDirectory>,
    objects: Arc<Objects>,
    config: SessionsConfig,
    replica_id: String,
    relay: Option<relay::Relay>,
    /// session id → the local hub. Never held across an `.await`.
    hubs: Mutex<HashMap<String, HubHandle>>,
    /// Signalled whenever a hub registers: clients waiting for their agent look again.
    hub_registered: Notify,
    next_hub_id: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    random: SystemRandom,
}

/// Serves `bosun.sessions.v1.SessionData` on a gateway replica. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Broker")
            .field("replica_id", &self.shared.replica_id)
            .field("relay", &self.shared.relay.is_some())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker for the replica `replica_id`. With `redis`, clients and agents on different
    /// replicas are relayed through Redis streams (the connection is made here, so a bad URL
    /// or an unreachable Redis fails start-up); without it, both ends must reach this
    /// replica (the all-in-one server).
    pub async fn start(
        store: SessionStore,
        directory: Arc<dyn NodeDirectory>,
        objects: Arc<Objects>,
        config: SessionsConfig,
        replica_id: String,
        redis: Option<RelayRedis>,
    ) -> Result<Self, ApiError> {
        let relay = match redis {
            Some(redis) => Some(relay::Relay::connect(redis).await?),
            None => None,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                directory,
                objects,
                config,
                replica_id,
                relay,
                hubs: Mutex::new(HashMap::new()),
                hub_registered: Notify::new(),
                next_hub_id: AtomicU64::new(1),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                random: SystemRandom::new(),
            }),
        })
    }

    /// The tonic service.
    pub fn into_server(self) -> SessionDataServer<Broker> {
        SessionDataServer::new(self)
    }

    /// This replica's id (recorded as the session's hub).
    pub fn replica_id(&self) -> &str {
        &self.shared.replica_id
    }

    /// How many sessions this replica is the hub of.
    pub fn hub_count(&self) -> usize {
        self.shared.hubs().len()
    }

    /// Closes every local end with `Closed{Failed, "gateway shutting down"}` without ending
    /// the sessions (agents re-attach to another replica, clients reconnect there), flushes
    /// transcripts, and waits (bounded) for the session tasks. New streams are refused.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("session broker: streams still open after the shutdown grace");
        }
    }
}

#[tonic::async_trait]
impl SessionData for Broker {
    type ConnectStream = FrameStream;
    type AttachStream = FrameStream;

    async fn connect(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        if self.shared.shutdown.is_cancelled() {
            return Err(ApiError::Unavailable("gateway is shutting down".to_owned()).into());
        }
        let caller = auth_context(&request)?;
        let principal = caller.principal.to_string();
        let inbound = request.into_inner();
        let (outbound, receiver) = mpsc::channel(END_CAPACITY);
        let shared = self.shared.clone();
        self.shared
            .tasks
            .spawn(async move { shared.serve_client(principal, inbound, outbound).await });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn attach(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        if self.shared.shutdown.is_cancelled() {
            return Err(ApiError::Unavailable("gateway is shutting down".to_owned()).into());
        }
        let inbound = request.into_inner();
        let (outbound, receiver) = mpsc::channel(END_CAPACITY);
        let shared = self.shared.clone();
        self.shared
            .tasks
            .spawn(async move { shared.serve_agent(inbound, outbound).await });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

fn make_frame(kind: frame::Kind) -> Frame {
    Frame { kind: Some(kind) }
}

fn ready_frame(record: &SessionRecord) -> Frame {
    make_frame(frame::Kind::Ready(Ready {
        session_id: record.session_id.clone(),
        session_type: record.session_type.clone(),
        port_number: u32::from(record.port_number),
        host: record.host.clone(),
        local_port_number: u32::from(record.local_port_number),
    }))
}

fn closed_frame(status: SessionStatus, reason: &str) -> Frame {
    make_frame(frame::Kind::Closed(Closed {
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
    }))
}

/// The reason given to an end when the session was ended by someone else (a TerminateSession,
/// the reaper): the stored details (`terminated by user/alice`), else the status.
fn ended_reason(status: SessionStatus, details: &str) -> String {
    if !details.is_empty() {
        return details.to_owned();
    }
    match status {
        SessionStatus::Failed => "session failed".to_owned(),
        _ => "session terminated".to_owned(),
    }
}

/// The end's next frame from `result`; `None` when the stream ended or broke.
fn received(result: Result<Option<Frame>, Status>) -> Option<Frame> {
    match result {
        Ok(frame) => frame,
        Err(status) => {
            tracing::debug!(%status, "session stream broke");
            None
        }
    }
}

async fn read_first(inbound: &mut Streaming<Frame>) -> Result<Option<frame::Kind>, ApiError> {
    match inbound.message().await {
        Ok(message) => Ok(message.and_then(|frame| frame.kind)),
        Err(status) => Err(ApiError::Unavailable(format!(
            "session stream broke during the handshake: {}",
            status.message()
        ))),
    }
}

impl Shared {
    fn hubs(&self) -> MutexGuard<'_, HashMap<String, HubHandle>> {
        self.hubs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hub_commands(&self, session_id: &str) -> Option<mpsc::Sender<hub::HubCommand>> {
        self.hubs()
            .get(session_id)
            .map(|handle| handle.commands.clone())
    }

    /// Forgets the hub if it is still the session's hub here.
    fn unregister(&self, session_id: &str, hub_id: u64) {
        let mut hubs = self.hubs();
        if hubs
            .get(session_id)
            .is_some_and(|handle| handle.hub_id == hub_id)
        {
            hubs.remove(session_id);
        }
    }

    /// One `Attach` stream: handshake, `Ready`, then the session's hub takes it.
    async fn serve_agent(
        self: Arc<Self>,
        mut inbound: Streaming<Frame>,
        outbound: mpsc::Sender<Outgoing>,
    ) {
        let handshake = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.agent_handshake(&mut inbound, &outbound),
        )
        .await
        .unwrap_or_else(|_elapsed| {
            Err(ApiError::Unauthenticated(format!(
                "attach handshake not completed within {HANDSHAKE_TIMEOUT:?}"
            )))
        });
        let record = match handshake {
            Ok(record) => record,
            Err(error) => {
                let _gone = outbound.send(Err(error.into())).await;
                return;
            }
        };
        if self.shutdown.is_cancelled() {
            let _gone = outbound.send(Err(shutting_down())).await;
            return;
        }
        if outbound.send(Ok(ready_frame(&record))).await.is_err() {
            return;
        }
        tracing::info!(session_id = %record.session_id, node_id = %record.node_id, "agent attached");
        self.attach_agent(record, End { inbound, outbound }).await;
    }

    /// `AgentOpen` → `AttachChallenge` → `AttachProof`, then the session's checks. The
    /// session is looked at only after the node proved its key, so an unauthenticated caller
    /// learns nothing about sessions.
    async fn agent_handshake(
        &self,
        inbound: &mut Streaming<Frame>,
        outbound: &mpsc::Sender<Outgoing>,
    ) -> Result<SessionRecord, ApiError> {
        let Some(frame::Kind::AgentOpen(open)) = read_first(inbound).await? else {
            return Err(ApiError::Unauthenticated(
                "attach stream must start with agent_open".to_owned(),
            ));
        };
        if open.session_id.is_empty() || open.session_id.len() > 128 {
            return Err(ApiError::invalid(
                "agent_open.session_id",
                "must be 1-128 characters",
            ));
        }
        if open.node_id.is_empty() || open.node_id.len() > 400 {
            return Err(ApiError::invalid(
                "agent_open.node_id",
                "must be 1-400 characters",
            ));
        }
        let credentials = self
            .directory
            .credentials(&open.node_id)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("unknown or deregistered node".to_owned()))?;
        let mut nonce = [0_u8; 32];
        self.random
            .fill(&mut nonce)
            .map_err(|_| ApiError::internal("generate an attach challenge"))?;
        let challenge = make_frame(frame::Kind::Challenge(AttachChallenge {
            nonce: nonce.to_vec(),
        }));
        if outbound.send(Ok(challenge)).await.is_err() {
            return Err(ApiError::Unavailable("agent went away".to_owned()));
        }
        let Some(frame::Kind::Proof(proof)) = read_first(inbound).await? else {
            return Err(ApiError::Unauthenticated(
                "agent must answer the challenge with a proof".to_owned(),
            ));
        };
        let signed = bosun_session::attach_message(&open.session_id, &open.node_id, &nonce);
        if UnparsedPublicKey::new(&ED25519, &credentials.public_key)
            .verify(&signed, &proof.signature)
            .is_err()
        {
            tracing::info!(node_id = %open.node_id, "session attach proof does not verify");
            return Err(ApiError::Unauthenticated(format!(
                "node {}: proof does not verify",
                open.node_id
            )));
        }
        let record = self.store.get(&open.session_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("session {} does not exist", open.session_id))
                .with_reason("DoesNotExistException")
        })?;
        if record.node_id != open.node_id {
            return Err(ApiError::PermissionDenied(format!(
                "session {} is not on node {}",
                open.session_id, open.node_id
            )));
        }
        if record.status.is_ended() {
            return Err(ApiError::failed_precondition(format!(
                "session {} has ended ({})",
                record.session_id,
                record.status.as_str()
            ))
            .with_reason("InvalidSessionState"));
        }
        Ok(record)
    }

    /// Makes this replica the session's hub with `agent`: an existing local hub takes the
    /// new stream in place of the old one; otherwise a new hub starts.
    async fn attach_agent(self: &Arc<Self>, record: SessionRecord, agent: End) {
        let mut agent = agent;
        loop {
            if let Some(commands) = self.hub_commands(&record.session_id) {
                match commands.send(hub::HubCommand::AgentAttached(agent)).await {
                    Ok(()) => return,
                    // The hub is finishing: start a new one (it unregisters itself; remove it
                    // here too so the next lookup does not find it again).
                    Err(mpsc::error::SendError(command)) => {
                        let hub::HubCommand::AgentAttached(returned) = command else {
                            return;
                        };
                        agent = returned;
                        let mut hubs = self.hubs();
                        if hubs
                            .get(&record.session_id)
                            .is_some_and(|handle| handle.commands.same_channel(&commands))
                        {
                            hubs.remove(&record.session_id);
                        }
                        continue;
                    }
                }
            }
            let (commands, receiver) = mpsc::channel(HUB_COMMANDS);
            let hub_id = self.next_hub_id.fetch_add(1, Ordering::Relaxed);
            {
                let mut hubs = self.hubs();
                if hubs.contains_key(&record.session_id) {
                    // Another Attach of the session won the race: hand this stream to it.
                    continue;
                }
                hubs.insert(
                    record.session_id.clone(),
                    HubHandle {
                        hub_id,
                        commands: commands.clone(),
                    },
                );
            }
            self.hub_registered.notify_waiters();
            let shared = self.clone();
            self.tasks.spawn(async move {
                hub::run(shared, record, hub_id, agent, commands, receiver).await;
            });
            return;
        }
    }

    /// One `Connect` stream: `ClientOpen`, the token, then the hub takes it — here, through
    /// Redis, or after waiting for the agent.
    async fn serve_client(
        self: Arc<Self>,
        principal: String,
        mut inbound: Streaming<Frame>,
        outbound: mpsc::Sender<Outgoing>,
    ) {
        let opened = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.client_handshake(&principal, &mut inbound),
        )
        .await
        .unwrap_or_else(|_elapsed| {
            Err(ApiError::Unauthenticated(format!(
                "client_open not received within {HANDSHAKE_TIMEOUT:?}"
            )))
        });
        let record = match opened {
            Ok(record) => record,
            Err(error) => {
                let _gone = outbound.send(Err(error.into())).await;
                return;
            }
        };
        let end = End { inbound, outbound };
        if let Some(commands) = self.hub_commands(&record.session_id) {
            if end.outbound.send(Ok(ready_frame(&record))).await.is_err() {
                return;
            }
            let command = hub::HubCommand::ClientAttached {
                end,
                announce: false,
            };
            // The hub ended between the lookup and the hand-off: the session is over or
            // moved; the client reconnects and finds out.
            if let Err(mpsc::error::SendError(hub::HubCommand::ClientAttached { end, .. })) =
                commands.send(command).await
            {
                let _gone = end
                    .outbound
                    .send(Err(ApiError::Unavailable(
                        "the session's agent detached; reconnect".to_owned(),
                    )
                    .into()))
                    .await;
            }
            return;
        }
        if let Some(relay) = &self.relay {
            relay::serve_remote_client(&self, relay, record, end).await;
            return;
        }
        if record.status != SessionStatus::Connecting {
            let _gone = end
                .outbound
                .send(Err(ApiError::failed_precondition(
                    "the session's agent is not attached to this gateway",
                )
                .into()))
                .await;
            return;
        }
        if end.outbound.send(Ok(ready_frame(&record))).await.is_err() {
            return;
        }
        self.wait_for_hub(record, end).await;
    }

    async fn client_handshake(
        &self,
        principal: &str,
        inbound: &mut Streaming<Frame>,
    ) -> Result<SessionRecord, ApiError> {
        let Some(frame::Kind::ClientOpen(open)) = read_first(inbound).await? else {
            return Err(ApiError::invalid(
                "client_open",
                "the first frame must be client_open",
            ));
        };
        if open.session_id.is_empty() || open.session_id.len() > 128 {
            return Err(ApiError::invalid(
                "client_open.session_id",
                "must be 1-128 characters",
            ));
        }
        if open.token.is_empty() || open.token.len() > 256 {
            return Err(ApiError::invalid(
                "client_open.token",
                "must be 1-256 characters",
            ));
        }
        self.store
            .redeem_token(&open.session_id, &open.token, principal)
            .await
    }

    /// Without Redis, a client that redeemed its token before the agent attached waits here
    /// (it already has `Ready`) for the local hub, up to `attach_timeout`.
    async fn wait_for_hub(self: &Arc<Self>, record: SessionRecord, end: End) {
        let deadline = Instant::now() + self.config.attach_timeout;
        loop {
            let registered = self.hub_registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            if let Some(commands) = self.hub_commands(&record.session_id) {
                let command = hub::HubCommand::ClientAttached {
                    end,
                    announce: true,
                };
                if let Err(mpsc::error::SendError(hub::HubCommand::ClientAttached {
                    end, ..
                })) = commands.send(command).await
                {
                    let _gone = end
                        .outbound
                        .send(Err(ApiError::Unavailable(
                            "the session's agent detached; reconnect".to_owned(),
                        )
                        .into()))
                        .await;
                }
                return;
            }
            tokio::select! {
                () = &mut registered => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = self.shutdown.cancelled() => {
                    let _gone = end.outbound.send(Err(shutting_down())).await;
                    return;
                }
                () = end.outbound.closed() => return,
            }
        }
        let reply = match self.store.get(&record.session_id).await {
            Ok(Some(now)) if now.status.is_ended() => Ok(closed_frame(
                now.status,
                &ended_reason(now.status, &now.details),
            )),
            Ok(_) => Err(ApiError::failed_precondition(
                "the session's agent is not attached to this gateway",
            )
            .into()),
            Err(error) => Err(error.into()),
        };
        let _gone = end.outbound.send(reply).await;
    }
}
