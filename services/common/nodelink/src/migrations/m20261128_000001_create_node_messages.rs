//! Creates `node_messages` and its two partial indexes over unacknowledged rows.

use bosun_store::sea_orm_migration::{self, prelude::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NodeMessages {
    Table,
    Id,
    NodeId,
    Topic,
    Payload,
    TraceContext,
    CreatedAt,
    ExpiresAt,
    AckedAt,
    LastSentAt,
    SendCount,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(NodeMessages::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(NodeMessages::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(NodeMessages::NodeId)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NodeMessages::Topic)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(NodeMessages::Payload).blob().not_null())
                    .col(ColumnDef::new(NodeMessages::TraceContext).text().not_null())
                    .col(
                        ColumnDef::new(NodeMessages::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NodeMessages::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(NodeMessages::AckedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(NodeMessages::LastSentAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(NodeMessages::SendCount)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        // Partial indexes: acknowledged rows are the bulk of the table and never read again
        // by the hot paths. Both PostgreSQL and SQLite understand `CREATE INDEX ... WHERE`.
        let connection = manager.get_connection();
        // "What is pending for this node", oldest first (connect, periodic re-send).
        connection
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_node_messages_pending_by_node \
                 ON node_messages (node_id, created_at, id) WHERE acked_at IS NULL",
            )
            .await?;
        // "What has been pending since before X", across nodes (re-send, clean-up, metrics).
        connection
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_node_messages_pending_by_age \
                 ON node_messages (created_at) WHERE acked_at IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NodeMessages::Table).to_owned())
            .await
    }
}
