//! Notifications: webhook subscriptions to change events. `NotificationServiceImpl` keeps
//! webhooks (URL, filters, a signing secret sealed at rest); `IntakeWorker` turns each event
//! of the queue stream `events` into one Pending delivery per matching enabled webhook;
//! `DeliveryWorker` POSTs them signed (`bosun-signature`, see [`signature`]) and retries with
//! exponential back-off until 2xx or `max_attempts`.

mod config;
mod delivery;
mod entities;
mod intake;
mod migrations;
mod rotation;
mod service;
pub mod signature;
mod store;
pub mod testing;
pub mod validate;

pub use config::NotificationsConfig;
pub use delivery::{DeliveryWake, DeliveryWorker, MAX_ERROR_CHARS, TRUNCATION_MARKER};
pub use intake::{CONSUMER_GROUP, IntakeWorker};
pub use migrations::Migrator;
pub use rotation::{SecretRewrapReport, rewrap_webhook_secrets};
pub use service::NotificationServiceImpl;
pub use signature::{SigningSecret, VerifyError, verify};
pub use store::find_enabled_webhook;

/// The gRPC service name, for routing and health.
pub const SERVICE_NAME: &str = "bosun.notifications.v1.NotificationService";
