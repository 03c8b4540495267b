//! `bosun.inventory.v1.NodeService`: validate → authorize → change and audit in one
//! transaction. RegisterManagedInstance is the exception: it has no caller (the activation
//! code is its credential), so it is audited as `anonymous` on failure and as the new node
//! on success.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_auth::{AuthContext, auth_context};
use bosun_core::ApiError;
use bosun_core::time::{from_timestamp, to_timestamp};
use bosun_nodelink::NodeControl;
use bosun_proto::agent::v1::close::Reason as CloseReason;
use bosun_proto::inventory::v1 as pb;
use bosun_proto::inventory::v1::node_service_server::{NodeService, NodeServiceServer};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::clock::{Clock, SystemClock};
use crate::filters;
use crate::store::{self, ActivationRecord, NodeRecord};
use crate::targets::{self, Target};
use crate::validate::{
    self, MAX_ACTIVATION_TEXT, MAX_FILTER_VALUES, MAX_REGISTRATION_LIMIT,
    REASON_ACTIVATION_EXPIRED, REASON_ACTIVATION_LIMIT, REASON_INVALID_ACTIVATION,
    REASON_INVALID_FILTER, invalid,
};

/// A node is Online while its last ping is at most this old.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(120);
const ACTIVATION_CODE_PREFIX: &str = "bac_";
const DEFAULT_ACTIVATION_LIFETIME: TimeDelta = TimeDelta::hours(24);
const MAX_ACTIVATION_LIFETIME: TimeDelta = TimeDelta::days(30);
const ACTIVATION_PAGE: usize = 50;
const NODE_PAGE_DEFAULT: usize = 50;
const NODE_PAGE_MAX: usize = 1000;
const TARGET_PAGE_DEFAULT: usize = 1000;
const TARGET_PAGE_MAX: usize = 10_000;

pub struct NodeServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    control: Arc<dyn NodeControl>,
    ping_timeout: TimeDelta,
    clock: Arc<dyn Clock>,
}

impl NodeServiceImpl {
    pub fn new(db: DatabaseConnection, audit: AuditLog, control: Arc<dyn NodeControl>) -> Self {
        NodeServiceImpl {
            db,
            audit,
            control,
            ping_timeout: TimeDelta::from_std(DEFAULT_PING_TIMEOUT).unwrap_or(TimeDelta::MAX),
            clock: Arc::new(SystemClock),
        }
    }

    /// How long after its last ping a node still counts as Online (default 120 s).
    pub fn with_ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        self
    }

    /// The time activations expire and ping status is judged by.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn into_server(self) -> NodeServiceServer<Self> {
        NodeServiceServer::new(self)
    }
}

fn action(rpc: &str) -> String {
    format!("inventory:{rpc}")
}

fn node_resource(node_id: &str) -> String {
    format!("node:{node_id}")
}

fn activation_resource(activation_id: &str) -> String {
    format!("activation:{activation_id}")
}

fn authorize(
    caller: &AuthContext,
    rpc: &str,
    resource: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    caller
        .authorize(&action(rpc), resource, tags)
        .map_err(ApiError::from)
}

fn invalid_activation() -> ApiError {
    ApiError::not_found("activation not found, or the activation code does not match")
        .with_reason(REASON_INVALID_ACTIVATION)
}

fn activation_not_found(activation_id: &str) -> ApiError {
    ApiError::not_found(format!("activation {activation_id} not found"))
        .with_reason(REASON_INVALID_ACTIVATION)
}

pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A fresh activation code: `bac_` and base64url of 32 random bytes.
pub(crate) fn new_activation_code() -> Result<String, ApiError> {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret)
        .map_err(|_| ApiError::internal("generate an activation code: no randomness"))?;
    Ok(format!(
        "{ACTIVATION_CODE_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(secret)
    ))
}

/// A fresh node id: `mi-` and 17 lowercase hex digits.
fn new_node_id() -> Result<String, ApiError> {
    let mut random = [0u8; 9];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| ApiError::internal("generate a node id: no randomness"))?;
    let mut digits = hex::encode(random);
    digits.truncate(17);
    Ok(format!("mi-{digits}"))
}

fn is_activation_id(value: &str) -> bool {
    value.len() == 36 && uuid::Uuid::try_parse(value).is_ok()
}

fn activation_to_proto(record: &ActivationRecord, now: DateTime<Utc>) -> pb::Activation {
    pb::Activation {
        activation_id: record.id.clone(),
        description: record.description.clone(),
        default_instance_name: record.default_instance_name.clone(),
        registration_limit: record.registration_limit,
        registrations_count: record.registrations_count,
        expiration_date: Some(to_timestamp(record.expires_at)),
        expired: record.expires_at <= now,
        created_date: Some(to_timestamp(record.created_at)),
        tags: validate::tags_to_proto(&record.tags),
    }
}

fn node_to_proto(
    node: &NodeRecord,
    now: DateTime<Utc>,
    timeout: TimeDelta,
) -> pb::InstanceInformation {
    pb::InstanceInformation {
        instance_id: node.id.clone(),
        ping_status: filters::ping_status(node.last_ping_at, now, timeout) as i32,
        last_ping_date_time: node.last_ping_at.map(to_timestamp),
        agent_version: node.agent_version.clone(),
        platform_type: node.platform_type.clone(),
        platform_name: node.platform_name.clone(),
        platform_version: node.platform_version.clone(),
        activation_id: node.activation_id.clone(),
        registration_date: Some(to_timestamp(node.registered_at)),
        resource_type: validate::RESOURCE_TYPE_NODE.to_owned(),
        name: node.name.clone(),
        ip_address: node.ip_addresses.first().cloned().unwrap_or_default(),
        computer_name: node.hostname.clone(),
        ip_addresses: node.ip_addresses.clone(),
        architecture: node.architecture.clone(),
    }
}

/// Cuts one extra row off a page and returns the token for the next, if there is one.
fn finish_page<T>(rows: &mut Vec<T>, page: usize, key: impl Fn(&T) -> String) -> String {
    if rows.len() > page {
        rows.truncate(page);
        rows.last()
            .map(|row| validate::encode_token(&key(row)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}

impl NodeServiceImpl {
    /// Checks a registration and runs it in one transaction with its audit event; the
    /// caller audits a failure.
    async fn try_register(
        &self,
        body: &pb::RegisterManagedInstanceRequest,
        record: AuditRecord,
    ) -> Result<String, ApiError> {
        if body.activation_id.is_empty() {
            return Err(invalid("activation_id", "is required"));
        }
        if body.activation_code.is_empty() {
            return Err(invalid("activation_code", "is required"));
        }
        if body.public_key.len() != 32 {
            return Err(invalid(
                "public_key",
                "must be a raw Ed25519 public key of exactly 32 bytes",
            ));
        }
        let facts = body.facts.clone().unwrap_or_default();
        validate::host_facts("facts", &facts)?;
        if !is_activation_id(&body.activation_id) {
            return Err(invalid_activation());
        }
        let presented = sha256(body.activation_code.as_bytes());
        let now = self.clock.now();

        let txn = bosun_store::begin_write(&self.db)
            .await
            .map_err(ApiError::internal)?;
        let activation = store::get_activation(&txn, &body.activation_id).await?;
        let stored = activation
            .as_ref()
            .and_then(|activation| hex::decode(&activation.code_hash).ok())
            .unwrap_or_else(|| vec![0u8; presented.len()]);
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(presented.as_slice(), stored.as_slice()).into();
        let Some(activation) = activation.filter(|_| matches) else {
            return Err(invalid_activation());
        };
        if activation.expires_at <= now {
            return Err(ApiError::failed_precondition(format!(
                "register with activation {}: it expired",
                activation.id
            ))
            .with_reason(REASON_ACTIVATION_EXPIRED));
        }
        if !store::take_registration(&txn, &activation.id, now).await? {
            return Err(ApiError::failed_precondition(format!(
                "register with activation {}: its limit of {} registrations is reached",
                activation.id, activation.registration_limit
            ))
            .with_reason(REASON_ACTIVATION_LIMIT));
        }
        let node_id = new_node_id()?;
        let node = NodeRecord {
            id: node_id.clone(),
            activation_id: activation.id.clone(),
            name: activation.default_instance_name.clone(),
            public_key: body.public_key.clone(),
            registered_at: now,
            deregistered_at: None,
            last_ping_at: None,
            agent_version: facts.agent_version,
            platform_type: facts.platform_type,
            platform_name: facts.platform_name,
            platform_version: facts.platform_version,
            hostname: facts.hostname,
            ip_addresses: facts.ip_addresses,
            architecture: facts.architecture,
        };
        store::insert_node(&txn, &node).await?;
        store::put_tags(&txn, &node_id, &activation.tags).await?;
        self.audit
            .record_in(
                &txn,
                record
                    .by(format!("node/{node_id}"))
                    .details(serde_json::json!({ "instance_id": node_id })),
            )
            .await?;
        txn.commit().await.map_err(ApiError::internal)?;
        Ok(node_id)
    }
}

#[tonic::async_trait]
impl NodeService for NodeServiceImpl {
    async fn create_activation(
        &self,
        request: Request<pb::CreateActivationRequest>,
    ) -> Result<Response<pb::CreateActivationResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::text("description", &body.description, MAX_ACTIVATION_TEXT)?;
        validate::text(
            "default_instance_name",
            &body.default_instance_name,
            MAX_ACTIVATION_TEXT,
        )?;
        let registration_limit = match body.registration_limit {
            0 => 1,
            n if (1..=MAX_REGISTRATION_LIMIT).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "registration_limit",
                    format!("must be 1-{MAX_REGISTRATION_LIMIT} (0 means 1)"),
                )
                .into());
            }
        };
        let now = self.clock.now();
        let expires_at = match &body.expiration_date {
            None => now + DEFAULT_ACTIVATION_LIFETIME,
            Some(at) => {
                let at = from_timestamp("expiration_date", at)?;
                if at <= now {
                    return Err(invalid("expiration_date", "must be in the future").into());
                }
                if at > now + MAX_ACTIVATION_LIFETIME {
                    return Err(invalid("expiration_date", "must be at most 30 days ahead").into());
                }
                at
            }
        };
        let tags = validate::tags("tags", &body.tags)?;
        let activation_id = uuid::Uuid::now_v7().to_string();
        let code = new_activation_code()?;
        let record = ActivationRecord {
            id: activation_id.clone(),
            code_hash: hex::encode(sha256(code.as_bytes())),
            description: body.description.clone(),
            default_instance_name: body.default_instance_name.clone(),
            registration_limit,
            registrations_count: 0,
            expires_at,
            created_at: now,
            tags,
        };
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("CreateActivation"),
            &activation_resource(&activation_id),
        )
        .details(serde_json::json!({
            "registration_limit": registration_limit,
            "expiration_date": expires_at.to_rfc3339(),
            "tag_keys": record.tags.keys().collect::<Vec<_>>(),
        }));
        let authorization = authorize(
            &caller,
            "CreateActivation",
            &activation_resource("*"),
            &BTreeMap::new(),
        );
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move { store::insert_activation(txn, &record).await })
            })
            .await?;
        Ok(Response::new(pb::CreateActivationResponse {
            activation_id,
            activation_code: code,
        }))
    }

    async fn describe_activations(
        &self,
        request: Request<pb::DescribeActivationsRequest>,
    ) -> Result<Response<pb::DescribeActivationsResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let (mut ids, mut names) = (Vec::new(), Vec::new());
        for (index, filter) in body.filters.iter().enumerate() {
            let field = format!("filters[{index}]");
            if filter.filter_values.is_empty() || filter.filter_values.len() > MAX_FILTER_VALUES {
                return Err(ApiError::invalid(
                    format!("{field}.filter_values"),
                    format!("must have 1-{MAX_FILTER_VALUES} values"),
                )
                .with_reason(REASON_INVALID_FILTER)
                .into());
            }
            let target = match filter.filter_key.as_str() {
                "ActivationIds" => &mut ids,
                "DefaultInstanceName" => &mut names,
                _ => {
                    return Err(ApiError::invalid(
                        format!("{field}.filter_key"),
                        "must be ActivationIds or DefaultInstanceName",
                    )
                    .with_reason(REASON_INVALID_FILTER)
                    .into());
                }
            };
            // Two filters of one key are ANDed: keep the values both allow.
            if target.is_empty() {
                target.extend(filter.filter_values.iter().cloned());
            } else {
                target.retain(|value| filter.filter_values.contains(value));
                if target.is_empty() {
                    return Ok(Response::new(pb::DescribeActivationsResponse::default()));
                }
            }
        }
        let page = validate::page_size(
            "max_results",
            body.max_results,
            ACTIVATION_PAGE,
            ACTIVATION_PAGE,
        )?;
        let before = validate::decode_token("next_token", &body.next_token, is_activation_id)?;
        authorize(
            &caller,
            "DescribeActivations",
            &activation_resource("*"),
            &BTreeMap::new(),
        )?;
        let mut records =
            store::list_activations(&self.db, &ids, &names, before.as_deref(), page + 1).await?;
        let next_token = finish_page(&mut records, page, |record| record.id.clone());
        let now = self.clock.now();
        Ok(Response::new(pb::DescribeActivationsResponse {
            activation_list: records
                .iter()
                .map(|record| activation_to_proto(record, now))
                .collect(),
            next_token,
        }))
    }

    async fn delete_activation(
        &self,
        request: Request<pb::DeleteActivationRequest>,
    ) -> Result<Response<pb::DeleteActivationResponse>, Status> {
        let caller = auth_context(&request)?;
        let activation_id = request.get_ref().activation_id.clone();
        if activation_id.is_empty() {
            return Err(invalid("activation_id", "is required").into());
        }
        if !is_activation_id(&activation_id) {
            return Err(activation_not_found(&activation_id).into());
        }
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("DeleteActivation"),
            &activation_resource(&activation_id),
        );
        let authorization = authorize(
            &caller,
            "DeleteActivation",
            &activation_resource(&activation_id),
            &BTreeMap::new(),
        );
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::delete_activation(txn, &activation_id).await? {
                        Ok(())
                    } else {
                        Err(activation_not_found(&activation_id))
                    }
                })
            })
            .await?;
        Ok(Response::new(pb::DeleteActivationResponse {}))
    }

    async fn register_managed_instance(
        &self,
        request: Request<pb::RegisterManagedInstanceRequest>,
    ) -> Result<Response<pb::RegisterManagedInstanceResponse>, Status> {
        // No caller context: this path is public at the edge and in `VerifyLayer`.
        let body = request.get_ref();
        // The id is the caller's text; keep the audit's resource bounded.
        let shown_id: String = body.activation_id.chars().take(64).collect();
        let record = AuditRecord::anonymous(
            &request,
            &action("RegisterManagedInstance"),
            &activation_resource(&shown_id),
        );
        let result = self.try_register(body, record.clone()).await;
        match result {
            Ok(instance_id) => Ok(Response::new(pb::RegisterManagedInstanceResponse {
                instance_id,
            })),
            Err(error) => {
                // The transaction (if any) rolled back; the failure is audited on its own,
                // never with the code.
                self.audit
                    .record(record.outcome(AuditOutcome::Failure(error.code())))
                    .await?;
                Err(error.into())
            }
        }
    }

    async fn describe_instance_information(
        &self,
        request: Request<pb::DescribeInstanceInformationRequest>,
    ) -> Result<Response<pb::DescribeInstanceInformationResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let filters = filters::parse(&body.filters)?;
        let page = validate::page_size(
            "max_results",
            body.max_results,
            NODE_PAGE_DEFAULT,
            NODE_PAGE_MAX,
        )?;
        let after = validate::decode_token("next_token", &body.next_token, validate::is_node_id)?;
        authorize(
            &caller,
            "DescribeInstanceInformation",
            &node_resource("*"),
            &BTreeMap::new(),
        )?;
        let now = self.clock.now();
        let condition = filters::condition(&self.db, &filters, now, self.ping_timeout).await?;
        let mut nodes = store::list_nodes(&self.db, condition, after.as_deref(), page + 1).await?;
        let next_token = finish_page(&mut nodes, page, |node| node.id.clone());
        Ok(Response::new(pb::DescribeInstanceInformationResponse {
            instance_information_list: nodes
                .iter()
                .map(|node| node_to_proto(node, now, self.ping_timeout))
                .collect(),
            next_token,
        }))
    }

    async fn deregister_managed_instance(
        &self,
        request: Request<pb::DeregisterManagedInstanceRequest>,
    ) -> Result<Response<pb::DeregisterManagedInstanceResponse>, Status> {
        let caller = auth_context(&request)?;
        let node_id = request.get_ref().instance_id.clone();
        validate::node_id("instance_id", &node_id)?;
        let tags = store::node_tags(&self.db, &node_id).await?;
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("DeregisterManagedInstance"),
            &node_resource(&node_id),
        );
        let authorization = authorize(
            &caller,
            "DeregisterManagedInstance",
            &node_resource(&node_id),
            &tags,
        );
        let now = self.clock.now();
        let id = node_id.clone();
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::deregister_node(txn, &id, now).await? {
                        Ok(())
                    } else {
                        Err(validate::node_not_found(&id))
                    }
                })
            })
            .await?;
        // The key is refused from now on whatever happens here; closing the stream only
        // makes it prompt.
        if let Err(error) = self
            .control
            .disconnect(&node_id, CloseReason::Deregistered)
            .await
        {
            tracing::warn!(node_id, %error, "closing the stream of a deregistered node failed");
        }
        Ok(Response::new(pb::DeregisterManagedInstanceResponse {}))
    }

    async fn add_tags_to_resource(
        &self,
        request: Request<pb::AddTagsToResourceRequest>,
    ) -> Result<Response<pb::AddTagsToResourceResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::node_resource_type(&body.resource_type)?;
        validate::node_id("resource_id", &body.resource_id)?;
        if body.tags.is_empty() {
            return Err(invalid("tags", "at least one tag is required").into());
        }
        let tags = validate::tags("tags", &body.tags)?;
        let node_id = body.resource_id.clone();
        let current = store::node_tags(&self.db, &node_id).await?;
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("AddTagsToResource"),
            &node_resource(&node_id),
        )
        .details(serde_json::json!({ "keys": tags.keys().collect::<Vec<_>>() }));
        let authorization = authorize(
            &caller,
            "AddTagsToResource",
            &node_resource(&node_id),
            &current,
        );
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::get_node(txn, &node_id).await?.is_none() {
                        return Err(validate::node_not_found(&node_id));
                    }
                    let mut merged = store::node_tags(txn, &node_id).await?;
                    merged.extend(tags.clone());
                    if merged.len() > validate::MAX_TAGS {
                        return Err(validate::too_many_tags("tags"));
                    }
                    store::put_tags(txn, &node_id, &tags).await
                })
            })
            .await?;
        Ok(Response::new(pb::AddTagsToResourceResponse {}))
    }

    async fn remove_tags_from_resource(
        &self,
        request: Request<pb::RemoveTagsFromResourceRequest>,
    ) -> Result<Response<pb::RemoveTagsFromResourceResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::node_resource_type(&body.resource_type)?;
        validate::node_id("resource_id", &body.resource_id)?;
        if body.tag_keys.is_empty() || body.tag_keys.len() > validate::MAX_TAGS {
            return Err(invalid(
                "tag_keys",
                format!("must have 1-{} keys", validate::MAX_TAGS),
            )
            .into());
        }
        for (index, key) in body.tag_keys.iter().enumerate() {
            if key.is_empty() || key.chars().count() > validate::MAX_TAG_KEY_LENGTH {
                return Err(invalid(
                    format!("tag_keys[{index}]"),
                    format!("must be 1-{} characters", validate::MAX_TAG_KEY_LENGTH),
                )
                .into());
            }
        }
        let node_id = body.resource_id.clone();
        let keys = body.tag_keys.clone();
        let current = store::node_tags(&self.db, &node_id).await?;
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("RemoveTagsFromResource"),
            &node_resource(&node_id),
        )
        .details(serde_json::json!({ "keys": keys }));
        let authorization = authorize(
            &caller,
            "RemoveTagsFromResource",
            &node_resource(&node_id),
            &current,
        );
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::get_node(txn, &node_id).await?.is_none() {
                        return Err(validate::node_not_found(&node_id));
                    }
                    store::remove_tags(txn, &node_id, &keys).await
                })
            })
            .await?;
        Ok(Response::new(pb::RemoveTagsFromResourceResponse {}))
    }

    async fn list_tags_for_resource(
        &self,
        request: Request<pb::ListTagsForResourceRequest>,
    ) -> Result<Response<pb::ListTagsForResourceResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::node_resource_type(&body.resource_type)?;
        validate::node_id("resource_id", &body.resource_id)?;
        let tags = store::node_tags(&self.db, &body.resource_id).await?;
        authorize(
            &caller,
            "ListTagsForResource",
            &node_resource(&body.resource_id),
            &tags,
        )?;
        if store::get_node(&self.db, &body.resource_id)
            .await?
            .is_none()
        {
            return Err(validate::node_not_found(&body.resource_id).into());
        }
        Ok(Response::new(pb::ListTagsForResourceResponse {
            tag_list: validate::tags_to_proto(&tags),
        }))
    }

    async fn resolve_targets(
        &self,
        request: Request<pb::ResolveTargetsRequest>,
    ) -> Result<Response<pb::ResolveTargetsResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let parsed = Target::parse_all("targets", &body.targets)?;
        let page = validate::page_size(
            "max_results",
            body.max_results,
            TARGET_PAGE_DEFAULT,
            TARGET_PAGE_MAX,
        )?;
        let after = validate::decode_token("next_token", &body.next_token, validate::is_node_id)?;
        authorize(
            &caller,
            "ResolveTargets",
            &node_resource("*"),
            &BTreeMap::new(),
        )?;
        let mut instance_ids =
            targets::resolve(&self.db, &parsed, after.as_deref(), page + 1).await?;
        let next_token = finish_page(&mut instance_ids, page, Clone::clone);
        Ok(Response::new(pb::ResolveTargetsResponse {
            instance_ids,
            next_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_ids_have_their_shapes() {
        let code = new_activation_code().expect("code");
        assert!(code.starts_with("bac_"));
        assert_eq!(code.len(), 4 + 43);
        assert!(
            code[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(code, new_activation_code().expect("code"));
        let id = new_node_id().expect("id");
        assert!(validate::is_node_id(&id), "{id}");
    }
}
