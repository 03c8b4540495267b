//! Migrations of the commands tables, tracked in their own table `bosun_commands_migrations`.

use bosun_store::sea_orm_migration::{self, prelude::*};

mod m20261129_000001_create_commands;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261129_000001_create_commands::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "bosun_commands_migrations".into_iden()
    }
}
