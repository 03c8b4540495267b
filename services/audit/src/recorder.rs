//! `AuditLog`: the one helper every service uses to append an audit event.

use bosun_auth::AuthContext;
use bosun_core::ApiError;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, Set};

use crate::entity;

/// The metadata key in which the gateway forwards the caller's address. The gateway
/// overwrites whatever a client sent, so services can trust it behind the gateway.
pub const SOURCE_ADDRESS_HEADER: &str = "x-bosun-source-address";

/// How the audited call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    /// Failed after authorization; carries the gRPC code.
    Failure(tonic::Code),
    /// Authorization refused the call.
    Denied,
}

impl AuditOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure(_) => "failure",
            AuditOutcome::Denied => "denied",
        }
    }

    fn error_code(self) -> String {
        match self {
            AuditOutcome::Success => String::new(),
            AuditOutcome::Failure(code) => format!("{code:?}"),
            AuditOutcome::Denied => format!("{:?}", tonic::Code::PermissionDenied),
        }
    }

    /// The outcome of a call that returned `result`.
    pub fn of<T>(result: &Result<T, ApiError>) -> Self {
        match result {
            Ok(_) => AuditOutcome::Success,
            Err(ApiError::PermissionDenied(_)) => AuditOutcome::Denied,
            Err(error) => AuditOutcome::Failure(error.code()),
        }
    }
}

/// One event, built by the service that handled the call.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub outcome: AuditOutcome,
    pub trace_id: String,
    pub source_address: String,
    /// Extra facts as a JSON object. Never secrets.
    pub details: serde_json::Value,
}

impl AuditRecord {
    /// An event for `action` on `resource` by the caller of `request`, with the caller's
    /// address and the current trace id filled in. Outcome defaults to success.
    pub fn for_request<T>(
        request: &tonic::Request<T>,
        caller: &AuthContext,
        action: &str,
        resource: &str,
    ) -> Self {
        Self::anonymous(request, action, resource).by(caller.principal.to_string())
    }

    /// An event with no authenticated caller (a failed login, say).
    pub fn anonymous<T>(request: &tonic::Request<T>, action: &str, resource: &str) -> Self {
        let source_address = request
            .metadata()
            .get(SOURCE_ADDRESS_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.remote_addr().map(|addr| addr.to_string()))
            .unwrap_or_default();
        AuditRecord {
            principal: "anonymous".into(),
            action: action.into(),
            resource: resource.into(),
            outcome: AuditOutcome::Success,
            trace_id: bosun_telemetry::current_trace_id().unwrap_or_default(),
            source_address,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn by(mut self, principal: impl Into<String>) -> Self {
        self.principal = principal.into();
        self
    }

    pub fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn result<T>(self, result: &Result<T, ApiError>) -> Self {
        self.outcome(AuditOutcome::of(result))
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Appends audit events to the store.
#[derive(Clone)]
pub struct AuditLog {
    db: DatabaseConnection,
}

impl AuditLog {
    pub fn new(db: DatabaseConnection) -> Self {
        AuditLog { db }
    }

    /// Appends on the log's own connection.
    pub async fn record(&self, record: AuditRecord) -> Result<(), ApiError> {
        self.record_in(&self.db, record).await
    }

    /// Appends inside the caller's transaction, so the change and its event commit together.
    pub async fn record_in<C: ConnectionTrait>(
        &self,
        conn: &C,
        record: AuditRecord,
    ) -> Result<(), ApiError> {
        let event = entity::ActiveModel {
            event_id: Set(uuid::Uuid::now_v7().to_string()),
            event_time: Set(chrono::Utc::now()),
            principal: Set(record.principal),
            action: Set(record.action),
            resource: Set(record.resource),
            result: Set(record.outcome.as_str().to_owned()),
            error_code: Set(record.outcome.error_code()),
            trace_id: Set(record.trace_id),
            source_address: Set(record.source_address),
            details: Set(record.details.to_string()),
        };
        event
            .insert(conn)
            .await
            .map_err(|error| ApiError::internal(format!("append audit event: {error}")))?;
        Ok(())
    }

    /// The audited change every service makes: when `authorization` failed, records the
    /// denial and returns it; otherwise runs `change` in a write transaction and commits it
    /// together with `records` (one event per affected resource); when `change` fails, rolls
    /// back and records the failure (or denial) on its own.
    pub async fn audited<T, F>(
        &self,
        records: Vec<AuditRecord>,
        authorization: Result<(), ApiError>,
        change: F,
    ) -> Result<T, ApiError>
    where
        F: for<'t> FnOnce(
            &'t DatabaseTransaction,
        ) -> futures::future::BoxFuture<'t, Result<T, ApiError>>,
    {
        if let Err(denied) = authorization {
            for record in records {
                self.record(record.outcome(AuditOutcome::Denied)).await?;
            }
            return Err(denied);
        }
        let txn = bosun_store::begin_write(&self.db)
            .await
            .map_err(ApiError::internal)?;
        match change(&txn).await {
            Ok(value) => {
                for record in records {
                    self.record_in(&txn, record).await?;
                }
                txn.commit().await.map_err(ApiError::internal)?;
                Ok(value)
            }
            Err(error) => {
                drop(txn);
                let outcome = match &error {
                    ApiError::PermissionDenied(_) => AuditOutcome::Denied,
                    other => AuditOutcome::Failure(other.code()),
                };
                for record in records {
                    self.record(record.outcome(outcome)).await?;
                }
                Err(error)
            }
        }
    }
}
