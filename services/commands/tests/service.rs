//! CommandService RPCs through `TestServer`, with `Ports::local` over the real documents,
//! inventory, parameters and notifications crates, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use bosun_commands::entities::{command, invocation, output_chunk};
use bosun_commands::model::{InvocationState, Plan};
use bosun_commands::{CommandServiceImpl, CommandsConfig, Ports};
use bosun_core::ApiError;
use bosun_nodelink::NodeControl;
use bosun_objects::{ObjectStoreConfig, Objects};
use bosun_parameters::MasterKeyRing;
use bosun_proto::agent::v1::HostFacts;
use bosun_proto::agent::v1::close::Reason;
use bosun_proto::audit::v1 as audit_pb;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::commands::v1 as pb;
use bosun_proto::commands::v1::command_service_client::CommandServiceClient;
use bosun_proto::documents::v1 as doc_pb;
use bosun_proto::documents::v1::document_service_client::DocumentServiceClient;
use bosun_proto::inventory::v1 as inv_pb;
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::notifications::v1 as notif_pb;
use bosun_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use bosun_proto::parameters::v1 as param_pb;
use bosun_proto::parameters::v1::parameter_service_client::ParameterServiceClient;
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer, assert_error, violated_fields};
use futures::StreamExt;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use tonic::Code;
use tonic::service::Routes;
use tonic::transport::Channel;

const ADMIN: &str = "user/admin";
/// May run documents (built-in ones) on nodes tagged Env=dev only; nothing else.
const DEV: &str = "user/dev";
const NOBODY: &str = "user/nobody";

const DEV_POLICY: &str = r#"{"Statement": [
  {"Effect": "Allow", "Action": "documents:GetDocument", "Resource": "document:*"},
  {"Effect": "Allow", "Action": "commands:SendCommand", "Resource": "node:*",
   "Condition": {"StringEquals": {"bosun:ResourceTag/Env": "dev"}}}
]}"#;

fn caller(who: &str) -> Caller {
    let caller = Caller::new(who);
    match who {
        ADMIN => caller.policy(ALLOW_ALL),
        DEV => caller.policy(DEV_POLICY),
        _ => caller,
    }
}

struct NoControl;

#[async_trait::async_trait]
impl NodeControl for NoControl {
    async fn disconnect(&self, _node_id: &str, _reason: Reason) -> Result<(), ApiError> {
        Ok(())
    }
}

struct Harness {
    test_db: TestDatabase,
    objects: Arc<Objects>,
    wake: Arc<tokio::sync::Notify>,
    server: TestServer,
    _root: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Harness {
    async fn start(test_db: TestDatabase) -> Harness {
        let db = &test_db.db;
        bosun_store::migrate::<bosun_audit::Migrator>(db)
            .await
            .expect("audit");
        bosun_store::migrate::<bosun_inventory::Migrator>(db)
            .await
            .expect("inventory");
        bosun_store::migrate::<bosun_documents::Migrator>(db)
            .await
            .expect("documents");
        bosun_store::migrate::<bosun_parameters::Migrator>(db)
            .await
            .expect("parameters");
        bosun_store::migrate::<bosun_notifications::Migrator>(db)
            .await
            .expect("notifications");
        bosun_store::migrate::<bosun_commands::Migrator>(db)
            .await
            .expect("commands");
        let root =
            TempDir(std::env::temp_dir().join(format!("bosun-commands-{}", uuid::Uuid::new_v4())));
        let objects = Arc::new(
            Objects::open(&ObjectStoreConfig::Local {
                root: root.0.clone(),
            })
            .expect("objects"),
        );
        let audit = bosun_audit::AuditLog::new(db.clone());
        let ring = Arc::new(MasterKeyRing::generate_default().expect("key ring"));
        let wake = Arc::new(tokio::sync::Notify::new());
        let commands = CommandServiceImpl::new(
            db.clone(),
            audit.clone(),
            Ports::local(db.clone()),
            objects.clone(),
            CommandsConfig::default(),
        )
        .with_wake(wake.clone());
        let nodes =
            bosun_inventory::NodeServiceImpl::new(db.clone(), audit.clone(), Arc::new(NoControl));
        let documents = bosun_documents::DocumentServiceImpl::new(db.clone(), audit.clone());
        let parameters =
            bosun_parameters::ParameterServiceImpl::new(db.clone(), audit.clone(), ring.clone());
        let notifications =
            bosun_notifications::NotificationServiceImpl::new(db.clone(), audit.clone(), ring);
        let audit_service = bosun_audit::AuditServiceImpl::new(db.clone());
        let server = TestServer::start(
            Routes::new(commands.into_server())
                .add_service(nodes.into_server())
                .add_service(documents.into_server())
                .add_service(parameters.into_server())
                .add_service(notifications.into_server())
                .add_service(audit_service.into_server()),
        )
        .await;
        Harness {
            test_db,
            objects,
            wake,
            server,
            _root: root,
        }
    }

    fn req<T>(&self, who: &str, body: T) -> tonic::Request<T> {
        self.server.request(&caller(who), body)
    }

    fn commands(&self) -> CommandServiceClient<Channel> {
        CommandServiceClient::new(self.server.channel())
    }

    fn db(&self) -> &sea_orm::DatabaseConnection {
        &self.test_db.db
    }

    /// Registers `count` nodes of `platform` tagged `tags`; their ids, sorted.
    async fn nodes(&self, count: usize, platform: &str, tags: &[(&str, &str)]) -> Vec<String> {
        let mut client = NodeServiceClient::new(self.server.channel());
        let activation = client
            .create_activation(
                self.req(
                    ADMIN,
                    inv_pb::CreateActivationRequest {
                        description: "test".into(),
                        default_instance_name: "node".into(),
                        registration_limit: i32::try_from(count).unwrap(),
                        expiration_date: None,
                        tags: tags
                            .iter()
                            .map(|(key, value)| inv_pb::Tag {
                                key: (*key).into(),
                                value: (*value).into(),
                            })
                            .collect(),
                    },
                ),
            )
            .await
            .expect("create activation")
            .into_inner();
        let mut ids = Vec::new();
        for index in 0..count {
            let id = client
                .register_managed_instance(self.req(
                    NOBODY,
                    inv_pb::RegisterManagedInstanceRequest {
                        activation_id: activation.activation_id.clone(),
                        activation_code: activation.activation_code.clone(),
                        public_key: vec![7u8; 32],
                        facts: Some(HostFacts {
                            platform_type: platform.into(),
                            platform_name: "Test".into(),
                            platform_version: "1".into(),
                            hostname: format!("host-{index}"),
                            ip_addresses: vec!["10.0.0.1".into()],
                            agent_version: "0.1.0".into(),
                            architecture: "x86_64".into(),
                        }),
                    },
                ))
                .await
                .expect("register")
                .into_inner()
                .instance_id;
            ids.push(id);
        }
        ids.sort();
        ids
    }

    async fn deregister(&self, id: &str) {
        NodeServiceClient::new(self.server.channel())
            .deregister_managed_instance(self.req(
                ADMIN,
                inv_pb::DeregisterManagedInstanceRequest {
                    instance_id: id.into(),
                },
            ))
            .await
            .expect("deregister");
    }

    async fn document(&self, name: &str, content: &str) {
        DocumentServiceClient::new(self.server.channel())
            .create_document(self.req(
                ADMIN,
                doc_pb::CreateDocumentRequest {
                    content: content.into(),
                    name: name.into(),
                    document_type: doc_pb::DocumentType::Command as i32,
                    document_format: doc_pb::DocumentFormat::Json as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|status| panic!("create document {name}: {status:?}"));
    }

    async fn parameter(&self, name: &str, value: &str, secure: bool) {
        let parameter_type = if secure {
            param_pb::ParameterType::SecureString
        } else {
            param_pb::ParameterType::String
        };
        ParameterServiceClient::new(self.server.channel())
            .put_parameter(self.req(
                ADMIN,
                param_pb::PutParameterRequest {
                    name: name.into(),
                    value: value.into(),
                    r#type: parameter_type as i32,
                    ..Default::default()
                },
            ))
            .await
            .expect("put parameter");
    }

    async fn webhook(&self, url: &str) -> String {
        NotificationServiceClient::new(self.server.channel())
            .create_webhook(self.req(
                ADMIN,
                notif_pb::CreateWebhookRequest {
                    url: url.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create webhook")
            .into_inner()
            .webhook
            .expect("webhook")
            .webhook_id
    }

    async fn send(
        &self,
        who: &str,
        body: pb::SendCommandRequest,
    ) -> Result<pb::Command, tonic::Status> {
        self.commands()
            .send_command(self.req(who, body))
            .await
            .map(|response| response.into_inner().command.expect("command"))
    }

    async fn invocations(&self, command_id: &str) -> Vec<invocation::Model> {
        let mut rows = invocation::Entity::find()
            .filter(invocation::Column::CommandId.eq(command_id))
            .all(self.db())
            .await
            .expect("read invocations");
        rows.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        rows
    }

    async fn command_row(&self, command_id: &str) -> command::Model {
        command::Entity::find_by_id(command_id.to_owned())
            .one(self.db())
            .await
            .expect("read command")
            .expect("command row")
    }

    async fn audit_events(&self, action: &str) -> Vec<audit_pb::AuditEvent> {
        AuditServiceClient::new(self.server.channel())
            .list_audit_events(self.req(
                ADMIN,
                audit_pb::ListAuditEventsRequest {
                    action: action.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list audit events")
            .into_inner()
            .events
    }
}

fn shell(commands: &[&str]) -> HashMap<String, pb::ParameterValues> {
    HashMap::from([(
        "commands".to_owned(),
        pb::ParameterValues {
            values: commands.iter().map(|c| (*c).to_owned()).collect(),
        },
    )])
}

fn run_shell(ids: &[String]) -> pb::SendCommandRequest {
    pb::SendCommandRequest {
        document_name: "AWS-RunShellScript".into(),
        instance_ids: ids.to_vec(),
        parameters: shell(&["echo hi"]),
        ..Default::default()
    }
}

fn tag_target(key: &str, values: &[&str]) -> inv_pb::Target {
    inv_pb::Target {
        key: key.into(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn states(rows: &[invocation::Model]) -> Vec<String> {
    rows.iter().map(|row| row.state.clone()).collect()
}

fn plan_of(row: &command::Model) -> Plan {
    serde_json::from_str(&row.plan).expect("plan")
}

/// Every validation error names its field, the rule and the stable error name.
#[tokio::test]
async fn validation_errors_name_field_and_rule() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes(1, "Linux", &[]).await;
        let base = run_shell(&ids);
        type Edit = Box<dyn Fn(&mut pb::SendCommandRequest)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                Box::new(|r| r.document_name = "ab".into()),
                "document_name",
                "ValidationException",
            ),
            (
                Box::new(|r| r.document_name = "bad name!".into()),
                "document_name",
                "ValidationException",
            ),
            (
                Box::new(|r| r.document_version = "latest".into()),
                "document_version",
                "InvalidDocumentVersion",
            ),
            (
                Box::new(|r| r.document_hash_type = "Sha1".into()),
                "document_hash_type",
                "ValidationException",
            ),
            (
                Box::new(|r| r.document_hash = "xyz".into()),
                "document_hash",
                "ValidationException",
            ),
            (
                Box::new(|r| r.instance_ids = vec![]),
                "instance_ids",
                "ValidationException",
            ),
            (
                Box::new(|r| r.targets = vec![tag_target("tag:Env", &["dev"])]),
                "instance_ids",
                "ValidationException",
            ),
            (
                Box::new(|r| r.instance_ids = vec!["i-123".into()]),
                "instance_ids[0]",
                "InvalidInstanceId",
            ),
            (
                Box::new(|r| {
                    r.instance_ids = vec![r.instance_ids[0].clone(), r.instance_ids[0].clone()]
                }),
                "instance_ids[1]",
                "DuplicateInstanceId",
            ),
            (
                Box::new(|r| r.instance_ids = (0..51).map(|i| format!("mi-{i:017x}")).collect()),
                "instance_ids",
                "ValidationException",
            ),
            (
                Box::new(|r| {
                    r.instance_ids = vec![];
                    r.targets = vec![tag_target("tag:Env", &["dev"]); 6];
                }),
                "targets",
                "InvalidTarget",
            ),
            (
                Box::new(|r| {
                    r.instance_ids = vec![];
                    r.targets = vec![tag_target("Color", &["x"])];
                }),
                "targets[0].key",
                "InvalidTarget",
            ),
            (
                Box::new(|r| r.timeout_seconds = 29),
                "timeout_seconds",
                "ValidationException",
            ),
            (
                Box::new(|r| r.timeout_seconds = 2_592_001),
                "timeout_seconds",
                "ValidationException",
            ),
            (
                Box::new(|r| r.comment = "x".repeat(101)),
                "comment",
                "ValidationException",
            ),
            (
                Box::new(|r| r.max_concurrency = "0".into()),
                "max_concurrency",
                "ValidationException",
            ),
            (
                Box::new(|r| r.max_concurrency = "101%".into()),
                "max_concurrency",
                "ValidationException",
            ),
            (
                Box::new(|r| r.max_errors = "-1".into()),
                "max_errors",
                "ValidationException",
            ),
            (
                Box::new(|r| r.max_errors = "1.5".into()),
                "max_errors",
                "ValidationException",
            ),
            (
                Box::new(|r| r.output_s3_bucket_name = "my-bucket".into()),
                "output_s3_bucket_name",
                "InvalidOutputFolder",
            ),
            (
                Box::new(|r| r.output_s3_key_prefix = "a//b".into()),
                "output_s3_key_prefix",
                "InvalidOutputFolder",
            ),
            (
                Box::new(|r| r.output_s3_key_prefix = "p".repeat(501)),
                "output_s3_key_prefix",
                "InvalidOutputFolder",
            ),
            (
                Box::new(|r| {
                    r.notification_config = Some(pb::NotificationConfig {
                        notification_arn: "wh-nothing".into(),
                        ..Default::default()
                    })
                }),
                "notification_config.notification_arn",
                "InvalidNotificationConfig",
            ),
            (
                Box::new(|r| {
                    r.notification_config = Some(pb::NotificationConfig {
                        notification_arn: "wh-nothing".into(),
                        notification_events: vec!["Sometimes".into()],
                        ..Default::default()
                    })
                }),
                "notification_config.notification_events[0]",
                "InvalidNotificationConfig",
            ),
            (
                Box::new(|r| {
                    r.notification_config = Some(pb::NotificationConfig {
                        notification_arn: "wh-nothing".into(),
                        notification_type: "Node".into(),
                        ..Default::default()
                    })
                }),
                "notification_config.notification_type",
                "InvalidNotificationConfig",
            ),
            (
                Box::new(|r| r.document_hash = "ab".repeat(32)),
                "document_hash",
                "InvalidDocument",
            ),
        ];
        for (edit, field, reason) in cases {
            let mut body = base.clone();
            edit(&mut body);
            let status = assert_error(h.send(ADMIN, body).await, Code::InvalidArgument, reason);
            assert_eq!(violated_fields(&status), [field], "{status:?}");
            assert!(!status.message().is_empty());
        }
        // Nothing was stored.
        assert!(
            command::Entity::find()
                .all(h.db())
                .await
                .unwrap()
                .is_empty()
        );

        // A node id that never existed.
        let status = assert_error(
            h.send(ADMIN, run_shell(&["mi-0123456789abcdef0".to_owned()]))
                .await,
            Code::InvalidArgument,
            "InvalidInstanceId",
        );
        assert_eq!(violated_fields(&status), ["instance_ids[0]"]);
        // An unknown document.
        let mut body = run_shell(&ids);
        body.document_name = "No-Such-Document".into();
        let status = assert_error(
            h.send(ADMIN, body).await,
            Code::InvalidArgument,
            "InvalidDocument",
        );
        assert_eq!(violated_fields(&status), ["document_name"]);
        // A version that does not exist.
        let mut body = run_shell(&ids);
        body.document_version = "7".into();
        let status = assert_error(
            h.send(ADMIN, body).await,
            Code::InvalidArgument,
            "InvalidDocumentVersion",
        );
        assert_eq!(violated_fields(&status), ["document_version"]);
        // A document the caller may not see answers as a missing one.
        h.document(
            "Admins-Only",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[
            {"action":"aws:runShellScript","name":"s","inputs":{"runCommand":["id"]}}]}"#,
        )
        .await;
        let mut body = run_shell(&ids);
        body.document_name = "Admins-Only".into();
        body.parameters.clear();
        let status = assert_error(
            h.send(DEV, body).await,
            Code::InvalidArgument,
            "InvalidDocument",
        );
        assert_eq!(violated_fields(&status), ["document_name"]);
        // A webhook by URL and by id is accepted.
        let url = "https://hooks.example.com/bosun";
        let webhook_id = h.webhook(url).await;
        for arn in [url.to_owned(), webhook_id.clone()] {
            let mut body = run_shell(&ids);
            body.notification_config = Some(pb::NotificationConfig {
                notification_arn: arn,
                notification_events: vec!["Success".into(), "Failed".into()],
                notification_type: "Invocation".into(),
            });
            let command = h.send(ADMIN, body).await.expect("send with a webhook");
            let config = command.notification_config.expect("notification echoed");
            assert_eq!(config.notification_events, ["Success", "Failed"]);
            let row = h.command_row(&command.command_id).await;
            assert!(
                row.notification.contains(&webhook_id),
                "{}",
                row.notification
            );
        }
    }
}

#[tokio::test]
async fn parameters_are_checked_against_the_document() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes(1, "Linux", &[]).await;
        h.document(
            "Pick-Color",
            r#"{"schemaVersion":"2.2","description":"d","parameters":{
                "color":{"type":"String","allowedValues":["red","blue"]},
                "count":{"type":"String","default":"1","allowedPattern":"^[0-9]+$"}},
              "mainSteps":[{"action":"aws:runShellScript","name":"paint",
                "inputs":{"runCommand":["echo {{ color }} {{ count }}"]}}]}"#,
        )
        .await;
        let mut missing = run_shell(&ids);
        missing.parameters.clear();
        let status = assert_error(
            h.send(ADMIN, missing).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.commands"]);

        let send = |color: &str, count: &str, extra: Option<&str>| {
            let mut parameters = HashMap::from([
                (
                    "color".to_owned(),
                    pb::ParameterValues {
                        values: vec![color.into()],
                    },
                ),
                (
                    "count".to_owned(),
                    pb::ParameterValues {
                        values: vec![count.into()],
                    },
                ),
            ]);
            if let Some(extra) = extra {
                parameters.insert(
                    extra.into(),
                    pb::ParameterValues {
                        values: vec!["x".into()],
                    },
                );
            }
            pb::SendCommandRequest {
                document_name: "Pick-Color".into(),
                instance_ids: ids.clone(),
                parameters,
                ..Default::default()
            }
        };
        let status = assert_error(
            h.send(ADMIN, send("green", "2", None)).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.color"]);
        let status = assert_error(
            h.send(ADMIN, send("red", "two", None)).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.count"]);
        let status = assert_error(
            h.send(ADMIN, send("red", "2", Some("size"))).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.size"]);

        let command = h
            .send(ADMIN, send("red", "2", None))
            .await
            .expect("valid parameters");
        let row = h.command_row(&command.command_id).await;
        let plan = plan_of(&row);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.steps[0].inputs.run_command, ["echo red 2"]);
        assert_eq!(plan.execution_timeout_seconds, 3600);
        // The stored parameters are the requested ones.
        assert!(
            row.parameters.contains("\"color\":[\"red\"]"),
            "{}",
            row.parameters
        );

        // executionTimeout of AWS-RunShellScript sets the plan's timeout and the expiry.
        let mut body = run_shell(&ids);
        body.parameters.insert(
            "executionTimeout".into(),
            pb::ParameterValues {
                values: vec!["120".into()],
            },
        );
        body.timeout_seconds = 60;
        let command = h.send(ADMIN, body).await.expect("send");
        let row = h.command_row(&command.command_id).await;
        assert_eq!(row.execution_timeout_seconds, 120);
        assert_eq!((row.expires_at - row.requested_at).num_seconds(), 180);
        assert_eq!(plan_of(&row).steps[0].name, "0.aws:runShellScript");
        let mut body = run_shell(&ids);
        body.parameters.insert(
            "executionTimeout".into(),
            pb::ParameterValues {
                values: vec!["forever".into()],
            },
        );
        let status = assert_error(
            h.send(ADMIN, body).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.executionTimeout"]);
    }
}

/// `{{ssm:…}}` is read with the caller's rights; a reference the caller may not read, that
/// does not exist or that is a SecureString is InvalidParameters naming where it sits.
#[tokio::test]
async fn ssm_references_resolve_with_the_callers_rights() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes(1, "Linux", &[("Env", "dev")]).await;
        h.parameter("/app/greeting", "hello", false).await;
        h.parameter("/app/secret", "s3cret", true).await;
        let mut body = run_shell(&ids);
        body.parameters = shell(&["echo {{ssm:/app/greeting}}"]);
        let command = h
            .send(ADMIN, body.clone())
            .await
            .expect("admin may read the parameter");
        let row = h.command_row(&command.command_id).await;
        assert_eq!(plan_of(&row).steps[0].inputs.run_command, ["echo hello"]);
        // The stored parameters keep the reference, not the value.
        assert!(row.parameters.contains("{{ssm:/app/greeting}}"));

        // DEV may not read parameters.
        let status = assert_error(
            h.send(DEV, body).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.commands"]);
        assert!(status.message().contains("access denied"), "{status:?}");

        let mut body = run_shell(&ids);
        body.parameters = shell(&["echo {{ssm:/app/secret}}"]);
        let status = assert_error(
            h.send(ADMIN, body).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert!(status.message().contains("secure string"), "{status:?}");

        let mut body = run_shell(&ids);
        body.parameters = shell(&["echo {{ssm:/app/missing}}"]);
        let status = assert_error(
            h.send(ADMIN, body).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert!(status.message().contains("not found"), "{status:?}");

        // A reference in the document itself.
        h.document(
            "Greet",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[{"action":"aws:runShellScript",
                "name":"greet","inputs":{"runCommand":["echo {{ssm:/app/greeting}}"]}}]}"#,
        )
        .await;
        let command = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "Greet".into(),
                    instance_ids: ids.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("send");
        let row = h.command_row(&command.command_id).await;
        assert_eq!(plan_of(&row).steps[0].inputs.run_command, ["echo hello"]);
    }
}

#[tokio::test]
async fn nodes_are_authorized_one_by_one() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let dev = h.nodes(2, "Linux", &[("Env", "dev")]).await;
        let prod = h.nodes(2, "Linux", &[("Env", "prod")]).await;
        let body = pb::SendCommandRequest {
            document_name: "AWS-RunShellScript".into(),
            targets: vec![tag_target("tag:Env", &["dev", "prod"])],
            parameters: shell(&["uptime"]),
            comment: "check".into(),
            ..Default::default()
        };
        let command = h.send(DEV, body).await.expect("some nodes allowed");
        assert_eq!(command.target_count, 4);
        assert_eq!(command.completed_count, 2);
        assert_eq!(command.status, "Pending");
        assert_eq!(command.requested_by, DEV);
        assert_eq!(command.document_version, "1");
        let rows = h.invocations(&command.command_id).await;
        for row in &rows {
            let expected = if dev.contains(&row.node_id) {
                "Pending"
            } else {
                "AccessDenied"
            };
            assert_eq!(row.state, expected, "{}", row.node_id);
            assert!(prod.contains(&row.node_id) || dev.contains(&row.node_id));
        }
        let row = h.command_row(&command.command_id).await;
        assert_eq!(row.concurrency_limit, 50);
        assert_eq!(row.error_limit, 0);
        // An event for the initial state was staged.
        let outbox = bosun_commands::entities::event_outbox::Entity::find()
            .all(h.db())
            .await
            .unwrap();
        assert!(
            outbox
                .iter()
                .any(|event| event.payload.contains(&command.command_id)
                    && event.payload.contains("CommandStatusChange"))
        );

        // Only prod nodes: denied, audited.
        let body = pb::SendCommandRequest {
            document_name: "AWS-RunShellScript".into(),
            targets: vec![tag_target("tag:Env", &["prod"])],
            parameters: shell(&["uptime"]),
            ..Default::default()
        };
        assert_eq!(
            h.send(DEV, body).await.expect_err("denied").code(),
            Code::PermissionDenied
        );
        let events = h.audit_events("commands:SendCommand").await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            events
                .iter()
                .any(|event| event.principal == DEV && event.error_code == "PermissionDenied")
        );
        assert!(events.iter().any(|event| event.error_code.is_empty()
            && event.resource == format!("command:{}", command.command_id)));
        // Parameter values are never audited.
        assert!(
            events.iter().all(|event| !event.details.contains("uptime")),
            "{events:?}"
        );

        // Nobody may run anything.
        assert_eq!(
            h.send(NOBODY, run_shell(&dev))
                .await
                .expect_err("denied")
                .code(),
            Code::PermissionDenied
        );
    }
}

#[tokio::test]
async fn platforms_targets_and_terminal_commands() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let linux = h.nodes(2, "Linux", &[("Role", "web")]).await;
        let windows = h.nodes(1, "Windows", &[("Role", "web")]).await;
        h.document(
            "Two-Platforms",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[
              {"action":"aws:runShellScript","name":"unix","precondition":{"StringEquals":["platformType","Linux"]},
               "inputs":{"runCommand":["uname"]}},
              {"action":"aws:runPowerShellScript","name":"win","precondition":{"StringEquals":["platformType","Windows"]},
               "inputs":{"runCommand":["ver"],"timeoutSeconds":"30"}},
              {"action":"aws:runShellScript","name":"all","inputs":{"runCommand":["date"],"workingDirectory":"/tmp"}}]}"#,
        )
        .await;
        h.document(
            "Windows-Only",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[
              {"action":"aws:runPowerShellScript","name":"win","precondition":{"StringEquals":["platformType","Windows"]},
               "inputs":{"runCommand":["ver"]}}]}"#,
        )
        .await;
        let command = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "Two-Platforms".into(),
                    targets: vec![tag_target("tag:Role", &["web"])],
                    max_concurrency: "10%".into(),
                    max_errors: "50%".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("send");
        let rows = h.invocations(&command.command_id).await;
        for row in &rows {
            let expected = if windows.contains(&row.node_id) {
                "1,2"
            } else {
                "0,2"
            };
            assert_eq!(row.steps, expected);
            assert_eq!(row.state, "Pending");
        }
        let row = h.command_row(&command.command_id).await;
        assert_eq!((row.concurrency_limit, row.error_limit), (1, 1));
        let plan = plan_of(&row);
        assert_eq!(plan.steps[0].platform.as_deref(), Some("Linux"));
        assert_eq!(plan.steps[1].inputs.timeout_seconds, Some(30));
        assert_eq!(plan.steps[2].platform, None);
        assert_eq!(
            plan.steps[2].inputs.working_directory.as_deref(),
            Some("/tmp")
        );

        // Linux nodes only: every invocation InvalidPlatform, the command ends at once.
        let command = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "Windows-Only".into(),
                    instance_ids: linux.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(command.status, "Failed");
        assert_eq!(command.completed_count, 2);
        assert_eq!(
            states(&h.invocations(&command.command_id).await),
            ["InvalidPlatform"; 2]
        );
        assert!(
            h.command_row(&command.command_id)
                .await
                .finished_at
                .is_some()
        );

        // A deregistered node is Undeliverable; the others run.
        h.deregister(&linux[0]).await;
        let command = h.send(ADMIN, run_shell(&linux)).await.expect("send");
        let rows = h.invocations(&command.command_id).await;
        assert_eq!(states(&rows), ["Undeliverable", "Pending"]);
        assert!(rows[0].ended_at.is_some() && rows[1].ended_at.is_none());
        assert!(
            rows[1].node_name.starts_with("host-"),
            "{}",
            rows[1].node_name
        );
        assert_eq!(rows[1].platform_type, "Linux");
        assert_eq!(command.completed_count, 1);
        assert_eq!(command.status, "Pending");

        // Targets matching nothing.
        let command = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "AWS-RunShellScript".into(),
                    targets: vec![tag_target("tag:Role", &["db"])],
                    parameters: shell(&["true"]),
                    ..Default::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(command.status_details, "No Instances In Tag");
        assert_eq!(command.target_count, 0);
        assert!(h.invocations(&command.command_id).await.is_empty());
    }
}

#[tokio::test]
async fn run_document_steps_expand_on_the_server() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes(1, "Linux", &[]).await;
        h.document(
            "Inner",
            r#"{"schemaVersion":"2.2","description":"d","parameters":{"who":{"type":"String"}},
              "mainSteps":[{"action":"aws:runShellScript","name":"hello","inputs":{"runCommand":["echo {{ who }}"]}},
                           {"action":"aws:runShellScript","name":"bye","inputs":{"runCommand":["echo bye"]}}]}"#,
        )
        .await;
        h.document(
            "Outer",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[
              {"action":"aws:runShellScript","name":"first","inputs":{"runCommand":["echo first"]}},
              {"action":"aws:runDocument","name":"nested","inputs":{"documentType":"SSMDocument",
                 "documentPath":"Inner","documentParameters":{"who":"world"}}}]}"#,
        )
        .await;
        let command = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "Outer".into(),
                    instance_ids: ids.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("send");
        let plan = plan_of(&h.command_row(&command.command_id).await);
        let names: Vec<&str> = plan.steps.iter().map(|step| step.name.as_str()).collect();
        assert_eq!(names, ["first", "nested.hello", "nested.bye"]);
        assert_eq!(plan.steps[1].inputs.run_command, ["echo world"]);
        assert_eq!(h.invocations(&command.command_id).await[0].steps, "0,1,2");

        // Through the built-in AWS-RunDocument, with a bad nested parameter.
        let body = |parameters: &str| pb::SendCommandRequest {
            document_name: "AWS-RunDocument".into(),
            instance_ids: ids.clone(),
            parameters: HashMap::from([
                (
                    "documentPath".to_owned(),
                    pb::ParameterValues {
                        values: vec!["Inner".into()],
                    },
                ),
                (
                    "documentParameters".to_owned(),
                    pb::ParameterValues {
                        values: vec![parameters.into()],
                    },
                ),
            ]),
            ..Default::default()
        };
        let command = h.send(ADMIN, body(r#"{"who":"you"}"#)).await.expect("send");
        let plan = plan_of(&h.command_row(&command.command_id).await);
        assert_eq!(plan.steps[0].name, "runDocument.hello");
        assert_eq!(plan.steps[0].inputs.run_command, ["echo you"]);
        let status = assert_error(
            h.send(ADMIN, body("{}")).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["runDocument.parameters.who"]);

        // Cycles and LocalPath are refused.
        h.document(
            "Loop-A",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[{"action":"aws:runDocument","name":"a",
               "inputs":{"documentType":"SSMDocument","documentPath":"Loop-B"}}]}"#,
        )
        .await;
        h.document(
            "Loop-B",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[{"action":"aws:runDocument","name":"b",
               "inputs":{"documentType":"SSMDocument","documentPath":"Loop-A"}}]}"#,
        )
        .await;
        h.document(
            "Local",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[{"action":"aws:runDocument","name":"l",
               "inputs":{"documentType":"LocalPath","documentPath":"/tmp/doc.json"}}]}"#,
        )
        .await;
        for (name, words) in [("Loop-A", "cycle"), ("Local", "not supported")] {
            let status = assert_error(
                h.send(
                    ADMIN,
                    pb::SendCommandRequest {
                        document_name: name.into(),
                        instance_ids: ids.clone(),
                        ..Default::default()
                    },
                )
                .await,
                Code::InvalidArgument,
                "InvalidDocument",
            );
            assert!(status.message().contains(words), "{status:?}");
        }
    }
}

/// Stores a finished result for an invocation, as the engine would.
async fn finish(
    h: &Harness,
    command_id: &str,
    node_id: &str,
    plugins: serde_json::Value,
    stored: bool,
) {
    let row = invocation::Entity::find_by_id((command_id.to_owned(), node_id.to_owned()))
        .one(h.db())
        .await
        .unwrap()
        .unwrap();
    let mut active: invocation::ActiveModel = row.into();
    active.state = Set(InvocationState::Success.as_str().into());
    active.plugins = Set(plugins.to_string());
    active.response_code = Set(0);
    active.output_state = Set(if stored { "Stored" } else { "Pending" }.into());
    invocation::Entity::update(active)
        .exec(h.db())
        .await
        .unwrap();
}

fn plugin(step: &str, stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "aws:runShellScript", "step": step, "status": "Success", "response_code": 0,
        "stdout": stdout, "stderr": stderr, "stdout_truncated": false, "stderr_truncated": false,
        "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:01.234Z"
    })
}

#[tokio::test]
async fn lists_and_gets_page_and_filter() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes(3, "Linux", &[]).await;
        let mut sent = Vec::new();
        for index in 0..3 {
            let mut body = run_shell(&ids[..index + 1]);
            body.comment = format!("c{index}");
            sent.push(h.send(ADMIN, body).await.expect("send").command_id);
        }
        let list = |body: pb::ListCommandsRequest| {
            let h = &h;
            async move { h.commands().list_commands(h.req(ADMIN, body)).await }
        };
        let page = list(pb::ListCommandsRequest {
            max_results: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
        let first: Vec<String> = page.commands.iter().map(|c| c.command_id.clone()).collect();
        assert_eq!(first, [sent[2].clone(), sent[1].clone()], "newest first");
        assert!(!page.next_token.is_empty());
        let rest = list(pb::ListCommandsRequest {
            max_results: 2,
            next_token: page.next_token,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
        assert_eq!(rest.commands.len(), 1);
        assert_eq!(rest.commands[0].command_id, sent[0]);
        assert!(rest.next_token.is_empty());

        let on_node = list(pb::ListCommandsRequest {
            instance_id: ids[2].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert_eq!(on_node.commands.len(), 1);
        let filter = |key: &str, value: &str| pb::CommandFilter {
            key: key.into(),
            value: value.into(),
        };
        let by_filters = list(pb::ListCommandsRequest {
            filters: vec![
                filter("DocumentName", "Bosun-RunShellScript"),
                filter("ExecutionStage", "Executing"),
                filter("Status", "Pending"),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert_eq!(by_filters.commands.len(), 3);
        let complete = list(pb::ListCommandsRequest {
            filters: vec![filter("ExecutionStage", "Complete")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(complete.commands.is_empty());
        let future = list(pb::ListCommandsRequest {
            filters: vec![filter("InvokedAfter", "2999-01-01T00:00:00Z")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(future.commands.is_empty());
        let status = assert_error(
            list(pb::ListCommandsRequest {
                filters: vec![filter("Color", "red")],
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "InvalidFilterKey",
        );
        assert_eq!(violated_fields(&status), ["filters[0].key"]);
        assert_error(
            list(pb::ListCommandsRequest {
                next_token: "garbage".into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "InvalidNextToken",
        );
        assert_error(
            list(pb::ListCommandsRequest {
                command_id: "0b5c4a44-3d0e-4a1e-9d9a-4d5e6f708192".into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
            "InvalidCommandId",
        );
        assert_eq!(
            h.commands()
                .list_commands(h.req(NOBODY, pb::ListCommandsRequest::default()))
                .await
                .expect_err("denied")
                .code(),
            Code::PermissionDenied
        );

        // Invocations: 1 + 2 + 3, newest command first, then node id; paged by 4.
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = h
                .commands()
                .list_command_invocations(h.req(
                    ADMIN,
                    pb::ListCommandInvocationsRequest {
                        max_results: 4,
                        next_token: token.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("list invocations")
                .into_inner();
            all.extend(
                page.command_invocations
                    .into_iter()
                    .map(|i| (i.command_id, i.instance_id)),
            );
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        let expected: Vec<(String, String)> = [(2, 3), (1, 2), (0, 1)]
            .iter()
            .flat_map(|(c, n)| ids[..*n].iter().map(|id| (sent[*c].clone(), id.clone())))
            .collect();
        assert_eq!(all, expected);

        // A finished invocation with details and GetCommandInvocation.
        let long = "x".repeat(30_000);
        finish(
            &h,
            &sent[0],
            &ids[0],
            serde_json::json!([plugin("0.aws:runShellScript", &long, "oops")]),
            true,
        )
        .await;
        let listed = h
            .commands()
            .list_command_invocations(h.req(
                ADMIN,
                pb::ListCommandInvocationsRequest {
                    command_id: sent[0].clone(),
                    details: true,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .command_invocations;
        assert_eq!(listed.len(), 1);
        let invocation = &listed[0];
        assert_eq!(
            (
                invocation.status.as_str(),
                invocation.status_details.as_str()
            ),
            ("Success", "Success")
        );
        assert_eq!(invocation.trace_output.chars().count(), 2500);
        let plugins = &invocation.command_plugins;
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0].name, "0.aws:runShellScript");
        assert_eq!(plugins[0].plugin, "aws:runShellScript");
        assert_eq!(plugins[0].output.chars().count(), 2500);
        assert!(
            plugins[0].standard_output_url.starts_with("file://"),
            "{:?}",
            plugins[0]
        );
        assert!(plugins[0].standard_output_url.ends_with(&format!(
            "commands/{}/{}/0.aws:runShellScript/stdout",
            sent[0], ids[0]
        )));

        let get = |command_id: &str, node: &str, plugin: &str| {
            let body = pb::GetCommandInvocationRequest {
                command_id: command_id.into(),
                instance_id: node.into(),
                plugin_name: plugin.into(),
            };
            let h = &h;
            async move {
                h.commands()
                    .get_command_invocation(h.req(ADMIN, body))
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let got = get(&sent[0], &ids[0], "").await.expect("get");
        assert_eq!(got.standard_output_content.len(), 24_000);
        assert!(got.standard_output_truncated);
        assert_eq!(got.standard_error_content, "oops");
        assert_eq!(got.response_code, 0);
        assert_eq!(got.execution_start_date_time, "2026-01-01T00:00:00.000Z");
        assert_eq!(got.execution_elapsed_time, "PT1.234S");
        assert_eq!(got.plugin_name, "0.aws:runShellScript");
        let pending = get(&sent[1], &ids[0], "").await.expect("get pending");
        assert_eq!(
            (pending.response_code, pending.status.as_str()),
            (-1, "Pending")
        );
        assert!(pending.standard_output_url.is_empty());
        assert_error(
            get(&sent[0], &ids[2], "").await,
            Code::NotFound,
            "InvocationDoesNotExist",
        );
        assert_error(
            get(&sent[0], &ids[0], "nope").await,
            Code::NotFound,
            "InvalidPluginName",
        );

        // Several steps: plugin_name is required.
        h.document(
            "Two-Steps",
            r#"{"schemaVersion":"2.2","description":"d","mainSteps":[
              {"action":"aws:runShellScript","name":"a","inputs":{"runCommand":["echo a"]}},
              {"action":"aws:runShellScript","name":"b","inputs":{"runCommand":["echo b"]}}]}"#,
        )
        .await;
        let two = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "Two-Steps".into(),
                    instance_ids: vec![ids[0].clone()],
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .command_id;
        finish(
            &h,
            &two,
            &ids[0],
            serde_json::json!([plugin("a", "A", ""), plugin("b", "B", "")]),
            false,
        )
        .await;
        assert_error(
            get(&two, &ids[0], "").await,
            Code::NotFound,
            "InvalidPluginName",
        );
        assert_eq!(
            get(&two, &ids[0], "b")
                .await
                .unwrap()
                .standard_output_content,
            "B"
        );

        // Output while it streams (chunks), then from the object store.
        for (offset, data) in [(0i64, "hello "), (6, "world")] {
            output_chunk::Entity::insert(output_chunk::ActiveModel {
                command_id: Set(two.clone()),
                node_id: Set(ids[0].clone()),
                plugin_index: Set(1),
                stream: Set("stdout".into()),
                offset: Set(offset),
                data: Set(data.as_bytes().to_vec()),
                created_at: Set(chrono::Utc::now()),
            })
            .exec_without_returning(h.db())
            .await
            .unwrap();
        }
        let read = |offset: u64| {
            let h = &h;
            let two = two.clone();
            let node = ids[0].clone();
            async move {
                let mut stream = h
                    .commands()
                    .get_command_output(h.req(
                        ADMIN,
                        pb::GetCommandOutputRequest {
                            command_id: two,
                            instance_id: node,
                            plugin_name: "b".into(),
                            offset,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("output")
                    .into_inner();
                let mut data = Vec::new();
                let mut ended = false;
                while let Some(message) = stream.next().await {
                    let message = message.expect("message");
                    data.extend(message.data);
                    ended |= message.end;
                }
                (String::from_utf8(data).unwrap(), ended)
            }
        };
        assert_eq!(read(0).await, ("hello world".to_owned(), false));
        assert_eq!(read(8).await, ("rld".to_owned(), false));
        let key = bosun_commands::model::output_key("commands", &two, &ids[0], "b", "stdout");
        h.objects
            .put(&key, bytes::Bytes::from_static(b"hello world, stored"))
            .await
            .unwrap();
        finish(
            &h,
            &two,
            &ids[0],
            serde_json::json!([plugin("a", "A", ""), plugin("b", "B", "")]),
            true,
        )
        .await;
        assert_eq!(read(6).await, ("world, stored".to_owned(), true));
    }
}

#[tokio::test]
async fn cancel_marks_rows_and_is_audited() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let ids = h.nodes(3, "Linux", &[]).await;
        let command = h.send(ADMIN, run_shell(&ids)).await.expect("send");
        finish(
            &h,
            &command.command_id,
            &ids[0],
            serde_json::json!([]),
            false,
        )
        .await;
        let cancel = |who: &str, command_id: &str, nodes: Vec<String>| {
            let body = pb::CancelCommandRequest {
                command_id: command_id.into(),
                instance_ids: nodes,
            };
            let request = h.req(who, body);
            let h = &h;
            async move { h.commands().cancel_command(request).await }
        };
        assert_eq!(
            cancel(NOBODY, &command.command_id, vec![])
                .await
                .expect_err("denied")
                .code(),
            Code::PermissionDenied
        );
        assert_error(
            cancel(
                ADMIN,
                &command.command_id,
                vec!["mi-0123456789abcdef0".into()],
            )
            .await,
            Code::InvalidArgument,
            "InvalidInstanceId",
        );
        assert_error(
            cancel(ADMIN, &uuid::Uuid::new_v4().to_string(), vec![]).await,
            Code::NotFound,
            "InvalidCommandId",
        );
        assert_error(
            cancel(ADMIN, "nope", vec![]).await,
            Code::InvalidArgument,
            "InvalidCommandId",
        );

        let woken = h.wake.notified();
        cancel(ADMIN, &command.command_id, vec![ids[1].clone()])
            .await
            .expect("cancel one node");
        tokio::time::timeout(std::time::Duration::from_secs(1), woken)
            .await
            .expect("engine woken");
        let rows = h.invocations(&command.command_id).await;
        let flags: Vec<bool> = rows.iter().map(|row| row.cancel_requested).collect();
        assert_eq!(flags, [false, true, false]);
        let row = h.command_row(&command.command_id).await;
        assert!(row.cancel_requested);
        assert_eq!(row.state, "Cancelling");

        cancel(ADMIN, &command.command_id, vec![])
            .await
            .expect("cancel all, idempotent");
        let flags: Vec<bool> = h
            .invocations(&command.command_id)
            .await
            .iter()
            .map(|row| row.cancel_requested)
            .collect();
        assert_eq!(
            flags,
            [false, true, true],
            "a finished invocation keeps its result"
        );

        // An ended command.
        let ended = h
            .send(
                ADMIN,
                pb::SendCommandRequest {
                    document_name: "AWS-RunShellScript".into(),
                    targets: vec![tag_target("tag:None", &["x"])],
                    parameters: shell(&["true"]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_error(
            cancel(ADMIN, &ended.command_id, vec![]).await,
            Code::FailedPrecondition,
            "DuplicateCommand",
        );

        let events = h.audit_events("commands:CancelCommand").await;
        assert!(
            events
                .iter()
                .any(|event| event.principal == NOBODY && event.error_code == "PermissionDenied")
        );
        assert_eq!(
            events
                .iter()
                .filter(|event| event.error_code.is_empty())
                .count(),
            2
        );
    }
}

/// 10,000 invocations insert in well under a second (PostgreSQL).
#[tokio::test]
async fn ten_thousand_nodes_send_quickly() {
    let test_db = bosun_store::testing::postgres().await;
    let h = Harness::start(test_db).await;
    // Nodes straight into the inventory tables: registering 10,000 through the RPC is slow.
    use sea_orm::ConnectionTrait;
    let now = chrono::Utc::now().to_rfc3339();
    for batch in 0..10 {
        let mut nodes = Vec::new();
        let mut tags = Vec::new();
        for index in 0..1000 {
            let id = format!("mi-{:017x}", batch * 1000 + index);
            nodes.push(format!(
                "('{id}', 'act', 'n', '\\x00'::bytea, '{now}', NULL, NULL, '1', 'Linux', 'L', '1', 'h', '[]', 'x86_64')"
            ));
            tags.push(format!("('{id}', 'Fleet', 'big')"));
        }
        h.db()
            .execute_unprepared(&format!(
                "INSERT INTO nodes (id, activation_id, name, public_key, registered_at, deregistered_at, last_ping_at, agent_version, platform_type, platform_name, platform_version, hostname, ip_addresses, architecture) VALUES {}",
                nodes.join(",")
            ))
            .await
            .expect("insert nodes");
        h.db()
            .execute_unprepared(&format!(
                "INSERT INTO node_tags (node_id, key, value) VALUES {}",
                tags.join(",")
            ))
            .await
            .expect("insert tags");
    }
    let started = std::time::Instant::now();
    let command = h
        .send(
            ADMIN,
            pb::SendCommandRequest {
                document_name: "AWS-RunShellScript".into(),
                targets: vec![tag_target("tag:Fleet", &["big"])],
                parameters: shell(&["true"]),
                max_concurrency: "100%".into(),
                ..Default::default()
            },
        )
        .await
        .expect("send");
    let took = started.elapsed();
    assert_eq!(command.target_count, 10_000);
    let row = h.command_row(&command.command_id).await;
    assert_eq!(row.concurrency_limit, 10_000);
    let rows = h.invocations(&command.command_id).await;
    assert_eq!(rows.len(), 10_000);
    assert!(rows.iter().all(|row| row.state == "Pending"
        && row.steps == "0"
        && row.ended_at.is_none()
        && row.plugins == "[]"
        && row.output_state == "None"
        && row.response_code == -1));
    let mut seqs: Vec<i32> = rows.iter().map(|row| row.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..10_000).collect::<Vec<_>>());
    eprintln!("SendCommand to 10,000 nodes took {took:?}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
}

/// With `follow`, GetCommandOutput stays open until the output is stored, then ends.
#[tokio::test]
async fn output_follow_ends_once_stored() {
    let h = Harness::start(bosun_store::testing::sqlite().await).await;
    let ids = h.nodes(1, "Linux", &[]).await;
    let command = h.send(ADMIN, run_shell(&ids)).await.expect("send");
    let step = "0.aws:runShellScript";
    let mut stream = h
        .commands()
        .get_command_output(h.req(
            ADMIN,
            pb::GetCommandOutputRequest {
                command_id: command.command_id.clone(),
                instance_id: ids[0].clone(),
                follow: true,
                ..Default::default()
            },
        ))
        .await
        .expect("output")
        .into_inner();
    output_chunk::Entity::insert(output_chunk::ActiveModel {
        command_id: Set(command.command_id.clone()),
        node_id: Set(ids[0].clone()),
        plugin_index: Set(0),
        stream: Set("stdout".into()),
        offset: Set(0),
        data: Set(b"abc".to_vec()),
        created_at: Set(chrono::Utc::now()),
    })
    .exec_without_returning(h.db())
    .await
    .unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("a chunk arrives")
        .expect("a message")
        .expect("ok");
    assert_eq!(
        (first.data.as_slice(), first.offset, first.end),
        (&b"abc"[..], 0, false)
    );
    let key =
        bosun_commands::model::output_key("commands", &command.command_id, &ids[0], step, "stdout");
    h.objects
        .put(&key, bytes::Bytes::from_static(b"abcdef"))
        .await
        .unwrap();
    finish(
        &h,
        &command.command_id,
        &ids[0],
        serde_json::json!([plugin(step, "abcdef", "")]),
        true,
    )
    .await;
    let last = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("the rest arrives")
        .expect("a message")
        .expect("ok");
    assert_eq!(
        (last.data.as_slice(), last.offset, last.end),
        (&b"def"[..], 3, true)
    );
    assert_eq!(last.status_details, "Success");
    assert!(stream.next().await.is_none(), "the stream ends");
}
