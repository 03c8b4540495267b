//! Test migration 1: the `widgets` table.

// `DeriveMigrationName` expands to a `sea_orm_migration::` path: `self` resolves it to the re-export.
use bosun_store::sea_orm_migration::{self, prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("widgets")
                    .col(pk_auto("id"))
                    .col(string("name"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("widgets").to_owned())
            .await
    }
}
