//! Creates `activations`, `nodes`, `node_tags` and `resource_groups`.

use bosun_store::sea_orm_migration::{self, prelude::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Activations {
    Table,
    Id,
    CodeHash,
    Description,
    DefaultInstanceName,
    RegistrationLimit,
    RegistrationsCount,
    ExpiresAt,
    CreatedAt,
    Tags,
    Deleted,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    ActivationId,
    Name,
    PublicKey,
    RegisteredAt,
    DeregisteredAt,
    LastPingAt,
    AgentVersion,
    PlatformType,
    PlatformName,
    PlatformVersion,
    Hostname,
    IpAddresses,
    Architecture,
}

#[derive(DeriveIden)]
enum NodeTags {
    Table,
    NodeId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum ResourceGroups {
    Table,
    Name,
    Description,
    Query,
    CreatedAt,
    UpdatedAt,
}

fn timestamp(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Activations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Activations::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    // Hex SHA-256 of the code; the code itself is never stored.
                    .col(
                        ColumnDef::new(Activations::CodeHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Activations::Description).text().not_null())
                    .col(
                        ColumnDef::new(Activations::DefaultInstanceName)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Activations::RegistrationLimit)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Activations::RegistrationsCount)
                            .integer()
                            .not_null(),
                    )
                    .col(timestamp(Activations::ExpiresAt))
                    .col(timestamp(Activations::CreatedAt))
                    .col(ColumnDef::new(Activations::Tags).text().not_null())
                    .col(ColumnDef::new(Activations::Deleted).boolean().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Nodes::Id)
                            .string_len(20)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Nodes::ActivationId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Nodes::Name).text().not_null())
                    .col(ColumnDef::new(Nodes::PublicKey).blob().not_null())
                    .col(timestamp(Nodes::RegisteredAt))
                    .col(
                        ColumnDef::new(Nodes::DeregisteredAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Nodes::LastPingAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Nodes::AgentVersion).text().not_null())
                    .col(ColumnDef::new(Nodes::PlatformType).text().not_null())
                    .col(ColumnDef::new(Nodes::PlatformName).text().not_null())
                    .col(ColumnDef::new(Nodes::PlatformVersion).text().not_null())
                    .col(ColumnDef::new(Nodes::Hostname).text().not_null())
                    .col(ColumnDef::new(Nodes::IpAddresses).text().not_null())
                    .col(ColumnDef::new(Nodes::Architecture).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_nodes_activation")
                    .table(Nodes::Table)
                    .col(Nodes::ActivationId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NodeTags::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(NodeTags::NodeId).string_len(20).not_null())
                    .col(ColumnDef::new(NodeTags::Key).string_len(128).not_null())
                    .col(ColumnDef::new(NodeTags::Value).string_len(256).not_null())
                    .primary_key(Index::create().col(NodeTags::NodeId).col(NodeTags::Key))
                    .to_owned(),
            )
            .await?;
        // Targets and filters select by tag: `key = ? AND value IN (...)`.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_node_tags_key_value")
                    .table(NodeTags::Table)
                    .col(NodeTags::Key)
                    .col(NodeTags::Value)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ResourceGroups::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ResourceGroups::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ResourceGroups::Description)
                            .text()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ResourceGroups::Query).text().not_null())
                    .col(timestamp(ResourceGroups::CreatedAt))
                    .col(timestamp(ResourceGroups::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ResourceGroups::Table.into_iden(),
            NodeTags::Table.into_iden(),
            Nodes::Table.into_iden(),
            Activations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
