//! `bosun.inventory.v1.ResourceGroupService`: named, saved tag queries over nodes, resolved
//! live with the same queries as targets. Validate → authorize → change and audit in one
//! transaction.

use std::collections::BTreeMap;

use bosun_audit::{AuditLog, AuditRecord};
use bosun_auth::{AuthContext, auth_context};
use bosun_core::ApiError;
use bosun_core::time::to_timestamp;
use bosun_proto::inventory::v1 as pb;
use bosun_proto::inventory::v1::resource_group_service_server::{
    ResourceGroupService, ResourceGroupServiceServer,
};
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::clock::{Clock, SystemClock};
use crate::store::{self, GroupRecord};
use crate::targets;
use crate::validate::{self, GroupQuery, MAX_GROUP_DESCRIPTION_LENGTH, REASON_GROUP_EXISTS};

const GROUP_PAGE_DEFAULT: usize = 50;
const GROUP_PAGE_MAX: usize = 100;
const RESOURCE_PAGE_DEFAULT: usize = 100;
const RESOURCE_PAGE_MAX: usize = 1000;

pub struct ResourceGroupServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
}

impl ResourceGroupServiceImpl {
    pub fn new(db: DatabaseConnection, audit: AuditLog) -> Self {
        ResourceGroupServiceImpl {
            db,
            audit,
            clock: Arc::new(SystemClock),
        }
    }

    /// The time groups are stamped with.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn into_server(self) -> ResourceGroupServiceServer<Self> {
        ResourceGroupServiceServer::new(self)
    }
}

fn action(rpc: &str) -> String {
    format!("inventory:{rpc}")
}

fn resource(name: &str) -> String {
    format!("resource-group:{name}")
}

fn authorize(caller: &AuthContext, rpc: &str, name: &str) -> Result<(), ApiError> {
    caller
        .authorize(&action(rpc), &resource(name), &BTreeMap::new())
        .map_err(ApiError::from)
}

fn group_to_proto(record: &GroupRecord) -> pb::Group {
    pb::Group {
        name: record.name.clone(),
        description: record.description.clone(),
        resource_query: Some(record.query.to_proto()),
        created_date: Some(to_timestamp(record.created_at)),
        updated_date: Some(to_timestamp(record.updated_at)),
    }
}

fn audit_details(query: &GroupQuery) -> serde_json::Value {
    serde_json::json!({ "resource_query": query })
}

#[tonic::async_trait]
impl ResourceGroupService for ResourceGroupServiceImpl {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::group_name("name", &body.name)?;
        validate::text(
            "description",
            &body.description,
            MAX_GROUP_DESCRIPTION_LENGTH,
        )?;
        let query = GroupQuery::parse("resource_query", body.resource_query.as_ref())?;
        let now = self.clock.now();
        let record = GroupRecord {
            name: body.name.clone(),
            description: body.description.clone(),
            query,
            created_at: now,
            updated_at: now,
        };
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("CreateGroup"),
            &resource(&record.name),
        )
        .details(audit_details(&record.query));
        let authorization = authorize(&caller, "CreateGroup", "*");
        let group = self
            .audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::get_group(txn, &record.name).await?.is_some() {
                        return Err(ApiError::already_exists(format!(
                            "resource group {} already exists",
                            record.name
                        ))
                        .with_reason(REASON_GROUP_EXISTS));
                    }
                    store::insert_group(txn, &record).await?;
                    Ok(group_to_proto(&record))
                })
            })
            .await?;
        Ok(Response::new(pb::CreateGroupResponse {
            group: Some(group),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let page = validate::page_size(
            "max_results",
            body.max_results,
            GROUP_PAGE_DEFAULT,
            GROUP_PAGE_MAX,
        )?;
        let after = validate::decode_token("next_token", &body.next_token, |name| {
            validate::group_name_rule(name).is_ok()
        })?;
        authorize(&caller, "ListGroups", "*")?;
        let mut records = store::list_groups(&self.db, after.as_deref(), page + 1).await?;
        let next_token = if records.len() > page {
            records.truncate(page);
            records
                .last()
                .map(|record| validate::encode_token(&record.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListGroupsResponse {
            groups: records.iter().map(group_to_proto).collect(),
            next_token,
        }))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let caller = auth_context(&request)?;
        let name = &request.get_ref().name;
        validate::group_name("name", name)?;
        authorize(&caller, "GetGroup", name)?;
        let record = store::get_group(&self.db, name)
            .await?
            .ok_or_else(|| validate::group_not_found(name))?;
        Ok(Response::new(pb::GetGroupResponse {
            group: Some(group_to_proto(&record)),
        }))
    }

    async fn update_group_query(
        &self,
        request: Request<pb::UpdateGroupQueryRequest>,
    ) -> Result<Response<pb::UpdateGroupQueryResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::group_name("name", &body.name)?;
        let query = GroupQuery::parse("resource_query", body.resource_query.as_ref())?;
        if let Some(description) = &body.description {
            validate::text("description", description, MAX_GROUP_DESCRIPTION_LENGTH)?;
        }
        let name = body.name.clone();
        let description = body.description.clone();
        let now = self.clock.now();
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("UpdateGroupQuery"),
            &resource(&name),
        )
        .details(audit_details(&query));
        let authorization = authorize(&caller, "UpdateGroupQuery", &name);
        let group = self
            .audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    let mut record = store::get_group(txn, &name)
                        .await?
                        .ok_or_else(|| validate::group_not_found(&name))?;
                    record.query = query;
                    if let Some(description) = description {
                        record.description = description;
                    }
                    record.updated_at = now;
                    store::update_group(txn, &record).await?;
                    Ok(group_to_proto(&record))
                })
            })
            .await?;
        Ok(Response::new(pb::UpdateGroupQueryResponse {
            group: Some(group),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let caller = auth_context(&request)?;
        let name = request.get_ref().name.clone();
        validate::group_name("name", &name)?;
        let audit =
            AuditRecord::for_request(&request, &caller, &action("DeleteGroup"), &resource(&name));
        let authorization = authorize(&caller, "DeleteGroup", &name);
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::delete_group(txn, &name).await? {
                        Ok(())
                    } else {
                        Err(validate::group_not_found(&name))
                    }
                })
            })
            .await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn list_group_resources(
        &self,
        request: Request<pb::ListGroupResourcesRequest>,
    ) -> Result<Response<pb::ListGroupResourcesResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::group_name("name", &body.name)?;
        let page = validate::page_size(
            "max_results",
            body.max_results,
            RESOURCE_PAGE_DEFAULT,
            RESOURCE_PAGE_MAX,
        )?;
        let after = validate::decode_token("next_token", &body.next_token, validate::is_node_id)?;
        authorize(&caller, "ListGroupResources", &body.name)?;
        let query = targets::group_query(&self.db, &body.name)
            .await?
            .ok_or_else(|| validate::group_not_found(&body.name))?;
        let mut ids = targets::node_ids(
            &self.db,
            targets::query_condition(&query),
            after.as_deref(),
            page + 1,
        )
        .await?;
        let next_token = if ids.len() > page {
            ids.truncate(page);
            ids.last()
                .map(|id| validate::encode_token(id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListGroupResourcesResponse {
            resources: ids
                .into_iter()
                .map(|id| pb::ResourceIdentifier {
                    resource_arn: format!("node:{id}"),
                    resource_type: validate::GROUP_RESOURCE_TYPE_NODE.to_owned(),
                    resource_id: id,
                })
                .collect(),
            next_token,
        }))
    }
}
