//! `https://` servers: trusted through `--ca-bundle`, refused without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bosun_agent::{
    Agent, CommandExecutor, EndpointConfig, Exit, MemoryJournal, collect_host_facts, register,
};
use common::*;
use tokio_util::sync::CancellationToken;

fn ca_bundle() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ca.pem")
}

#[tokio::test]
async fn registers_and_connects_over_tls_with_the_ca_bundle() {
    let mut server = FakeServer::start_tls().await;
    assert!(server.url.starts_with("https://127.0.0.1:"));

    let untrusted = EndpointConfig::new(server.url.clone());
    let refused = register(&untrusted, "act-1", "code-1", collect_host_facts()).await;
    assert!(
        refused.is_err(),
        "the test CA is not trusted without --ca-bundle"
    );

    let endpoint = EndpointConfig::new(server.url.clone())
        .with_ca_bundle_file(&ca_bundle())
        .unwrap();
    let identity = register(&endpoint, "act-1", "code-1", collect_host_facts())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let agent = Agent::new(
        identity,
        endpoint,
        Arc::new(MemoryJournal::new()),
        Arc::new(CommandExecutor::new(dir.path().join("work"), 5)),
        test_options(),
    );
    let task = tokio::spawn(agent.run(shutdown.clone()));
    server.wait_connected().await;
    server.deliver(delivery(
        "m-1",
        "system.echo",
        serde_json::json!("over tls"),
    ));
    assert_eq!(server.next_ack().await, "m-1");
    assert_eq!(
        json(&server.next_final_result().await),
        serde_json::json!("over tls")
    );
    shutdown.cancel();
    assert_eq!(task.await.unwrap().unwrap(), Exit::Shutdown);
}

#[test]
fn only_http_and_https_urls_are_accepted() {
    assert!(EndpointConfig::new("ftp://x").endpoint().is_err());
    assert!(EndpointConfig::new("http://127.0.0.1:1").endpoint().is_ok());
    assert!(
        EndpointConfig::new("https://127.0.0.1:1")
            .endpoint()
            .is_ok()
    );
}
