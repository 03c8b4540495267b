//! Test harness for the ParameterService: the service and the AuditService in-process behind
//! `VerifyLayer` on a loopback port, over a fresh database, with internal tokens minted per
//! caller; optionally with a change-event queue (in process or Redis) and a manual clock.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bosun_parameters::{Clock, MasterKeyRing, PolicyWorker};
use bosun_proto::audit::v1 as audit_pb;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::parameters::v1 as pb;
use bosun_proto::parameters::v1::parameter_service_client::ParameterServiceClient;
use bosun_queue::{MemoryQueue, Queue, QueueOptions, RedisQueue};
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer};
// Not every test binary uses both.
#[allow(unused_imports)]
pub use bosun_testkit::{assert_error, violated_fields};
use sea_orm::{ConnectionTrait, Statement};
use tonic::service::Routes;
use tonic::transport::Channel;

/// Everything, including `parameters:Decrypt`.
pub const ADMIN: &str = "user/admin";
/// Every parameters action on every parameter.
pub const ALICE: &str = "user/alice";
/// Every parameters action except decrypting.
pub const BOB: &str = "user/bob";
/// Every parameters action, on `/app/dev/*` only.
pub const DEV: &str = "user/dev";
/// No policies at all.
pub const NOBODY: &str = "user/nobody";

const ALICE_POLICY: &str =
    r#"{"Statement": {"Effect": "Allow", "Action": "parameters:*", "Resource": "*"}}"#;
const BOB_POLICY: &str = r#"{"Statement": [
    {"Effect": "Allow", "Action": "parameters:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "parameters:Decrypt", "Resource": "*"}
]}"#;
const DEV_POLICY: &str = r#"{"Statement": {"Effect": "Allow", "Action": "parameters:*",
    "Resource": "parameter:/app/dev/*"}}"#;

/// A second master key the ring holds, besides the default.
pub const OTHER_KEY: &str = "alias/other";

/// `who` with the policies its constant describes; anyone else has none.
pub fn caller(who: &str) -> Caller {
    let caller = Caller::new(who);
    match who {
        ADMIN => caller.policy(ALLOW_ALL),
        ALICE => caller.policy(ALICE_POLICY),
        BOB => caller.policy(BOB_POLICY),
        DEV => caller.policy(DEV_POLICY),
        _ => caller,
    }
}

pub struct Harness {
    pub test_db: TestDatabase,
    /// The queue change events go to, when the harness was started with one.
    pub events: Option<Arc<dyn Queue>>,
    /// The clock the service stamps versions with, when the harness was started with one.
    pub clock: Option<Arc<dyn Clock>>,
    /// Poked by the service on writes with policies; shared with [`Harness::worker`].
    policy_wake: Arc<tokio::sync::Notify>,
    server: TestServer,
}

impl Harness {
    pub async fn start(test_db: TestDatabase) -> Harness {
        Harness::start_with(test_db, None, None).await
    }

    /// Starts the service publishing change events to `events` and stamping versions with
    /// `clock`.
    pub async fn start_with(
        test_db: TestDatabase,
        events: Option<Arc<dyn Queue>>,
        clock: Option<Arc<dyn Clock>>,
    ) -> Harness {
        bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
            .await
            .expect("audit migrations apply");
        bosun_store::migrate::<bosun_parameters::Migrator>(&test_db.db)
            .await
            .expect("parameters migrations apply");
        let mut ring = MasterKeyRing::generate_default().expect("key ring");
        ring.generate(OTHER_KEY).expect("second key");
        let mut parameters = bosun_parameters::ParameterServiceImpl::new(
            test_db.db.clone(),
            bosun_audit::AuditLog::new(test_db.db.clone()),
            Arc::new(ring),
        );
        if let Some(queue) = &events {
            parameters = parameters.with_events(Arc::clone(queue));
        }
        if let Some(clock) = &clock {
            parameters = parameters.with_clock(Arc::clone(clock));
        }
        let policy_wake = Arc::new(tokio::sync::Notify::new());
        parameters = parameters.with_policy_wake(Arc::clone(&policy_wake));
        let audit = bosun_audit::AuditServiceImpl::new(test_db.db.clone());
        let server = TestServer::start(
            Routes::new(parameters.into_server()).add_service(audit.into_server()),
        )
        .await;
        Harness {
            test_db,
            events,
            clock,
            policy_wake,
            server,
        }
    }

    /// A policy worker over the harness's database, queue and clock.
    pub fn worker(&self) -> PolicyWorker {
        PolicyWorker::new(
            self.test_db.db.clone(),
            bosun_audit::AuditLog::new(self.test_db.db.clone()),
            self.events.clone(),
            self.clock
                .clone()
                .unwrap_or_else(|| Arc::new(bosun_parameters::SystemClock)),
        )
        .with_wake(Arc::clone(&self.policy_wake))
    }

    pub fn client(&self) -> ParameterServiceClient<Channel> {
        ParameterServiceClient::new(self.server.channel())
    }

    /// A request from `who` with an internal token carrying its policies.
    pub fn req<T>(&self, who: &str, body: T) -> tonic::Request<T> {
        self.server.request(&caller(who), body)
    }

    pub async fn put(
        &self,
        who: &str,
        body: pb::PutParameterRequest,
    ) -> Result<pb::PutParameterResponse, tonic::Status> {
        self.client()
            .put_parameter(self.req(who, body))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Creates (or overwrites) a String parameter as ALICE; returns its version.
    pub async fn put_string(&self, name: &str, value: &str, overwrite: bool) -> i64 {
        self.put(
            ALICE,
            pb::PutParameterRequest {
                name: name.into(),
                value: value.into(),
                r#type: pb::ParameterType::String as i32,
                overwrite,
                ..Default::default()
            },
        )
        .await
        .expect("put a string parameter")
        .version
    }

    pub async fn get(
        &self,
        who: &str,
        name: &str,
        with_decryption: bool,
    ) -> Result<pb::Parameter, tonic::Status> {
        self.client()
            .get_parameter(self.req(
                who,
                pb::GetParameterRequest {
                    name: name.into(),
                    with_decryption,
                },
            ))
            .await
            .map(|response| response.into_inner().parameter.expect("a parameter"))
    }

    /// Names under `path` the caller sees, following every page.
    pub async fn by_path_names(
        &self,
        who: &str,
        path: &str,
        recursive: bool,
        filters: Vec<pb::ParameterStringFilter>,
        max_results: i32,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut names = Vec::new();
        let mut next_token = String::new();
        loop {
            let page = self
                .client()
                .get_parameters_by_path(self.req(
                    who,
                    pb::GetParametersByPathRequest {
                        path: path.into(),
                        recursive,
                        parameter_filters: filters.clone(),
                        with_decryption: false,
                        max_results,
                        next_token: next_token.clone(),
                    },
                ))
                .await?
                .into_inner();
            assert!(
                max_results == 0 || page.parameters.len() <= max_results as usize,
                "page larger than max_results"
            );
            names.extend(page.parameters.into_iter().map(|p| p.name));
            if page.next_token.is_empty() {
                return Ok(names);
            }
            next_token = page.next_token;
        }
    }

    /// Names DescribeParameters returns to the caller, following every page.
    pub async fn describe_names(
        &self,
        who: &str,
        parameter_filters: Vec<pb::ParameterStringFilter>,
        max_results: i32,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut names = Vec::new();
        let mut next_token = String::new();
        loop {
            let page = self
                .client()
                .describe_parameters(self.req(
                    who,
                    pb::DescribeParametersRequest {
                        filters: vec![],
                        parameter_filters: parameter_filters.clone(),
                        max_results,
                        next_token: next_token.clone(),
                    },
                ))
                .await?
                .into_inner();
            names.extend(page.parameters.into_iter().map(|p| p.name));
            if page.next_token.is_empty() {
                return Ok(names);
            }
            next_token = page.next_token;
        }
    }

    /// Audit events for `action`, newest first, read through the AuditService as admin.
    pub async fn audit_events(&self, action: &str) -> Vec<audit_pb::AuditEvent> {
        AuditServiceClient::new(self.server.channel())
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

    /// Runs raw SQL on the test database (table checks a client cannot make).
    pub async fn sql_strings(&self, sql: &str, column: &str) -> Vec<String> {
        let backend = self.test_db.db.get_database_backend();
        self.test_db
            .db
            .query_all_raw(Statement::from_string(backend, sql.to_owned()))
            .await
            .expect("raw query")
            .into_iter()
            .map(|row| row.try_get::<String>("", column).expect("text column"))
            .collect()
    }

    pub async fn sql_execute(&self, sql: &str) {
        let backend = self.test_db.db.get_database_backend();
        self.test_db
            .db
            .execute_raw(Statement::from_string(backend, sql.to_owned()))
            .await
            .expect("raw statement");
    }

    pub async fn stop(mut self) {
        self.server.stop();
        self.test_db.cleanup().await;
    }
}

pub fn filter(key: &str, option: &str, values: &[&str]) -> pb::ParameterStringFilter {
    pb::ParameterStringFilter {
        key: key.into(),
        option: option.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The group tests read change events through.
pub const TEST_GROUP: &str = "test";

pub fn redis_url() -> String {
    std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// Which queue implementation a test publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Memory,
    Redis,
}

pub const QUEUE_KINDS: [QueueKind; 2] = [QueueKind::Memory, QueueKind::Redis];

/// A queue for change events, read back through [`TEST_GROUP`]. A Redis queue works under a
/// fresh key prefix, deleted on drop.
pub struct TestQueue {
    pub queue: Arc<dyn Queue>,
    redis_prefix: Option<String>,
}

impl TestQueue {
    pub async fn new(kind: QueueKind) -> TestQueue {
        let (queue, redis_prefix): (Arc<dyn Queue>, _) = match kind {
            QueueKind::Memory => (Arc::new(MemoryQueue::new(QueueOptions::default())), None),
            QueueKind::Redis => {
                let prefix = format!("bosun-test:{}:", uuid::Uuid::new_v4());
                let queue = RedisQueue::connect(&redis_url(), &prefix, QueueOptions::default())
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "Redis is required for these tests and is not reachable ({e}); \
                             start it or point BOSUN_TEST_REDIS_URL at one"
                        )
                    });
                (Arc::new(queue), Some(prefix))
            }
        };
        queue
            .ensure_group(bosun_parameters::EVENTS_STREAM, TEST_GROUP)
            .await
            .expect("create the test consumer group");
        TestQueue {
            queue,
            redis_prefix,
        }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let Some(prefix) = &self.redis_prefix else {
            return;
        };
        // Best effort: a leftover key under a unique prefix is harmless.
        if let Err(e) = delete_redis_keys(prefix) {
            eprintln!("could not delete test keys under {prefix}: {e}");
        }
    }
}

fn delete_redis_keys(prefix: &str) -> redis::RedisResult<()> {
    let mut connection = redis::Client::open(redis_url())?.get_connection()?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut connection)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).exec(&mut connection)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A change event as read back: the parsed payload and the raw text.
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub json: serde_json::Value,
    pub raw: String,
}

impl ReadEvent {
    pub fn field(&self, key: &str) -> &str {
        self.json[key].as_str().unwrap_or_default()
    }

    pub fn operation(&self) -> &str {
        self.field("operation")
    }
}

/// The change events published since the last call, in order (acked as read).
pub async fn take_events(queue: &Arc<dyn Queue>) -> Vec<ReadEvent> {
    let mut events = Vec::new();
    loop {
        let batch = queue
            .consume(
                bosun_parameters::EVENTS_STREAM,
                TEST_GROUP,
                "reader",
                100,
                Duration::from_millis(5),
            )
            .await
            .expect("consume change events");
        if batch.is_empty() {
            return events;
        }
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        queue
            .ack(bosun_parameters::EVENTS_STREAM, TEST_GROUP, &ids)
            .await
            .expect("ack change events");
        for delivery in batch {
            let raw = String::from_utf8(delivery.payload.to_vec()).expect("utf-8 payload");
            let json = serde_json::from_str(&raw).expect("a JSON payload");
            events.push(ReadEvent { json, raw });
        }
    }
}
