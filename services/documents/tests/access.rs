//! Who sees and changes what, on SQLite and PostgreSQL: private documents, sharing with
//! users, roles and All, owners versus administrators, callers without policies, the
//! read-only built-in documents, and the audit trail of every mutation.

mod common;

use bosun_proto::audit::v1::AuditResult;
use bosun_proto::documents::v1 as pb;
use common::*;
use tonic::Code;

fn assert_invisible<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = assert_error(result, Code::NotFound, "InvalidDocument");
    assert_eq!(status.message(), "document private-doc not found");
}

#[tokio::test]
async fn a_private_document_is_invisible_until_shared() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.create(ALICE, "private-doc", COMMAND_JSON)
            .await
            .expect("create");

        // Bob: exactly as if it did not exist.
        assert_invisible(h.get(BOB, "private-doc", "", "").await);
        assert_invisible(
            h.docs()
                .describe_document(h.req(
                    BOB,
                    pb::DescribeDocumentRequest {
                        name: "private-doc".into(),
                        ..Default::default()
                    },
                ))
                .await,
        );
        assert_invisible(
            h.update(BOB, "private-doc", COMMAND_YAML, "$LATEST", "")
                .await,
        );
        assert_invisible(h.delete(BOB, "private-doc", "", "").await);
        let missing = assert_error(
            h.get(BOB, "no-such-doc", "", "").await,
            Code::NotFound,
            "InvalidDocument",
        );
        assert_eq!(missing.message(), "document no-such-doc not found");
        let bob_sees = h.list_names(BOB, vec![], 0).await.expect("list");
        assert!(
            !bob_sees.contains(&"private-doc".to_owned()),
            "{bob_sees:?}"
        );

        // Shared with user/bob: visible, listed, but still not his to change.
        h.share(ALICE, "private-doc", &[BOB], &[])
            .await
            .expect("share");
        let got = h.get(BOB, "private-doc", "", "").await.expect("bob reads");
        assert_eq!(got.content, COMMAND_JSON);
        assert!(
            h.list_names(BOB, vec![], 0)
                .await
                .expect("list")
                .contains(&"private-doc".to_owned())
        );
        for result in [
            h.update(BOB, "private-doc", COMMAND_YAML, "$LATEST", "")
                .await
                .map(|_| ()),
            h.delete(BOB, "private-doc", "", "").await,
            h.share(BOB, "private-doc", &["All"], &[]).await,
            h.docs()
                .add_tags_to_resource(h.req(
                    BOB,
                    pb::AddTagsToResourceRequest {
                        resource_type: "Document".into(),
                        resource_id: "private-doc".into(),
                        tags: vec![pb::Tag {
                            key: "k".into(),
                            value: "v".into(),
                        }],
                    },
                ))
                .await
                .map(|_| ()),
        ] {
            let status = result.expect_err("bob may not change alice's document");
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        }
        let owners = h
            .list_names(BOB, vec![filter("Owner", &["Self"])], 0)
            .await
            .expect("list");
        assert!(owners.is_empty(), "shared is not owned: {owners:?}");

        // Who it is shared with is the owner's to see.
        let principals = h
            .docs()
            .describe_document_permission(h.req(
                ALICE,
                pb::DescribeDocumentPermissionRequest {
                    name: "private-doc".into(),
                    permission_type: "Share".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("describe permission")
            .into_inner()
            .principals;
        assert_eq!(principals, [BOB]);
        let status = h
            .docs()
            .describe_document_permission(h.req(
                BOB,
                pb::DescribeDocumentPermissionRequest {
                    name: "private-doc".into(),
                    permission_type: "Share".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("only the owner sees the shares");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

        // Unshared: invisible again.
        h.share(ALICE, "private-doc", &[], &[BOB])
            .await
            .expect("unshare");
        assert_invisible(h.get(BOB, "private-doc", "", "").await);

        // Shared with one of bob's roles, then with everyone.
        h.share(ALICE, "private-doc", &["role/ops"], &[])
            .await
            .expect("share role");
        h.get(BOB, "private-doc", "", "")
            .await
            .expect("bob reads through his role");
        h.share(ALICE, "private-doc", &["All"], &["role/ops"])
            .await
            .expect("share all");
        h.get(BOB, "private-doc", "", "")
            .await
            .expect("bob reads as anyone");
        h.share(ALICE, "private-doc", &[], &["All"])
            .await
            .expect("unshare all");
        assert_invisible(h.get(BOB, "private-doc", "", "").await);

        // The administrator sees and changes everything.
        assert!(
            h.list_names(ADMIN, vec![], 0)
                .await
                .expect("list")
                .contains(&"private-doc".to_owned())
        );
        let v2 = h
            .update(ADMIN, "private-doc", COMMAND_YAML, "$LATEST", "")
            .await
            .expect("admin updates");
        assert_eq!(v2.owner, ALICE, "ownership does not move");
        h.share(ADMIN, "private-doc", &[BOB], &[])
            .await
            .expect("admin shares");
        h.get(BOB, "private-doc", "", "")
            .await
            .expect("shared by admin");
        h.delete(ADMIN, "private-doc", "", "")
            .await
            .expect("admin deletes");
        assert_error(
            h.get(ALICE, "private-doc", "", "").await,
            Code::NotFound,
            "InvalidDocument",
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn callers_without_policies_are_denied() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.create(ALICE, "some-doc", COMMAND_JSON)
            .await
            .expect("create");
        h.share(ALICE, "some-doc", &["All"], &[])
            .await
            .expect("share with all");
        for result in [
            h.get(NOBODY, "some-doc", "", "").await.map(|_| ()),
            h.get(NOBODY, "AWS-RunShellScript", "", "")
                .await
                .map(|_| ()),
            h.list_names(NOBODY, vec![], 0).await.map(|_| ()),
            h.create(NOBODY, "nobodys-doc", COMMAND_JSON)
                .await
                .map(|_| ()),
            h.delete(NOBODY, "some-doc", "", "").await,
        ] {
            let status = result.expect_err("denied");
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        }
        // A request without a token never reaches the service.
        let status = h
            .docs()
            .get_document(pb::GetDocumentRequest {
                name: "some-doc".into(),
                ..Default::default()
            })
            .await
            .expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated);
        h.stop().await;
    }
}

#[tokio::test]
async fn built_in_documents_are_listed_readable_by_alias_and_read_only() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let expected: Vec<String> = bosun_documents::built_in_names()
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(expected.len(), 7);
        assert_eq!(
            h.list_names(BOB, vec![filter("Owner", &["Bosun"])], 0)
                .await
                .expect("list"),
            expected
        );
        h.create(ALICE, "zz-mine", COMMAND_JSON)
            .await
            .expect("create");
        let all = h
            .list_names(ALICE, vec![filter("Owner", &["All"])], 2)
            .await
            .expect("list");
        let mut sorted_expected = expected.clone();
        sorted_expected.push("zz-mine".into());
        assert_eq!(all, sorted_expected);
        assert_eq!(
            h.list_names(ALICE, vec![filter("Owner", &["Private"])], 0)
                .await
                .expect("list"),
            ["zz-mine"]
        );

        for (name, alias) in bosun_documents::built_in_names() {
            let by_alias = h.get(BOB, alias, "", "").await.expect("get by alias");
            assert_eq!(by_alias.name, name);
            let by_name = h.get(BOB, name, "$LATEST", "").await.expect("get by name");
            assert_eq!(by_name.content, by_alias.content);
        }
        let described = h
            .docs()
            .describe_document(h.req(
                BOB,
                pb::DescribeDocumentRequest {
                    name: "AWS-RunShellScript".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("describe")
            .into_inner()
            .document
            .expect("document");
        assert_eq!(described.owner, "Bosun");
        assert_eq!(described.schema_version, "1.2");
        assert_eq!(described.document_type, pb::DocumentType::Command as i32);
        let parameters: Vec<_> = described
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.r#type.as_str(), p.default_value.as_str()))
            .collect();
        assert_eq!(
            parameters,
            [
                ("commands", "StringList", ""),
                ("executionTimeout", "String", "\"3600\""),
                ("workingDirectory", "String", "\"\""),
            ]
        );
        let session = h
            .get(BOB, "SSM-SessionManagerRunShell", "", "")
            .await
            .expect("session document");
        assert_eq!(session.document_type, pb::DocumentType::Session as i32);

        // Not even an administrator changes a built-in.
        for who in [ALICE, ADMIN] {
            for (what, result) in [
                (
                    "update",
                    h.update(who, "AWS-RunShellScript", COMMAND_JSON, "$LATEST", "")
                        .await
                        .map(|_| ()),
                ),
                (
                    "delete",
                    h.delete(who, "Bosun-RunShellScript", "", "").await,
                ),
                (
                    "share",
                    h.share(who, "Bosun-RunShellScript", &[BOB], &[]).await,
                ),
                (
                    "tag",
                    h.docs()
                        .add_tags_to_resource(h.req(
                            who,
                            pb::AddTagsToResourceRequest {
                                resource_type: "Document".into(),
                                resource_id: "Bosun-RunShellScript".into(),
                                tags: vec![pb::Tag {
                                    key: "k".into(),
                                    value: "v".into(),
                                }],
                            },
                        ))
                        .await
                        .map(|_| ()),
                ),
                (
                    "set default",
                    h.docs()
                        .update_document_default_version(h.req(
                            who,
                            pb::UpdateDocumentDefaultVersionRequest {
                                name: "Bosun-RunShellScript".into(),
                                document_version: "1".into(),
                            },
                        ))
                        .await
                        .map(|_| ()),
                ),
            ] {
                let status = result.expect_err(what);
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{who} {what}: {status:?}"
                );
                assert_eq!(
                    bosun_core::error::status_reason(&status).as_deref(),
                    Some("InvalidDocumentOperation"),
                    "{who} {what}"
                );
            }
        }
        h.stop().await;
    }
}

#[tokio::test]
async fn every_mutation_is_audited_with_its_outcome() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.create(ALICE, "audited-doc", COMMAND_JSON)
            .await
            .expect("create");
        h.update(ALICE, "audited-doc", COMMAND_YAML, "$LATEST", "")
            .await
            .expect("update");
        // A failure after authorization, and a refusal by ownership.
        h.update(ALICE, "audited-doc", COMMAND_YAML, "$LATEST", "")
            .await
            .expect_err("duplicate");
        h.share(ALICE, "audited-doc", &[BOB], &[])
            .await
            .expect("share");
        h.delete(BOB, "audited-doc", "", "")
            .await
            .expect_err("not bob's");
        // A refusal by policy.
        h.create(NOBODY, "nobodys-doc", COMMAND_JSON)
            .await
            .expect_err("denied");

        let created = h.audit_events("documents:CreateDocument").await;
        assert_eq!(created.len(), 2, "{created:?}");
        let (denied, success) = (&created[0], &created[1]);
        assert_eq!(success.principal, ALICE);
        assert_eq!(success.resource, "document:audited-doc");
        assert_eq!(success.result, AuditResult::Success as i32);
        assert_eq!(denied.principal, NOBODY);
        assert_eq!(denied.result, AuditResult::Denied as i32);

        let updates = h.audit_events("documents:UpdateDocument").await;
        let results: Vec<_> = updates
            .iter()
            .map(|e| (e.result, e.error_code.as_str()))
            .collect();
        assert_eq!(
            results,
            [
                (AuditResult::Failure as i32, "AlreadyExists"),
                (AuditResult::Success as i32, ""),
            ]
        );
        let shares = h.audit_events("documents:ModifyDocumentPermission").await;
        assert_eq!(shares.len(), 1);
        assert!(
            shares[0].details.contains("user/bob"),
            "{}",
            shares[0].details
        );
        let deletes = h.audit_events("documents:DeleteDocument").await;
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].principal, BOB);
        assert_eq!(deletes[0].result, AuditResult::Denied as i32);

        // Reads are not audited.
        h.get(ALICE, "audited-doc", "", "").await.expect("get");
        assert!(h.audit_events("documents:GetDocument").await.is_empty());
        h.stop().await;
    }
}
