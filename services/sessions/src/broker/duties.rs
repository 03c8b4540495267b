//! A hub's background duties, off the relay's hot path: the periodic touch (liveness, bytes,
//! learning of a TerminateSession, the Redis claim) and the transcript writer (buffered
//! events, flushed as parts every `transcript_flush_interval` or 256 KiB).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::hub::HubCommand;
use crate::transcript::TranscriptWriter;

/// Payload bytes relayed so far, shared by the hub (writer) and its touch task (reader).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Counters {
    pub fn load(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }
}

/// Every `hub_touch_interval` until `stop`: refresh the Redis claim (another hub took over →
/// `Moved`), then `SessionStore::touch` (ended → `Ended`).
pub(super) async fn touch_loop(
    shared: Arc<Shared>,
    session_id: String,
    claim: Option<String>,
    counters: Arc<Counters>,
    commands: mpsc::Sender<HubCommand>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(shared.config.hub_touch_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let (Some(relay), Some(claim)) = (&shared.relay, &claim) {
            let keys = relay.keys(&session_id);
            match relay
                .refresh_claim(&keys, claim, shared.config.hub_lost_after * 2)
                .await
            {
                Ok(true) => {
                    if let Err(error) = relay.keep_alive(&keys).await {
                        tracing::debug!(%error, "session relay: keep-alive failed");
                    }
                }
                Ok(false) => {
                    let _gone = commands.send(HubCommand::Moved).await;
                    return;
                }
                // Redis is down: keep serving what is local; the touch below still runs.
                Err(_) => {}
            }
        }
        let (bytes_in, bytes_out) = counters.load();
        match shared.store.touch(&session_id, bytes_in, bytes_out).await {
            Ok(Some(status)) if status.is_ended() => {
                let _gone = commands.send(HubCommand::Ended(status)).await;
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                // The row is gone (deleted by hand): nothing left to serve.
                let _gone = commands
                    .send(HubCommand::Ended(crate::store::SessionStatus::Failed))
                    .await;
                return;
            }
            Err(error) => tracing::warn!(%session_id, %error, "session touch failed"),
        }
    }
}

/// One transcript event, with the time it happened.
pub(super) enum TranscriptEvent {
    Output(DateTime<Utc>, Vec<u8>),
    Input(DateTime<Utc>, Vec<u8>),
    Resize {
        at: DateTime<Utc>,
        cols: u16,
        rows: u16,
        term: String,
    },
}

/// Events waiting for the transcript task; a full queue makes the hub wait (bounded memory,
/// and a transcript never silently skips output).
pub(super) const TRANSCRIPT_QUEUE: usize = 64;
/// Buffered transcript bytes that trigger a flush before the interval.
const FLUSH_BYTES: usize = 256 << 10;
/// The terminal assumed until the client's first resize says otherwise.
const DEFAULT_COLS: u16 = 80;
const DEFAULT_ROWS: u16 = 24;
const DEFAULT_TERM: &str = "xterm-256color";

/// Owns the session's `TranscriptWriter`. It is created at the first event — with the size
/// and `TERM` of the client's first resize when that comes first — as a new transcript
/// (`start`) or a continuation (`resume`, for a hub taking over a running session). Ends,
/// after a last flush, when the hub drops the sender.
pub(super) async fn transcript_loop(
    shared: Arc<Shared>,
    session_id: String,
    started_at: DateTime<Utc>,
    resume: bool,
    mut events: mpsc::Receiver<TranscriptEvent>,
) {
    let mut writer: Option<TranscriptWriter> = None;
    let mut failed = false;
    let mut interval = tokio::time::interval(shared.config.transcript_flush_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = interval.tick() => {
                if let Some(writer) = writer.as_mut() {
                    flush(writer, &session_id).await;
                }
                continue;
            }
        };
        if failed {
            continue;
        }
        if writer.is_none() {
            let opened = if resume {
                TranscriptWriter::resume(shared.objects.clone(), &session_id, started_at).await
            } else {
                let (cols, rows, term) = match &event {
                    TranscriptEvent::Resize {
                        cols, rows, term, ..
                    } if !term.is_empty() => (*cols, *rows, term.as_str()),
                    TranscriptEvent::Resize { cols, rows, .. } => (*cols, *rows, DEFAULT_TERM),
                    _ => (DEFAULT_COLS, DEFAULT_ROWS, DEFAULT_TERM),
                };
                TranscriptWriter::start(
                    shared.objects.clone(),
                    &session_id,
                    started_at,
                    cols,
                    rows,
                    term,
                )
                .await
            };
            match opened {
                Ok(opened) => writer = Some(opened),
                Err(error) => {
                    // Recording must not break the session; the loss is logged once.
                    tracing::warn!(%session_id, %error, "transcript not recorded");
                    failed = true;
                    continue;
                }
            }
        }
        let Some(writer) = writer.as_mut() else {
            continue;
        };
        match event {
            TranscriptEvent::Output(at, bytes) => writer.output(at, &bytes),
            TranscriptEvent::Input(at, bytes) => writer.input(at, &bytes),
            TranscriptEvent::Resize { at, cols, rows, .. } => writer.resize(at, cols, rows),
        }
        if writer.buffered() >= FLUSH_BYTES {
            flush(writer, &session_id).await;
        }
    }
    if let Some(writer) = writer.as_mut() {
        flush(writer, &session_id).await;
    }
}

async fn flush(writer: &mut TranscriptWriter, session_id: &str) {
    if writer.buffered() == 0 {
        return;
    }
    if let Err(error) = writer.flush().await {
        tracing::warn!(%session_id, %error, "transcript flush failed");
    }
}

/// `n` in the document's minutes, for the end's reason (`idle timeout (20m)`).
pub(super) fn document_minutes(duration: Duration, time_unit: Duration) -> u64 {
    if time_unit.is_zero() {
        return 0;
    }
    let minutes = duration.as_secs_f64() / time_unit.as_secs_f64();
    // Whole minutes by construction (`SessionsConfig::minutes`); round away float noise.
    minutes.round() as u64
}
