//! Master key rotation: re-wraps the data key of every stored SecureString version under a
//! new master key. Value ciphertexts are never touched and values are never decrypted.
//!
//! The caller adds the new key to the ring first (`MasterKeyRing::generate` or `insert`),
//! makes it the default (`set_default_key_id`) and writes the key file before rotating.
//! Running services re-read that file (`KeySource`) when a value needs a key they lack and
//! when the file changes, so new writes move to the new key within seconds and re-wrapped
//! values keep decrypting. Services must keep the old key too: rows not yet re-wrapped
//! still need it, and rotation never removes a key from the file.
//!
//! The work is done in small batches, each in its own write transaction, and is idempotent:
//! a row already under the new key is skipped, so a run that crashed part-way is simply run
//! again.

use bosun_core::ApiError;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::crypto::{CryptoError, Envelope, MasterKeyRing, validate_key_id};
use crate::entities::{parameter, version};
use crate::value::ParameterType;

/// Rows read and written per transaction.
const BATCH_SIZE: u64 = 100;

/// What a rotation did, counted over SecureString versions (the rows holding envelopes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Versions whose data key was re-wrapped under the new key in this run.
    pub rewrapped: u64,
    /// Versions that were already under the new key and were left alone.
    pub already_current: u64,
}

fn db_error(what: &'static str) -> impl FnOnce(sea_orm::DbErr) -> ApiError {
    move |error| ApiError::internal(format!("rotate master key: {what}: {error}"))
}

/// Re-wraps every SecureString version under `new_key_id` and records the new key id on the
/// versions and on SecureString parameters.
///
/// `keys` must hold `new_key_id` — adding it is the caller's job — and every master key the
/// stored envelopes are currently wrapped under. An unknown or malformed `new_key_id` is
/// `InvalidKeyId`. Errors name parameters, versions and key ids, never a value.
pub async fn rotate_master_key(
    db: &DatabaseConnection,
    keys: &MasterKeyRing,
    new_key_id: &str,
) -> Result<RotationReport, ApiError> {
    validate_key_id(new_key_id)?;
    if !keys.contains(new_key_id) {
        return Err(CryptoError::UnknownKey(new_key_id.to_owned()).into());
    }
    let secure = ParameterType::SecureString.as_str();
    // Parameters first: an overwrite without key_id keeps the parameter's key, so after this
    // pass such writes already land under the new key and the version pass catches the rest.
    rotate_parameters(db, secure, new_key_id).await?;
    let report = rotate_versions(db, keys, secure, new_key_id).await?;
    tracing::info!(
        new_key_id,
        rewrapped = report.rewrapped,
        already_current = report.already_current,
        "parameters master key rotation finished"
    );
    Ok(report)
}

async fn rotate_parameters(
    db: &DatabaseConnection,
    secure: &str,
    new_key_id: &str,
) -> Result<(), ApiError> {
    let mut after: Option<String> = None;
    loop {
        let txn = bosun_store::begin_write(db)
            .await
            .map_err(db_error("begin"))?;
        let mut query = parameter::Entity::find()
            .select_only()
            .column(parameter::Column::Name)
            .filter(parameter::Column::ParameterType.eq(secure))
            .filter(parameter::Column::KeyId.ne(new_key_id))
            .order_by_asc(parameter::Column::Name)
            .limit(BATCH_SIZE);
        if let Some(after) = &after {
            query = query.filter(parameter::Column::Name.gt(after.as_str()));
        }
        let names: Vec<String> = query
            .into_tuple::<String>()
            .all(&txn)
            .await
            .map_err(db_error("list parameters"))?;
        let Some(last) = names.last().cloned() else {
            return Ok(());
        };
        parameter::Entity::update_many()
            .col_expr(parameter::Column::KeyId, Expr::value(new_key_id.to_owned()))
            .filter(parameter::Column::Name.is_in(names))
            .filter(parameter::Column::ParameterType.eq(secure))
            .exec(&txn)
            .await
            .map_err(db_error("update parameters"))?;
        txn.commit().await.map_err(db_error("commit"))?;
        after = Some(last);
    }
}

async fn rotate_versions(
    db: &DatabaseConnection,
    keys: &MasterKeyRing,
    secure: &str,
    new_key_id: &str,
) -> Result<RotationReport, ApiError> {
    let mut report = RotationReport::default();
    let mut after: Option<(String, i64)> = None;
    loop {
        let txn = bosun_store::begin_write(db)
            .await
            .map_err(db_error("begin"))?;
        let mut query = version::Entity::find()
            .select_only()
            .column(version::Column::Name)
            .column(version::Column::Version)
            .column(version::Column::KeyId)
            .column(version::Column::Value)
            .filter(version::Column::ParameterType.eq(secure))
            .order_by_asc(version::Column::Name)
            .order_by_asc(version::Column::Version)
            .limit(BATCH_SIZE);
        if let Some((name, number)) = &after {
            query = query.filter(
                version::Column::Name
                    .gt(name.as_str())
                    .or(version::Column::Name
                        .eq(name.as_str())
                        .and(version::Column::Version.gt(*number))),
            );
        }
        let rows: Vec<(String, i64, String, String)> = query
            .into_tuple()
            .all(&txn)
            .await
            .map_err(db_error("list parameter versions"))?;
        let Some((last_name, last_number, _, _)) = rows.last().cloned() else {
            return Ok(report);
        };
        for (name, number, key_id, value) in rows {
            let envelope = Envelope::from_base64(&value).map_err(|error| {
                ApiError::internal(format!(
                    "rotate master key: parameter {name} version {number}: {error}"
                ))
            })?;
            if envelope.key_id() == new_key_id && key_id == new_key_id {
                report.already_current += 1;
                continue;
            }
            let new_value = if envelope.key_id() == new_key_id {
                // A previous run re-wrapped the value but not the column: keep the envelope.
                value.clone()
            } else {
                keys.rewrap(&envelope, new_key_id)
                    .map_err(|error| rewrap_error(&name, number, &envelope, error))?
                    .to_base64()
            };
            // Conditional on the value read, so a row changed meanwhile is never clobbered.
            let updated = version::Entity::update_many()
                .col_expr(version::Column::Value, Expr::value(new_value))
                .col_expr(version::Column::KeyId, Expr::value(new_key_id.to_owned()))
                .filter(version::Column::Name.eq(name.as_str()))
                .filter(version::Column::Version.eq(number))
                .filter(version::Column::Value.eq(value))
                .exec(&txn)
                .await
                .map_err(db_error("update parameter version"))?;
            report.rewrapped += updated.rows_affected;
        }
        txn.commit().await.map_err(db_error("commit"))?;
        after = Some((last_name, last_number));
    }
}

/// Rewrap failures are server-side faults (a key missing from the ring, damaged data); the
/// message names the row and key ids only.
fn rewrap_error(name: &str, number: i64, envelope: &Envelope, error: CryptoError) -> ApiError {
    match error {
        CryptoError::UnknownKey(key_id) => ApiError::internal(format!(
            "rotate master key: parameter {name} version {number} is wrapped under key {key_id}, \
             which the key ring does not hold"
        )),
        other => ApiError::internal(format!(
            "rotate master key: parameter {name} version {number} (key {}): {other}",
            envelope.key_id()
        )),
    }
}
