//! Creates `parameter_event_outbox`: change events written in the transaction of the change
//! they describe and removed once published, so a crash or a queue outage between the
//! commit and the publish loses no event.

use bosun_store::sea_orm_migration::{self, prelude::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ParameterEventOutbox {
    Table,
    Id,
    Payload,
    Headers,
    CreatedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ParameterEventOutbox::Table)
                    .if_not_exists()
                    // Ids grow with commit order closely enough to publish oldest first.
                    .col(
                        ColumnDef::new(ParameterEventOutbox::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ParameterEventOutbox::Payload)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ParameterEventOutbox::Headers)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ParameterEventOutbox::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ParameterEventOutbox::Table).to_owned())
            .await
    }
}
