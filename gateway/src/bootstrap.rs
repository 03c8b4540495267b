//! First start: an empty store gets the built-in `admin` role and an `admin` user.

use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_core::ApiError;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;

use crate::identity::{self, ADMIN_POLICY_DOCUMENT, ADMIN_POLICY_NAME, ADMIN_ROLE};
use crate::passwords;

/// What bootstrap did.
#[derive(Debug)]
pub enum Bootstrap {
    /// Users existed already; nothing changed.
    AlreadyInitialised,
    /// Created `admin` with the configured password.
    CreatedAdmin,
    /// Created `admin` with this generated password, to be shown once to the operator.
    CreatedAdminWithGeneratedPassword(SecretString),
}

/// Creates the admin role and user when the store has no users. Safe to race with another
/// replica doing the same: the loser sees the user exist and changes nothing.
pub async fn bootstrap(
    db: &DatabaseConnection,
    audit: &AuditLog,
    admin_password: Option<SecretString>,
) -> Result<Bootstrap, ApiError> {
    if identity::count_users(db).await? > 0 {
        return Ok(Bootstrap::AlreadyInitialised);
    }
    let (password, generated) = match admin_password {
        Some(password) => {
            passwords::validate("admin_password (BOSUN_ADMIN_PASSWORD)", &password)?;
            (password, false)
        }
        None => {
            let mut bytes = [0u8; 18];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| ApiError::internal("system random number generator failed"))?;
            let encoded =
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
            (SecretString::from(encoded), true)
        }
    };
    let hash = passwords::hash(password.clone()).await?;
    let txn = bosun_store::begin_write(db)
        .await
        .map_err(ApiError::internal)?;
    if identity::get_role(&txn, ADMIN_ROLE).await?.is_none() {
        identity::create_role(
            &txn,
            ADMIN_ROLE,
            "Full access to everything (built in)",
            true,
            &[(
                ADMIN_POLICY_NAME.to_owned(),
                ADMIN_POLICY_DOCUMENT.to_owned(),
            )],
        )
        .await?;
    }
    match identity::create_user(&txn, "admin", hash, &[ADMIN_ROLE.to_owned()]).await {
        Ok(_) => {}
        Err(ApiError::AlreadyExists { .. }) => return Ok(Bootstrap::AlreadyInitialised),
        Err(error) => return Err(error),
    }
    let record = AuditRecord {
        principal: "service/bootstrap".into(),
        action: "auth:CreateUser".into(),
        resource: "user:admin".into(),
        outcome: AuditOutcome::Success,
        trace_id: String::new(),
        source_address: String::new(),
        details: serde_json::json!({ "roles": [ADMIN_ROLE], "reason": "first start of an empty store" }),
    };
    audit.record_in(&txn, record).await?;
    txn.commit().await.map_err(ApiError::internal)?;
    Ok(if generated {
        Bootstrap::CreatedAdminWithGeneratedPassword(password)
    } else {
        Bootstrap::CreatedAdmin
    })
}
