//! Migrations of the sessions table, tracked in their own table `bosun_sessions_migrations`.

use bosun_store::sea_orm_migration::{self, prelude::*};

mod m20261129_000001_create_sessions;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261129_000001_create_sessions::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "bosun_sessions_migrations".into_iden()
    }
}
