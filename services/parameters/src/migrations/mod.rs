//! Migrations of the Parameter Store tables, tracked in their own table
//! `bosun_parameters_migrations`. Append-only: one file per migration.

use bosun_store::sea_orm_migration::{self, prelude::*};

mod m20261128_000001_create_parameters;
mod m20261128_000002_create_policy_events;
mod m20261128_000003_create_event_outbox;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_parameters::Migration),
            Box::new(m20261128_000002_create_policy_events::Migration),
            Box::new(m20261128_000003_create_event_outbox::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "bosun_parameters_migrations".into_iden()
    }
}
