//! The file journal's outbox holds results on disk, not in memory: thousands of big
//! unacknowledged results (command output while the control plane is unreachable) cost an
//! index in memory, and come back in order after a restart.
#![allow(clippy::unwrap_used)]

use bosun_agent::journal::PendingResult;
use bosun_agent::{FileJournal, Journal, JournalLimits, MemoryJournal};
use bosun_proto::agent::v1::Result as AgentResult;

const RESULTS: usize = 2_000;
const PAYLOAD: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

fn output_result(index: usize) -> AgentResult {
    let mut payload = vec![b'x'; PAYLOAD];
    payload[..8].copy_from_slice(&(index as u64).to_be_bytes());
    AgentResult {
        result_id: format!("r-{index:05}"),
        message_id: "m-1".into(),
        topic: "commands.output".into(),
        payload,
        ..Default::default()
    }
}

/// This process's resident set, bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn ids(index: &[PendingResult]) -> Vec<String> {
    index.iter().map(|p| p.result_id.clone()).collect()
}

/// One test (one process under nextest): the resident-set measurements see no other test.
#[test]
fn thousands_of_big_results_stay_on_disk_and_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let expected: Vec<String> = (0..RESULTS).map(|i| format!("r-{i:05}")).collect();

    let before = rss();
    let journal = FileJournal::open(&state, JournalLimits::default()).unwrap();
    for index in 0..RESULTS {
        let last = index + 1 == RESULTS;
        journal.store_result(&output_result(index), last).unwrap();
    }
    let grown = rss().saturating_sub(before);
    let index = journal.pending_after(None, usize::MAX);
    let stored_bytes: usize = index.iter().map(|p| p.size).sum();
    assert!(stored_bytes > RESULTS * PAYLOAD, "{stored_bytes}");
    assert_eq!(ids(&index), expected);
    assert_eq!(journal.pending_count(), RESULTS);
    // The index: ids and sizes, ~50 bytes a result instead of 64 KiB.
    let held = journal.outbox_memory_bytes();
    assert!(held < 256 * 1024, "the outbox index holds {held} bytes");
    assert!(
        grown < 16 * MIB,
        "storing {} MiB of results grew the process by {} MiB",
        stored_bytes / MIB,
        grown / MIB
    );
    // A payload is read back when it is sent.
    let loaded = journal.load_result(index[1234].sequence).unwrap().unwrap();
    assert_eq!(loaded, output_result(1234));

    // Acknowledged ones go; the rest come back after a restart, in order, still on disk.
    for id in &expected[..500] {
        journal.remove_result(id).unwrap();
    }
    drop(journal);
    let before_reopen = rss();
    let journal = FileJournal::open(&state, JournalLimits::default()).unwrap();
    let grown = rss().saturating_sub(before_reopen);
    assert!(
        grown < 16 * MIB,
        "reopening grew the process by {} MiB",
        grown / MIB
    );
    let index = journal.pending_after(None, usize::MAX);
    assert_eq!(ids(&index), expected[500..]);
    assert_eq!(
        index.iter().filter(|p| p.final_result).count(),
        1,
        "the final flag survives"
    );
    assert!(index.last().unwrap().final_result);
    assert!(journal.outbox_memory_bytes() < 256 * 1024);
    let after = journal
        .pending_after(Some(index[99].sequence), 3)
        .into_iter()
        .map(|p| journal.load_result(p.sequence).unwrap().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(after, (600..603).map(output_result).collect::<Vec<_>>());
    let next = journal.pending_after(Some(index.last().unwrap().sequence), 10);
    assert!(next.is_empty());
    drop(journal);

    // The measurement itself sees payloads held in memory: a memory journal's do show up.
    let before = rss();
    let memory = MemoryJournal::new();
    for index in 0..500 {
        memory.store_result(&output_result(index), false).unwrap();
    }
    let grown = rss().saturating_sub(before);
    assert!(
        grown >= 24 * MIB,
        "500 results of 64 KiB held in memory grew the process by only {} MiB",
        grown / MIB
    );
    assert_eq!(memory.pending_count(), 500);
}

#[test]
fn a_stored_result_removed_behind_the_journal_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), JournalLimits::default()).unwrap();
    for index in 0..3 {
        journal.store_result(&output_result(index), false).unwrap();
    }
    let index = journal.pending_after(None, 10);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.to_string_lossy()
                .contains(&format!("{:020}", index[1].sequence))
        })
        .collect();
    assert_eq!(files.len(), 1);
    std::fs::remove_file(&files[0]).unwrap();
    assert_eq!(journal.load_result(index[1].sequence).unwrap(), None);
    assert_eq!(
        ids(&journal.pending_after(None, 10)),
        ["r-00000", "r-00002"]
    );
    assert_eq!(journal.pending_results().len(), 2);
}
