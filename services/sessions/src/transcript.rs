//! Session transcripts in the object store, written in parts while the session runs (so a
//! gateway crash loses at most the last few seconds), exported as asciicast v2.
//!
//! Keys: `sessions/<session_id>/transcript/header.json` (the asciicast header line) and
//! `sessions/<session_id>/transcript/<part, 8 digits>.jsonl` (event lines `[t, "o", "…"]`).

use std::sync::Arc;

use bosun_core::ApiError;
use bosun_objects::Objects;

/// Records one session. Owned by the session's hub; `output`/`input`/`resize` buffer in
/// memory, `flush` writes the buffered events as the next part.
pub struct TranscriptWriter {
    objects: Arc<Objects>,
}

impl TranscriptWriter {
    /// Writes the header (`{"version": 2, "width", "height", "timestamp", "env": {"TERM"},
    /// "title": session id}`) at once. A hub that takes over an existing session (the agent
    /// re-attached on another replica) calls `resume` instead.
    pub async fn start(
        objects: Arc<Objects>,
        session_id: &str,
        started_at: chrono::DateTime<chrono::Utc>,
        cols: u16,
        rows: u16,
        term: &str,
    ) -> Result<Self, ApiError> {
        let _ = (session_id, started_at, cols, rows, term);
        Ok(Self { objects })
    }

    /// Continues a transcript after the parts already stored (a new hub for the session).
    pub async fn resume(
        objects: Arc<Objects>,
        session_id: &str,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, ApiError> {
        let _ = (session_id, started_at);
        Ok(Self { objects })
    }

    /// Terminal output at `at` (event time = seconds since `started_at`). Bytes may split a
    /// UTF-8 character; the writer carries the partial character to the next call.
    pub fn output(&mut self, at: chrono::DateTime<chrono::Utc>, bytes: &[u8]) {
        let _ = (&self.objects, at, bytes);
        todo!("H1")
    }

    /// Client input (only called when the session records input).
    pub fn input(&mut self, at: chrono::DateTime<chrono::Utc>, bytes: &[u8]) {
        let _ = (at, bytes);
        todo!("H1")
    }

    /// A resize, as an `"r"` event `"<cols>x<rows>"`.
    pub fn resize(&mut self, at: chrono::DateTime<chrono::Utc>, cols: u16, rows: u16) {
        let _ = (at, cols, rows);
        todo!("H1")
    }

    /// Bytes buffered and not yet flushed.
    pub fn buffered(&self) -> usize {
        todo!("H1")
    }

    /// Writes what is buffered as the next part (nothing when empty).
    pub async fn flush(&mut self) -> Result<(), ApiError> {
        todo!("H1")
    }
}

/// The object key prefix of a session's transcript (also shown as `Session.output_url`).
pub fn transcript_prefix(session_id: &str) -> String {
    format!("sessions/{session_id}/transcript/")
}

/// The whole transcript as asciicast v2 text: the header line then the parts in order.
/// `None` when no header was stored.
pub async fn export_asciicast(
    objects: &Objects,
    session_id: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    let _ = (objects, session_id);
    todo!("H1")
}
