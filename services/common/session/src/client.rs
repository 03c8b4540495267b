//! A client end of a session over `SessionData.Connect` (the CLI, tests, benchmarks).
//!
//! ```text
//! SessionClient::connect(channel, bearer, session_id, token) -> Result<SessionClient, SessionError>
//!   .ready() -> &Ready                 the session's shape (type, port, host)
//!   .session_id() -> &str
//!   .writer() -> SessionWriter         Clone + Send: send from another task while reading here
//!   .send_input(&[u8]) / .resize(cols, rows, Option<&str> term) / .signal(Signal)
//!   .port_open(id) / .port_data(id, &[u8]) / .port_close(id, error)
//!                                      (the same on SessionWriter; all async, wait while the
//!                                       window is full, Err(SessionError::Closed) once over)
//!   .next_event().await -> SessionEvent
//!        Output(Vec<u8>) | PortData{connection_id, data} | PortClose{connection_id, error}
//!        | Exit(i32) | Closed{status, reason} | Disconnected(String)
//!   .reconnect(channel, bearer, token).await -> Result<(), SessionError>
//!                                      after Disconnected, with a token from ResumeSession
//!   .drop_connection()                 test hook: the stream goes, as in a network blip
//! ```
//!
//! Reliability is [`crate::link::Link`]'s: input is numbered and kept until the agent
//! acknowledges it, so what was sent while disconnected (or lost in a blip) goes again after
//! `reconnect`, and what the agent sent meanwhile arrives once, in order. Keep calling
//! [`SessionClient::next_event`]: output waits in a small bounded queue (acknowledged when it
//! enters it), so a client that stops reading stops the agent, not its own memory.

use std::time::Duration;

use bosun_proto::sessions::v1::frame::Kind;
use bosun_proto::sessions::v1::packet::Body;
use bosun_proto::sessions::v1::session_data_client::SessionDataClient;
use bosun_proto::sessions::v1::{
    ClientOpen, Frame, PortClose, PortData, PortOpen, Ready, Signal, TerminalSize,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::MAX_PACKET_DATA;
use crate::link::{Inbound, Link, LinkClosed};

/// How long the gateway may take to answer `ClientOpen` with `Ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Events read from the stream and not yet taken by [`SessionClient::next_event`]: with
/// packets of at most [`MAX_PACKET_DATA`], at most 2 MiB wait here.
const EVENT_QUEUE: usize = 64;

/// What goes wrong on a client end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The gateway refused or failed the call.
    #[error("session stream: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    /// The session is over.
    #[error("the session is closed ({status}: {reason})")]
    Closed { status: String, reason: String },
    /// The gateway broke the protocol.
    #[error("session stream: {0}")]
    Protocol(String),
    /// A value the client was given is unusable (e.g. the bearer token).
    #[error("{0}")]
    InvalidArgument(String),
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// What happened on the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Terminal output.
    Output(Vec<u8>),
    /// Bytes of a forwarded connection.
    PortData { connection_id: u32, data: Vec<u8> },
    /// A forwarded connection closed on the node's side (`error` empty on a normal close).
    PortClose { connection_id: u32, error: String },
    /// The shell or command exited (the session closes next).
    Exit(i32),
    /// The session is over (`Terminated`/`Failed` and why); nothing follows.
    Closed { status: String, reason: String },
    /// The stream broke (or [`SessionClient::drop_connection`]); call
    /// [`SessionClient::reconnect`]. Everything delivered before it was reported.
    Disconnected(String),
}

/// The sending side of a session: cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct SessionWriter {
    link: Link,
    closed: std::sync::Arc<std::sync::Mutex<Option<(String, String)>>>,
}

impl SessionWriter {
    async fn push(&self, body: Body) -> Result<(), SessionError> {
        self.link.push(body).await.map(drop).map_err(|LinkClosed| {
            let closed = self
                .closed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let (status, reason) = closed.unwrap_or_default();
            SessionError::Closed { status, reason }
        })
    }

    /// Sends keystrokes / stdin bytes (split into packets of [`MAX_PACKET_DATA`]).
    pub async fn send_input(&self, bytes: &[u8]) -> Result<(), SessionError> {
        for chunk in bytes.chunks(MAX_PACKET_DATA) {
            self.push(Body::Input(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Sends the terminal's size (and `term`, read by the agent from the first one only).
    pub async fn resize(
        &self,
        cols: u16,
        rows: u16,
        term: Option<&str>,
    ) -> Result<(), SessionError> {
        self.push(Body::Resize(TerminalSize {
            cols: u32::from(cols),
            rows: u32::from(rows),
            term: term.unwrap_or_default().to_owned(),
        }))
        .await
    }

    /// Sends a signal to the remote foreground process group.
    pub async fn signal(&self, signal: Signal) -> Result<(), SessionError> {
        self.push(Body::Signal(signal as i32)).await
    }

    /// Opens forwarded connection `connection_id` (the agent connects to its host:port).
    pub async fn port_open(&self, connection_id: u32) -> Result<(), SessionError> {
        self.push(Body::PortOpen(PortOpen { connection_id })).await
    }

    /// Sends bytes on forwarded connection `connection_id` (split into packets).
    pub async fn port_data(&self, connection_id: u32, data: &[u8]) -> Result<(), SessionError> {
        for chunk in data.chunks(MAX_PACKET_DATA) {
            self.push(Body::PortData(PortData {
                connection_id,
                data: chunk.to_vec(),
            }))
            .await?;
        }
        Ok(())
    }

    /// Closes forwarded connection `connection_id` (`error` empty on a normal close).
    pub async fn port_close(&self, connection_id: u32, error: &str) -> Result<(), SessionError> {
        self.push(Body::PortClose(PortClose {
            connection_id,
            error: error.to_owned(),
        }))
        .await
    }
}

/// What the reader task hands [`SessionClient::next_event`].
enum Queued {
    Event(SessionEvent),
    /// The reader of stream `generation` ended without `Closed`.
    Disconnected {
        generation: u64,
        reason: String,
    },
}

/// A connected client end. See the module documentation for the API.
pub struct SessionClient {
    session_id: String,
    ready: Ready,
    writer: SessionWriter,
    events: mpsc::Receiver<Queued>,
    events_sender: mpsc::Sender<Queued>,
    /// Stops the current stream's reader.
    reader_stop: CancellationToken,
    /// Which stream is current (a stale reader's `Disconnected` is ignored).
    generation: u64,
    /// Set once `Closed` was reported.
    closed: Option<(String, String)>,
}

impl std::fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionClient")
            .field("session_id", &self.session_id)
            .field("link", &self.writer.link)
            .finish()
    }
}

impl SessionClient {
    /// Opens `SessionData.Connect` on `channel` with `authorization: Bearer <bearer>`, sends
    /// `ClientOpen{session_id, token}` and waits for `Ready`.
    pub async fn connect(
        channel: Channel,
        bearer: &str,
        session_id: &str,
        token: &str,
    ) -> Result<Self, SessionError> {
        let (events_sender, events) = mpsc::channel(EVENT_QUEUE);
        let mut client = Self {
            session_id: session_id.to_owned(),
            ready: Ready::default(),
            writer: SessionWriter {
                link: Link::new(),
                closed: Default::default(),
            },
            events,
            events_sender,
            reader_stop: CancellationToken::new(),
            generation: 0,
            closed: None,
        };
        client.open(channel, bearer, token).await?;
        Ok(client)
    }

    /// The gateway's `Ready`: the session's type and, for port sessions, host and port.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// A sender for another task.
    pub fn writer(&self) -> SessionWriter {
        self.writer.clone()
    }

    /// See [`SessionWriter::send_input`].
    pub async fn send_input(&self, bytes: &[u8]) -> Result<(), SessionError> {
        self.writer.send_input(bytes).await
    }

    /// See [`SessionWriter::resize`].
    pub async fn resize(
        &self,
        cols: u16,
        rows: u16,
        term: Option<&str>,
    ) -> Result<(), SessionError> {
        self.writer.resize(cols, rows, term).await
    }

    /// See [`SessionWriter::signal`].
    pub async fn signal(&self, signal: Signal) -> Result<(), SessionError> {
        self.writer.signal(signal).await
    }

    /// See [`SessionWriter::port_open`].
    pub async fn port_open(&self, connection_id: u32) -> Result<(), SessionError> {
        self.writer.port_open(connection_id).await
    }

    /// See [`SessionWriter::port_data`].
    pub async fn port_data(&self, connection_id: u32, data: &[u8]) -> Result<(), SessionError> {
        self.writer.port_data(connection_id, data).await
    }

    /// See [`SessionWriter::port_close`].
    pub async fn port_close(&self, connection_id: u32, error: &str) -> Result<(), SessionError> {
        self.writer.port_close(connection_id, error).await
    }

    /// The next event. After `Closed`, returns `Closed` again.
    pub async fn next_event(&mut self) -> SessionEvent {
        loop {
            if let Some((status, reason)) = &self.closed
                && self.events.is_empty()
            {
                return SessionEvent::Closed {
                    status: status.clone(),
                    reason: reason.clone(),
                };
            }
            // The client holds a sender, so the queue never ends.
            let Some(queued) = self.events.recv().await else {
                return SessionEvent::Disconnected("the session client was dropped".into());
            };
            match queued {
                Queued::Event(SessionEvent::Closed { status, reason }) => {
                    self.closed = Some((status.clone(), reason.clone()));
                    return SessionEvent::Closed { status, reason };
                }
                Queued::Event(event) => return event,
                Queued::Disconnected { generation, reason } => {
                    if generation == self.generation && self.closed.is_none() {
                        return SessionEvent::Disconnected(reason);
                    }
                }
            }
        }
    }

    /// Connects again after [`SessionEvent::Disconnected`], with a new token from
    /// ResumeSession: input the agent has not acknowledged goes again, output it sent
    /// meanwhile arrives, nothing twice.
    pub async fn reconnect(
        &mut self,
        channel: Channel,
        bearer: &str,
        token: &str,
    ) -> Result<(), SessionError> {
        if let Some((status, reason)) = &self.closed {
            return Err(SessionError::Closed {
                status: status.clone(),
                reason: reason.clone(),
            });
        }
        self.reader_stop.cancel();
        self.open(channel, bearer, token).await
    }

    /// Test hook: drops the stream now, as a network blip would; [`Self::next_event`] then
    /// reports `Disconnected` (after what was already delivered).
    pub fn drop_connection(&mut self) {
        self.reader_stop.cancel();
        self.writer.link.disconnect();
    }

    async fn open(
        &mut self,
        channel: Channel,
        bearer: &str,
        token: &str,
    ) -> Result<(), SessionError> {
        self.generation += 1;
        let link = self.writer.link.clone();
        let outbound = link.open_stream(vec![Frame {
            kind: Some(Kind::ClientOpen(ClientOpen {
                session_id: self.session_id.clone(),
                token: token.to_owned(),
            })),
        }]);
        let stream_generation = outbound.generation();
        let mut request = tonic::Request::new(outbound);
        let authorization = format!("Bearer {bearer}").parse().map_err(|_| {
            SessionError::InvalidArgument("the bearer token is not a valid header value".into())
        })?;
        request
            .metadata_mut()
            .insert("authorization", authorization);
        let result = async {
            let mut inbound = SessionDataClient::new(channel)
                .connect(request)
                .await?
                .into_inner();
            let first = tokio::time::timeout(READY_TIMEOUT, inbound.message())
                .await
                .map_err(|_| {
                    SessionError::Protocol("no Ready from the gateway in time".into())
                })??;
            match first.map(|frame| link.handle(frame)) {
                Some(Inbound::Ready(ready)) => Ok((ready, inbound)),
                Some(Inbound::Closed(closed)) => Err(SessionError::Closed {
                    status: closed.status,
                    reason: closed.reason,
                }),
                None => Err(SessionError::Protocol(
                    "the gateway ended the stream before Ready".into(),
                )),
                Some(other) => Err(SessionError::Protocol(format!(
                    "expected Ready, got {other:?}"
                ))),
            }
        }
        .await;
        let (ready, inbound) = match result {
            Ok(opened) => opened,
            Err(error) => {
                link.end_stream(stream_generation);
                return Err(error);
            }
        };
        self.ready = ready;
        self.reader_stop = CancellationToken::new();
        tokio::spawn(read_stream(
            inbound,
            link,
            self.writer.closed.clone(),
            self.events_sender.clone(),
            self.reader_stop.clone(),
            (self.generation, stream_generation),
        ));
        Ok(())
    }
}

impl Drop for SessionClient {
    fn drop(&mut self) {
        self.reader_stop.cancel();
        self.writer.link.disconnect();
    }
}

/// Reads one stream: packets become events (in order, once), acks and resumes go to the
/// link, acks owed by the timer are flushed. Ends at `Closed`, a broken stream or `stop`.
async fn read_stream(
    mut inbound: tonic::Streaming<Frame>,
    link: Link,
    closed: std::sync::Arc<std::sync::Mutex<Option<(String, String)>>>,
    events: mpsc::Sender<Queued>,
    stop: CancellationToken,
    (generation, stream_generation): (u64, u64),
) {
    let reason = loop {
        let deadline = link.ack_deadline();
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break "the connection was dropped".to_owned(),
            () = sleep_until(deadline) => {
                link.flush_ack();
                continue;
            }
            message = inbound.message() => message,
        };
        let frame = match message {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the gateway ended the stream".to_owned(),
            Err(status) => break format!("{:?}: {}", status.code(), status.message()),
        };
        let event = match link.handle(frame) {
            Inbound::Packet(body) => match body {
                Body::Output(data) => SessionEvent::Output(data),
                Body::PortData(port) => SessionEvent::PortData {
                    connection_id: port.connection_id,
                    data: port.data,
                },
                Body::PortClose(port) => SessionEvent::PortClose {
                    connection_id: port.connection_id,
                    error: port.error,
                },
                Body::Exit(exit) => SessionEvent::Exit(exit.code),
                // Client-to-agent bodies: an agent never sends them.
                other => {
                    tracing::debug!(body = ?other, "ignoring a packet meant for the agent");
                    continue;
                }
            },
            Inbound::Closed(frame) => {
                *closed
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some((frame.status.clone(), frame.reason.clone()));
                link.close();
                let _ = events
                    .send(Queued::Event(SessionEvent::Closed {
                        status: frame.status,
                        reason: frame.reason,
                    }))
                    .await;
                return;
            }
            Inbound::Nothing | Inbound::Acked | Inbound::Ready(_) => continue,
            Inbound::Challenge(_) | Inbound::Unexpected(_) => {
                tracing::debug!("ignoring a frame meant for an agent");
                continue;
            }
        };
        // Outside the select: a delivered packet always reaches the queue.
        if events.send(Queued::Event(event)).await.is_err() {
            return;
        }
    };
    link.end_stream(stream_generation);
    let _ = events
        .send(Queued::Disconnected { generation, reason })
        .await;
}

/// Sleeps until `at`, or forever when it is `None`.
pub(crate) async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
