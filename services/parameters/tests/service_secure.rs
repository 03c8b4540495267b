//! SecureString over gRPC on SQLite and PostgreSQL: values are stored only as envelopes,
//! bound to their parameter's name, returned encrypted unless decryption is asked for and
//! allowed, and every decryption is audited without the value.

mod service_common;

use bosun_proto::parameters::v1 as pb;
use service_common::*;
use tonic::Code;

const PLAINTEXT: &str = "hunter2-very-secret-plaintext";

fn secure_put(name: &str, value: &str) -> pb::PutParameterRequest {
    pb::PutParameterRequest {
        name: name.into(),
        value: value.into(),
        r#type: pb::ParameterType::SecureString as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn secure_strings_are_stored_encrypted_and_decrypted_only_when_allowed() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.put(ALICE, secure_put("/app/db/password", PLAINTEXT))
            .await
            .expect("create a SecureString");

        // The table holds no plaintext anywhere, only the envelope.
        let stored = h
            .sql_strings(
                "SELECT value FROM parameter_versions WHERE name = '/app/db/password'",
                "value",
            )
            .await;
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].contains(PLAINTEXT));
        let dumped = h
            .sql_strings(
                "SELECT name || value || key_id || description || parameter_type AS row_text FROM parameter_versions",
                "row_text",
            )
            .await;
        assert!(dumped.iter().all(|row| !row.contains(PLAINTEXT)));

        // Without decryption the stored envelope comes back; with it, the plaintext.
        let encrypted = h
            .get(BOB, "/app/db/password", false)
            .await
            .expect("read encrypted");
        assert_eq!(encrypted.value, stored[0]);
        assert_eq!(encrypted.r#type, pb::ParameterType::SecureString as i32);
        let plain = h
            .get(ALICE, "/app/db/password", true)
            .await
            .expect("decrypt");
        assert_eq!(plain.value, PLAINTEXT);

        // Decryption needs parameters:Decrypt.
        let status = h
            .get(BOB, "/app/db/password", true)
            .await
            .expect_err("bob may not decrypt");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(!status.message().contains(PLAINTEXT));

        // Both outcomes are audited, never with the value.
        let events = h.audit_events("parameters:Decrypt").await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events.iter().any(|e| e.principal == ALICE
            && e.result == bosun_proto::audit::v1::AuditResult::Success as i32));
        assert!(events.iter().any(|e| e.principal == BOB
            && e.result == bosun_proto::audit::v1::AuditResult::Denied as i32));
        assert!(
            events
                .iter()
                .all(|e| e.resource == "parameter:/app/db/password")
        );
        let audit_rows = h
            .sql_strings("SELECT details FROM audit_events", "details")
            .await;
        assert!(audit_rows.iter().all(|row| !row.contains(PLAINTEXT)));

        // GetParameters, by path and history decrypt too.
        let many = h
            .client()
            .get_parameters(h.req(
                ALICE,
                pb::GetParametersRequest {
                    names: vec!["/app/db/password".into()],
                    with_decryption: true,
                },
            ))
            .await
            .expect("get parameters")
            .into_inner();
        assert_eq!(many.parameters[0].value, PLAINTEXT);
        let history = h
            .client()
            .get_parameter_history(h.req(
                ALICE,
                pb::GetParameterHistoryRequest {
                    name: "/app/db/password".into(),
                    with_decryption: true,
                    ..Default::default()
                },
            ))
            .await
            .expect("history")
            .into_inner();
        assert_eq!(history.parameters[0].value, PLAINTEXT);
        assert_eq!(
            history.parameters[0].key_id,
            bosun_parameters::DEFAULT_KEY_ID
        );
        let denied = h
            .client()
            .get_parameters_by_path(h.req(
                BOB,
                pb::GetParametersByPathRequest {
                    path: "/app".into(),
                    recursive: true,
                    with_decryption: true,
                    ..Default::default()
                },
            ))
            .await
            .expect_err("bob may not decrypt by path");
        assert_eq!(denied.code(), Code::PermissionDenied);
        h.stop().await;
    }
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_parameter_does_not_decrypt() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.put(ALICE, secure_put("/app/a", PLAINTEXT))
            .await
            .expect("a");
        h.put(ALICE, secure_put("/app/b", "other-secret"))
            .await
            .expect("b");
        let stolen = h
            .sql_strings(
                "SELECT value FROM parameter_versions WHERE name = '/app/a'",
                "value",
            )
            .await;
        // Base64 text holds no quote, so it can sit in a literal.
        h.sql_execute(&format!(
            "UPDATE parameter_versions SET value = '{}' WHERE name = '/app/b'",
            stolen[0]
        ))
        .await;
        let status = h
            .get(ALICE, "/app/b", true)
            .await
            .expect_err("the copied ciphertext fails");
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains(PLAINTEXT));
        // The original still decrypts.
        assert_eq!(
            h.get(ALICE, "/app/a", true).await.expect("a").value,
            PLAINTEXT
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn key_ids_choose_the_master_key() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let mut other = secure_put("/app/k", PLAINTEXT);
        other.key_id = OTHER_KEY.into();
        h.put(ALICE, other).await.expect("other key");
        // An overwrite without key_id keeps the parameter's key.
        let mut again = secure_put("/app/k", "second-secret");
        again.overwrite = true;
        h.put(ALICE, again).await.expect("overwrite");
        let described = h
            .client()
            .describe_parameters(h.req(
                ALICE,
                pb::DescribeParametersRequest {
                    parameter_filters: vec![filter("KeyId", "Equals", &[OTHER_KEY])],
                    ..Default::default()
                },
            ))
            .await
            .expect("describe")
            .into_inner()
            .parameters;
        assert_eq!(described.len(), 1);
        assert_eq!(described[0].key_id, OTHER_KEY);
        assert_eq!(described[0].version, 2);
        assert_eq!(
            h.get(ALICE, "/app/k", true).await.expect("decrypt").value,
            "second-secret"
        );

        let mut unknown = secure_put("/app/u", PLAINTEXT);
        unknown.key_id = "alias/nope".into();
        let status = assert_error(
            h.put(ALICE, unknown).await,
            Code::InvalidArgument,
            "InvalidKeyId",
        );
        assert_eq!(violated_fields(&status), ["key_id"]);
        let mut malformed = secure_put("/app/u", PLAINTEXT);
        malformed.key_id = "bad key!".into();
        assert_error(
            h.put(ALICE, malformed).await,
            Code::InvalidArgument,
            "InvalidKeyId",
        );
        let mut on_string = secure_put("/app/u", "x");
        on_string.r#type = pb::ParameterType::String as i32;
        on_string.key_id = OTHER_KEY.into();
        let status = assert_error(
            h.put(ALICE, on_string).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["key_id"]);

        // A pattern mismatch on a secret never echoes the secret.
        let mut patterned = secure_put("/app/p", PLAINTEXT);
        patterned.allowed_pattern = "^[0-9]+$".into();
        let status = assert_error(
            h.put(ALICE, patterned).await,
            Code::InvalidArgument,
            "ParameterPatternMismatchException",
        );
        assert!(!status.message().contains(PLAINTEXT));
        h.stop().await;
    }
}
