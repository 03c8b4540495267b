//! Runs the queue contract suite (`bosun_queue::contract`) against the in-process queue and
//! against real Redis, plus Redis-only tests that nothing is lost when connections are killed
//! and that the trim script handles ids exactly.
//!
//! Redis must be running at `BOSUN_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). If it
//! is not, the Redis tests fail with a message saying so; they never skip. Each Redis test
//! works under a fresh random key prefix and deletes its keys when it ends.

use std::sync::Arc;
use std::time::Duration;

use bosun_queue::{Delivery, Headers, MemoryQueue, Queue, QueueError, RedisQueue, contract};
use tokio::time::Instant;

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn redis_url() -> String {
    std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

fn memory_queue() -> Arc<dyn Queue> {
    Arc::new(MemoryQueue::new(contract::options()))
}

/// A [`RedisQueue`] under a fresh key prefix; its keys are deleted on drop.
struct TestRedis {
    queue: Arc<dyn Queue>,
    prefix: String,
}

impl TestRedis {
    async fn new() -> Self {
        Self::connect(&redis_url()).await
    }

    async fn connect(url: &str) -> Self {
        let prefix = format!("bosun-test:{}:", uuid::Uuid::new_v4());
        let queue = RedisQueue::connect(url, &prefix, contract::options())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Redis is required for these tests and is not reachable ({e}); start it with \
                     `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" \
                     --appendonly no` or point BOSUN_TEST_REDIS_URL at one"
                )
            });
        Self {
            queue: Arc::new(queue),
            prefix,
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // Drop cannot await, so use a plain blocking connection. Best effort: a leftover key
        // is harmless (unique prefix, Redis keeps nothing on disk here).
        if let Err(e) = delete_keys_with_prefix(&self.prefix) {
            eprintln!("could not delete test keys under {}: {e}", self.prefix);
        }
    }
}

fn delete_keys_with_prefix(prefix: &str) -> redis::RedisResult<()> {
    let mut connection = redis::Client::open(redis_url())?.get_connection()?;
    let pattern = format!("{prefix}*");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
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

/// One test per contract check, for each implementation.
macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {
        mod memory_queue {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    bosun_queue::contract::$check(super::memory_queue()).await;
                }
            )*
        }

        mod redis_queue {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let redis = super::TestRedis::new().await;
                    bosun_queue::contract::$check(std::sync::Arc::clone(&redis.queue)).await;
                }
            )*
        }
    };
}

contract_tests!(
    check_round_trip_and_ack,
    check_groups_each_get_every_message,
    check_consumers_share_without_duplicates,
    check_redelivery_after_visibility_timeout,
    check_dead_letter_after_max_deliveries,
    check_messages_before_group_are_delivered,
    check_blocking_consume_wakes_on_publish,
    check_missing_groups_and_empty_reads,
    check_invalid_names_are_rejected,
    check_trim_removes_acknowledged_messages,
    check_trim_keeps_messages_pending_in_any_group,
    check_trim_waits_for_a_group_that_has_not_read,
    check_trim_of_a_stream_without_groups,
    check_dead_letters_are_bounded,
    check_streams_trim_themselves,
);

/// A Redis ACL user for one test, so `CLIENT KILL USER` hits exactly the queue's connections
/// and nothing else on the shared server. Deleted on drop.
struct AclUser {
    name: String,
    url: String,
}

impl AclUser {
    async fn create(admin: &mut redis::aio::MultiplexedConnection) -> Self {
        let name = format!("bosun-queue-test-{}", uuid::Uuid::new_v4());
        // redis-rs only authenticates when the URL has a password, so give the user one.
        let password = uuid::Uuid::new_v4().simple().to_string();
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .exec_async(admin)
            .await
            .expect("creating a test ACL user should succeed");
        let mut url = url::Url::parse(&redis_url()).expect("the test redis url should parse");
        url.set_username(&name)
            .expect("the test redis url should accept a user name");
        url.set_password(Some(&password))
            .expect("the test redis url should accept a password");
        Self {
            name,
            url: url.to_string(),
        }
    }

    /// Kills every connection of this user; returns how many there were.
    async fn kill_connections(&self, admin: &mut redis::aio::MultiplexedConnection) -> u64 {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(&self.name)
            .query_async(admin)
            .await
            .expect("CLIENT KILL USER should succeed")
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        let result = redis::Client::open(redis_url())
            .and_then(|client| client.get_connection())
            .and_then(|mut connection| {
                redis::cmd("ACL")
                    .arg("DELUSER")
                    .arg(&self.name)
                    .exec(&mut connection)
            });
        if let Err(e) = result {
            eprintln!("could not delete test ACL user {}: {e}", self.name);
        }
    }
}

async fn admin_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("the test redis url should parse")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is required for these tests and is not reachable ({e})"))
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.id.clone()).collect()
}

/// Publish, leave two messages unacked, kill every connection of the queue, publish more:
/// after consuming and acking, every message arrived exactly once, and the two that were
/// pending at the kill came back as redeliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nothing_is_lost_across_a_reconnect() {
    let mut admin = admin_connection().await;
    let user = AclUser::create(&mut admin).await;
    let redis = TestRedis::connect(&user.url).await;
    let queue = redis.queue.as_ref();
    let (stream, group) = ("inbox:node-9", "agents");
    queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");

    let mut published = Vec::new();
    for i in 0..5 {
        let payload = format!("before {i}");
        published.push(
            queue
                .publish(stream, payload.as_bytes(), &Headers::new())
                .await
                .expect("publish before the kill should succeed"),
        );
    }
    let unacked = queue
        .consume(stream, group, "doomed", 2, Duration::ZERO)
        .await
        .expect("consume before the kill should succeed");
    assert_eq!(ids(&unacked), published[..2]);

    let killed = user.kill_connections(&mut admin).await;
    assert!(
        killed >= 2,
        "expected the queue's shared and blocking connections to be killed, killed {killed}"
    );

    for i in 0..5 {
        let payload = format!("after {i}");
        published.push(
            queue
                .publish(stream, payload.as_bytes(), &Headers::new())
                .await
                .expect("publish after the kill should reconnect and succeed"),
        );
    }

    let mut delivered: Vec<Delivery> = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(5);
    while delivered.len() < published.len() && Instant::now() < give_up {
        let batch = queue
            .consume(stream, group, "survivor", 20, Duration::from_millis(1500))
            .await
            .expect("consume after the kill should succeed");
        queue
            .ack(stream, group, &ids(&batch))
            .await
            .expect("ack after the kill should succeed");
        delivered.extend(batch);
    }
    let straggler = queue
        .consume(stream, group, "survivor", 20, Duration::from_millis(450))
        .await
        .expect("consume should succeed");
    assert!(
        straggler.is_empty(),
        "nothing delivered twice after acks, got {straggler:?}"
    );

    let mut got = ids(&delivered);
    got.sort();
    let mut expected = published.clone();
    expected.sort();
    assert_eq!(got, expected, "every message exactly once, none missing");
    for delivery in &delivered {
        let expected_count = if published[..2].contains(&delivery.id) {
            2
        } else {
            1
        };
        assert_eq!(
            delivery.delivery_count, expected_count,
            "delivery count of {}",
            delivery.id
        );
    }
    assert_eq!(
        queue
            .pending(stream, group)
            .await
            .expect("pending should succeed"),
        0
    );
}

/// A consumer blocked in XREADGROUP whose connection is killed keeps waiting on a new one
/// and still gets the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_blocked_consumer_survives_a_killed_connection() {
    let mut admin = admin_connection().await;
    let user = AclUser::create(&mut admin).await;
    let redis = TestRedis::connect(&user.url).await;
    let (stream, group) = ("inbox:node-10", "agents");
    redis
        .queue
        .ensure_group(stream, group)
        .await
        .expect("ensure_group should succeed");

    let waiter = {
        let queue = Arc::clone(&redis.queue);
        tokio::spawn(async move {
            queue
                .consume(stream, group, "waiter", 10, Duration::from_secs(3))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = user.kill_connections(&mut admin).await;
    assert!(
        killed >= 2,
        "the blocked read's connection was killed too, killed {killed}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = redis
        .queue
        .publish(stream, b"still there", &Headers::new())
        .await
        .expect("publish after the kill should succeed");

    let got = waiter
        .await
        .expect("consumer task should not panic")
        .expect("a blocked consume survives its connection being killed");
    assert_eq!(ids(&got), [id]);
}

/// An unreachable Redis is reported at once as a connect error, not retried for seconds.
#[tokio::test]
async fn redis_connect_to_nothing_fails_fast() {
    let started = Instant::now();
    // Port 1 on loopback: nothing listens there, so the connection is refused.
    let result =
        RedisQueue::connect("redis://127.0.0.1:1", "bosun-test:", contract::options()).await;
    assert!(
        matches!(&result, Err(QueueError::Connect(_))),
        "expected a connect error, got {:?}",
        result.map(drop)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The trim script compares and steps ids as decimal strings, not Lua numbers: ids of
/// different lengths (`9-0` before `12-0`), sequence numbers past 2^53 and the largest one
/// are handled exactly. Queue ids are 13-digit timestamps, so only hand-written ids get here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trim_handles_ids_exactly() {
    let mut admin = admin_connection().await;
    let redis = TestRedis::new().await;
    let queue = redis.queue.as_ref();
    let add = |stream: &str, ids: &[&str]| {
        let mut pipeline = redis::pipe();
        for id in ids {
            pipeline
                .cmd("XADD")
                .arg(format!("{}{stream}", redis.prefix))
                .arg(*id)
                .arg("payload")
                .arg(*id)
                .ignore();
        }
        pipeline
    };
    let consume = |stream: &'static str, group: &'static str, max: usize| async move {
        queue
            .consume(stream, group, "c", max, Duration::ZERO)
            .await
            .expect("consume should succeed")
    };

    // Group "ahead" has acked 9-0..11-0 and holds 12-0 pending; group "behind" has only read
    // and acked 9-0. Only 9-0 may go, though "12-0" sorts before "9-0" as text.
    let stream = "ids:lengths";
    let published: Vec<String> = (9..=20).map(|ms| format!("{ms}-0")).collect();
    let id_refs: Vec<&str> = published.iter().map(String::as_str).collect();
    add(stream, &id_refs)
        .exec_async(&mut admin)
        .await
        .expect("XADD with explicit ids should succeed");
    for group in ["ahead", "behind"] {
        queue
            .ensure_group(stream, group)
            .await
            .expect("ensure_group should succeed");
    }
    let ahead = consume(stream, "ahead", 4).await;
    queue
        .ack(stream, "ahead", &ids(&ahead[..3]))
        .await
        .expect("ack should succeed");
    let behind = consume(stream, "behind", 1).await;
    queue
        .ack(stream, "behind", &ids(&behind))
        .await
        .expect("ack should succeed");
    assert_eq!(
        queue.trim(stream).await.expect("trim should succeed"),
        1,
        "only 9-0 is acknowledged by both groups"
    );
    let rest = consume(stream, "behind", 100).await;
    assert_eq!(
        ids(&rest),
        published[1..],
        "group behind still gets 10-0 onwards"
    );

    // Without groups: stepping past a sequence number beyond 2^53 (where Lua numbers lose
    // precision), then past the largest one, which moves on to the next millisecond.
    let stream = "ids:large-sequences";
    add(
        stream,
        &[
            "1-0",
            "2-0",
            "3-9007199254740993",
            "4-0",
            "5-0",
            "6-0",
            "7-18446744073709551615",
        ],
    )
    .exec_async(&mut admin)
    .await
    .expect("XADD with explicit ids should succeed");
    assert_eq!(queue.trim(stream).await.expect("trim should succeed"), 3);
    add(stream, &["8-0", "9-0", "10-0", "11-0"])
        .exec_async(&mut admin)
        .await
        .expect("XADD with explicit ids should succeed");
    assert_eq!(queue.trim(stream).await.expect("trim should succeed"), 4);
    queue
        .ensure_group(stream, "late")
        .await
        .expect("ensure_group should succeed");
    let kept = consume(stream, "late", 100).await;
    assert_eq!(ids(&kept), ["8-0", "9-0", "10-0", "11-0"]);
}
