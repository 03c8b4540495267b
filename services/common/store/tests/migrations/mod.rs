//! Migrators used by the store tests; sea-orm 2 names a migration after its file, so each
//! migration has a file of its own.

use bosun_store::sea_orm_migration::prelude::*;

pub mod m0001_create_widgets;
pub mod m0002_add_widget_colour;
pub mod m0003_broken_statement;

/// The per-service migration table the well-behaved test migrator records itself in.
pub const MIGRATION_TABLE: &str = "bosun_storetest_migrations";

/// The migration table of [`BrokenMigrator`].
pub const BROKEN_MIGRATION_TABLE: &str = "bosun_storetest_broken_migrations";

/// Two migrations: create `widgets`, then add a column to it.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_create_widgets::Migration),
            Box::new(m0002_add_widget_colour::Migration),
        ]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        MIGRATION_TABLE.into_iden()
    }
}

/// A migrator whose only migration is invalid SQL.
pub struct BrokenMigrator;

#[async_trait::async_trait]
impl MigratorTrait for BrokenMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m0003_broken_statement::Migration)]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        BROKEN_MIGRATION_TABLE.into_iden()
    }
}

/// A migrator that forgets to name its own migration table.
pub struct DefaultTableMigrator;

#[async_trait::async_trait]
impl MigratorTrait for DefaultTableMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m0001_create_widgets::Migration)]
    }
}
