//! Change events: every committed put, overwrite, label, unlabel and delete is published to
//! the `events` stream, in order, with name, version, type and principal and never a value;
//! a failed write publishes nothing. On SQLite and PostgreSQL, over the in-process queue and
//! Redis.

mod service_common;

use bosun_proto::parameters::v1 as pb;
use service_common::*;
use tonic::Code;

const SECRET: &str = "plaintext-hunter2-do-not-publish";
const SECRET_TWO: &str = "second-plaintext-do-not-publish";

fn secure_put(name: &str, value: &str, overwrite: bool) -> pb::PutParameterRequest {
    pb::PutParameterRequest {
        name: name.into(),
        value: value.into(),
        r#type: pb::ParameterType::SecureString as i32,
        overwrite,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_publish_events_in_order_without_values() {
    for kind in QUEUE_KINDS {
        for test_db in bosun_store::testing::both().await {
            let events = TestQueue::new(kind).await;
            let h = Harness::start_with(test_db, Some(events.queue.clone()), None).await;
            let name = "/app/db/password";

            h.put(ALICE, secure_put(name, SECRET, false))
                .await
                .expect("create");
            h.put(ALICE, secure_put(name, SECRET_TWO, true))
                .await
                .expect("overwrite");
            h.client()
                .label_parameter_version(h.req(
                    ADMIN,
                    pb::LabelParameterVersionRequest {
                        name: name.into(),
                        parameter_version: 1,
                        labels: vec!["prod".into()],
                    },
                ))
                .await
                .expect("label");
            h.client()
                .unlabel_parameter_version(h.req(
                    ADMIN,
                    pb::UnlabelParameterVersionRequest {
                        name: name.into(),
                        parameter_version: 1,
                        labels: vec!["prod".into()],
                    },
                ))
                .await
                .expect("unlabel");
            h.client()
                .delete_parameter(h.req(ALICE, pb::DeleteParameterRequest { name: name.into() }))
                .await
                .expect("delete");

            let published = take_events(&events.queue).await;
            let summary: Vec<(&str, i64, &str)> = published
                .iter()
                .map(|e| {
                    (
                        e.operation(),
                        e.json["version"].as_i64().unwrap_or(-1),
                        e.field("principal"),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                vec![
                    ("Create", 1, ALICE),
                    ("Update", 2, ALICE),
                    ("LabelParameterVersion", 1, ADMIN),
                    ("UnlabelParameterVersion", 1, ADMIN),
                    ("Delete", 2, ALICE),
                ],
                "{kind:?}"
            );
            let mut ids = std::collections::BTreeSet::new();
            for event in &published {
                assert_eq!(event.field("source"), "parameters");
                assert_eq!(event.field("name"), name);
                assert_eq!(event.field("type"), "SecureString");
                assert!(
                    chrono::DateTime::parse_from_rfc3339(event.field("time")).is_ok(),
                    "time is RFC 3339: {}",
                    event.raw
                );
                let id = uuid::Uuid::parse_str(event.field("event_id")).expect("a uuid event id");
                assert!(ids.insert(id), "event ids are unique");
                assert!(event.json.get("value").is_none(), "{}", event.raw);
                assert!(
                    !event.raw.contains(SECRET) && !event.raw.contains(SECRET_TWO),
                    "a SecureString plaintext leaked into an event: {}",
                    event.raw
                );
            }
            h.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_publish_nothing() {
    for kind in QUEUE_KINDS {
        for test_db in bosun_store::testing::both().await {
            let events = TestQueue::new(kind).await;
            let h = Harness::start_with(test_db, Some(events.queue.clone()), None).await;

            h.put_string("/app/one", "1", false).await;
            assert_eq!(
                take_events(&events.queue)
                    .await
                    .iter()
                    .map(|e| e.operation().to_owned())
                    .collect::<Vec<_>>(),
                vec!["Create"]
            );

            // Exists without overwrite; a denied caller; a missing parameter; a version
            // that does not exist; a value that breaks the type.
            assert_error(
                h.put(
                    ALICE,
                    pb::PutParameterRequest {
                        name: "/app/one".into(),
                        value: "2".into(),
                        r#type: pb::ParameterType::String as i32,
                        ..Default::default()
                    },
                )
                .await,
                Code::AlreadyExists,
                "ParameterAlreadyExists",
            );
            let denied = h
                .put(
                    NOBODY,
                    pb::PutParameterRequest {
                        name: "/app/two".into(),
                        value: "2".into(),
                        r#type: pb::ParameterType::String as i32,
                        ..Default::default()
                    },
                )
                .await;
            assert_eq!(denied.expect_err("denied").code(), Code::PermissionDenied);
            assert_error(
                h.client()
                    .delete_parameter(h.req(
                        ALICE,
                        pb::DeleteParameterRequest {
                            name: "/app/missing".into(),
                        },
                    ))
                    .await,
                Code::NotFound,
                "ParameterNotFound",
            );
            assert_error(
                h.client()
                    .label_parameter_version(h.req(
                        ALICE,
                        pb::LabelParameterVersionRequest {
                            name: "/app/one".into(),
                            parameter_version: 9,
                            labels: vec!["prod".into()],
                        },
                    ))
                    .await,
                Code::NotFound,
                "ParameterVersionNotFound",
            );
            assert!(
                take_events(&events.queue).await.is_empty(),
                "failed writes published events ({kind:?})"
            );

            // DeleteParameters publishes one Delete per parameter it actually deleted.
            let response = h
                .client()
                .delete_parameters(h.req(
                    ALICE,
                    pb::DeleteParametersRequest {
                        names: vec!["/app/one".into(), "/app/missing".into()],
                    },
                ))
                .await
                .expect("delete parameters")
                .into_inner();
            assert_eq!(response.deleted_parameters, vec!["/app/one".to_owned()]);
            assert_eq!(response.invalid_parameters, vec!["/app/missing".to_owned()]);
            let deletes = take_events(&events.queue).await;
            assert_eq!(deletes.len(), 1, "{deletes:?}");
            assert_eq!(deletes[0].operation(), "Delete");
            assert_eq!(deletes[0].field("name"), "/app/one");
            assert_eq!(deletes[0].field("type"), "String");
            h.stop().await;
        }
    }
}

/// A queue that is down: every publish fails.
struct DownQueue;

#[async_trait::async_trait]
impl bosun_queue::Queue for DownQueue {
    async fn publish(
        &self,
        _stream: &str,
        _payload: &[u8],
        _headers: &bosun_queue::Headers,
    ) -> Result<String, bosun_queue::QueueError> {
        Err(bosun_queue::QueueError::Connect("queue is down".into()))
    }

    async fn ensure_group(&self, _: &str, _: &str) -> Result<(), bosun_queue::QueueError> {
        Ok(())
    }

    async fn consume(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: usize,
        _: std::time::Duration,
    ) -> Result<Vec<bosun_queue::Delivery>, bosun_queue::QueueError> {
        Ok(Vec::new())
    }

    async fn ack(&self, _: &str, _: &str, _: &[String]) -> Result<(), bosun_queue::QueueError> {
        Ok(())
    }

    async fn pending(&self, _: &str, _: &str) -> Result<u64, bosun_queue::QueueError> {
        Ok(0)
    }

    async fn dead_letters(
        &self,
        _: &str,
        _: usize,
    ) -> Result<Vec<bosun_queue::Delivery>, bosun_queue::QueueError> {
        Ok(Vec::new())
    }

    async fn trim(&self, _: &str) -> Result<u64, bosun_queue::QueueError> {
        Ok(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_does_not_fail_the_committed_write() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start_with(test_db, Some(std::sync::Arc::new(DownQueue)), None).await;
        assert_eq!(h.put_string("/app/one", "1", false).await, 1);
        assert_eq!(h.put_string("/app/one", "2", true).await, 2);
        assert_eq!(
            h.get(ALICE, "/app/one", false).await.expect("get").value,
            "2"
        );
        h.client()
            .delete_parameter(h.req(
                ALICE,
                pb::DeleteParameterRequest {
                    name: "/app/one".into(),
                },
            ))
            .await
            .expect("delete succeeds with the queue down");
        h.stop().await;
    }
}

/// A queue that can be taken down and brought back.
struct SwitchQueue {
    down: std::sync::atomic::AtomicBool,
    inner: bosun_queue::MemoryQueue,
}

#[async_trait::async_trait]
impl bosun_queue::Queue for SwitchQueue {
    async fn publish(
        &self,
        stream: &str,
        payload: &[u8],
        headers: &bosun_queue::Headers,
    ) -> Result<String, bosun_queue::QueueError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(bosun_queue::QueueError::Connect("queue is down".into()));
        }
        self.inner.publish(stream, payload, headers).await
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), bosun_queue::QueueError> {
        self.inner.ensure_group(stream, group).await
    }

    async fn consume(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: std::time::Duration,
    ) -> Result<Vec<bosun_queue::Delivery>, bosun_queue::QueueError> {
        self.inner
            .consume(stream, group, consumer, max, block)
            .await
    }

    async fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[String],
    ) -> Result<(), bosun_queue::QueueError> {
        self.inner.ack(stream, group, ids).await
    }

    async fn pending(&self, stream: &str, group: &str) -> Result<u64, bosun_queue::QueueError> {
        self.inner.pending(stream, group).await
    }

    async fn dead_letters(
        &self,
        stream: &str,
        max: usize,
    ) -> Result<Vec<bosun_queue::Delivery>, bosun_queue::QueueError> {
        self.inner.dead_letters(stream, max).await
    }

    async fn trim(&self, stream: &str) -> Result<u64, bosun_queue::QueueError> {
        self.inner.trim(stream).await
    }
}

/// Changes committed while the queue is down are not lost: they wait in the outbox, and the
/// relay publishes them, in order, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_changes_made_while_the_queue_was_down_are_published_when_it_is_back() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    for test_db in bosun_store::testing::both().await {
        let switch = Arc::new(SwitchQueue {
            down: true.into(),
            inner: bosun_queue::MemoryQueue::new(bosun_queue::QueueOptions::default()),
        });
        let queue: Arc<dyn bosun_queue::Queue> = switch.clone();
        queue
            .ensure_group(bosun_parameters::EVENTS_STREAM, "test")
            .await
            .expect("group");
        let db = test_db.db.clone();
        let h = Harness::start_with(test_db, Some(queue.clone()), None).await;
        assert_eq!(h.put_string("/app/outage", "1", false).await, 1);
        assert_eq!(h.put_string("/app/outage", "2", true).await, 2);
        h.client()
            .delete_parameter(h.req(
                ALICE,
                pb::DeleteParameterRequest {
                    name: "/app/outage".into(),
                },
            ))
            .await
            .expect("delete with the queue down");
        assert!(h.events.is_some());
        let read = queue
            .consume(
                bosun_parameters::EVENTS_STREAM,
                "test",
                "c",
                10,
                std::time::Duration::ZERO,
            )
            .await
            .expect("consume");
        assert!(read.is_empty(), "nothing could be published yet");

        switch.down.store(false, Ordering::SeqCst);
        let relay = bosun_parameters::EventPublisher::new(queue.clone(), db);
        assert_eq!(relay.flush().await.expect("relay"), 3);
        let read = queue
            .consume(
                bosun_parameters::EVENTS_STREAM,
                "test",
                "c",
                10,
                std::time::Duration::ZERO,
            )
            .await
            .expect("consume");
        let seen: Vec<(String, i64)> = read
            .iter()
            .map(|delivery| {
                let json: serde_json::Value =
                    serde_json::from_slice(&delivery.payload).expect("json");
                (
                    json["operation"].as_str().unwrap_or_default().to_owned(),
                    json["version"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("Create".to_owned(), 1),
                ("Update".to_owned(), 2),
                ("Delete".to_owned(), 2)
            ]
        );
        assert_eq!(relay.flush().await.expect("nothing left"), 0);
        h.stop().await;
    }
}
