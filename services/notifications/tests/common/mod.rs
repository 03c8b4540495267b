//! Test harness: the NotificationService and the AuditService in-process behind `VerifyLayer`
//! on a loopback port, over a fresh database and an in-process (or Redis) queue, with
//! internal tokens minted per caller, and the workers started on demand.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bosun_notifications::{
    CONSUMER_GROUP, DeliveryWorker, IntakeWorker, NotificationServiceImpl, NotificationsConfig,
};
use bosun_parameters::ChangeOperation;
use bosun_parameters::{EVENTS_STREAM, KeySource, MasterKeyRing};
use bosun_proto::audit::v1 as audit_pb;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::notifications::v1 as pb;
use bosun_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use bosun_queue::{MemoryQueue, Queue, QueueOptions};
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer};
// Not every test binary uses both.
#[allow(unused_imports)]
pub use bosun_testkit::{assert_error, violated_fields};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Channel;

pub const ADMIN: &str = "user/admin";
pub const NOBODY: &str = "user/nobody";
/// May only read webhooks.
pub const READER: &str = "user/reader";

const READER_POLICY: &str = r#"{"Statement": {"Effect": "Allow", "Action": ["notifications:GetWebhook", "notifications:ListWebhooks"], "Resource": "*"}}"#;

/// Milliseconds everywhere, so retries happen within a test.
pub fn fast_config() -> NotificationsConfig {
    NotificationsConfig {
        request_timeout: Duration::from_millis(500),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_millis(400),
        max_attempts: 12,
        poll_interval: Duration::from_millis(50),
    }
}

/// `who` with the policies its constant describes; anyone else has none.
pub fn caller(who: &str) -> Caller {
    let caller = Caller::new(who);
    match who {
        ADMIN => caller.policy(ALLOW_ALL),
        READER => caller.policy(READER_POLICY),
        _ => caller,
    }
}

pub struct Harness {
    pub test_db: TestDatabase,
    pub queue: Arc<dyn Queue>,
    pub keys: Arc<MasterKeyRing>,
    /// What the service and the workers take their keys from: `keys`, unless a test passes
    /// a key file.
    pub key_source: Arc<KeySource>,
    pub config: NotificationsConfig,
    server: TestServer,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Harness {
    pub async fn start(test_db: TestDatabase) -> Harness {
        Self::start_with(
            test_db,
            fast_config(),
            Arc::new(MemoryQueue::new(QueueOptions::default())),
        )
        .await
    }

    pub async fn start_with(
        test_db: TestDatabase,
        config: NotificationsConfig,
        queue: Arc<dyn Queue>,
    ) -> Harness {
        let keys = Arc::new(MasterKeyRing::generate_default().expect("key ring"));
        let source = Arc::new(KeySource::fixed(keys));
        Self::start_with_keys(test_db, config, queue, source).await
    }

    pub async fn start_with_keys(
        test_db: TestDatabase,
        config: NotificationsConfig,
        queue: Arc<dyn Queue>,
        key_source: Arc<KeySource>,
    ) -> Harness {
        bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
            .await
            .expect("audit migrations apply");
        bosun_store::migrate::<bosun_notifications::Migrator>(&test_db.db)
            .await
            .expect("notifications migrations apply");
        let keys = key_source.current();
        let service = NotificationServiceImpl::new(
            test_db.db.clone(),
            bosun_audit::AuditLog::new(test_db.db.clone()),
            Arc::clone(&keys),
        )
        .with_key_source(Arc::clone(&key_source));
        let audit = bosun_audit::AuditServiceImpl::new(test_db.db.clone());
        let server =
            TestServer::start(Routes::new(service.into_server()).add_service(audit.into_server()))
                .await;
        queue
            .ensure_group(EVENTS_STREAM, CONSUMER_GROUP)
            .await
            .expect("consumer group");
        Harness {
            test_db,
            queue,
            keys,
            key_source,
            config,
            server,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    pub fn client(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.server.channel())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.server.channel())
    }

    /// A request from `who` with an internal token carrying its policies.
    pub fn req<T>(&self, who: &str, body: T) -> tonic::Request<T> {
        self.server.request(&caller(who), body)
    }

    /// Creates a webhook as admin; returns it with its secret.
    pub async fn create(
        &self,
        url: &str,
        filters: Option<pb::WebhookFilters>,
        enabled: Option<bool>,
    ) -> (pb::Webhook, String) {
        let response = self
            .client()
            .create_webhook(self.req(
                ADMIN,
                pb::CreateWebhookRequest {
                    url: url.into(),
                    description: "test hook".into(),
                    filters,
                    enabled,
                },
            ))
            .await
            .expect("create webhook")
            .into_inner();
        (response.webhook.expect("a webhook"), response.secret)
    }

    /// The deliveries of a webhook, newest first, every page.
    pub async fn deliveries(&self, webhook_id: &str) -> Vec<pb::WebhookDelivery> {
        let mut all = Vec::new();
        let mut next_token = String::new();
        loop {
            let page = self
                .client()
                .list_webhook_deliveries(self.req(
                    ADMIN,
                    pb::ListWebhookDeliveriesRequest {
                        webhook_id: webhook_id.into(),
                        max_results: 0,
                        next_token: next_token.clone(),
                    },
                ))
                .await
                .expect("list deliveries")
                .into_inner();
            all.extend(page.deliveries);
            if page.next_token.is_empty() {
                return all;
            }
            next_token = page.next_token;
        }
    }

    /// Polls the deliveries of `webhook_id` until `done` holds, or panics at `timeout`.
    pub async fn wait_deliveries(
        &self,
        webhook_id: &str,
        timeout: Duration,
        done: impl Fn(&[pb::WebhookDelivery]) -> bool,
    ) -> Vec<pb::WebhookDelivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let deliveries = self.deliveries(webhook_id).await;
            if done(&deliveries) {
                return deliveries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries of {webhook_id} did not reach the expected state within {timeout:?}: {deliveries:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes a change event in the Parameter Store's wire format (its `ChangeEvent`
    /// JSON on the stream `events`); returns its event id.
    pub async fn publish(&self, operation: ChangeOperation, name: &str) -> String {
        let (event_id, payload) = event_payload(operation, name);
        self.queue
            .publish(EVENTS_STREAM, &payload, &bosun_queue::Headers::new())
            .await
            .expect("publish an event");
        event_id
    }

    pub fn intake(&self) -> IntakeWorker {
        IntakeWorker::new(
            self.test_db.db.clone(),
            Arc::clone(&self.queue),
            self.config.clone(),
        )
    }

    pub fn delivery(&self) -> DeliveryWorker {
        DeliveryWorker::new(
            self.test_db.db.clone(),
            Arc::clone(&self.keys),
            self.config.clone(),
        )
        .expect("delivery worker")
        .with_key_source(Arc::clone(&self.key_source))
    }

    /// Reads everything waiting on the events stream and records its deliveries; returns
    /// how many deliveries were new.
    pub async fn take_events(&self, intake: &IntakeWorker) -> u64 {
        let mut created = 0;
        loop {
            let messages = self
                .queue
                .consume(EVENTS_STREAM, CONSUMER_GROUP, "test", 100, Duration::ZERO)
                .await
                .expect("consume");
            if messages.is_empty() {
                return created;
            }
            created += intake.process(&messages).await.expect("process events");
        }
    }

    /// Runs a delivery worker in the background until the harness stops; the handle lets a
    /// test kill it.
    pub fn spawn_delivery(&mut self, worker: DeliveryWorker) -> tokio::task::AbortHandle {
        let shutdown = self.shutdown.child_token();
        let task = tokio::spawn(async move {
            worker.run(shutdown).await.expect("delivery worker");
        });
        let handle = task.abort_handle();
        self.tasks.push(task);
        handle
    }

    /// Runs both workers in the background, the intake waking the delivery worker.
    pub fn spawn_workers(&mut self) {
        let delivery = self.delivery();
        let intake = self.intake().with_wake(delivery.wake_handle());
        self.spawn_delivery(delivery);
        let shutdown = self.shutdown.child_token();
        self.tasks.push(tokio::spawn(async move {
            intake.run(shutdown).await.expect("intake worker");
        }));
    }

    /// Audit events for `action`, newest first.
    pub async fn audit_events(&self, action: &str) -> Vec<audit_pb::AuditEvent> {
        self.audit()
            .list_audit_events(self.req(
                ADMIN,
                audit_pb::ListAuditEventsRequest {
                    action: action.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list audit events")
            .into_inner()
            .events
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.server.stop();
        self.test_db.cleanup().await;
    }
}

pub fn filters(sources: &[&str], operations: &[&str], prefixes: &[&str]) -> pb::WebhookFilters {
    let own = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    pb::WebhookFilters {
        sources: own(sources),
        operations: own(operations),
        name_prefixes: own(prefixes),
    }
}

/// A change event as the Parameter Store publishes it (no value, ever): its id and JSON.
pub fn event_payload(operation: ChangeOperation, name: &str) -> (String, Vec<u8>) {
    let event_id = uuid::Uuid::now_v7().to_string();
    let payload = serde_json::json!({
        "source": "parameters",
        "operation": operation.as_str(),
        "name": name,
        "version": 1,
        "type": "String",
        "principal": ADMIN,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "event_id": event_id,
    });
    (event_id, serde_json::to_vec(&payload).expect("json"))
}
