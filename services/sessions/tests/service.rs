//! SessionService RPCs through `TestServer` on SQLite and PostgreSQL, with `Ports::local` over
//! the real documents and inventory crates, a `NodeLink` whose presence says which nodes have
//! a live agent stream, and the `SessionStore` / `Reaper` the broker and the sessions
//! replicas use.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_commands::Ports;
use bosun_core::ApiError;
use bosun_nodelink::{MemoryPresence, NodeControl, NodeLink, Presence};
use bosun_objects::{ObjectStoreConfig, Objects};
use bosun_proto::agent::v1::HostFacts;
use bosun_proto::agent::v1::close::Reason;
use bosun_proto::audit::v1 as audit_pb;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::documents::v1 as doc_pb;
use bosun_proto::documents::v1::document_service_client::DocumentServiceClient;
use bosun_proto::inventory::v1 as inv_pb;
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::sessions::v1 as pb;
use bosun_proto::sessions::v1::session_service_client::SessionServiceClient;
use bosun_queue::{MemoryQueue, QueueOptions};
use bosun_session::wire;
use bosun_sessions::entities::session;
use bosun_sessions::store::SessionEnd;
use bosun_sessions::transcript::TranscriptWriter;
use bosun_sessions::{Reaper, SessionServiceImpl, SessionStatus, SessionStore, SessionsConfig};
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer, assert_error, violated_fields};
use futures::StreamExt;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel};
use tonic::Code;
use tonic::service::Routes;
use tonic::transport::Channel;

const ADMIN: &str = "user/admin";
/// ALLOW_ALL plus `sessions:RunAs` on `runas:root` by name.
const ROOT_ADMIN: &str = "user/rootadmin";
/// May start only Bosun-StartInteractiveCommand, on any node.
const COMMANDS_ONLY: &str = "user/cmd";
/// May start any document on any node, as the document's user; resume and terminate its
/// sessions; no DescribeSessions on others.
const BOB: &str = "user/bob";
/// May start sessions on nodes tagged Env=dev only.
const DEV: &str = "user/dev";
/// Explicitly denied DescribeSessions.
const DENIED: &str = "user/denied";
const NOBODY: &str = "user/nobody";

const ROOT_POLICY: &str =
    r#"{"Statement": {"Effect": "Allow", "Action": "sessions:RunAs", "Resource": "runas:root"}}"#;
const COMMANDS_ONLY_POLICY: &str = r#"{"Statement": [
  {"Effect": "Allow", "Action": "documents:GetDocument", "Resource": "document:*"},
  {"Effect": "Allow", "Action": "sessions:StartSession",
   "Resource": ["node:*", "document:Bosun-StartInteractiveCommand"]}
]}"#;
const BOB_POLICY: &str = r#"{"Statement": [
  {"Effect": "Allow", "Action": "documents:GetDocument", "Resource": "document:*"},
  {"Effect": "Allow", "Action": "sessions:StartSession", "Resource": ["node:*", "document:*"]},
  {"Effect": "Allow", "Action": ["sessions:ResumeSession", "sessions:TerminateSession"],
   "Resource": "session:bob-*"}
]}"#;
const DEV_POLICY: &str = r#"{"Statement": [
  {"Effect": "Allow", "Action": "documents:GetDocument", "Resource": "document:*"},
  {"Effect": "Allow", "Action": "sessions:StartSession", "Resource": "document:*"},
  {"Effect": "Allow", "Action": "sessions:StartSession", "Resource": "node:*",
   "Condition": {"StringEquals": {"bosun:ResourceTag/Env": "dev"}}}
]}"#;
const DENIED_POLICY: &str = r#"{"Statement": [
  {"Effect": "Allow", "Action": "*", "Resource": "*"},
  {"Effect": "Deny", "Action": "sessions:DescribeSessions", "Resource": "*"}
]}"#;

fn caller(who: &str) -> Caller {
    let caller = Caller::new(who);
    match who {
        ADMIN => caller.policy(ALLOW_ALL),
        ROOT_ADMIN => caller.policy(ALLOW_ALL).policy(ROOT_POLICY),
        COMMANDS_ONLY => caller.policy(COMMANDS_ONLY_POLICY),
        BOB => caller.policy(BOB_POLICY),
        DEV => caller.policy(DEV_POLICY),
        DENIED => caller.policy(DENIED_POLICY),
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

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Harness {
    test_db: TestDatabase,
    objects: Arc<Objects>,
    presence: Arc<MemoryPresence>,
    link: NodeLink,
    store: SessionStore,
    config: SessionsConfig,
    server: TestServer,
    _root: TempDir,
}

impl Harness {
    async fn open(test_db: TestDatabase) -> Harness {
        Self::with_config(test_db, SessionsConfig::default()).await
    }

    async fn with_config(test_db: TestDatabase, config: SessionsConfig) -> Harness {
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
        bosun_store::migrate::<bosun_nodelink::Migrator>(db)
            .await
            .expect("nodelink");
        bosun_store::migrate::<bosun_sessions::Migrator>(db)
            .await
            .expect("sessions");
        let root =
            TempDir(std::env::temp_dir().join(format!("bosun-sessions-{}", uuid::Uuid::new_v4())));
        let objects = Arc::new(
            Objects::open(&ObjectStoreConfig::Local {
                root: root.0.clone(),
            })
            .expect("objects"),
        );
        let audit = bosun_audit::AuditLog::new(db.clone());
        let presence = Arc::new(MemoryPresence::new());
        let link = NodeLink::new(
            db.clone(),
            Arc::new(MemoryQueue::new(QueueOptions::default())),
            presence.clone(),
        );
        let sessions = SessionServiceImpl::new(
            db.clone(),
            audit.clone(),
            link.clone(),
            objects.clone(),
            config.clone(),
            Ports::local(db.clone()),
        );
        let nodes =
            bosun_inventory::NodeServiceImpl::new(db.clone(), audit.clone(), Arc::new(NoControl));
        let documents = bosun_documents::DocumentServiceImpl::new(db.clone(), audit.clone());
        let audit_service = bosun_audit::AuditServiceImpl::new(db.clone());
        let server = TestServer::start(
            Routes::new(sessions.into_server())
                .add_service(nodes.into_server())
                .add_service(documents.into_server())
                .add_service(audit_service.into_server()),
        )
        .await;
        let store = SessionStore::new(db.clone(), audit, config.clone());
        Harness {
            test_db,
            objects,
            presence,
            link,
            store,
            config,
            server,
            _root: root,
        }
    }

    fn req<T>(&self, who: &str, body: T) -> tonic::Request<T> {
        self.server.request(&caller(who), body)
    }

    fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.server.channel())
    }

    fn db(&self) -> &sea_orm::DatabaseConnection {
        &self.test_db.db
    }

    /// Registers a node tagged `tags` running `platform`; with `connected`, its agent has a
    /// live stream (presence).
    async fn node(&self, platform: &str, tags: &[(&str, &str)], connected: bool) -> String {
        let mut client = NodeServiceClient::new(self.server.channel());
        let activation = client
            .create_activation(
                self.req(
                    ADMIN,
                    inv_pb::CreateActivationRequest {
                        description: "test".into(),
                        default_instance_name: "node".into(),
                        registration_limit: 1,
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
                        hostname: "host".into(),
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
        if connected {
            self.connect(&id).await;
        }
        id
    }

    async fn connect(&self, node_id: &str) {
        self.presence
            .set(node_id, "replica-a", Duration::from_secs(600))
            .await
            .expect("presence");
    }

    async fn document(&self, name: &str, content: &str) {
        DocumentServiceClient::new(self.server.channel())
            .create_document(self.req(
                ADMIN,
                doc_pb::CreateDocumentRequest {
                    content: content.into(),
                    name: name.into(),
                    document_type: doc_pb::DocumentType::Session as i32,
                    document_format: doc_pb::DocumentFormat::Json as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|status| panic!("create document {name}: {status:?}"));
        // Shared with everyone: who may start it is then the sessions policies' business.
        DocumentServiceClient::new(self.server.channel())
            .modify_document_permission(self.req(
                ADMIN,
                doc_pb::ModifyDocumentPermissionRequest {
                    name: name.into(),
                    permission_type: "Share".into(),
                    principals_to_add: vec!["All".into()],
                    principals_to_remove: vec![],
                },
            ))
            .await
            .unwrap_or_else(|status| panic!("share document {name}: {status:?}"));
    }

    async fn start(
        &self,
        who: &str,
        body: pb::StartSessionRequest,
    ) -> Result<pb::StartSessionResponse, tonic::Status> {
        self.sessions()
            .start_session(self.req(who, body))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn row(&self, session_id: &str) -> session::Model {
        session::Entity::find_by_id(session_id.to_owned())
            .one(self.db())
            .await
            .expect("read session")
            .expect("session row")
    }

    /// The node's pending messages of `topic`, payloads parsed.
    async fn messages<T: serde::de::DeserializeOwned>(&self, node_id: &str, topic: &str) -> Vec<T> {
        self.link
            .pending(node_id)
            .await
            .expect("pending")
            .into_iter()
            .filter(|message| message.topic == topic)
            .map(|message| serde_json::from_slice(&message.payload).expect("payload parses"))
            .collect()
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

    async fn terminate(&self, who: &str, session_id: &str) -> Result<String, tonic::Status> {
        self.sessions()
            .terminate_session(self.req(
                who,
                pb::TerminateSessionRequest {
                    session_id: session_id.into(),
                },
            ))
            .await
            .map(|response| response.into_inner().session_id)
    }

    async fn describe(
        &self,
        who: &str,
        state: &str,
        max_results: i32,
        filters: &[(&str, &str)],
        next_token: &str,
    ) -> Result<pb::DescribeSessionsResponse, tonic::Status> {
        self.sessions()
            .describe_sessions(
                self.req(
                    who,
                    pb::DescribeSessionsRequest {
                        state: state.into(),
                        max_results,
                        next_token: next_token.into(),
                        filters: filters
                            .iter()
                            .map(|(key, value)| pb::SessionFilter {
                                key: (*key).into(),
                                value: (*value).into(),
                            })
                            .collect(),
                    },
                ),
            )
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every session a describe lists, page by page.
    async fn describe_all(&self, who: &str, state: &str, page: i32) -> Vec<String> {
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let response = self
                .describe(who, state, page, &[], &token)
                .await
                .expect("describe");
            assert!(response.sessions.len() <= usize::try_from(page).unwrap());
            ids.extend(response.sessions.into_iter().map(|s| s.session_id));
            if response.next_token.is_empty() {
                return ids;
            }
            token = response.next_token;
        }
    }
}

fn start_request(target: &str, document: &str) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        target: target.into(),
        document_name: document.into(),
        ..Default::default()
    }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, pb::ParameterValues> {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                (*name).to_owned(),
                pb::ParameterValues {
                    values: vec![(*value).to_owned()],
                },
            )
        })
        .collect()
}

fn permission_denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

/// StartSession with the defaults: a Connecting shell session, the agent told at once, a
/// token that opens one stream for the owner only, and a fresh one from ResumeSession.
#[tokio::test]
async fn start_with_defaults_and_redeem_the_token_once() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], true).await;
        let started = h
            .start(
                ADMIN,
                pb::StartSessionRequest {
                    target: node.clone(),
                    reason: "debug the disk".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("start");
        assert!(started.session_id.starts_with("admin-"), "{started:?}");
        assert_eq!(started.session_id.len(), "admin-".len() + 17);
        assert_eq!(started.token_value.len(), 43);
        assert_eq!(started.stream_url, "/bosun.sessions.v1.SessionData/Connect");

        let row = h.row(&started.session_id).await;
        assert_eq!(row.status, "Connecting");
        assert_eq!(row.owner, ADMIN);
        assert_eq!(row.node_id, node);
        assert_eq!(row.document_name, "Bosun-StartShellSession");
        assert_eq!(row.session_type, "Standard_Stream");
        assert_eq!(row.run_as, "bosun-user");
        assert_eq!(row.idle_timeout_minutes, 20);
        assert_eq!(row.max_duration_minutes, 0);
        assert!(row.transcript);
        assert!(!row.record_input);
        assert_eq!(row.reason, "debug the disk");
        assert_ne!(row.token_hash, started.token_value, "only a hash is stored");

        let starts: Vec<wire::StartSession> = h.messages(&node, wire::TOPIC_START).await;
        assert_eq!(starts.len(), 1);
        let start = &starts[0];
        assert_eq!(start.session_id, started.session_id);
        assert_eq!(start.run_as, "bosun-user");
        assert_eq!(start.idle_timeout_seconds, 20 * 60);
        assert_eq!(start.max_duration_seconds, 0);
        assert!(
            matches!(&start.kind, wire::SessionKind::Shell { shell_profile } if shell_profile.is_empty())
        );

        // The token: owner only, right token only, once.
        let id = &started.session_id;
        let refused = h.store.redeem_token(id, &started.token_value, BOB).await;
        assert!(
            matches!(refused, Err(ApiError::PermissionDenied(_))),
            "{refused:?}"
        );
        let wrong = h.store.redeem_token(id, "not-the-token", ADMIN).await;
        assert!(
            matches!(wrong, Err(ApiError::Unauthenticated(_))),
            "{wrong:?}"
        );
        let record = h
            .store
            .redeem_token(id, &started.token_value, ADMIN)
            .await
            .expect("the token opens the session");
        assert_eq!(record.status, SessionStatus::Connecting);
        assert_eq!(record.idle_timeout, Duration::from_secs(20 * 60));
        assert_eq!(record.max_duration, None);
        assert!(record.transcript);
        let again = h.store.redeem_token(id, &started.token_value, ADMIN).await;
        assert!(
            matches!(again, Err(ApiError::Unauthenticated(_))),
            "{again:?}"
        );
        let missing = h
            .store
            .redeem_token("admin-00000000000000000", "x", ADMIN)
            .await;
        assert!(
            matches!(missing, Err(ApiError::NotFound { .. })),
            "{missing:?}"
        );

        // ResumeSession: a new token for the owner; an expired token is refused.
        let resumed = h
            .sessions()
            .resume_session(h.req(
                ADMIN,
                pb::ResumeSessionRequest {
                    session_id: id.clone(),
                },
            ))
            .await
            .expect("resume")
            .into_inner();
        assert_eq!(&resumed.session_id, id);
        assert_ne!(resumed.token_value, started.token_value);
        let mut expired = h.row(id).await.into_active_model();
        expired.token_expires_at = Set(chrono::Utc::now() - chrono::TimeDelta::seconds(1));
        expired.update(h.db()).await.expect("expire the token");
        let late = h.store.redeem_token(id, &resumed.token_value, ADMIN).await;
        assert!(
            matches!(late, Err(ApiError::Unauthenticated(_))),
            "{late:?}"
        );
        let resumed = h
            .sessions()
            .resume_session(h.req(
                ADMIN,
                pb::ResumeSessionRequest {
                    session_id: id.clone(),
                },
            ))
            .await
            .expect("resume")
            .into_inner();
        h.store
            .redeem_token(id, &resumed.token_value, ADMIN)
            .await
            .expect("the resumed token opens the session");
        // Only the owner resumes, even with the right to.
        permission_denied(
            h.sessions()
                .resume_session(h.req(
                    ROOT_ADMIN,
                    pb::ResumeSessionRequest {
                        session_id: id.clone(),
                    },
                ))
                .await,
        );

        // Audited, never with the token.
        let events = h.audit_events("sessions:StartSession").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].resource, format!("session:{id}"));
        assert!(
            events[0].details.contains("debug the disk"),
            "{:?}",
            events[0]
        );
        for event in events
            .iter()
            .chain(&h.audit_events("sessions:ResumeSession").await)
        {
            assert!(!event.details.contains(&started.token_value));
            assert!(!event.details.contains(&resumed.token_value));
        }
        assert_eq!(
            h.audit_events("sessions:ResumeSession")
                .await
                .iter()
                .filter(|event| event.result == audit_pb::AuditResult::Success as i32)
                .count(),
            2
        );

        // The shell document by its SSM name.
        let aliased = h
            .start(ADMIN, start_request(&node, "SSM-SessionManagerRunShell"))
            .await
            .expect("start by alias");
        assert_eq!(
            h.row(&aliased.session_id).await.document_name,
            "Bosun-StartShellSession"
        );
    }
}

/// A node without a live agent stream cannot take a session; GetConnectionStatus says so.
#[tokio::test]
async fn target_not_connected_and_connection_status() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], false).await;
        assert_error(
            h.start(ADMIN, start_request(&node, "")).await,
            Code::FailedPrecondition,
            "TargetNotConnected",
        );
        let status = |who: &'static str, target: String| {
            let mut client = h.sessions();
            let request = h.req(who, pb::GetConnectionStatusRequest { target });
            async move {
                client
                    .get_connection_status(request)
                    .await
                    .map(|response| response.into_inner().status)
            }
        };
        assert_eq!(status(ADMIN, node.clone()).await.unwrap(), "notconnected");
        h.connect(&node).await;
        assert_eq!(status(ADMIN, node.clone()).await.unwrap(), "connected");
        h.start(ADMIN, start_request(&node, ""))
            .await
            .expect("start once connected");
        assert_eq!(
            status(ADMIN, "mi-00000000000000000".into()).await.unwrap(),
            "notconnected"
        );
        permission_denied(status(NOBODY, node.clone()).await);
        let bad = assert_error(
            status(ADMIN, "i-123".into()).await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&bad), ["target"]);
        // An unknown node: only callers allowed on it learn it does not exist.
        let unknown = assert_error(
            h.start(ADMIN, start_request("mi-00000000000000000", ""))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&unknown), ["target"]);
        permission_denied(
            h.start(NOBODY, start_request("mi-00000000000000000", ""))
                .await,
        );
    }
}

/// Every bad field is named with its rule and the stable error name.
#[tokio::test]
async fn validation_errors_name_the_field() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], true).await;
        type Edit = Box<dyn Fn(&mut pb::StartSessionRequest)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                Box::new(|r| r.target = String::new()),
                "target",
                "ValidationException",
            ),
            (
                Box::new(|r| r.target = "i-123".into()),
                "target",
                "ValidationException",
            ),
            (
                Box::new(|r| r.target = "m".repeat(401)),
                "target",
                "ValidationException",
            ),
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
                Box::new(|r| r.reason = "r".repeat(257)),
                "reason",
                "ValidationException",
            ),
            (
                Box::new(|r| r.reason = "two\nlines".into()),
                "reason",
                "ValidationException",
            ),
            (
                Box::new(|r| r.run_as = "a;b".into()),
                "run_as",
                "ValidationException",
            ),
            // The shell document does not enable run-as.
            (
                Box::new(|r| r.run_as = "ops".into()),
                "run_as",
                "ValidationException",
            ),
            (
                Box::new(|r| r.document_name = "No-Such-Document".into()),
                "document_name",
                "InvalidDocument",
            ),
            // A Command document is not a Session document.
            (
                Box::new(|r| r.document_name = "AWS-RunShellScript".into()),
                "document_name",
                "InvalidDocument",
            ),
            (
                Box::new(|r| r.parameters = params(&[("nope", "1")])),
                "parameters.nope",
                "InvalidParameters",
            ),
            (
                Box::new(|r| {
                    r.document_name = "AWS-StartPortForwardingSession".into();
                    r.parameters = params(&[("portNumber", "70000")]);
                }),
                "parameters.portNumber",
                "InvalidParameters",
            ),
            (
                Box::new(|r| {
                    r.document_name = "AWS-StartPortForwardingSessionToRemoteHost".into();
                    r.parameters = params(&[("host", "169.254.169.254")]);
                }),
                "parameters",
                "InvalidParameters",
            ),
            (
                Box::new(|r| {
                    r.document_name = "AWS-StartPortForwardingSession".into();
                    r.run_as = "ops".into();
                }),
                "run_as",
                "ValidationException",
            ),
            // The interactive command document's command is required.
            (
                Box::new(|r| r.document_name = "AWS-StartInteractiveCommand".into()),
                "parameters.command",
                "InvalidParameters",
            ),
        ];
        for (index, (edit, field, reason)) in cases.into_iter().enumerate() {
            let mut request = start_request(&node, "");
            edit(&mut request);
            let status = assert_error(h.start(ADMIN, request).await, Code::InvalidArgument, reason);
            assert_eq!(
                violated_fields(&status),
                [field],
                "case {index}: {status:?}"
            );
        }

        // (state, max_results, filters, next_token, field, reason)
        type DescribeCase<'a> = (
            &'a str,
            i32,
            Vec<(&'a str, &'a str)>,
            &'a str,
            &'a str,
            &'a str,
        );
        let describe_cases: Vec<DescribeCase> = vec![
            ("", 0, vec![], "", "state", "ValidationException"),
            ("Bogus", 0, vec![], "", "state", "ValidationException"),
            (
                "Active",
                201,
                vec![],
                "",
                "max_results",
                "ValidationException",
            ),
            (
                "Active",
                -1,
                vec![],
                "",
                "max_results",
                "ValidationException",
            ),
            (
                "Active",
                0,
                vec![("Colour", "x")],
                "",
                "filters[0].key",
                "InvalidFilterKey",
            ),
            (
                "Active",
                0,
                vec![("Owner", "a"), ("Owner", "b")],
                "",
                "filters[1].key",
                "InvalidFilterKey",
            ),
            (
                "Active",
                0,
                vec![("InvokedAfter", "yesterday")],
                "",
                "filters[0].value",
                "ValidationException",
            ),
            (
                "Active",
                0,
                vec![("Status", "Running")],
                "",
                "filters[0].value",
                "ValidationException",
            ),
            (
                "Active",
                0,
                vec![("Target", "i-1")],
                "",
                "filters[0].value",
                "ValidationException",
            ),
            (
                "Active",
                0,
                vec![("Owner", "")],
                "",
                "filters[0].value",
                "ValidationException",
            ),
            (
                "Active",
                0,
                vec![],
                "garbage!",
                "next_token",
                "InvalidNextToken",
            ),
        ];
        for (state, max, filters, token, field, reason) in describe_cases {
            let status = assert_error(
                h.describe(ADMIN, state, max, &filters, token).await,
                Code::InvalidArgument,
                reason,
            );
            assert_eq!(violated_fields(&status), [field], "{status:?}");
        }
        let too_many: Vec<(&str, &str)> = vec![("Owner", "a"); 7];
        assert_error(
            h.describe(ADMIN, "Active", 0, &too_many, "").await,
            Code::InvalidArgument,
            "ValidationException",
        );

        for bad in ["", "bad id!", &"x".repeat(97)] {
            let status = assert_error(
                h.terminate(ADMIN, bad).await,
                Code::InvalidArgument,
                "ValidationException",
            );
            assert_eq!(violated_fields(&status), ["session_id"]);
        }
        // Nothing was stored by any refused call.
        assert!(h.describe_all(ADMIN, "Active", 200).await.is_empty());
    }
}

const ROOT_SHELL: &str = r#"{
  "schemaVersion": "1.0", "description": "root shell", "sessionType": "Standard_Stream",
  "inputs": {"runAsEnabled": true, "runAsDefaultUser": "root", "idleSessionTimeout": "5",
             "maxSessionDuration": "90", "shellProfile": {"linux": "cd /srv"}}
}"#;
const OPS_SHELL: &str = r#"{
  "schemaVersion": "1.0", "description": "ops shell", "sessionType": "Standard_Stream",
  "inputs": {"runAsEnabled": true, "runAsDefaultUser": "ops", "transcriptEnabled": false}
}"#;
const TAIL_LOG: &str = r#"{
  "schemaVersion": "1.0", "description": "tail a log", "sessionType": "InteractiveCommands",
  "parameters": {"logpath": {"type": "String", "allowedPattern": "^[a-zA-Z0-9-_/]+(.log)$"}},
  "properties": {"linux": {"commands": "tail -f {{ logpath }}"}}
}"#;
const BAD_TIMEOUT: &str = r#"{
  "schemaVersion": "1.0", "description": "bad", "sessionType": "Standard_Stream",
  "inputs": {"idleSessionTimeout": "90"}
}"#;

/// Who may start what: documents by name, nodes by tag, run-as users, and root only by a
/// statement naming it; denials are audited.
#[tokio::test]
async fn policies_decide_documents_nodes_and_run_as() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[("Env", "dev")], true).await;
        let prod = h.node("Linux", &[("Env", "prod")], true).await;
        h.document("Ops-RootShell", ROOT_SHELL).await;
        h.document("Ops-Shell", OPS_SHELL).await;
        h.document("Ops-TailLog", TAIL_LOG).await;
        h.document("Ops-BadTimeout", BAD_TIMEOUT).await;

        // Limited to StartInteractiveCommand: no shell, the command runs.
        permission_denied(h.start(COMMANDS_ONLY, start_request(&node, "")).await);
        permission_denied(
            h.start(
                COMMANDS_ONLY,
                start_request(&node, "Bosun-StartShellSession"),
            )
            .await,
        );
        let mut request = start_request(&node, "AWS-StartInteractiveCommand");
        request.parameters = params(&[("command", "top")]);
        let started = h
            .start(COMMANDS_ONLY, request)
            .await
            .expect("interactive command");
        let row = h.row(&started.session_id).await;
        assert_eq!(row.document_name, "Bosun-StartInteractiveCommand");
        assert_eq!(row.session_type, "InteractiveCommands");
        let starts: Vec<wire::StartSession> = h.messages(&node, wire::TOPIC_START).await;
        assert!(
            starts
                .iter()
                .any(|start| start.session_id == started.session_id
                    && start.kind
                        == wire::SessionKind::Command {
                            command: "top".into()
                        })
        );

        // Parameters are checked against the document's allowedPattern.
        let mut request = start_request(&node, "Ops-TailLog");
        request.parameters = params(&[("logpath", "/var/log/x.log; bash")]);
        let status = assert_error(
            h.start(ADMIN, request).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
        assert_eq!(violated_fields(&status), ["parameters.logpath"]);
        let mut request = start_request(&node, "Ops-TailLog");
        request.parameters = params(&[("logpath", "/var/log/syslog.log")]);
        let tail = h.start(ADMIN, request).await.expect("valid parameter");
        let starts: Vec<wire::StartSession> = h.messages(&node, wire::TOPIC_START).await;
        assert!(
            starts
                .iter()
                .any(|start| start.session_id == tail.session_id
                    && start.kind
                        == wire::SessionKind::Command {
                            command: "tail -f /var/log/syslog.log".into()
                        })
        );

        // A document whose preferences are out of range.
        let status = assert_error(
            h.start(ADMIN, start_request(&node, "Ops-BadTimeout")).await,
            Code::InvalidArgument,
            "InvalidDocument",
        );
        assert!(
            status.message().contains("idleSessionTimeout"),
            "{status:?}"
        );

        // Root: a wildcard grant is not enough; a statement naming runas:root is.
        permission_denied(h.start(ADMIN, start_request(&node, "Ops-RootShell")).await);
        let mut as_root = start_request(&node, "Ops-Shell");
        as_root.run_as = "root".into();
        permission_denied(h.start(ADMIN, as_root.clone()).await);
        let root = h
            .start(ROOT_ADMIN, start_request(&node, "Ops-RootShell"))
            .await
            .expect("root with an explicit grant");
        let row = h.row(&root.session_id).await;
        assert_eq!(row.run_as, "root");
        assert_eq!(row.idle_timeout_minutes, 5);
        assert_eq!(row.max_duration_minutes, 90);
        let starts: Vec<wire::StartSession> = h.messages(&node, wire::TOPIC_START).await;
        let start = starts
            .iter()
            .find(|start| start.session_id == root.session_id)
            .expect("root session message");
        assert_eq!(start.run_as, "root");
        assert_eq!(start.idle_timeout_seconds, 5 * 60);
        assert_eq!(start.max_duration_seconds, 90 * 60);
        assert_eq!(
            start.kind,
            wire::SessionKind::Shell {
                shell_profile: "cd /srv".into()
            }
        );
        h.start(ROOT_ADMIN, as_root)
            .await
            .expect("named root with the grant");

        // Another user than the document's default needs sessions:RunAs on it.
        let ops = h
            .start(BOB, start_request(&node, "Ops-Shell"))
            .await
            .expect("default user");
        let row = h.row(&ops.session_id).await;
        assert_eq!(row.run_as, "ops");
        assert!(!row.transcript, "transcriptEnabled false");
        let mut deploy = start_request(&node, "Ops-Shell");
        deploy.run_as = "deploy".into();
        permission_denied(h.start(BOB, deploy.clone()).await);
        let as_deploy = h
            .start(ADMIN, deploy)
            .await
            .expect("admin may run as deploy");
        assert_eq!(h.row(&as_deploy.session_id).await.run_as, "deploy");

        // Nodes by tag.
        h.start(DEV, start_request(&node, ""))
            .await
            .expect("dev node");
        permission_denied(h.start(DEV, start_request(&prod, "")).await);

        let denied: Vec<_> = h
            .audit_events("sessions:StartSession")
            .await
            .into_iter()
            .filter(|event| event.result == audit_pb::AuditResult::Denied as i32)
            .collect();
        assert_eq!(denied.len(), 6, "{denied:?}");
        assert!(
            denied
                .iter()
                .any(|event| event.principal == DEV && event.details.contains(&prod))
        );
    }
}

/// Port forwarding documents: the port, host and local port from parameters; no transcript,
/// no run-as.
#[tokio::test]
async fn port_sessions_carry_their_destination() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], true).await;
        let mut request = start_request(&node, "AWS-StartPortForwardingSession");
        request.parameters = params(&[("portNumber", "5432"), ("localPortNumber", "15432")]);
        let local = h.start(ADMIN, request).await.expect("port session");
        let row = h.row(&local.session_id).await;
        assert_eq!(
            (
                row.session_type.as_str(),
                row.host.as_str(),
                row.port_number,
                row.local_port_number
            ),
            ("Port", "localhost", 5432, 15432)
        );
        assert!(!row.transcript);
        assert_eq!(row.run_as, "");
        let record = h
            .store
            .get(&local.session_id)
            .await
            .unwrap()
            .expect("record");
        assert_eq!(
            (record.port_number, record.local_port_number),
            (5432, 15432)
        );

        let mut request = start_request(&node, "AWS-StartPortForwardingSessionToRemoteHost");
        request.parameters = params(&[("host", "db.internal"), ("portNumber", "3306")]);
        let remote = h.start(ADMIN, request).await.expect("remote host session");
        let row = h.row(&remote.session_id).await;
        assert_eq!(
            row.document_name,
            "Bosun-StartPortForwardingSessionToRemoteHost"
        );
        assert_eq!(
            (row.host.as_str(), row.port_number, row.local_port_number),
            ("db.internal", 3306, 0)
        );
        let starts: Vec<wire::StartSession> = h.messages(&node, wire::TOPIC_START).await;
        let kinds: Vec<_> = starts.into_iter().map(|start| start.kind).collect();
        assert_eq!(
            kinds,
            [
                wire::SessionKind::Port {
                    host: "localhost".into(),
                    port: 5432
                },
                wire::SessionKind::Port {
                    host: "db.internal".into(),
                    port: 3306
                },
            ]
        );
        let mut request = start_request(&node, "AWS-StartPortForwardingSessionToRemoteHost");
        request.parameters = params(&[("host", "fe80::1"), ("portNumber", "80")]);
        assert_error(
            h.start(ADMIN, request).await,
            Code::InvalidArgument,
            "InvalidParameters",
        );
    }
}

/// TerminateSession ends the session once, audits it, tells the agent, and answers the same
/// again; an ended session cannot be resumed or opened.
#[tokio::test]
async fn terminate_is_idempotent_audited_and_tells_the_agent() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], true).await;
        let started = h.start(BOB, start_request(&node, "")).await.expect("start");
        let id = started.session_id.clone();
        permission_denied(h.terminate(NOBODY, &id).await);
        assert_eq!(h.terminate(BOB, &id).await.expect("terminate"), id);
        let row = h.row(&id).await;
        assert_eq!(row.status, "Terminated");
        assert_eq!(row.details, "terminated by user/bob");
        assert!(row.ended_at.is_some());
        let terminates: Vec<wire::TerminateSession> =
            h.messages(&node, wire::TOPIC_TERMINATE).await;
        assert_eq!(
            terminates,
            [wire::TerminateSession {
                session_id: id.clone(),
                reason: "terminated by user/bob".into()
            }]
        );

        assert_eq!(h.terminate(BOB, &id).await.expect("again"), id);
        assert_eq!(h.terminate(ADMIN, &id).await.expect("by an admin"), id);
        let terminates: Vec<wire::TerminateSession> =
            h.messages(&node, wire::TOPIC_TERMINATE).await;
        assert_eq!(terminates.len(), 1, "the agent is told once");
        assert_eq!(h.row(&id).await.details, "terminated by user/bob");

        let ended = h.audit_events("sessions:SessionEnded").await;
        assert_eq!(ended.len(), 1);
        assert!(ended[0].details.contains("terminated by user/bob"));
        assert!(ended[0].details.contains(&node));
        let terminations = h.audit_events("sessions:TerminateSession").await;
        assert_eq!(
            terminations
                .iter()
                .filter(|e| e.result == audit_pb::AuditResult::Success as i32)
                .count(),
            3
        );
        assert_eq!(
            terminations
                .iter()
                .filter(|e| e.result == audit_pb::AuditResult::Denied as i32)
                .count(),
            1
        );

        assert_error(
            h.sessions()
                .resume_session(h.req(
                    BOB,
                    pb::ResumeSessionRequest {
                        session_id: id.clone(),
                    },
                ))
                .await,
            Code::FailedPrecondition,
            "InvalidSessionState",
        );
        let opened = h.store.redeem_token(&id, &started.token_value, BOB).await;
        assert!(
            matches!(&opened, Err(error) if error.code() == Code::FailedPrecondition),
            "{opened:?}"
        );
        assert_error(
            h.terminate(ADMIN, "admin-00000000000000000").await,
            Code::NotFound,
            "DoesNotExistException",
        );
        assert_error(
            h.sessions()
                .resume_session(h.req(
                    ADMIN,
                    pb::ResumeSessionRequest {
                        session_id: "admin-00000000000000000".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "DoesNotExistException",
        );
    }
}

/// Active and History, newest first, paged, filtered; callers without DescribeSessions on
/// `session:*` see their own sessions.
#[tokio::test]
async fn describe_lists_active_and_history_with_filters_and_pages() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node_a = h.node("Linux", &[], true).await;
        let node_b = h.node("Linux", &[], true).await;
        let mut admin_ids = Vec::new();
        for _ in 0..5 {
            let started = h
                .start(ADMIN, start_request(&node_a, ""))
                .await
                .expect("start");
            admin_ids.push(started.session_id);
        }
        let mut bob_ids = Vec::new();
        for _ in 0..2 {
            let started = h
                .start(BOB, start_request(&node_b, ""))
                .await
                .expect("start");
            bob_ids.push(started.session_id);
        }
        for id in &admin_ids[..2] {
            h.terminate(ADMIN, id).await.expect("terminate");
        }

        let active = h.describe_all(ADMIN, "Active", 2).await;
        let mut expected: Vec<String> = bob_ids.iter().rev().cloned().collect();
        expected.extend(admin_ids[2..].iter().rev().cloned());
        assert_eq!(active, expected, "newest first, each once");
        let history = h.describe_all(ADMIN, "History", 1).await;
        assert_eq!(history, [admin_ids[1].clone(), admin_ids[0].clone()]);

        let page = h
            .describe(ADMIN, "History", 0, &[], "")
            .await
            .expect("history");
        let first = &page.sessions[0];
        assert_eq!(first.status, "Terminated");
        assert_eq!(first.details, "terminated by user/admin");
        assert_eq!(first.owner, ADMIN);
        assert_eq!(first.target, node_a);
        assert_eq!(first.document_name, "Bosun-StartShellSession");
        assert_eq!(first.session_type, "Standard_Stream");
        assert_eq!(first.access_type, "Standard");
        assert_eq!(first.idle_session_timeout, 20);
        assert_eq!(first.run_as, "bosun-user");
        assert!(first.start_date.is_some() && first.end_date.is_some());
        assert!(
            first
                .output_url
                .ends_with(&format!("sessions/{}/transcript/", first.session_id))
        );

        let ids = |response: pb::DescribeSessionsResponse| -> Vec<String> {
            response
                .sessions
                .into_iter()
                .map(|s| s.session_id)
                .collect()
        };
        let on_b = h
            .describe(ADMIN, "Active", 0, &[("Target", &node_b)], "")
            .await
            .unwrap();
        assert_eq!(ids(on_b).len(), 2);
        let by_bob = h
            .describe(ADMIN, "Active", 0, &[("Owner", BOB)], "")
            .await
            .unwrap();
        assert_eq!(
            ids(by_bob),
            bob_ids.iter().rev().cloned().collect::<Vec<_>>()
        );
        let one = h
            .describe(ADMIN, "Active", 0, &[("SessionId", &admin_ids[3])], "")
            .await
            .unwrap();
        assert_eq!(ids(one), [admin_ids[3].clone()]);
        let connecting = h
            .describe(
                ADMIN,
                "Active",
                0,
                &[("Status", "Connecting"), ("Target", &node_a)],
                "",
            )
            .await
            .unwrap();
        assert_eq!(ids(connecting).len(), 3);
        let terminated_active = h
            .describe(ADMIN, "Active", 0, &[("Status", "Terminated")], "")
            .await
            .unwrap();
        assert!(terminated_active.sessions.is_empty());
        let future = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
        let past = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
        assert!(
            h.describe(ADMIN, "Active", 0, &[("InvokedAfter", &future)], "")
                .await
                .unwrap()
                .sessions
                .is_empty()
        );
        assert_eq!(
            h.describe(
                ADMIN,
                "Active",
                0,
                &[("InvokedAfter", &past), ("InvokedBefore", &future)],
                ""
            )
            .await
            .unwrap()
            .sessions
            .len(),
            5
        );

        // Bob sees his own only, whatever he filters on.
        assert_eq!(
            h.describe_all(BOB, "Active", 200).await,
            bob_ids.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert!(
            h.describe(BOB, "Active", 0, &[("Owner", ADMIN)], "")
                .await
                .unwrap()
                .sessions
                .is_empty()
        );
        permission_denied(h.describe(DENIED, "Active", 0, &[], "").await);

        // A page token belongs to its list.
        let page = h.describe(ADMIN, "Active", 2, &[], "").await.unwrap();
        assert!(!page.next_token.is_empty());
        assert_error(
            h.describe(ADMIN, "History", 2, &[], &page.next_token).await,
            Code::InvalidArgument,
            "InvalidNextToken",
        );
    }
}

/// The store's broker-side changes: attachments, touches (bytes only grow, status returned),
/// one end however many try.
#[tokio::test]
async fn store_marks_touches_and_ends_once() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], true).await;
        let id = h
            .start(ADMIN, start_request(&node, ""))
            .await
            .unwrap()
            .session_id;

        assert_eq!(
            h.store.mark_attached(&id, "replica-b").await.unwrap(),
            Some(SessionStatus::Connecting)
        );
        assert_eq!(h.row(&id).await.hub.as_deref(), Some("replica-b"));
        h.store.mark_connected(&id, "replica-b").await.unwrap();
        assert_eq!(h.row(&id).await.status, "Connected");
        h.store.mark_disconnected(&id).await.unwrap();
        assert_eq!(h.row(&id).await.status, "Disconnected");
        assert_eq!(
            h.store.touch(&id, 100, 2000).await.unwrap(),
            Some(SessionStatus::Disconnected)
        );
        assert_eq!(
            h.store.touch(&id, 50, 10).await.unwrap(),
            Some(SessionStatus::Disconnected)
        );
        assert_eq!(h.store.bytes(&id).await.unwrap(), Some((100, 2000)));
        assert_eq!(
            h.store
                .touch("admin-00000000000000000", 1, 1)
                .await
                .unwrap(),
            None
        );

        let end = |status, details: &str, bytes_in| SessionEnd {
            status,
            details: details.into(),
            exit_code: Some(0),
            bytes_in,
            bytes_out: 2500,
        };
        let (first, second) = tokio::join!(
            h.store
                .end(&id, end(SessionStatus::Terminated, "exit status 0", 120)),
            h.store
                .end(&id, end(SessionStatus::Failed, "agent disconnected", 130)),
        );
        assert!(first.unwrap() ^ second.unwrap(), "exactly one end wins");
        let row = h.row(&id).await;
        assert!(row.ended_at.is_some());
        let winner_in = if row.status == "Terminated" { 120 } else { 130 };
        assert_eq!((row.bytes_in, row.bytes_out), (winner_in, 2500));
        assert_eq!(h.audit_events("sessions:SessionEnded").await.len(), 1);

        // Ended is final; bytes the hub reports later are still kept.
        h.store.mark_connected(&id, "replica-c").await.unwrap();
        h.store.mark_disconnected(&id).await.unwrap();
        let status = h
            .store
            .touch(&id, 999, 3000)
            .await
            .unwrap()
            .expect("status");
        assert!(status.is_ended());
        assert_eq!(h.store.bytes(&id).await.unwrap(), Some((999, 3000)));
        assert!(
            !h.store
                .end(&id, end(SessionStatus::Terminated, "later", 0))
                .await
                .unwrap()
        );
        let missing = h
            .store
            .end(
                "admin-00000000000000000",
                end(SessionStatus::Failed, "x", 0),
            )
            .await;
        assert!(
            matches!(missing, Err(ApiError::NotFound { .. })),
            "{missing:?}"
        );
    }
}

/// The reaper fails sessions whose agent never attached and sessions whose hub went quiet;
/// several reapers at once end each session once.
#[tokio::test]
async fn reaper_fails_unattached_and_lost_sessions_once() {
    let config = SessionsConfig {
        attach_timeout: Duration::from_secs(2),
        hub_touch_interval: Duration::from_millis(100),
        hub_lost_after: Duration::from_millis(1500),
        reap_interval: Duration::from_millis(100),
        ..SessionsConfig::default()
    };
    for test_db in bosun_store::testing::both().await {
        let h = Harness::with_config(test_db, config.clone()).await;
        let node = h.node("Linux", &[], true).await;
        let never = h
            .start(ADMIN, start_request(&node, ""))
            .await
            .unwrap()
            .session_id;
        let lost = h
            .start(ADMIN, start_request(&node, ""))
            .await
            .unwrap()
            .session_id;
        let alive = h
            .start(ADMIN, start_request(&node, ""))
            .await
            .unwrap()
            .session_id;
        let waiting = h
            .start(ADMIN, start_request(&node, ""))
            .await
            .unwrap()
            .session_id;
        h.store.mark_connected(&lost, "replica-b").await.unwrap();
        h.store.mark_connected(&alive, "replica-a").await.unwrap();
        // The agent attached, the client has not connected yet: not "never attached".
        h.store.mark_attached(&waiting, "replica-a").await.unwrap();

        let reapers: Vec<Reaper> = (0..3)
            .map(|_| Reaper::new(h.store.clone(), h.config.clone()))
            .collect();
        assert_eq!(
            reapers[0].reap_once().await.unwrap(),
            0,
            "nothing is late yet"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2300);
        while tokio::time::Instant::now() < deadline {
            h.store.touch(&alive, 0, 0).await.unwrap();
            h.store.touch(&waiting, 0, 0).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let counts = futures::future::join_all(reapers.iter().map(Reaper::reap_once)).await;
        let total: usize = counts.into_iter().map(Result::unwrap).sum();
        assert_eq!(total, 2);

        let row = h.row(&never).await;
        assert_eq!(row.status, "Failed");
        assert_eq!(row.details, "the agent did not attach within 2s");
        let row = h.row(&lost).await;
        assert_eq!(row.status, "Failed");
        assert_eq!(row.details, "the gateway holding the session was lost");
        assert_eq!(h.row(&alive).await.status, "Connected");
        assert_eq!(h.row(&waiting).await.status, "Connecting");
        assert_eq!(h.audit_events("sessions:SessionEnded").await.len(), 2);

        // `run` reaps on its own and stops on shutdown.
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(Reaper::new(h.store.clone(), h.config.clone()).run(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while h.row(&waiting).await.status != "Failed" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the running reaper fails the quiet hub's session"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}

/// GetSessionTranscript streams the stored asciicast in chunks of whole lines; sessions
/// without one are NOT_FOUND.
#[tokio::test]
async fn transcripts_are_exported_through_the_service() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::open(test_db).await;
        let node = h.node("Linux", &[], true).await;
        let id = h
            .start(ADMIN, start_request(&node, ""))
            .await
            .unwrap()
            .session_id;
        let fetch = |who: &'static str, session_id: String| {
            let mut client = h.sessions();
            let request = h.req(who, pb::GetSessionTranscriptRequest { session_id });
            async move {
                let mut stream = client.get_session_transcript(request).await?.into_inner();
                let mut chunks = Vec::new();
                while let Some(chunk) = stream.next().await {
                    chunks.push(chunk?.data);
                }
                Ok::<_, tonic::Status>(chunks)
            }
        };
        assert_eq!(
            fetch(ADMIN, id.clone()).await.unwrap_err().code(),
            Code::NotFound
        );

        let record = h.store.get(&id).await.unwrap().expect("record");
        let mut writer =
            TranscriptWriter::start(h.objects.clone(), &id, record.started_at, 120, 40, "xterm")
                .await
                .expect("start transcript");
        let line = "x".repeat(1000);
        for index in 0..200 {
            writer.output(
                record.started_at + chrono::TimeDelta::milliseconds(index),
                format!("{line}\r\n").as_bytes(),
            );
            if index % 50 == 49 {
                writer.flush().await.expect("flush");
            }
        }
        let chunks = fetch(ADMIN, id.clone()).await.expect("transcript");
        assert!(chunks.len() > 1, "about 200 KiB in several chunks");
        for chunk in &chunks {
            assert!(chunk.len() <= 64 * 1024);
            assert!(chunk.ends_with(b"\n"));
        }
        let whole: Vec<u8> = chunks.concat();
        let exported = bosun_sessions::transcript::export_asciicast(&h.objects, &id)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(whole, exported);
        let text = String::from_utf8(whole).unwrap();
        assert_eq!(text.lines().count(), 201);
        assert!(text.starts_with(&format!(
            r#"{{"version":2,"width":120,"height":40,"timestamp":{},"env":{{"TERM":"xterm"}},"title":"{id}"}}"#,
            record.started_at.timestamp()
        )));
        permission_denied(fetch(NOBODY, id.clone()).await);

        let mut request = start_request(&node, "AWS-StartPortForwardingSession");
        request.parameters = params(&[("portNumber", "22")]);
        let port = h.start(ADMIN, request).await.unwrap().session_id;
        assert_eq!(fetch(ADMIN, port).await.unwrap_err().code(), Code::NotFound);
        assert_eq!(
            fetch(ADMIN, "admin-00000000000000000".into())
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }
}
