//! NodeService within the crate, on SQLite and PostgreSQL: activations, registration and
//! its failures (also under concurrency), node facts and ping status, filters and paging,
//! deregistration, tags, authorization and audit.

mod common;

use std::sync::Arc;

use bosun_core::time::to_timestamp;
use bosun_inventory::validate::is_node_id;
use bosun_nodelink::NodeDirectory;
use bosun_proto::agent::v1::HostFacts;
use bosun_proto::agent::v1::close::Reason;
use bosun_proto::audit::v1::AuditResult;
use bosun_proto::inventory::v1 as pb;
use chrono::TimeDelta;
use common::*;
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

fn describe_activations(ids: &[&str]) -> pb::DescribeActivationsRequest {
    pb::DescribeActivationsRequest {
        filters: if ids.is_empty() {
            vec![]
        } else {
            vec![pb::DescribeActivationsFilter {
                filter_key: "ActivationIds".into(),
                filter_values: ids.iter().map(|id| id.to_string()).collect(),
            }]
        },
        max_results: 0,
        next_token: String::new(),
    }
}

#[tokio::test]
async fn activations_are_created_listed_newest_first_and_deleted() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (first, code) = h.activation(3, &[("env", "prod")], "web").await;
        assert!(code.starts_with("bac_") && code.len() == 47, "{code}");
        assert!(uuid::Uuid::try_parse(&first).is_ok());
        let (second, _) = h.activation(0, &[], "db").await;
        let (third, _) = h.activation(1, &[], "db").await;

        // Newest first, two at a time.
        let mut listed = Vec::new();
        let mut next_token = String::new();
        loop {
            let page = h
                .nodes()
                .describe_activations(h.req(
                    ADMIN,
                    pb::DescribeActivationsRequest {
                        filters: vec![],
                        max_results: 2,
                        next_token: next_token.clone(),
                    },
                ))
                .await
                .expect("describe activations")
                .into_inner();
            assert!(page.activation_list.len() <= 2);
            listed.extend(page.activation_list);
            if page.next_token.is_empty() {
                break;
            }
            next_token = page.next_token;
        }
        let ids: Vec<&str> = listed.iter().map(|a| a.activation_id.as_str()).collect();
        assert_eq!(ids, [third.as_str(), second.as_str(), first.as_str()]);
        let oldest = &listed[2];
        assert_eq!(oldest.registration_limit, 3);
        assert_eq!(oldest.registrations_count, 0);
        assert_eq!(oldest.default_instance_name, "web");
        assert!(!oldest.expired);
        assert_eq!(oldest.tags, tags_of(&[("env", "prod")]));
        let expires = oldest.expiration_date.expect("expiry");
        assert_eq!(
            expires.seconds,
            (h.now() + TimeDelta::hours(24)).timestamp(),
            "24 hours by default"
        );
        assert_eq!(listed[1].registration_limit, 1, "0 means 1");

        // Filters.
        let by_name = h
            .nodes()
            .describe_activations(h.req(
                ADMIN,
                pb::DescribeActivationsRequest {
                    filters: vec![pb::DescribeActivationsFilter {
                        filter_key: "DefaultInstanceName".into(),
                        filter_values: vec!["db".into()],
                    }],
                    ..Default::default()
                },
            ))
            .await
            .expect("filter by name")
            .into_inner();
        assert_eq!(by_name.activation_list.len(), 2);
        let by_id = h
            .nodes()
            .describe_activations(h.req(ADMIN, describe_activations(&[&first])))
            .await
            .expect("filter by id")
            .into_inner();
        assert_eq!(by_id.activation_list.len(), 1);
        let status = assert_error(
            h.nodes()
                .describe_activations(h.req(
                    ADMIN,
                    pb::DescribeActivationsRequest {
                        filters: vec![pb::DescribeActivationsFilter {
                            filter_key: "Color".into(),
                            filter_values: vec!["x".into()],
                        }],
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidFilter",
        );
        assert_eq!(violated_fields(&status), ["filters[0].filter_key"]);

        // Delete: gone from the list, no more registrations, a second delete is NotFound.
        h.nodes()
            .delete_activation(h.req(
                ADMIN,
                pb::DeleteActivationRequest {
                    activation_id: first.clone(),
                },
            ))
            .await
            .expect("delete");
        let after = h
            .nodes()
            .describe_activations(h.req(ADMIN, describe_activations(&[&first])))
            .await
            .expect("describe")
            .into_inner();
        assert!(after.activation_list.is_empty());
        assert_error(
            h.try_register(&first, &code, linux()).await,
            Code::NotFound,
            "InvalidActivation",
        );
        assert_error(
            h.nodes()
                .delete_activation(h.req(
                    ADMIN,
                    pb::DeleteActivationRequest {
                        activation_id: first.clone(),
                    },
                ))
                .await,
            Code::NotFound,
            "InvalidActivation",
        );

        // The code is stored only hashed and never audited.
        let rows = h
            .test_db
            .db
            .query_all_raw(Statement::from_string(
                h.test_db.db.get_database_backend(),
                "SELECT code_hash FROM activations",
            ))
            .await
            .expect("read activations");
        assert_eq!(rows.len(), 3);
        for row in rows {
            let hash: String = row.try_get("", "code_hash").expect("hash");
            assert_eq!(hash.len(), 64);
            assert!(!hash.contains(&code[4..]));
        }
        let created = h.audit_events("inventory:CreateActivation").await;
        assert_eq!(created.len(), 3);
        assert_eq!(created[0].principal, ADMIN);
        assert_eq!(created[2].resource, format!("activation:{first}"));
        for event in h.audit_events("inventory:*").await {
            assert!(!format!("{event:?}").contains(&code[4..]), "code audited");
        }
        assert_eq!(h.audit_events("inventory:DeleteActivation").await.len(), 2);
        h.stop().await;
    }
}

#[tokio::test]
async fn activation_requests_are_validated() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let now = h.now();
        let cases = [
            (
                pb::CreateActivationRequest {
                    registration_limit: 1001,
                    ..Default::default()
                },
                "registration_limit",
            ),
            (
                pb::CreateActivationRequest {
                    registration_limit: -1,
                    ..Default::default()
                },
                "registration_limit",
            ),
            (
                pb::CreateActivationRequest {
                    expiration_date: Some(to_timestamp(now - TimeDelta::seconds(1))),
                    ..Default::default()
                },
                "expiration_date",
            ),
            (
                pb::CreateActivationRequest {
                    expiration_date: Some(to_timestamp(now + TimeDelta::days(31))),
                    ..Default::default()
                },
                "expiration_date",
            ),
            (
                pb::CreateActivationRequest {
                    description: "d".repeat(257),
                    ..Default::default()
                },
                "description",
            ),
            (
                pb::CreateActivationRequest {
                    default_instance_name: "n".repeat(257),
                    ..Default::default()
                },
                "default_instance_name",
            ),
            (
                pb::CreateActivationRequest {
                    tags: tags_of(&[("ok", "1"), ("aws:x", "2")]),
                    ..Default::default()
                },
                "tags[1].key",
            ),
        ];
        for (request, field) in cases {
            let status = assert_error(
                h.nodes().create_activation(h.req(ADMIN, request)).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_eq!(violated_fields(&status), [field]);
        }
        let too_many: Vec<pb::Tag> = (0..51)
            .map(|i| pb::Tag {
                key: format!("k{i}"),
                value: String::new(),
            })
            .collect();
        assert_error(
            h.nodes()
                .create_activation(h.req(
                    ADMIN,
                    pb::CreateActivationRequest {
                        tags: too_many,
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "TooManyTagsError",
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn registration_refuses_wrong_codes_expired_and_used_up_activations() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (activation, code) = h.activation(2, &[], "").await;

        let wrong = assert_error(
            h.try_register(&activation, &format!("{code}x"), linux())
                .await,
            Code::NotFound,
            "InvalidActivation",
        );
        let unknown = assert_error(
            h.try_register(&uuid::Uuid::now_v7().to_string(), &code, linux())
                .await,
            Code::NotFound,
            "InvalidActivation",
        );
        assert_eq!(wrong.message(), unknown.message(), "indistinguishable");
        assert_error(
            h.try_register("not-a-uuid", &code, linux()).await,
            Code::NotFound,
            "InvalidActivation",
        );

        // Bad requests name the field.
        let status = assert_error(
            h.nodes()
                .register_managed_instance(h.req(
                    NOBODY,
                    pb::RegisterManagedInstanceRequest {
                        activation_id: activation.clone(),
                        activation_code: code.clone(),
                        public_key: vec![1; 31],
                        facts: Some(linux()),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["public_key"]);
        for (facts, field) in [
            (
                HostFacts {
                    ip_addresses: vec!["300.1.1.1".into()],
                    ..linux()
                },
                "facts.ip_addresses[0]",
            ),
            (
                HostFacts {
                    ip_addresses: vec!["10.0.0.1".into(); 33],
                    ..linux()
                },
                "facts.ip_addresses",
            ),
            (
                HostFacts {
                    platform_type: "Plan9".into(),
                    ..linux()
                },
                "facts.platform_type",
            ),
            (
                HostFacts {
                    hostname: "h".repeat(257),
                    ..linux()
                },
                "facts.hostname",
            ),
        ] {
            let status = assert_error(
                h.try_register(&activation, &code, facts).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_eq!(violated_fields(&status), [field]);
        }

        // Limit 2: the third registration fails.
        let first = h.register(&activation, &code, linux()).await;
        let second = h.register(&activation, &code, linux()).await;
        assert_ne!(first, second);
        assert_error(
            h.try_register(&activation, &code, linux()).await,
            Code::FailedPrecondition,
            "ActivationLimitExceeded",
        );
        let listed = h
            .nodes()
            .describe_activations(h.req(ADMIN, describe_activations(&[&activation])))
            .await
            .expect("describe")
            .into_inner();
        assert_eq!(listed.activation_list[0].registrations_count, 2);

        // Expiry follows the clock.
        let (expiring, expiring_code) = h.activation(5, &[], "").await;
        h.clock.advance(TimeDelta::hours(25));
        assert_error(
            h.try_register(&expiring, &expiring_code, linux()).await,
            Code::FailedPrecondition,
            "ActivationExpired",
        );
        let listed = h
            .nodes()
            .describe_activations(h.req(ADMIN, describe_activations(&[&expiring])))
            .await
            .expect("describe")
            .into_inner();
        assert!(listed.activation_list[0].expired);

        // Every attempt is audited, never with the code: failures as anonymous.
        let events = h.audit_events("inventory:RegisterManagedInstance").await;
        assert_eq!(events.len(), 3 + 1 + 4 + 2 + 1 + 1);
        let successes: Vec<_> = events
            .iter()
            .filter(|event| event.result == AuditResult::Success as i32)
            .collect();
        assert_eq!(successes.len(), 2);
        assert!(
            successes
                .iter()
                .any(|event| event.principal == format!("node/{first}"))
        );
        assert!(
            successes
                .iter()
                .all(|event| event.resource == format!("activation:{activation}"))
        );
        let failures: Vec<_> = events
            .iter()
            .filter(|event| event.result == AuditResult::Failure as i32)
            .collect();
        assert_eq!(failures.len(), 10);
        assert!(failures.iter().all(|event| event.principal == "anonymous"));
        assert!(
            failures
                .iter()
                .any(|event| event.error_code == "FailedPrecondition")
        );
        assert!(failures.iter().any(|event| event.error_code == "NotFound"));
        for event in &events {
            assert!(!format!("{event:?}").contains(&code[4..]), "code audited");
        }
        h.stop().await;
    }
}

#[tokio::test]
async fn concurrent_registrations_never_exceed_the_limit() {
    for test_db in bosun_store::testing::both().await {
        let h = Arc::new(Harness::start(test_db).await);
        let (activation, code) = h.activation(3, &[], "").await;
        let attempts = (0..12).map(|_| {
            let h = Arc::clone(&h);
            let (activation, code) = (activation.clone(), code.clone());
            tokio::spawn(async move { h.try_register(&activation, &code, linux()).await })
        });
        let results = futures::future::join_all(attempts).await;
        let mut registered = 0;
        for result in results {
            match result.expect("task") {
                Ok(id) => {
                    assert!(is_node_id(&id));
                    registered += 1;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                }
            }
        }
        assert_eq!(registered, 3);
        assert_eq!(h.describe(vec![], 0).await.len(), 3);
        let h = Arc::into_inner(h).expect("only owner");
        h.stop().await;
    }
}

#[tokio::test]
async fn nodes_get_an_id_the_activation_tags_and_name_and_report_facts() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (activation, code) = h
            .activation(1, &[("env", "prod"), ("team", "blue")], "web-server")
            .await;
        let node = h.register(&activation, &code, linux()).await;
        assert!(is_node_id(&node), "{node}");
        assert_eq!(node.len(), 20);
        let tags = h
            .nodes()
            .list_tags_for_resource(h.req(
                ADMIN,
                pb::ListTagsForResourceRequest {
                    resource_type: "ManagedInstance".into(),
                    resource_id: node.clone(),
                },
            ))
            .await
            .expect("list tags")
            .into_inner();
        assert_eq!(tags.tag_list, tags_of(&[("env", "prod"), ("team", "blue")]));

        let info = h.describe(vec![], 0).await;
        assert_eq!(info.len(), 1);
        let info = &info[0];
        assert_eq!(info.instance_id, node);
        assert_eq!(info.name, "web-server");
        assert_eq!(info.activation_id, activation);
        assert_eq!(info.resource_type, "ManagedInstance");
        assert_eq!(info.platform_type, "Linux");
        assert_eq!(info.platform_name, "Ubuntu");
        assert_eq!(info.platform_version, "24.04");
        assert_eq!(info.computer_name, "web-1");
        assert_eq!(info.ip_address, "10.0.0.5");
        assert_eq!(info.ip_addresses, ["10.0.0.5", "fe80::1"]);
        assert_eq!(info.agent_version, "0.1.0");
        assert_eq!(info.architecture, "x86_64");
        assert_eq!(
            info.ping_status,
            pb::PingStatus::Inactive as i32,
            "never connected"
        );
        assert!(info.last_ping_date_time.is_none());
        assert_eq!(
            info.registration_date.map(|t| t.seconds),
            Some(h.now().timestamp())
        );

        // The channel's view: the key, then facts reported on connect.
        let credentials = h
            .directory
            .credentials(&node)
            .await
            .expect("credentials")
            .expect("registered");
        assert_eq!(credentials.public_key, [7u8; 32]);
        assert!(
            h.directory
                .credentials("mi-00000000000000000")
                .await
                .expect("credentials")
                .is_none()
        );
        assert!(
            h.directory
                .credentials("junk")
                .await
                .expect("credentials")
                .is_none()
        );
        let connected_at = h.now();
        h.directory
            .record_connect(
                &node,
                &HostFacts {
                    platform_type: "Linux".into(),
                    platform_name: "Debian GNU/Linux".into(),
                    platform_version: "13".into(),
                    hostname: "web-2".into(),
                    ip_addresses: vec!["192.168.1.9".into()],
                    agent_version: "0.2.0".into(),
                    architecture: "aarch64".into(),
                },
                connected_at,
            )
            .await
            .expect("record connect");
        let info = &h.describe(vec![], 0).await[0];
        assert_eq!(info.platform_name, "Debian GNU/Linux");
        assert_eq!(info.agent_version, "0.2.0");
        assert_eq!(info.computer_name, "web-2");
        assert_eq!(info.ip_address, "192.168.1.9");
        assert_eq!(info.architecture, "aarch64");
        assert_eq!(info.ping_status, pb::PingStatus::Online as i32);
        // PostgreSQL keeps microseconds.
        assert_eq!(
            info.last_ping_date_time
                .map(|t| (t.seconds, t.nanos / 1000)),
            Some((
                connected_at.timestamp(),
                to_timestamp(connected_at).nanos / 1000
            ))
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn describe_instance_information_filters_and_pages() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (first_activation, first_code) = h.activation(3, &[], "").await;
        let (second_activation, second_code) = h.activation(3, &[], "").await;
        let a = h.register(&first_activation, &first_code, linux()).await;
        let b = h
            .register(
                &first_activation,
                &first_code,
                HostFacts {
                    platform_type: "Windows".into(),
                    platform_name: "Windows Server".into(),
                    agent_version: "0.2.0".into(),
                    ..linux()
                },
            )
            .await;
        let c = h
            .register(
                &second_activation,
                &second_code,
                HostFacts {
                    platform_type: "MacOS".into(),
                    platform_name: "macOS".into(),
                    ..linux()
                },
            )
            .await;
        let d = h.register(&second_activation, &second_code, linux()).await;
        h.tag(&a, &[("env", "prod"), ("team", "blue")]).await;
        h.tag(&b, &[("env", "dev")]).await;
        h.tag(&c, &[("env", "prod")]).await;
        h.tag(&d, &[("owner", "x")]).await;
        let sorted = |mut ids: Vec<&String>| {
            ids.sort();
            ids.into_iter().cloned().collect::<Vec<_>>()
        };

        // Every node, in id order, two per page.
        assert_eq!(h.describe_ids(vec![]).await, sorted(vec![&a, &b, &c, &d]));
        assert_eq!(
            h.describe_ids(vec![filter("InstanceIds", &[&a, &c])]).await,
            sorted(vec![&a, &c])
        );
        assert_eq!(
            h.describe_ids(vec![filter("PlatformType", &["Windows", "MacOS"])])
                .await,
            sorted(vec![&b, &c])
        );
        assert_eq!(
            h.describe_ids(vec![filter("PlatformName", &["Ubuntu"])])
                .await,
            sorted(vec![&a, &d])
        );
        assert_eq!(
            h.describe_ids(vec![filter("AgentVersion", &["0.2.0"])])
                .await,
            vec![b.clone()]
        );
        assert_eq!(
            h.describe_ids(vec![filter("ActivationIds", &[&second_activation])])
                .await,
            sorted(vec![&c, &d])
        );
        assert_eq!(
            h.describe_ids(vec![filter("ResourceType", &["ManagedInstance"])])
                .await
                .len(),
            4
        );
        assert!(
            h.describe_ids(vec![filter("ResourceType", &["EC2Instance"])])
                .await
                .is_empty()
        );
        assert_eq!(
            h.describe_ids(vec![filter("tag-key", &["team", "owner"])])
                .await,
            sorted(vec![&a, &d])
        );
        assert_eq!(
            h.describe_ids(vec![filter("tag:env", &["prod", "dev"])])
                .await,
            sorted(vec![&a, &b, &c])
        );
        // Filters are ANDed.
        assert_eq!(
            h.describe_ids(vec![
                filter("tag:env", &["prod"]),
                filter("PlatformType", &["Linux"])
            ])
            .await,
            vec![a.clone()]
        );
        assert_eq!(
            h.describe_ids(vec![filter("PingStatus", &["Inactive"])])
                .await
                .len(),
            4
        );

        // Bad filters and tokens.
        for (filters, field) in [
            (vec![filter("Color", &["red"])], "filters[0].key"),
            (
                vec![filter("PingStatus", &["Sleeping"])],
                "filters[0].values[0]",
            ),
            (vec![filter("tag:env", &[])], "filters[0].values"),
            (
                vec![filter("InstanceIds", &[&a]), filter("InstanceIds", &["x"])],
                "filters[1].values[0]",
            ),
            (
                vec![filter("resource-groups:Name", &["missing"])],
                "filters[0].values[0]",
            ),
        ] {
            let status = assert_error(
                h.nodes()
                    .describe_instance_information(h.req(
                        ADMIN,
                        pb::DescribeInstanceInformationRequest {
                            filters,
                            ..Default::default()
                        },
                    ))
                    .await,
                Code::InvalidArgument,
                "InvalidFilter",
            );
            assert_eq!(violated_fields(&status), [field]);
        }
        let values: Vec<String> = (0..101).map(|i| format!("v{i}")).collect();
        assert_error(
            h.nodes()
                .describe_instance_information(h.req(
                    ADMIN,
                    pb::DescribeInstanceInformationRequest {
                        filters: vec![pb::InstanceInformationFilter {
                            key: "tag:env".into(),
                            values,
                        }],
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidFilter",
        );
        assert_error(
            h.nodes()
                .describe_instance_information(h.req(
                    ADMIN,
                    pb::DescribeInstanceInformationRequest {
                        next_token: "garbage!".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidNextToken",
        );
        let status = assert_error(
            h.nodes()
                .describe_instance_information(h.req(
                    ADMIN,
                    pb::DescribeInstanceInformationRequest {
                        max_results: 1001,
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["max_results"]);
        h.stop().await;
    }
}

#[tokio::test]
async fn ping_status_follows_the_pings_and_the_clock() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes_registered(5).await;
        let now = h.now();
        // 0, 1: just now; 2: 10 minutes ago; 3: 40 days ago; 4: never.
        h.directory
            .record_pings(&ids[0..2], now)
            .await
            .expect("pings");
        h.directory
            .record_pings(&ids[2..3], now - TimeDelta::minutes(10))
            .await
            .expect("pings");
        h.directory
            .record_pings(&ids[3..4], now - TimeDelta::days(40))
            .await
            .expect("pings");
        let by_status = |status: &'static str| {
            let h = &h;
            async move {
                // One per page, so paging runs through the SQL condition.
                h.describe(vec![filter("PingStatus", &[status])], 1)
                    .await
                    .into_iter()
                    .map(|info| info.instance_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(by_status("Online").await, ids[0..2]);
        assert_eq!(by_status("ConnectionLost").await, ids[2..3]);
        assert_eq!(
            by_status("Inactive").await,
            [ids[3].clone(), ids[4].clone()]
        );
        let all = h.describe(vec![], 0).await;
        let statuses: Vec<i32> = all.iter().map(|info| info.ping_status).collect();
        use pb::PingStatus::*;
        assert_eq!(
            statuses,
            [
                Online as i32,
                Online as i32,
                ConnectionLost as i32,
                Inactive as i32,
                Inactive as i32
            ]
        );
        assert_eq!(
            h.describe_ids(vec![filter("PingStatus", &["Online", "ConnectionLost"])])
                .await,
            ids[0..3]
        );

        // Three minutes of silence: Online becomes ConnectionLost; a fresh ping brings 1 back.
        h.clock.advance(TimeDelta::minutes(3));
        h.directory
            .record_pings(&ids[1..2], h.now())
            .await
            .expect("pings");
        assert_eq!(by_status("Online").await, ids[1..2]);
        assert_eq!(
            by_status("ConnectionLost").await,
            [ids[0].clone(), ids[2].clone()]
        );
        // At exactly 30 days of silence a node is still ConnectionLost; a moment later,
        // Inactive.
        h.clock.advance(TimeDelta::days(30));
        assert_eq!(by_status("ConnectionLost").await, ids[1..2]);
        assert_eq!(by_status("Inactive").await.len(), 4);
        h.clock.advance(TimeDelta::seconds(1));
        assert_eq!(by_status("Inactive").await.len(), 5);
        h.stop().await;
    }
}

#[tokio::test]
async fn pings_are_recorded_in_chunks_for_large_fleets() {
    let test_db = bosun_store::testing::postgres().await;
    let h = Harness::start(test_db).await;
    let ids = h.nodes_registered(3).await;
    // More ids than one chunk, most of them unknown: the known ones are updated.
    let mut many: Vec<String> = (0..1200).map(|i| format!("mi-{i:017x}")).collect();
    many.extend(ids.iter().cloned());
    h.directory
        .record_pings(&many, h.now())
        .await
        .expect("pings");
    assert_eq!(
        h.describe_ids(vec![filter("PingStatus", &["Online"])])
            .await,
        ids
    );
    h.stop().await;
}

#[tokio::test]
async fn deregistered_nodes_disappear_and_lose_their_key() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes_registered(2).await;
        h.nodes()
            .deregister_managed_instance(h.req(
                ADMIN,
                pb::DeregisterManagedInstanceRequest {
                    instance_id: ids[0].clone(),
                },
            ))
            .await
            .expect("deregister");
        assert_eq!(h.describe_ids(vec![]).await, ids[1..2]);
        assert!(
            h.directory
                .credentials(&ids[0])
                .await
                .expect("credentials")
                .is_none()
        );
        assert!(
            h.directory
                .credentials(&ids[1])
                .await
                .expect("credentials")
                .is_some()
        );
        assert_eq!(
            *h.control.disconnects.lock().expect("lock"),
            [(ids[0].clone(), Reason::Deregistered)]
        );
        // Late pings do not bring it back, and name it (and unknown nodes) as refused, so a
        // gateway still holding its stream closes it; a second deregistration is NotFound.
        let refused = h
            .directory
            .record_pings(
                &[
                    ids[0].clone(),
                    ids[1].clone(),
                    "mi-00000000000000000".into(),
                ],
                h.now(),
            )
            .await
            .expect("pings");
        assert_eq!(refused, [ids[0].clone(), "mi-00000000000000000".into()]);
        assert_eq!(h.describe_ids(vec![]).await, ids[1..2]);
        for instance_id in [
            ids[0].clone(),
            "mi-00000000000000000".into(),
            "bogus".into(),
        ] {
            assert_error(
                h.nodes()
                    .deregister_managed_instance(
                        h.req(ADMIN, pb::DeregisterManagedInstanceRequest { instance_id }),
                    )
                    .await,
                Code::NotFound,
                "InvalidInstanceId",
            );
        }
        assert_error(
            h.nodes()
                .list_tags_for_resource(h.req(
                    ADMIN,
                    pb::ListTagsForResourceRequest {
                        resource_type: "ManagedInstance".into(),
                        resource_id: ids[0].clone(),
                    },
                ))
                .await,
            Code::NotFound,
            "InvalidInstanceId",
        );
        let events = h.audit_events("inventory:DeregisterManagedInstance").await;
        assert_eq!(
            events.len(),
            3,
            "one success, two failures on known-form ids"
        );
        assert_eq!(events[2].result, AuditResult::Success as i32);
        assert_eq!(events[2].resource, format!("node:{}", ids[0]));
        assert_eq!(events[2].principal, ADMIN);
        assert_eq!(h.control.disconnects.lock().expect("lock").len(), 1);

        // A failed disconnect is logged, not returned: the key is refused anyway.
        h.control
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        h.nodes()
            .deregister_managed_instance(h.req(
                ADMIN,
                pb::DeregisterManagedInstanceRequest {
                    instance_id: ids[1].clone(),
                },
            ))
            .await
            .expect("deregister despite the failed disconnect");
        assert!(h.describe_ids(vec![]).await.is_empty());
        assert_eq!(h.control.disconnects.lock().expect("lock").len(), 2);
        h.stop().await;
    }
}

#[tokio::test]
async fn tags_are_added_overwritten_removed_and_limited() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (activation, code) = h.activation(1, &[("env", "dev")], "").await;
        let node = h.register(&activation, &code, linux()).await;
        let list = || async {
            h.nodes()
                .list_tags_for_resource(h.req(
                    ADMIN,
                    pb::ListTagsForResourceRequest {
                        resource_type: "ManagedInstance".into(),
                        resource_id: node.clone(),
                    },
                ))
                .await
                .expect("list tags")
                .into_inner()
                .tag_list
        };
        h.tag(&node, &[("env", "prod"), ("Team Name", "blue/green")])
            .await;
        assert_eq!(
            list().await,
            tags_of(&[("Team Name", "blue/green"), ("env", "prod")])
        );
        h.nodes()
            .remove_tags_from_resource(h.req(
                ADMIN,
                pb::RemoveTagsFromResourceRequest {
                    resource_type: "ManagedInstance".into(),
                    resource_id: node.clone(),
                    tag_keys: vec!["env".into(), "absent".into()],
                },
            ))
            .await
            .expect("remove tags");
        assert_eq!(list().await, tags_of(&[("Team Name", "blue/green")]));

        // 50 at most: 1 + 49 fits, one more does not (overwriting still does).
        let many: Vec<(String, String)> = (0..49)
            .map(|i| (format!("k{i:02}"), "v".to_owned()))
            .collect();
        let many_ref: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        h.tag(&node, &many_ref).await;
        assert_eq!(list().await.len(), 50);
        let add = |tags: Vec<pb::Tag>| {
            let mut client = h.nodes();
            let request = h.req(
                ADMIN,
                pb::AddTagsToResourceRequest {
                    resource_type: "ManagedInstance".into(),
                    resource_id: node.clone(),
                    tags,
                },
            );
            async move { client.add_tags_to_resource(request).await }
        };
        assert_error(
            add(tags_of(&[("one-more", "x")])).await,
            Code::InvalidArgument,
            "TooManyTagsError",
        );
        add(tags_of(&[("k00", "changed")]))
            .await
            .expect("overwrite");
        assert_eq!(list().await.len(), 50);

        for (tags, field) in [
            (tags_of(&[("aws:owner", "x")]), "tags[0].key"),
            (tags_of(&[("ok", "x"), ("bosun:x", "y")]), "tags[1].key"),
            (tags_of(&[("", "x")]), "tags[0].key"),
            (tags_of(&[("bad*key", "x")]), "tags[0].key"),
            (tags_of(&[("k", &"v".repeat(257))]), "tags[0].value"),
            (vec![], "tags"),
        ] {
            let status = assert_error(
                add(tags).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_eq!(violated_fields(&status), [field]);
        }
        let status = assert_error(
            h.nodes()
                .add_tags_to_resource(h.req(
                    ADMIN,
                    pb::AddTagsToResourceRequest {
                        resource_type: "Parameter".into(),
                        resource_id: node.clone(),
                        tags: tags_of(&[("a", "b")]),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["resource_type"]);
        assert_error(
            h.nodes()
                .add_tags_to_resource(h.req(
                    ADMIN,
                    pb::AddTagsToResourceRequest {
                        resource_type: "ManagedInstance".into(),
                        resource_id: "mi-00000000000000000".into(),
                        tags: tags_of(&[("a", "b")]),
                    },
                ))
                .await,
            Code::NotFound,
            "InvalidInstanceId",
        );
        let events = h.audit_events("inventory:AddTagsToResource").await;
        assert!(
            events
                .iter()
                .any(|event| event.result == AuditResult::Failure as i32)
        );
        assert!(events[events.len() - 1].details.contains("Team Name"));
        h.stop().await;
    }
}

#[tokio::test]
async fn callers_without_a_grant_are_denied_and_tag_conditions_apply() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (activation, code) = h.activation(2, &[], "").await;
        let blue = h.register(&activation, &code, linux()).await;
        let red = h.register(&activation, &code, linux()).await;
        h.tag(&blue, &[("team", "blue")]).await;
        h.tag(&red, &[("team", "red")]).await;
        let nodes = h.nodes();

        macro_rules! denied {
            ($call:expr) => {
                let status = $call.await.expect_err("denied");
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            };
        }
        denied!(
            nodes
                .clone()
                .create_activation(h.req(NOBODY, pb::CreateActivationRequest::default()))
        );
        denied!(
            nodes
                .clone()
                .describe_activations(h.req(NOBODY, pb::DescribeActivationsRequest::default()))
        );
        denied!(nodes.clone().delete_activation(h.req(
            NOBODY,
            pb::DeleteActivationRequest {
                activation_id: activation.clone()
            }
        )));
        denied!(nodes.clone().describe_instance_information(
            h.req(NOBODY, pb::DescribeInstanceInformationRequest::default())
        ));
        denied!(nodes.clone().deregister_managed_instance(h.req(
            NOBODY,
            pb::DeregisterManagedInstanceRequest {
                instance_id: blue.clone()
            }
        )));
        denied!(nodes.clone().list_tags_for_resource(h.req(
            NOBODY,
            pb::ListTagsForResourceRequest {
                resource_type: "ManagedInstance".into(),
                resource_id: blue.clone()
            }
        )));
        denied!(nodes.clone().remove_tags_from_resource(h.req(
            NOBODY,
            pb::RemoveTagsFromResourceRequest {
                resource_type: "ManagedInstance".into(),
                resource_id: blue.clone(),
                tag_keys: vec!["team".into()]
            }
        )));
        denied!(nodes.clone().resolve_targets(h.req(
            NOBODY,
            pb::ResolveTargetsRequest {
                targets: vec![target("InstanceIds", &["*"])],
                ..Default::default()
            }
        )));
        let groups = h.groups();
        denied!(groups.clone().create_group(h.req(
            NOBODY,
            pb::CreateGroupRequest {
                name: "g".into(),
                description: String::new(),
                resource_query: Some(pb::ResourceQuery {
                    resource_type_filters: vec![],
                    tag_filters: vec![pb::TagFilter {
                        key: "team".into(),
                        values: vec![]
                    }],
                }),
            }
        )));
        denied!(
            groups
                .clone()
                .list_groups(h.req(NOBODY, pb::ListGroupsRequest::default()))
        );

        // A grant conditioned on the node's tag.
        let add = |node: &str| {
            let mut client = h.nodes();
            let request = h.req(
                BLUE,
                pb::AddTagsToResourceRequest {
                    resource_type: "ManagedInstance".into(),
                    resource_id: node.to_owned(),
                    tags: tags_of(&[("owner", "me")]),
                },
            );
            async move { client.add_tags_to_resource(request).await }
        };
        add(&blue).await.expect("blue may tag blue nodes");
        denied!(add(&red));
        assert_eq!(
            h.nodes()
                .describe_instance_information(
                    h.req(BLUE, pb::DescribeInstanceInformationRequest::default())
                )
                .await
                .expect("blue may describe")
                .into_inner()
                .instance_information_list
                .len(),
            2
        );

        let denials = h.audit_events("inventory:CreateActivation").await;
        assert_eq!(denials[0].result, AuditResult::Denied as i32);
        assert_eq!(denials[0].principal, NOBODY);
        let tagging = h.audit_events("inventory:AddTagsToResource").await;
        assert_eq!(tagging[0].result, AuditResult::Denied as i32);
        assert_eq!(tagging[0].resource, format!("node:{red}"));
        assert_eq!(
            h.audit_events("inventory:DeregisterManagedInstance").await[0].result,
            AuditResult::Denied as i32
        );
        assert!(h.control.disconnects.lock().expect("lock").is_empty());
        h.stop().await;
    }
}
