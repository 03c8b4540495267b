//! Migrations of the inventory tables, tracked in their own table
//! `bosun_inventory_migrations`.

use bosun_store::sea_orm_migration::{self, prelude::*};

mod m20261128_000001_create_inventory;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261128_000001_create_inventory::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "bosun_inventory_migrations".into_iden()
    }
}
