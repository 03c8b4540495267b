//! The documents service: SSM-compatible documents stored in versions, checked by the
//! `bosun-document` model on the way in, shared with users, roles or everyone, tagged, and
//! a read-only set of built-in documents served from memory.

mod builtin;
mod content;
mod entities;
mod migrations;
mod service;
mod store;
mod validate;

pub use builtin::BUILT_IN_OWNER;
pub use migrations::Migrator;
pub use service::{ADMINISTER_ACTION, DocumentServiceImpl, RunnableDocument, fetch_for_caller};
pub use validate::{
    MAX_DOCUMENTS, MAX_SHARES_PER_DOCUMENT, MAX_TAGS_PER_DOCUMENT, MAX_VERSIONS_PER_DOCUMENT,
};

/// The gRPC service name, for routing and health.
pub const SERVICE_NAME: &str = "bosun.documents.v1.DocumentService";

/// The built-in documents' names and SSM aliases, as (Bosun name, alias).
pub fn built_in_names() -> Vec<(&'static str, &'static str)> {
    builtin::SOURCES
        .iter()
        .map(|(name, alias, _)| (*name, *alias))
        .collect()
}
