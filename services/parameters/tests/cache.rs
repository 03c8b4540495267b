//! The read cache: repeat reads are served from memory, and no replica ever returns a value
//! older than a write another replica acknowledged — across puts, label moves, deletes,
//! expirations, lost Redis data and a Redis that cannot be reached.
//!
//! Replicas here are two `ParameterServiceImpl`s, each with its own database connection and
//! its own cache, called directly with an authenticated context.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bosun_parameters::{MasterKeyRing, ParameterServiceImpl, ReadCache};
use bosun_proto::parameters::v1 as pb;
use bosun_proto::parameters::v1::parameter_service_server::ParameterService;
use bosun_store::testing::TestDatabase;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod direct;
use direct::{migrated, req};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const CACHE_BYTES: usize = 8 << 20;

struct Replica {
    service: ParameterServiceImpl,
    cache: ReadCache,
}

impl Replica {
    async fn new(test_db: &TestDatabase, keys: &Arc<MasterKeyRing>, cache: ReadCache) -> Self {
        let db = bosun_store::connect(&test_db.url)
            .await
            .expect("a replica's own connection");
        let service =
            ParameterServiceImpl::new(db.clone(), bosun_audit::AuditLog::new(db), Arc::clone(keys))
                .with_cache(cache.clone());
        Replica { service, cache }
    }

    async fn put(&self, name: &str, value: &str) -> Result<i64, tonic::Status> {
        self.service
            .put_parameter(req(pb::PutParameterRequest {
                name: name.into(),
                value: value.into(),
                r#type: pb::ParameterType::String as i32,
                overwrite: true,
                ..Default::default()
            }))
            .await
            .map(|response| response.into_inner().version)
    }

    async fn get(&self, selector: &str) -> Result<String, tonic::Status> {
        self.service
            .get_parameter(req(pb::GetParameterRequest {
                name: selector.into(),
                with_decryption: false,
            }))
            .await
            .map(|response| response.into_inner().parameter.expect("a parameter").value)
    }

    async fn get_many(&self, names: &[&str]) -> pb::GetParametersResponse {
        self.service
            .get_parameters(req(pb::GetParametersRequest {
                names: names.iter().map(|name| (*name).to_owned()).collect(),
                with_decryption: false,
            }))
            .await
            .expect("get parameters")
            .into_inner()
    }

    async fn label(&self, name: &str, version: i64, label: &str) {
        self.service
            .label_parameter_version(req(pb::LabelParameterVersionRequest {
                name: name.into(),
                parameter_version: version,
                labels: vec![label.into()],
            }))
            .await
            .expect("label a version");
    }

    async fn delete(&self, name: &str) {
        self.service
            .delete_parameter(req(pb::DeleteParameterRequest { name: name.into() }))
            .await
            .expect("delete");
    }
}

fn keys() -> Arc<MasterKeyRing> {
    Arc::new(MasterKeyRing::generate_default().expect("key ring"))
}

fn prefix() -> String {
    format!("bosun-test-{}:", uuid::Uuid::new_v4().simple())
}

async fn redis_cache(url: &str, prefix: &str) -> ReadCache {
    ReadCache::redis(url, prefix, CACHE_BYTES).await.unwrap_or_else(|error| {
        panic!("these tests need Redis at {url} (start it with `redis-server --daemonize yes`): {error}")
    })
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

/// Deletes every key under `prefix`: what a Redis restart without persistence does.
async fn forget_tokens(prefix: &str) {
    let mut connection = redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("list keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .expect("delete keys");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_reads_come_from_memory_and_writes_are_seen_at_once() {
    for test_db in bosun_store::testing::both().await {
        migrated(&test_db).await;
        let keys = keys();
        for cache in [
            ReadCache::local(CACHE_BYTES),
            redis_cache(REDIS_URL, &prefix()).await,
        ] {
            let replica = Replica::new(&test_db, &keys, cache).await;
            let name = format!("/app/{}", uuid::Uuid::new_v4().simple());
            replica.put(&name, "one").await.expect("put");
            assert_eq!(replica.get(&name).await.expect("get"), "one");
            let before = replica.cache.stats();
            for _ in 0..5 {
                assert_eq!(replica.get(&name).await.expect("get"), "one");
            }
            let after = replica.cache.stats();
            assert_eq!(
                after.hits - before.hits,
                5,
                "{:?}: repeat reads hit",
                test_db.backend
            );

            replica.put(&name, "two").await.expect("overwrite");
            assert_eq!(replica.get(&name).await.expect("get"), "two");
            assert_eq!(
                replica.get(&format!("{name}:1")).await.expect("get v1"),
                "one"
            );
            assert_eq!(
                replica.get(&format!("{name}:2")).await.expect("get v2"),
                "two"
            );

            // GetParameters shares the cache, and a missing name is still reported.
            let many = replica.get_many(&[&name, "/app/missing"]).await;
            assert_eq!(many.parameters.len(), 1);
            assert_eq!(many.parameters[0].value, "two");
            assert_eq!(many.invalid_parameters, vec!["/app/missing".to_owned()]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_serves_a_value_older_than_another_replicas_acknowledged_write() {
    for test_db in bosun_store::testing::both().await {
        migrated(&test_db).await;
        let keys = keys();
        let prefix = prefix();
        let a = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
        let b = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
        let name = "/app/coherent";
        a.put(name, "0").await.expect("put");
        for round in 1..=40 {
            // Both replicas cache the current value...
            let current = (round - 1).to_string();
            assert_eq!(a.get(name).await.expect("a reads"), current);
            assert_eq!(b.get(name).await.expect("b reads"), current);
            // ...then one of them writes, and the other must see it at once.
            let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
            writer.put(name, &round.to_string()).await.expect("write");
            assert_eq!(
                reader.get(name).await.expect("the other replica reads"),
                round.to_string(),
                "{:?}: round {round}",
                test_db.backend
            );
        }
        assert!(
            a.cache.stats().hits > 0 && b.cache.stats().hits > 0,
            "both caches served reads"
        );
        forget_tokens(&prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_see_every_acknowledged_write() {
    let test_db = bosun_store::testing::postgres().await;
    migrated(&test_db).await;
    let keys = keys();
    let prefix = prefix();
    let writer =
        Arc::new(Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await);
    let reader =
        Arc::new(Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await);
    let name = "/app/raced";
    writer.put(name, "0").await.expect("put");
    let acknowledged = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let reader = Arc::clone(&reader);
        let acknowledged = Arc::clone(&acknowledged);
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let floor = acknowledged.load(Ordering::SeqCst);
                let seen: i64 = reader
                    .get(name)
                    .await
                    .expect("read")
                    .parse()
                    .expect("number");
                assert!(
                    seen >= floor,
                    "read {seen} after write {floor} was acknowledged"
                );
                reads += 1;
                // A client waits on the network between calls; let the other tasks run.
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    for value in 1..=60i64 {
        writer.put(name, &value.to_string()).await.expect("write");
        acknowledged.store(value, Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for task in readers {
        reads += task.await.expect("a reader never saw a stale value");
    }
    assert!(
        reads > 60,
        "the readers ran alongside the writes ({reads} reads)"
    );
    forget_tokens(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_moves_and_deletes_reach_the_other_replica() {
    for test_db in bosun_store::testing::both().await {
        migrated(&test_db).await;
        let keys = keys();
        let prefix = prefix();
        let a = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
        let b = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
        let name = "/app/labelled";
        a.put(name, "first").await.expect("put v1");
        a.put(name, "second").await.expect("put v2");
        a.label(name, 1, "prod").await;
        let selector = format!("{name}:prod");
        assert_eq!(b.get(&selector).await.expect("b reads the label"), "first");
        assert_eq!(b.get(&selector).await.expect("b reads it again"), "first");

        a.label(name, 2, "prod").await;
        assert_eq!(b.get(&selector).await.expect("the label moved"), "second");

        a.delete(name).await;
        let gone = b.get(name).await.expect_err("deleted on the other replica");
        assert_eq!(gone.code(), tonic::Code::NotFound);
        let gone = b.get(&selector).await.expect_err("its labels went with it");
        assert_eq!(gone.code(), tonic::Code::NotFound);
        forget_tokens(&prefix).await;
    }
}

/// Redis loses its data (a restart without persistence): every replica starts over, and
/// none serves a value older than a write acknowledged before or after the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_redis_data_causes_misses_never_stale_reads() {
    let test_db = bosun_store::testing::sqlite().await;
    migrated(&test_db).await;
    let keys = keys();
    let prefix = prefix();
    let a = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
    let b = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
    let name = "/app/forgotten";
    a.put(name, "old").await.expect("put");
    assert_eq!(a.get(name).await.expect("cache it"), "old");
    assert_eq!(a.get(name).await.expect("served from memory"), "old");
    b.put(name, "new")
        .await
        .expect("write on the other replica");
    // Redis restarts without its data after the write was acknowledged.
    forget_tokens(&prefix).await;
    assert_eq!(a.get(name).await.expect("read after the loss"), "new");
    assert_eq!(a.get(name).await.expect("cached again"), "new");
    forget_tokens(&prefix).await;
    b.put(name, "newer")
        .await
        .expect("write right after the loss");
    assert_eq!(a.get(name).await.expect("read after that write"), "newer");
    forget_tokens(&prefix).await;
}

/// A TCP relay to Redis that can be cut and restored, to make Redis unreachable for one
/// replica only.
struct Relay {
    url: String,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("address"));
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut watching = watching.clone();
                if *watching.borrow() {
                    continue; // dropped: refused while cut
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:6379").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { url, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_reads_go_to_the_store_and_writes_say_they_are_not_everywhere_yet() {
    let test_db = bosun_store::testing::sqlite().await;
    migrated(&test_db).await;
    let keys = keys();
    let prefix = prefix();
    let relay = Relay::start().await;
    let a = Replica::new(&test_db, &keys, redis_cache(&relay.url, &prefix).await).await;
    let b = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
    let name = "/app/partitioned";
    a.put(name, "one").await.expect("put");
    assert_eq!(a.get(name).await.expect("cache it"), "one");
    assert_eq!(b.get(name).await.expect("cache it"), "one");

    relay.cut();
    // b's write is acknowledged; a cannot fetch tokens, so it reads the store.
    b.put(name, "two")
        .await
        .expect("write on the reachable replica");
    assert_eq!(a.get(name).await.expect("read without Redis"), "two");
    assert!(a.cache.stats().bypasses > 0);

    // a's write commits but cannot reach the other replicas: it says so.
    let error = a.put(name, "three").await.expect_err("write without Redis");
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert!(error.message().contains("committed"), "{}", error.message());
    assert_eq!(a.get(name).await.expect("a sees its own write"), "three");

    // Once Redis is reachable again the background retry lands, and b sees the write.
    relay.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if b.get(name).await.expect("b reads") == "three" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalidation never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    forget_tokens(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cache_evicts_and_still_answers_correctly() {
    let test_db = bosun_store::testing::sqlite().await;
    migrated(&test_db).await;
    let replica = Replica::new(&test_db, &keys(), ReadCache::local(16 * 1024)).await;
    let value = "x".repeat(900);
    for index in 0..100 {
        replica
            .put(&format!("/app/many/{index}"), &format!("{index}{value}"))
            .await
            .expect("put");
    }
    for _ in 0..2 {
        for index in 0..100 {
            let read = replica
                .get(&format!("/app/many/{index}"))
                .await
                .expect("get");
            assert!(read.starts_with(&format!("{index}x")), "value of {index}");
        }
    }
    let stats = replica.cache.stats();
    assert!(
        stats.misses > 100,
        "a 16 KiB cache cannot hold 90 KB: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_names_that_do_not_exist_leave_nothing_in_redis() {
    let test_db = bosun_store::testing::sqlite().await;
    migrated(&test_db).await;
    let prefix = prefix();
    let replica = Replica::new(&test_db, &keys(), redis_cache(REDIS_URL, &prefix).await).await;
    for index in 0..20 {
        let missing = replica
            .get(&format!("/made/up/{index}"))
            .await
            .expect_err("missing");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
    let mut connection = redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("list keys");
    assert!(!keys.iter().any(|key| key.contains("made")), "{keys:?}");
    let logged: u64 = redis::cmd("XLEN")
        .arg(format!("{prefix}parameters:cache:log"))
        .query_async(&mut connection)
        .await
        .expect("log length");
    assert_eq!(logged, 0, "reads write nothing to Redis");

    // A parameter that exists gets its token on first read and is cached from then on.
    replica.put("/app/real", "value").await.expect("put");
    forget_tokens(&prefix).await;
    assert_eq!(replica.get("/app/real").await.expect("first read"), "value");
    let before = replica.cache.stats();
    assert_eq!(
        replica.get("/app/real").await.expect("second read"),
        "value"
    );
    assert_eq!(replica.cache.stats().hits - before.hits, 1);
    forget_tokens(&prefix).await;
}

/// A replica shutting down gives its lease up: writers stop waiting for it at once, and it
/// serves nothing from its cache any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_replica_leaves_at_once_and_stops_serving_cached() {
    let test_db = bosun_store::testing::sqlite().await;
    migrated(&test_db).await;
    let keys = keys();
    let prefix = prefix();
    let a = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
    let b = Replica::new(&test_db, &keys, redis_cache(REDIS_URL, &prefix).await).await;
    let replicas = format!("{prefix}parameters:cache:replicas");
    let mut connection = redis_connection().await;
    let count = |connection: &mut redis::aio::MultiplexedConnection| {
        let replicas = replicas.clone();
        let mut connection = connection.clone();
        async move {
            redis::cmd("HLEN")
                .arg(replicas)
                .query_async::<u64>(&mut connection)
                .await
                .expect("count replicas")
        }
    };
    assert_eq!(count(&mut connection).await, 2);
    a.put("/app/leaving", "1").await.expect("put");
    assert_eq!(b.get("/app/leaving").await.expect("cache it"), "1");

    b.cache.release().await;
    assert_eq!(count(&mut connection).await, 1, "b is gone from Redis");
    let before = b.cache.stats();
    assert_eq!(b.get("/app/leaving").await.expect("read"), "1");
    assert!(
        b.cache.stats().bypasses > before.bypasses,
        "b reads the store"
    );
    a.put("/app/leaving", "2")
        .await
        .expect("a's write need not wait for b");
    assert_eq!(b.get("/app/leaving").await.expect("read"), "2");
    // b never comes back by itself.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(count(&mut connection).await, 1);
    forget_tokens(&prefix).await;
}
