//! The audit trail: `AuditLog`, the recorder every service uses to append an event for each
//! mutation, decrypt and session, and `AuditService`, which answers queries over it.
//!
//! Events live in the shared relational store (`audit_events`), written in the caller's own
//! transaction where it has one, so a change and its audit event land together or not at all.

mod entity;
mod migrations;
mod recorder;
mod service;

pub use migrations::Migrator;
pub use recorder::{AuditLog, AuditOutcome, AuditRecord, SOURCE_ADDRESS_HEADER};
pub use service::AuditServiceImpl;
