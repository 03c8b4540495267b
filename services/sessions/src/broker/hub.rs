//! A session's hub: the task on the replica holding the agent's `Attach` stream. It relays
//! frames between the agent and the client (attached here, or through Redis), and owns the
//! session's duties: idle timeout, max duration, byte counts, the transcript, Connected /
//! Disconnected, and the end.
//!
//! One task, one `select!` loop. Each direction forwards with `try_send`; when the receiving
//! end's queue is full the frame is parked and that direction stops reading its source until
//! the frame is delivered, while the other direction keeps flowing. So a slow client
//! backpressures the agent (through gRPC flow control and the agent's window) and nothing is
//! queued without bound. Deadlines share one timer that is re-armed only when it fires or a
//! deadline moves earlier — never per packet.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bosun_proto::sessions::v1::{Frame, PeerAttached, frame, packet};
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::duties::{self, Counters, TRANSCRIPT_QUEUE, TranscriptEvent};
use super::relay::{Keys, Record, RecordKind, Relay, StreamId, is_relayed};
use super::{
    End, Outgoing, Shared, closed_frame, ended_reason, make_frame, received, shutting_down,
};
use crate::store::{SessionEnd, SessionRecord, SessionStatus};

/// After the agent's `Exit`, how long the hub waits for the client to acknowledge it before
/// ending the session anyway (a detached client learns the end when it reconnects).
const EXIT_ACK_GRACE: Duration = Duration::from_secs(2);
/// Bounds on the last writes to an end and on the final transcript flush.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const TRANSCRIPT_FINAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A timer deadline far enough away to mean "none".
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// What the rest of the replica tells a hub.
pub(super) enum HubCommand {
    /// The agent attached again (to this replica): it replaces the old stream.
    AgentAttached(End),
    /// A client attached on this replica. `announce`: it got `Ready` before this hub existed
    /// (it waited for the agent), so it is told `PeerAttached` too.
    ClientAttached { end: End, announce: bool },
    /// The touch found the session ended (TerminateSession, the reaper).
    Ended(SessionStatus),
    /// Another replica's hub claimed the session (the agent re-attached there).
    Moved,
}

// One per session, owned by its hub task and never moved per frame: boxing `End` would
// only add an indirection on the hot path.
#[allow(clippy::large_enum_variant)]
enum Client {
    Absent,
    Local(End),
    Remote { epoch: u64 },
}

/// The hub's Redis state: the client side of the session may be on another replica.
struct RemoteState {
    keys: Keys,
    claim: String,
    /// c2a's last entry when this hub started: attach records up to it came before the agent.
    start: StreamId,
    /// The last c2a record handled; a paused reader resumes after it.
    last: StreamId,
    /// The newest attach epoch seen; older attach records are stale.
    max_epoch: u64,
    /// Reads c2a while no client is attached here.
    reader: Option<(JoinHandle<()>, mpsc::Receiver<Record>)>,
}

enum Finish {
    /// The hub ends the session.
    End {
        status: SessionStatus,
        reason: String,
        exit_code: Option<i32>,
    },
    /// Someone else ended it.
    Ended(SessionStatus),
    /// This replica stops; the session goes on elsewhere.
    Shutdown,
    /// Another hub owns the session now.
    Moved,
}

enum Event {
    Shutdown,
    Command(Option<HubCommand>),
    Timer,
    AgentDelivered(bool),
    ClientDelivered(bool),
    Agent(Option<Frame>),
    Client(Option<Frame>),
    Remote(Option<Record>),
}

struct Hub {
    shared: Arc<Shared>,
    record: SessionRecord,
    agent: Option<End>,
    client: Client,
    /// A frame waiting for room in the agent's (client's) queue; while it waits, the other
    /// end is not read.
    to_agent: Option<Frame>,
    to_client: Option<Frame>,
    commands: mpsc::Receiver<HubCommand>,
    remote: Option<RemoteState>,
    counters: Arc<Counters>,
    transcript: Option<mpsc::Sender<TranscriptEvent>>,
    last_client_seq: u64,
    last_agent_seq: u64,
    last_input: Instant,
    max_deadline: Option<Instant>,
    lost_deadline: Option<Instant>,
    /// The agent's `Exit`: its seq, the code, and when to end without the client's ack.
    exit: Option<(u64, i32, Instant)>,
    timer: std::pin::Pin<Box<Sleep>>,
}

/// Runs the hub of `record` (the agent just attached here and got `Ready`) until the
/// session ends, this replica shuts down, or another hub takes over.
pub(super) async fn run(
    shared: Arc<Shared>,
    record: SessionRecord,
    hub_id: u64,
    agent: End,
    command_sender: mpsc::Sender<HubCommand>,
    commands: mpsc::Receiver<HubCommand>,
) {
    let session_id = record.session_id.clone();
    let remote = match &shared.relay {
        Some(relay) => Some(start_remote(&shared, relay, &session_id).await),
        None => None,
    };
    // The reaper stops counting the session as never attached; a hub taking over a running
    // session goes on counting from the bytes stored.
    if let Err(error) = shared
        .store
        .mark_attached(&session_id, &shared.replica_id)
        .await
    {
        tracing::warn!(%session_id, %error, "recording the agent's attachment failed");
    }
    let counters = Arc::new(Counters::default());
    if record.status != SessionStatus::Connecting {
        match shared.store.bytes(&session_id).await {
            Ok(Some((bytes_in, bytes_out))) => {
                counters.bytes_in.store(bytes_in, Ordering::Relaxed);
                counters.bytes_out.store(bytes_out, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%session_id, %error, "reading the byte counts failed"),
        }
    }
    let stop_touch = CancellationToken::new();
    shared.tasks.spawn(duties::touch_loop(
        shared.clone(),
        session_id.clone(),
        remote.as_ref().map(|remote| remote.claim.clone()),
        counters.clone(),
        command_sender,
        stop_touch.clone(),
    ));
    let (transcript, transcript_task) = if record.transcript {
        let (sender, receiver) = mpsc::channel(TRANSCRIPT_QUEUE);
        let task = shared.tasks.spawn(duties::transcript_loop(
            shared.clone(),
            session_id.clone(),
            record.started_at,
            // A hub taking over a running session continues its transcript.
            record.status != SessionStatus::Connecting,
            receiver,
        ));
        (Some(sender), Some(task))
    } else {
        (None, None)
    };
    let now = Instant::now();
    let max_deadline = record.max_duration.map(|max| {
        let elapsed = (Utc::now() - record.started_at)
            .to_std()
            .unwrap_or_default();
        now + max.saturating_sub(elapsed)
    });
    let mut hub = Hub {
        shared,
        record,
        agent: Some(agent),
        client: Client::Absent,
        to_agent: None,
        to_client: None,
        commands,
        remote,
        counters,
        transcript,
        last_client_seq: 0,
        last_agent_seq: 0,
        last_input: now,
        max_deadline,
        lost_deadline: None,
        exit: None,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
    };
    let next = hub.next_check();
    hub.timer.as_mut().reset(next);
    let finish = hub.relay().await;
    hub.shared.unregister(&session_id, hub_id);
    stop_touch.cancel();
    hub.finish(finish, transcript_task).await;
}

/// Claims the session in Redis and starts reading c2a from its beginning: a client may have
/// attached (and sent its first packets) before the agent did.
async fn start_remote(shared: &Arc<Shared>, relay: &Relay, session_id: &str) -> RemoteState {
    let keys = relay.keys(session_id);
    let claim = format!("{}/{}", shared.replica_id, uuid::Uuid::new_v4().simple());
    if let Err(error) = relay
        .claim(&keys, &claim, shared.config.hub_lost_after * 2)
        .await
    {
        tracing::warn!(%session_id, %error, "claiming the session in redis failed");
    }
    let start = relay.last_id(&keys.c2a).await.unwrap_or_default();
    let reader = Relay::spawn_reader(shared, keys.c2a.clone(), StreamId::default());
    RemoteState {
        keys,
        claim,
        start,
        last: StreamId::default(),
        max_epoch: 0,
        reader: Some(reader),
    }
}

/// Hands `pending` to `sender` once there is room; pends forever when there is nothing to
/// deliver. False when the end is gone.
async fn deliver(sender: Option<&mpsc::Sender<Outgoing>>, pending: &mut Option<Frame>) -> bool {
    let Some(sender) = sender.filter(|_| pending.is_some()) else {
        return std::future::pending().await;
    };
    match sender.reserve().await {
        Ok(permit) => {
            if let Some(frame) = pending.take() {
                permit.send(Ok(frame));
            }
            true
        }
        Err(_) => false,
    }
}

/// The end's next frame (`None`: it ended); pends while `blocked` or when there is no end.
async fn read(inbound: Option<&mut Streaming<Frame>>, blocked: bool) -> Option<Frame> {
    match inbound {
        Some(inbound) if !blocked => received(inbound.message().await),
        _ => std::future::pending().await,
    }
}

async fn read_remote(reader: Option<&mut mpsc::Receiver<Record>>, blocked: bool) -> Option<Record> {
    match reader {
        Some(reader) if !blocked => reader.recv().await,
        _ => std::future::pending().await,
    }
}

fn peer_attached() -> Frame {
    make_frame(frame::Kind::PeerAttached(PeerAttached {}))
}

fn saturating_u16(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

impl Hub {
    async fn relay(&mut self) -> Finish {
        loop {
            let agent_blocked = self.to_client.is_some();
            let client_blocked = self.to_agent.is_some();
            let (agent_in, agent_out) = match &mut self.agent {
                Some(end) => (Some(&mut end.inbound), Some(&end.outbound)),
                None => (None, None),
            };
            let (client_in, client_out) = match &mut self.client {
                Client::Local(end) => (Some(&mut end.inbound), Some(&end.outbound)),
                _ => (None, None),
            };
            let remote_in = self
                .remote
                .as_mut()
                .and_then(|remote| remote.reader.as_mut())
                .map(|(_, receiver)| receiver);
            let event = tokio::select! {
                () = self.shared.shutdown.cancelled() => Event::Shutdown,
                command = self.commands.recv() => Event::Command(command),
                () = &mut self.timer => Event::Timer,
                delivered = deliver(agent_out, &mut self.to_agent) => Event::AgentDelivered(delivered),
                delivered = deliver(client_out, &mut self.to_client) => Event::ClientDelivered(delivered),
                frame = read(agent_in, agent_blocked) => Event::Agent(frame),
                frame = read(client_in, client_blocked) => Event::Client(frame),
                record = read_remote(remote_in, client_blocked) => Event::Remote(record),
            };
            if let Some(finish) = self.handle(event).await {
                return finish;
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Option<Finish> {
        match event {
            Event::Shutdown | Event::Command(None) => return Some(Finish::Shutdown),
            Event::Command(Some(command)) => match command {
                HubCommand::AgentAttached(end) => self.agent_attached(end).await,
                HubCommand::ClientAttached { end, announce } => {
                    self.local_client_attached(end, announce).await;
                }
                HubCommand::Ended(status) => return Some(Finish::Ended(status)),
                HubCommand::Moved => return Some(Finish::Moved),
            },
            Event::Timer => return self.on_timer().await,
            Event::AgentDelivered(true) | Event::ClientDelivered(true) => {}
            Event::AgentDelivered(false) | Event::Agent(None) => self.agent_lost(),
            Event::ClientDelivered(false) | Event::Client(None) => self.client_detached().await,
            Event::Agent(Some(frame)) => self.on_agent_frame(frame).await,
            Event::Client(Some(frame)) => return self.on_client_frame(frame).await,
            Event::Remote(Some(record)) => return self.on_record(record).await,
            Event::Remote(None) => {
                // The reader stopped (it should not): read again from the last record.
                if let Some(remote) = self.remote.as_mut() {
                    remote.reader = None;
                }
                self.resume_reader();
            }
        }
        None
    }

    /// A frame from the agent, to the client. New packets are counted and recorded.
    async fn on_agent_frame(&mut self, frame: Frame) {
        match &frame.kind {
            Some(frame::Kind::Packet(packet)) if packet.seq > self.last_agent_seq => {
                self.last_agent_seq = packet.seq;
                match &packet.body {
                    Some(packet::Body::Output(bytes)) => {
                        self.counters
                            .bytes_out
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        if let Some(transcript) = &self.transcript {
                            let event = TranscriptEvent::Output(Utc::now(), bytes.clone());
                            let _closed = transcript.send(event).await;
                        }
                    }
                    Some(packet::Body::PortData(data)) => {
                        self.counters
                            .bytes_out
                            .fetch_add(data.data.len() as u64, Ordering::Relaxed);
                    }
                    Some(packet::Body::Exit(exit)) => {
                        let deadline = Instant::now() + EXIT_ACK_GRACE;
                        self.exit = Some((packet.seq, exit.code, deadline));
                        self.arm(deadline);
                    }
                    _ => {}
                }
            }
            Some(frame::Kind::Packet(_) | frame::Kind::Ack(_) | frame::Kind::Resume(_)) => {}
            // Handshake frames after the handshake: not relayed.
            _ => return,
        }
        self.send_to_client(frame).await;
    }

    /// A frame from the client (here or through Redis), to the agent.
    async fn on_client_frame(&mut self, frame: Frame) -> Option<Finish> {
        match &frame.kind {
            Some(frame::Kind::Packet(packet)) if packet.seq > self.last_client_seq => {
                self.last_client_seq = packet.seq;
                self.last_input = Instant::now();
                match &packet.body {
                    Some(packet::Body::Input(bytes)) => {
                        self.counters
                            .bytes_in
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        if self.record.record_input
                            && let Some(transcript) = &self.transcript
                        {
                            let event = TranscriptEvent::Input(Utc::now(), bytes.clone());
                            let _closed = transcript.send(event).await;
                        }
                    }
                    Some(packet::Body::PortData(data)) => {
                        self.counters
                            .bytes_in
                            .fetch_add(data.data.len() as u64, Ordering::Relaxed);
                    }
                    Some(packet::Body::Resize(size)) => {
                        if let Some(transcript) = &self.transcript {
                            let event = TranscriptEvent::Resize {
                                at: Utc::now(),
                                cols: saturating_u16(size.cols),
                                rows: saturating_u16(size.rows),
                                term: size.term.clone(),
                            };
                            let _closed = transcript.send(event).await;
                        }
                    }
                    _ => {}
                }
            }
            Some(frame::Kind::Ack(ack)) => {
                if let Some((exit_seq, code, _)) = self.exit
                    && ack.seq >= exit_seq
                {
                    self.send_to_agent(frame).await;
                    return Some(exit_finish(code));
                }
            }
            Some(frame::Kind::Packet(_) | frame::Kind::Resume(_)) => {}
            _ => return None,
        }
        self.send_to_agent(frame).await;
        None
    }

    async fn on_record(&mut self, record: Record) -> Option<Finish> {
        let remote = self.remote.as_mut()?;
        remote.last = record.id;
        // A frame of a newer epoch than any attach seen counts as its attach: a hub taking
        // over a long session may find the attach record trimmed away.
        // Epochs start at 1 and only grow, so an attach is new exactly when its epoch is.
        let newer = record.epoch > remote.max_epoch;
        let implicit_attach = newer && record.kind == RecordKind::Frame;
        if newer && (record.kind == RecordKind::Attach || implicit_attach) {
            remote.max_epoch = record.epoch;
            let announce = record.id <= remote.start;
            let previous = std::mem::replace(
                &mut self.client,
                Client::Remote {
                    epoch: record.epoch,
                },
            );
            self.to_client = None;
            self.replace_client(previous).await;
            tracing::info!(
                session_id = %self.record.session_id,
                epoch = record.epoch,
                "client attached through the relay"
            );
            self.client_arrived(announce).await;
            if !implicit_attach {
                return None;
            }
        }
        match record.kind {
            RecordKind::Detach => {
                if matches!(self.client, Client::Remote { epoch } if epoch == record.epoch) {
                    self.client_detached().await;
                }
            }
            RecordKind::Frame => {
                if matches!(self.client, Client::Remote { epoch } if epoch == record.epoch)
                    && let Some(frame) = record.frame
                    && is_relayed(&frame)
                {
                    return self.on_client_frame(frame).await;
                }
            }
            _ => {}
        }
        None
    }

    /// Tells the client it was replaced by a newer attachment.
    async fn replace_client(&mut self, previous: Client) {
        match previous {
            Client::Local(old) => {
                let _gone = old.outbound.try_send(Err(Status::aborted(
                    "the session was connected again elsewhere",
                )));
            }
            Client::Remote { epoch } => {
                if let (Some(relay), Some(remote)) = (&self.shared.relay, &self.remote)
                    && let Err(error) = relay
                        .append(&remote.keys.a2c, epoch, RecordKind::Replaced, None)
                        .await
                {
                    tracing::debug!(%error, "session relay: replaced record not written");
                }
            }
            Client::Absent => {}
        }
    }

    /// A client is attached now: the agent is told, the row says Connected.
    async fn client_arrived(&mut self, announce: bool) {
        if announce {
            self.send_to_client(peer_attached()).await;
        }
        if self.agent.is_some() {
            self.send_to_agent(peer_attached()).await;
            self.mark_connected().await;
        }
    }

    async fn local_client_attached(&mut self, end: End, announce: bool) {
        let previous = std::mem::replace(&mut self.client, Client::Local(end));
        self.to_client = None;
        self.replace_client(previous).await;
        // A client here: c2a is not read until it leaves (its records are read then, from
        // where the reader stopped).
        if let Some((reader, _)) = self.remote.as_mut().and_then(|remote| remote.reader.take()) {
            reader.abort();
        }
        tracing::info!(session_id = %self.record.session_id, "client attached");
        self.client_arrived(announce).await;
    }

    async fn agent_attached(&mut self, end: End) {
        if let Err(error) = self
            .shared
            .store
            .mark_attached(&self.record.session_id, &self.shared.replica_id)
            .await
        {
            tracing::warn!(session_id = %self.record.session_id, %error, "recording the agent's attachment failed");
        }
        if let Some(old) = self.agent.replace(end) {
            let _gone = old.outbound.try_send(Err(Status::aborted(
                "the agent attached to the session again",
            )));
        }
        self.to_agent = None;
        self.lost_deadline = None;
        tracing::info!(session_id = %self.record.session_id, "agent attached again");
        if !matches!(self.client, Client::Absent) {
            self.send_to_client(peer_attached()).await;
            self.mark_connected().await;
        }
    }

    /// The agent's stream ended: the session stays open for `hub_lost_after` (the agent may
    /// attach again, here or on another replica).
    fn agent_lost(&mut self) {
        self.agent = None;
        self.to_agent = None;
        let deadline = Instant::now() + self.shared.config.hub_lost_after;
        self.lost_deadline = Some(deadline);
        self.arm(deadline);
        tracing::info!(session_id = %self.record.session_id, "agent stream lost");
    }

    async fn client_detached(&mut self) {
        if matches!(self.client, Client::Absent) {
            return;
        }
        self.client = Client::Absent;
        self.to_client = None;
        tracing::info!(session_id = %self.record.session_id, "client detached");
        if self.agent.is_some()
            && let Err(error) = self
                .shared
                .store
                .mark_disconnected(&self.record.session_id)
                .await
        {
            tracing::warn!(session_id = %self.record.session_id, %error, "marking the session disconnected failed");
        }
        self.resume_reader();
    }

    /// Reads c2a again (after the last record handled) when no client is attached here.
    fn resume_reader(&mut self) {
        if matches!(self.client, Client::Local(_)) {
            return;
        }
        if let Some(remote) = self.remote.as_mut()
            && remote
                .reader
                .as_ref()
                .is_none_or(|(reader, _)| reader.is_finished())
        {
            remote.reader = Some(Relay::spawn_reader(
                &self.shared,
                remote.keys.c2a.clone(),
                remote.last,
            ));
        }
    }

    async fn mark_connected(&self) {
        if let Err(error) = self
            .shared
            .store
            .mark_connected(&self.record.session_id, &self.shared.replica_id)
            .await
        {
            tracing::warn!(session_id = %self.record.session_id, %error, "marking the session connected failed");
        }
    }

    /// To the client, in order after any parked frame; dropped when no client is attached
    /// (the agent keeps it until acknowledged).
    async fn send_to_client(&mut self, frame: Frame) {
        match &mut self.client {
            Client::Absent => {}
            Client::Local(end) => {
                if let Some(parked) = self.to_client.take()
                    && end.outbound.send(Ok(parked)).await.is_err()
                {
                    self.client_detached().await;
                    return;
                }
                match end.outbound.try_send(Ok(frame)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(item)) => self.to_client = item.ok(),
                    Err(TrySendError::Closed(_)) => self.client_detached().await,
                }
            }
            Client::Remote { epoch } => {
                let epoch = *epoch;
                if let (Some(relay), Some(remote)) = (&self.shared.relay, &self.remote)
                    && let Err(error) = relay
                        .append(&remote.keys.a2c, epoch, RecordKind::Frame, Some(&frame))
                        .await
                {
                    tracing::debug!(%error, "session relay: frame to the client dropped");
                }
            }
        }
    }

    /// To the agent, in order after any parked frame; dropped when it is not attached.
    async fn send_to_agent(&mut self, frame: Frame) {
        let Some(end) = &mut self.agent else {
            return;
        };
        if let Some(parked) = self.to_agent.take()
            && end.outbound.send(Ok(parked)).await.is_err()
        {
            self.agent_lost();
            return;
        }
        match end.outbound.try_send(Ok(frame)) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => self.to_agent = item.ok(),
            Err(TrySendError::Closed(_)) => self.agent_lost(),
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.record.idle_timeout;
        (!idle.is_zero()).then(|| self.last_input + idle)
    }

    /// The earliest deadline.
    fn next_check(&self) -> Instant {
        [
            self.idle_deadline(),
            self.max_deadline,
            // After an exit only the exit's deadline counts (see `on_timer`).
            self.lost_deadline.filter(|_| self.exit.is_none()),
            self.exit.map(|(_, _, deadline)| deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + FAR)
    }

    /// Moves the timer earlier when `deadline` comes first.
    fn arm(&mut self, deadline: Instant) {
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
    }

    async fn on_timer(&mut self) -> Option<Finish> {
        let now = Instant::now();
        let minutes = |duration| duties::document_minutes(duration, self.shared.config.time_unit);
        if let Some((_, code, deadline)) = self.exit
            && now >= deadline
        {
            return Some(exit_finish(code));
        }
        if let (Some(deadline), Some(max)) = (self.max_deadline, self.record.max_duration)
            && now >= deadline
        {
            return Some(Finish::End {
                status: SessionStatus::Terminated,
                reason: format!("max session duration ({}m)", minutes(max)),
                exit_code: None,
            });
        }
        if self.idle_deadline().is_some_and(|deadline| now >= deadline) {
            return Some(Finish::End {
                status: SessionStatus::Terminated,
                reason: format!("idle timeout ({}m)", minutes(self.record.idle_timeout)),
                exit_code: None,
            });
        }
        // An agent that exited may drop its stream at once: the exit decides the end.
        if self.exit.is_none() && self.lost_deadline.is_some_and(|deadline| now >= deadline) {
            if let (Some(relay), Some(remote)) = (&self.shared.relay, &self.remote)
                && let Ok(false) = relay.holds_claim(&remote.keys, &remote.claim).await
            {
                return Some(Finish::Moved);
            }
            return Some(Finish::End {
                status: SessionStatus::Failed,
                reason: "agent disconnected".to_owned(),
                exit_code: None,
            });
        }
        let next = self.next_check();
        self.timer.as_mut().reset(next);
        None
    }

    /// Stops the session here: the transcript's last flush, then (when the hub ends the
    /// session) the row, then `Closed` to the ends.
    async fn finish(mut self, finish: Finish, transcript_task: Option<JoinHandle<()>>) {
        if let Some((reader, _)) = self.remote.as_mut().and_then(|remote| remote.reader.take()) {
            reader.abort();
        }
        drop(self.transcript.take());
        if let Some(task) = transcript_task
            && tokio::time::timeout(TRANSCRIPT_FINAL_TIMEOUT, task)
                .await
                .is_err()
        {
            tracing::warn!(session_id = %self.record.session_id, "transcript flush did not finish in time");
        }
        let session_id = self.record.session_id.clone();
        let (bytes_in, bytes_out) = self.counters.load();
        // What the agent and a local client are told last; `None` for the agent: its stream
        // just ends (another hub has it).
        let (for_agent, for_client, closed) = match finish {
            Finish::End {
                status,
                reason,
                exit_code,
            } => {
                tracing::info!(%session_id, status = status.as_str(), %reason, "session ended");
                let end = SessionEnd {
                    status,
                    details: reason.clone(),
                    exit_code,
                    bytes_in,
                    bytes_out,
                };
                if let Err(error) = self.shared.store.end(&session_id, end).await {
                    tracing::warn!(%session_id, %error, "ending the session failed");
                }
                let closed = closed_frame(status, &reason);
                (Some(Ok(closed.clone())), Ok(closed.clone()), Some(closed))
            }
            Finish::Ended(status) => {
                // TerminateSession ended the row; the bytes relayed since the last touch
                // still count.
                if let Err(error) = self
                    .shared
                    .store
                    .touch(&session_id, bytes_in, bytes_out)
                    .await
                {
                    tracing::debug!(%session_id, %error, "final touch failed");
                }
                let details = match self.shared.store.get(&session_id).await {
                    Ok(Some(record)) => record.details,
                    _ => String::new(),
                };
                let closed = closed_frame(status, &ended_reason(status, &details));
                (Some(Ok(closed.clone())), Ok(closed.clone()), Some(closed))
            }
            Finish::Shutdown => (Some(Err(shutting_down())), Err(shutting_down()), None),
            Finish::Moved => {
                tracing::info!(%session_id, "another gateway holds the session now");
                let moved = Status::unavailable("the session moved to another gateway; reconnect");
                (None, Err(moved), None)
            }
        };
        // Every remote reader gets the `Closed`, whatever its epoch.
        if let (Some(closed), Some(relay), Some(remote)) =
            (&closed, &self.shared.relay, &self.remote)
        {
            if let Err(error) = relay
                .append(
                    &remote.keys.a2c,
                    remote.max_epoch,
                    RecordKind::Closed,
                    Some(closed),
                )
                .await
            {
                tracing::debug!(%error, "session relay: closed record not written");
            }
            if let Err(error) = relay.linger(&remote.keys).await {
                tracing::debug!(%error, "session relay: expiring the keys failed");
            }
        }
        let mut agents = Vec::new();
        let mut clients = Vec::new();
        if let Some(agent) = self.agent.take() {
            agents.push((agent.outbound, self.to_agent.take()));
        }
        if let Client::Local(client) = std::mem::replace(&mut self.client, Client::Absent) {
            clients.push((client.outbound, self.to_client.take()));
        }
        // Ends handed over while the hub was finishing get the same last word, rather than
        // a stream that just stops.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                HubCommand::AgentAttached(end) => agents.push((end.outbound, None)),
                HubCommand::ClientAttached { end, .. } => clients.push((end.outbound, None)),
                HubCommand::Ended(_) | HubCommand::Moved => {}
            }
        }
        for (outbound, parked) in agents {
            match &for_agent {
                Some(last) => close_end(outbound, parked, last.clone()).await,
                None => drop(outbound),
            }
        }
        for (outbound, parked) in clients {
            close_end(outbound, parked, for_client.clone()).await;
        }
    }
}

fn exit_finish(code: i32) -> Finish {
    Finish::End {
        status: SessionStatus::Terminated,
        reason: format!("exit status {code}"),
        exit_code: Some(code),
    }
}

/// The parked frame, then `last`, each bounded in time; dropping the sender ends the stream.
async fn close_end(outbound: mpsc::Sender<Outgoing>, parked: Option<Frame>, last: Outgoing) {
    let write = async {
        if let Some(parked) = parked
            && outbound.send(Ok(parked)).await.is_err()
        {
            return;
        }
        let _gone = outbound.send(last).await;
    };
    let _elapsed = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write).await;
}
