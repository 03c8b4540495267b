//! The agent sends results a window at a time: while the server withholds acknowledgements
//! it never has more than the window outstanding (64 results or 4 MiB), and it goes on as
//! acknowledgements come, in order, across reconnects.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bosun_agent::{
    Agent, AgentOptions, EndpointConfig, Executor, FileJournal, Journal, JournalLimits, ResultSink,
};
use bosun_proto::agent::v1::{Delivery, Result as AgentResult};
use common::*;
use prost::Message;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Answers a delivery with `count` output results of `size` bytes each (the first 8 bytes:
/// the index), then a final one.
struct Flood {
    count: usize,
    size: usize,
}

#[async_trait]
impl Executor for Flood {
    async fn handle(&self, _delivery: Delivery, results: ResultSink) {
        for index in 0..self.count {
            let mut payload = vec![b'x'; self.size.max(8)];
            payload[..8].copy_from_slice(&(index as u64).to_be_bytes());
            results.progress_on("commands.output", payload).unwrap();
        }
        results.complete(b"{}".to_vec()).unwrap();
    }
}

fn index_of(result: &AgentResult) -> Option<u64> {
    if result.topic != "commands.output" {
        return None;
    }
    Some(u64::from_be_bytes(result.payload[..8].try_into().unwrap()))
}

fn start(
    server: &FakeServer,
    journal: Arc<dyn Journal>,
    executor: Arc<dyn Executor>,
    tune: impl FnOnce(&mut AgentOptions),
) -> RunningAgent {
    let identity = known_identity(server, 1);
    let mut options = test_options();
    tune(&mut options);
    let shutdown = CancellationToken::new();
    let agent = Agent::new(
        identity,
        EndpointConfig::new(server.url.clone()),
        journal,
        executor,
        options,
    );
    let task = tokio::spawn(agent.run(shutdown.clone()));
    RunningAgent { shutdown, task }
}

/// How long without a result means the agent waits for acknowledgements.
const QUIET: Duration = Duration::from_secs(1);

/// The results that arrive until none has for `quiet` (the agent waits for acknowledgements),
/// or until `enough` arrived.
async fn results_for(server: &mut FakeServer, quiet: Duration, enough: usize) -> Vec<AgentResult> {
    let mut results = Vec::new();
    while results.len() < enough {
        let Ok(event) = tokio::time::timeout(quiet, server.next()).await else {
            break;
        };
        if let Event::Result(result) = event {
            results.push(result);
        }
    }
    results
}

/// Takes every result the agent sends, acknowledging the outstanding ones only once the
/// agent stopped sending; checks the window at every step. Returns the results in the order
/// received.
async fn drain_with_withheld_acks(
    server: &mut FakeServer,
    total: usize,
    max_results: usize,
    max_bytes: usize,
) -> Vec<AgentResult> {
    let mut received = Vec::new();
    let mut outstanding: Vec<AgentResult> = Vec::new();
    let mut full_windows = 0;
    while received.len() < total {
        // Whatever the agent sends before it stops for want of acknowledgements.
        let batch = results_for(server, QUIET, total).await;
        assert!(
            !batch.is_empty(),
            "the agent resumes after acknowledgements"
        );
        outstanding.extend(batch.iter().cloned());
        received.extend(batch);
        let bytes: usize = outstanding.iter().map(Message::encoded_len).sum();
        assert!(
            outstanding.len() <= max_results,
            "{} results outstanding",
            outstanding.len()
        );
        assert!(
            outstanding.len() == 1 || bytes <= max_bytes,
            "{bytes} bytes outstanding"
        );
        let next_size = 64 * 1024 + 128;
        if outstanding.len() == max_results || bytes + next_size > max_bytes {
            full_windows += 1;
        }
        for result in outstanding.drain(..) {
            server.ack_result(&result.result_id);
        }
    }
    assert!(full_windows >= 2, "the window filled up");
    received
}

fn assert_in_order(received: &[AgentResult], count: usize) {
    let indexes: Vec<u64> = received.iter().filter_map(index_of).collect();
    assert_eq!(indexes, (0..count as u64).collect::<Vec<_>>());
    assert_eq!(received.last().unwrap().topic, "system.echo");
}

#[tokio::test]
async fn no_more_than_64_results_are_outstanding() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), JournalLimits::default()).unwrap());
    let defaults = AgentOptions::new(bosun_agent::collect_host_facts());
    assert_eq!(defaults.result_window, 64);
    assert_eq!(defaults.result_window_bytes, 4 * 1024 * 1024);
    let count = 300;
    let agent = start(
        &server,
        journal.clone(),
        Arc::new(Flood { count, size: 100 }),
        |_| {},
    );
    server.wait_connected().await;
    server.deliver(delivery("m-1", "system.echo", json!({})));
    server.next_ack().await;
    // Let the run store everything first: the window, not the run's pace, bounds the stream.
    while journal.unfinished_deliveries().len() == 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = drain_with_withheld_acks(&mut server, count + 1, 64, 4 * 1024 * 1024).await;
    assert_in_order(&received, count);
    let later = results_for(&mut server, Duration::from_millis(300), 1).await;
    assert!(later.is_empty(), "no duplicates: {later:?}");
    assert_eq!(journal.pending_count(), 0);
    agent.stop().await;
}

#[tokio::test]
async fn no_more_than_4_mib_of_results_are_outstanding() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), JournalLimits::default()).unwrap());
    let count = 200;
    let agent = start(
        &server,
        journal.clone(),
        Arc::new(Flood {
            count,
            size: 64 * 1024,
        }),
        |_| {},
    );
    server.wait_connected().await;
    server.deliver(delivery("m-1", "system.echo", json!({})));
    server.next_ack().await;
    while journal.unfinished_deliveries().len() == 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 64 KiB results: the bytes bound first (63 of them).
    let first = results_for(&mut server, QUIET, count + 1).await;
    assert_eq!(first.len(), 63);
    for result in &first {
        server.ack_result(&result.result_id);
    }
    let mut received = first;
    received
        .extend(drain_with_withheld_acks(&mut server, count + 1 - 63, 64, 4 * 1024 * 1024).await);
    assert_in_order(&received, count);
    agent.stop().await;
}

#[tokio::test]
async fn after_reconnecting_the_window_starts_again_from_the_oldest() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), JournalLimits::default()).unwrap());
    let count = 40;
    let agent = start(
        &server,
        journal.clone(),
        Arc::new(Flood { count, size: 100 }),
        |options| options.result_window = 10,
    );
    server.wait_connected().await;
    server.deliver(delivery("m-1", "system.echo", json!({})));
    server.next_ack().await;
    let first = results_for(&mut server, QUIET, count + 1).await;
    assert_eq!(first.len(), 10);
    for result in &first[..4] {
        server.ack_result(&result.result_id);
    }
    let more = results_for(&mut server, QUIET, count + 1).await;
    assert_eq!(more.len(), 4, "as many as were acknowledged");
    assert_eq!(index_of(&more[0]), Some(10));

    server.break_stream();
    server.wait_connected().await;
    let again = results_for(&mut server, QUIET, count + 1).await;
    let indexes: Vec<u64> = again.iter().filter_map(index_of).collect();
    assert_eq!(
        indexes,
        (4..14).collect::<Vec<_>>(),
        "the oldest unacknowledged first"
    );

    server.set_auto_ack(true);
    for result in &again {
        server.ack_result(&result.result_id);
    }
    let rest = results_for(&mut server, Duration::from_secs(10), count + 1 - 14).await;
    let indexes: Vec<u64> = rest.iter().filter_map(index_of).collect();
    assert_eq!(indexes, (14..count as u64).collect::<Vec<_>>());
    assert_eq!(rest.last().unwrap().topic, "system.echo");
    agent.stop().await;
}

#[tokio::test]
async fn results_the_server_skipped_are_sent_again() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), JournalLimits::default()).unwrap());
    let agent = start(
        &server,
        journal.clone(),
        Arc::new(Flood {
            count: 5,
            size: 100,
        }),
        |options| options.result_window = 3,
    );
    server.wait_connected().await;
    server.deliver(delivery("m-1", "system.echo", json!({})));
    server.next_ack().await;
    let first = results_for(&mut server, QUIET, 10).await;
    assert_eq!(first.len(), 3);
    // The server failed to queue the first two (no ack) and acknowledged the third: answers
    // come in order, so the first two were lost and come again, then the next one.
    server.ack_result(&first[2].result_id);
    let again = results_for(&mut server, QUIET, 10).await;
    let ids: Vec<&str> = again.iter().map(|r| r.result_id.as_str()).collect();
    assert_eq!(
        ids[..2],
        [first[0].result_id.as_str(), first[1].result_id.as_str()]
    );
    assert_eq!(again.len(), 3, "the window is full again");
    assert_eq!(index_of(&again[2]), Some(3));
    server.set_auto_ack(true);
    for result in &again {
        server.ack_result(&result.result_id);
    }
    let rest = results_for(&mut server, Duration::from_secs(10), 2).await;
    assert_eq!(index_of(&rest[0]), Some(4));
    assert_eq!(rest[1].topic, "system.echo");
    let later = results_for(&mut server, Duration::from_millis(300), 1).await;
    assert!(later.is_empty(), "no duplicates: {later:?}");
    agent.stop().await;
}

#[tokio::test]
async fn a_stream_without_acknowledgements_is_opened_again() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), JournalLimits::default()).unwrap());
    let agent = start(
        &server,
        journal.clone(),
        Arc::new(Flood { count: 0, size: 8 }),
        |options| options.ack_timeout = Duration::from_millis(800),
    );
    server.wait_connected().await;
    assert_eq!(server.connects(), 1);
    server.deliver(delivery("m-1", "system.echo", json!({})));
    server.next_ack().await;
    let Event::Result(first) = server.next().await else {
        panic!("expected a result")
    };
    // Heartbeats go on, acknowledgements don't: after the timeout the agent reconnects and
    // sends the result again.
    let again = loop {
        match server.next().await {
            Event::Result(result) => break result,
            Event::StreamEnded | Event::Hello(_) | Event::Proof { accepted: true } => {}
            other => panic!("expected the result again, got {other:?}"),
        }
    };
    assert_eq!(again.result_id, first.result_id);
    assert_eq!(server.connects(), 2);
    server.ack_result(&again.result_id);
    let later = results_for(&mut server, Duration::from_secs(2), 1).await;
    assert!(later.is_empty(), "acknowledged: {later:?}");
    assert_eq!(server.connects(), 2);
    assert_eq!(journal.pending_count(), 0);
    agent.stop().await;
}
