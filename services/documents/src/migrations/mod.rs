//! Migrations of the documents tables, tracked in their own table `bosun_documents_migrations`.

use bosun_store::sea_orm_migration::{self, prelude::*};

mod m20261128_000001_create_documents;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261128_000001_create_documents::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "bosun_documents_migrations".into_iden()
    }
}
