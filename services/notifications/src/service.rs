//! `bosun.notifications.v1.NotificationService`: validate → authorize → change and audit in
//! one transaction. Signing secrets are generated here, returned once, and stored only sealed
//! by the Parameter Store key ring with the webhook id as context.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_audit::{AuditLog, AuditRecord};
use bosun_auth::{AuthContext, auth_context};
use bosun_core::ApiError;
use bosun_core::time::to_timestamp;
use bosun_parameters::{KeySource, MasterKeyRing};
use bosun_proto::notifications::v1 as pb;
use bosun_proto::notifications::v1::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use chrono::Utc;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::signature::SigningSecret;
use crate::store::{self, DeliveryRecord, DeliveryStatus, WebhookRecord};
use crate::validate::{self, Filters};

const MAX_PAGE: i32 = 50;

pub struct NotificationServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    keys: Arc<KeySource>,
}

impl NotificationServiceImpl {
    /// `keys` is the Parameter Store's master key ring: every process serving notifications
    /// needs the same key file to open the secrets.
    pub fn new(db: DatabaseConnection, audit: AuditLog, keys: Arc<MasterKeyRing>) -> Self {
        NotificationServiceImpl {
            db,
            audit,
            keys: Arc::new(KeySource::fixed(keys)),
        }
    }

    /// Takes keys from `keys` (the Parameter Store's, re-read when its file changes), so a
    /// master key rotation reaches this service without a restart.
    pub fn with_key_source(mut self, keys: Arc<KeySource>) -> Self {
        self.keys = keys;
        self
    }

    pub fn into_server(self) -> NotificationServiceServer<Self> {
        NotificationServiceServer::new(self)
    }

    /// A fresh secret, and its sealed form for the row of `webhook_id`.
    fn new_secret(&self, webhook_id: &str) -> Result<(SigningSecret, String), ApiError> {
        let secret = SigningSecret::generate().map_err(ApiError::internal)?;
        let sealed = self
            .keys
            .with_ring(|ring| ring.seal(webhook_id, secret.as_bytes(), ring.default_key_id()))
            .map_err(|error| {
                ApiError::internal(format!("seal secret of webhook {webhook_id}: {error}"))
            })?;
        Ok((secret, sealed.to_base64()))
    }
}

fn resource(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

fn action(rpc: &str) -> String {
    format!("notifications:{rpc}")
}

fn authorize(caller: &AuthContext, rpc: &str, webhook_id: &str) -> Result<(), ApiError> {
    caller
        .authorize(&action(rpc), &resource(webhook_id), &BTreeMap::new())
        .map_err(ApiError::from)
}

fn not_found(webhook_id: &str) -> ApiError {
    ApiError::not_found(format!("webhook {webhook_id} not found"))
        .with_reason(validate::REASON_NOT_FOUND)
}

/// The scheme, host and port of a URL, for audit details: paths and queries of webhook URLs
/// often carry tokens of their own, so they are not recorded.
fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|parsed| parsed.origin().ascii_serialization())
        .unwrap_or_default()
}

fn audit_details(record: &WebhookRecord) -> serde_json::Value {
    serde_json::json!({
        "origin": origin(&record.url),
        "enabled": record.enabled,
        "filters": {
            "sources": record.filters.sources,
            "operations": record.filters.operations,
            "name_prefixes": record.filters.name_prefixes,
        },
    })
}

fn webhook_to_proto(record: &WebhookRecord) -> pb::Webhook {
    pb::Webhook {
        webhook_id: record.webhook_id.clone(),
        url: record.url.clone(),
        description: record.description.clone(),
        filters: Some(record.filters.to_proto()),
        enabled: record.enabled,
        created_by: record.created_by.clone(),
        created_at: Some(to_timestamp(record.created_at)),
        updated_at: Some(to_timestamp(record.updated_at)),
    }
}

fn delivery_to_proto(record: &DeliveryRecord) -> pb::WebhookDelivery {
    let status = match record.status {
        DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
        DeliveryStatus::Succeeded => pb::DeliveryStatus::Succeeded,
        DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
    };
    pb::WebhookDelivery {
        webhook_id: record.webhook_id.clone(),
        event_id: record.event_id.clone(),
        source: record.source.clone(),
        operation: record.operation.clone(),
        name: record.name.clone(),
        status: status as i32,
        attempts: record.attempts,
        last_status_code: record.last_status_code.unwrap_or_default(),
        last_error: record.last_error.clone().unwrap_or_default(),
        next_attempt_at: record.next_attempt_at.map(to_timestamp),
        delivered_at: record.delivered_at.map(to_timestamp),
        created_at: Some(to_timestamp(record.created_at)),
    }
}

fn decode_token(token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| !key.is_empty() && key.len() <= 128)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid("next_token", "is not a token this server issued")
                .with_reason(validate::REASON_NEXT_TOKEN)
        })
}

fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

#[tonic::async_trait]
impl NotificationService for NotificationServiceImpl {
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let url = validate::url("url", &body.url)?;
        validate::description("description", &body.description)?;
        let filters = Filters::parse("filters", body.filters.as_ref())?;

        let webhook_id = uuid::Uuid::now_v7().to_string();
        let now = Utc::now();
        let (secret, sealed_secret) = self.new_secret(&webhook_id)?;
        let record = WebhookRecord {
            webhook_id: webhook_id.clone(),
            url,
            description: body.description.clone(),
            filters,
            enabled: body.enabled.unwrap_or(true),
            sealed_secret,
            created_by: caller.principal.to_string(),
            created_at: now,
            updated_at: now,
        };
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("CreateWebhook"),
            &resource(&webhook_id),
        )
        .details(audit_details(&record));
        let authorization = authorize(&caller, "CreateWebhook", "*");
        let webhook = self
            .audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::count_webhooks(txn).await? >= validate::MAX_WEBHOOKS {
                        return Err(ApiError::resource_exhausted(format!(
                            "create webhook: the limit of {} webhooks is reached",
                            validate::MAX_WEBHOOKS
                        ))
                        .with_reason(validate::REASON_LIMIT));
                    }
                    store::insert_webhook(txn, &record).await?;
                    Ok(webhook_to_proto(&record))
                })
            })
            .await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook),
            secret: secret.to_text(),
        }))
    }

    async fn get_webhook(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::GetWebhookResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::webhook_id("webhook_id", &body.webhook_id)?;
        authorize(&caller, "GetWebhook", &body.webhook_id)?;
        let record = store::get_webhook(&self.db, &body.webhook_id)
            .await?
            .ok_or_else(|| not_found(&body.webhook_id))?;
        Ok(Response::new(pb::GetWebhookResponse {
            webhook: Some(webhook_to_proto(&record)),
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let page = validate::page_size("max_results", body.max_results, MAX_PAGE)?;
        let after = decode_token(&body.next_token)?;
        authorize(&caller, "ListWebhooks", "*")?;
        let mut records = store::list_webhooks(&self.db, after.as_deref(), page + 1).await?;
        let next_token = if records.len() as u64 > page {
            records.truncate(usize::try_from(page).unwrap_or(50));
            records
                .last()
                .map(|record| encode_token(&record.webhook_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: records.iter().map(webhook_to_proto).collect(),
            next_token,
        }))
    }

    async fn update_webhook(
        &self,
        request: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::UpdateWebhookResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::webhook_id("webhook_id", &body.webhook_id)?;
        let url = body
            .url
            .as_deref()
            .map(|url| validate::url("url", url))
            .transpose()?;
        if let Some(description) = &body.description {
            validate::description("description", description)?;
        }
        let filters = body
            .filters
            .as_ref()
            .map(|filters| Filters::parse("filters", Some(filters)))
            .transpose()?;
        let webhook_id = body.webhook_id.clone();
        let (description, enabled) = (body.description.clone(), body.enabled);
        let changed: Vec<&str> = [
            url.as_ref().map(|_| "url"),
            description.as_ref().map(|_| "description"),
            filters.as_ref().map(|_| "filters"),
            enabled.map(|_| "enabled"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("UpdateWebhook"),
            &resource(&webhook_id),
        )
        .details(serde_json::json!({
            "changed": changed,
            "origin": url.as_deref().map(origin),
            "enabled": enabled,
        }));
        let authorization = authorize(&caller, "UpdateWebhook", &webhook_id);
        let webhook = self
            .audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    let mut record = store::get_webhook(txn, &webhook_id)
                        .await?
                        .ok_or_else(|| not_found(&webhook_id))?;
                    if let Some(url) = url {
                        record.url = url;
                    }
                    if let Some(description) = description {
                        record.description = description;
                    }
                    if let Some(filters) = filters {
                        record.filters = filters;
                    }
                    if let Some(enabled) = enabled {
                        record.enabled = enabled;
                    }
                    record.updated_at = Utc::now();
                    store::update_webhook(txn, &record).await?;
                    Ok(webhook_to_proto(&record))
                })
            })
            .await?;
        Ok(Response::new(pb::UpdateWebhookResponse {
            webhook: Some(webhook),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::webhook_id("webhook_id", &body.webhook_id)?;
        let webhook_id = body.webhook_id.clone();
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("DeleteWebhook"),
            &resource(&webhook_id),
        );
        let authorization = authorize(&caller, "DeleteWebhook", &webhook_id);
        self.audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    if store::delete_webhook(txn, &webhook_id).await? {
                        Ok(())
                    } else {
                        Err(not_found(&webhook_id))
                    }
                })
            })
            .await?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::webhook_id("webhook_id", &body.webhook_id)?;
        let webhook_id = body.webhook_id.clone();
        let (secret, sealed_secret) = self.new_secret(&webhook_id)?;
        let audit = AuditRecord::for_request(
            &request,
            &caller,
            &action("RotateWebhookSecret"),
            &resource(&webhook_id),
        );
        let authorization = authorize(&caller, "RotateWebhookSecret", &webhook_id);
        let webhook = self
            .audit
            .audited(vec![audit], authorization, move |txn| {
                Box::pin(async move {
                    let mut record = store::get_webhook(txn, &webhook_id)
                        .await?
                        .ok_or_else(|| not_found(&webhook_id))?;
                    record.sealed_secret = sealed_secret;
                    record.updated_at = Utc::now();
                    store::update_webhook(txn, &record).await?;
                    Ok(webhook_to_proto(&record))
                })
            })
            .await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            webhook: Some(webhook),
            secret: secret.to_text(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::webhook_id("webhook_id", &body.webhook_id)?;
        let page = validate::page_size("max_results", body.max_results, MAX_PAGE)?;
        let before = decode_token(&body.next_token)?;
        authorize(&caller, "ListWebhookDeliveries", &body.webhook_id)?;
        if store::get_webhook(&self.db, &body.webhook_id)
            .await?
            .is_none()
        {
            return Err(not_found(&body.webhook_id).into());
        }
        let mut records =
            store::list_deliveries(&self.db, &body.webhook_id, before.as_deref(), page + 1).await?;
        let next_token = if records.len() as u64 > page {
            records.truncate(usize::try_from(page).unwrap_or(50));
            records
                .last()
                .map(|record| encode_token(&record.event_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: records.iter().map(delivery_to_proto).collect(),
            next_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_origins_drop_paths_queries_and_tokens() {
        assert_eq!(
            origin("https://hooks.example.com/services/T000/B000/XXXX?token=abc"),
            "https://hooks.example.com"
        );
        assert_eq!(origin("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080");
    }

    #[test]
    fn page_tokens_round_trip_and_junk_is_refused() {
        let token = encode_token("0190f0aa-0000-7000-8000-000000000000");
        assert_eq!(
            decode_token(&token).ok().flatten().as_deref(),
            Some("0190f0aa-0000-7000-8000-000000000000")
        );
        assert_eq!(decode_token("").ok(), Some(None));
        assert!(decode_token("!!!").is_err());
    }
}
