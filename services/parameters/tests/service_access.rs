//! ParameterService authorization and listings on SQLite and PostgreSQL: direct reads of a
//! forbidden name are denied, by-path and describe listings leave forbidden parameters out,
//! one-level versus recursive paths, paging and by-path filters.

mod service_common;

use bosun_proto::parameters::v1 as pb;
use service_common::*;
use tonic::Code;

const NAMES: [&str; 7] = [
    "/app/dev/a",
    "/app/dev/b",
    "/app/dev/nested/c",
    "/app/dev_x/d",
    "/app/prod/x",
    "/app/prod/y",
    "/other",
];

async fn seed(h: &Harness) {
    for name in NAMES {
        h.put_string(name, &format!("value of {name}"), false).await;
    }
}

#[tokio::test]
async fn by_path_reads_one_level_or_recursively_in_pages() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        seed(&h).await;
        for max_results in [0, 1, 2] {
            assert_eq!(
                h.by_path_names(ALICE, "/app/dev", false, vec![], max_results)
                    .await
                    .expect("one level"),
                ["/app/dev/a", "/app/dev/b"],
                "max_results {max_results}"
            );
            assert_eq!(
                h.by_path_names(ALICE, "/app/dev/", true, vec![], max_results)
                    .await
                    .expect("recursive"),
                ["/app/dev/a", "/app/dev/b", "/app/dev/nested/c"],
                "max_results {max_results}"
            );
        }
        assert_eq!(
            h.by_path_names(ALICE, "/", false, vec![], 0)
                .await
                .expect("root"),
            ["/other"]
        );
        assert_eq!(
            h.by_path_names(ALICE, "/", true, vec![], 3)
                .await
                .expect("all")
                .len(),
            NAMES.len()
        );

        // Filters: Type and Label (the labelled version comes back).
        let mut list = pb::PutParameterRequest {
            name: "/app/dev/list".into(),
            value: "p,q".into(),
            r#type: pb::ParameterType::StringList as i32,
            ..Default::default()
        };
        h.put(ALICE, list.clone()).await.expect("list");
        assert_eq!(
            h.by_path_names(
                ALICE,
                "/app/dev",
                false,
                vec![filter("Type", "Equals", &["StringList"])],
                0
            )
            .await
            .expect("type filter"),
            ["/app/dev/list"]
        );
        list.overwrite = true;
        list.value = "r".into();
        h.put(ALICE, list).await.expect("list v2");
        h.client()
            .label_parameter_version(h.req(
                ALICE,
                pb::LabelParameterVersionRequest {
                    name: "/app/dev/list".into(),
                    parameter_version: 1,
                    labels: vec!["old".into()],
                },
            ))
            .await
            .expect("label");
        let labelled = h
            .client()
            .get_parameters_by_path(h.req(
                ALICE,
                pb::GetParametersByPathRequest {
                    path: "/app".into(),
                    recursive: true,
                    parameter_filters: vec![filter("Label", "Equals", &["old"])],
                    ..Default::default()
                },
            ))
            .await
            .expect("label filter")
            .into_inner()
            .parameters;
        assert_eq!(labelled.len(), 1);
        assert_eq!(
            (labelled[0].value.as_str(), labelled[0].version),
            ("p,q", 1)
        );

        let status = assert_error(
            h.by_path_names(
                ALICE,
                "/app",
                true,
                vec![filter("Name", "Equals", &["x"])],
                0,
            )
            .await,
            Code::InvalidArgument,
            "InvalidFilterKey",
        );
        assert_eq!(violated_fields(&status), ["parameter_filters[0].key"]);
        let status = assert_error(
            h.by_path_names(ALICE, "/app", true, vec![], 11).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["max_results"]);
        assert_error(
            h.client()
                .get_parameters_by_path(h.req(
                    ALICE,
                    pb::GetParametersByPathRequest {
                        path: "/app".into(),
                        next_token: "***".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidNextToken",
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn listings_leave_out_what_the_caller_may_not_read() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        seed(&h).await;

        assert_eq!(
            h.by_path_names(DEV, "/app", true, vec![], 1)
                .await
                .expect("dev by path"),
            ["/app/dev/a", "/app/dev/b", "/app/dev/nested/c"]
        );
        assert_eq!(
            h.describe_names(DEV, vec![], 0)
                .await
                .expect("dev describe"),
            ["/app/dev/a", "/app/dev/b", "/app/dev/nested/c"]
        );
        assert!(
            h.by_path_names(NOBODY, "/", true, vec![], 0)
                .await
                .expect("nobody")
                .is_empty()
        );

        // Direct reads of a forbidden name are denied, allowed ones work.
        assert_eq!(
            h.get(DEV, "/app/dev/a", false)
                .await
                .expect("allowed")
                .value,
            "value of /app/dev/a"
        );
        let denied = h.get(DEV, "/app/prod/x", false).await.expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied);
        let denied = h
            .client()
            .get_parameters(h.req(
                DEV,
                pb::GetParametersRequest {
                    names: vec!["/app/dev/a".into(), "/app/prod/x".into()],
                    with_decryption: false,
                },
            ))
            .await
            .expect_err("one forbidden name denies the call");
        assert_eq!(denied.code(), Code::PermissionDenied);

        // Denied writes are audited and change nothing.
        let denied = h
            .put(
                DEV,
                pb::PutParameterRequest {
                    name: "/app/prod/x".into(),
                    value: "hijack".into(),
                    overwrite: true,
                    ..Default::default()
                },
            )
            .await
            .expect_err("dev may not write prod");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(
            h.get(ALICE, "/app/prod/x", false)
                .await
                .expect("unchanged")
                .value,
            "value of /app/prod/x"
        );
        let events = h.audit_events("parameters:PutParameter").await;
        assert!(events.iter().any(|e| e.principal == DEV
            && e.result == bosun_proto::audit::v1::AuditResult::Denied as i32));
        let denied = h
            .client()
            .delete_parameters(h.req(
                DEV,
                pb::DeleteParametersRequest {
                    names: vec!["/app/dev/a".into(), "/app/prod/y".into()],
                },
            ))
            .await
            .expect_err("dev may not delete prod");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(
            h.get(ALICE, "/app/dev/a", false).await.is_ok(),
            "nothing was deleted"
        );
        h.stop().await;
    }
}
