//! End-to-end reliability of one direction of a session, as `sessions.proto` describes it:
//! [`Outgoing`] numbers packets, keeps them until acknowledged and limits what is in flight;
//! [`Incoming`] delivers in order, drops duplicates and gaps, and says when to acknowledge.
//! Both are plain data (no I/O, no clock of their own) so the rules are tested here.

use std::collections::VecDeque;
use std::time::Instant;

use bosun_proto::sessions::v1::Packet;
use bosun_proto::sessions::v1::packet::Body;

use crate::{ACK_DELAY, ACK_EVERY_BYTES, ACK_EVERY_PACKETS, WINDOW_BYTES, WINDOW_PACKETS};

/// The payload bytes of a packet body: what windows and ack thresholds count.
pub fn payload_len(body: &Body) -> usize {
    match body {
        Body::Input(data) | Body::Output(data) => data.len(),
        Body::PortData(port) => port.data.len(),
        Body::Resize(_) | Body::Signal(_) | Body::PortOpen(_) | Body::Exit(_) => 0,
        Body::PortClose(close) => close.error.len(),
    }
}

/// The sending half: packets numbered from 1, kept until acknowledged.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The seq of the last packet pushed.
    last: u64,
    /// Every packet up to here is acknowledged (and forgotten).
    acked: u64,
    /// Packets `acked + 1 ..= last`, in order.
    unacked: VecDeque<Packet>,
    /// Their payload bytes.
    bytes: usize,
}

impl Outgoing {
    /// Nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a packet may be pushed: fewer than [`WINDOW_PACKETS`] unacknowledged and fewer
    /// than [`WINDOW_BYTES`] payload bytes (a packet may take the bytes past the limit).
    pub fn has_room(&self) -> bool {
        self.unacked.len() < WINDOW_PACKETS && self.bytes < WINDOW_BYTES
    }

    /// Numbers `body` and keeps it until acknowledged. The caller checks [`Self::has_room`]
    /// first; pushing without room still works (the window is a promise, not a wall), which
    /// lets an end push its last packet (`Exit`) whatever the window.
    pub fn push(&mut self, body: Body) -> &Packet {
        self.last += 1;
        self.bytes += payload_len(&body);
        self.unacked.push_back(Packet {
            seq: self.last,
            body: Some(body),
        });
        // Just pushed.
        &self.unacked[self.unacked.len() - 1]
    }

    /// Forgets every packet up to `seq` (a cumulative acknowledgement). Returns whether room
    /// was made. An ack beyond what was sent is taken as acknowledging everything sent.
    pub fn ack(&mut self, seq: u64) -> bool {
        let seq = seq.min(self.last);
        if seq <= self.acked {
            return false;
        }
        while self.unacked.front().is_some_and(|packet| packet.seq <= seq) {
            if let Some(packet) = self.unacked.pop_front() {
                self.bytes -= packet.body.as_ref().map_or(0, payload_len);
            }
        }
        self.acked = seq;
        true
    }

    /// After a `Resume{received}`: forgets what the peer has and returns the rest, in order,
    /// to send again.
    pub fn resend_after(&mut self, received: u64) -> Vec<Packet> {
        self.ack(received);
        self.unacked.iter().cloned().collect()
    }

    /// The first kept packet numbered after `seq`, if any (what a sender whose cursor is at
    /// `seq` sends next).
    pub fn next_after(&self, seq: u64) -> Option<&Packet> {
        let first = self.acked + 1;
        let index = seq.saturating_add(1).max(first) - first;
        self.unacked.get(usize::try_from(index).ok()?)
    }

    /// The seq of the last packet pushed (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// Every packet up to this one is acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Unacknowledged packets.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Their payload bytes.
    pub fn unacked_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether every packet pushed was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.unacked.is_empty()
    }
}

/// What [`Incoming::receive`] made of a packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next packet in order: hand it to the application.
    Deliver(Body),
    /// Already delivered (a re-send after a `Resume`): dropped.
    Duplicate,
    /// A packet after a missing one (frames were dropped while an end was away): dropped; it
    /// comes again after a `Resume{received: delivered}`.
    Gap,
}

/// The receiving half: in-order delivery and acknowledgements.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Every packet up to here was delivered.
    delivered: u64,
    /// The last seq acknowledged to the sender.
    acked: u64,
    /// Delivered and not yet acknowledged: payload bytes...
    unacked_bytes: usize,
    /// ...and since when.
    unacked_since: Option<Instant>,
}

impl Incoming {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last seq delivered in order (what `Resume{received}` says).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Takes a packet arriving at `now`.
    pub fn receive(&mut self, packet: Packet, now: Instant) -> Received {
        if packet.seq <= self.delivered {
            return Received::Duplicate;
        }
        if packet.seq > self.delivered + 1 {
            return Received::Gap;
        }
        let Some(body) = packet.body else {
            // An empty packet still takes its number (a newer peer's body this end does not
            // know): delivered as nothing, acknowledged like any other.
            self.delivered = packet.seq;
            self.unacked_since.get_or_insert(now);
            return Received::Duplicate;
        };
        self.delivered = packet.seq;
        self.unacked_bytes += payload_len(&body);
        self.unacked_since.get_or_insert(now);
        Received::Deliver(body)
    }

    /// Whether an ack is owed at once: [`ACK_EVERY_PACKETS`] or [`ACK_EVERY_BYTES`] delivered
    /// since the last.
    pub fn ack_due(&self) -> bool {
        self.delivered - self.acked >= ACK_EVERY_PACKETS || self.unacked_bytes >= ACK_EVERY_BYTES
    }

    /// When an ack is owed at the latest ([`ACK_DELAY`] after the oldest unacknowledged
    /// delivery), if one is.
    pub fn ack_deadline(&self) -> Option<Instant> {
        self.unacked_since.map(|since| since + ACK_DELAY)
    }

    /// The seq to acknowledge now, if anything is unacknowledged; resets the counters.
    pub fn take_ack(&mut self) -> Option<u64> {
        if self.delivered == self.acked {
            return None;
        }
        self.acked = self.delivered;
        self.unacked_bytes = 0;
        self.unacked_since = None;
        Some(self.acked)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bosun_proto::sessions::v1::{Exit, PortData};

    fn output(data: &[u8]) -> Body {
        Body::Output(data.to_vec())
    }

    fn packet(seq: u64, data: &[u8]) -> Packet {
        Packet {
            seq,
            body: Some(output(data)),
        }
    }

    #[test]
    fn packets_are_numbered_from_one_and_kept_until_acknowledged() {
        let mut out = Outgoing::new();
        assert_eq!(out.push(output(b"a")).seq, 1);
        assert_eq!(out.push(output(b"bc")).seq, 2);
        assert_eq!(out.push(output(b"def")).seq, 3);
        assert_eq!((out.unacked_len(), out.unacked_bytes()), (3, 6));
        assert!(out.ack(2));
        assert_eq!((out.unacked_len(), out.unacked_bytes()), (1, 3));
        assert!(!out.ack(1), "an older ack changes nothing");
        assert!(!out.ack(2));
        assert!(
            out.ack(99),
            "an ack past the end acknowledges everything sent"
        );
        assert!(out.all_acked());
        assert_eq!(out.acked(), 3);
        assert_eq!(out.push(output(b"g")).seq, 4, "numbering goes on");
    }

    #[test]
    fn the_window_closes_at_its_packet_limit_and_reopens_on_ack() {
        let mut out = Outgoing::new();
        for _ in 0..WINDOW_PACKETS {
            assert!(out.has_room());
            out.push(output(b"x"));
        }
        assert!(!out.has_room());
        out.ack(1);
        assert!(out.has_room());
    }

    #[test]
    fn the_window_closes_at_its_byte_limit() {
        let mut out = Outgoing::new();
        // Larger than real packets, so the byte limit comes before the packet limit.
        let big = vec![0u8; 4 * crate::MAX_PACKET_DATA];
        let mut pushed = 0;
        while out.has_room() {
            out.push(Body::PortData(PortData {
                connection_id: 1,
                data: big.clone(),
            }));
            pushed += 1;
        }
        assert_eq!(pushed, WINDOW_BYTES / (4 * crate::MAX_PACKET_DATA));
        assert!(out.unacked_len() < WINDOW_PACKETS);
        out.ack(1);
        assert!(out.has_room());
        // The last packet goes whatever the window.
        out.push(Body::Exit(Exit { code: 0 }));
        assert_eq!(out.last_seq(), pushed as u64 + 1);
    }

    #[test]
    fn resume_drops_what_the_peer_has_and_returns_the_rest_in_order() {
        let mut out = Outgoing::new();
        for data in [b"a", b"b", b"c", b"d"] {
            out.push(output(data));
        }
        out.ack(1);
        let again = out.resend_after(2);
        assert_eq!(again.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(out.acked(), 2);
        assert_eq!(
            out.resend_after(0).len(),
            2,
            "a stale resume re-sends what is kept"
        );
        assert!(out.resend_after(4).is_empty());
    }

    #[test]
    fn next_after_walks_the_kept_packets() {
        let mut out = Outgoing::new();
        for data in [b"a", b"b", b"c"] {
            out.push(output(data));
        }
        out.ack(1);
        assert_eq!(
            out.next_after(0).unwrap().seq,
            2,
            "acknowledged ones are gone"
        );
        assert_eq!(out.next_after(2).unwrap().seq, 3);
        assert!(out.next_after(3).is_none());
        assert!(out.next_after(u64::MAX).is_none());
    }

    #[test]
    fn delivery_is_in_order_without_duplicates_or_gaps() {
        let now = Instant::now();
        let mut inc = Incoming::new();
        assert_eq!(
            inc.receive(packet(1, b"a"), now),
            Received::Deliver(output(b"a"))
        );
        assert_eq!(inc.receive(packet(1, b"a"), now), Received::Duplicate);
        assert_eq!(inc.receive(packet(3, b"c"), now), Received::Gap);
        assert_eq!(inc.delivered(), 1, "a gap is not delivered");
        assert_eq!(
            inc.receive(packet(2, b"b"), now),
            Received::Deliver(output(b"b"))
        );
        assert_eq!(
            inc.receive(packet(3, b"c"), now),
            Received::Deliver(output(b"c"))
        );
        assert_eq!(inc.receive(packet(2, b"b"), now), Received::Duplicate);
        assert_eq!(inc.delivered(), 3);
    }

    #[test]
    fn a_sender_and_a_receiver_lose_and_repeat_nothing_across_a_resume() {
        // The link drops packets 3..=5 (an end was away); the receiver resumes from 2.
        let now = Instant::now();
        let mut out = Outgoing::new();
        let mut inc = Incoming::new();
        let mut got = Vec::new();
        for i in 1..=8u8 {
            let packet = out.push(output(&[i])).clone();
            if (3..=5).contains(&i) {
                continue;
            }
            if let Received::Deliver(Body::Output(data)) = inc.receive(packet, now) {
                got.extend(data);
            }
        }
        assert_eq!(got, vec![1, 2]);
        for packet in out.resend_after(inc.delivered()) {
            if let Received::Deliver(Body::Output(data)) = inc.receive(packet, now) {
                got.extend(data);
            }
        }
        assert_eq!(got, (1..=8).collect::<Vec<u8>>());
        // A second resume (both ends re-attached) repeats nothing.
        for packet in out.resend_after(inc.delivered()) {
            assert_ne!(inc.receive(packet, now), Received::Deliver(output(b"")));
        }
        assert_eq!(inc.take_ack(), Some(8));
        out.ack(8);
        assert!(out.all_acked());
    }

    #[test]
    fn acks_are_owed_every_32_packets_or_1_mib_or_after_the_delay() {
        let start = Instant::now();
        let mut inc = Incoming::new();
        assert_eq!(inc.ack_deadline(), None);
        assert_eq!(inc.take_ack(), None);
        for seq in 1..ACK_EVERY_PACKETS {
            inc.receive(packet(seq, b"x"), start);
            assert!(!inc.ack_due());
        }
        assert_eq!(inc.ack_deadline(), Some(start + ACK_DELAY));
        inc.receive(packet(ACK_EVERY_PACKETS, b"x"), start);
        assert!(inc.ack_due());
        assert_eq!(inc.take_ack(), Some(ACK_EVERY_PACKETS));
        assert!(!inc.ack_due());
        assert_eq!(inc.ack_deadline(), None);

        let big = vec![0u8; ACK_EVERY_BYTES];
        inc.receive(packet(ACK_EVERY_PACKETS + 1, &big), start);
        assert!(inc.ack_due(), "a megabyte is owed an ack at once");
        assert_eq!(inc.take_ack(), Some(ACK_EVERY_PACKETS + 1));
    }
}
