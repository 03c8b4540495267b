//! Test harness: the DocumentService and the AuditService in-process behind `VerifyLayer`
//! on a loopback port, over a fresh database, with internal tokens minted per caller.

#![allow(dead_code)]

use bosun_proto::audit::v1 as audit_pb;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::documents::v1 as pb;
use bosun_proto::documents::v1::document_service_client::DocumentServiceClient;
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer};
// Not every test binary uses both.
#[allow(unused_imports)]
pub use bosun_testkit::{assert_error, violated_fields};
use tonic::service::Routes;
use tonic::transport::Channel;

pub const ALICE: &str = "user/alice";
pub const BOB: &str = "user/bob";
pub const ADMIN: &str = "user/admin";
pub const NOBODY: &str = "user/nobody";

/// Everything in the documents service except administering other people's documents:
/// `documents:*` alone would include `documents:AdministerDocuments`.
const USER_POLICY: &str = r#"{"Statement": [
    {"Effect": "Allow", "Action": "documents:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "documents:AdministerDocuments", "Resource": "*"}
]}"#;

pub const COMMAND_JSON: &str = r#"{
  "schemaVersion": "2.2",
  "description": "Say hello",
  "parameters": {
    "greeting": {"type": "String", "default": "hello", "description": "What to say"}
  },
  "mainSteps": [
    {"action": "aws:runShellScript", "name": "hello",
     "inputs": {"runCommand": ["echo {{ greeting }}"]}}
  ]
}"#;

pub const COMMAND_JSON_V2: &str = r#"{
  "schemaVersion": "2.2",
  "description": "Say hello, version two",
  "mainSteps": [
    {"action": "aws:runShellScript", "name": "hello", "inputs": {"runCommand": ["echo two"]}}
  ]
}"#;

pub const COMMAND_YAML: &str = "schemaVersion: '2.2'
description: Say hello in YAML
mainSteps:
  - action: aws:runShellScript
    name: hello
    inputs:
      runCommand:
        - echo hello
";

/// `who` as the tests know it: ADMIN may do everything (role `admin`), NOBODY nothing, BOB
/// is a user with the role `ops`, anyone else a plain user.
pub fn caller(who: &str) -> Caller {
    match who {
        ADMIN => Caller::new(who).role("admin").policy(ALLOW_ALL),
        NOBODY => Caller::new(who),
        BOB => Caller::new(who).policy(USER_POLICY).role("ops"),
        _ => Caller::new(who).policy(USER_POLICY),
    }
}

pub struct Harness {
    pub test_db: TestDatabase,
    server: TestServer,
}

impl Harness {
    pub async fn start(test_db: TestDatabase) -> Harness {
        bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
            .await
            .expect("audit migrations apply");
        bosun_store::migrate::<bosun_documents::Migrator>(&test_db.db)
            .await
            .expect("documents migrations apply");
        let documents = bosun_documents::DocumentServiceImpl::new(
            test_db.db.clone(),
            bosun_audit::AuditLog::new(test_db.db.clone()),
        );
        let audit = bosun_audit::AuditServiceImpl::new(test_db.db.clone());
        let server = TestServer::start(
            Routes::new(documents.into_server()).add_service(audit.into_server()),
        )
        .await;
        Harness { test_db, server }
    }

    pub fn docs(&self) -> DocumentServiceClient<Channel> {
        DocumentServiceClient::new(self.server.channel())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.server.channel())
    }

    /// A request from `who` with an internal token carrying its policies and roles.
    pub fn req<T>(&self, who: &str, body: T) -> tonic::Request<T> {
        self.server.request(&caller(who), body)
    }

    pub async fn create(
        &self,
        who: &str,
        name: &str,
        content: &str,
    ) -> Result<pb::DocumentDescription, tonic::Status> {
        self.docs()
            .create_document(self.req(
                who,
                pb::CreateDocumentRequest {
                    name: name.into(),
                    content: content.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|response| {
                response
                    .into_inner()
                    .document_description
                    .expect("a description")
            })
    }

    pub async fn get(
        &self,
        who: &str,
        name: &str,
        document_version: &str,
        version_name: &str,
    ) -> Result<pb::GetDocumentResponse, tonic::Status> {
        self.docs()
            .get_document(self.req(
                who,
                pb::GetDocumentRequest {
                    name: name.into(),
                    document_version: document_version.into(),
                    version_name: version_name.into(),
                    document_format: 0,
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn update(
        &self,
        who: &str,
        name: &str,
        content: &str,
        document_version: &str,
        version_name: &str,
    ) -> Result<pb::DocumentDescription, tonic::Status> {
        self.docs()
            .update_document(self.req(
                who,
                pb::UpdateDocumentRequest {
                    name: name.into(),
                    content: content.into(),
                    document_version: document_version.into(),
                    version_name: version_name.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|response| {
                response
                    .into_inner()
                    .document_description
                    .expect("a description")
            })
    }

    pub async fn share(
        &self,
        who: &str,
        name: &str,
        add: &[&str],
        remove: &[&str],
    ) -> Result<(), tonic::Status> {
        self.docs()
            .modify_document_permission(self.req(
                who,
                pb::ModifyDocumentPermissionRequest {
                    name: name.into(),
                    permission_type: "Share".into(),
                    principals_to_add: add.iter().map(|p| p.to_string()).collect(),
                    principals_to_remove: remove.iter().map(|p| p.to_string()).collect(),
                },
            ))
            .await
            .map(|_| ())
    }

    pub async fn delete(
        &self,
        who: &str,
        name: &str,
        document_version: &str,
        version_name: &str,
    ) -> Result<(), tonic::Status> {
        self.docs()
            .delete_document(self.req(
                who,
                pb::DeleteDocumentRequest {
                    name: name.into(),
                    document_version: document_version.into(),
                    version_name: version_name.into(),
                },
            ))
            .await
            .map(|_| ())
    }

    /// Names the caller sees in ListDocuments with `filters`, following every page.
    pub async fn list_names(
        &self,
        who: &str,
        filters: Vec<pb::DocumentKeyValuesFilter>,
        max_results: i32,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut names = Vec::new();
        let mut next_token = String::new();
        loop {
            let page = self
                .docs()
                .list_documents(self.req(
                    who,
                    pb::ListDocumentsRequest {
                        filters: filters.clone(),
                        max_results,
                        next_token: next_token.clone(),
                    },
                ))
                .await?
                .into_inner();
            names.extend(page.document_identifiers.into_iter().map(|d| d.name));
            if page.next_token.is_empty() {
                return Ok(names);
            }
            next_token = page.next_token;
        }
    }

    /// Audit events for `action`, newest first, read through the AuditService as admin.
    pub async fn audit_events(&self, action: &str) -> Vec<audit_pb::AuditEvent> {
        self.audit()
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

    pub async fn stop(mut self) {
        self.server.stop();
        self.test_db.cleanup().await;
    }
}

pub fn filter(key: &str, values: &[&str]) -> pb::DocumentKeyValuesFilter {
    pb::DocumentKeyValuesFilter {
        key: key.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}
