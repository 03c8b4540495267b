//! The agent's `SessionData.Attach` stream: the handshake (`AgentOpen` → challenge → Ed25519
//! proof → `Ready`), and re-attaching with back-off when the stream breaks without `Closed`
//! (the gateway replica died: another one becomes the hub, and both ends `Resume`).

use std::time::Duration;

use bosun_proto::sessions::v1::frame::Kind;
use bosun_proto::sessions::v1::packet::Body;
use bosun_proto::sessions::v1::session_data_client::SessionDataClient;
use bosun_proto::sessions::v1::{AgentOpen, AttachProof, Closed, Frame, Ready};
use bosun_session::link::{Inbound, Link};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::backoff::{Backoff, BackoffConfig};
use crate::state::Identity;

use super::SessionOptions;

/// What the stream brought.
#[derive(Debug)]
pub(super) enum Event {
    /// A packet from the client, in order, once.
    Packet(Body),
    /// The client acknowledged packets: the window may have room again.
    Acked,
    /// The gateway ended the session.
    Closed(Closed),
    /// The stream broke and could not be re-attached in time (or the gateway refused).
    Lost(String),
}

/// Why an attach attempt failed.
enum AttachError {
    /// The gateway will not take this session (refused, or already over): do not retry.
    Final(String),
    /// Closed by the gateway during the handshake.
    Closed(Closed),
    /// Worth another try.
    Retry(String),
}

/// One session's attachment to its hub.
pub(super) struct Attachment {
    client: SessionDataClient<Channel>,
    identity: Identity,
    session_id: String,
    options: SessionOptions,
    pub link: Link,
    inbound: Option<(tonic::Streaming<Frame>, u64)>,
    /// Set while detached: when the stream was lost, when to try next, the back-off.
    lost_at: Option<Instant>,
    retry_at: Instant,
    backoff: Backoff,
    last_error: String,
}

impl Attachment {
    /// Attaches for the first time (no retries beyond the handshake's own).
    pub async fn open(
        channel: Channel,
        identity: Identity,
        session_id: String,
        options: SessionOptions,
    ) -> Result<(Self, Ready), String> {
        let mut attachment = Self {
            client: SessionDataClient::new(channel),
            identity,
            session_id,
            backoff: Backoff::new(BackoffConfig {
                initial: options.reattach_initial_delay,
                cap: Duration::from_secs(5),
                reset_after: Duration::from_secs(60),
            }),
            options,
            link: Link::new(),
            inbound: None,
            lost_at: None,
            retry_at: Instant::now(),
            last_error: String::new(),
        };
        let give_up_at = Instant::now() + attachment.options.reattach_for;
        loop {
            match attachment.attach().await {
                Ok(ready) => return Ok((attachment, ready)),
                Err(AttachError::Retry(reason)) if Instant::now() < give_up_at => {
                    tracing::warn!(session_id = %attachment.session_id, %reason, "cannot attach yet; retrying");
                    let delay = attachment.backoff.next_delay(None);
                    tokio::time::sleep_until((Instant::now() + delay).min(give_up_at)).await;
                }
                Err(AttachError::Final(reason) | AttachError::Retry(reason)) => return Err(reason),
                Err(AttachError::Closed(closed)) => {
                    return Err(format!(
                        "the gateway closed the session: {} ({})",
                        closed.reason, closed.status
                    ));
                }
            }
        }
    }

    async fn attach(&mut self) -> Result<Ready, AttachError> {
        let outbound = self.link.open_stream(vec![Frame {
            kind: Some(Kind::AgentOpen(AgentOpen {
                session_id: self.session_id.clone(),
                node_id: self.identity.node_id.clone(),
            })),
        }]);
        let generation = outbound.generation();
        let result = self.handshake(outbound).await;
        match result {
            Ok((ready, inbound)) => {
                self.inbound = Some((inbound, generation));
                self.lost_at = None;
                Ok(ready)
            }
            Err(error) => {
                self.link.end_stream(generation);
                Err(error)
            }
        }
    }

    async fn handshake(
        &mut self,
        outbound: bosun_session::link::OutboundFrames,
    ) -> Result<(Ready, tonic::Streaming<Frame>), AttachError> {
        let timeout = self.options.handshake_timeout;
        let mut inbound = tokio::time::timeout(timeout, self.client.attach(outbound))
            .await
            .map_err(|_| AttachError::Retry("the gateway did not answer Attach in time".into()))?
            .map_err(status_error)?
            .into_inner();
        let challenge = match self.next_handshake_frame(&mut inbound).await? {
            Inbound::Challenge(challenge) => challenge,
            other => {
                return Err(AttachError::Final(format!(
                    "attach: expected a challenge, got {other:?}"
                )));
            }
        };
        self.link.send_control(Frame {
            kind: Some(Kind::Proof(AttachProof {
                signature: self
                    .identity
                    .sign_session_attach(&self.session_id, &challenge.nonce),
            })),
        });
        match self.next_handshake_frame(&mut inbound).await? {
            Inbound::Ready(ready) => Ok((ready, inbound)),
            other => Err(AttachError::Final(format!(
                "attach: expected Ready, got {other:?}"
            ))),
        }
    }

    async fn next_handshake_frame(
        &self,
        inbound: &mut tonic::Streaming<Frame>,
    ) -> Result<Inbound, AttachError> {
        let frame = tokio::time::timeout(self.options.handshake_timeout, inbound.message())
            .await
            .map_err(|_| AttachError::Retry("the gateway did not answer the handshake".into()))?
            .map_err(status_error)?
            .ok_or_else(|| AttachError::Retry("the gateway ended the stream".into()))?;
        match self.link.handle(frame) {
            Inbound::Closed(closed) => Err(AttachError::Closed(closed)),
            other => Ok(other),
        }
    }

    /// The next event. Cancel-safe: a re-attach cut short starts again on the next call.
    pub async fn next(&mut self) -> Event {
        loop {
            let Some((inbound, generation)) = &mut self.inbound else {
                if let Some(event) = self.reattach().await {
                    return event;
                }
                continue;
            };
            let deadline = self.link.ack_deadline();
            let message = tokio::select! {
                () = sleep_until(deadline) => {
                    self.link.flush_ack();
                    continue;
                }
                message = inbound.message() => message,
            };
            let reason = match message {
                Ok(Some(frame)) => match self.link.handle(frame) {
                    Inbound::Packet(body) => return Event::Packet(body),
                    Inbound::Acked => return Event::Acked,
                    Inbound::Closed(closed) => return Event::Closed(closed),
                    Inbound::Nothing | Inbound::Ready(_) => continue,
                    Inbound::Challenge(_) | Inbound::Unexpected(_) => {
                        tracing::debug!(session_id = %self.session_id, "ignoring a stray frame");
                        continue;
                    }
                },
                Ok(None) => "the gateway ended the stream without Closed".to_owned(),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            };
            tracing::warn!(session_id = %self.session_id, %reason, "session stream lost; re-attaching");
            let generation = *generation;
            self.link.end_stream(generation);
            self.inbound = None;
            self.lost_at = Some(Instant::now());
            self.retry_at = Instant::now();
            self.last_error = reason;
        }
    }

    /// One re-attach attempt (after its back-off); `Some` when giving up.
    async fn reattach(&mut self) -> Option<Event> {
        let lost_at = *self.lost_at.get_or_insert_with(Instant::now);
        let give_up_at = lost_at + self.options.reattach_for;
        if Instant::now() >= give_up_at {
            return Some(Event::Lost(format!(
                "the session stream was lost and not re-attached in {:?}: {}",
                self.options.reattach_for, self.last_error
            )));
        }
        tokio::time::sleep_until(self.retry_at.min(give_up_at)).await;
        match self.attach().await {
            Ok(_) => {
                tracing::info!(session_id = %self.session_id, "session re-attached");
                self.backoff.reset();
                None
            }
            Err(AttachError::Closed(closed)) => Some(Event::Closed(closed)),
            Err(AttachError::Final(reason)) => Some(Event::Lost(reason)),
            Err(AttachError::Retry(reason)) => {
                self.last_error = reason;
                self.retry_at = Instant::now() + self.backoff.next_delay(None);
                None
            }
        }
    }

    /// Waits (at most `wait`) until the client acknowledged everything sent, or the session
    /// closed. Packets arriving meanwhile are dropped (the session is ending).
    pub async fn drain(&mut self, wait: Duration) -> Option<Closed> {
        let deadline = Instant::now() + wait;
        while !self.link.all_acked() {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return None,
                Ok(Event::Packet(_) | Event::Acked) => {}
                Ok(Event::Closed(closed)) => return Some(closed),
                Ok(Event::Lost(_)) => return None,
            }
        }
        None
    }

    /// Ends the stream (the session is over on this side).
    pub fn close(&mut self) {
        self.link.close();
        self.inbound = None;
    }
}

fn status_error(status: tonic::Status) -> AttachError {
    let message = format!("attach: {:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::NotFound
        | tonic::Code::FailedPrecondition
        | tonic::Code::InvalidArgument
        | tonic::Code::Unimplemented => AttachError::Final(message),
        _ => AttachError::Retry(message),
    }
}

/// Sleeps until `at`, or forever when it is `None`.
pub(super) async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
