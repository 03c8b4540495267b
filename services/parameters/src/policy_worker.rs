//! Enforces parameter policies: deletes parameters at their expiration time and publishes
//! ExpirationNotification and NoChangeNotification events on time, once each.
//!
//! Every firing is recorded in `parameter_policy_events` before anything is published; the
//! table's key makes that record the claim, so two replicas never both notify. The clock is
//! injected so tests move time instead of sleeping.

use std::sync::Arc;
use std::time::Duration;

use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_core::ApiError;
use bosun_queue::Queue;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cache::ReadCache;
use crate::events::{ChangeEvent, ChangeOperation, EventPublisher};
use crate::policy::{PolicyEvent, due, next_due};
use crate::service::stored_policies;
use crate::store::{self, ParameterRecord};

/// The principal the worker acts as, in audit events and change events.
pub const WORKER_PRINCIPAL: &str = "service/parameters";
/// Longest sleep between scans, so a missed wake-up (a write on another replica) costs at
/// most this much delay.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Shortest sleep, so a due event that keeps failing cannot spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(500);
/// Sleep after a scan failed (the store is unreachable, say).
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);
/// Parameters read per store round trip.
const SCAN_BATCH: u64 = 200;

pub use bosun_core::time::{Clock, ManualClock, SystemClock};

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Parameters deleted by their Expiration policy.
    pub expired: Vec<String>,
    /// Notifications published: (parameter, ExpirationNotification or NoChangeNotification).
    pub notified: Vec<(String, ChangeOperation)>,
    /// Parameters whose policies could not be enforced this time (logged; retried next scan).
    pub failed: Vec<String>,
    /// The earliest time a policy is due next, if any.
    pub next_due: Option<DateTime<Utc>>,
}

/// Scans parameters with policies and acts on what is due.
pub struct PolicyWorker {
    db: DatabaseConnection,
    audit: AuditLog,
    events: EventPublisher,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// The service's read cache: an expired parameter must vanish from every replica's.
    cache: Option<ReadCache>,
}

impl PolicyWorker {
    pub fn new(
        db: DatabaseConnection,
        audit: AuditLog,
        events: Option<Arc<dyn Queue>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        PolicyWorker {
            events: events
                .map(|queue| EventPublisher::new(queue, db.clone()))
                .unwrap_or_default(),
            db,
            audit,
            clock,
            wake: Arc::new(Notify::new()),
            cache: None,
        }
    }

    /// Invalidates `cache` (the service's) when a parameter expires.
    pub fn with_cache(mut self, cache: ReadCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Shares `wake` as the handle that wakes `run` early (when the service was built first).
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// The handle that wakes `run` early; give it to `ParameterServiceImpl::with_policy_wake`.
    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// One scan: acts on every due policy event. A parameter that fails is logged and left
    /// for the next scan; only a failure to list parameters fails the scan.
    pub async fn run_once(&self) -> Result<RunReport, ApiError> {
        let now = self.clock.now();
        let mut report = RunReport::default();
        let mut after: Option<String> = None;
        loop {
            let batch = store::list_with_policies(&self.db, after.as_deref(), SCAN_BATCH).await?;
            let exhausted = (batch.len() as u64) < SCAN_BATCH;
            for record in batch {
                after = Some(record.name.clone());
                if let Err(error) = self.enforce(&record, now, &mut report).await {
                    tracing::error!(parameter = %record.name, %error, "could not enforce parameter policies");
                    report.failed.push(record.name);
                }
            }
            if exhausted {
                return Ok(report);
            }
        }
    }

    /// Runs scans until `shutdown`: after each, sleeps until the next due time (at most
    /// `MAX_SLEEP`), or less when the service signals a write with policies.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.run_once().await {
                Ok(report) => report
                    .next_due
                    .map(|at| (at - self.clock.now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(MAX_SLEEP)
                    .clamp(MIN_SLEEP, MAX_SLEEP),
                Err(error) => {
                    tracing::error!(%error, "parameter policy scan failed");
                    RETRY_AFTER_ERROR
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn enforce(
        &self,
        record: &ParameterRecord,
        now: DateTime<Utc>,
        report: &mut RunReport,
    ) -> Result<(), ApiError> {
        let policies = stored_policies(&record.policies);
        let mut fired = store::fired_events(&self.db, &record.name).await?;
        for event in due(&policies, record.last_modified_at, now, &fired) {
            let operation = match event {
                PolicyEvent::Expire { .. } => {
                    if let Some(deleted) = self.expire(&record.name, now).await? {
                        if let Some(cache) = &self.cache {
                            // On failure the cache retries in the background and logs.
                            let _ = cache.invalidate(std::slice::from_ref(&deleted.name)).await;
                        }
                        self.events.flush_after_commit().await;
                        report.expired.push(deleted.name);
                    }
                    // Deleted, or overwritten meanwhile and rescheduled: either way the
                    // next scan sees the truth.
                    return Ok(());
                }
                PolicyEvent::ExpirationNotification { .. } => {
                    ChangeOperation::ExpirationNotification
                }
                PolicyEvent::NoChangeNotification { .. } => ChangeOperation::NoChangeNotification,
            };
            // The insert is the claim; false means another replica fired it already.
            let txn = bosun_store::begin_write(&self.db)
                .await
                .map_err(ApiError::internal)?;
            let claimed = store::record_fired(&txn, &record.name, event.fired(), now).await?;
            if claimed {
                self.events
                    .stage(&txn, &[worker_event(operation, record, now)])
                    .await?;
                txn.commit().await.map_err(ApiError::internal)?;
                self.events.flush_after_commit().await;
                report.notified.push((record.name.clone(), operation));
            }
            fired.push(event.fired());
        }
        if let Some(next) = next_due(&policies, record.last_modified_at, &fired) {
            report.next_due = Some(report.next_due.map_or(next, |earliest| earliest.min(next)));
        }
        Ok(())
    }

    /// Deletes an expired parameter with its versions, labels, tags and firings, audited in
    /// the same transaction. Re-checks inside the transaction, so a parameter overwritten
    /// with a later expiration since the scan read it is kept.
    async fn expire(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ParameterRecord>, ApiError> {
        let txn = bosun_store::begin_write(&self.db)
            .await
            .map_err(ApiError::internal)?;
        let Some(current) = store::get_parameter(&txn, name).await? else {
            return Ok(None);
        };
        let policies = stored_policies(&current.policies);
        let still_due = due(&policies, current.last_modified_at, now, &[])
            .iter()
            .any(|event| matches!(event, PolicyEvent::Expire { .. }));
        if !still_due {
            return Ok(None);
        }
        store::delete_parameter(&txn, name).await?;
        let record = AuditRecord {
            principal: WORKER_PRINCIPAL.to_owned(),
            action: "parameters:DeleteParameter".to_owned(),
            resource: format!("parameter:{name}"),
            outcome: AuditOutcome::Success,
            trace_id: bosun_telemetry::current_trace_id().unwrap_or_default(),
            source_address: String::new(),
            details: serde_json::json!({
                "reason": "Expiration",
                "version": current.latest_version,
            }),
        };
        self.audit.record_in(&txn, record).await?;
        self.events
            .stage(
                &txn,
                &[worker_event(ChangeOperation::Expired, &current, now)],
            )
            .await?;
        txn.commit().await.map_err(ApiError::internal)?;
        Ok(Some(current))
    }
}

/// A change the worker made or announced, in its own name.
fn worker_event(
    operation: ChangeOperation,
    parameter: &ParameterRecord,
    now: DateTime<Utc>,
) -> ChangeEvent {
    ChangeEvent::new(
        operation,
        &parameter.name,
        parameter.latest_version,
        &parameter.parameter_type,
        WORKER_PRINCIPAL,
        now,
    )
}
