//! Re-wrapping the webhooks' sealed secrets under a new Parameter Store master key, beside
//! `bosun rotate-parameter-key`, so an old master key can later leave the ring.

use bosun_core::ApiError;
use bosun_parameters::{Envelope, MasterKeyRing};
use sea_orm::DatabaseConnection;

use crate::store;

/// What `rewrap_webhook_secrets` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SecretRewrapReport {
    pub rewrapped: u64,
    pub already_current: u64,
}

/// Re-wraps every webhook's sealed secret under `new_key_id` (the secret itself, and so every
/// receiver's configuration, is unchanged). Safe to run again after a crash.
pub async fn rewrap_webhook_secrets(
    db: &DatabaseConnection,
    keys: &MasterKeyRing,
    new_key_id: &str,
) -> Result<SecretRewrapReport, ApiError> {
    let mut report = SecretRewrapReport::default();
    for (webhook_id, sealed) in store::sealed_secrets(db).await? {
        let envelope = Envelope::from_base64(&sealed).map_err(|error| {
            ApiError::internal(format!("webhook {webhook_id}: stored secret: {error}"))
        })?;
        if envelope.key_id() == new_key_id {
            report.already_current += 1;
            continue;
        }
        let rewrapped = keys.rewrap(&envelope, new_key_id).map_err(|error| {
            ApiError::internal(format!(
                "webhook {webhook_id} (key {}): rewrap secret: {error}",
                envelope.key_id()
            ))
        })?;
        if store::replace_sealed_secret(db, &webhook_id, &sealed, &rewrapped.to_base64()).await? {
            report.rewrapped += 1;
        }
    }
    Ok(report)
}
