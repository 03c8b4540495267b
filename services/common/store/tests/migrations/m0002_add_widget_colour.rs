//! Test migration 2: a nullable `colour` column on `widgets`, so the test sees two steps.

// `DeriveMigrationName` expands to a `sea_orm_migration::` path: `self` resolves it to the re-export.
use bosun_store::sea_orm_migration::{self, prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("widgets")
                    .add_column(string_null("colour"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("widgets")
                    .drop_column("colour")
                    .to_owned(),
            )
            .await
    }
}
