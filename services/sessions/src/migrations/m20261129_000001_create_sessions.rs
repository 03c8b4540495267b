//! Creates `sessions` and the indexes DescribeSessions and the reaper read by.

use bosun_store::sea_orm_migration::{self, prelude::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    NodeId,
    Owner,
    Status,
    SessionType,
    DocumentName,
    DocumentVersion,
    Reason,
    RunAs,
    Host,
    PortNumber,
    LocalPortNumber,
    Parameters,
    IdleTimeoutMinutes,
    MaxDurationMinutes,
    Transcript,
    RecordInput,
    TokenHash,
    TokenExpiresAt,
    TokenUsed,
    Hub,
    HubSeenAt,
    CreatedAt,
    EndedAt,
    Details,
    ExitCode,
    BytesIn,
    BytesOut,
}

fn text(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).text().not_null().to_owned()
}

fn short(column: impl IntoIden, length: u32) -> ColumnDef {
    ColumnDef::new(column)
        .string_len(length)
        .not_null()
        .to_owned()
}

fn int(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).integer().not_null().to_owned()
}

fn big(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().to_owned()
}

fn flag(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).boolean().not_null().to_owned()
}

fn timestamp(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn optional_timestamp(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(short(Sessions::Id, 96).primary_key())
                    .col(short(Sessions::NodeId, 32))
                    .col(short(Sessions::Owner, 160))
                    .col(short(Sessions::Status, 16))
                    .col(short(Sessions::SessionType, 32))
                    .col(text(Sessions::DocumentName))
                    .col(short(Sessions::DocumentVersion, 16))
                    .col(text(Sessions::Reason))
                    .col(short(Sessions::RunAs, 64))
                    .col(text(Sessions::Host))
                    .col(int(Sessions::PortNumber))
                    .col(int(Sessions::LocalPortNumber))
                    .col(text(Sessions::Parameters))
                    .col(int(Sessions::IdleTimeoutMinutes))
                    .col(int(Sessions::MaxDurationMinutes))
                    .col(flag(Sessions::Transcript))
                    .col(flag(Sessions::RecordInput))
                    .col(short(Sessions::TokenHash, 64))
                    .col(timestamp(Sessions::TokenExpiresAt))
                    .col(flag(Sessions::TokenUsed))
                    .col(ColumnDef::new(Sessions::Hub).text().null())
                    .col(optional_timestamp(Sessions::HubSeenAt))
                    .col(timestamp(Sessions::CreatedAt))
                    .col(optional_timestamp(Sessions::EndedAt))
                    .col(text(Sessions::Details))
                    .col(ColumnDef::new(Sessions::ExitCode).integer().null())
                    .col(big(Sessions::BytesIn))
                    .col(big(Sessions::BytesOut))
                    .to_owned(),
            )
            .await?;
        // DescribeSessions: Active/History by status, newest first; the reaper by status too.
        let indexes = [
            (
                "sessions_by_status",
                vec![Sessions::Status, Sessions::CreatedAt, Sessions::Id],
            ),
            (
                "sessions_by_owner",
                vec![Sessions::Owner, Sessions::CreatedAt, Sessions::Id],
            ),
            (
                "sessions_by_node",
                vec![Sessions::NodeId, Sessions::CreatedAt, Sessions::Id],
            ),
        ];
        for (name, columns) in indexes {
            let mut index = Index::create();
            index.name(name).table(Sessions::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }
}
