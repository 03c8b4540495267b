//! `NodeLink` storage and presence on their own: validation, staging in a transaction,
//! pending order, and the presence contract on Redis and in memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bosun_core::ApiError;
use bosun_nodelink::presence::{MemoryPresence, Presence};
use bosun_nodelink::store::{KIND_DELIVERY, KIND_HEADER, NODE_HEADER, inbox_stream};
use bosun_nodelink::{NodeLink, NodeResult};
use bosun_proto::agent::v1::Delivery;
use common::*;
use prost::Message as _;
use sea_orm::TransactionTrait as _;

fn fields(error: ApiError) -> Vec<String> {
    match error {
        ApiError::InvalidArgument { violations, .. } => {
            violations.into_iter().map(|v| v.field).collect()
        }
        other => panic!("expected invalid argument, got {other:?}"),
    }
}

#[tokio::test]
async fn send_validates_each_field() {
    for backend in Backend::both().await {
        let link = backend.link();
        let node_id = random_node_id();
        let cases = [
            (outbound("mi-123", "system.echo", b""), "node_id"),
            (outbound(&node_id, "echo", b""), "topic"),
            (outbound(&node_id, "System.echo", b""), "topic"),
            (
                outbound(&node_id, "system.echo", &vec![0; 4 * 1024 * 1024 + 1]),
                "payload",
            ),
        ];
        for (message, field) in cases {
            let error = link.send(message).await.expect_err("invalid");
            assert_eq!(fields(error), [field], "{}", backend.name);
        }
        assert!(link.pending(&node_id).await.expect("read").is_empty());
        // The largest payload is fine.
        link.send(outbound(&node_id, "system.echo", &vec![7; 4 * 1024 * 1024]))
            .await
            .expect("4 MiB is allowed");
    }
}

#[tokio::test]
async fn pending_is_unacked_unexpired_oldest_first() {
    for backend in Backend::both().await {
        let link = backend.link();
        let node_id = random_node_id();
        let mut ids = Vec::new();
        for index in 0..5 {
            ids.push(
                link.send(outbound(
                    &node_id,
                    "system.echo",
                    format!("{index}").as_bytes(),
                ))
                .await
                .expect("stored"),
            );
        }
        let mut expired = outbound(&node_id, "system.echo", b"old");
        expired.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
        link.send(expired).await.expect("stored");
        link.send(outbound(&random_node_id(), "system.echo", b"other node"))
            .await
            .expect("stored");

        assert!(link.mark_acked(&node_id, &ids[1]).await.expect("ack"));
        assert!(!link.mark_acked(&node_id, &ids[1]).await.expect("ack again"));
        assert!(
            !link
                .mark_acked(&random_node_id(), &ids[2])
                .await
                .expect("foreign ack"),
            "a node cannot ack another node's message"
        );
        let pending: Vec<String> = link
            .pending(&node_id)
            .await
            .expect("read")
            .into_iter()
            .map(|message| message.id)
            .collect();
        assert_eq!(
            pending,
            [
                ids[0].clone(),
                ids[2].clone(),
                ids[3].clone(),
                ids[4].clone()
            ],
            "{}",
            backend.name
        );

        let page = link.pending_page(&node_id, None, 2).await.expect("read");
        let last = page.last().expect("two");
        let rest: Vec<String> = link
            .pending_page(&node_id, Some((last.created_at, last.id.clone())), 10)
            .await
            .expect("read")
            .into_iter()
            .map(|message| message.id)
            .collect();
        assert_eq!(rest, [ids[3].clone(), ids[4].clone()]);
    }
}

#[tokio::test]
async fn staged_messages_exist_only_after_commit_and_are_pushed_on_request() {
    for backend in Backend::both().await {
        let link = backend.link();
        let node_id = random_node_id();
        // The node is "connected" to a replica whose inbox we read.
        let replica = format!("gw-test-{}", uuid::Uuid::new_v4().simple());
        backend
            .presence
            .set(&node_id, &replica, Duration::from_secs(60))
            .await
            .expect("presence");
        let inbox = inbox_stream(&replica);
        backend
            .queue
            .ensure_group(&inbox, "gateway")
            .await
            .expect("group");

        let txn = backend.test_db.db.begin().await.expect("begin");
        let id = link
            .stage(&txn, outbound(&node_id, "commands.run", b"staged"))
            .await
            .expect("staged");
        txn.rollback().await.expect("rollback");
        assert!(link.pending(&node_id).await.expect("read").is_empty());
        link.push(&[id]).await;

        let txn = backend.test_db.db.begin().await.expect("begin");
        let id = link
            .stage(&txn, outbound(&node_id, "commands.run", b"staged"))
            .await
            .expect("staged");
        txn.commit().await.expect("commit");
        link.push(std::slice::from_ref(&id)).await;

        let pushed = backend
            .queue
            .consume(&inbox, "gateway", "c", 10, Duration::from_secs(1))
            .await
            .expect("consume");
        assert_eq!(pushed.len(), 1, "{}: only the committed one", backend.name);
        assert_eq!(
            pushed[0].headers.get(KIND_HEADER).map(String::as_str),
            Some(KIND_DELIVERY)
        );
        assert_eq!(pushed[0].headers.get(NODE_HEADER), Some(&node_id));
        let delivery = Delivery::decode(pushed[0].payload.as_ref()).expect("a Delivery");
        assert_eq!(delivery.message_id, id);
        assert_eq!(delivery.payload, b"staged");
        assert_eq!(delivery.topic, "commands.run");
    }
}

#[tokio::test]
async fn sending_to_an_offline_node_pushes_nothing() {
    let backend = Backend::memory().await;
    let link = backend.link();
    let node_id = random_node_id();
    link.send(outbound(&node_id, "system.echo", b"x"))
        .await
        .expect("stored");
    assert!(!link.is_connected(&node_id).await);
    assert_eq!(link.pending(&node_id).await.expect("read").len(), 1);
}

#[tokio::test]
async fn node_results_round_trip_through_queue_headers() {
    let result = NodeResult {
        node_id: random_node_id(),
        result_id: "r-1".to_owned(),
        message_id: String::new(),
        topic: "inventory.put".to_owned(),
        payload: vec![0, 1, 2, 255],
        created_at: chrono::DateTime::from_timestamp(1_764_000_000, 123_456_789).expect("time"),
        trace_context: [(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]
        .into_iter()
        .collect(),
    };
    let (payload, headers) = result.to_queue();
    assert_eq!(
        headers.get("traceparent"),
        result.trace_context.get("traceparent"),
        "trace context travels as W3C headers"
    );
    let delivery = bosun_queue::Delivery {
        stream: "node-results.inventory".to_owned(),
        id: "1-0".to_owned(),
        payload,
        headers: headers.clone(),
        delivery_count: 1,
    };
    assert_eq!(
        NodeResult::from_delivery(&delivery).expect("decodes"),
        result
    );

    let mut broken = delivery;
    broken.headers.remove("bosun-result-id");
    let error = NodeResult::from_delivery(&broken).expect_err("missing header");
    assert!(error.reason.contains("bosun-result-id"), "{error}");
}

async fn presence_contract(presence: Arc<dyn Presence>) {
    let node = random_node_id();
    let other = random_node_id();
    let ttl = Duration::from_secs(60);
    assert_eq!(presence.get(&node).await.expect("get"), None);
    presence.set(&node, "gw-a", ttl).await.expect("set");
    assert_eq!(
        presence.get(&node).await.expect("get").as_deref(),
        Some("gw-a")
    );

    assert!(
        !presence.remove_if(&node, "gw-b").await.expect("remove"),
        "not b's"
    );
    assert_eq!(
        presence.get(&node).await.expect("get").as_deref(),
        Some("gw-a")
    );

    presence
        .set(&node, "gw-b", ttl)
        .await
        .expect("b takes over");
    let lost = presence
        .refresh_many(&[node.clone(), other.clone()], "gw-a", ttl)
        .await
        .expect("refresh");
    assert_eq!(
        lost,
        std::slice::from_ref(&node),
        "b holds node; other is (re)claimed by a"
    );
    assert_eq!(
        presence.get(&other).await.expect("get").as_deref(),
        Some("gw-a")
    );
    assert_eq!(
        presence.get(&node).await.expect("get").as_deref(),
        Some("gw-b")
    );

    assert!(presence.remove_if(&node, "gw-b").await.expect("remove"));
    assert_eq!(presence.get(&node).await.expect("get"), None);

    presence
        .set(&node, "gw-a", Duration::from_millis(50))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        presence.get(&node).await.expect("get"),
        None,
        "claims expire"
    );
}

#[tokio::test]
async fn presence_contract_in_memory() {
    presence_contract(Arc::new(MemoryPresence::new())).await;
}

#[tokio::test]
async fn presence_contract_in_redis() {
    let prefix = format!("test-nodelink-{}:", uuid::Uuid::new_v4().simple());
    let (_queue, presence) = redis_handles(&prefix).await;
    presence_contract(presence).await;
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for backend in Backend::both().await {
        bosun_store::migrate::<bosun_nodelink::Migrator>(&backend.test_db.db)
            .await
            .expect("second run is a no-op");
        let _link: NodeLink = backend.link();
    }
}

#[tokio::test]
async fn purge_removes_only_settled_messages() {
    for backend in Backend::both().await {
        let link = backend.link();
        let node_id = random_node_id();
        let acked = link
            .send(outbound(&node_id, "system.echo", b"a"))
            .await
            .expect("stored");
        let open = link
            .send(outbound(&node_id, "system.echo", b"b"))
            .await
            .expect("stored");
        let mut expiring = outbound(&node_id, "system.echo", b"c");
        expiring.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(10));
        let expired = link.send(expiring).await.expect("stored");
        assert!(link.mark_acked(&node_id, &acked).await.expect("ack"));

        let purged = link
            .purge_settled(chrono::Utc::now() + chrono::Duration::seconds(1))
            .await
            .expect("purge");
        assert_eq!(purged, 2, "{}", backend.name);
        assert!(link.get(&acked).await.expect("read").is_none());
        assert!(link.get(&expired).await.expect("read").is_none());
        assert!(link.get(&open).await.expect("read").is_some());
    }
}
