//! Migrations of the audit tables, tracked in their own table `bosun_audit_migrations`.

use sea_orm_migration::prelude::*;

mod m20261128_000001_create_audit_events;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261128_000001_create_audit_events::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "bosun_audit_migrations".into_iden()
    }
}
