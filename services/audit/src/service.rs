//! `bosun.audit.v1.AuditService`: filtered, paged queries over the audit trail.

use base64::Engine;
use bosun_auth::auth_context;
use bosun_core::ApiError;
use bosun_core::time::{from_timestamp, to_timestamp};
use bosun_proto::audit::v1::{
    AuditEvent, AuditResult, ListAuditEventsRequest, ListAuditEventsResponse,
    audit_service_server::AuditService,
};
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status};

use crate::entity::{self, Column, Entity};

const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: i32 = 1000;
const MAX_FILTER_LENGTH: usize = 2048;

pub struct AuditServiceImpl {
    db: DatabaseConnection,
}

impl AuditServiceImpl {
    pub fn new(db: DatabaseConnection) -> Self {
        AuditServiceImpl { db }
    }

    pub fn into_server(
        self,
    ) -> bosun_proto::audit::v1::audit_service_server::AuditServiceServer<Self> {
        bosun_proto::audit::v1::audit_service_server::AuditServiceServer::new(self)
    }
}

/// A filter value that is exact, or a prefix when it ends in `*`.
fn text_filter(
    column: Column,
    field: &str,
    value: &str,
) -> Result<Option<sea_orm::Condition>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_FILTER_LENGTH {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_FILTER_LENGTH} characters"),
        ));
    }
    let condition = sea_orm::Condition::all();
    Ok(Some(match value.strip_suffix('*') {
        Some(prefix) => {
            if prefix.contains('*') {
                return Err(ApiError::invalid(field, "`*` is allowed only at the end"));
            }
            let escaped = prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            condition.add(Expr::col(column).like(LikeExpr::new(format!("{escaped}%")).escape('\\')))
        }
        None => {
            if value.contains('*') {
                return Err(ApiError::invalid(field, "`*` is allowed only at the end"));
            }
            condition.add(column.eq(value))
        }
    }))
}

fn decode_token(token: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("next_token", "is not a token this server issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let id = String::from_utf8(bytes).map_err(|_| bad())?;
    uuid::Uuid::parse_str(&id).map_err(|_| bad())?;
    Ok(id)
}

fn encode_token(event_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(event_id)
}

fn result_name(result: AuditResult) -> Option<&'static str> {
    match result {
        AuditResult::Unspecified => None,
        AuditResult::Success => Some("success"),
        AuditResult::Failure => Some("failure"),
        AuditResult::Denied => Some("denied"),
    }
}

fn to_proto(model: entity::Model) -> AuditEvent {
    let result = match model.result.as_str() {
        "success" => AuditResult::Success,
        "failure" => AuditResult::Failure,
        "denied" => AuditResult::Denied,
        _ => AuditResult::Unspecified,
    };
    AuditEvent {
        event_id: model.event_id,
        event_time: Some(to_timestamp(model.event_time)),
        principal: model.principal,
        action: model.action,
        resource: model.resource,
        result: result as i32,
        error_code: model.error_code,
        trace_id: model.trace_id,
        source_address: model.source_address,
        details: model.details,
    }
}

impl AuditServiceImpl {
    async fn list(
        &self,
        request: ListAuditEventsRequest,
    ) -> Result<ListAuditEventsResponse, ApiError> {
        let page = match request.max_results {
            0 => DEFAULT_PAGE,
            n if (1..=MAX_PAGE).contains(&n) => u64::try_from(n).unwrap_or(DEFAULT_PAGE),
            _ => {
                return Err(ApiError::invalid(
                    "max_results",
                    format!("must be 1-{MAX_PAGE}"),
                ));
            }
        };
        let result = AuditResult::try_from(request.result)
            .map_err(|_| ApiError::invalid("result", "is not a known AuditResult"))?;

        let mut query = Entity::find();
        if !request.principal.is_empty() {
            query = query.filter(Column::Principal.eq(request.principal.as_str()));
        }
        for (column, field, value) in [
            (Column::Action, "action", &request.action),
            (Column::Resource, "resource", &request.resource),
        ] {
            if let Some(condition) = text_filter(column, field, value)? {
                query = query.filter(condition);
            }
        }
        if let Some(name) = result_name(result) {
            query = query.filter(Column::Result.eq(name));
        }
        if let Some(start) = &request.start_time {
            query = query.filter(Column::EventTime.gte(from_timestamp("start_time", start)?));
        }
        if let Some(end) = &request.end_time {
            query = query.filter(Column::EventTime.lt(from_timestamp("end_time", end)?));
        }
        if !request.next_token.is_empty() {
            query = query.filter(Column::EventId.lt(decode_token(&request.next_token)?));
        }
        // One extra row tells whether another page exists without a second query.
        let mut rows = query
            .order_by_desc(Column::EventId)
            .limit(page + 1)
            .all(&self.db)
            .await
            .map_err(|error| ApiError::internal(format!("list audit events: {error}")))?;
        let next_token = if rows.len() as u64 > page {
            rows.truncate(usize::try_from(page).unwrap_or(rows.len()));
            rows.last()
                .map(|row| encode_token(&row.event_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListAuditEventsResponse {
            events: rows.into_iter().map(to_proto).collect(),
            next_token,
        })
    }
}

#[tonic::async_trait]
impl AuditService for AuditServiceImpl {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let caller = auth_context(&request)?;
        caller
            .authorize("audit:ListAuditEvents", "audit:events", &Default::default())
            .map_err(ApiError::from)?;
        Ok(Response::new(self.list(request.into_inner()).await?))
    }
}
