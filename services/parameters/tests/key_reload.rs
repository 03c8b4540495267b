//! A running service picks up a master key rotation from its key file without a restart:
//! values re-wrapped under the new key decrypt, overwrites land under it, and new
//! SecureStrings use the new default. A broken key file keeps the keys already loaded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bosun_parameters::{KeySource, MasterKeyRing, ParameterServiceImpl, rotate_master_key};
use bosun_proto::parameters::v1 as pb;
use bosun_proto::parameters::v1::parameter_service_server::ParameterService;
use secrecy::ExposeSecret;

mod direct;
use direct::{migrated, req};

const NEW_KEY: &str = "alias/bosun/parameters-2027";

async fn put_secure(service: &ParameterServiceImpl, name: &str, value: &str) {
    service
        .put_parameter(req(pb::PutParameterRequest {
            name: name.into(),
            value: value.into(),
            r#type: pb::ParameterType::SecureString as i32,
            overwrite: true,
            ..Default::default()
        }))
        .await
        .expect("put a SecureString");
}

async fn decrypted(service: &ParameterServiceImpl, name: &str) -> Result<String, tonic::Status> {
    service
        .get_parameter(req(pb::GetParameterRequest {
            name: name.into(),
            with_decryption: true,
        }))
        .await
        .map(|response| response.into_inner().parameter.expect("a parameter").value)
}

async fn key_id(service: &ParameterServiceImpl, name: &str) -> String {
    service
        .get_parameter_history(req(pb::GetParameterHistoryRequest {
            name: name.into(),
            ..Default::default()
        }))
        .await
        .expect("history")
        .into_inner()
        .parameters
        .last()
        .expect("a version")
        .key_id
        .clone()
}

/// What `bosun rotate-parameter-key` does to the file: add the key, make it the default,
/// replace the file atomically.
fn rotate_file(path: &Path) -> MasterKeyRing {
    let mut ring = MasterKeyRing::load_or_create(path).expect("read the key file");
    ring.generate(NEW_KEY).expect("new key");
    ring.set_default_key_id(NEW_KEY).expect("default");
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, ring.to_json().expose_secret()).expect("write");
    std::fs::rename(&temporary, path).expect("replace");
    ring
}

#[tokio::test]
async fn a_rotation_reaches_a_running_service_without_restart() {
    for test_db in bosun_store::testing::both().await {
        migrated(&test_db).await;
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("parameters.json");
        let keys = Arc::new(
            KeySource::from_file(&path)
                .expect("create the key file")
                .check_every(Duration::ZERO),
        );
        let service = ParameterServiceImpl::new(
            test_db.db.clone(),
            bosun_audit::AuditLog::new(test_db.db.clone()),
            keys.current(),
        )
        .with_key_source(Arc::clone(&keys));
        put_secure(&service, "/app/db/password", "hunter2").await;
        let old_key = key_id(&service, "/app/db/password").await;

        // Another process rotates: new key in the file, every data key re-wrapped.
        let ring = rotate_file(&path);
        let report = rotate_master_key(&test_db.db, &ring, NEW_KEY)
            .await
            .expect("rotate");
        assert_eq!(report.rewrapped, 1);

        assert_eq!(
            decrypted(&service, "/app/db/password")
                .await
                .expect("decrypt after rotation"),
            "hunter2",
            "{:?}",
            test_db.backend
        );
        put_secure(&service, "/app/db/password", "hunter3").await;
        assert_eq!(key_id(&service, "/app/db/password").await, NEW_KEY);
        put_secure(&service, "/app/api/token", "abc").await;
        assert_eq!(
            key_id(&service, "/app/api/token").await,
            NEW_KEY,
            "new default used"
        );
        assert_ne!(old_key, NEW_KEY);
        assert_eq!(
            decrypted(&service, "/app/api/token")
                .await
                .expect("decrypt"),
            "abc"
        );

        // A file broken afterwards takes no keys away.
        std::fs::write(&path, "{ not json").expect("break the file");
        assert_eq!(
            decrypted(&service, "/app/db/password")
                .await
                .expect("still decrypts"),
            "hunter3"
        );
        put_secure(&service, "/app/api/token", "def").await;
        assert_eq!(
            decrypted(&service, "/app/api/token")
                .await
                .expect("decrypt"),
            "def"
        );
    }
}
