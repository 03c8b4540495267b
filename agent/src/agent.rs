//! The run loop: connect, prove the node's identity, take deliveries exactly once, send results
//! until acknowledged, heartbeat, reconnect with back-off, drain on shutdown.
//!
//! Results go out a bounded window at a time (see [`AgentOptions::result_window`]), read from
//! the journal as acknowledgements make room: however many wait, the agent holds only a window
//! of them in memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bosun_proto::agent::v1::agent_channel_client::AgentChannelClient;
use bosun_proto::agent::v1::agent_message::Body as AgentBody;
use bosun_proto::agent::v1::close::Reason;
use bosun_proto::agent::v1::server_message::Body as ServerBody;
use bosun_proto::agent::v1::{
    Ack, AgentMessage, Delivery, Heartbeat, Hello, HostFacts, Proof, Result as AgentResult,
    ServerMessage,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

use crate::AgentError;
use crate::backoff::{Backoff, BackoffConfig};
use crate::client::EndpointConfig;
use crate::executor::{Executor, ResultSink};
use crate::journal::{Journal, PendingResult};
use crate::protocol::FailureResult;
use crate::session::{SessionManager, SessionOptions};
use crate::state::Identity;

/// Tunables of [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Reported in every `Hello`.
    pub facts: HostFacts,
    /// Reconnect back-off.
    pub backoff: BackoffConfig,
    /// On shutdown, how long running work may go on before it is killed.
    pub shutdown_grace: Duration,
    /// After the grace, how long to keep trying to hand results over before exiting (what is
    /// left stays in the journal and is sent on the next start).
    pub flush_timeout: Duration,
    /// Limit on each handshake step.
    pub handshake_timeout: Duration,
    /// Heartbeat interval when `Welcome` gives none.
    pub default_heartbeat_interval: Duration,
    /// At most this many results are sent on a stream and not yet acknowledged; more are
    /// sent (read from the journal) as acknowledgements come.
    pub result_window: usize,
    /// Nor more than this many bytes of results (encoded) at once; a larger result still goes
    /// alone.
    pub result_window_bytes: usize,
    /// With results unacknowledged and no acknowledgement for this long, the stream is given
    /// up and opened again (which sends them again, oldest first).
    pub ack_timeout: Duration,
    /// Session Manager: `sessions.*` deliveries run sessions over the agent's channel;
    /// `None` leaves them to the executor (the fleet simulator's echo answers them).
    pub sessions: Option<SessionOptions>,
}

impl AgentOptions {
    /// Defaults: 1 s–5 min back-off, 20 s grace, 5 s flush, 15 s handshake, 30 s heartbeat,
    /// a window of 64 results or 4 MiB, 60 s to wait for an acknowledgement, sessions on.
    pub fn new(facts: HostFacts) -> Self {
        Self {
            facts,
            backoff: BackoffConfig::default(),
            shutdown_grace: Duration::from_secs(20),
            flush_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(15),
            default_heartbeat_interval: Duration::from_secs(30),
            result_window: 64,
            result_window_bytes: 4 << 20,
            ack_timeout: Duration::from_secs(60),
            sessions: Some(SessionOptions::default()),
        }
    }
}

/// Why [`Agent::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was asked; work finished (or was killed after the grace) and results were
    /// handed over as far as the connection allowed.
    Shutdown,
    /// The server said the node is deregistered: the agent must be registered again.
    Deregistered {
        /// The server's message.
        message: String,
    },
}

/// One node's agent: the connection to the control plane and the work it brings.
pub struct Agent {
    identity: Identity,
    endpoint: EndpointConfig,
    journal: Arc<dyn Journal>,
    executor: Arc<dyn Executor>,
    options: AgentOptions,
    channel: Option<tonic::transport::Channel>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node_id", &self.identity.node_id)
            .finish()
    }
}

/// How a stream ended.
enum StreamEnd {
    Closed {
        reason: Option<Reason>,
        message: String,
    },
    Ended,
    Failed(tonic::Status),
    Drained,
}

/// State that outlives one stream.
struct RunState {
    notify: Arc<Notify>,
    tracker: TaskTracker,
    abort: CancellationToken,
    /// Set once shutdown is asked: when the grace ends.
    grace_ends: Option<Instant>,
    /// Runs `sessions.*` deliveries (on the same channel as the agent's stream).
    sessions: Option<Arc<SessionManager>>,
}

impl RunState {
    /// Whether the agent may stop now. Past the grace, running work is killed; past the flush
    /// time, the agent stops whatever is left.
    fn drained(&self, journal: &dyn Journal, flush_timeout: Duration) -> bool {
        let Some(grace_ends) = self.grace_ends else {
            return false;
        };
        let now = Instant::now();
        if now >= grace_ends && !self.abort.is_cancelled() && !self.tracker.is_empty() {
            tracing::warn!(
                running = self.tracker.len(),
                "shutdown grace over: killing running work"
            );
            self.abort.cancel();
        }
        let idle = self.tracker.is_empty() && journal.pending_count() == 0;
        idle || now >= grace_ends + flush_timeout
    }

    fn start_draining(&mut self, grace: Duration) {
        if self.grace_ends.is_none() {
            tracing::info!(grace_secs = grace.as_secs(), "stopping: taking no new work");
            self.grace_ends = Some(Instant::now() + grace);
            if let Some(sessions) = &self.sessions {
                sessions.stop_all();
            }
        }
    }
}

/// Deliveries for the [`SessionManager`].
const SESSIONS_TOPIC_PREFIX: &str = "sessions.";

/// How often a draining agent checks whether it may stop.
const DRAIN_POLL: Duration = Duration::from_millis(100);

impl Agent {
    /// An agent for `identity`, dialling `endpoint`, recording in `journal`, running work with
    /// `executor`.
    pub fn new(
        identity: Identity,
        endpoint: EndpointConfig,
        journal: Arc<dyn Journal>,
        executor: Arc<dyn Executor>,
        options: AgentOptions,
    ) -> Self {
        Self {
            identity,
            endpoint,
            journal,
            executor,
            options,
            channel: None,
        }
    }

    /// Uses `channel` instead of dialling `endpoint`: the fleet simulator multiplexes many
    /// agents' streams over one HTTP/2 connection, as a proxy in front of the gateways would.
    pub fn with_channel(mut self, channel: tonic::transport::Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Runs until `shutdown` (then drains: see [`AgentOptions::shutdown_grace`]) or until the
    /// node is deregistered. Connection failures are retried forever with back-off.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Exit, AgentError> {
        let channel = match &self.channel {
            Some(channel) => channel.clone(),
            None => self.endpoint.channel()?,
        };
        let mut client = AgentChannelClient::new(channel.clone());
        let mut state = RunState {
            notify: Arc::new(Notify::new()),
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            grace_ends: None,
            sessions: self.options.sessions.clone().map(|options| {
                Arc::new(SessionManager::new(
                    channel.clone(),
                    self.identity.clone(),
                    options,
                ))
            }),
        };
        self.report_interrupted(&state);
        let mut backoff = Backoff::new(self.options.backoff);
        loop {
            let started = Instant::now();
            let (end, welcomed) = self.stream(&mut client, &mut state, &shutdown).await;
            let mut hint = None;
            match end {
                StreamEnd::Drained => return Ok(self.finish(&state).await),
                StreamEnd::Closed {
                    reason: Some(Reason::Deregistered),
                    message,
                } => {
                    tracing::error!(
                        node_id = %self.identity.node_id, %message,
                        "the node was deregistered: register it again to use this host"
                    );
                    state.abort.cancel();
                    state.tracker.close();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), state.tracker.wait()).await;
                    return Ok(Exit::Deregistered { message });
                }
                StreamEnd::Closed {
                    reason: Some(Reason::Replaced),
                    message,
                } => {
                    tracing::error!(
                        node_id = %self.identity.node_id, %message,
                        "another stream of this node replaced ours: is a second agent running \
                         with this identity (a copied state directory)?"
                    );
                }
                StreamEnd::Closed { reason, message } => {
                    tracing::warn!(reason = ?reason, %message, "the server closed the stream");
                }
                StreamEnd::Ended => tracing::warn!("the server ended the stream"),
                StreamEnd::Failed(status) => {
                    hint = retry_after(&status);
                    if status.code() == tonic::Code::Unauthenticated {
                        tracing::error!(
                            node_id = %self.identity.node_id, message = status.message(),
                            "the server refused this node's proof of identity"
                        );
                    } else {
                        tracing::warn!(
                            code = ?status.code(), message = status.message(),
                            "the agent channel failed"
                        );
                    }
                }
            }
            if welcomed && started.elapsed() >= self.options.backoff.reset_after {
                backoff.reset();
            }
            let delay = backoff.next_delay(hint);
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after a pause"
            );
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    () = shutdown.cancelled(), if state.grace_ends.is_none() => {
                        state.start_draining(self.options.shutdown_grace);
                    }
                    () = tokio::time::sleep(DRAIN_POLL), if state.grace_ends.is_some() => {
                        if state.drained(self.journal.as_ref(), self.options.flush_timeout) {
                            return Ok(self.finish(&state).await);
                        }
                    }
                }
            }
        }
    }

    /// Waits (briefly) for killed work to store its results, then reports the exit.
    async fn finish(&self, state: &RunState) -> Exit {
        state.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("work still running at exit; it will be reported interrupted");
        }
        let unsent = self.journal.pending_count();
        if unsent > 0 {
            tracing::warn!(
                unsent,
                "results not acknowledged yet; they are sent on the next start"
            );
        }
        Exit::Shutdown
    }

    /// Deliveries whose run the last process never finished get a `Failed` result; they are
    /// not run again.
    fn report_interrupted(&self, state: &RunState) {
        for delivery in self.journal.unfinished_deliveries() {
            tracing::warn!(
                message_id = %delivery.message_id, topic = %delivery.topic,
                "a run was interrupted by the agent stopping; reporting it failed"
            );
            let sink = ResultSink::new(
                self.journal.clone(),
                state.notify.clone(),
                &delivery,
                state.abort.clone(),
            );
            let _ = sink.complete(self.executor.interrupted_payload(&delivery));
        }
    }

    /// One stream, from `Hello` to its end. Returns how it ended and whether it got `Welcome`.
    async fn stream(
        &self,
        client: &mut AgentChannelClient<Channel>,
        state: &mut RunState,
        shutdown: &CancellationToken,
    ) -> (StreamEnd, bool) {
        let (outbound, receiver) = mpsc::unbounded_channel::<AgentMessage>();
        let send = |body: AgentBody| {
            // Fails only when the stream is gone, which the inbound side reports.
            let _ = outbound.send(AgentMessage { body: Some(body) });
        };
        send(AgentBody::Hello(Hello {
            node_id: self.identity.node_id.clone(),
            facts: Some(self.options.facts.clone()),
        }));
        let connecting = client.connect(UnboundedReceiverStream::new(receiver));
        let mut inbound = match tokio::time::timeout(self.options.handshake_timeout, connecting)
            .await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return (StreamEnd::Failed(status), false),
            Err(_) => {
                let status = tonic::Status::deadline_exceeded("the server did not answer in time");
                return (StreamEnd::Failed(status), false);
            }
        };

        let challenge = match self.handshake_step(&mut inbound).await {
            Ok(ServerBody::Challenge(challenge)) => challenge,
            Ok(other) => return (unexpected(other, "a Challenge"), false),
            Err(end) => return (end, false),
        };
        send(AgentBody::Proof(Proof {
            signature: self.identity.sign_challenge(&challenge.nonce),
        }));
        let welcome = match self.handshake_step(&mut inbound).await {
            Ok(ServerBody::Welcome(welcome)) => welcome,
            Ok(other) => return (unexpected(other, "a Welcome"), false),
            Err(end) => return (end, false),
        };
        let heartbeat_every = match welcome.heartbeat_interval_seconds {
            0 => self.options.default_heartbeat_interval,
            seconds => Duration::from_secs(u64::from(seconds)),
        };
        tracing::info!(
            node_id = %self.identity.node_id, heartbeat_secs = heartbeat_every.as_secs(),
            "connected"
        );
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut window = Window::new(&self.options);
        window.fill(self.journal.as_ref(), &outbound);

        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(ServerMessage { body: Some(body) })) => match body {
                        ServerBody::Delivery(delivery) => {
                            self.on_delivery(delivery, &outbound, state);
                        }
                        ServerBody::ResultAck(ack) => {
                            if let Err(error) = self.journal.remove_result(&ack.result_id) {
                                tracing::warn!(%error, "cannot forget an acknowledged result");
                            }
                            window.acknowledged(&ack.result_id, self.journal.as_ref(), &outbound);
                            window.fill(self.journal.as_ref(), &outbound);
                        }
                        ServerBody::Close(close) => {
                            return (
                                StreamEnd::Closed {
                                    reason: Reason::try_from(close.reason).ok(),
                                    message: close.message,
                                },
                                true,
                            );
                        }
                        ServerBody::Challenge(_) | ServerBody::Welcome(_) => {
                            tracing::warn!("ignoring a handshake message after the handshake");
                        }
                    },
                    Ok(Some(ServerMessage { body: None })) => {
                        tracing::warn!("ignoring an empty server message");
                    }
                    Ok(None) => return (StreamEnd::Ended, true),
                    Err(status) => return (StreamEnd::Failed(status), true),
                },
                _ = heartbeat.tick() => {
                    send(AgentBody::Heartbeat(Heartbeat {}));
                    // Also retries what a failed read of the journal left unsent.
                    window.fill(self.journal.as_ref(), &outbound);
                }
                () = state.notify.notified() => window.fill(self.journal.as_ref(), &outbound),
                () = tokio::time::sleep_until(window.ack_deadline()), if window.waiting() => {
                    let status = tonic::Status::deadline_exceeded(format!(
                        "no result acknowledged in {:?}",
                        self.options.ack_timeout
                    ));
                    return (StreamEnd::Failed(status), true);
                }
                () = shutdown.cancelled(), if state.grace_ends.is_none() => {
                    state.start_draining(self.options.shutdown_grace);
                }
                () = tokio::time::sleep(DRAIN_POLL), if state.grace_ends.is_some() => {
                    if state.drained(self.journal.as_ref(), self.options.flush_timeout) {
                        return (StreamEnd::Drained, true);
                    }
                }
            }
        }
    }

    async fn handshake_step(
        &self,
        inbound: &mut tonic::Streaming<ServerMessage>,
    ) -> Result<ServerBody, StreamEnd> {
        match tokio::time::timeout(self.options.handshake_timeout, inbound.message()).await {
            Err(_) => Err(StreamEnd::Failed(tonic::Status::deadline_exceeded(
                "the server did not answer the handshake in time",
            ))),
            Ok(Err(status)) => Err(StreamEnd::Failed(status)),
            Ok(Ok(None)) => Err(StreamEnd::Ended),
            Ok(Ok(Some(ServerMessage {
                body: Some(ServerBody::Close(close)),
            }))) => Err(StreamEnd::Closed {
                reason: Reason::try_from(close.reason).ok(),
                message: close.message,
            }),
            Ok(Ok(Some(ServerMessage { body: Some(body) }))) => Ok(body),
            Ok(Ok(Some(ServerMessage { body: None }))) => Err(StreamEnd::Failed(
                tonic::Status::internal("the server sent an empty handshake message"),
            )),
        }
    }

    /// Records a delivery (or recognises it), acknowledges it, and starts it if it is new.
    fn on_delivery(
        &self,
        delivery: Delivery,
        outbound: &mpsc::UnboundedSender<AgentMessage>,
        state: &RunState,
    ) {
        let message_id = delivery.message_id.clone();
        if state.grace_ends.is_some() {
            // Not acknowledged: the server sends it again, to this node once it is back.
            tracing::info!(%message_id, topic = %delivery.topic, "stopping: delivery left for later");
            return;
        }
        let fresh = match self.journal.record_delivery(&delivery) {
            Ok(fresh) => fresh,
            Err(error) => {
                // Not acknowledged either: it comes again once the journal works.
                tracing::error!(%message_id, %error, "cannot record a delivery");
                return;
            }
        };
        let _ = outbound.send(AgentMessage {
            body: Some(AgentBody::Ack(Ack {
                message_id: message_id.clone(),
            })),
        });
        if !fresh {
            tracing::info!(%message_id, "delivery seen before: acknowledged again, not run");
            return;
        }
        tracing::info!(%message_id, topic = %delivery.topic, "delivery accepted");
        let sink = ResultSink::new(
            self.journal.clone(),
            state.notify.clone(),
            &delivery,
            state.abort.clone(),
        );
        if is_expired(&delivery) {
            let payload =
                serde_json::to_vec(&FailureResult::new("expired before it reached the node"))
                    .unwrap_or_default();
            let _ = sink.complete(payload);
            return;
        }
        // Sessions run in their delivery's task like any work: the agent drains them on
        // shutdown (killed after the grace) and reports them interrupted after a crash.
        let executor: Arc<dyn Executor> = match &state.sessions {
            Some(sessions) if delivery.topic.starts_with(SESSIONS_TOPIC_PREFIX) => sessions.clone(),
            _ => self.executor.clone(),
        };
        state.tracker.spawn(async move {
            let run = tokio::spawn({
                let sink = sink.clone();
                async move { executor.handle(delivery, sink).await }
            });
            let error = match run.await {
                Ok(()) => "the handler ended without a result",
                Err(_) => "the handler failed unexpectedly",
            };
            if !sink.is_complete() {
                tracing::error!(message_id = %sink.message_id(), error, "completing the run as failed");
                let payload = serde_json::to_vec(&FailureResult::new(error)).unwrap_or_default();
                let _ = sink.complete(payload);
            }
        });
    }
}

/// The results sent on one stream and not yet acknowledged: at most
/// [`AgentOptions::result_window`] of them, [`AgentOptions::result_window_bytes`] in all. Only
/// these are read from the journal; the rest wait on disk (for a [`crate::FileJournal`]).
struct Window {
    max_results: usize,
    max_bytes: usize,
    ack_timeout: Duration,
    /// In the order sent on the stream (which is the order the server answers).
    in_flight: VecDeque<PendingResult>,
    bytes: usize,
    /// The last sequence taken from the journal on this stream: what follows is sent next.
    cursor: Option<u64>,
    /// The last acknowledgement, or when the window last started to wait for one.
    progress_at: Instant,
}

impl Window {
    fn new(options: &AgentOptions) -> Self {
        Self {
            max_results: options.result_window.max(1),
            max_bytes: options.result_window_bytes,
            ack_timeout: options.ack_timeout,
            in_flight: VecDeque::new(),
            bytes: 0,
            cursor: None,
            progress_at: Instant::now(),
        }
    }

    fn has_room_for(&self, size: usize) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < self.max_results
                && self.bytes.saturating_add(size) <= self.max_bytes)
    }

    /// Sends the results stored after the cursor, oldest first, while the window has room.
    fn fill(&mut self, journal: &dyn Journal, outbound: &mpsc::UnboundedSender<AgentMessage>) {
        while self.in_flight.len() < self.max_results {
            let room = self.max_results - self.in_flight.len();
            let batch = journal.pending_after(self.cursor, room);
            if batch.is_empty() {
                return;
            }
            for pending in batch {
                if !self.has_room_for(pending.size) {
                    return;
                }
                let sequence = pending.sequence;
                match journal.load_result(sequence) {
                    Ok(Some(result)) => {
                        if self.in_flight.is_empty() {
                            self.progress_at = Instant::now();
                        }
                        self.bytes += pending.size;
                        self.in_flight.push_back(pending);
                        send_result(outbound, result);
                    }
                    // Acknowledged (or dropped) meanwhile.
                    Ok(None) => {}
                    Err(error) => {
                        // Left for the next try (a new result, an ack, a heartbeat).
                        tracing::warn!(%error, "cannot read a stored result to send it");
                        return;
                    }
                }
                self.cursor = Some(sequence);
            }
        }
    }

    /// Takes an acknowledged result out of the window. Those sent before it and still
    /// unacknowledged were lost (the server handles and answers a stream's results in order,
    /// and acknowledges none it failed to queue): they are sent again.
    fn acknowledged(
        &mut self,
        result_id: &str,
        journal: &dyn Journal,
        outbound: &mpsc::UnboundedSender<AgentMessage>,
    ) {
        let Some(position) = self
            .in_flight
            .iter()
            .position(|pending| pending.result_id == result_id)
        else {
            return;
        };
        self.progress_at = Instant::now();
        let lost: Vec<PendingResult> = self.in_flight.drain(..position).collect();
        if let Some(acked) = self.in_flight.pop_front() {
            self.bytes = self.bytes.saturating_sub(acked.size);
        }
        if !lost.is_empty() {
            tracing::info!(
                count = lost.len(),
                "results the server skipped are sent again"
            );
        }
        for pending in lost {
            self.resend(pending, journal, outbound);
        }
    }

    /// Whether results wait for acknowledgement.
    fn waiting(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// When the wait for an acknowledgement has lasted too long.
    fn ack_deadline(&self) -> Instant {
        self.progress_at + self.ack_timeout
    }

    /// Sends a lost result again, at the end of the window. Its earlier copy is known to be
    /// handled, so the window still holds one copy of each result whose fate is unknown, in
    /// the order sent, and the inference in [`Window::acknowledged`] stays exact.
    fn resend(
        &mut self,
        pending: PendingResult,
        journal: &dyn Journal,
        outbound: &mpsc::UnboundedSender<AgentMessage>,
    ) {
        match journal.load_result(pending.sequence) {
            Ok(Some(result)) => {
                self.in_flight.push_back(pending);
                send_result(outbound, result);
            }
            Ok(None) => self.bytes = self.bytes.saturating_sub(pending.size),
            Err(error) => {
                // Kept in the window, unsent: without an acknowledgement the stream times out
                // and the next one sends it.
                tracing::warn!(%error, "cannot read a stored result to send it again");
                self.in_flight.push_back(pending);
            }
        }
    }
}

fn send_result(outbound: &mpsc::UnboundedSender<AgentMessage>, result: AgentResult) {
    // Fails only when the stream is gone, which the inbound side reports.
    let _ = outbound.send(AgentMessage {
        body: Some(AgentBody::Result(result)),
    });
}

fn unexpected(body: ServerBody, wanted: &str) -> StreamEnd {
    let got = match body {
        ServerBody::Challenge(_) => "Challenge",
        ServerBody::Welcome(_) => "Welcome",
        ServerBody::Delivery(_) => "Delivery",
        ServerBody::ResultAck(_) => "ResultAck",
        ServerBody::Close(_) => "Close",
    };
    StreamEnd::Failed(tonic::Status::internal(format!(
        "handshake: expected {wanted}, the server sent {got}"
    )))
}

fn is_expired(delivery: &Delivery) -> bool {
    let Some(expires_at) = delivery.expires_at else {
        return false;
    };
    match std::time::SystemTime::try_from(expires_at) {
        Ok(expires_at) => expires_at < std::time::SystemTime::now(),
        Err(_) => false,
    }
}

/// The server's `retry-after-ms` hint, on RESOURCE_EXHAUSTED.
pub(crate) fn retry_after(status: &tonic::Status) -> Option<Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let milliseconds = status
        .metadata()
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(milliseconds))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic
mod tests {
    use super::*;

    #[test]
    fn the_retry_hint_is_read_from_resource_exhausted_only() {
        let mut status = tonic::Status::resource_exhausted("busy");
        status
            .metadata_mut()
            .insert("retry-after-ms", "2500".parse().unwrap());
        assert_eq!(retry_after(&status), Some(Duration::from_millis(2500)));
        let mut other = tonic::Status::unavailable("down");
        other
            .metadata_mut()
            .insert("retry-after-ms", "2500".parse().unwrap());
        assert_eq!(retry_after(&other), None);
    }
}
