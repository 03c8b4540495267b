//! Master key rotation on SQLite and PostgreSQL: every SecureString version is re-wrapped
//! under the new key with its value ciphertext untouched, a service holding only the new key
//! still decrypts everything, String parameters are left alone, a second run finds nothing
//! to do, a half-finished run completes on re-run, and an unknown key is InvalidKeyId.

use std::collections::BTreeMap;
use std::sync::Arc;

use bosun_parameters::{
    DEFAULT_KEY_ID, Envelope, MasterKeyRing, RotationReport, rotate_master_key,
};
use bosun_proto::parameters::v1 as pb;
use bosun_proto::parameters::v1::parameter_service_client::ParameterServiceClient;
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use secrecy::ExposeSecret;
use tonic::service::Routes;
use tonic::transport::Channel;

const OTHER_KEY: &str = "alias/other";
const NEW_KEY: &str = "alias/rotated";
const ADMIN: &str = "user/admin";

/// A ParameterService over `db` with `ring`, behind token verification on a loopback port.
struct Server {
    server: TestServer,
}

impl Server {
    async fn start(db: &DatabaseConnection, ring: MasterKeyRing) -> Server {
        let service = bosun_parameters::ParameterServiceImpl::new(
            db.clone(),
            bosun_audit::AuditLog::new(db.clone()),
            Arc::new(ring),
        );
        Server {
            server: TestServer::start(Routes::new(service.into_server())).await,
        }
    }

    fn req<T>(&self, body: T) -> tonic::Request<T> {
        self.server
            .request(&Caller::new(ADMIN).policy(ALLOW_ALL), body)
    }

    fn client(&self) -> ParameterServiceClient<Channel> {
        ParameterServiceClient::new(self.server.channel())
    }

    async fn put(&self, name: &str, value: &str, secure: bool, key_id: &str, overwrite: bool) {
        let r#type = if secure {
            pb::ParameterType::SecureString
        } else {
            pb::ParameterType::String
        };
        self.client()
            .put_parameter(self.req(pb::PutParameterRequest {
                name: name.into(),
                value: value.into(),
                r#type: r#type as i32,
                key_id: key_id.into(),
                overwrite,
                ..Default::default()
            }))
            .await
            .expect("put a parameter");
    }

    async fn get(&self, name: &str, with_decryption: bool) -> pb::Parameter {
        self.client()
            .get_parameter(self.req(pb::GetParameterRequest {
                name: name.into(),
                with_decryption,
            }))
            .await
            .expect("get a parameter")
            .into_inner()
            .parameter
            .expect("a parameter")
    }

    async fn history(&self, name: &str) -> Vec<pb::ParameterHistory> {
        self.client()
            .get_parameter_history(self.req(pb::GetParameterHistoryRequest {
                name: name.into(),
                with_decryption: true,
                ..Default::default()
            }))
            .await
            .expect("history")
            .into_inner()
            .parameters
    }

    /// Name → key id, as DescribeParameters reports them.
    async fn described_key_ids(&self) -> BTreeMap<String, String> {
        self.client()
            .describe_parameters(self.req(pb::DescribeParametersRequest::default()))
            .await
            .expect("describe")
            .into_inner()
            .parameters
            .into_iter()
            .map(|p| (p.name, p.key_id))
            .collect()
    }

    fn stop(mut self) {
        self.server.stop();
    }
}

/// A copy of `ring` through its key file JSON (the ring is not Clone).
fn copy(ring: &MasterKeyRing) -> MasterKeyRing {
    MasterKeyRing::from_json(ring.to_json().expose_secret().as_bytes()).expect("ring copy")
}

/// A ring holding only `key_id` of `ring`, as its default: built from `ring`'s JSON.
fn only_key(ring: &MasterKeyRing, key_id: &str) -> MasterKeyRing {
    let json: serde_json::Value =
        serde_json::from_str(ring.to_json().expose_secret()).expect("key file JSON");
    let key = json["keys"][key_id]
        .as_str()
        .expect("the key is in the ring");
    let trimmed = serde_json::json!({"default_key_id": key_id, "keys": {key_id: key}});
    let only = MasterKeyRing::from_json(trimmed.to_string().as_bytes()).expect("trimmed ring");
    assert_eq!(only.key_ids().collect::<Vec<_>>(), [key_id]);
    only
}

/// (name, version) → (parameter type, key id, stored value), straight from the table.
async fn stored_versions(
    db: &DatabaseConnection,
) -> BTreeMap<(String, i64), (String, String, String)> {
    let backend = db.get_database_backend();
    db.query_all_raw(Statement::from_string(
        backend,
        "SELECT name, version, parameter_type, key_id, value FROM parameter_versions".to_owned(),
    ))
    .await
    .expect("raw query")
    .into_iter()
    .map(|row| {
        let get = |column: &str| row.try_get::<String>("", column).expect("text column");
        (
            (
                get("name"),
                row.try_get::<i64>("", "version").expect("version"),
            ),
            (get("parameter_type"), get("key_id"), get("value")),
        )
    })
    .collect()
}

async fn setup(test_db: &TestDatabase) -> MasterKeyRing {
    bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
        .await
        .expect("audit migrations apply");
    bosun_store::migrate::<bosun_parameters::Migrator>(&test_db.db)
        .await
        .expect("parameters migrations apply");
    let mut ring = MasterKeyRing::generate_default().expect("key ring");
    ring.generate(OTHER_KEY).expect("second key");
    ring
}

#[tokio::test]
async fn rotation_rewraps_every_secure_string_and_leaves_values_alone() {
    for test_db in bosun_store::testing::both().await {
        let db = test_db.db.clone();
        let old_ring = setup(&test_db).await;
        let before = Server::start(&db, copy(&old_ring)).await;
        before.put("/app/a", "secret-a1", true, "", false).await;
        before.put("/app/a", "secret-a2", true, "", true).await;
        before
            .put("/app/b", "secret-b", true, OTHER_KEY, false)
            .await;
        before.put("/app/c", "secret-c", true, "", false).await;
        before
            .put("/app/plain", "not-a-secret", false, "", false)
            .await;
        before.stop();
        let stored_before = stored_versions(&db).await;
        assert_eq!(stored_before.len(), 5);

        // The caller adds the new key to the ring, then rotates.
        let mut ring = copy(&old_ring);
        ring.generate(NEW_KEY).expect("new key");
        let report = rotate_master_key(&db, &ring, NEW_KEY)
            .await
            .expect("rotate");
        assert_eq!(
            report,
            RotationReport {
                rewrapped: 4,
                already_current: 0
            }
        );

        // Stored envelopes changed (new key id, new wrapped key) but carry the same value
        // ciphertext; the String parameter's row is byte for byte the same.
        let stored_after = stored_versions(&db).await;
        assert_eq!(
            stored_after.keys().collect::<Vec<_>>(),
            stored_before.keys().collect::<Vec<_>>()
        );
        for (key, (kind, key_id, value)) in &stored_after {
            let (old_kind, old_key_id, old_value) = &stored_before[key];
            assert_eq!(kind, old_kind);
            if kind == "SecureString" {
                assert_eq!(key_id, NEW_KEY, "{key:?}");
                assert_ne!(value, old_value, "{key:?}");
                let old = Envelope::from_base64(old_value).expect("old envelope");
                let new = Envelope::from_base64(value).expect("new envelope");
                assert_ne!(old.key_id(), NEW_KEY);
                assert_eq!(new.key_id(), NEW_KEY);
                assert_eq!(new.ciphertext(), old.ciphertext(), "{key:?}");
            } else {
                assert_eq!((key_id, value), (old_key_id, old_value), "{key:?}");
                assert_eq!(key_id, "");
            }
        }

        // A service whose ring holds only the new key decrypts everything, current versions
        // and history, to the same plaintext.
        let after = Server::start(&db, only_key(&ring, NEW_KEY)).await;
        for (name, plaintext) in [
            ("/app/a", "secret-a2"),
            ("/app/b", "secret-b"),
            ("/app/c", "secret-c"),
        ] {
            let decrypted = after.get(name, true).await;
            assert_eq!(decrypted.value, plaintext);
            let encrypted = after.get(name, false).await;
            assert_eq!(
                encrypted.value,
                stored_after[&(name.to_owned(), decrypted.version)].2
            );
        }
        let history = after.history("/app/a").await;
        assert_eq!(
            history
                .iter()
                .map(|h| (h.value.as_str(), h.key_id.as_str()))
                .collect::<Vec<_>>(),
            [("secret-a1", NEW_KEY), ("secret-a2", NEW_KEY)]
        );
        let described = after.described_key_ids().await;
        assert_eq!(described["/app/a"], NEW_KEY);
        assert_eq!(described["/app/b"], NEW_KEY);
        assert_eq!(described["/app/c"], NEW_KEY);
        assert_eq!(described["/app/plain"], "");
        assert_eq!(after.get("/app/plain", true).await.value, "not-a-secret");

        // The old ring alone no longer opens the stored values.
        let stale = Server::start(&db, copy(&old_ring)).await;
        let status = stale
            .client()
            .get_parameter(stale.req(pb::GetParameterRequest {
                name: "/app/b".into(),
                with_decryption: true,
            }))
            .await
            .expect_err("the old keys cannot unwrap the new envelope");
        assert!(!status.message().contains("secret-b"));
        stale.stop();

        // A second run finds everything current and writes nothing.
        let again = rotate_master_key(&db, &ring, NEW_KEY)
            .await
            .expect("rotate again");
        assert_eq!(
            again,
            RotationReport {
                rewrapped: 0,
                already_current: 4
            }
        );
        assert_eq!(stored_versions(&db).await, stored_after);
        after.stop();
        test_db.cleanup().await;
    }
}

#[tokio::test]
async fn a_run_that_stopped_part_way_completes_on_rerun() {
    for test_db in bosun_store::testing::both().await {
        let db = test_db.db.clone();
        let old_ring = setup(&test_db).await;
        let server = Server::start(&db, copy(&old_ring)).await;
        server.put("/x/one", "secret-one", true, "", false).await;
        server.put("/x/two", "secret-two", true, "", false).await;
        server.stop();
        let mut ring = copy(&old_ring);
        ring.generate(NEW_KEY).expect("new key");

        // A crashed run: one row fully rotated, another re-wrapped but its key_id column
        // and the parameter row not yet updated.
        let old_two = stored_versions(&db).await[&("/x/two".to_owned(), 1)]
            .2
            .clone();
        let rotated_one = rotate_master_key(&db, &ring, NEW_KEY)
            .await
            .expect("rotate");
        assert_eq!(rotated_one.rewrapped, 2);
        let backend = db.get_database_backend();
        for sql in [
            format!(
                "UPDATE parameter_versions SET key_id = '{DEFAULT_KEY_ID}' WHERE name = '/x/two'"
            ),
            format!("UPDATE parameters SET key_id = '{DEFAULT_KEY_ID}' WHERE name = '/x/two'"),
        ] {
            db.execute_raw(Statement::from_string(backend, sql))
                .await
                .expect("raw statement");
        }
        let half_done = stored_versions(&db).await[&("/x/two".to_owned(), 1)]
            .2
            .clone();
        assert_ne!(half_done, old_two);

        let report = rotate_master_key(&db, &ring, NEW_KEY)
            .await
            .expect("re-run");
        assert_eq!(
            report,
            RotationReport {
                rewrapped: 1,
                already_current: 1
            }
        );
        let stored = stored_versions(&db).await;
        let (_, key_id, value) = &stored[&("/x/two".to_owned(), 1)];
        assert_eq!(key_id, NEW_KEY);
        // Already wrapped under the new key, so the envelope is kept as it was.
        assert_eq!(value, &half_done);

        let server = Server::start(&db, only_key(&ring, NEW_KEY)).await;
        assert_eq!(server.get("/x/two", true).await.value, "secret-two");
        assert_eq!(server.get("/x/one", true).await.value, "secret-one");
        assert_eq!(server.described_key_ids().await["/x/two"], NEW_KEY);
        server.stop();
        test_db.cleanup().await;
    }
}

#[tokio::test]
async fn an_unknown_new_key_is_invalid_key_id_and_changes_nothing() {
    for test_db in bosun_store::testing::both().await {
        let db = test_db.db.clone();
        let ring = setup(&test_db).await;
        let server = Server::start(&db, copy(&ring)).await;
        server.put("/k/s", "secret-s", true, "", false).await;
        server.stop();
        let before = stored_versions(&db).await;
        for bad in ["alias/not-in-ring", "bad key!", ""] {
            let error = rotate_master_key(&db, &ring, bad)
                .await
                .expect_err("the key is not in the ring");
            let status = tonic::Status::from(error);
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{bad}: {status:?}"
            );
            assert_eq!(
                bosun_core::error::status_reason(&status).as_deref(),
                Some(bosun_parameters::error::INVALID_KEY_ID),
                "{bad}: {status:?}"
            );
        }
        assert_eq!(stored_versions(&db).await, before);
        test_db.cleanup().await;
    }
}
