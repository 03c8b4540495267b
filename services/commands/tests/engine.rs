//! The command engine against simulated agents, on SQLite + in-process queue and on
//! PostgreSQL + Redis: the ramp and the concurrency limit, MaxErrors, success counts, delivery
//! timeout, the expiry backstop, cancellation, output assembly, two replicas, and a replica
//! that dies mid-run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bosun_commands::entities::{command, invocation, output_chunk};
use bosun_commands::model::{Notification, Plan, PlannedStep};
use bosun_commands::{CommandsConfig, Engine};
use bosun_core::time::{Clock, ManualClock};
use bosun_document::run::{
    CommandResult, CommandStatus, OutputChunk, OutputStream, PluginInputs, PluginResult,
    RunCommand, TOPIC_COMMANDS_CANCEL, TOPIC_COMMANDS_OUTPUT, TOPIC_COMMANDS_RUN,
};
use bosun_nodelink::presence::MemoryPresence;
use bosun_nodelink::{NodeLink, NodeResult, PendingMessage};
use bosun_objects::{ObjectStoreConfig, Objects};
use bosun_queue::{MemoryQueue, Queue, QueueOptions, RedisQueue};
use bosun_store::testing::TestDatabase;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const WAIT: Duration = Duration::from_secs(20);

/// Results a dead replica read and never acked come back quickly.
fn queue_options() -> QueueOptions {
    QueueOptions {
        visibility_timeout: Duration::from_secs(2),
        ..QueueOptions::default()
    }
}

struct Backend {
    name: &'static str,
    test_db: TestDatabase,
    queue: Arc<dyn Queue>,
    objects: Arc<Objects>,
    _objects_dir: std::path::PathBuf,
}

impl Backend {
    async fn memory() -> Backend {
        let test_db = bosun_store::testing::sqlite().await;
        Self::finish(
            "sqlite+memory",
            test_db,
            Arc::new(MemoryQueue::new(queue_options())),
        )
        .await
    }

    async fn redis() -> Backend {
        let test_db = bosun_store::testing::postgres().await;
        let prefix = format!("test-commands-{}:", uuid::Uuid::new_v4().simple());
        let queue = RedisQueue::connect(REDIS_URL, &prefix, queue_options())
            .await
            .expect("tests need Redis at 127.0.0.1:6379");
        Self::finish("postgres+redis", test_db, Arc::new(queue)).await
    }

    async fn finish(name: &'static str, test_db: TestDatabase, queue: Arc<dyn Queue>) -> Backend {
        bosun_store::migrate::<bosun_nodelink::Migrator>(&test_db.db)
            .await
            .expect("nodelink migrations");
        bosun_store::migrate::<bosun_commands::Migrator>(&test_db.db)
            .await
            .expect("commands migrations");
        let dir = std::env::temp_dir().join(format!("bosun-engine-{}", uuid::Uuid::new_v4()));
        let objects = Objects::open(&ObjectStoreConfig::Local { root: dir.clone() })
            .expect("local object store");
        Backend {
            name,
            test_db,
            queue,
            objects: Arc::new(objects),
            _objects_dir: dir,
        }
    }

    async fn both() -> Vec<Backend> {
        vec![Backend::memory().await, Backend::redis().await]
    }

    fn link(&self) -> NodeLink {
        NodeLink::new(
            self.test_db.db.clone(),
            self.queue.clone(),
            Arc::new(MemoryPresence::new()),
        )
    }

    fn engine(&self, replica: &str, clock: Arc<dyn Clock>) -> Running {
        let engine = Engine::new(
            self.test_db.db.clone(),
            self.link(),
            self.queue.clone(),
            self.objects.clone(),
            config(),
            replica,
        )
        .with_clock(clock);
        let wake = engine.wake_handle();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(engine.run(shutdown.clone()));
        Running {
            wake,
            shutdown,
            handle,
        }
    }
}

struct Running {
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("engine task")
            .expect("engine stops cleanly");
    }
}

fn config() -> CommandsConfig {
    CommandsConfig {
        dispatch_interval: Duration::from_millis(50),
        lease: Duration::from_secs(10),
        reconcile_interval: Duration::from_millis(100),
        output_settle: Duration::from_secs(60),
        result_batch: std::env::var("BOSUN_TEST_RESULT_BATCH")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(500),
        ..CommandsConfig::default()
    }
}

fn node_ids(count: usize) -> Vec<String> {
    let base = u64::from(uuid::Uuid::new_v4().as_u128() as u32) << 16;
    (0..count)
        .map(|index| format!("mi-{:017x}", base + index as u64))
        .collect()
}

struct NewCommand {
    nodes: Vec<String>,
    concurrency_limit: i32,
    error_limit: i32,
    notification: Option<Notification>,
    steps: usize,
}

impl NewCommand {
    fn new(nodes: &[String]) -> Self {
        NewCommand {
            nodes: nodes.to_vec(),
            concurrency_limit: 50,
            error_limit: 0,
            notification: None,
            steps: 1,
        }
    }
}

/// Stores a command and its Pending invocations as SendCommand would; returns its id.
async fn insert_command(backend: &Backend, now: DateTime<Utc>, new: NewCommand) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let plan = Plan {
        steps: (0..new.steps)
            .map(|index| PlannedStep {
                name: format!("step{index}"),
                action: "aws:runShellScript".to_owned(),
                inputs: PluginInputs {
                    run_command: vec![format!("echo {index}")],
                    working_directory: None,
                    timeout_seconds: None,
                },
                platform: None,
            })
            .collect(),
        execution_timeout_seconds: 600,
    };
    let steps: Vec<String> = (0..new.steps).map(|index| index.to_string()).collect();
    command::Entity::insert(command::ActiveModel {
        id: Set(id.clone()),
        document_name: Set("AWS-RunShellScript".to_owned()),
        document_version: Set("1".to_owned()),
        document_hash: Set("00".to_owned()),
        parameters: Set("{}".to_owned()),
        instance_ids: Set(serde_json::to_string(&new.nodes).expect("json")),
        targets: Set("[]".to_owned()),
        comment: Set(String::new()),
        timeout_seconds: Set(60),
        execution_timeout_seconds: Set(600),
        max_concurrency: Set(new.concurrency_limit.to_string()),
        max_errors: Set(new.error_limit.to_string()),
        concurrency_limit: Set(new.concurrency_limit),
        error_limit: Set(new.error_limit),
        output_bucket: Set(String::new()),
        output_prefix: Set("out".to_owned()),
        notification: Set(new
            .notification
            .map(|n| serde_json::to_string(&n).expect("json"))
            .unwrap_or_default()),
        plan: Set(serde_json::to_string(&plan).expect("json")),
        state: Set("Pending".to_owned()),
        requested_at: Set(now),
        delivery_deadline: Set(now + TimeDelta::seconds(60)),
        expires_at: Set(now + TimeDelta::seconds(660)),
        finished_at: Set(None),
        target_count: Set(i32::try_from(new.nodes.len()).expect("small")),
        completed_count: Set(0),
        error_count: Set(0),
        delivery_timed_out_count: Set(0),
        requested_by: Set("tester".to_owned()),
        cancel_requested: Set(false),
        trace_context: Set("{}".to_owned()),
        lease_owner: Set(None),
        lease_until: Set(None),
        updated_at: Set(now),
    })
    .exec_without_returning(&backend.test_db.db)
    .await
    .expect("insert command");
    let rows: Vec<invocation::ActiveModel> = new
        .nodes
        .iter()
        .enumerate()
        .map(|(seq, node_id)| invocation::ActiveModel {
            command_id: Set(id.clone()),
            node_id: Set(node_id.clone()),
            node_name: Set(String::new()),
            platform_type: Set("Linux".to_owned()),
            seq: Set(i32::try_from(seq).expect("small")),
            steps: Set(steps.join(",")),
            state: Set("Pending".to_owned()),
            message_id: Set(None),
            dispatched_at: Set(None),
            started_at: Set(None),
            ended_at: Set(None),
            response_code: Set(-1),
            plugins: Set("[]".to_owned()),
            error: Set(String::new()),
            cancel_requested: Set(false),
            output_state: Set("None".to_owned()),
            output_deadline: Set(None),
            updated_at: Set(now),
        })
        .collect();
    for chunk in rows.chunks(1000) {
        invocation::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&backend.test_db.db)
            .await
            .expect("insert invocations");
    }
    id
}

async fn command_row(backend: &Backend, id: &str) -> command::Model {
    command::Entity::find_by_id(id.to_owned())
        .one(&backend.test_db.db)
        .await
        .expect("read command")
        .expect("command exists")
}

async fn invocations(backend: &Backend, id: &str) -> BTreeMap<String, invocation::Model> {
    invocation::Entity::find()
        .filter(invocation::Column::CommandId.eq(id))
        .all(&backend.test_db.db)
        .await
        .expect("read invocations")
        .into_iter()
        .map(|row| (row.node_id.clone(), row))
        .collect()
}

async fn states(backend: &Backend, id: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for row in invocations(backend, id).await.into_values() {
        *counts.entry(row.state).or_default() += 1;
    }
    counts
}

/// Waits until the command's state is `state`.
async fn wait_command_state(backend: &Backend, id: &str, state: &str) -> command::Model {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = command_row(backend, id).await;
        if row.state == state {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: command {id} is {} not {state}; invocations {:?}",
            backend.name,
            row.state,
            states(backend, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every run or cancel message waiting for these nodes, acknowledged as the gateway would.
async fn receive(link: &NodeLink, nodes: &[String]) -> Vec<PendingMessage> {
    let mut received = Vec::new();
    for node_id in nodes {
        for message in link.pending(node_id).await.expect("pending") {
            link.mark_acked(node_id, &message.id).await.expect("ack");
            received.push(message);
        }
    }
    received
}

/// Waits for at least one message, then collects until none came for `quiet`.
async fn receive_wave(link: &NodeLink, nodes: &[String], quiet: Duration) -> Vec<PendingMessage> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut wave = Vec::new();
    let mut last_new = tokio::time::Instant::now();
    loop {
        let got = receive(link, nodes).await;
        if !got.is_empty() {
            last_new = tokio::time::Instant::now();
            wave.extend(got);
        } else if !wave.is_empty() && last_new.elapsed() >= quiet {
            return wave;
        }
        assert!(tokio::time::Instant::now() < deadline, "no message came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish(queue: &Arc<dyn Queue>, message: &PendingMessage, topic: &str, payload: Vec<u8>) {
    let result = NodeResult {
        node_id: message.node_id.clone(),
        result_id: uuid::Uuid::new_v4().to_string(),
        message_id: message.id.clone(),
        topic: topic.to_owned(),
        payload,
        created_at: Utc::now(),
        trace_context: BTreeMap::new(),
    };
    let (payload, headers) = result.to_queue();
    queue
        .publish(&bosun_commands::results_stream(), &payload, &headers)
        .await
        .expect("publish result");
}

fn plugin(status: CommandStatus, code: i32, stdout: &[u8]) -> PluginResult {
    PluginResult {
        name: "aws:runShellScript".to_owned(),
        step: "step0".to_owned(),
        status,
        response_code: code,
        stdout: String::from_utf8_lossy(stdout).into_owned(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        stdout_streamed: stdout.len() as u64,
        stderr_streamed: 0,
        stream_truncated: false,
        error: None,
        started_at: Some(Utc::now().to_rfc3339()),
        ended_at: (status != CommandStatus::InProgress).then(|| Utc::now().to_rfc3339()),
    }
}

fn run_payload(message: &PendingMessage) -> RunCommand {
    assert_eq!(message.topic, TOPIC_COMMANDS_RUN);
    serde_json::from_slice(&message.payload).expect("run command payload")
}

/// Answers a run message: InProgress, then a final result with `status` (exit code 0 or 1).
async fn answer(queue: &Arc<dyn Queue>, message: &PendingMessage, status: CommandStatus) {
    let run = run_payload(message);
    let progress = CommandResult {
        command_id: run.command_id.clone(),
        status: CommandStatus::InProgress,
        plugins: vec![plugin(CommandStatus::InProgress, -1, b"")],
        error: None,
    };
    publish(
        queue,
        message,
        TOPIC_COMMANDS_RUN,
        serde_json::to_vec(&progress).expect("json"),
    )
    .await;
    if status == CommandStatus::InProgress {
        return;
    }
    let code = i32::from(status != CommandStatus::Success);
    let last = CommandResult {
        command_id: run.command_id,
        status,
        plugins: vec![plugin(status, code, b"")],
        error: None,
    };
    publish(
        queue,
        message,
        TOPIC_COMMANDS_RUN,
        serde_json::to_vec(&last).expect("json"),
    )
    .await;
}

async fn run_messages_per_node(backend: &Backend, nodes: &[String]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for node_id in nodes {
        let count = bosun_nodelink_messages(backend, node_id).await;
        counts.insert(node_id.clone(), count);
    }
    counts
}

async fn bosun_nodelink_messages(backend: &Backend, node_id: &str) -> u64 {
    use sea_orm::{ConnectionTrait, Statement};
    let db = &backend.test_db.db;
    let sql = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            "SELECT COUNT(*) AS n FROM node_messages WHERE node_id = $1 AND topic = 'commands.run'"
        }
        _ => "SELECT COUNT(*) AS n FROM node_messages WHERE node_id = ? AND topic = 'commands.run'",
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [node_id.into()],
        ))
        .await
        .expect("count messages")
        .expect("a row");
    let count: i64 = row.try_get("", "n").expect("count");
    u64::try_from(count).expect("positive")
}

/// What CancelCommand stores for a whole command.
async fn request_cancel(backend: &Backend, id: &str) {
    command::Entity::update_many()
        .col_expr(command::Column::CancelRequested, true.into())
        .col_expr(command::Column::State, "Cancelling".into())
        .filter(command::Column::Id.eq(id))
        .exec(&backend.test_db.db)
        .await
        .expect("cancel command");
    invocation::Entity::update_many()
        .col_expr(invocation::Column::CancelRequested, true.into())
        .filter(invocation::Column::CommandId.eq(id))
        .exec(&backend.test_db.db)
        .await
        .expect("cancel invocations");
}

async fn outbox_len(backend: &Backend) -> u64 {
    bosun_commands::entities::event_outbox::Entity::find()
        .count(&backend.test_db.db)
        .await
        .expect("count outbox")
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Utc::now()))
}

#[tokio::test]
async fn ramp_grows_one_three_seven_and_never_exceeds_the_limit() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(20);
        let mut new = NewCommand::new(&nodes);
        new.concurrency_limit = 7;
        let id = insert_command(&backend, clock.now(), new).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        let mut waves = Vec::new();
        let mut done = 0;
        while done < nodes.len() {
            let wave = receive_wave(&link, &nodes, Duration::from_millis(400)).await;
            waves.push(wave.len());
            for message in &wave {
                answer(&backend.queue, message, CommandStatus::Success).await;
            }
            done += wave.len();
        }
        assert_eq!(&waves[..3], &[1, 3, 7], "{}: waves {waves:?}", backend.name);
        assert!(
            waves.iter().all(|size| *size <= 7),
            "{}: {waves:?}",
            backend.name
        );
        assert_eq!(waves.iter().sum::<usize>(), 20);
        let row = wait_command_state(&backend, &id, "Success").await;
        assert_eq!(row.completed_count, 20);
        assert_eq!(row.error_count, 0);
        assert!(row.finished_at.is_some());
        assert!(
            run_messages_per_node(&backend, &nodes)
                .await
                .values()
                .all(|count| *count == 1)
        );
        engine.stop().await;
    }
}

#[tokio::test]
async fn max_errors_stops_the_run_and_terminates_the_rest() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(10);
        let mut new = NewCommand::new(&nodes);
        new.concurrency_limit = 1;
        new.error_limit = 1;
        let id = insert_command(&backend, clock.now(), new).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        // Two failures exceed MaxErrors 1.
        for _ in 0..2 {
            let wave = receive_wave(&link, &nodes, Duration::from_millis(300)).await;
            assert_eq!(wave.len(), 1, "{}", backend.name);
            answer(&backend.queue, &wave[0], CommandStatus::Failed).await;
        }
        let row = wait_command_state(&backend, &id, "Failed").await;
        assert_eq!(row.error_count, 2);
        assert_eq!(row.completed_count, 10);
        let counts = states(&backend, &id).await;
        assert_eq!(counts.get("Failed"), Some(&2));
        assert_eq!(counts.get("Terminated"), Some(&8), "{}", backend.name);
        assert!(receive(&link, &nodes).await.is_empty());
        engine.stop().await;
    }
}

#[tokio::test]
async fn success_path_counts_events_and_notification() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(5);
        let mut new = NewCommand::new(&nodes);
        new.notification = Some(Notification {
            webhook_id: "wh-1".to_owned(),
            arn: "arn".to_owned(),
            events: vec!["Success".to_owned()],
            notification_type: "Command".to_owned(),
        });
        let id = insert_command(&backend, clock.now(), new).await;
        backend
            .queue
            .ensure_group("events", "test")
            .await
            .expect("group");
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        let mut done = 0;
        while done < nodes.len() {
            let wave = receive_wave(&link, &nodes, Duration::from_millis(200)).await;
            for message in &wave {
                let run = run_payload(message);
                assert_eq!(run.plugins.len(), 1);
                assert_eq!(run.plugins[0].step, "step0");
                assert_eq!(run.execution_timeout_seconds, Some(600));
                assert_eq!(run.output_limit_bytes, Some(24_000));
                answer(&backend.queue, message, CommandStatus::Success).await;
            }
            done += wave.len();
        }
        let row = wait_command_state(&backend, &id, "Success").await;
        assert_eq!(
            (
                row.completed_count,
                row.error_count,
                row.delivery_timed_out_count
            ),
            (5, 0, 0)
        );
        for invocation in invocations(&backend, &id).await.values() {
            assert_eq!(invocation.state, "Success");
            assert_eq!(invocation.response_code, 0);
            assert!(invocation.started_at.is_some() && invocation.ended_at.is_some());
            assert!(invocation.dispatched_at.is_some() && invocation.message_id.is_some());
        }
        // Events: InProgress and Success per invocation, InProgress and Success of the
        // command; only the command's Success names the webhook.
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while events.len() < 12 && tokio::time::Instant::now() < deadline {
            for delivery in backend
                .queue
                .consume("events", "test", "t", 100, Duration::from_millis(100))
                .await
                .expect("consume events")
            {
                let event: serde_json::Value =
                    serde_json::from_slice(&delivery.payload).expect("event json");
                events.push(event);
            }
        }
        assert_eq!(events.len(), 12, "{}: {events:?}", backend.name);
        let with_webhook: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e.get("webhook_id").is_some())
            .collect();
        assert_eq!(with_webhook.len(), 1, "{events:?}");
        assert_eq!(with_webhook[0]["operation"], "CommandStatusChange");
        assert_eq!(with_webhook[0]["status"], "Success");
        let deadline = tokio::time::Instant::now() + WAIT;
        while outbox_len(&backend).await > 0 {
            assert!(tokio::time::Instant::now() < deadline, "outbox not emptied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        engine.stop().await;
    }
}

#[tokio::test]
async fn delivery_timeout_for_an_offline_node() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(3);
        let mut new = NewCommand::new(&nodes);
        new.concurrency_limit = 1;
        let id = insert_command(&backend, clock.now(), new).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        // The first invocation is sent and never picked up; the rest wait for the ramp.
        let deadline = tokio::time::Instant::now() + WAIT;
        while states(&backend, &id).await.get("InProgress") != Some(&1) {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        clock.advance(TimeDelta::seconds(61));
        let row = wait_command_state(&backend, &id, "DeliveryTimedOut").await;
        assert_eq!(row.delivery_timed_out_count, 3);
        assert_eq!(row.completed_count, 3);
        assert_eq!(
            states(&backend, &id).await.get("DeliveryTimedOut"),
            Some(&3)
        );
        // The sent message was withdrawn: no agent gets it any more.
        assert!(
            receive(&backend.link(), &nodes).await.is_empty(),
            "{}",
            backend.name
        );
        engine.stop().await;
    }
}

#[tokio::test]
async fn expiry_backstop_ends_a_run_without_a_final_result() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(1);
        let id = insert_command(&backend, clock.now(), NewCommand::new(&nodes)).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        let wave = receive_wave(&link, &nodes, Duration::from_millis(100)).await;
        answer(&backend.queue, &wave[0], CommandStatus::InProgress).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while invocations(&backend, &id).await[&nodes[0]]
            .started_at
            .is_none()
        {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Past the delivery deadline a started invocation keeps running...
        clock.advance(TimeDelta::seconds(120));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            invocations(&backend, &id).await[&nodes[0]].state,
            "InProgress"
        );
        // ...until expires_at.
        clock.advance(TimeDelta::seconds(600));
        wait_command_state(&backend, &id, "DeliveryTimedOut").await;
        assert_eq!(
            invocations(&backend, &id).await[&nodes[0]].state,
            "DeliveryTimedOut"
        );
        engine.stop().await;
    }
}

#[tokio::test]
async fn cancel_pending_and_in_flight() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(3);
        let mut new = NewCommand::new(&nodes);
        new.concurrency_limit = 1;
        let id = insert_command(&backend, clock.now(), new).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        let wave = receive_wave(&link, &nodes, Duration::from_millis(100)).await;
        let running = wave[0].clone();
        answer(&backend.queue, &running, CommandStatus::InProgress).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while invocations(&backend, &id).await[&running.node_id]
            .started_at
            .is_none()
        {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        request_cancel(&backend, &id).await;
        engine.wake.notify_one();
        // The running one gets a cancel message; the others are cancelled at once.
        let cancel = receive_wave(&link, &nodes, Duration::from_millis(100)).await;
        assert_eq!(cancel.len(), 1, "{}", backend.name);
        assert_eq!(cancel[0].topic, TOPIC_COMMANDS_CANCEL);
        assert_eq!(cancel[0].node_id, running.node_id);
        let rows = invocations(&backend, &id).await;
        assert_eq!(rows[&running.node_id].state, "Cancelling");
        assert_eq!(
            rows.values().filter(|row| row.state == "Cancelled").count(),
            2
        );
        let last = CommandResult {
            command_id: id.clone(),
            status: CommandStatus::Cancelled,
            plugins: vec![plugin(CommandStatus::Cancelled, -1, b"")],
            error: None,
        };
        publish(
            &backend.queue,
            &running,
            TOPIC_COMMANDS_RUN,
            serde_json::to_vec(&last).expect("json"),
        )
        .await;
        let row = wait_command_state(&backend, &id, "Cancelled").await;
        assert_eq!(row.completed_count, 3);
        // An in-flight invocation whose message was not picked up is withdrawn.
        engine.stop().await;
    }
}

#[tokio::test]
async fn cancel_withdraws_a_message_not_yet_received() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(1);
        let id = insert_command(&backend, clock.now(), NewCommand::new(&nodes)).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let deadline = tokio::time::Instant::now() + WAIT;
        while states(&backend, &id).await.get("InProgress") != Some(&1) {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        request_cancel(&backend, &id).await;
        engine.wake.notify_one();
        wait_command_state(&backend, &id, "Cancelled").await;
        // The run is withdrawn; only a cancel remains, for a copy already on its way.
        let left = receive(&backend.link(), &nodes).await;
        assert!(
            left.iter()
                .all(|message| message.topic == TOPIC_COMMANDS_CANCEL),
            "{}: {left:?}",
            backend.name
        );
        engine.stop().await;
    }
}

#[tokio::test]
async fn output_is_assembled_from_out_of_order_duplicate_chunks() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(1);
        let id = insert_command(&backend, clock.now(), NewCommand::new(&nodes)).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        let wave = receive_wave(&link, &nodes, Duration::from_millis(100)).await;
        let message = &wave[0];
        let text = b"hello, this is the full output of step zero\n".repeat(10);
        let parts: Vec<(usize, &[u8])> = text
            .chunks(37)
            .enumerate()
            .map(|(index, part)| (index * 37, part))
            .collect();
        // Reversed, each twice, the final result in the middle.
        let mut order: Vec<&(usize, &[u8])> = parts.iter().rev().collect();
        order.extend(parts.iter());
        let last = CommandResult {
            command_id: id.clone(),
            status: CommandStatus::Success,
            plugins: vec![plugin(CommandStatus::Success, 0, &text)],
            error: None,
        };
        for (index, (offset, data)) in order.iter().enumerate() {
            if index == parts.len() / 2 {
                publish(
                    &backend.queue,
                    message,
                    TOPIC_COMMANDS_RUN,
                    serde_json::to_vec(&last).expect("json"),
                )
                .await;
            }
            let chunk = OutputChunk {
                command_id: id.clone(),
                plugin_index: 0,
                step: "step0".to_owned(),
                stream: OutputStream::Stdout,
                offset: *offset as u64,
                data: data.to_vec(),
            };
            publish(
                &backend.queue,
                message,
                TOPIC_COMMANDS_OUTPUT,
                serde_json::to_vec(&chunk).expect("json"),
            )
            .await;
        }
        wait_command_state(&backend, &id, "Success").await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while invocations(&backend, &id).await[&nodes[0]].output_state != "Stored" {
            assert!(tokio::time::Instant::now() < deadline, "{}", backend.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = bosun_commands::model::output_key("out", &id, &nodes[0], "step0", "stdout");
        let stored = backend.objects.get(&key).await.expect("stdout object");
        assert_eq!(stored.as_ref(), text.as_slice(), "{}", backend.name);
        let chunks = output_chunk::Entity::find()
            .filter(output_chunk::Column::CommandId.eq(id.as_str()))
            .count(&backend.test_db.db)
            .await
            .expect("count chunks");
        assert_eq!(chunks, 0);
        let plugins: Vec<PluginResult> =
            serde_json::from_str(&invocations(&backend, &id).await[&nodes[0]].plugins)
                .expect("plugins");
        assert!(!plugins[0].stream_truncated);
        engine.stop().await;
    }
}

#[tokio::test]
async fn incomplete_output_is_stored_after_the_settle_time() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(1);
        let id = insert_command(&backend, clock.now(), NewCommand::new(&nodes)).await;
        let engine = backend.engine("r1", clock.clone());
        engine.wake.notify_one();
        let link = backend.link();
        let wave = receive_wave(&link, &nodes, Duration::from_millis(100)).await;
        let message = &wave[0];
        let text = b"0123456789".repeat(3);
        // Chunks 0..10 and 20..30: 10..20 never arrives.
        for offset in [0usize, 20] {
            let chunk = OutputChunk {
                command_id: id.clone(),
                plugin_index: 0,
                step: "step0".to_owned(),
                stream: OutputStream::Stdout,
                offset: offset as u64,
                data: text[offset..offset + 10].to_vec(),
            };
            publish(
                &backend.queue,
                message,
                TOPIC_COMMANDS_OUTPUT,
                serde_json::to_vec(&chunk).expect("json"),
            )
            .await;
        }
        let last = CommandResult {
            command_id: id.clone(),
            status: CommandStatus::Success,
            plugins: vec![plugin(CommandStatus::Success, 0, &text)],
            error: None,
        };
        publish(
            &backend.queue,
            message,
            TOPIC_COMMANDS_RUN,
            serde_json::to_vec(&last).expect("json"),
        )
        .await;
        wait_command_state(&backend, &id, "Success").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            invocations(&backend, &id).await[&nodes[0]].output_state,
            "Pending"
        );
        clock.advance(TimeDelta::seconds(61));
        let deadline = tokio::time::Instant::now() + WAIT;
        while invocations(&backend, &id).await[&nodes[0]].output_state != "Stored" {
            assert!(tokio::time::Instant::now() < deadline, "{}", backend.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = bosun_commands::model::output_key("out", &id, &nodes[0], "step0", "stdout");
        let stored = backend.objects.get(&key).await.expect("stdout object");
        assert_eq!(stored.as_ref(), &text[..10]);
        let plugins: Vec<PluginResult> =
            serde_json::from_str(&invocations(&backend, &id).await[&nodes[0]].plugins)
                .expect("plugins");
        assert!(plugins[0].stream_truncated);
        engine.stop().await;
    }
}

/// Answers every run message for `nodes` with Success until the command ends.
async fn agents_until_done(backend: &Backend, id: &str, nodes: &[String]) {
    let link = backend.link();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for message in receive(&link, nodes).await {
            if message.topic == TOPIC_COMMANDS_RUN {
                answer(&backend.queue, &message, CommandStatus::Success).await;
            }
        }
        let row = command_row(backend, id).await;
        if row.state == "Success" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: stuck at {:?}",
            backend.name,
            states(backend, id).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_replicas_never_dispatch_an_invocation_twice() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(60);
        let mut new = NewCommand::new(&nodes);
        new.concurrency_limit = 60;
        let id = insert_command(&backend, clock.now(), new).await;
        let first = backend.engine("r1", clock.clone());
        let second = backend.engine("r2", clock.clone());
        first.wake.notify_one();
        second.wake.notify_one();
        agents_until_done(&backend, &id, &nodes).await;
        let counts = run_messages_per_node(&backend, &nodes).await;
        assert!(
            counts.values().all(|count| *count == 1),
            "{}: {counts:?}",
            backend.name
        );
        assert_eq!(command_row(&backend, &id).await.completed_count, 60);
        first.stop().await;
        second.stop().await;
    }
}

#[tokio::test]
async fn a_replica_dying_mid_run_is_taken_over_without_duplicates() {
    for backend in Backend::both().await {
        let clock = clock();
        let nodes = node_ids(20);
        let mut new = NewCommand::new(&nodes);
        new.concurrency_limit = 20;
        let id = insert_command(&backend, clock.now(), new).await;
        let first = backend.engine("r1", clock.clone());
        first.wake.notify_one();
        let link = backend.link();
        // Two waves with the first replica, then it dies (no clean shutdown).
        for _ in 0..2 {
            let wave = receive_wave(&link, &nodes, Duration::from_millis(200)).await;
            for message in &wave {
                answer(&backend.queue, message, CommandStatus::Success).await;
            }
        }
        first.handle.abort();
        let _ = first.handle.await;
        // A lease it may have held runs out.
        clock.advance(TimeDelta::seconds(11));
        let second = backend.engine("r2", clock.clone());
        second.wake.notify_one();
        agents_until_done(&backend, &id, &nodes).await;
        let counts = run_messages_per_node(&backend, &nodes).await;
        assert!(
            counts.values().all(|count| *count == 1),
            "{}: {counts:?}",
            backend.name
        );
        let row = command_row(&backend, &id).await;
        assert_eq!(row.completed_count, 20);
        second.stop().await;
        // Leases are released on a clean stop.
        assert!(command_row(&backend, &id).await.lease_owner.is_none());
    }
}

/// Run messages for nodes whose ids start with `prefix` not yet acknowledged, acknowledged in
/// bulk (what a fleet of gateways does).
async fn receive_bulk(backend: &Backend, prefix: &str) -> Vec<(String, String, Vec<u8>)> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = &backend.test_db.db;
    let postgres = db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    let select = if postgres {
        "UPDATE node_messages SET acked_at = now() WHERE acked_at IS NULL AND node_id LIKE $1 \
         RETURNING id, node_id, payload"
    } else {
        "UPDATE node_messages SET acked_at = CURRENT_TIMESTAMP WHERE acked_at IS NULL \
         AND node_id LIKE ? RETURNING id, node_id, payload"
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            select,
            [format!("{prefix}%").into()],
        ))
        .await
        .expect("receive");
    rows.into_iter()
        .map(|row| {
            (
                row.try_get::<String>("", "id").expect("id"),
                row.try_get::<String>("", "node_id").expect("node"),
                row.try_get::<Vec<u8>>("", "payload").expect("payload"),
            )
        })
        .collect()
}

/// 10,000 nodes at 100 % concurrency on PostgreSQL + Redis; prints where the time goes.
/// `cargo nextest run -p bosun-commands --test engine --run-ignored only`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark-sized; run on demand"]
async fn ten_thousand_nodes_run_quickly() {
    use futures::StreamExt as _;
    let backend = Backend::redis().await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let nodes = node_ids(10_000);
    let prefix = &nodes[0][..15];
    let mut new = NewCommand::new(&nodes);
    new.concurrency_limit = 10_000;
    let id = insert_command(&backend, clock.now(), new).await;
    let started = std::time::Instant::now();
    let engine = backend.engine("r1", clock.clone());
    engine.wake.notify_one();
    let mut answered = 0;
    let mut waves = Vec::new();
    while answered < nodes.len() {
        let wave = receive_bulk(&backend, prefix).await;
        if wave.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(started.elapsed() < Duration::from_secs(120), "stuck");
            continue;
        }
        waves.push((wave.len(), started.elapsed()));
        answered += wave.len();
        let queue = backend.queue.clone();
        futures::stream::iter(wave)
            .map(|(message_id, node_id, payload)| {
                let queue = queue.clone();
                async move {
                    let run: RunCommand = serde_json::from_slice(&payload).expect("run");
                    let message = PendingMessage {
                        id: message_id,
                        node_id,
                        topic: TOPIC_COMMANDS_RUN.to_owned(),
                        payload,
                        created_at: Utc::now(),
                        expires_at: None,
                        trace_context: BTreeMap::new(),
                        send_count: 0,
                    };
                    let _ = run;
                    answer(&queue, &message, CommandStatus::Success).await;
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
    }
    let all_sent = started.elapsed();
    let row = wait_command_state(&backend, &id, "Success").await;
    let done = started.elapsed();
    assert_eq!(row.completed_count, 10_000);
    loop {
        let waiting = invocation::Entity::find()
            .filter(invocation::Column::CommandId.eq(id.as_str()))
            .filter(invocation::Column::OutputState.ne("Stored"))
            .count(&backend.test_db.db)
            .await
            .expect("count");
        if waiting == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "output stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = started.elapsed();
    println!("waves (size, at): {waves:?}");
    println!(
        "all answered at {all_sent:?}, command Success at {done:?}, output stored at {stored:?}"
    );
    engine.stop().await;
}

/// 10,000 final results waiting in the queue for 10,000 dispatched invocations on
/// PostgreSQL + Redis: how long the consumer takes to apply them all.
/// `cargo nextest run -p bosun-commands --test engine --run-ignored only`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark-sized; run on demand"]
async fn ten_thousand_results_apply_quickly() {
    use futures::StreamExt as _;
    let backend = Backend::redis().await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let nodes = node_ids(10_000);
    let mut new = NewCommand::new(&nodes);
    new.concurrency_limit = 10_000;
    let id = insert_command(&backend, clock.now(), new).await;
    invocation::Entity::update_many()
        .col_expr(invocation::Column::State, "InProgress".into())
        .col_expr(invocation::Column::DispatchedAt, Some(clock.now()).into())
        .filter(invocation::Column::CommandId.eq(id.as_str()))
        .exec(&backend.test_db.db)
        .await
        .expect("dispatched");
    command::Entity::update_many()
        .col_expr(command::Column::State, "InProgress".into())
        .filter(command::Column::Id.eq(id.as_str()))
        .exec(&backend.test_db.db)
        .await
        .expect("in progress");
    let queue = backend.queue.clone();
    let command_id = id.clone();
    futures::stream::iter(nodes.clone())
        .map(|node_id| {
            let queue = queue.clone();
            let command_id = command_id.clone();
            async move {
                let last = CommandResult {
                    command_id,
                    status: CommandStatus::Success,
                    plugins: vec![plugin(CommandStatus::Success, 0, b"")],
                    error: None,
                };
                let message = PendingMessage {
                    id: uuid::Uuid::now_v7().to_string(),
                    node_id,
                    topic: TOPIC_COMMANDS_RUN.to_owned(),
                    payload: Vec::new(),
                    created_at: Utc::now(),
                    expires_at: None,
                    trace_context: BTreeMap::new(),
                    send_count: 0,
                };
                publish(
                    &queue,
                    &message,
                    TOPIC_COMMANDS_RUN,
                    serde_json::to_vec(&last).expect("json"),
                )
                .await;
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let started = std::time::Instant::now();
    let engine = backend.engine("r1", clock.clone());
    let row = wait_command_state(&backend, &id, "Success").await;
    println!("10,000 results applied in {:?}", started.elapsed());
    assert_eq!(row.completed_count, 10_000);
    engine.stop().await;
}
