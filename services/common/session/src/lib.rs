//! The ends of a Session Manager data stream (`bosun.sessions.v1.SessionData`), shared by the
//! agent and by clients (the CLI, tests, benchmarks), and the JSON of the `sessions.*` node
//! messages the sessions service sends to agents.
//!
//! - [`wire`]: `sessions.start` / `sessions.terminate` payloads and the agent's `SessionResult`.
//! - [`peer`]: [`peer::Outgoing`] (numbering, the unacknowledged window, re-sending after a
//!   `Resume`) and [`peer::Incoming`] (in-order delivery, duplicates dropped, when to ack).
//! - [`link`]: [`link::Link`], one end's halves and the frames of its current stream.
//! - [`client`]: a client end over `SessionData.Connect`, with reconnect/resume.

pub mod client;
pub mod link;
pub mod peer;
pub mod wire;

/// A sender keeps at most this many unacknowledged packets in flight...
pub const WINDOW_PACKETS: usize = 256;
/// ...and at most this many payload bytes.
pub const WINDOW_BYTES: usize = 8 << 20;
/// A receiver acknowledges at least every this many packets...
pub const ACK_EVERY_PACKETS: u64 = 32;
/// ...or this many payload bytes...
pub const ACK_EVERY_BYTES: usize = 1 << 20;
/// ...and within this long of the last packet it has not acknowledged.
pub const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(20);
/// The most payload bytes one packet carries (larger reads are split).
pub const MAX_PACKET_DATA: usize = 32 << 10;

/// The bytes the agent signs to attach to a session (see `sessions.proto`).
pub fn attach_message(session_id: &str, node_id: &str, nonce: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + session_id.len() + node_id.len() + nonce.len());
    message.extend_from_slice(b"bosun-session-attach-v1\n");
    message.extend_from_slice(session_id.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(node_id.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce);
    message
}
