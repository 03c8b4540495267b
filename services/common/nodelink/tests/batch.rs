//! Batched staging and pushing, withdrawal, and batched presence lookups.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bosun_nodelink::store::{STAGE_CHUNK, inbox_stream};
use bosun_proto::agent::v1::Delivery;
use common::*;
use prost::Message as _;
use sea_orm::TransactionTrait as _;

#[tokio::test]
async fn stage_many_inserts_in_chunks_only_on_commit_and_push_reaches_each_replica() {
    for backend in Backend::both().await {
        let link = backend.link();
        let count = STAGE_CHUNK + 7;
        let nodes: Vec<String> = (0..count).map(|_| random_node_id()).collect();
        // Two nodes connected to two replicas; the rest offline.
        let replicas = [
            format!("gw-a-{}", uuid::Uuid::new_v4().simple()),
            format!("gw-b-{}", uuid::Uuid::new_v4().simple()),
        ];
        for (node_id, replica) in nodes.iter().zip(&replicas) {
            backend
                .presence
                .set(node_id, replica, Duration::from_secs(60))
                .await
                .expect("presence");
            backend
                .queue
                .ensure_group(&inbox_stream(replica), "gateway")
                .await
                .expect("group");
        }
        let messages = nodes
            .iter()
            .map(|node_id| outbound(node_id, "commands.run", node_id.as_bytes()))
            .collect();

        // Rolled back: nothing stored.
        let txn = backend.test_db.db.begin().await.expect("begin");
        let ids = link.stage_many(&txn, messages).await.expect("staged");
        assert_eq!(ids.len(), count);
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), count);
        txn.rollback().await.expect("rollback");
        assert!(link.get(&ids[0]).await.expect("read").is_none());

        let messages = nodes
            .iter()
            .map(|node_id| outbound(node_id, "commands.run", node_id.as_bytes()))
            .collect();
        let txn = backend.test_db.db.begin().await.expect("begin");
        let ids = link.stage_many(&txn, messages).await.expect("staged");
        txn.commit().await.expect("commit");
        for (node_id, id) in nodes.iter().zip(&ids) {
            let pending = link.pending(node_id).await.expect("pending");
            assert_eq!(pending.len(), 1, "{}", backend.name);
            assert_eq!(&pending[0].id, id);
            assert_eq!(pending[0].payload, node_id.as_bytes());
        }

        link.push(&ids).await;
        for (node_id, replica) in nodes.iter().zip(&replicas) {
            let deliveries = backend
                .queue
                .consume(
                    &inbox_stream(replica),
                    "gateway",
                    "c",
                    10,
                    Duration::from_millis(500),
                )
                .await
                .expect("consume");
            assert_eq!(deliveries.len(), 1, "{}", backend.name);
            let delivery = Delivery::decode(deliveries[0].payload.as_ref()).expect("delivery");
            assert_eq!(delivery.payload, node_id.as_bytes());
        }
    }
}

#[tokio::test]
async fn stage_many_validates_every_message_first() {
    for backend in Backend::both().await {
        let link = backend.link();
        let good = random_node_id();
        let txn = backend.test_db.db.begin().await.expect("begin");
        let error = link
            .stage_many(
                &txn,
                vec![
                    outbound(&good, "commands.run", b"ok"),
                    outbound("bad", "commands.run", b"no"),
                ],
            )
            .await
            .expect_err("invalid node id");
        assert!(matches!(
            error,
            bosun_core::ApiError::InvalidArgument { .. }
        ));
        txn.commit().await.expect("commit");
        assert!(link.pending(&good).await.expect("pending").is_empty());
        // Nothing to stage is fine.
        let txn = backend.test_db.db.begin().await.expect("begin");
        assert!(
            link.stage_many(&txn, Vec::new())
                .await
                .expect("empty")
                .is_empty()
        );
        txn.commit().await.expect("commit");
    }
}

#[tokio::test]
async fn withdraw_expires_unacknowledged_messages_only() {
    for backend in Backend::both().await {
        let link = backend.link();
        let node_id = random_node_id();
        let kept = link
            .send(outbound(&node_id, "commands.run", b"a"))
            .await
            .expect("sent");
        let acked = link
            .send(outbound(&node_id, "commands.run", b"b"))
            .await
            .expect("sent");
        assert!(link.mark_acked(&node_id, &acked).await.expect("ack"));

        assert!(
            link.withdraw(&kept).await.expect("withdraw"),
            "{}",
            backend.name
        );
        assert!(link.pending(&node_id).await.expect("pending").is_empty());
        // Withdrawing again still says it never reached the agent.
        assert!(link.withdraw(&kept).await.expect("withdraw again"));
        // Acknowledged: too late.
        assert!(!link.withdraw(&acked).await.expect("withdraw acked"));
        assert!(
            !link
                .withdraw("00000000-0000-0000-0000-000000000000")
                .await
                .expect("unknown")
        );
        // A withdrawn message is not pushed.
        let replica = format!("gw-{}", uuid::Uuid::new_v4().simple());
        backend
            .presence
            .set(&node_id, &replica, Duration::from_secs(60))
            .await
            .expect("presence");
        backend
            .queue
            .ensure_group(&inbox_stream(&replica), "gateway")
            .await
            .expect("group");
        link.push(std::slice::from_ref(&kept)).await;
        let deliveries = backend
            .queue
            .consume(
                &inbox_stream(&replica),
                "gateway",
                "c",
                10,
                Duration::from_millis(200),
            )
            .await
            .expect("consume");
        assert!(deliveries.is_empty(), "{}", backend.name);
    }
}

#[tokio::test]
async fn presence_get_many_matches_get() {
    for backend in Backend::both().await {
        let nodes: Vec<String> = (0..5).map(|_| random_node_id()).collect();
        backend
            .presence
            .set(&nodes[1], "r1", Duration::from_secs(60))
            .await
            .expect("set");
        backend
            .presence
            .set(&nodes[3], "r2", Duration::from_secs(60))
            .await
            .expect("set");
        let holders = backend.presence.get_many(&nodes).await.expect("get many");
        assert_eq!(
            holders,
            [
                None,
                Some("r1".to_owned()),
                None,
                Some("r2".to_owned()),
                None
            ],
            "{}",
            backend.name
        );
        assert!(
            backend
                .presence
                .get_many(&[])
                .await
                .expect("empty")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn acks_are_recorded_in_batches_and_only_for_their_own_node() {
    for backend in Backend::both().await {
        let link = backend.link();
        let nodes: Vec<String> = (0..STAGE_CHUNK + 3).map(|_| random_node_id()).collect();
        let mut ids = Vec::new();
        for node_id in &nodes {
            ids.push(
                link.send(outbound(node_id, "commands.run", b"x"))
                    .await
                    .expect("stored"),
            );
        }
        // The last message is acked by a node it does not belong to: nothing happens.
        let mut acks: Vec<(String, String)> = nodes
            .iter()
            .zip(&ids)
            .take(nodes.len() - 1)
            .map(|(node_id, id)| (node_id.clone(), id.clone()))
            .collect();
        acks.push((nodes[0].clone(), ids[nodes.len() - 1].clone()));
        let marked = link.mark_acked_many(&acks).await.expect("marked");
        assert_eq!(marked, (nodes.len() - 1) as u64, "{}", backend.name);
        for node_id in &nodes[..nodes.len() - 1] {
            assert!(link.pending(node_id).await.expect("pending").is_empty());
        }
        assert_eq!(
            link.pending(&nodes[nodes.len() - 1])
                .await
                .expect("pending")
                .len(),
            1,
            "{}: acked by another node",
            backend.name
        );
        // Again: already acked, nothing new.
        assert_eq!(link.mark_acked_many(&acks).await.expect("again"), 0);
    }
}
