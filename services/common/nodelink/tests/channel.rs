//! The agent channel end to end within the crate: a gateway replica on a loopback port, a
//! test agent speaking agent.proto, on SQLite + in-process queue/presence and on
//! PostgreSQL + Redis.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bosun_nodelink::channel::ChannelOptions;
use bosun_nodelink::{NodeControl as _, NodeResult, results_stream};
use bosun_proto::agent::v1::{
    Proof, Result as AgentResult, agent_message, close::Reason, server_message,
};
use common::*;
use tonic::Code;
use tonic_types::StatusExt as _;

#[tokio::test]
async fn handshake_welcomes_a_registered_node_and_records_it() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);

        let conn = agent
            .connect(replica.addr)
            .await
            .expect("handshake succeeds");
        assert_eq!(
            directory.connects_of(&agent.node_id),
            vec![TestAgent::facts()],
            "{}: facts recorded on connect",
            backend.name
        );
        assert!(link.is_connected(&agent.node_id).await, "{}", backend.name);

        drop(conn);
        eventually("presence removed after the stream ends", || {
            let link = link.clone();
            let node_id = agent.node_id.clone();
            async move { !link.is_connected(&node_id).await }
        })
        .await;
        replica.stop().await;
    }
}

#[tokio::test]
async fn wrong_signature_and_unknown_node_are_unauthenticated() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let replica = Replica::start(backend.link(), directory.clone(), test_options()).await;

    // Signed with a key other than the registered one.
    let agent = TestAgent::registered(&directory);
    let impostor = TestAgent {
        node_id: agent.node_id.clone(),
        key: new_key(),
    };
    let status = impostor
        .connect(replica.addr)
        .await
        .err()
        .expect("a wrong signature fails");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Never registered.
    let stranger = TestAgent {
        node_id: random_node_id(),
        key: new_key(),
    };
    let status = stranger
        .hello(replica.addr)
        .await
        .err()
        .expect("an unknown node fails");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "unknown or deregistered node");

    // A malformed node id is refused before any lookup.
    let malformed = TestAgent {
        node_id: "i-123".to_owned(),
        key: new_key(),
    };
    let status = malformed
        .hello(replica.addr)
        .await
        .err()
        .expect("bad id fails");
    assert_eq!(status.code(), Code::InvalidArgument);

    assert!(directory.connects_of(&agent.node_id).is_empty());
    assert!(!backend.link().is_connected(&agent.node_id).await);
    replica.stop().await;
}

#[tokio::test]
async fn a_proof_replayed_on_another_stream_fails() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let replica = Replica::start(backend.link(), directory.clone(), test_options()).await;
    let agent = TestAgent::registered(&directory);

    let (_first, first_nonce) = agent.hello(replica.addr).await.expect("challenge");
    let recorded = agent.key.sign(&signed_bytes(&agent.node_id, &first_nonce));
    let (mut second, second_nonce) = agent.hello(replica.addr).await.expect("challenge");
    assert_ne!(
        first_nonce, second_nonce,
        "every stream gets a fresh challenge"
    );
    second
        .send(agent_message::Body::Proof(Proof {
            signature: recorded.as_ref().to_vec(),
        }))
        .await;
    let status = second.next().await.expect_err("the replay is refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    replica.stop().await;
}

#[tokio::test]
async fn a_message_sent_while_offline_is_delivered_on_connect() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);

        let mut message = outbound(&agent.node_id, "system.echo", b"hello");
        message.trace_context.insert(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        let id = link.send(message).await.expect("stored");
        assert!(!link.is_connected(&agent.node_id).await);

        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        let delivery = conn.next_delivery().await;
        assert_eq!(delivery.message_id, id, "{}", backend.name);
        assert_eq!(delivery.topic, "system.echo");
        assert_eq!(delivery.payload, b"hello");
        assert!(delivery.created_at.is_some());
        assert!(delivery.expires_at.is_none());
        assert_eq!(
            delivery
                .trace_context
                .get("traceparent")
                .map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        // The send is recorded just after the delivery is handed to the stream.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let stored = loop {
            let stored = link.get(&id).await.expect("read").expect("row");
            if stored.last_sent_at.is_some() || tokio::time::Instant::now() > deadline {
                break stored;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(stored.last_sent_at.is_some(), "the send is recorded");
        assert_eq!(stored.message.send_count, 1);
        replica.stop().await;
    }
}

#[tokio::test]
async fn a_message_sent_while_online_arrives_through_the_inbox() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);
        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        assert!(link.is_connected(&agent.node_id).await);

        let id = link
            .send(outbound(&agent.node_id, "commands.run", b"{\"x\":1}"))
            .await
            .expect("stored");
        let delivery = conn.next_delivery().await;
        assert_eq!(delivery.message_id, id, "{}", backend.name);
        assert_eq!(delivery.payload, b"{\"x\":1}");
        conn.ack(&id).await;
        eventually("ack recorded", || {
            let link = link.clone();
            let id = id.clone();
            async move {
                link.get(&id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|stored| stored.acked_at.is_some())
            }
        })
        .await;
        replica.stop().await;
    }
}

#[tokio::test]
async fn acked_messages_are_not_redelivered_and_unacked_ones_are() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);

        let acked = link
            .send(outbound(&agent.node_id, "system.echo", b"one"))
            .await
            .expect("stored");
        let unacked = link
            .send(outbound(&agent.node_id, "system.echo", b"two"))
            .await
            .expect("stored");
        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        let first = conn.deliveries(2).await;
        assert!(first.contains_key(&acked) && first.contains_key(&unacked));
        conn.ack(&acked).await;
        eventually("ack recorded", || {
            let link = link.clone();
            let node_id = agent.node_id.clone();
            async move {
                link.pending(&node_id)
                    .await
                    .is_ok_and(|pending| pending.len() == 1)
            }
        })
        .await;
        drop(conn);

        let mut conn = agent.connect(replica.addr).await.expect("reconnect");
        let delivery = conn.next_delivery().await;
        assert_eq!(delivery.message_id, unacked, "{}", backend.name);
        // A marker sent after the reconnect arrives next: nothing else was re-sent before it.
        let marker = link
            .send(outbound(&agent.node_id, "system.echo", b"marker"))
            .await
            .expect("stored");
        assert_eq!(conn.next_delivery().await.message_id, marker);
        replica.stop().await;
    }
}

#[tokio::test]
async fn expired_messages_are_never_delivered() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);
        let past = chrono::Utc::now() - chrono::Duration::seconds(5);
        let future = chrono::Utc::now() + chrono::Duration::hours(1);

        let mut expired = outbound(&agent.node_id, "system.echo", b"late");
        expired.expires_at = Some(past);
        link.send(expired.clone()).await.expect("stored");
        let mut fresh = outbound(&agent.node_id, "system.echo", b"fresh");
        fresh.expires_at = Some(future);
        let fresh_id = link.send(fresh).await.expect("stored");

        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        let delivery = conn.next_delivery().await;
        assert_eq!(
            delivery.message_id, fresh_id,
            "{}: only the fresh one",
            backend.name
        );
        assert!(delivery.expires_at.is_some());

        // Pushed while online, an expired message is dropped too.
        link.send(expired).await.expect("stored");
        let marker = link
            .send(outbound(&agent.node_id, "system.echo", b"marker"))
            .await
            .expect("stored");
        assert_eq!(
            conn.next_delivery().await.message_id,
            marker,
            "{}",
            backend.name
        );
        replica.stop().await;
    }
}

#[tokio::test]
async fn results_are_queued_for_their_area_and_acknowledged() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);
        let mut conn = agent.connect(replica.addr).await.expect("handshake");

        let created_at = chrono::DateTime::from_timestamp(1_764_000_000, 5_000).expect("time");
        let mut trace_context = std::collections::HashMap::new();
        trace_context.insert(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        conn.send(agent_message::Body::Result(AgentResult {
            result_id: "0b6f3f0e-1f7c-4a8e-9d53-6c1f1b3e2a10".to_owned(),
            message_id: "m-1".to_owned(),
            topic: "commands.output".to_owned(),
            payload: b"done".to_vec(),
            created_at: Some(bosun_nodelink::store::timestamp(created_at)),
            trace_context: trace_context.clone(),
        }))
        .await;
        match conn.next().await.expect("healthy").body {
            Some(server_message::Body::ResultAck(ack)) => {
                assert_eq!(ack.result_id, "0b6f3f0e-1f7c-4a8e-9d53-6c1f1b3e2a10");
            }
            other => panic!("expected a result ack, got {other:?}"),
        }

        let stream = results_stream("commands");
        backend
            .queue
            .ensure_group(&stream, "test")
            .await
            .expect("group");
        let deliveries = backend
            .queue
            .consume(&stream, "test", "c1", 10, Duration::from_secs(1))
            .await
            .expect("consume");
        assert_eq!(deliveries.len(), 1, "{}", backend.name);
        let result = NodeResult::from_delivery(&deliveries[0]).expect("decodes");
        assert_eq!(
            result,
            NodeResult {
                node_id: agent.node_id.clone(),
                result_id: "0b6f3f0e-1f7c-4a8e-9d53-6c1f1b3e2a10".to_owned(),
                message_id: "m-1".to_owned(),
                topic: "commands.output".to_owned(),
                payload: b"done".to_vec(),
                created_at,
                trace_context: trace_context.into_iter().collect(),
            }
        );
        replica.stop().await;
    }
}

#[tokio::test]
async fn a_malformed_result_closes_the_stream_with_protocol_error() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let replica = Replica::start(backend.link(), directory.clone(), test_options()).await;
    let agent = TestAgent::registered(&directory);
    let mut conn = agent.connect(replica.addr).await.expect("handshake");
    conn.send(agent_message::Body::Result(AgentResult {
        result_id: "r-1".to_owned(),
        topic: "NOT A TOPIC".to_owned(),
        ..AgentResult::default()
    }))
    .await;
    let close = conn.expect_close().await;
    assert_eq!(reason_of(&close), Reason::ProtocolError);
    assert!(conn.ended_within(WAIT).await, "the stream ends after close");
    replica.stop().await;
}

#[tokio::test]
async fn disconnect_closes_the_stream_as_deregistered() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);
        let mut conn = agent.connect(replica.addr).await.expect("handshake");

        link.disconnect(&agent.node_id, Reason::Deregistered)
            .await
            .expect("disconnect");
        let close = conn.expect_close().await;
        assert_eq!(reason_of(&close), Reason::Deregistered, "{}", backend.name);
        assert!(conn.ended_within(WAIT).await);
        eventually("presence removed", || {
            let link = link.clone();
            let node_id = agent.node_id.clone();
            async move { !link.is_connected(&node_id).await }
        })
        .await;
        // Disconnecting a node that is not connected is fine.
        link.disconnect(&agent.node_id, Reason::Deregistered)
            .await
            .expect("no-op");
        replica.stop().await;
    }
}

#[tokio::test]
async fn a_second_stream_of_a_node_replaces_the_first() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let replica = Replica::start(link.clone(), directory.clone(), test_options()).await;
        let agent = TestAgent::registered(&directory);
        let mut first = agent.connect(replica.addr).await.expect("handshake");
        let mut second = agent.connect(replica.addr).await.expect("handshake");

        let close = first.expect_close().await;
        assert_eq!(reason_of(&close), Reason::Replaced, "{}", backend.name);
        // The node stays connected through the new stream, which gets new messages.
        let id = link
            .send(outbound(&agent.node_id, "system.echo", b"x"))
            .await
            .expect("stored");
        assert_eq!(second.next_delivery().await.message_id, id);
        assert!(link.is_connected(&agent.node_id).await);
        assert_eq!(replica.edge.stream_count(), 1);
        replica.stop().await;
    }
}

#[tokio::test]
async fn too_many_handshakes_are_shed_with_a_retry_hint() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let options = ChannelOptions {
        max_handshakes: 1,
        retry_hint: Duration::from_millis(1500),
        ..test_options()
    };
    let replica = Replica::start(backend.link(), directory.clone(), options).await;
    let agent = TestAgent::registered(&directory);

    // A stream that never says hello holds the only handshake slot.
    let _stalled = AgentConn::open(replica.addr).await.expect("accepted");
    let status = AgentConn::open(replica.addr)
        .await
        .err()
        .expect("the second is shed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status
            .metadata()
            .get("retry-after-ms")
            .and_then(|value| value.to_str().ok()),
        Some("1500")
    );
    let retry = status.get_details_retry_info().expect("RetryInfo details");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));
    assert!(directory.connects_of(&agent.node_id).is_empty());
    replica.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_times_out_unauthenticated() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let options = ChannelOptions {
        handshake_timeout: Duration::from_millis(300),
        ..test_options()
    };
    let replica = Replica::start(backend.link(), directory.clone(), options).await;
    let agent = TestAgent::registered(&directory);
    let (mut conn, _nonce) = agent.hello(replica.addr).await.expect("challenge");
    let status = conn.next().await.expect_err("timed out");
    assert_eq!(status.code(), Code::Unauthenticated);
    // The slot is free again: a proper handshake works.
    agent.connect(replica.addr).await.expect("handshake");
    replica.stop().await;
}

#[tokio::test]
async fn heartbeats_reach_the_directory_in_batches() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let replica = Replica::start(backend.link(), directory.clone(), test_options()).await;
    let agent = TestAgent::registered(&directory);
    let conn = agent.connect(replica.addr).await.expect("handshake");
    assert_eq!(directory.pings_of(&agent.node_id), 0);
    conn.heartbeat().await;
    eventually("ping recorded", || {
        let count = directory.pings_of(&agent.node_id);
        async move { count >= 1 }
    })
    .await;
    replica.stop().await;
}

#[tokio::test]
async fn shutdown_closes_streams_and_a_node_moves_to_another_replica() {
    let backend = Backend::redis().await;
    let prefix = backend.redis_prefix.clone().expect("redis backend");
    let directory = Arc::new(FakeDirectory::default());
    // Each replica has its own Redis connections, as separate processes would.
    let replica_link = |db: sea_orm::DatabaseConnection| {
        let prefix = prefix.clone();
        async move {
            let (queue, presence) = redis_handles(&prefix).await;
            bosun_nodelink::NodeLink::new(db, queue, presence)
        }
    };
    let replica_a = Replica::start(
        replica_link(backend.test_db.db.clone()).await,
        directory.clone(),
        test_options(),
    )
    .await;
    let replica_b = Replica::start(
        replica_link(backend.test_db.db.clone()).await,
        directory.clone(),
        test_options(),
    )
    .await;
    let link = backend.link();
    let agent = TestAgent::registered(&directory);

    let mut conn = agent.connect(replica_a.addr).await.expect("handshake on A");
    let before = link
        .send(outbound(&agent.node_id, "system.echo", b"before"))
        .await
        .expect("stored");
    assert_eq!(
        conn.next_delivery().await.message_id,
        before,
        "pushed through A"
    );
    // Not acknowledged: it is owed after the move.

    let stopping = tokio::spawn(replica_a.stop());
    // "before" may come twice (pushed, and read as pending right after the connect).
    let close = conn.expect_close_skipping().await;
    assert_eq!(reason_of(&close), Reason::Shutdown);
    stopping.await.expect("replica A stops");
    drop(conn);

    let meanwhile = link
        .send(outbound(&agent.node_id, "system.echo", b"meanwhile"))
        .await
        .expect("stored");
    let mut conn = agent.connect(replica_b.addr).await.expect("handshake on B");
    let owed = conn.deliveries(2).await;
    assert!(owed.contains_key(&before), "the unacknowledged one");
    assert!(owed.contains_key(&meanwhile), "the one sent while offline");

    // And B now gets pushes for the node.
    let after = link
        .send(outbound(&agent.node_id, "system.echo", b"after"))
        .await
        .expect("stored");
    let next = loop {
        let delivery = conn.next_delivery().await;
        if delivery.message_id != before && delivery.message_id != meanwhile {
            break delivery;
        }
    };
    assert_eq!(next.message_id, after);
    replica_b.stop().await;
}

#[tokio::test]
async fn unacknowledged_messages_are_sent_again_on_a_live_stream() {
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let options = ChannelOptions {
            resend_after: Duration::from_millis(300),
            ..test_options()
        };
        let replica = Replica::start(link.clone(), directory.clone(), options).await;
        let agent = TestAgent::registered(&directory);
        // Stored before the connect, so only the re-send can bring it a second time.
        let id = link
            .send(outbound(&agent.node_id, "system.echo", b"again"))
            .await
            .expect("stored");
        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        assert_eq!(conn.next_delivery().await.message_id, id);
        assert_eq!(
            conn.next_delivery().await.message_id,
            id,
            "{}: sent again without an ack",
            backend.name
        );
        conn.ack(&id).await;
        eventually("ack recorded", || {
            let link = link.clone();
            let node_id = agent.node_id.clone();
            async move { link.pending(&node_id).await.is_ok_and(|p| p.is_empty()) }
        })
        .await;
        let stored = link.get(&id).await.expect("read").expect("row");
        assert!(stored.message.send_count >= 2);
        replica.stop().await;
    }
}

#[tokio::test]
async fn a_silent_stream_is_ended_after_three_heartbeat_intervals() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let options = ChannelOptions {
        heartbeat_interval: Duration::from_secs(1),
        ..test_options()
    };
    let link = backend.link();
    let replica = Replica::start(link.clone(), directory.clone(), options).await;
    let agent = TestAgent::registered(&directory);
    let mut conn = agent.connect(replica.addr).await.expect("handshake");
    assert!(conn.ended_within(WAIT).await, "the silent stream ends");
    eventually("presence removed", || {
        let link = link.clone();
        let node_id = agent.node_id.clone();
        async move { !link.is_connected(&node_id).await }
    })
    .await;
    replica.stop().await;
}

#[tokio::test]
async fn a_stream_on_another_replica_replaces_this_one() {
    let backend = Backend::redis().await;
    let prefix = backend.redis_prefix.clone().expect("redis backend");
    let directory = Arc::new(FakeDirectory::default());
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let (queue, presence) = redis_handles(&prefix).await;
        let link = bosun_nodelink::NodeLink::new(backend.test_db.db.clone(), queue, presence);
        replicas.push(Replica::start(link, directory.clone(), test_options()).await);
    }
    let agent = TestAgent::registered(&directory);
    let mut on_a = agent
        .connect(replicas[0].addr)
        .await
        .expect("handshake on A");
    let mut on_b = agent
        .connect(replicas[1].addr)
        .await
        .expect("handshake on B");

    // A learns from its presence refresh that B holds the node now.
    let close = on_a.expect_close().await;
    assert_eq!(reason_of(&close), Reason::Replaced);
    let link = backend.link();
    let id = link
        .send(outbound(&agent.node_id, "system.echo", b"to b"))
        .await
        .expect("stored");
    assert_eq!(on_b.next_delivery().await.message_id, id);
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test]
async fn an_oversized_result_closes_the_stream_with_protocol_error() {
    let backend = Backend::memory().await;
    let directory = Arc::new(FakeDirectory::default());
    let options = ChannelOptions {
        max_message_bytes: 1024,
        ..test_options()
    };
    let replica = Replica::start(backend.link(), directory.clone(), options).await;
    let agent = TestAgent::registered(&directory);
    // Over the payload limit, and over the whole-message limit of the decoder.
    for size in [2 * 1024, 200 * 1024] {
        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        conn.send(agent_message::Body::Result(AgentResult {
            result_id: "r-big".to_owned(),
            topic: "commands.output".to_owned(),
            payload: vec![1; size],
            ..AgentResult::default()
        }))
        .await;
        let close = conn.expect_close().await;
        assert_eq!(reason_of(&close), Reason::ProtocolError, "{size} bytes");
    }
    replica.stop().await;
}

/// A burst of pushes to a stream that is busy writing (its agent reads slowly) overflows the
/// stream's command queue; the pushes that did not fit must still arrive soon — the stream
/// catches up from the store — not only with the re-send, `resend_after` (30 s) later. (A
/// session's `sessions.start` dropped this way missed its attach deadline under load.)
#[tokio::test]
async fn pushes_dropped_by_a_busy_stream_arrive_without_waiting_for_the_resend() {
    const MESSAGES: usize = 64;
    // 32 MiB in all: far more than the transport's flow-control windows hold, so the stream
    // blocks writing while the agent does not read, and most pushes find its queue full.
    let payload = vec![7_u8; 512 * 1024];
    for backend in Backend::both().await {
        let directory = Arc::new(FakeDirectory::default());
        let link = backend.link();
        let options = ChannelOptions {
            resend_after: Duration::from_secs(3600),
            ..test_options()
        };
        let replica = Replica::start(link.clone(), directory.clone(), options).await;
        let agent = TestAgent::registered(&directory);
        let mut conn = agent.connect(replica.addr).await.expect("handshake");
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..MESSAGES {
            let id = link
                .send(outbound(&agent.node_id, "commands.run", &payload))
                .await
                .expect("stored");
            ids.insert(id);
        }
        let received = conn.deliveries(MESSAGES).await;
        assert_eq!(
            received
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            ids,
            "{}",
            backend.name
        );
        replica.stop().await;
    }
}
