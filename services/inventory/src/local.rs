//! The all-in-one server's own node: `bosun server` registers the machine it runs on with a
//! one-use activation it makes for itself, so a fresh install has a node to run commands on.

use std::collections::BTreeMap;

use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_core::ApiError;
use chrono::{TimeDelta, Utc};
use sea_orm::{DatabaseConnection, TransactionTrait};

use crate::service::{new_activation_code, sha256};
use crate::store::{self, ActivationRecord};

/// Who the audit log names for activations the server makes for its own node.
pub const LOCAL_PRINCIPAL: &str = "service/bosun-server";

/// Makes a one-use activation, valid for ten minutes, for the server's own node; returns its
/// id and code. The code goes straight to the in-process agent, never to a log. Audited.
pub async fn local_activation(
    db: &DatabaseConnection,
    audit: &AuditLog,
    name: &str,
) -> Result<(String, String), ApiError> {
    let now = Utc::now();
    let id = uuid::Uuid::now_v7().to_string();
    let code = new_activation_code()?;
    let record = ActivationRecord {
        id: id.clone(),
        code_hash: hex::encode(sha256(code.as_bytes())),
        description: "the node of bosun server itself".to_owned(),
        default_instance_name: name.to_owned(),
        registration_limit: 1,
        registrations_count: 0,
        expires_at: now + TimeDelta::minutes(10),
        created_at: now,
        tags: BTreeMap::new(),
    };
    let txn = db.begin().await.map_err(ApiError::internal)?;
    store::insert_activation(&txn, &record).await?;
    let event = AuditRecord {
        principal: LOCAL_PRINCIPAL.to_owned(),
        action: "inventory:CreateActivation".to_owned(),
        resource: format!("activation:{id}"),
        outcome: AuditOutcome::Success,
        trace_id: String::new(),
        source_address: String::new(),
        details: serde_json::json!({ "registration_limit": 1, "purpose": "local node" }),
    };
    audit.record_in(&txn, event).await?;
    txn.commit().await.map_err(ApiError::internal)?;
    Ok((id, code))
}
