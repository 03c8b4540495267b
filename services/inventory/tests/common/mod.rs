//! Test harness: NodeService, ResourceGroupService and AuditService in-process behind
//! `VerifyLayer` over a fresh database, with a manual clock, a fake `NodeControl` that
//! records disconnects, and the `Directory` the agent channel would use.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bosun_core::ApiError;
use bosun_inventory::{
    Directory, ManualClock, Migrator, NodeServiceImpl, ResourceGroupServiceImpl,
};
use bosun_nodelink::NodeControl;
use bosun_proto::agent::v1::HostFacts;
use bosun_proto::agent::v1::close::Reason;
use bosun_proto::audit::v1 as audit_pb;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::inventory::v1 as pb;
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::inventory::v1::resource_group_service_client::ResourceGroupServiceClient;
use bosun_store::testing::TestDatabase;
use bosun_testkit::{ALLOW_ALL, Caller, TestServer};
#[allow(unused_imports)]
pub use bosun_testkit::{assert_error, violated_fields};
use chrono::{DateTime, Utc};
use tonic::service::Routes;
use tonic::transport::Channel;

pub const ADMIN: &str = "user/admin";
pub const NOBODY: &str = "user/nobody";
/// May read nodes and tag the ones tagged `team=blue`, nothing else.
pub const BLUE: &str = "user/blue";

const BLUE_POLICY: &str = r#"{"Statement": [
  {"Effect": "Allow", "Action": ["inventory:DescribeInstanceInformation", "inventory:ListTagsForResource"], "Resource": "*"},
  {"Effect": "Allow", "Action": "inventory:AddTagsToResource", "Resource": "node:*",
   "Condition": {"StringEquals": {"bosun:ResourceTag/team": "blue"}}}
]}"#;

pub fn caller(who: &str) -> Caller {
    let caller = Caller::new(who);
    match who {
        ADMIN => caller.policy(ALLOW_ALL),
        BLUE => caller.policy(BLUE_POLICY),
        _ => caller,
    }
}

/// A `NodeControl` that records what it was asked, and fails when told to.
#[derive(Default)]
pub struct FakeControl {
    pub disconnects: Mutex<Vec<(String, Reason)>>,
    pub fail: AtomicBool,
}

#[async_trait::async_trait]
impl NodeControl for FakeControl {
    async fn disconnect(&self, node_id: &str, reason: Reason) -> Result<(), ApiError> {
        self.disconnects
            .lock()
            .expect("lock")
            .push((node_id.to_owned(), reason));
        if self.fail.load(Ordering::SeqCst) {
            return Err(ApiError::Unavailable("no presence store".into()));
        }
        Ok(())
    }
}

pub struct Harness {
    pub test_db: TestDatabase,
    pub clock: Arc<ManualClock>,
    pub control: Arc<FakeControl>,
    pub directory: Directory,
    server: TestServer,
}

impl Harness {
    pub async fn start(test_db: TestDatabase) -> Harness {
        bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
            .await
            .expect("audit migrations apply");
        bosun_store::migrate::<Migrator>(&test_db.db)
            .await
            .expect("inventory migrations apply");
        // Applying twice is harmless.
        bosun_store::migrate::<Migrator>(&test_db.db)
            .await
            .expect("inventory migrations re-apply");
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let control = Arc::new(FakeControl::default());
        let audit = bosun_audit::AuditLog::new(test_db.db.clone());
        let nodes = NodeServiceImpl::new(test_db.db.clone(), audit.clone(), control.clone())
            .with_ping_timeout(std::time::Duration::from_secs(120))
            .with_clock(clock.clone());
        let groups =
            ResourceGroupServiceImpl::new(test_db.db.clone(), audit).with_clock(clock.clone());
        let audit_service = bosun_audit::AuditServiceImpl::new(test_db.db.clone());
        let server = TestServer::start(
            Routes::new(nodes.into_server())
                .add_service(groups.into_server())
                .add_service(audit_service.into_server()),
        )
        .await;
        Harness {
            directory: Directory::new(test_db.db.clone()),
            test_db,
            clock,
            control,
            server,
        }
    }

    pub fn nodes(&self) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.server.channel())
    }

    pub fn groups(&self) -> ResourceGroupServiceClient<Channel> {
        ResourceGroupServiceClient::new(self.server.channel())
    }

    pub fn req<T>(&self, who: &str, body: T) -> tonic::Request<T> {
        self.server.request(&caller(who), body)
    }

    pub fn now(&self) -> DateTime<Utc> {
        use bosun_inventory::Clock;
        self.clock.now()
    }

    /// Creates an activation as admin; returns its id and code.
    pub async fn activation(
        &self,
        limit: i32,
        tags: &[(&str, &str)],
        name: &str,
    ) -> (String, String) {
        let response = self
            .nodes()
            .create_activation(self.req(
                ADMIN,
                pb::CreateActivationRequest {
                    description: "test".into(),
                    default_instance_name: name.into(),
                    registration_limit: limit,
                    expiration_date: None,
                    tags: tags_of(tags),
                },
            ))
            .await
            .expect("create activation")
            .into_inner();
        (response.activation_id, response.activation_code)
    }

    /// A registration request (sent with a token of a caller without any grant: the
    /// handler needs none).
    pub async fn try_register(
        &self,
        activation_id: &str,
        code: &str,
        facts: HostFacts,
    ) -> Result<String, tonic::Status> {
        self.nodes()
            .register_managed_instance(self.req(
                NOBODY,
                pb::RegisterManagedInstanceRequest {
                    activation_id: activation_id.into(),
                    activation_code: code.into(),
                    public_key: vec![7u8; 32],
                    facts: Some(facts),
                },
            ))
            .await
            .map(|response| response.into_inner().instance_id)
    }

    pub async fn register(&self, activation_id: &str, code: &str, facts: HostFacts) -> String {
        self.try_register(activation_id, code, facts)
            .await
            .expect("register")
    }

    /// Registers `count` Linux nodes with a fresh activation; ids in id order.
    pub async fn nodes_registered(&self, count: usize) -> Vec<String> {
        let (id, code) = self
            .activation(i32::try_from(count).expect("count"), &[], "")
            .await;
        let mut ids = Vec::new();
        for _ in 0..count {
            ids.push(self.register(&id, &code, linux()).await);
        }
        ids.sort();
        ids
    }

    pub async fn tag(&self, node_id: &str, tags: &[(&str, &str)]) {
        self.nodes()
            .add_tags_to_resource(self.req(
                ADMIN,
                pb::AddTagsToResourceRequest {
                    resource_type: "ManagedInstance".into(),
                    resource_id: node_id.into(),
                    tags: tags_of(tags),
                },
            ))
            .await
            .expect("tag node");
    }

    /// Every page of DescribeInstanceInformation with `filters`, `page` at a time.
    pub async fn describe(
        &self,
        filters: Vec<pb::InstanceInformationFilter>,
        page: i32,
    ) -> Vec<pb::InstanceInformation> {
        let mut all = Vec::new();
        let mut next_token = String::new();
        loop {
            let response = self
                .nodes()
                .describe_instance_information(self.req(
                    ADMIN,
                    pb::DescribeInstanceInformationRequest {
                        filters: filters.clone(),
                        max_results: page,
                        next_token: next_token.clone(),
                    },
                ))
                .await
                .expect("describe instance information")
                .into_inner();
            assert!(
                page == 0 || response.instance_information_list.len() <= page as usize,
                "page too long"
            );
            all.extend(response.instance_information_list);
            if response.next_token.is_empty() {
                return all;
            }
            next_token = response.next_token;
        }
    }

    pub async fn describe_ids(&self, filters: Vec<pb::InstanceInformationFilter>) -> Vec<String> {
        self.describe(filters, 2)
            .await
            .into_iter()
            .map(|info| info.instance_id)
            .collect()
    }

    /// Every page of ResolveTargets.
    pub async fn resolve(
        &self,
        targets: Vec<pb::Target>,
        page: i32,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut all = Vec::new();
        let mut next_token = String::new();
        loop {
            let response = self
                .nodes()
                .resolve_targets(self.req(
                    ADMIN,
                    pb::ResolveTargetsRequest {
                        targets: targets.clone(),
                        max_results: page,
                        next_token: next_token.clone(),
                    },
                ))
                .await?
                .into_inner();
            all.extend(response.instance_ids);
            if response.next_token.is_empty() {
                return Ok(all);
            }
            next_token = response.next_token;
        }
    }

    /// Audit events for `action`, newest first.
    pub async fn audit_events(&self, action: &str) -> Vec<audit_pb::AuditEvent> {
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

    pub async fn stop(mut self) {
        self.server.stop();
        self.test_db.cleanup().await;
    }
}

pub fn tags_of(tags: &[(&str, &str)]) -> Vec<pb::Tag> {
    tags.iter()
        .map(|(key, value)| pb::Tag {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

pub fn linux() -> HostFacts {
    HostFacts {
        platform_type: "Linux".into(),
        platform_name: "Ubuntu".into(),
        platform_version: "24.04".into(),
        hostname: "web-1".into(),
        ip_addresses: vec!["10.0.0.5".into(), "fe80::1".into()],
        agent_version: "0.1.0".into(),
        architecture: "x86_64".into(),
    }
}

pub fn filter(key: &str, values: &[&str]) -> pb::InstanceInformationFilter {
    pb::InstanceInformationFilter {
        key: key.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

pub fn target(key: &str, values: &[&str]) -> pb::Target {
    pb::Target {
        key: key.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}
