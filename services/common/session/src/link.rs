//! One end's state between the code that makes packets and the gRPC stream that carries them:
//! a [`Link`] holds the [`Outgoing`] and [`Incoming`] halves and hands the current stream its
//! frames through [`OutboundFrames`], which *pulls* them: packets are read from the window
//! when the stream can take them, so nothing is copied into a queue and a stalled stream
//! holds no more than the window. Shared by the client ([`crate::client`]) and the agent.
//!
//! Per stream: the opening frames go first; after `Ready` the end sends `Resume{delivered}`;
//! its packets wait ("paused") until the peer's `Resume{received}` says where to start —
//! packets sent before that would only be dropped or repeated. (Should that `Resume` have been
//! lost, the peer's first packet or ack un-pauses the stream from what it acknowledged.) Acks are sent when owed
//! ([`Incoming::ack_due`]) or when the owner's timer reaches [`Link::ack_deadline`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bosun_proto::sessions::v1::frame::Kind;
use bosun_proto::sessions::v1::packet::Body;
use bosun_proto::sessions::v1::{Ack, AttachChallenge, Closed, Frame, Ready, Resume};
use tokio::sync::Notify;

use crate::peer::{Incoming, Outgoing, Received};

/// What a frame from the peer (or the gateway) means to the owner of a [`Link`].
#[derive(Debug)]
pub enum Inbound {
    /// A packet body to act on, in order, exactly once.
    Packet(Body),
    /// The gateway attached this end.
    Ready(Ready),
    /// The gateway's attach challenge (agents only).
    Challenge(AttachChallenge),
    /// The session is over.
    Closed(Closed),
    /// An `Ack` or `Resume` moved the window: a sender waiting for room may go on.
    Acked,
    /// Handled inside (duplicates, `PeerAttached`): nothing to do.
    Nothing,
    /// A frame this end should never get (e.g. `ClientOpen`): its name.
    Unexpected(&'static str),
}

/// The writer gave up: the session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session is closed")]
pub struct LinkClosed;

/// One end of a session's packet flow. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct Link {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken when acks make room in the window, or when the link closes.
    room: Notify,
}

#[derive(Default)]
struct State {
    outgoing: Outgoing,
    incoming: Incoming,
    /// Packets up to here were handed to the current stream; `None`: paused until the peer's
    /// `Resume`.
    cursor: Option<u64>,
    /// Frames that go before anything else (opening frames, `Resume`).
    control: VecDeque<Frame>,
    /// An `Ack` to send, with the seq to acknowledge.
    ack_owed: Option<u64>,
    /// While set, no acks are sent (the owner cannot take more input yet).
    hold_acks: bool,
    /// Whether the current stream got `Ready` (packets and acks flow only after it).
    ready: bool,
    /// Bumped by every new stream: an older [`OutboundFrames`] ends.
    generation: u64,
    waker: Option<Waker>,
    closed: bool,
    /// The `delivered` a gap last asked a `Resume` for (one request per gap).
    gap_resume: Option<u64>,
}

impl State {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn queue_resume(&mut self) {
        let received = self.incoming.delivered();
        self.control
            .push_back(frame(Kind::Resume(Resume { received })));
        self.wake();
    }

    fn owe_ack(&mut self) {
        if let Some(seq) = self.incoming.take_ack() {
            self.ack_owed = Some(seq);
            self.wake();
        }
    }
}

fn frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Link")
            .field("sent", &state.outgoing.last_seq())
            .field("acked", &state.outgoing.acked())
            .field("delivered", &state.incoming.delivered())
            .finish()
    }
}

impl Link {
    /// A link with nothing sent or received.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (no multi-step invariants
        // are broken half-way), so a poisoned lock is still used.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new stream (the previous one, if any, ends): `opening` goes first, then what
    /// the rules allow once `Ready` arrives.
    pub fn open_stream(&self, opening: Vec<Frame>) -> OutboundFrames {
        let mut state = self.state();
        state.generation += 1;
        state.control = opening.into();
        state.cursor = None;
        state.ready = false;
        state.ack_owed = None;
        state.gap_resume = None;
        state.wake();
        OutboundFrames {
            shared: self.shared.clone(),
            generation: state.generation,
        }
    }

    /// Ends the current stream without starting another (a dropped connection).
    pub fn disconnect(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.ready = false;
        state.wake();
    }

    /// Ends stream `generation` if it is still the current one (its reader saw it break).
    pub fn end_stream(&self, generation: u64) {
        let mut state = self.state();
        if state.generation == generation {
            state.generation += 1;
            state.ready = false;
            state.wake();
        }
    }

    /// Sends a handshake frame (e.g. `AttachProof`) on the current stream.
    pub fn send_control(&self, frame: Frame) {
        let mut state = self.state();
        state.control.push_back(frame);
        state.wake();
    }

    /// Takes a frame from the current stream.
    pub fn handle(&self, frame: Frame) -> Inbound {
        let Some(kind) = frame.kind else {
            return Inbound::Nothing;
        };
        let mut state = self.state();
        if state.ready && state.cursor.is_none() && matches!(kind, Kind::Packet(_) | Kind::Ack(_)) {
            // The peer is attached and talking, yet its `Resume` has not come (it was
            // dropped while this end was not yet relayed): start from what it acknowledged.
            // At worst this repeats packets it has, which it drops.
            state.cursor = Some(state.outgoing.acked());
            state.wake();
        }
        match kind {
            Kind::Packet(packet) => match state.incoming.receive(packet, Instant::now()) {
                Received::Deliver(body) => {
                    if state.incoming.ack_due() && !state.hold_acks {
                        state.owe_ack();
                    }
                    Inbound::Packet(body)
                }
                Received::Duplicate => Inbound::Nothing,
                Received::Gap => {
                    // Frames were lost on the way (an end was away): ask for them again,
                    // once per gap.
                    let delivered = state.incoming.delivered();
                    if state.gap_resume != Some(delivered) {
                        state.gap_resume = Some(delivered);
                        state.queue_resume();
                    }
                    Inbound::Nothing
                }
            },
            Kind::Ack(Ack { seq }) => {
                if state.outgoing.ack(seq) {
                    self.shared.room.notify_waiters();
                }
                Inbound::Acked
            }
            Kind::Resume(Resume { received }) => {
                if state.outgoing.ack(received) {
                    self.shared.room.notify_waiters();
                }
                let from = received
                    .max(state.outgoing.acked())
                    .min(state.outgoing.last_seq());
                state.cursor = Some(from);
                state.wake();
                Inbound::Acked
            }
            Kind::PeerAttached(_) => {
                state.queue_resume();
                Inbound::Nothing
            }
            Kind::Ready(ready) => {
                state.ready = true;
                state.queue_resume();
                Inbound::Ready(ready)
            }
            Kind::Challenge(challenge) => Inbound::Challenge(challenge),
            Kind::Closed(closed) => Inbound::Closed(closed),
            Kind::ClientOpen(_) => Inbound::Unexpected("ClientOpen"),
            Kind::AgentOpen(_) => Inbound::Unexpected("AgentOpen"),
            Kind::Proof(_) => Inbound::Unexpected("AttachProof"),
        }
    }

    /// When the owner must call [`Link::flush_ack`] at the latest, if an ack is pending.
    pub fn ack_deadline(&self) -> Option<Instant> {
        let state = self.state();
        if state.hold_acks || !state.ready {
            return None;
        }
        state.incoming.ack_deadline()
    }

    /// Sends an ack for everything delivered, if anything is unacknowledged.
    pub fn flush_ack(&self) {
        let mut state = self.state();
        if !state.hold_acks {
            state.owe_ack();
        }
    }

    /// Holds acks back while the owner cannot take more (its sink is full), so the peer's
    /// window fills and it stops; releasing acknowledges what was delivered.
    pub fn hold_acks(&self, hold: bool) {
        let mut state = self.state();
        if state.hold_acks == hold {
            return;
        }
        state.hold_acks = hold;
        if !hold {
            state.owe_ack();
        }
    }

    /// Whether a packet may be pushed now.
    pub fn has_room(&self) -> bool {
        let state = self.state();
        !state.closed && state.outgoing.has_room()
    }

    /// Pushes a packet if the window has room; `None` if it has not (or the link is closed).
    pub fn try_push(&self, body: Body) -> Option<u64> {
        let mut state = self.state();
        if state.closed || !state.outgoing.has_room() {
            return None;
        }
        let seq = state.outgoing.push(body).seq;
        state.wake();
        Some(seq)
    }

    /// Pushes a packet whatever the window (an end's last packet, e.g. `Exit`).
    pub fn push_anyway(&self, body: Body) -> u64 {
        let mut state = self.state();
        let seq = state.outgoing.push(body).seq;
        state.wake();
        seq
    }

    /// Pushes a packet, waiting while the window is full.
    pub async fn push(&self, body: Body) -> Result<u64, LinkClosed> {
        let mut body = Some(body);
        loop {
            let room = self.shared.room.notified();
            {
                let mut state = self.state();
                if state.closed {
                    return Err(LinkClosed);
                }
                if state.outgoing.has_room() {
                    let Some(body) = body.take() else {
                        return Err(LinkClosed);
                    };
                    let seq = state.outgoing.push(body).seq;
                    state.wake();
                    return Ok(seq);
                }
            }
            room.await;
        }
    }

    /// Waits until the window has room (or the link closes).
    pub async fn room(&self) {
        loop {
            let room = self.shared.room.notified();
            {
                let state = self.state();
                if state.closed || state.outgoing.has_room() {
                    return;
                }
            }
            room.await;
        }
    }

    /// Whether every packet pushed was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.state().outgoing.all_acked()
    }

    /// The last seq delivered from the peer.
    pub fn delivered(&self) -> u64 {
        self.state().incoming.delivered()
    }

    /// Ends the link for good: writers waiting for room get [`LinkClosed`], the current
    /// stream ends.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.generation += 1;
        state.wake();
        self.shared.room.notify_waiters();
    }

    /// Whether [`Link::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }
}

/// The frames of one stream, pulled by tonic as it can send them. Ends when a newer stream
/// is opened, on [`Link::disconnect`] or [`Link::close`].
pub struct OutboundFrames {
    shared: Arc<Shared>,
    generation: u64,
}

impl OutboundFrames {
    /// Which stream this is (for [`Link::end_stream`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl tokio_stream::Stream for OutboundFrames {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.generation != self.generation {
            return Poll::Ready(None);
        }
        if let Some(frame) = state.control.pop_front() {
            return Poll::Ready(Some(frame));
        }
        if state.ready {
            if let Some(seq) = state.ack_owed.take() {
                return Poll::Ready(Some(frame(Kind::Ack(Ack { seq }))));
            }
            if let Some(cursor) = state.cursor
                && let Some(packet) = state.outgoing.next_after(cursor).cloned()
            {
                state.cursor = Some(packet.seq);
                return Poll::Ready(Some(frame(Kind::Packet(packet))));
            }
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bosun_proto::sessions::v1::{Packet, PeerAttached};
    use tokio_stream::{Stream, StreamExt};

    fn kinds(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f.kind.as_ref().unwrap() {
                Kind::Packet(p) => format!("packet {}", p.seq),
                Kind::Ack(a) => format!("ack {}", a.seq),
                Kind::Resume(r) => format!("resume {}", r.received),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// Every frame the stream has ready now.
    fn ready_frames(stream: &mut OutboundFrames) -> Vec<Frame> {
        let mut frames = Vec::new();
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(frame)) = Pin::new(&mut *stream).poll_next(&mut cx) {
            frames.push(frame);
        }
        frames
    }

    fn futures_noop_waker() -> Waker {
        Waker::noop().clone()
    }

    fn ready() -> Frame {
        frame(Kind::Ready(Ready::default()))
    }

    #[test]
    fn packets_wait_for_the_peers_resume_then_flow_from_there() {
        let link = Link::new();
        let mut stream = link.open_stream(vec![frame(Kind::PeerAttached(PeerAttached {}))]);
        link.try_push(Body::Input(b"a".to_vec())).unwrap();
        assert_eq!(
            kinds(&ready_frames(&mut stream)),
            vec!["PeerAttached(PeerAttached)"]
        );
        link.handle(ready());
        assert_eq!(
            kinds(&ready_frames(&mut stream)),
            vec!["resume 0"],
            "paused"
        );
        link.handle(frame(Kind::Resume(Resume { received: 0 })));
        link.try_push(Body::Input(b"b".to_vec())).unwrap();
        assert_eq!(
            kinds(&ready_frames(&mut stream)),
            vec!["packet 1", "packet 2"]
        );
        // A new stream: paused again; the peer has 1, so 2 goes again.
        let mut second = link.open_stream(Vec::new());
        assert!(ready_frames(&mut stream).is_empty(), "the old stream ended");
        link.handle(ready());
        link.handle(frame(Kind::Resume(Resume { received: 1 })));
        assert_eq!(
            kinds(&ready_frames(&mut second)),
            vec!["resume 0", "packet 2"]
        );
    }

    #[test]
    fn a_peer_that_talks_without_resuming_unpauses_the_stream() {
        let link = Link::new();
        let mut stream = link.open_stream(Vec::new());
        link.try_push(Body::Input(b"a".to_vec())).unwrap();
        link.handle(ready());
        assert_eq!(kinds(&ready_frames(&mut stream)), vec!["resume 0"]);
        link.handle(frame(Kind::Packet(Packet {
            seq: 1,
            body: Some(Body::Output(b"x".to_vec())),
        })));
        assert_eq!(kinds(&ready_frames(&mut stream)), vec!["packet 1"]);
    }

    #[tokio::test]
    async fn a_full_window_blocks_the_writer_until_an_ack() {
        let link = Link::new();
        for _ in 0..crate::WINDOW_PACKETS {
            link.try_push(Body::Input(b"x".to_vec())).unwrap();
        }
        assert!(link.try_push(Body::Input(b"x".to_vec())).is_none());
        let writer = tokio::spawn({
            let link = link.clone();
            async move { link.push(Body::Input(b"y".to_vec())).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!writer.is_finished());
        link.handle(frame(Kind::Ack(Ack { seq: 10 })));
        assert_eq!(writer.await.unwrap(), Ok(crate::WINDOW_PACKETS as u64 + 1));
        link.close();
        assert_eq!(link.push(Body::Input(b"z".to_vec())).await, Err(LinkClosed));
    }

    #[test]
    fn acks_are_sent_when_owed_and_a_gap_asks_for_a_resume_once() {
        let link = Link::new();
        let mut stream = link.open_stream(Vec::new());
        link.handle(ready());
        ready_frames(&mut stream);
        let packet = |seq| {
            frame(Kind::Packet(Packet {
                seq,
                body: Some(Body::Output(vec![0])),
            }))
        };
        for seq in 1..crate::ACK_EVERY_PACKETS {
            assert!(matches!(link.handle(packet(seq)), Inbound::Packet(_)));
        }
        assert!(ready_frames(&mut stream).is_empty());
        assert!(link.ack_deadline().is_some());
        link.handle(packet(crate::ACK_EVERY_PACKETS));
        assert_eq!(kinds(&ready_frames(&mut stream)), vec!["ack 32"]);
        assert!(link.ack_deadline().is_none());
        // Packet 33 missing.
        link.handle(packet(34));
        link.handle(packet(35));
        assert_eq!(kinds(&ready_frames(&mut stream)), vec!["resume 32"]);
        link.handle(packet(33));
        link.flush_ack();
        assert_eq!(kinds(&ready_frames(&mut stream)), vec!["ack 33"]);
        // Held acks are not sent, then sent on release.
        link.hold_acks(true);
        link.handle(packet(34));
        link.flush_ack();
        assert!(ready_frames(&mut stream).is_empty());
        link.hold_acks(false);
        assert_eq!(kinds(&ready_frames(&mut stream)), vec!["ack 34"]);
    }

    #[tokio::test]
    async fn the_stream_wakes_when_a_packet_is_pushed() {
        let link = Link::new();
        let mut stream = link.open_stream(Vec::new());
        link.handle(ready());
        link.handle(frame(Kind::Resume(Resume { received: 0 })));
        assert_eq!(kinds(&[stream.next().await.unwrap()]), vec!["resume 0"]);
        let pusher = link.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            pusher.try_push(Body::Input(b"k".to_vec()));
        });
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kinds(&[next]), vec!["packet 1"]);
    }
}
