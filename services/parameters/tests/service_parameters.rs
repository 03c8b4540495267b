//! ParameterService over gRPC on SQLite and PostgreSQL: the life of a parameter (create,
//! overwrite, selectors, history, labels, version retention, deletes), value rules, tiers,
//! policies, tags, DescribeParameters and concurrent overwrites.

mod service_common;

use bosun_proto::parameters::v1 as pb;
use service_common::*;
use tonic::Code;

fn string_put(name: &str, value: &str) -> pb::PutParameterRequest {
    pb::PutParameterRequest {
        name: name.into(),
        value: value.into(),
        r#type: pb::ParameterType::String as i32,
        ..Default::default()
    }
}

async fn history(h: &Harness, name: &str, max_results: i32) -> Vec<pb::ParameterHistory> {
    let mut all = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = h
            .client()
            .get_parameter_history(h.req(
                ALICE,
                pb::GetParameterHistoryRequest {
                    name: name.into(),
                    with_decryption: false,
                    max_results,
                    next_token: next_token.clone(),
                },
            ))
            .await
            .expect("history")
            .into_inner();
        all.extend(page.parameters);
        if page.next_token.is_empty() {
            return all;
        }
        next_token = page.next_token;
    }
}

async fn label(
    h: &Harness,
    name: &str,
    version: i64,
    labels: &[&str],
) -> Result<pb::LabelParameterVersionResponse, tonic::Status> {
    h.client()
        .label_parameter_version(h.req(
            ALICE,
            pb::LabelParameterVersionRequest {
                name: name.into(),
                parameter_version: version,
                labels: labels.iter().map(|l| l.to_string()).collect(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn unlabel(
    h: &Harness,
    name: &str,
    version: i64,
    labels: &[&str],
) -> Result<pb::UnlabelParameterVersionResponse, tonic::Status> {
    h.client()
        .unlabel_parameter_version(h.req(
            ALICE,
            pb::UnlabelParameterVersionRequest {
                name: name.into(),
                parameter_version: version,
                labels: labels.iter().map(|l| l.to_string()).collect(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_parameter_is_created_overwritten_and_read_by_selector() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;

        let created = h
            .put(ALICE, string_put("/app/db/url", "postgres://one"))
            .await
            .expect("create");
        assert_eq!(created.version, 1);
        assert_eq!(created.tier, pb::ParameterTier::Standard as i32);

        let got = h.get(ALICE, "/app/db/url", false).await.expect("get");
        assert_eq!(got.value, "postgres://one");
        assert_eq!(got.version, 1);
        assert_eq!(got.r#type, pb::ParameterType::String as i32);
        assert_eq!(got.data_type, "text");
        assert_eq!(got.selector, "");

        // Without overwrite an existing name is refused.
        let status = assert_error(
            h.put(ALICE, string_put("/app/db/url", "postgres://two"))
                .await,
            Code::AlreadyExists,
            "ParameterAlreadyExists",
        );
        assert!(!status.message().contains("postgres://two"), "{status:?}");

        // Overwrite without a type keeps the stored one and makes version 2.
        let v2 = h
            .put(
                ALICE,
                pb::PutParameterRequest {
                    name: "/app/db/url".into(),
                    value: "postgres://two".into(),
                    overwrite: true,
                    ..Default::default()
                },
            )
            .await
            .expect("overwrite");
        assert_eq!(v2.version, 2);
        assert_eq!(
            h.get(ALICE, "/app/db/url", false).await.expect("get").value,
            "postgres://two"
        );

        // Selectors: a version, and a label, each echoed.
        let v1 = h.get(ALICE, "/app/db/url:1", false).await.expect("get :1");
        assert_eq!(
            (v1.value.as_str(), v1.version, v1.selector.as_str()),
            ("postgres://one", 1, ":1")
        );
        label(&h, "/app/db/url", 1, &["stable"])
            .await
            .expect("label");
        let stable = h
            .get(ALICE, "/app/db/url:stable", false)
            .await
            .expect("get :stable");
        assert_eq!((stable.version, stable.selector.as_str()), (1, ":stable"));
        assert_error(
            h.get(ALICE, "/app/db/url:9", false).await,
            Code::NotFound,
            "ParameterVersionNotFound",
        );
        assert_error(
            h.get(ALICE, "/app/db/url:missing", false).await,
            Code::NotFound,
            "ParameterVersionNotFound",
        );
        assert_error(
            h.get(ALICE, "/app/none", false).await,
            Code::NotFound,
            "ParameterNotFound",
        );

        // The type cannot change on overwrite; tags cannot come with overwrite.
        let mut change_type = string_put("/app/db/url", "a,b");
        change_type.r#type = pb::ParameterType::StringList as i32;
        change_type.overwrite = true;
        let status = assert_error(
            h.put(ALICE, change_type).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["type"]);
        let mut with_tags = string_put("/app/db/url", "x");
        with_tags.overwrite = true;
        with_tags.tags = vec![pb::Tag {
            key: "env".into(),
            value: "dev".into(),
        }];
        let status = assert_error(
            h.put(ALICE, with_tags).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["tags"]);

        // Creating needs a type.
        let mut untyped = string_put("/app/new", "x");
        untyped.r#type = 0;
        let status = assert_error(
            h.put(ALICE, untyped).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["type"]);

        // History: oldest first, labels per version, paged.
        let versions = history(&h, "/app/db/url", 1).await;
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(versions[0].labels, ["stable"]);
        assert!(versions[1].labels.is_empty());
        assert_eq!(versions[1].last_modified_user, ALICE);
        assert_eq!(versions[0].value, "postgres://one");
        assert_error(
            h.client()
                .get_parameter_history(h.req(
                    ALICE,
                    pb::GetParameterHistoryRequest {
                        name: "/app/none".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::NotFound,
            "ParameterNotFound",
        );

        let status = assert_error(
            h.client()
                .get_parameter_history(h.req(
                    ALICE,
                    pb::GetParameterHistoryRequest {
                        name: "/app/db/url".into(),
                        max_results: 51,
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["max_results"]);

        // Puts are audited.
        let events = h.audit_events("parameters:PutParameter").await;
        assert_eq!(
            events
                .iter()
                .filter(|e| e.result == bosun_proto::audit::v1::AuditResult::Success as i32)
                .count(),
            2
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn values_names_and_patterns_follow_ssm_rules() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;

        // StringList comes back with no spaces between commas.
        let mut list = string_put("/app/hosts", "a, b ,c");
        list.r#type = pb::ParameterType::StringList as i32;
        h.put(ALICE, list).await.expect("string list");
        assert_eq!(
            h.get(ALICE, "/app/hosts", false).await.expect("get").value,
            "a,b,c"
        );

        // Names: reserved prefixes, 16 levels, spaces.
        let status = assert_error(
            h.put(ALICE, string_put("/aws/thing", "x")).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["name"]);
        let deep = format!(
            "/{}",
            (1..=16)
                .map(|i| format!("l{i}"))
                .collect::<Vec<_>>()
                .join("/")
        );
        assert_error(
            h.put(ALICE, string_put(&deep, "x")).await,
            Code::InvalidArgument,
            "HierarchyLevelLimitExceededException",
        );
        assert_error(
            h.put(ALICE, string_put("/a b", "x")).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        let status = assert_error(
            h.put(ALICE, string_put("/app/empty", "")).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["value"]);

        // The allowed pattern is checked on every write, with the stored pattern too.
        let mut patterned = string_put("/app/lower", "abc");
        patterned.allowed_pattern = "^[a-z]+$".into();
        h.put(ALICE, patterned).await.expect("matching value");
        let mut upper = string_put("/app/lower", "SECRETISH");
        upper.overwrite = true;
        let status = assert_error(
            h.put(ALICE, upper).await,
            Code::InvalidArgument,
            "ParameterPatternMismatchException",
        );
        assert!(!status.message().contains("SECRETISH"), "{status:?}");
        let mut bad_pattern = string_put("/app/bad", "x");
        bad_pattern.allowed_pattern = "([".into();
        let status = assert_error(
            h.put(ALICE, bad_pattern).await,
            Code::InvalidArgument,
            "InvalidAllowedPatternException",
        );
        assert_eq!(violated_fields(&status), ["allowed_pattern"]);

        // Unknown enum values and data types.
        let mut bad_type = string_put("/app/t", "x");
        bad_type.r#type = 42;
        assert_error(
            h.put(ALICE, bad_type).await,
            Code::InvalidArgument,
            "UnsupportedParameterType",
        );
        let mut bad_data_type = string_put("/app/t", "x");
        bad_data_type.data_type = "aws:ec2:image".into();
        let status = assert_error(
            h.put(ALICE, bad_data_type).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["data_type"]);
        h.stop().await;
    }
}

#[tokio::test]
async fn labels_move_between_versions_and_break_no_rules() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.put_string("/app/l", "one", false).await;
        h.put_string("/app/l", "two", true).await;

        let labelled = label(&h, "/app/l", 1, &["prod", "1bad", "awsx"])
            .await
            .expect("label v1");
        assert_eq!(labelled.parameter_version, 1);
        assert_eq!(labelled.invalid_labels, ["1bad", "awsx"]);
        // Version 0 means the latest; the label moves from version 1.
        let moved = label(&h, "/app/l", 0, &["prod"])
            .await
            .expect("label latest");
        assert_eq!(moved.parameter_version, 2);
        assert_eq!(
            h.get(ALICE, "/app/l:prod", false)
                .await
                .expect("get")
                .version,
            2
        );
        let versions = history(&h, "/app/l", 0).await;
        assert!(versions[0].labels.is_empty());
        assert_eq!(versions[1].labels, ["prod"]);

        let removed = unlabel(&h, "/app/l", 2, &["prod", "never"])
            .await
            .expect("unlabel");
        assert_eq!(removed.removed_labels, ["prod"]);
        assert_eq!(removed.invalid_labels, ["never"]);
        assert_error(
            h.get(ALICE, "/app/l:prod", false).await,
            Code::NotFound,
            "ParameterVersionNotFound",
        );

        assert_error(
            label(&h, "/app/l", 9, &["x"]).await,
            Code::NotFound,
            "ParameterVersionNotFound",
        );
        assert_error(
            label(&h, "/app/none", 0, &["x"]).await,
            Code::NotFound,
            "ParameterNotFound",
        );
        let status = assert_error(
            unlabel(&h, "/app/l", 0, &["x"]).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["parameter_version"]);
        let ten: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        label(&h, "/app/l", 1, &ten).await.expect("ten labels");
        assert_error(
            label(&h, "/app/l", 1, &["eleventh"]).await,
            Code::ResourceExhausted,
            "ParameterVersionLabelLimitExceeded",
        );
        assert_eq!(
            h.audit_events("parameters:LabelParameterVersion")
                .await
                .len(),
            6
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn a_hundred_versions_are_kept_unless_the_oldest_is_labelled() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        for i in 1..=100 {
            assert_eq!(h.put_string("/app/many", &format!("v{i}"), i > 1).await, i);
        }
        label(&h, "/app/many", 1, &["first"])
            .await
            .expect("label the oldest");
        let mut next = string_put("/app/many", "v101");
        next.overwrite = true;
        assert_error(
            h.put(ALICE, next.clone()).await,
            Code::FailedPrecondition,
            "ParameterMaxVersionLimitExceeded",
        );
        // The failed write changed nothing.
        assert_eq!(
            h.get(ALICE, "/app/many", false).await.expect("get").version,
            100
        );

        unlabel(&h, "/app/many", 1, &["first"])
            .await
            .expect("unlabel");
        assert_eq!(h.put(ALICE, next).await.expect("101st").version, 101);
        let versions = history(&h, "/app/many", 50).await;
        assert_eq!(versions.len(), 100);
        assert_eq!(versions[0].version, 2);
        assert_eq!(versions[99].version, 101);
        assert_error(
            h.get(ALICE, "/app/many:1", false).await,
            Code::NotFound,
            "ParameterVersionNotFound",
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn get_parameters_and_deletes_report_unknown_names() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.put_string("/b", "bee", false).await;
        h.put_string("/a", "ay", false).await;
        h.put_string("plain", "flat", false).await;

        let got = h
            .client()
            .get_parameters(h.req(
                ALICE,
                pb::GetParametersRequest {
                    names: vec![
                        "/b".into(),
                        "/missing".into(),
                        "/a".into(),
                        "plain:1".into(),
                        "/a:7".into(),
                    ],
                    with_decryption: false,
                },
            ))
            .await
            .expect("get parameters")
            .into_inner();
        assert_eq!(
            got.parameters
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect::<Vec<_>>(),
            [("/a", "ay"), ("/b", "bee"), ("plain", "flat")]
        );
        assert_eq!(got.parameters[2].selector, ":1");
        assert_eq!(got.invalid_parameters, ["/missing", "/a:7"]);

        let eleven: Vec<String> = (0..11).map(|i| format!("/p{i}")).collect();
        let status = assert_error(
            h.client()
                .get_parameters(h.req(
                    ALICE,
                    pb::GetParametersRequest {
                        names: eleven,
                        with_decryption: false,
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["names"]);

        assert_error(
            h.client()
                .delete_parameter(h.req(
                    ALICE,
                    pb::DeleteParameterRequest {
                        name: "/missing".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "ParameterNotFound",
        );
        h.client()
            .delete_parameter(h.req(
                ALICE,
                pb::DeleteParameterRequest {
                    name: "plain".into(),
                },
            ))
            .await
            .expect("delete");
        assert_error(
            h.get(ALICE, "plain", false).await,
            Code::NotFound,
            "ParameterNotFound",
        );

        let deleted = h
            .client()
            .delete_parameters(h.req(
                ALICE,
                pb::DeleteParametersRequest {
                    names: vec!["/a".into(), "/nope".into(), "/b".into()],
                },
            ))
            .await
            .expect("delete parameters")
            .into_inner();
        assert_eq!(deleted.deleted_parameters, ["/a", "/b"]);
        let status = assert_error(
            h.client()
                .delete_parameters(h.req(ALICE, pb::DeleteParametersRequest { names: vec![] }))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["names"]);
        assert_eq!(deleted.invalid_parameters, ["/nope"]);
        assert_error(
            h.get(ALICE, "/a", false).await,
            Code::NotFound,
            "ParameterNotFound",
        );
        // A deleted name can be created again from version 1.
        assert_eq!(h.put_string("/a", "again", false).await, 1);
        let failures = h.audit_events("parameters:DeleteParameter").await;
        assert_eq!(failures.len(), 2);
        h.stop().await;
    }
}

#[tokio::test]
async fn tiers_are_chosen_and_never_downgraded() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let big = "x".repeat(5000);

        let status = assert_error(
            h.put(ALICE, string_put("/app/big", &big)).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["value"]);

        let mut intelligent = string_put("/app/big", &big);
        intelligent.tier = pb::ParameterTier::IntelligentTiering as i32;
        let put = h
            .put(ALICE, intelligent)
            .await
            .expect("intelligent tiering");
        assert_eq!(put.tier, pb::ParameterTier::Advanced as i32);
        let mut small = string_put("/app/small", "x");
        small.tier = pb::ParameterTier::IntelligentTiering as i32;
        assert_eq!(
            h.put(ALICE, small).await.expect("small").tier,
            pb::ParameterTier::Standard as i32
        );

        // No downgrade: asking for Standard fails, asking for nothing keeps Advanced.
        let mut downgrade = string_put("/app/big", "tiny");
        downgrade.overwrite = true;
        downgrade.tier = pb::ParameterTier::Standard as i32;
        assert_error(
            h.put(ALICE, downgrade).await,
            Code::FailedPrecondition,
            "ValidationException",
        );
        let mut keep = string_put("/app/big", "tiny");
        keep.overwrite = true;
        assert_eq!(
            h.put(ALICE, keep).await.expect("keep tier").tier,
            pb::ParameterTier::Advanced as i32
        );

        // Upgrading a Standard parameter is allowed.
        let mut upgrade = string_put("/app/small", "y");
        upgrade.overwrite = true;
        upgrade.tier = pb::ParameterTier::Advanced as i32;
        assert_eq!(
            h.put(ALICE, upgrade).await.expect("upgrade").tier,
            pb::ParameterTier::Advanced as i32
        );
        h.stop().await;
    }
}

const EXPIRATION: &str = r#"[{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2099-01-01T00:00:00Z"}},
        {"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"20","Unit":"Days"}}]"#;

#[tokio::test]
async fn policies_need_the_advanced_tier_and_report_their_status() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;

        let mut standard = string_put("/app/p", "x");
        standard.policies = EXPIRATION.into();
        standard.tier = pb::ParameterTier::Standard as i32;
        let status = assert_error(
            h.put(ALICE, standard).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["policies"]);

        // Intelligent-Tiering picks Advanced for policies.
        let mut advanced = string_put("/app/p", "x");
        advanced.policies = EXPIRATION.into();
        advanced.tier = pb::ParameterTier::IntelligentTiering as i32;
        assert_eq!(
            h.put(ALICE, advanced).await.expect("put").tier,
            pb::ParameterTier::Advanced as i32
        );

        let described = h
            .client()
            .describe_parameters(h.req(
                ALICE,
                pb::DescribeParametersRequest {
                    parameter_filters: vec![filter("Name", "Equals", &["/app/p"])],
                    ..Default::default()
                },
            ))
            .await
            .expect("describe")
            .into_inner()
            .parameters;
        assert_eq!(described.len(), 1);
        let policies = &described[0].policies;
        assert_eq!(
            policies
                .iter()
                .map(|p| (p.policy_type.as_str(), p.policy_status.as_str()))
                .collect::<Vec<_>>(),
            [
                ("Expiration", "Pending"),
                ("NoChangeNotification", "Pending")
            ]
        );
        assert!(
            policies[0].policy_text.contains("2099-01-01T00:00:00.000Z"),
            "{policies:?}"
        );
        assert_eq!(described[0].tier, pb::ParameterTier::Advanced as i32);

        let mut bad = string_put("/app/q", "x");
        bad.tier = pb::ParameterTier::Advanced as i32;
        bad.policies = r#"[{"Type":"Explode","Version":"1.0","Attributes":{}}]"#.into();
        assert_error(
            h.put(ALICE, bad).await,
            Code::InvalidArgument,
            "InvalidPolicyTypeException",
        );

        // `[{}]` removes every policy; an overwrite without policies keeps them.
        let mut keep = string_put("/app/p", "y");
        keep.overwrite = true;
        h.put(ALICE, keep).await.expect("overwrite");
        let kept = history(&h, "/app/p", 0).await;
        assert_eq!(kept[1].policies.len(), 2);
        let mut clear = string_put("/app/p", "z");
        clear.overwrite = true;
        clear.policies = "[{}]".into();
        h.put(ALICE, clear).await.expect("clear policies");
        let kept = history(&h, "/app/p", 0).await;
        assert!(kept[2].policies.is_empty());
        h.stop().await;
    }
}

#[tokio::test]
async fn tags_are_added_listed_and_removed() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let mut tagged = string_put("/app/t", "x");
        tagged.tags = vec![pb::Tag {
            key: "env".into(),
            value: "dev".into(),
        }];
        h.put(ALICE, tagged).await.expect("create with tags");

        let list = |h: &Harness| {
            let request = h.req(
                ALICE,
                pb::ListTagsForResourceRequest {
                    resource_type: "Parameter".into(),
                    resource_id: "/app/t".into(),
                },
            );
            let mut client = h.client();
            async move {
                client
                    .list_tags_for_resource(request)
                    .await
                    .expect("list tags")
                    .into_inner()
                    .tag_list
                    .into_iter()
                    .map(|t| (t.key, t.value))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(list(&h).await, [("env".to_owned(), "dev".to_owned())]);
        h.client()
            .add_tags_to_resource(h.req(
                ALICE,
                pb::AddTagsToResourceRequest {
                    resource_type: "Parameter".into(),
                    resource_id: "/app/t".into(),
                    tags: vec![
                        pb::Tag {
                            key: "env".into(),
                            value: "prod".into(),
                        },
                        pb::Tag {
                            key: "team".into(),
                            value: "ops".into(),
                        },
                    ],
                },
            ))
            .await
            .expect("add tags");
        assert_eq!(
            list(&h).await,
            [
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "ops".to_owned())
            ]
        );
        h.client()
            .remove_tags_from_resource(h.req(
                ALICE,
                pb::RemoveTagsFromResourceRequest {
                    resource_type: "Parameter".into(),
                    resource_id: "/app/t".into(),
                    tag_keys: vec!["env".into(), "absent".into()],
                },
            ))
            .await
            .expect("remove tags");
        assert_eq!(list(&h).await, [("team".to_owned(), "ops".to_owned())]);

        let status = assert_error(
            h.client()
                .list_tags_for_resource(h.req(
                    ALICE,
                    pb::ListTagsForResourceRequest {
                        resource_type: "Document".into(),
                        resource_id: "/app/t".into(),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidResourceType",
        );
        assert_eq!(violated_fields(&status), ["resource_type"]);
        assert_error(
            h.client()
                .add_tags_to_resource(h.req(
                    ALICE,
                    pb::AddTagsToResourceRequest {
                        resource_type: "Parameter".into(),
                        resource_id: "/app/none".into(),
                        tags: vec![pb::Tag {
                            key: "k".into(),
                            value: "v".into(),
                        }],
                    },
                ))
                .await,
            Code::NotFound,
            "InvalidResourceId",
        );
        assert_error(
            h.client()
                .remove_tags_from_resource(h.req(
                    ALICE,
                    pb::RemoveTagsFromResourceRequest {
                        resource_type: "Parameter".into(),
                        resource_id: "/app/none".into(),
                        tag_keys: vec!["k".into()],
                    },
                ))
                .await,
            Code::NotFound,
            "InvalidResourceId",
        );
        let status = assert_error(
            h.client()
                .add_tags_to_resource(h.req(
                    ALICE,
                    pb::AddTagsToResourceRequest {
                        resource_type: "Parameter".into(),
                        resource_id: "/app/t".into(),
                        tags: vec![pb::Tag {
                            key: "aws:owner".into(),
                            value: "x".into(),
                        }],
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["tags[0].key"]);
        h.stop().await;
    }
}

#[tokio::test]
async fn describe_filters_and_pages_metadata() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        h.put_string("/app/dev/a", "1", false).await;
        h.put_string("/app/dev/deep/b", "2", false).await;
        h.put_string("/app/prod/c", "3", false).await;
        let mut list = string_put("/app/prod/list", "x,y");
        list.r#type = pb::ParameterType::StringList as i32;
        list.tags = vec![pb::Tag {
            key: "team".into(),
            value: "ops".into(),
        }];
        list.tier = pb::ParameterTier::Advanced as i32;
        h.put(ALICE, list).await.expect("list");
        label(&h, "/app/dev/a", 1, &["live"]).await.expect("label");

        let all = h
            .describe_names(ALICE, vec![], 2)
            .await
            .expect("describe all");
        assert_eq!(
            all,
            [
                "/app/dev/a",
                "/app/dev/deep/b",
                "/app/prod/c",
                "/app/prod/list"
            ]
        );
        let cases: Vec<(pb::ParameterStringFilter, Vec<&str>)> = vec![
            (
                filter("Name", "BeginsWith", &["/app/prod"]),
                vec!["/app/prod/c", "/app/prod/list"],
            ),
            (
                filter("Name", "Contains", &["deep"]),
                vec!["/app/dev/deep/b"],
            ),
            (
                filter("Type", "Equals", &["StringList"]),
                vec!["/app/prod/list"],
            ),
            (
                filter("Path", "OneLevel", &["/app/dev"]),
                vec!["/app/dev/a"],
            ),
            (
                filter("Path", "Recursive", &["/app/dev"]),
                vec!["/app/dev/a", "/app/dev/deep/b"],
            ),
            (
                filter("Tier", "Equals", &["Advanced"]),
                vec!["/app/prod/list"],
            ),
            (filter("tag:team", "", &[]), vec!["/app/prod/list"]),
            (filter("Label", "Equals", &["live"]), vec!["/app/dev/a"]),
            (
                filter("DataType", "Equals", &["text"]),
                vec![
                    "/app/dev/a",
                    "/app/dev/deep/b",
                    "/app/prod/c",
                    "/app/prod/list",
                ],
            ),
        ];
        for (filter, expected) in cases {
            let names = h
                .describe_names(ALICE, vec![filter.clone()], 0)
                .await
                .expect("describe");
            assert_eq!(names, expected, "{filter:?}");
        }
        let legacy = h
            .client()
            .describe_parameters(h.req(
                ALICE,
                pb::DescribeParametersRequest {
                    filters: vec![pb::ParametersFilter {
                        key: "Type".into(),
                        values: vec!["StringList".into()],
                    }],
                    ..Default::default()
                },
            ))
            .await
            .expect("legacy filter")
            .into_inner();
        assert_eq!(legacy.parameters.len(), 1);
        assert_eq!(legacy.parameters[0].last_modified_user, ALICE);

        let status = assert_error(
            h.describe_names(ALICE, vec![filter("Colour", "Equals", &["red"])], 0)
                .await,
            Code::InvalidArgument,
            "InvalidFilterKey",
        );
        assert_eq!(violated_fields(&status), ["parameter_filters[0].key"]);
        assert_error(
            h.describe_names(ALICE, vec![filter("Name", "Around", &["x"])], 0)
                .await,
            Code::InvalidArgument,
            "InvalidFilterOption",
        );
        let status = assert_error(
            h.describe_names(ALICE, vec![], 51).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["max_results"]);
        h.stop().await;
    }
}

#[tokio::test]
async fn concurrent_overwrites_each_get_their_own_version() {
    for test_db in bosun_store::testing::both().await {
        let h = std::sync::Arc::new(Harness::start(test_db).await);
        h.put_string("/app/race", "0", false).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let h = std::sync::Arc::clone(&h);
            tasks.push(tokio::spawn(async move {
                let mut put = string_put("/app/race", &format!("w{i}"));
                put.overwrite = true;
                h.put(ALICE, put).await
            }));
        }
        let mut versions = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(put) => versions.push(put.version),
                Err(status) => {
                    assert_eq!(status.code(), Code::Aborted, "{status:?}");
                    assert_eq!(
                        bosun_core::error::status_reason(&status).as_deref(),
                        Some("TooManyUpdates")
                    );
                }
            }
        }
        let mut distinct = versions.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), versions.len(), "{versions:?}");
        let kept = history(&h, "/app/race", 0).await;
        assert_eq!(kept.len(), versions.len() + 1);
        if let Ok(h) = std::sync::Arc::try_unwrap(h) {
            h.stop().await;
        }
    }
}
