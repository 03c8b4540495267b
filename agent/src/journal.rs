//! The journal that makes deliveries run once: ids of deliveries seen, markers of runs in
//! progress, and results not yet acknowledged. [`FileJournal`] keeps it in the state directory;
//! [`MemoryJournal`] in memory (tests, and the fleet simulator's many agents in one process).
//!
//! The calls are synchronous: an fsync takes milliseconds and the agent does a few per delivery,
//! far below its heartbeat interval, so a blocking call on the agent's one thread is cheaper
//! than a thread pool.
//!
//! Results wait in the outbox in the order stored. The agent walks them with
//! [`Journal::pending_after`] (an index without payloads) and reads each with
//! [`Journal::load_result`] only when it sends it, so the results a long-unreachable control
//! plane leaves unacknowledged cost disk, not memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bosun_proto::agent::v1::{Delivery, Result as AgentResult};
use prost::Message;

use crate::AgentError;
use crate::state::{create_private_dir, write_atomically};

/// How much of the history of delivery ids is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// Ids older than this are forgotten (deliveries expire well before).
    pub retention: Duration,
    /// At most this many ids are kept, newest first.
    pub max_entries: usize,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_entries: 100_000,
        }
    }
}

/// A result waiting for its acknowledgement, as the outbox indexes it (without its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingResult {
    /// Its place in the outbox: results are sent in increasing sequence.
    pub sequence: u64,
    /// `Result.result_id`, what the server acknowledges.
    pub result_id: String,
    /// The size of the encoded `Result`, bytes.
    pub size: usize,
    /// Whether it is the final result of its delivery.
    pub final_result: bool,
}

/// Durable bookkeeping of deliveries and results. Every method returns only once what it
/// records would survive a crash (for a durable implementation).
pub trait Journal: Send + Sync + 'static {
    /// Records a delivery before it is acknowledged, with a marker that it is running.
    /// Returns `false` if its `message_id` was recorded before: the caller acknowledges it
    /// again and does not run it.
    fn record_delivery(&self, delivery: &Delivery) -> Result<bool, AgentError>;

    /// Stores a result until it is acknowledged. A `final_result` also ends its delivery's run
    /// (`result.message_id`): its marker is removed after the result is stored.
    fn store_result(&self, result: &AgentResult, final_result: bool) -> Result<(), AgentError>;

    /// Forgets an acknowledged result. Unknown ids are ignored.
    fn remove_result(&self, result_id: &str) -> Result<(), AgentError>;

    /// Up to `limit` results not yet acknowledged, stored after the one at sequence `after`
    /// (from the oldest when `None`), oldest first; an index, without payloads.
    fn pending_after(&self, after: Option<u64>, limit: usize) -> Vec<PendingResult>;

    /// The result stored at `sequence`, read from where it is kept; `None` once it was
    /// removed (or found unreadable, and dropped).
    fn load_result(&self, sequence: u64) -> Result<Option<AgentResult>, AgentError>;

    /// How many results are not yet acknowledged.
    fn pending_count(&self) -> usize;

    /// Results not yet acknowledged, oldest first, with their payloads. This reads them all:
    /// for tests and tools; the agent sends with [`Journal::pending_after`] and
    /// [`Journal::load_result`], a few at a time.
    fn pending_results(&self) -> Vec<AgentResult> {
        self.pending_after(None, usize::MAX)
            .into_iter()
            .filter_map(|pending| match self.load_result(pending.sequence) {
                Ok(result) => result,
                Err(error) => {
                    tracing::warn!(%error, result_id = %pending.result_id, "cannot read a stored result");
                    None
                }
            })
            .collect()
    }

    /// Deliveries recorded whose run never ended (the agent stopped during them).
    fn unfinished_deliveries(&self) -> Vec<Delivery>;
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The ids seen, in arrival order, bounded by [`JournalLimits`].
#[derive(Debug, Default)]
struct SeenIds {
    ids: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl SeenIds {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    fn insert(&mut self, id: String, at: u64) {
        if self.ids.insert(id.clone(), at).is_none() {
            self.order.push_back((at, id));
        }
    }

    /// Drops what is past the limits; returns whether anything was dropped.
    fn trim(&mut self, limits: JournalLimits, now: u64) -> bool {
        let oldest = now.saturating_sub(limits.retention.as_secs());
        let mut dropped = false;
        while let Some((at, _)) = self.order.front() {
            if *at >= oldest && self.order.len() <= limits.max_entries {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
                dropped = true;
            }
        }
        dropped
    }
}

/// The journal in memory: as exact as the file one while the process lives.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    limits: JournalLimits,
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    seen: SeenIds,
    running: HashMap<String, Delivery>,
    outbox: BTreeMap<u64, (AgentResult, bool)>,
    next_sequence: u64,
}

impl MemoryJournal {
    /// An empty journal with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty journal with these limits.
    pub fn with_limits(limits: JournalLimits) -> Self {
        Self {
            limits,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock leaves consistent maps (each change is one insert).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Journal for MemoryJournal {
    fn record_delivery(&self, delivery: &Delivery) -> Result<bool, AgentError> {
        let mut inner = self.lock();
        if inner.seen.contains(&delivery.message_id) {
            return Ok(false);
        }
        let now = now_seconds();
        inner.seen.insert(delivery.message_id.clone(), now);
        inner.seen.trim(self.limits, now);
        inner
            .running
            .insert(delivery.message_id.clone(), delivery.clone());
        Ok(true)
    }

    fn store_result(&self, result: &AgentResult, final_result: bool) -> Result<(), AgentError> {
        let mut inner = self.lock();
        let sequence = inner.next_sequence;
        inner.next_sequence += 1;
        inner
            .outbox
            .insert(sequence, (result.clone(), final_result));
        if final_result {
            inner.running.remove(&result.message_id);
        }
        Ok(())
    }

    fn remove_result(&self, result_id: &str) -> Result<(), AgentError> {
        self.lock()
            .outbox
            .retain(|_, (result, _)| result.result_id != result_id);
        Ok(())
    }

    fn pending_after(&self, after: Option<u64>, limit: usize) -> Vec<PendingResult> {
        let inner = self.lock();
        outbox_after(&inner.outbox, after)
            .take(limit)
            .map(|(sequence, (result, final_result))| PendingResult {
                sequence: *sequence,
                result_id: result.result_id.clone(),
                size: result.encoded_len(),
                final_result: *final_result,
            })
            .collect()
    }

    fn load_result(&self, sequence: u64) -> Result<Option<AgentResult>, AgentError> {
        Ok(self
            .lock()
            .outbox
            .get(&sequence)
            .map(|(result, _)| result.clone()))
    }

    fn pending_count(&self) -> usize {
        self.lock().outbox.len()
    }

    fn pending_results(&self) -> Vec<AgentResult> {
        self.lock()
            .outbox
            .values()
            .map(|(result, _)| result.clone())
            .collect()
    }

    fn unfinished_deliveries(&self) -> Vec<Delivery> {
        let mut deliveries: Vec<Delivery> = self.lock().running.values().cloned().collect();
        deliveries.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        deliveries
    }
}

/// The journal in the state directory:
/// - `journal/seen.log`: one line per delivery id, `<unix seconds> <id as a JSON string>`,
///   appended and fsynced before the ack, compacted (atomically) on open and when it outgrows
///   its limits;
/// - `running/<hex id>.pb`: the delivery of a run in progress, removed when its final result
///   is stored;
/// - `outbox/<sequence>-<hex result id>.pb`: a result until acknowledged (a flag byte, 1 for a
///   final result, then the protobuf `Result`). Only an index of them is kept in memory
///   ([`PendingResult`] without the payload); a result is read again when it is sent.
#[derive(Debug)]
pub struct FileJournal {
    root: PathBuf,
    limits: JournalLimits,
    inner: Mutex<FileInner>,
}

#[derive(Debug)]
struct FileInner {
    seen: SeenIds,
    seen_log: File,
    lines_in_log: usize,
    running: BTreeMap<String, Delivery>,
    /// The outbox's index by sequence; the file is `outbox_path(sequence, result_id)`.
    outbox: BTreeMap<u64, OutboxEntry>,
    next_sequence: u64,
}

/// What memory holds of a stored result.
#[derive(Debug)]
struct OutboxEntry {
    result_id: Box<str>,
    /// The encoded `Result`'s size (the file is one byte more).
    size: u32,
    final_result: bool,
}

impl FileJournal {
    /// Opens (creating) the journal under `state_dir`, compacts the id log, and settles runs
    /// whose final result was stored just before a crash.
    pub fn open(state_dir: &Path, limits: JournalLimits) -> Result<Self, AgentError> {
        let journal_dir = state_dir.join("journal");
        let running_dir = state_dir.join("running");
        let outbox_dir = state_dir.join("outbox");
        for dir in [state_dir, &journal_dir, &running_dir, &outbox_dir] {
            create_private_dir(dir)?;
        }

        let log_path = journal_dir.join("seen.log");
        let mut seen = SeenIds::default();
        match fs::read_to_string(&log_path) {
            Ok(text) => {
                for line in text.lines() {
                    let Some((at, id)) = line.split_once(' ') else {
                        continue;
                    };
                    let (Ok(at), Ok(id)) = (at.parse::<u64>(), serde_json::from_str::<String>(id))
                    else {
                        // A line torn by a crash: it was never acknowledged.
                        continue;
                    };
                    seen.insert(id, at);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(AgentError::io(&log_path, error)),
        }
        seen.trim(limits, now_seconds());
        write_atomically(&log_path, &render_seen(&seen))?;
        let seen_log = open_append(&log_path)?;
        let lines_in_log = seen.order.len();

        let mut outbox = BTreeMap::new();
        let mut final_for = Vec::new();
        let mut next_sequence = 0;
        for (path, name) in list_dir(&outbox_dir)? {
            let Some(sequence) = name.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(|error| AgentError::io(&path, error))?;
            let Some((flag, body)) = bytes.split_first() else {
                continue;
            };
            let Ok(result) = AgentResult::decode(body) else {
                tracing::warn!(path = %path.display(), "dropping an unreadable stored result");
                let _ = fs::remove_file(&path);
                continue;
            };
            let final_result = *flag == 1;
            if final_result {
                final_for.push(result.message_id.clone());
            }
            let expected = outbox_path(&outbox_dir, sequence, &result.result_id);
            if path != expected {
                // Not a name this journal writes: renamed, so the index can find it again.
                fs::rename(&path, &expected).map_err(|error| AgentError::io(&path, error))?;
            }
            next_sequence = next_sequence.max(sequence + 1);
            outbox.insert(
                sequence,
                OutboxEntry {
                    result_id: result.result_id.into_boxed_str(),
                    size: u32::try_from(body.len()).unwrap_or(u32::MAX),
                    final_result,
                },
            );
        }

        let mut running = BTreeMap::new();
        for (path, _) in list_dir(&running_dir)? {
            let bytes = fs::read(&path).map_err(|error| AgentError::io(&path, error))?;
            match Delivery::decode(bytes.as_slice()) {
                Ok(delivery) if final_for.contains(&delivery.message_id) => {
                    // The final result was stored but the marker not yet removed.
                    remove_durably(&path)?;
                }
                Ok(delivery) => {
                    running.insert(delivery.message_id.clone(), delivery);
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "dropping an unreadable run marker");
                    let _ = fs::remove_file(&path);
                }
            }
        }

        Ok(Self {
            root: state_dir.to_path_buf(),
            limits,
            inner: Mutex::new(FileInner {
                seen,
                seen_log,
                lines_in_log,
                running,
                outbox,
                next_sequence,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn marker_path(&self, message_id: &str) -> PathBuf {
        self.root
            .join("running")
            .join(format!("{}.pb", hex(message_id.as_bytes())))
    }

    fn outbox_path(&self, sequence: u64, result_id: &str) -> PathBuf {
        outbox_path(&self.root.join("outbox"), sequence, result_id)
    }

    /// Roughly how many bytes of memory the outbox's index holds (entries and their ids; no
    /// payloads are kept). For tests and diagnostics.
    pub fn outbox_memory_bytes(&self) -> usize {
        const PER_ENTRY: usize = std::mem::size_of::<u64>() + std::mem::size_of::<OutboxEntry>();
        self.lock()
            .outbox
            .values()
            .map(|entry| PER_ENTRY + entry.result_id.len())
            .sum()
    }
}

fn outbox_path(outbox_dir: &Path, sequence: u64, result_id: &str) -> PathBuf {
    outbox_dir.join(format!("{sequence:020}-{}.pb", hex(result_id.as_bytes())))
}

/// The entries of an outbox after sequence `after` (all when `None`), in order.
fn outbox_after<V>(
    outbox: &BTreeMap<u64, V>,
    after: Option<u64>,
) -> std::collections::btree_map::Range<'_, u64, V> {
    use std::ops::Bound;
    let start = match after {
        Some(after) => Bound::Excluded(after),
        None => Bound::Unbounded,
    };
    outbox.range((start, Bound::Unbounded))
}

impl Journal for FileJournal {
    fn record_delivery(&self, delivery: &Delivery) -> Result<bool, AgentError> {
        let mut inner = self.lock();
        if inner.seen.contains(&delivery.message_id) {
            return Ok(false);
        }
        // The marker first: a crash between the two leaves a marker of a delivery never
        // acknowledged, reported as interrupted; the other order could lose the run silently.
        write_atomically(
            &self.marker_path(&delivery.message_id),
            &delivery.encode_to_vec(),
        )?;
        let now = now_seconds();
        let id_json = serde_json::to_string(&delivery.message_id)
            .map_err(|error| AgentError::InvalidState(error.to_string()))?;
        let log_path = self.root.join("journal").join("seen.log");
        let appended = inner
            .seen_log
            .write_all(format!("{now} {id_json}\n").as_bytes())
            .and_then(|()| inner.seen_log.sync_data());
        if let Err(error) = appended {
            // Not acknowledged, so it comes again; without the marker it is not reported
            // interrupted meanwhile.
            let _ = fs::remove_file(self.marker_path(&delivery.message_id));
            return Err(AgentError::io(&log_path, error));
        }
        inner.seen.insert(delivery.message_id.clone(), now);
        inner.lines_in_log += 1;
        inner
            .running
            .insert(delivery.message_id.clone(), delivery.clone());
        if inner.lines_in_log > self.limits.max_entries.saturating_mul(2) {
            inner.seen.trim(self.limits, now);
            write_atomically(&log_path, &render_seen(&inner.seen))?;
            inner.seen_log = open_append(&log_path)?;
            inner.lines_in_log = inner.seen.order.len();
        }
        Ok(true)
    }

    fn store_result(&self, result: &AgentResult, final_result: bool) -> Result<(), AgentError> {
        let mut inner = self.lock();
        let sequence = inner.next_sequence;
        inner.next_sequence += 1;
        let path = self.outbox_path(sequence, &result.result_id);
        let size = result.encoded_len();
        let mut bytes = Vec::with_capacity(1 + size);
        bytes.push(u8::from(final_result));
        result
            .encode(&mut bytes)
            .map_err(|error| AgentError::InvalidState(error.to_string()))?;
        write_atomically(&path, &bytes)?;
        drop(bytes);
        inner.outbox.insert(
            sequence,
            OutboxEntry {
                result_id: result.result_id.as_str().into(),
                size: u32::try_from(size).unwrap_or(u32::MAX),
                final_result,
            },
        );
        if final_result && inner.running.remove(&result.message_id).is_some() {
            remove_durably(&self.marker_path(&result.message_id))?;
        }
        Ok(())
    }

    fn remove_result(&self, result_id: &str) -> Result<(), AgentError> {
        let mut inner = self.lock();
        let sequences: Vec<u64> = inner
            .outbox
            .iter()
            .filter(|(_, entry)| &*entry.result_id == result_id)
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in sequences {
            if inner.outbox.remove(&sequence).is_some() {
                // Not fsynced: a result that comes back after a crash is sent again and
                // de-duplicated by the server.
                let path = self.outbox_path(sequence, result_id);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(AgentError::io(&path, error)),
                }
            }
        }
        Ok(())
    }

    fn pending_after(&self, after: Option<u64>, limit: usize) -> Vec<PendingResult> {
        let inner = self.lock();
        outbox_after(&inner.outbox, after)
            .take(limit)
            .map(|(sequence, entry)| PendingResult {
                sequence: *sequence,
                result_id: entry.result_id.to_string(),
                size: entry.size as usize,
                final_result: entry.final_result,
            })
            .collect()
    }

    fn load_result(&self, sequence: u64) -> Result<Option<AgentResult>, AgentError> {
        let mut inner = self.lock();
        let Some(entry) = inner.outbox.get(&sequence) else {
            return Ok(None);
        };
        let path = self.outbox_path(sequence, &entry.result_id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "a stored result is gone; forgetting it");
                inner.outbox.remove(&sequence);
                return Ok(None);
            }
            Err(error) => return Err(AgentError::io(&path, error)),
        };
        let decoded = bytes
            .split_first()
            .and_then(|(_, body)| AgentResult::decode(body).ok());
        match decoded {
            Some(result) if *result.result_id == *entry.result_id => Ok(Some(result)),
            _ => {
                tracing::warn!(path = %path.display(), "dropping an unreadable stored result");
                let _ = fs::remove_file(&path);
                inner.outbox.remove(&sequence);
                Ok(None)
            }
        }
    }

    fn pending_count(&self) -> usize {
        self.lock().outbox.len()
    }

    fn unfinished_deliveries(&self) -> Vec<Delivery> {
        self.lock().running.values().cloned().collect()
    }
}

fn render_seen(seen: &SeenIds) -> Vec<u8> {
    let mut text = String::new();
    for (at, id) in &seen.order {
        if let Ok(id_json) = serde_json::to_string(id) {
            text.push_str(&format!("{at} {id_json}\n"));
        }
    }
    text.into_bytes()
}

fn open_append(path: &Path) -> Result<File, AgentError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| AgentError::io(path, error))
}

fn remove_durably(path: &Path) -> Result<(), AgentError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(AgentError::io(path, error)),
    }
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| AgentError::io(parent, e))?;
    }
    Ok(())
}

/// The `.pb` files of a directory (temporary files skipped), sorted by name.
fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, AgentError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|error| AgentError::io(dir, error))? {
        let entry = entry.map_err(|error| AgentError::io(dir, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        if name.ends_with(".pb") {
            entries.push((entry.path(), name));
        }
    }
    entries.sort();
    Ok(entries)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic
mod tests {
    use super::*;

    fn delivery(id: &str) -> Delivery {
        Delivery {
            message_id: id.into(),
            topic: "system.echo".into(),
            ..Default::default()
        }
    }

    fn result(id: &str, message_id: &str) -> AgentResult {
        AgentResult {
            result_id: id.into(),
            message_id: message_id.into(),
            ..Default::default()
        }
    }

    /// The contract every journal meets.
    fn contract(journal: &dyn Journal) {
        assert!(journal.record_delivery(&delivery("m1")).unwrap());
        assert!(!journal.record_delivery(&delivery("m1")).unwrap());
        assert!(journal.record_delivery(&delivery("m2")).unwrap());
        assert_eq!(journal.unfinished_deliveries().len(), 2);
        journal.store_result(&result("r1", "m1"), false).unwrap();
        assert_eq!(journal.unfinished_deliveries().len(), 2);
        journal.store_result(&result("r2", "m1"), true).unwrap();
        let unfinished = journal.unfinished_deliveries();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].message_id, "m2");
        let ids: Vec<String> = journal
            .pending_results()
            .into_iter()
            .map(|r| r.result_id)
            .collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(journal.pending_count(), 2);
        let index = journal.pending_after(None, 10);
        let index_ids: Vec<&str> = index.iter().map(|p| p.result_id.as_str()).collect();
        assert_eq!(index_ids, ["r1", "r2"]);
        assert_eq!(
            index.iter().map(|p| p.final_result).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(index[0].size, result("r1", "m1").encoded_len());
        assert!(index[0].sequence < index[1].sequence);
        assert_eq!(journal.pending_after(None, 1), index[..1]);
        assert_eq!(
            journal.pending_after(Some(index[0].sequence), 10),
            index[1..]
        );
        assert!(
            journal
                .pending_after(Some(index[1].sequence), 10)
                .is_empty()
        );
        let loaded = journal.load_result(index[1].sequence).unwrap().unwrap();
        assert_eq!(loaded, result("r2", "m1"));
        journal.remove_result("r1").unwrap();
        journal.remove_result("unknown").unwrap();
        assert_eq!(journal.load_result(index[0].sequence).unwrap(), None);
        assert_eq!(journal.pending_count(), 1);
        let ids: Vec<String> = journal
            .pending_results()
            .into_iter()
            .map(|r| r.result_id)
            .collect();
        assert_eq!(ids, ["r2"]);
    }

    #[test]
    fn memory_journal_meets_the_contract() {
        contract(&MemoryJournal::new());
    }

    #[test]
    fn file_journal_meets_the_contract_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = FileJournal::open(dir.path(), JournalLimits::default()).unwrap();
            contract(&journal);
        }
        let journal = FileJournal::open(dir.path(), JournalLimits::default()).unwrap();
        assert!(!journal.record_delivery(&delivery("m1")).unwrap());
        assert!(!journal.record_delivery(&delivery("m2")).unwrap());
        assert_eq!(journal.unfinished_deliveries().len(), 1);
        let ids: Vec<String> = journal
            .pending_results()
            .into_iter()
            .map(|r| r.result_id)
            .collect();
        assert_eq!(ids, ["r2"]);
        journal.store_result(&result("r3", "m2"), true).unwrap();
        let ids: Vec<String> = journal
            .pending_results()
            .into_iter()
            .map(|r| r.result_id)
            .collect();
        assert_eq!(ids, ["r2", "r3"]);
    }

    #[test]
    fn ids_are_kept_within_the_limits() {
        let limits = JournalLimits {
            retention: Duration::from_secs(3600),
            max_entries: 3,
        };
        let dir = tempfile::tempdir().unwrap();
        let journal = FileJournal::open(dir.path(), limits).unwrap();
        for i in 0..10 {
            assert!(
                journal
                    .record_delivery(&delivery(&format!("m{i}")))
                    .unwrap()
            );
        }
        drop(journal);
        let log = dir.path().join("journal/seen.log");
        fs::write(
            &log,
            format!("{}1 \"old\"\n{}", "", fs::read_to_string(&log).unwrap()),
        )
        .unwrap();
        let journal = FileJournal::open(dir.path(), limits).unwrap();
        let text = fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!journal.record_delivery(&delivery("m9")).unwrap());
        assert!(journal.record_delivery(&delivery("old")).unwrap());
        let memory = MemoryJournal::with_limits(limits);
        for i in 0..10 {
            memory.record_delivery(&delivery(&format!("m{i}"))).unwrap();
        }
        assert!(memory.record_delivery(&delivery("m0")).unwrap());
    }
}
