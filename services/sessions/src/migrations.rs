//! Migrations (H1).
pub struct Migrator;
