//! The one error type of the queue crate, the same for every backend so callers can match on
//! it without knowing which implementation they hold.

use std::fmt;

/// What kind of name was rejected by [`QueueError::InvalidName`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A stream name.
    Stream,
    /// A consumer group name.
    Group,
    /// A consumer name.
    Consumer,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stream => "stream",
            Self::Group => "group",
            Self::Consumer => "consumer",
        })
    }
}

/// Why a queue operation failed.
#[derive(thiserror::Error, Debug)]
pub enum QueueError {
    /// A stream, group or consumer name broke the naming rules; the caller's fault, not retryable.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        kind: NameKind,
        name: String,
        reason: &'static str,
    },

    /// An id passed to `ack` is not a message id of the form `<ms>-<seq>`.
    #[error("stream {stream}: invalid message id {id:?}")]
    InvalidId { stream: String, id: String },

    /// The group was never created with `ensure_group`.
    #[error("stream {stream}: consumer group {group} does not exist")]
    GroupNotFound { stream: String, group: String },

    /// Could not reach the backend at start-up. The URL is left out: it may hold a password.
    #[error("connecting to redis failed: {0}")]
    Connect(String),

    /// The backend failed while working on a stream; usually transient, worth a retry.
    #[error("stream {stream}: {operation} failed: {message}")]
    Backend {
        stream: String,
        operation: &'static str,
        message: String,
    },
}
