//! The agent against a fake control plane: registration, handshake, exactly-once deliveries
//! (also across restarts), result re-sending, interrupted runs, close reasons, shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use bosun_agent::protocol::INTERRUPTED_ERROR;
use bosun_agent::{
    CommandExecutor, EndpointConfig, Exit, FileJournal, Journal, JournalLimits, MemoryJournal,
    StateDir, collect_host_facts, register,
};
use bosun_proto::agent::v1::close::Reason;
use common::*;
use serde_json::json;

fn executor(dir: &std::path::Path) -> Arc<CommandExecutor> {
    Arc::new(CommandExecutor::new(dir.join("work"), 5))
}

#[tokio::test]
async fn registration_saves_identity_and_key_that_pass_the_handshake() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = EndpointConfig::new(server.url.clone());

    let refused = register(&endpoint, "act-1", "wrong", collect_host_facts()).await;
    assert!(refused.is_err(), "a wrong code is refused");

    let identity = register(&endpoint, "act-1", "code-1", collect_host_facts())
        .await
        .unwrap();
    assert!(identity.node_id.starts_with("mi-"));
    let state = StateDir::new(dir.path().join("state"));
    state.save_identity(&identity, false).unwrap();
    let mode =
        |path: std::path::PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state.path().to_path_buf()), 0o700);
    assert_eq!(mode(state.path().join("key.pk8")), 0o600);
    assert_eq!(mode(state.path().join("identity.json")), 0o600);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("identity.json")).unwrap())
            .unwrap();
    assert_eq!(saved["node_id"], identity.node_id.as_str());
    assert_eq!(saved["server_url"], server.url.as_str());
    assert!(
        state.save_identity(&identity, false).is_err(),
        "no re-registration without force"
    );

    // The saved key proves the node's identity, and the journal's directories are private.
    let loaded = state.load_identity().unwrap();
    let journal = Arc::new(FileJournal::open(state.path(), JournalLimits::default()).unwrap());
    for sub in ["journal", "running", "outbox"] {
        assert_eq!(mode(state.path().join(sub)), 0o700, "{sub}");
    }
    assert_eq!(mode(state.path().join("journal/seen.log")), 0o600);
    let agent = start_agent(&server, loaded, journal, executor(dir.path()));
    match server.next().await {
        Event::Hello(node_id) => assert_eq!(node_id, identity.node_id),
        other => panic!("expected Hello, got {other:?}"),
    }
    server.wait_connected().await;
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn handshake_echo_and_heartbeats() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let identity = known_identity(&server, 1);
    let agent = start_agent(
        &server,
        identity,
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    server.wait_connected().await;

    server.deliver(delivery("m-echo", "system.echo", json!({"hello": "world"})));
    assert_eq!(server.next_ack().await, "m-echo");
    let Event::Result(result) = server.next().await else {
        panic!("expected a result")
    };
    assert_eq!(result.message_id, "m-echo");
    assert_eq!(result.topic, "system.echo");
    assert_eq!(json(&result), json!({"hello": "world"}));
    assert!(uuid::Uuid::parse_str(&result.result_id).is_ok());

    server.deliver(delivery("m-unknown", "inventory.collect", json!({})));
    assert_eq!(server.next_ack().await, "m-unknown");
    let result = server.next_final_result().await;
    assert_eq!(
        json(&result),
        json!({"status": "Failed", "error": "unsupported topic inventory.collect"})
    );

    // Welcome said 1 s.
    let events = server.events_for(Duration::from_millis(2500)).await;
    let heartbeats = events
        .iter()
        .filter(|e| matches!(e, Event::Heartbeat))
        .count();
    assert!(heartbeats >= 2, "{events:?}");
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_retried() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let identity = known_identity(&server, 1);
    let impostor = bosun_agent::Identity::new(
        identity.node_id.clone(),
        server.url.clone(),
        bosun_agent::generate_key().unwrap(),
    )
    .unwrap();
    let agent = start_agent(
        &server,
        impostor,
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    let mut refusals = 0;
    while refusals < 2 {
        if let Event::Proof { accepted } = server.next().await {
            assert!(!accepted);
            refusals += 1;
        }
    }
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

fn append_command(id: &str, file: &std::path::Path) -> serde_json::Value {
    json!({
        "command_id": id,
        "plugins": [{"name": "aws:runShellScript", "step": "append",
                     "inputs": {"runCommand": [format!("echo ran >> {}", file.display())]}}]
    })
}

fn lines(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_delivery_sent_twice_runs_once_also_across_a_restart() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let counter = dir.path().join("count.txt");
    let identity = known_identity(&server, 1);
    let run = delivery("m-append", "commands.run", append_command("c-1", &counter));

    let journal = Arc::new(FileJournal::open(&state_dir, JournalLimits::default()).unwrap());
    let agent = start_agent(&server, identity.clone(), journal, executor(&state_dir));
    server.wait_connected().await;
    server.deliver(run.clone());
    assert_eq!(server.next_ack().await, "m-append");
    let result = server.next_final_result().await;
    assert_eq!(json(&result)["status"], "Success");
    server.deliver(run.clone());
    assert_eq!(
        server.next_ack().await,
        "m-append",
        "a repeat is acknowledged again"
    );
    let later = server.events_for(Duration::from_millis(500)).await;
    assert!(
        !later.iter().any(|e| matches!(e, Event::Result(_))),
        "{later:?}"
    );
    assert_eq!(lines(&counter), 1);
    assert_eq!(agent.stop().await, Exit::Shutdown);

    // A new process over the same state directory.
    let journal = Arc::new(FileJournal::open(&state_dir, JournalLimits::default()).unwrap());
    let agent = start_agent(&server, identity, journal, executor(&state_dir));
    server.wait_connected().await;
    server.deliver(run);
    assert_eq!(server.next_ack().await, "m-append");
    let later = server.events_for(Duration::from_millis(500)).await;
    assert!(
        !later.iter().any(|e| matches!(e, Event::Result(_))),
        "{later:?}"
    );
    assert_eq!(lines(&counter), 1);
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn an_unacknowledged_result_is_sent_again_after_reconnecting() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let identity = known_identity(&server, 1);
    let agent = start_agent(
        &server,
        identity,
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    server.wait_connected().await;
    server.deliver(delivery("m-1", "system.echo", json!(1)));
    server.next_ack().await;
    let Event::Result(first) = server.next().await else {
        panic!("expected a result")
    };

    server.break_stream();
    server.wait_connected().await;
    let Event::Result(again) = server.next().await else {
        panic!("expected the result again")
    };
    assert_eq!(again.result_id, first.result_id);
    assert_eq!(again.payload, first.payload);
    server.ack_result(&again.result_id);
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.break_stream();
    server.wait_connected().await;
    let later = server.events_for(Duration::from_millis(500)).await;
    assert!(
        !later.iter().any(|e| matches!(e, Event::Result(_))),
        "acknowledged: {later:?}"
    );
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn unacknowledged_results_survive_a_restart_oldest_first() {
    let mut server = FakeServer::start().await;
    server.set_auto_ack(false);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let identity = known_identity(&server, 1);
    let journal = Arc::new(FileJournal::open(&state_dir, JournalLimits::default()).unwrap());
    let agent = start_agent(&server, identity.clone(), journal, executor(&state_dir));
    server.wait_connected().await;
    let mut sent = Vec::new();
    for i in 0..3 {
        server.deliver(delivery(&format!("m-{i}"), "system.echo", json!(i)));
        server.next_ack().await;
        let Event::Result(result) = server.next().await else {
            panic!("expected a result")
        };
        sent.push(result.result_id);
    }
    // Nothing is acknowledged: the agent gives up after grace + flush and keeps them on disk.
    assert_eq!(agent.stop().await, Exit::Shutdown);

    let journal = Arc::new(FileJournal::open(&state_dir, JournalLimits::default()).unwrap());
    let agent = start_agent(&server, identity, journal, executor(&state_dir));
    server.wait_connected().await;
    let mut resent = Vec::new();
    while resent.len() < 3 {
        if let Event::Result(result) = server.next().await {
            resent.push(result.result_id);
        }
    }
    assert_eq!(resent, sent);
    server.set_auto_ack(true);
    for id in &resent {
        server.ack_result(id);
    }
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn a_run_interrupted_by_a_crash_is_reported_failed_and_not_run_again() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let counter = dir.path().join("count.txt");
    let run = delivery(
        "m-crash",
        "commands.run",
        append_command("c-crash", &counter),
    );
    {
        // What a crashed agent leaves: recorded and acknowledged, never finished.
        let journal = FileJournal::open(&state_dir, JournalLimits::default()).unwrap();
        assert!(journal.record_delivery(&run).unwrap());
    }
    let identity = known_identity(&server, 1);
    let journal = Arc::new(FileJournal::open(&state_dir, JournalLimits::default()).unwrap());
    let agent = start_agent(&server, identity, journal.clone(), executor(&state_dir));
    server.wait_connected().await;
    let result = server.next_final_result().await;
    assert_eq!(result.message_id, "m-crash");
    assert_eq!(result.topic, "commands.run");
    let payload = json(&result);
    assert_eq!(payload["command_id"], "c-crash");
    assert_eq!(payload["status"], "Failed");
    assert_eq!(payload["error"], INTERRUPTED_ERROR);
    server.deliver(run);
    assert_eq!(server.next_ack().await, "m-crash");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&counter), 0, "not run again");
    assert!(journal.unfinished_deliveries().is_empty());
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn deregistered_stops_the_agent() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        &server,
        known_identity(&server, 1),
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    server.wait_connected().await;
    server.close(Reason::Deregistered);
    assert!(matches!(agent.join().await, Exit::Deregistered { .. }));
}

#[tokio::test]
async fn replaced_shutdown_and_shedding_lead_to_reconnects() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        &server,
        known_identity(&server, 1),
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    server.wait_connected().await;
    server.close(Reason::Replaced);
    server.wait_connected().await;
    server.reject_next(2);
    server.close(Reason::Shutdown);
    let started = tokio::time::Instant::now();
    server.wait_connected().await;
    // Two sheddings, each with a 300 ms hint that is a lower bound on the pause.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.connects(), 3);
    assert_eq!(agent.stop().await, Exit::Shutdown);
}

#[tokio::test]
async fn shutdown_lets_running_work_finish_and_flushes_its_result() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        &server,
        known_identity(&server, 1),
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    server.wait_connected().await;
    server.deliver(delivery(
        "m-slow",
        "commands.run",
        json!({"command_id": "c-slow", "plugins": [{"name": "aws:runShellScript", "step": "s",
               "inputs": {"runCommand": ["sleep 1", "echo done"]}}]}),
    ));
    server.next_ack().await;
    agent.shutdown.cancel();
    // Work offered while stopping is not taken (not acknowledged).
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.deliver(delivery("m-late", "system.echo", json!(1)));
    let result = server.next_final_result().await;
    assert_eq!(result.message_id, "m-slow");
    assert_eq!(json(&result)["status"], "Success");
    assert_eq!(json(&result)["plugins"][0]["stdout"], "done\n");
    assert_eq!(agent.join().await, Exit::Shutdown);
}

#[tokio::test]
async fn the_client_socket_can_be_bound_to_a_chosen_source_address() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut endpoint = EndpointConfig::new(server.url.clone());
    endpoint.local_address = Some("127.0.0.7".parse().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = bosun_agent::Agent::new(
        known_identity(&server, 1),
        endpoint,
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
        test_options(),
    );
    let task = tokio::spawn(agent.run(shutdown.clone()));
    server.wait_connected().await;
    assert_eq!(server.peers()[0].ip().to_string(), "127.0.0.7");
    shutdown.cancel();
    assert_eq!(task.await.unwrap().unwrap(), Exit::Shutdown);
}

#[tokio::test]
async fn an_expired_delivery_is_acknowledged_and_answered_failed_without_running() {
    let mut server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("count.txt");
    let agent = start_agent(
        &server,
        known_identity(&server, 1),
        Arc::new(MemoryJournal::new()),
        executor(dir.path()),
    );
    server.wait_connected().await;
    let mut expired = delivery("m-old", "commands.run", append_command("c-old", &counter));
    expired.expires_at = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    server.deliver(expired);
    assert_eq!(server.next_ack().await, "m-old");
    let result = server.next_final_result().await;
    assert_eq!(json(&result)["status"], "Failed");
    assert_eq!(json(&result)["error"], "expired before it reached the node");
    assert_eq!(lines(&counter), 0);
    assert_eq!(agent.stop().await, Exit::Shutdown);
}
