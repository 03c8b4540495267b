//! Targets and resource groups on SQLite and PostgreSQL: every key kind through
//! ResolveTargets and the library resolver, groups resolved live, the registration path that
//! needs no token.

mod common;

use std::sync::Arc;

use bosun_auth::{DEFAULT_ISSUER, INTERNAL_AUDIENCE, SigningKey, TokenVerifier, VerifyLayer};
use bosun_inventory::targets::{self, Target, TargetKey};
use bosun_proto::audit::v1::AuditResult;
use bosun_proto::inventory::v1 as pb;
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use common::*;
use tonic::Code;

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.sort();
    ids
}

fn query(filters: &[(&str, &[&str])]) -> pb::ResourceQuery {
    pb::ResourceQuery {
        resource_type_filters: vec![],
        tag_filters: filters
            .iter()
            .map(|(key, values)| pb::TagFilter {
                key: key.to_string(),
                values: values.iter().map(|v| v.to_string()).collect(),
            })
            .collect(),
    }
}

/// Four nodes: a (env=prod, team=blue), b (env=dev), c (env=prod), d (owner=x), and e
/// deregistered (env=prod).
async fn fleet(h: &Harness) -> [String; 4] {
    let ids = h.nodes_registered(5).await;
    h.tag(&ids[0], &[("env", "prod"), ("team", "blue")]).await;
    h.tag(&ids[1], &[("env", "dev")]).await;
    h.tag(&ids[2], &[("env", "prod")]).await;
    h.tag(&ids[3], &[("owner", "x")]).await;
    h.tag(&ids[4], &[("env", "prod")]).await;
    h.nodes()
        .deregister_managed_instance(h.req(
            ADMIN,
            pb::DeregisterManagedInstanceRequest {
                instance_id: ids[4].clone(),
            },
        ))
        .await
        .expect("deregister");
    [
        ids[0].clone(),
        ids[1].clone(),
        ids[2].clone(),
        ids[3].clone(),
    ]
}

#[tokio::test]
async fn targets_resolve_by_every_key_anded_across_and_ored_within() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let [a, b, c, d] = fleet(&h).await;
        let resolve = |targets: Vec<pb::Target>| {
            let h = &h;
            async move { h.resolve(targets, 1).await.expect("resolve") }
        };
        assert_eq!(
            resolve(vec![target("InstanceIds", &["*"])]).await,
            sorted(&[&a, &b, &c, &d])
        );
        assert_eq!(
            resolve(vec![target(
                "InstanceIds",
                &[&d, &b, "mi-00000000000000000"]
            )])
            .await,
            sorted(&[&b, &d])
        );
        assert_eq!(
            resolve(vec![target("tag:env", &["prod"])]).await,
            sorted(&[&a, &c])
        );
        assert_eq!(
            resolve(vec![target("tag:env", &["prod", "dev"])]).await,
            sorted(&[&a, &b, &c])
        );
        assert_eq!(
            resolve(vec![target("tag-key", &["team", "owner"])]).await,
            sorted(&[&a, &d])
        );
        assert_eq!(
            resolve(vec![
                target("tag:env", &["prod"]),
                target("tag-key", &["team"])
            ])
            .await,
            vec![a.clone()]
        );
        assert_eq!(
            resolve(vec![
                target("InstanceIds", &["*"]),
                target("tag:env", &["dev"])
            ])
            .await,
            vec![b.clone()]
        );
        assert!(
            resolve(vec![
                target("tag:env", &["dev"]),
                target("tag-key", &["owner"])
            ])
            .await
            .is_empty()
        );
        // Page sizes: 0 is the default, one page.
        assert_eq!(
            h.resolve(vec![target("InstanceIds", &["*"])], 0)
                .await
                .expect("resolve")
                .len(),
            4
        );

        // resource-groups:Name applies the group's query.
        h.groups()
            .create_group(h.req(
                ADMIN,
                pb::CreateGroupRequest {
                    name: "prod".into(),
                    description: String::new(),
                    resource_query: Some(query(&[("env", &["prod"])])),
                },
            ))
            .await
            .expect("create group");
        assert_eq!(
            resolve(vec![target("resource-groups:Name", &["prod"])]).await,
            sorted(&[&a, &c])
        );
        assert_eq!(
            resolve(vec![
                target("resource-groups:Name", &["prod"]),
                target("tag-key", &["team"])
            ])
            .await,
            vec![a.clone()]
        );

        for (targets, field) in [
            (vec![], "targets"),
            (vec![target("InstanceIds", &["*"]); 6], "targets"),
            (
                vec![target("InstanceIds", &["*"]), target("Colour", &["x"])],
                "targets[1].key",
            ),
            (vec![target("tag:aws:x", &["x"])], "targets[0].key"),
            (vec![target("tag-key", &[])], "targets[0].values"),
            (vec![target("tag:env", &vec!["v"; 51])], "targets[0].values"),
            (
                vec![target("InstanceIds", &["*", &a])],
                "targets[0].values[0]",
            ),
            (
                vec![target("InstanceIds", &[&a, "i-123"])],
                "targets[0].values[1]",
            ),
            (
                vec![
                    target("tag:env", &["prod"]),
                    target("resource-groups:Name", &["missing"]),
                ],
                "targets[1].values[0]",
            ),
        ] {
            let status = assert_error(
                h.resolve(targets, 0).await,
                Code::InvalidArgument,
                "InvalidTarget",
            );
            assert_eq!(violated_fields(&status), [field]);
        }
        assert_error(
            h.nodes()
                .resolve_targets(h.req(
                    ADMIN,
                    pb::ResolveTargetsRequest {
                        targets: vec![target("InstanceIds", &["*"])],
                        max_results: 10_001,
                        next_token: String::new(),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );

        // The library resolver other services call, paging by the last id.
        let everyone = [Target {
            key: TargetKey::InstanceIds,
            values: vec!["*".into()],
        }];
        let first = targets::resolve(&h.test_db.db, &everyone, None, 3)
            .await
            .expect("resolve");
        assert_eq!(first, sorted(&[&a, &b, &c, &d])[..3]);
        let rest = targets::resolve(
            &h.test_db.db,
            &everyone,
            first.last().map(String::as_str),
            3,
        )
        .await
        .expect("resolve");
        assert_eq!(rest, [sorted(&[&a, &b, &c, &d])[3].clone()]);
        let parsed = Target::parse_all("targets", &[target("tag:env", &["prod"])]).expect("parse");
        assert_eq!(
            targets::resolve(&h.test_db.db, &parsed, None, 100)
                .await
                .expect("resolve"),
            sorted(&[&a, &c])
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn groups_are_kept_and_resolved_live() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let [a, b, c, d] = fleet(&h).await;
        let groups = h.groups();
        let created = groups
            .clone()
            .create_group(h.req(
                ADMIN,
                pb::CreateGroupRequest {
                    name: "blue-prod".into(),
                    description: "blue team in prod".into(),
                    resource_query: Some(pb::ResourceQuery {
                        resource_type_filters: vec!["AWS::SSM::ManagedInstance".into()],
                        tag_filters: vec![
                            pb::TagFilter {
                                key: "env".into(),
                                values: vec!["prod".into()],
                            },
                            pb::TagFilter {
                                key: "team".into(),
                                values: vec![],
                            },
                        ],
                    }),
                },
            ))
            .await
            .expect("create group")
            .into_inner()
            .group
            .expect("group");
        assert_eq!(created.name, "blue-prod");
        assert_eq!(
            created
                .resource_query
                .clone()
                .expect("query")
                .tag_filters
                .len(),
            2
        );
        assert_error(
            groups
                .clone()
                .create_group(h.req(
                    ADMIN,
                    pb::CreateGroupRequest {
                        name: "blue-prod".into(),
                        description: String::new(),
                        resource_query: Some(query(&[("env", &[])])),
                    },
                ))
                .await,
            Code::AlreadyExists,
            "GroupAlreadyExists",
        );
        let members = |name: &'static str, page: i32| {
            let groups = groups.clone();
            let h = &h;
            async move {
                let mut all = Vec::new();
                let mut next_token = String::new();
                loop {
                    let response = groups
                        .clone()
                        .list_group_resources(h.req(
                            ADMIN,
                            pb::ListGroupResourcesRequest {
                                name: name.into(),
                                max_results: page,
                                next_token: next_token.clone(),
                            },
                        ))
                        .await
                        .expect("list group resources")
                        .into_inner();
                    all.extend(response.resources);
                    if response.next_token.is_empty() {
                        return all;
                    }
                    next_token = response.next_token;
                }
            }
        };
        let resources = members("blue-prod", 0).await;
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].resource_id, a);
        assert_eq!(resources[0].resource_arn, format!("node:{a}"));
        assert_eq!(resources[0].resource_type, "Bosun::Node");

        // Tag a node later: it is a member at once.
        h.tag(&c, &[("team", "red")]).await;
        let ids: Vec<String> = members("blue-prod", 1)
            .await
            .into_iter()
            .map(|r| r.resource_id)
            .collect();
        assert_eq!(ids, sorted(&[&a, &c]));

        // The same group as a DescribeInstanceInformation filter.
        assert_eq!(
            h.describe_ids(vec![filter("resource-groups:Name", &["blue-prod"])])
                .await,
            sorted(&[&a, &c])
        );

        // Replace the query (and keep the description when unset).
        let updated = groups
            .clone()
            .update_group_query(h.req(
                ADMIN,
                pb::UpdateGroupQueryRequest {
                    name: "blue-prod".into(),
                    resource_query: Some(query(&[("env", &["dev"]), ("env", &["dev", "prod"])])),
                    description: None,
                },
            ))
            .await
            .expect("update group")
            .into_inner()
            .group
            .expect("group");
        assert_eq!(updated.description, "blue team in prod");
        let ids: Vec<String> = members("blue-prod", 0)
            .await
            .into_iter()
            .map(|r| r.resource_id)
            .collect();
        assert_eq!(ids, std::slice::from_ref(&b));
        let renamed = groups
            .clone()
            .update_group_query(h.req(
                ADMIN,
                pb::UpdateGroupQueryRequest {
                    name: "blue-prod".into(),
                    resource_query: Some(query(&[("owner", &[])])),
                    description: Some("owned".into()),
                },
            ))
            .await
            .expect("update group")
            .into_inner()
            .group
            .expect("group");
        assert_eq!(renamed.description, "owned");
        let got = groups
            .clone()
            .get_group(h.req(
                ADMIN,
                pb::GetGroupRequest {
                    name: "blue-prod".into(),
                },
            ))
            .await
            .expect("get group")
            .into_inner()
            .group
            .expect("group");
        assert_eq!(got.resource_query, Some(query(&[("owner", &[])])));
        assert_eq!(
            members("blue-prod", 0).await[0].resource_id,
            d,
            "has-the-key filter"
        );

        // List by name, paged.
        for name in ["c-group", "a-group"] {
            groups
                .clone()
                .create_group(h.req(
                    ADMIN,
                    pb::CreateGroupRequest {
                        name: name.into(),
                        description: String::new(),
                        resource_query: Some(query(&[("env", &[])])),
                    },
                ))
                .await
                .expect("create group");
        }
        let mut names = Vec::new();
        let mut next_token = String::new();
        loop {
            let page = groups
                .clone()
                .list_groups(h.req(
                    ADMIN,
                    pb::ListGroupsRequest {
                        max_results: 2,
                        next_token: next_token.clone(),
                    },
                ))
                .await
                .expect("list groups")
                .into_inner();
            assert!(page.groups.len() <= 2);
            names.extend(page.groups.into_iter().map(|g| g.name));
            if page.next_token.is_empty() {
                break;
            }
            next_token = page.next_token;
        }
        assert_eq!(names, ["a-group", "blue-prod", "c-group"]);

        // Delete; then everything about it is GroupNotFound.
        groups
            .clone()
            .delete_group(h.req(
                ADMIN,
                pb::DeleteGroupRequest {
                    name: "blue-prod".into(),
                },
            ))
            .await
            .expect("delete group");
        assert_error(
            groups
                .clone()
                .get_group(h.req(
                    ADMIN,
                    pb::GetGroupRequest {
                        name: "blue-prod".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "GroupNotFound",
        );
        assert_error(
            groups
                .clone()
                .delete_group(h.req(
                    ADMIN,
                    pb::DeleteGroupRequest {
                        name: "blue-prod".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "GroupNotFound",
        );
        assert_error(
            groups
                .clone()
                .list_group_resources(h.req(
                    ADMIN,
                    pb::ListGroupResourcesRequest {
                        name: "blue-prod".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::NotFound,
            "GroupNotFound",
        );
        assert_error(
            groups
                .clone()
                .update_group_query(h.req(
                    ADMIN,
                    pb::UpdateGroupQueryRequest {
                        name: "blue-prod".into(),
                        resource_query: Some(query(&[("env", &[])])),
                        description: None,
                    },
                ))
                .await,
            Code::NotFound,
            "GroupNotFound",
        );
        // Members are untouched.
        assert_eq!(h.describe_ids(vec![]).await.len(), 4);

        // Validation names the field.
        let too_many_filters: Vec<(String, Vec<&str>)> =
            (0..51).map(|i| (format!("k{i}"), vec![])).collect();
        let too_many_filters: Vec<(&str, &[&str])> = too_many_filters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        for (request, field) in [
            (
                pb::CreateGroupRequest {
                    name: "bad name".into(),
                    description: String::new(),
                    resource_query: Some(query(&[("env", &[])])),
                },
                "name",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: "d".repeat(513),
                    resource_query: Some(query(&[("env", &[])])),
                },
                "description",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: String::new(),
                    resource_query: None,
                },
                "resource_query",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: String::new(),
                    resource_query: Some(query(&[])),
                },
                "resource_query.tag_filters",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: String::new(),
                    resource_query: Some(query(&too_many_filters)),
                },
                "resource_query.tag_filters",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: String::new(),
                    resource_query: Some(query(&[("env", &[]), ("aws:x", &[])])),
                },
                "resource_query.tag_filters[1].key",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: String::new(),
                    resource_query: Some(query(&[("env", &vec!["v"; 21])])),
                },
                "resource_query.tag_filters[0].values",
            ),
            (
                pb::CreateGroupRequest {
                    name: "g".into(),
                    description: String::new(),
                    resource_query: Some(pb::ResourceQuery {
                        resource_type_filters: vec!["AWS::EC2::Instance".into()],
                        tag_filters: vec![pb::TagFilter {
                            key: "env".into(),
                            values: vec![],
                        }],
                    }),
                },
                "resource_query.resource_type_filters[0]",
            ),
        ] {
            let status = assert_error(
                groups.clone().create_group(h.req(ADMIN, request)).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_eq!(violated_fields(&status), [field]);
        }

        let created = h.audit_events("inventory:CreateGroup").await;
        assert_eq!(created.len(), 4, "3 created, 1 already existed");
        assert!(
            created
                .iter()
                .any(|e| e.result == AuditResult::Failure as i32)
        );
        assert_eq!(h.audit_events("inventory:UpdateGroupQuery").await.len(), 3);
        assert_eq!(h.audit_events("inventory:DeleteGroup").await.len(), 2);
        h.stop().await;
    }
}

/// RegisterManagedInstance is public at the edge: behind a `VerifyLayer` that makes it
/// public (as production does), a call without any token registers a node.
#[tokio::test]
async fn registration_needs_no_token_where_the_path_is_public() {
    let test_db = bosun_store::testing::sqlite().await;
    let h = Harness::start(test_db).await;
    let (activation, code) = h.activation(1, &[("env", "edge")], "").await;

    let key = SigningKey::generate().expect("signing key");
    let verifier = TokenVerifier::new(&[key.verifying_key()], DEFAULT_ISSUER).expect("verifier");
    let layer = VerifyLayer::new(Arc::new(verifier), INTERNAL_AUDIENCE)
        .public_path("/bosun.inventory.v1.NodeService/RegisterManagedInstance");
    let service = bosun_inventory::NodeServiceImpl::new(
        h.test_db.db.clone(),
        bosun_audit::AuditLog::new(h.test_db.db.clone()),
        Arc::new(FakeControl::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(service.into_server())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = NodeServiceClient::new(channel);
    let node = client
        .register_managed_instance(pb::RegisterManagedInstanceRequest {
            activation_id: activation.clone(),
            activation_code: code.clone(),
            public_key: vec![9; 32],
            facts: Some(linux()),
        })
        .await
        .expect("register without a token")
        .into_inner()
        .instance_id;
    assert!(bosun_inventory::validate::is_node_id(&node));
    // Everything else still needs a token.
    let status = client
        .describe_instance_information(pb::DescribeInstanceInformationRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    server.abort();
    let events = h.audit_events("inventory:RegisterManagedInstance").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].principal, format!("node/{node}"));
    h.stop().await;
}
