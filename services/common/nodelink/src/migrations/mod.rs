//! Migrations of the node messaging table, tracked in their own table
//! `bosun_nodelink_migrations`.

use bosun_store::sea_orm_migration::{self, prelude::*};

mod m20261128_000001_create_node_messages;

/// Creates and upgrades `node_messages`; run it with
/// `bosun_store::migrate::<bosun_nodelink::Migrator>(&db)`.
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261128_000001_create_node_messages::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "bosun_nodelink_migrations".into_iden()
    }
}
