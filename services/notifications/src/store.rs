//! The notifications store: plain async functions over any connection that return domain
//! records, so the service can run a change and its audit event in one transaction. sea-orm
//! stays inside this module.

use bosun_core::ApiError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TryInsertResult,
};

use crate::entities::{delivery, webhook};
use crate::validate::Filters;

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "Pending",
            DeliveryStatus::Succeeded => "Succeeded",
            DeliveryStatus::Failed => "Failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "Pending" => Some(DeliveryStatus::Pending),
            "Succeeded" => Some(DeliveryStatus::Succeeded),
            "Failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A webhook as stored; `sealed_secret` is the base64 envelope, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub webhook_id: String,
    pub url: String,
    pub description: String,
    pub filters: Filters,
    pub enabled: bool,
    pub sealed_secret: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One event for one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub webhook_id: String,
    pub event_id: String,
    pub source: String,
    pub operation: String,
    pub name: String,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

fn db_error(what: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
    move |error| ApiError::internal(format!("{what}: {error}"))
}

fn to_json(values: &[String]) -> String {
    // A list of strings always serializes.
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn from_json(what: &str, text: &str) -> Result<Vec<String>, ApiError> {
    serde_json::from_str(text).map_err(|error| {
        ApiError::internal(format!(
            "stored webhook {what} are not a json list: {error}"
        ))
    })
}

fn webhook_record(model: webhook::Model) -> Result<WebhookRecord, ApiError> {
    Ok(WebhookRecord {
        filters: Filters {
            sources: from_json("sources", &model.sources)?,
            operations: from_json("operations", &model.operations)?,
            name_prefixes: from_json("name prefixes", &model.name_prefixes)?,
        },
        webhook_id: model.webhook_id,
        url: model.url,
        description: model.description,
        enabled: model.enabled,
        sealed_secret: model.sealed_secret,
        created_by: model.created_by,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn delivery_record(model: delivery::Model) -> Result<DeliveryRecord, ApiError> {
    let status = DeliveryStatus::parse(&model.status).ok_or_else(|| {
        ApiError::internal(format!(
            "delivery {} of webhook {}: unknown status {:?}",
            model.event_id, model.webhook_id, model.status
        ))
    })?;
    Ok(DeliveryRecord {
        webhook_id: model.webhook_id,
        event_id: model.event_id,
        source: model.source,
        operation: model.operation,
        name: model.name,
        payload: model.payload,
        status,
        attempts: model.attempts,
        last_status_code: model.last_status_code,
        last_error: model.last_error,
        next_attempt_at: model.next_attempt_at,
        delivered_at: model.delivered_at,
        created_at: model.created_at,
    })
}

fn webhook_model(record: &WebhookRecord) -> webhook::ActiveModel {
    webhook::ActiveModel {
        webhook_id: Set(record.webhook_id.clone()),
        url: Set(record.url.clone()),
        description: Set(record.description.clone()),
        sources: Set(to_json(&record.filters.sources)),
        operations: Set(to_json(&record.filters.operations)),
        name_prefixes: Set(to_json(&record.filters.name_prefixes)),
        enabled: Set(record.enabled),
        sealed_secret: Set(record.sealed_secret.clone()),
        created_by: Set(record.created_by.clone()),
        created_at: Set(record.created_at),
        updated_at: Set(record.updated_at),
    }
}

// ---- webhooks ---------------------------------------------------------------------------

pub async fn insert_webhook<C: ConnectionTrait>(
    conn: &C,
    record: &WebhookRecord,
) -> Result<(), ApiError> {
    webhook_model(record)
        .insert(conn)
        .await
        .map_err(db_error("insert webhook"))?;
    Ok(())
}

/// Replaces every column of an existing webhook.
pub async fn update_webhook<C: ConnectionTrait>(
    conn: &C,
    record: &WebhookRecord,
) -> Result<(), ApiError> {
    webhook_model(record)
        .update(conn)
        .await
        .map_err(db_error("update webhook"))?;
    Ok(())
}

pub async fn get_webhook<C: ConnectionTrait>(
    conn: &C,
    webhook_id: &str,
) -> Result<Option<WebhookRecord>, ApiError> {
    webhook::Entity::find_by_id(webhook_id.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read webhook"))?
        .map(webhook_record)
        .transpose()
}

pub async fn count_webhooks<C: ConnectionTrait>(conn: &C) -> Result<u64, ApiError> {
    webhook::Entity::find()
        .count(conn)
        .await
        .map_err(db_error("count webhooks"))
}

/// Up to `limit` webhooks after `after` in id (creation) order.
pub async fn list_webhooks<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<WebhookRecord>, ApiError> {
    let mut query = webhook::Entity::find().order_by_asc(webhook::Column::WebhookId);
    if let Some(after) = after {
        query = query.filter(webhook::Column::WebhookId.gt(after));
    }
    query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list webhooks"))?
        .into_iter()
        .map(webhook_record)
        .collect()
}

/// Every enabled webhook (at most `MAX_WEBHOOKS` exist).
pub async fn enabled_webhooks<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<WebhookRecord>, ApiError> {
    webhook::Entity::find()
        .filter(webhook::Column::Enabled.eq(true))
        .order_by_asc(webhook::Column::WebhookId)
        .all(conn)
        .await
        .map_err(db_error("list enabled webhooks"))?
        .into_iter()
        .map(webhook_record)
        .collect()
}

/// The id of the enabled webhook `id_or_url` names: its id (`wh-…`), or its URL exactly as
/// registered (the first by id when several share it); `None` when there is none.
pub async fn find_enabled_webhook<C: ConnectionTrait>(
    conn: &C,
    id_or_url: &str,
) -> Result<Option<String>, ApiError> {
    webhook::Entity::find()
        .select_only()
        .column(webhook::Column::WebhookId)
        .filter(webhook::Column::Enabled.eq(true))
        .filter(
            Condition::any()
                .add(webhook::Column::WebhookId.eq(id_or_url))
                .add(webhook::Column::Url.eq(id_or_url)),
        )
        .order_by_asc(webhook::Column::WebhookId)
        .limit(1)
        .into_tuple::<String>()
        .one(conn)
        .await
        .map_err(db_error("find webhook"))
}

/// Every webhook's id and sealed secret, for re-wrapping under a new master key.
pub async fn sealed_secrets<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<(String, String)>, ApiError> {
    Ok(webhook::Entity::find()
        .order_by_asc(webhook::Column::WebhookId)
        .all(conn)
        .await
        .map_err(db_error("list webhook secrets"))?
        .into_iter()
        .map(|model| (model.webhook_id, model.sealed_secret))
        .collect())
}

/// Replaces a sealed secret if it is still `expected` (a rotation of the webhook's secret
/// in between wins); true when replaced.
pub async fn replace_sealed_secret<C: ConnectionTrait>(
    conn: &C,
    webhook_id: &str,
    expected: &str,
    sealed_secret: &str,
) -> Result<bool, ApiError> {
    let result = webhook::Entity::update_many()
        .col_expr(
            webhook::Column::SealedSecret,
            Expr::value(sealed_secret.to_owned()),
        )
        .filter(webhook::Column::WebhookId.eq(webhook_id))
        .filter(webhook::Column::SealedSecret.eq(expected))
        .exec(conn)
        .await
        .map_err(db_error("replace webhook secret"))?;
    Ok(result.rows_affected == 1)
}

/// Deletes a webhook and its deliveries; false when it did not exist.
pub async fn delete_webhook<C: ConnectionTrait>(
    conn: &C,
    webhook_id: &str,
) -> Result<bool, ApiError> {
    delivery::Entity::delete_many()
        .filter(delivery::Column::WebhookId.eq(webhook_id))
        .exec(conn)
        .await
        .map_err(db_error("delete webhook deliveries"))?;
    let deleted = webhook::Entity::delete_by_id(webhook_id.to_owned())
        .exec(conn)
        .await
        .map_err(db_error("delete webhook"))?;
    Ok(deleted.rows_affected == 1)
}

// ---- deliveries -------------------------------------------------------------------------

/// A new Pending delivery, due now.
pub struct NewDelivery<'a> {
    pub webhook_id: &'a str,
    pub event_id: &'a str,
    pub source: &'a str,
    pub operation: &'a str,
    pub name: &'a str,
    pub payload: &'a str,
}

/// Inserts a Pending delivery unless one exists for the webhook and event already; true
/// when this call inserted it. Reprocessing an event is therefore harmless.
pub async fn insert_delivery<C: ConnectionTrait>(
    conn: &C,
    new: &NewDelivery<'_>,
    now: DateTime<Utc>,
) -> Result<bool, sea_orm::DbErr> {
    let model = delivery::ActiveModel {
        webhook_id: Set(new.webhook_id.to_owned()),
        event_id: Set(new.event_id.to_owned()),
        source: Set(new.source.to_owned()),
        operation: Set(new.operation.to_owned()),
        name: Set(new.name.to_owned()),
        payload: Set(new.payload.to_owned()),
        status: Set(DeliveryStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        last_status_code: Set(None),
        last_error: Set(None),
        next_attempt_at: Set(Some(now)),
        lease_owner: Set(None),
        lease_until: Set(None),
        delivered_at: Set(None),
        created_at: Set(now),
    };
    let result = delivery::Entity::insert(model)
        .on_conflict_do_nothing()
        .exec_without_returning(conn)
        .await?;
    Ok(matches!(result, TryInsertResult::Inserted(rows) if rows > 0))
}

/// Up to `limit` deliveries of a webhook, newest event first (event ids are UUID v7, so
/// their order is their time order), before `before` when paging.
pub async fn list_deliveries<C: ConnectionTrait>(
    conn: &C,
    webhook_id: &str,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<DeliveryRecord>, ApiError> {
    let mut query = delivery::Entity::find()
        .filter(delivery::Column::WebhookId.eq(webhook_id))
        .order_by_desc(delivery::Column::EventId);
    if let Some(before) = before {
        query = query.filter(delivery::Column::EventId.lt(before));
    }
    query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list deliveries"))?
        .into_iter()
        .map(delivery_record)
        .collect()
}

/// Pending deliveries of `webhook_ids` that are due at `now` and not leased to a live
/// attempt, oldest due first.
pub async fn due_deliveries<C: ConnectionTrait>(
    conn: &C,
    webhook_ids: &[String],
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<DeliveryRecord>, sea_orm::DbErr> {
    if webhook_ids.is_empty() {
        return Ok(Vec::new());
    }
    delivery::Entity::find()
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(delivery::Column::WebhookId.is_in(webhook_ids.iter().cloned()))
        .filter(delivery::Column::NextAttemptAt.lte(now))
        .filter(lease_free(now))
        .order_by_asc(delivery::Column::NextAttemptAt)
        .order_by_asc(delivery::Column::EventId)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(|model| {
            delivery_record(model).map_err(|error| sea_orm::DbErr::Custom(error.to_string()))
        })
        .collect()
}

fn lease_free(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(delivery::Column::LeaseUntil.is_null())
        .add(delivery::Column::LeaseUntil.lt(now))
}

/// Takes the lease of one attempt: succeeds for exactly one caller among replicas that saw
/// the same due delivery, because the update is conditional on what they saw.
pub async fn claim<C: ConnectionTrait>(
    conn: &C,
    record: &DeliveryRecord,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<bool, sea_orm::DbErr> {
    let result = delivery::Entity::update_many()
        .col_expr(delivery::Column::LeaseOwner, Expr::value(owner.to_owned()))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(lease_until))
        .filter(delivery::Column::WebhookId.eq(record.webhook_id.as_str()))
        .filter(delivery::Column::EventId.eq(record.event_id.as_str()))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(delivery::Column::Attempts.eq(record.attempts))
        .filter(delivery::Column::NextAttemptAt.lte(now))
        .filter(lease_free(now))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// How an attempt ended.
pub struct AttemptOutcome {
    pub status: DeliveryStatus,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Records an attempt and releases the lease, if this worker still holds it for that attempt.
pub async fn finish_attempt<C: ConnectionTrait>(
    conn: &C,
    record: &DeliveryRecord,
    owner: &str,
    outcome: &AttemptOutcome,
) -> Result<bool, sea_orm::DbErr> {
    let result = delivery::Entity::update_many()
        .col_expr(
            delivery::Column::Status,
            Expr::value(outcome.status.as_str()),
        )
        .col_expr(delivery::Column::Attempts, Expr::value(record.attempts + 1))
        .col_expr(
            delivery::Column::LastStatusCode,
            Expr::value(outcome.status_code),
        )
        .col_expr(
            delivery::Column::LastError,
            Expr::value(outcome.error.clone()),
        )
        .col_expr(
            delivery::Column::NextAttemptAt,
            Expr::value(outcome.next_attempt_at),
        )
        .col_expr(
            delivery::Column::DeliveredAt,
            Expr::value(outcome.delivered_at),
        )
        .col_expr(
            delivery::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            delivery::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(delivery::Column::WebhookId.eq(record.webhook_id.as_str()))
        .filter(delivery::Column::EventId.eq(record.event_id.as_str()))
        .filter(delivery::Column::Attempts.eq(record.attempts))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The earliest due time after `now` among Pending deliveries of `webhook_ids`, to sleep
/// until. (An expiring lease is noticed by the next poll.)
pub async fn next_due<C: ConnectionTrait>(
    conn: &C,
    webhook_ids: &[String],
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
    if webhook_ids.is_empty() {
        return Ok(None);
    }
    let next = delivery::Entity::find()
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(delivery::Column::WebhookId.is_in(webhook_ids.iter().cloned()))
        .filter(delivery::Column::NextAttemptAt.gt(now))
        .order_by_asc(delivery::Column::NextAttemptAt)
        .one(conn)
        .await?
        .and_then(|model| model.next_attempt_at);
    Ok(next)
}
