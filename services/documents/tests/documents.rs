//! DocumentService over gRPC on SQLite and PostgreSQL: the document life cycle, version
//! selectors, JSON ↔ YAML conversion, every validation error with its code, SSM name and
//! field, tags and ListDocuments filters and paging.

mod common;

use bosun_proto::documents::v1 as pb;
use common::*;
use tonic::Code;

#[tokio::test]
async fn a_document_lives_through_versions_until_deleted() {
    for test_db in bosun_store::testing::both().await {
        let backend = test_db.backend;
        let h = Harness::start(test_db).await;

        let created = h
            .docs()
            .create_document(h.req(
                ALICE,
                pb::CreateDocumentRequest {
                    name: "hello-world".into(),
                    content: COMMAND_JSON.into(),
                    display_name: "Hello world".into(),
                    version_name: "first".into(),
                    target_type: "/AWS::EC2::Instance".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create")
            .into_inner()
            .document_description
            .expect("description");
        assert_eq!(created.name, "hello-world");
        assert_eq!(created.owner, ALICE);
        assert_eq!(created.document_version, "1");
        assert_eq!(created.default_version, "1");
        assert_eq!(created.latest_version, "1");
        assert_eq!(created.version_name, "first");
        assert_eq!(created.default_version_name, "first");
        assert_eq!(created.document_type, pb::DocumentType::Command as i32);
        assert_eq!(created.document_format, pb::DocumentFormat::Json as i32);
        assert_eq!(created.schema_version, "2.2");
        assert_eq!(created.description, "Say hello");
        assert_eq!(created.hash_type, "Sha256");
        assert_eq!(created.hash.len(), 64, "{backend}");
        assert_eq!(created.platform_types, ["Linux", "MacOS"]);
        assert_eq!(created.target_type, "/AWS::EC2::Instance");
        assert_eq!(created.parameters.len(), 1);
        assert_eq!(created.parameters[0].name, "greeting");
        assert_eq!(created.parameters[0].r#type, "String");
        assert_eq!(created.parameters[0].default_value, "\"hello\"");

        // The stored content comes back exactly as submitted.
        let got = h.get(ALICE, "hello-world", "", "").await.expect("get");
        assert_eq!(got.content, COMMAND_JSON);
        assert_eq!(got.document_version, "1");
        assert_eq!(got.display_name, "Hello world");

        // Update on $LATEST, then on the latest number; the default stays at 1.
        let v2 = h
            .update(ALICE, "hello-world", COMMAND_JSON_V2, "$LATEST", "second")
            .await
            .expect("update on $LATEST");
        assert_eq!(v2.document_version, "2");
        assert_eq!(v2.latest_version, "2");
        assert_eq!(v2.default_version, "1");
        assert_eq!(v2.default_version_name, "first");
        assert_eq!(v2.display_name, "Hello world", "display name carries over");
        assert_ne!(v2.hash, created.hash);
        let v3 = h
            .update(ALICE, "hello-world", COMMAND_YAML, "2", "")
            .await
            .expect("update on the latest number");
        assert_eq!(v3.document_version, "3");
        assert_eq!(v3.document_format, pb::DocumentFormat::Yaml as i32);

        // Selectors: default, latest, number, version name, and both agreeing.
        for (version, name, expected) in [
            ("", "", "1"),
            ("$DEFAULT", "", "1"),
            ("$LATEST", "", "3"),
            ("2", "", "2"),
            ("", "second", "2"),
            ("2", "second", "2"),
        ] {
            let got = h
                .get(ALICE, "hello-world", version, name)
                .await
                .unwrap_or_else(|status| panic!("{version:?}/{name:?}: {status:?}"));
            assert_eq!(got.document_version, expected, "{version:?}/{name:?}");
        }
        assert_error(
            h.get(ALICE, "hello-world", "3", "second").await,
            Code::NotFound,
            "InvalidDocumentVersion",
        );
        assert_error(
            h.get(ALICE, "hello-world", "9", "").await,
            Code::NotFound,
            "InvalidDocumentVersion",
        );
        assert_error(
            h.get(ALICE, "hello-world", "", "nope").await,
            Code::NotFound,
            "InvalidDocumentVersion",
        );
        let status = assert_error(
            h.get(ALICE, "hello-world", "latest", "").await,
            Code::InvalidArgument,
            "InvalidDocumentVersion",
        );
        assert_eq!(violated_fields(&status), ["document_version"]);

        // A stale base version, $DEFAULT, duplicate content and a used version name.
        assert_error(
            h.update(ALICE, "hello-world", COMMAND_JSON, "2", "").await,
            Code::FailedPrecondition,
            "InvalidDocumentVersion",
        );
        assert_error(
            h.update(ALICE, "hello-world", COMMAND_JSON, "$DEFAULT", "")
                .await,
            Code::InvalidArgument,
            "InvalidDocumentVersion",
        );
        assert_error(
            h.update(ALICE, "hello-world", COMMAND_YAML, "$LATEST", "")
                .await,
            Code::AlreadyExists,
            "DuplicateDocumentContent",
        );
        assert_error(
            h.update(ALICE, "hello-world", COMMAND_JSON, "$LATEST", "first")
                .await,
            Code::AlreadyExists,
            "DuplicateDocumentVersionName",
        );
        // Content identical to an older (not the latest) version is a new version.
        let v4 = h
            .update(ALICE, "hello-world", COMMAND_JSON, "$LATEST", "")
            .await
            .expect("older content again");
        assert_eq!(v4.document_version, "4");
        assert_eq!(v4.hash, created.hash);

        let versions = h
            .docs()
            .list_document_versions(h.req(
                ALICE,
                pb::ListDocumentVersionsRequest {
                    name: "hello-world".into(),
                    max_results: 3,
                    next_token: String::new(),
                },
            ))
            .await
            .expect("list versions")
            .into_inner();
        let numbers: Vec<_> = versions
            .document_versions
            .iter()
            .map(|v| v.document_version.as_str())
            .collect();
        assert_eq!(numbers, ["1", "2", "3"]);
        assert!(versions.document_versions[0].is_default_version);
        assert!(!versions.document_versions[1].is_default_version);
        assert_eq!(versions.document_versions[1].version_name, "second");
        let rest = h
            .docs()
            .list_document_versions(h.req(
                ALICE,
                pb::ListDocumentVersionsRequest {
                    name: "hello-world".into(),
                    max_results: 3,
                    next_token: versions.next_token.clone(),
                },
            ))
            .await
            .expect("second page")
            .into_inner();
        assert_eq!(rest.document_versions.len(), 1);
        assert_eq!(rest.document_versions[0].document_version, "4");
        assert!(rest.next_token.is_empty());

        // Default version: set, refused for a missing or malformed version.
        let default = h
            .docs()
            .update_document_default_version(h.req(
                ALICE,
                pb::UpdateDocumentDefaultVersionRequest {
                    name: "hello-world".into(),
                    document_version: "2".into(),
                },
            ))
            .await
            .expect("set default")
            .into_inner()
            .description
            .expect("description");
        assert_eq!(default.default_version, "2");
        assert_eq!(default.default_version_name, "second");
        assert_eq!(
            h.get(ALICE, "hello-world", "", "")
                .await
                .expect("get")
                .document_version,
            "2"
        );
        for (version, code) in [("7", Code::NotFound), ("$LATEST", Code::InvalidArgument)] {
            assert_error(
                h.docs()
                    .update_document_default_version(h.req(
                        ALICE,
                        pb::UpdateDocumentDefaultVersionRequest {
                            name: "hello-world".into(),
                            document_version: version.into(),
                        },
                    ))
                    .await,
                code,
                "InvalidDocumentVersion",
            );
        }

        // Describe a non-default version: it names the default's version name too.
        let described = h
            .docs()
            .describe_document(h.req(
                ALICE,
                pb::DescribeDocumentRequest {
                    name: "hello-world".into(),
                    document_version: "3".into(),
                    version_name: String::new(),
                },
            ))
            .await
            .expect("describe")
            .into_inner()
            .document
            .expect("document");
        assert_eq!(described.document_version, "3");
        assert_eq!(described.default_version, "2");
        assert_eq!(described.default_version_name, "second");
        assert_eq!(described.latest_version, "4");

        // Deleting the default version alone is refused; another version goes.
        assert_error(
            h.delete(ALICE, "hello-world", "", "second").await,
            Code::FailedPrecondition,
            "InvalidDocumentOperation",
        );
        h.delete(ALICE, "hello-world", "4", "")
            .await
            .expect("delete version 4");
        let after = h
            .get(ALICE, "hello-world", "$LATEST", "")
            .await
            .expect("latest");
        assert_eq!(after.document_version, "3", "latest moves back");
        // The deleted number is not reused.
        let v5 = h
            .update(ALICE, "hello-world", COMMAND_JSON, "$LATEST", "")
            .await
            .expect("update after delete");
        assert_eq!(v5.document_version, "5");

        // Deleting the whole document removes everything, shares and tags included.
        h.share(ALICE, "hello-world", &[BOB], &[])
            .await
            .expect("share");
        h.docs()
            .add_tags_to_resource(h.req(
                ALICE,
                pb::AddTagsToResourceRequest {
                    resource_type: "Document".into(),
                    resource_id: "hello-world".into(),
                    tags: vec![pb::Tag {
                        key: "env".into(),
                        value: "dev".into(),
                    }],
                },
            ))
            .await
            .expect("tag");
        h.delete(ALICE, "hello-world", "", "")
            .await
            .expect("delete all");
        assert_error(
            h.get(ALICE, "hello-world", "", "").await,
            Code::NotFound,
            "InvalidDocument",
        );
        assert_error(
            h.delete(ALICE, "hello-world", "", "").await,
            Code::NotFound,
            "InvalidDocument",
        );
        // A new document of the same name starts clean: not shared, untagged, version 1.
        let again = h
            .create(ALICE, "hello-world", COMMAND_YAML)
            .await
            .expect("recreate");
        assert_eq!(again.document_version, "1");
        assert!(again.tags.is_empty());
        assert_error(
            h.get(BOB, "hello-world", "", "").await,
            Code::NotFound,
            "InvalidDocument",
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn get_document_converts_between_json_and_yaml() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.create(ALICE, "from-yaml", COMMAND_YAML)
            .await
            .expect("create yaml");
        h.create(ALICE, "from-json", COMMAND_JSON)
            .await
            .expect("create json");
        let get = |name: &'static str, format: pb::DocumentFormat| {
            let request = h.req(
                ALICE,
                pb::GetDocumentRequest {
                    name: name.into(),
                    document_format: format as i32,
                    ..Default::default()
                },
            );
            let mut client = h.docs();
            async move {
                client
                    .get_document(request)
                    .await
                    .expect("get")
                    .into_inner()
            }
        };

        let stored = get("from-yaml", pb::DocumentFormat::Unspecified).await;
        assert_eq!(stored.content, COMMAND_YAML, "stored format, verbatim");
        assert_eq!(stored.document_format, pb::DocumentFormat::Yaml as i32);

        let as_json = get("from-yaml", pb::DocumentFormat::Json).await;
        assert_eq!(as_json.document_format, pb::DocumentFormat::Json as i32);
        let tree: serde_json::Value =
            serde_json::from_str(&as_json.content).expect("converted content is JSON");
        assert_eq!(tree["schemaVersion"], "2.2");
        assert_eq!(
            tree["mainSteps"][0]["inputs"]["runCommand"][0],
            "echo hello"
        );

        let as_yaml = get("from-json", pb::DocumentFormat::Yaml).await;
        assert_eq!(as_yaml.document_format, pb::DocumentFormat::Yaml as i32);
        assert!(
            !as_yaml.content.trim_start().starts_with('{'),
            "{}",
            as_yaml.content
        );
        assert!(
            as_yaml.content.contains("schemaVersion"),
            "{}",
            as_yaml.content
        );
        // The converted YAML is itself a valid document with the same meaning.
        h.create(ALICE, "round-trip", &as_yaml.content)
            .await
            .expect("converted YAML is accepted");
        let back = get("round-trip", pb::DocumentFormat::Json).await;
        let original: serde_json::Value = serde_json::from_str(COMMAND_JSON).expect("json");
        let returned: serde_json::Value = serde_json::from_str(&back.content).expect("json");
        assert_eq!(original, returned);

        // Built-ins convert too.
        let built_in = get("Bosun-RunShellScript", pb::DocumentFormat::Yaml).await;
        assert!(
            built_in.content.contains("runShellScript"),
            "{}",
            built_in.content
        );
        h.stop().await;
    }
}

fn create_request(name: &str, content: &str) -> pb::CreateDocumentRequest {
    pb::CreateDocumentRequest {
        name: name.into(),
        content: content.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn invalid_requests_name_the_error_and_the_field() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.create(ALICE, "taken", COMMAND_JSON)
            .await
            .expect("create");
        let oversize = format!(
            "{{\"schemaVersion\": \"2.2\", \"description\": \"{}\", \"mainSteps\": []}}",
            "x".repeat(64 * 1024)
        );
        let cases: Vec<(&str, pb::CreateDocumentRequest, Code, &str, &str)> = vec![
            (
                "short name",
                create_request("ab", COMMAND_JSON),
                Code::InvalidArgument,
                "ValidationException",
                "name",
            ),
            (
                "bad characters",
                create_request("a b c", COMMAND_JSON),
                Code::InvalidArgument,
                "ValidationException",
                "name",
            ),
            (
                "reserved aws",
                create_request("AWS-Mine", COMMAND_JSON),
                Code::InvalidArgument,
                "ValidationException",
                "name",
            ),
            (
                "reserved bosun",
                create_request("bosun-mine", COMMAND_JSON),
                Code::InvalidArgument,
                "ValidationException",
                "name",
            ),
            (
                "reserved amazon",
                create_request("AmAzOn.x", COMMAND_JSON),
                Code::InvalidArgument,
                "ValidationException",
                "name",
            ),
            (
                "oversize",
                create_request("big-doc", &oversize),
                Code::InvalidArgument,
                "MaxDocumentSizeExceeded",
                "content",
            ),
            (
                "empty content",
                create_request("empty-doc", ""),
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "content",
            ),
            (
                "bad json",
                create_request("bad-json", "{\"schemaVersion\": "),
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "content",
            ),
            (
                "unknown schema",
                create_request("bad-schema", r#"{"schemaVersion": "9.9"}"#),
                Code::InvalidArgument,
                "InvalidDocumentSchemaVersion",
                "content.schemaVersion",
            ),
            (
                "bad parameter type",
                create_request(
                    "bad-param",
                    r#"{"schemaVersion": "2.2", "parameters": {"p": {"type": "Strin"}}, "mainSteps": [{"action": "aws:runShellScript", "name": "a", "inputs": {"runCommand": ["x"]}}]}"#,
                ),
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "content.parameters.p.type",
            ),
            (
                "missing input",
                create_request(
                    "no-input",
                    r#"{"schemaVersion": "2.2", "mainSteps": [{"action": "aws:runShellScript", "name": "a", "inputs": {}}]}"#,
                ),
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "content.mainSteps[0].inputs.runCommand",
            ),
            (
                "unsupported action",
                create_request(
                    "unsupported",
                    r#"{"schemaVersion": "2.2", "mainSteps": [{"action": "aws:softwareInventory", "name": "a", "inputs": {}}]}"#,
                ),
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "content.mainSteps[0].action",
            ),
            (
                "type mismatch",
                pb::CreateDocumentRequest {
                    document_type: pb::DocumentType::Session as i32,
                    ..create_request("mismatch", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "document_type",
            ),
            (
                "policy type",
                pb::CreateDocumentRequest {
                    document_type: pb::DocumentType::Policy as i32,
                    ..create_request("policy-doc", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "document_type",
            ),
            (
                "yaml declared json",
                pb::CreateDocumentRequest {
                    document_format: pb::DocumentFormat::Json as i32,
                    ..create_request("wrong-format", COMMAND_YAML)
                },
                Code::InvalidArgument,
                "InvalidDocumentContent",
                "content",
            ),
            (
                "bad version name",
                pb::CreateDocumentRequest {
                    version_name: "v 1".into(),
                    ..create_request("bad-version-name", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "ValidationException",
                "version_name",
            ),
            (
                "bad target type",
                pb::CreateDocumentRequest {
                    target_type: "AWS::EC2::Instance".into(),
                    ..create_request("bad-target", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "ValidationException",
                "target_type",
            ),
            (
                "bad display name",
                pb::CreateDocumentRequest {
                    display_name: "semi;colon".into(),
                    ..create_request("bad-display", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "ValidationException",
                "display_name",
            ),
            (
                "empty tag key",
                pb::CreateDocumentRequest {
                    tags: vec![pb::Tag {
                        key: String::new(),
                        value: "v".into(),
                    }],
                    ..create_request("bad-tag", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "ValidationException",
                "tags[0].key",
            ),
            (
                "too many tags",
                pb::CreateDocumentRequest {
                    tags: (0..51)
                        .map(|i| pb::Tag {
                            key: format!("k{i}"),
                            value: String::new(),
                        })
                        .collect(),
                    ..create_request("many-tags", COMMAND_JSON)
                },
                Code::InvalidArgument,
                "TooManyTagsError",
                "tags",
            ),
        ];
        for (what, request, code, reason, field) in cases {
            let status = h
                .docs()
                .create_document(h.req(ALICE, request))
                .await
                .expect_err(what);
            assert_eq!(status.code(), code, "{what}: {status:?}");
            assert_eq!(
                bosun_core::error::status_reason(&status).as_deref(),
                Some(reason),
                "{what}: {status:?}"
            );
            assert!(
                violated_fields(&status).iter().any(|f| f == field),
                "{what}: expected field {field} in {status:?}"
            );
        }

        // Names that exist: a stored document, and a built-in's SSM alias that no
        // reserved prefix covers.
        assert_error(
            h.create(ALICE, "taken", COMMAND_YAML).await,
            Code::AlreadyExists,
            "DocumentAlreadyExists",
        );
        assert_error(
            h.create(ALICE, "SSM-SessionManagerRunShell", COMMAND_YAML)
                .await,
            Code::AlreadyExists,
            "DocumentAlreadyExists",
        );

        // Other RPCs' own checks.
        let status = assert_error(
            h.share(ALICE, "taken", &["bob"], &[]).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["principals_to_add[0]"]);
        let status = assert_error(
            h.docs()
                .modify_document_permission(h.req(
                    ALICE,
                    pb::ModifyDocumentPermissionRequest {
                        name: "taken".into(),
                        permission_type: "Read".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidPermissionType",
        );
        assert_eq!(violated_fields(&status), ["permission_type"]);
        let status = assert_error(
            h.docs()
                .add_tags_to_resource(h.req(
                    ALICE,
                    pb::AddTagsToResourceRequest {
                        resource_type: "Parameter".into(),
                        resource_id: "taken".into(),
                        tags: vec![pb::Tag {
                            key: "a".into(),
                            value: "b".into(),
                        }],
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidResourceType",
        );
        assert_eq!(violated_fields(&status), ["resource_type"]);
        let status = assert_error(
            h.list_names(ALICE, vec![filter("Colour", &["red"])], 0)
                .await,
            Code::InvalidArgument,
            "InvalidFilterKey",
        );
        assert_eq!(violated_fields(&status), ["filters[0].key"]);
        assert_error(
            h.list_names(ALICE, vec![filter("Owner", &["Someone"])], 0)
                .await,
            Code::InvalidArgument,
            "InvalidFilterValue",
        );
        assert_error(
            h.docs()
                .list_documents(h.req(
                    ALICE,
                    pb::ListDocumentsRequest {
                        next_token: "!!not-a-token".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidNextToken",
        );
        let status = assert_error(
            h.update(
                ALICE,
                "taken",
                r#"{"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {}}"#,
                "$LATEST",
                "",
            )
            .await,
            Code::InvalidArgument,
            "InvalidDocumentContent",
        );
        assert_eq!(violated_fields(&status), ["content"], "type cannot change");
        h.stop().await;
    }
}

#[tokio::test]
async fn tags_and_filters_select_documents_page_by_page() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.docs()
            .create_document(h.req(
                ALICE,
                pb::CreateDocumentRequest {
                    tags: vec![pb::Tag {
                        key: "env".into(),
                        value: "prod".into(),
                    }],
                    ..create_request("app-deploy", COMMAND_JSON)
                },
            ))
            .await
            .expect("create tagged");
        h.create(ALICE, "app-restart", COMMAND_YAML)
            .await
            .expect("create");
        h.create(ALICE, "db-backup", COMMAND_YAML)
            .await
            .expect("create");
        h.create(
            ALICE,
            "my-session",
            r#"{"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {}}"#,
        )
        .await
        .expect("create session");

        let tag = |key: &str, value: &str| pb::Tag {
            key: key.into(),
            value: value.into(),
        };
        h.docs()
            .add_tags_to_resource(h.req(
                ALICE,
                pb::AddTagsToResourceRequest {
                    resource_type: "Document".into(),
                    resource_id: "db-backup".into(),
                    tags: vec![tag("env", "dev"), tag("team", "data")],
                },
            ))
            .await
            .expect("add tags");
        // Overwrite one.
        h.docs()
            .add_tags_to_resource(h.req(
                ALICE,
                pb::AddTagsToResourceRequest {
                    resource_type: "Document".into(),
                    resource_id: "db-backup".into(),
                    tags: vec![tag("env", "prod")],
                },
            ))
            .await
            .expect("overwrite tag");
        let listed = h
            .docs()
            .list_tags_for_resource(h.req(
                ALICE,
                pb::ListTagsForResourceRequest {
                    resource_type: "Document".into(),
                    resource_id: "db-backup".into(),
                },
            ))
            .await
            .expect("list tags")
            .into_inner()
            .tag_list;
        assert_eq!(listed, vec![tag("env", "prod"), tag("team", "data")]);

        let own = vec![filter("Owner", &["Self"])];
        assert_eq!(
            h.list_names(ALICE, own.clone(), 0).await.expect("list"),
            ["app-deploy", "app-restart", "db-backup", "my-session"]
        );
        // Paging one at a time gives the same list.
        assert_eq!(
            h.list_names(ALICE, own.clone(), 1)
                .await
                .expect("list paged"),
            ["app-deploy", "app-restart", "db-backup", "my-session"]
        );
        assert_eq!(
            h.list_names(ALICE, vec![filter("tag:env", &["prod"])], 0)
                .await
                .expect("list"),
            ["app-deploy", "db-backup"]
        );
        assert_eq!(
            h.list_names(ALICE, vec![filter("tag:team", &[])], 0)
                .await
                .expect("list"),
            ["db-backup"]
        );
        assert_eq!(
            h.list_names(ALICE, vec![filter("Name", &["app-"])], 0)
                .await
                .expect("list"),
            ["app-deploy", "app-restart"]
        );
        assert_eq!(
            h.list_names(
                ALICE,
                vec![
                    filter("DocumentType", &["Session"]),
                    filter("Owner", &["Self"])
                ],
                0
            )
            .await
            .expect("list"),
            ["my-session"]
        );

        h.docs()
            .remove_tags_from_resource(h.req(
                ALICE,
                pb::RemoveTagsFromResourceRequest {
                    resource_type: "Document".into(),
                    resource_id: "db-backup".into(),
                    tag_keys: vec!["env".into(), "absent".into()],
                },
            ))
            .await
            .expect("remove tags");
        assert_eq!(
            h.list_names(ALICE, vec![filter("tag:env", &[])], 0)
                .await
                .expect("list"),
            ["app-deploy"]
        );

        // Identifiers carry the default version's facts and the tags.
        let page = h
            .docs()
            .list_documents(h.req(
                ALICE,
                pb::ListDocumentsRequest {
                    filters: vec![filter("Name", &["app-deploy"])],
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        let identifier = &page.document_identifiers[0];
        assert_eq!(identifier.owner, ALICE);
        assert_eq!(identifier.document_version, "1");
        assert_eq!(identifier.schema_version, "2.2");
        assert_eq!(identifier.document_format, pb::DocumentFormat::Json as i32);
        assert_eq!(identifier.tags, vec![tag("env", "prod")]);
        assert_eq!(identifier.platform_types, ["Linux", "MacOS"]);

        // At most 50 tags per document.
        assert_error(
            h.docs()
                .add_tags_to_resource(h.req(
                    ALICE,
                    pb::AddTagsToResourceRequest {
                        resource_type: "Document".into(),
                        resource_id: "app-deploy".into(),
                        tags: (0..50).map(|i| tag(&format!("k{i}"), "v")).collect(),
                    },
                ))
                .await,
            Code::ResourceExhausted,
            "TooManyTagsError",
        );
        assert_error(
            h.docs()
                .list_tags_for_resource(h.req(
                    ALICE,
                    pb::ListTagsForResourceRequest {
                        resource_type: "Document".into(),
                        resource_id: "no-such-doc".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "InvalidResourceId",
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn concurrent_updates_never_share_a_version_number() {
    for test_db in bosun_store::testing::both().await {
        let h = std::sync::Arc::new(Harness::start(test_db).await);
        h.create(ALICE, "busy-doc", COMMAND_JSON)
            .await
            .expect("create");
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let content = COMMAND_JSON.replace("Say hello", &format!("Writer {writer}"));
                h.update(ALICE, "busy-doc", &content, "$LATEST", "").await
            }));
        }
        let mut numbers = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(description) => numbers.push(description.document_version),
                // Two writers read the same latest version: the loser is told, never merged.
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    assert_eq!(
                        bosun_core::error::status_reason(&status).as_deref(),
                        Some("InvalidDocumentVersion")
                    );
                }
            }
        }
        assert!(!numbers.is_empty());
        let count = numbers.len();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), count, "a version number was issued twice");
        let versions = h
            .docs()
            .list_document_versions(h.req(
                ALICE,
                pb::ListDocumentVersionsRequest {
                    name: "busy-doc".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list versions")
            .into_inner()
            .document_versions;
        assert_eq!(versions.len(), count + 1);
        match std::sync::Arc::try_unwrap(h) {
            Ok(h) => h.stop().await,
            Err(_) => panic!("every task has finished"),
        }
    }
}

#[tokio::test]
async fn version_and_document_limits_are_enforced() {
    use bosun_store::sea_orm::ConnectionTrait;
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.create(ALICE, "many-versions", COMMAND_JSON)
            .await
            .expect("create");
        // Filling 999 versions through the API would take minutes; copy version 1 instead.
        let db = &h.test_db.db;
        db.execute_unprepared(&format!(
            "INSERT INTO document_versions (name, version, version_name, content, format, \
             schema_version, sha256, display_name, description, parameters, platform_types, \
             target_type, created_at) \
             WITH RECURSIVE n(v) AS (SELECT 2 UNION ALL SELECT v + 1 FROM n WHERE v < {limit}) \
             SELECT name, v, NULL, content, format, schema_version, sha256, display_name, \
             description, parameters, platform_types, target_type, created_at \
             FROM document_versions, n WHERE name = 'many-versions' AND version = 1",
            limit = bosun_documents::MAX_VERSIONS_PER_DOCUMENT
        ))
        .await
        .expect("copy versions");
        db.execute_unprepared(&format!(
            "UPDATE documents SET latest_version = {limit}, last_issued_version = {limit} \
             WHERE name = 'many-versions'",
            limit = bosun_documents::MAX_VERSIONS_PER_DOCUMENT
        ))
        .await
        .expect("move latest");
        assert_error(
            h.update(ALICE, "many-versions", COMMAND_YAML, "$LATEST", "")
                .await,
            Code::ResourceExhausted,
            "DocumentVersionLimitExceeded",
        );
        // Deleting a version makes room again.
        h.delete(ALICE, "many-versions", "500", "")
            .await
            .expect("delete a version");
        let next = h
            .update(ALICE, "many-versions", COMMAND_YAML, "$LATEST", "")
            .await
            .expect("room for one more");
        assert_eq!(
            next.document_version,
            (bosun_documents::MAX_VERSIONS_PER_DOCUMENT + 1).to_string()
        );

        db.execute_unprepared(&format!(
            "INSERT INTO documents (name, owner, document_type, default_version, latest_version, \
             last_issued_version, target_type, created_at) \
             WITH RECURSIVE n(v) AS (SELECT 2 UNION ALL SELECT v + 1 FROM n WHERE v < {limit}) \
             SELECT 'filler-' || v, owner, document_type, 1, 1, 1, target_type, created_at \
             FROM documents, n WHERE name = 'many-versions'",
            limit = bosun_documents::MAX_DOCUMENTS
        ))
        .await
        .expect("fill documents");
        assert_error(
            h.create(ALICE, "one-too-many", COMMAND_JSON).await,
            Code::ResourceExhausted,
            "DocumentLimitExceeded",
        );
        h.stop().await;
    }
}
