//! Session transcripts in the object store, written in parts while the session runs (so a
//! gateway crash loses at most the last few seconds), exported as asciicast v2.
//!
//! Keys: `sessions/<session_id>/transcript/header.json` (the asciicast header line) and
//! `sessions/<session_id>/transcript/<part, 8 digits>.jsonl` (event lines `[t, "o", "…"]`).
//!
//! Event text is UTF-8: bytes that split a character are carried to the next call, bytes
//! that can never be UTF-8 become U+FFFD. One event holds at most [`MAX_EVENT_TEXT`] bytes
//! of text, so a line stays well under 64 KiB even when every character needs escaping.

use std::sync::Arc;

use bosun_core::ApiError;
use bosun_objects::{Objects, ObjectsError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Most text bytes in one event (longer output is split into several events).
pub const MAX_EVENT_TEXT: usize = 8 * 1024;
/// The header `resume` writes when the first hub never wrote one (it died at once).
const DEFAULT_COLS: u16 = 80;
const DEFAULT_ROWS: u16 = 24;
const DEFAULT_TERM: &str = "xterm-256color";
const HEADER: &str = "header.json";
const PART_SUFFIX: &str = ".jsonl";

/// The asciicast v2 header line, fields in the order the format lists them.
#[derive(Serialize)]
struct Header<'a> {
    version: u8,
    width: u16,
    height: u16,
    timestamp: i64,
    env: Env<'a>,
    title: &'a str,
}

#[derive(Serialize)]
struct Env<'a> {
    #[serde(rename = "TERM")]
    term: &'a str,
}

/// Records one session. Owned by the session's hub; `output`/`input`/`resize` buffer in
/// memory, `flush` writes the buffered events as the next part.
pub struct TranscriptWriter {
    objects: Arc<Objects>,
    session_id: String,
    started_at: DateTime<Utc>,
    /// The number of the next part to write.
    next_part: u32,
    /// Event lines not yet written.
    buffer: Vec<u8>,
    /// The start of a UTF-8 character split across calls, per direction.
    output_carry: Vec<u8>,
    input_carry: Vec<u8>,
    /// Event times never go backwards (players expect them ordered).
    last_time: f64,
}

impl std::fmt::Debug for TranscriptWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptWriter")
            .field("session_id", &self.session_id)
            .field("next_part", &self.next_part)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

fn storage_error(error: ObjectsError) -> ApiError {
    ApiError::internal(format!("session transcript: {error}"))
}

fn header_key(session_id: &str) -> String {
    format!("{}{HEADER}", transcript_prefix(session_id))
}

fn part_key(session_id: &str, part: u32) -> String {
    format!("{}{part:08}{PART_SUFFIX}", transcript_prefix(session_id))
}

/// The part number of a listed key of the session's transcript, if it is a part.
fn part_number(prefix: &str, key: &str) -> Option<u32> {
    let stem = key.strip_prefix(prefix)?.strip_suffix(PART_SUFFIX)?;
    if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn header_line(
    session_id: &str,
    started_at: DateTime<Utc>,
    cols: u16,
    rows: u16,
    term: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut line = serde_json::to_vec(&Header {
        version: 2,
        width: cols,
        height: rows,
        timestamp: started_at.timestamp(),
        env: Env { term },
        title: session_id,
    })
    .map_err(ApiError::internal)?;
    line.push(b'\n');
    Ok(line)
}

/// Decodes `bytes` after what `carry` holds: complete characters out, an incomplete last
/// character kept in `carry`, invalid bytes as U+FFFD.
fn decode(carry: &mut Vec<u8>, bytes: &[u8]) -> String {
    carry.extend_from_slice(bytes);
    let mut text = String::with_capacity(carry.len());
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                rest = &[];
                break;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                text.push_str(&String::from_utf8_lossy(valid));
                match error.error_len() {
                    Some(length) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[length..];
                    }
                    // Incomplete at the end: the rest of the character comes next call.
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let kept = rest.to_vec();
    *carry = kept;
    text
}

/// Splits `text` into pieces of at most `MAX_EVENT_TEXT` bytes, on character boundaries.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_EVENT_TEXT {
        let mut cut = MAX_EVENT_TEXT;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
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
        let line = header_line(session_id, started_at, cols, rows, term)?;
        objects
            .put(&header_key(session_id), Bytes::from(line))
            .await
            .map_err(storage_error)?;
        Ok(Self::new(objects, session_id, started_at, 0))
    }

    /// Continues a transcript after the parts already stored (a new hub for the session).
    /// Writes a default header (80×24) when none was stored, so what follows is exportable.
    pub async fn resume(
        objects: Arc<Objects>,
        session_id: &str,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, ApiError> {
        let prefix = transcript_prefix(session_id);
        let listed = objects.list(&prefix).await.map_err(storage_error)?;
        let has_header = listed.iter().any(|meta| meta.key == header_key(session_id));
        let next_part = listed
            .iter()
            .filter_map(|meta| part_number(&prefix, &meta.key))
            .max()
            .map_or(0, |last| last.saturating_add(1));
        if !has_header {
            let line = header_line(
                session_id,
                started_at,
                DEFAULT_COLS,
                DEFAULT_ROWS,
                DEFAULT_TERM,
            )?;
            objects
                .put(&header_key(session_id), Bytes::from(line))
                .await
                .map_err(storage_error)?;
        }
        Ok(Self::new(objects, session_id, started_at, next_part))
    }

    fn new(
        objects: Arc<Objects>,
        session_id: &str,
        started_at: DateTime<Utc>,
        next_part: u32,
    ) -> Self {
        Self {
            objects,
            session_id: session_id.to_owned(),
            started_at,
            next_part,
            buffer: Vec::new(),
            output_carry: Vec::new(),
            input_carry: Vec::new(),
            last_time: 0.0,
        }
    }

    /// Seconds since the start, to the microsecond, never before the previous event.
    fn time(&mut self, at: DateTime<Utc>) -> f64 {
        let micros = (at - self.started_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        // Microseconds fit an f64 exactly for centuries of session time.
        #[allow(clippy::cast_precision_loss)]
        let seconds = micros as f64 / 1_000_000.0;
        self.last_time = self.last_time.max(seconds);
        self.last_time
    }

    fn event(&mut self, time: f64, kind: &str, text: &str) {
        if let Ok(mut line) = serde_json::to_vec(&(time, kind, text)) {
            line.push(b'\n');
            self.buffer.extend_from_slice(&line);
        }
    }

    fn text_events(&mut self, at: DateTime<Utc>, kind: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        let time = self.time(at);
        for piece in pieces(text) {
            self.event(time, kind, piece);
        }
    }

    /// Terminal output at `at` (event time = seconds since `started_at`). Bytes may split a
    /// UTF-8 character; the writer carries the partial character to the next call.
    pub fn output(&mut self, at: chrono::DateTime<chrono::Utc>, bytes: &[u8]) {
        let text = decode(&mut self.output_carry, bytes);
        self.text_events(at, "o", &text);
    }

    /// Client input (only called when the session records input).
    pub fn input(&mut self, at: chrono::DateTime<chrono::Utc>, bytes: &[u8]) {
        let text = decode(&mut self.input_carry, bytes);
        self.text_events(at, "i", &text);
    }

    /// A resize, as an `"r"` event `"<cols>x<rows>"`.
    pub fn resize(&mut self, at: chrono::DateTime<chrono::Utc>, cols: u16, rows: u16) {
        let time = self.time(at);
        self.event(time, "r", &format!("{cols}x{rows}"));
    }

    /// Bytes buffered and not yet flushed.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Writes what is buffered as the next part (nothing when empty). On failure the events
    /// stay buffered for the next flush.
    pub async fn flush(&mut self) -> Result<(), ApiError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let key = part_key(&self.session_id, self.next_part);
        self.objects
            .put(&key, Bytes::copy_from_slice(&self.buffer))
            .await
            .map_err(storage_error)?;
        self.buffer.clear();
        self.next_part = self.next_part.saturating_add(1);
        Ok(())
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
    let mut out = match objects.get(&header_key(session_id)).await {
        Ok(header) => header.to_vec(),
        Err(ObjectsError::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(storage_error(error)),
    };
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let prefix = transcript_prefix(session_id);
    let mut parts: Vec<(u32, String)> = objects
        .list(&prefix)
        .await
        .map_err(storage_error)?
        .into_iter()
        .filter_map(|meta| part_number(&prefix, &meta.key).map(|number| (number, meta.key)))
        .collect();
    parts.sort();
    for (_, key) in parts {
        match objects.get(&key).await {
            Ok(part) => out.extend_from_slice(&part),
            // Listed then gone: nothing deletes parts, but a store may list stale entries.
            Err(ObjectsError::NotFound { .. }) => {}
            Err(error) => return Err(storage_error(error)),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_carries_split_characters_and_replaces_invalid_bytes() {
        let mut carry = Vec::new();
        let euro = "€".as_bytes();
        assert_eq!(decode(&mut carry, &euro[..1]), "");
        assert_eq!(decode(&mut carry, &euro[1..2]), "");
        assert_eq!(decode(&mut carry, &[euro[2], b'x']), "€x");
        assert!(carry.is_empty());
        assert_eq!(decode(&mut carry, b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decode(&mut carry, b"\xe2\x82"), "");
        assert_eq!(carry.len(), 2);
        // A character that can never complete: replaced once the next byte shows it.
        assert_eq!(decode(&mut carry, b"z"), "\u{fffd}z");
    }

    #[test]
    fn long_text_splits_on_character_boundaries() {
        let text = "é".repeat(MAX_EVENT_TEXT);
        let split = pieces(&text);
        assert!(split.iter().all(|piece| piece.len() <= MAX_EVENT_TEXT));
        assert_eq!(split.concat(), text);
    }

    #[test]
    fn part_names_parse() {
        let prefix = transcript_prefix("s-1");
        assert_eq!(
            part_number(&prefix, "sessions/s-1/transcript/00000012.jsonl"),
            Some(12)
        );
        assert_eq!(
            part_number(&prefix, "sessions/s-1/transcript/header.json"),
            None
        );
        assert_eq!(
            part_number(&prefix, "sessions/s-1/transcript/12.jsonl"),
            None
        );
    }
}
