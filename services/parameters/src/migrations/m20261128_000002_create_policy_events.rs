//! Creates `parameter_policy_events`: which policy firings already happened, so a policy
//! fires once per due time across restarts and replicas.

use bosun_store::sea_orm_migration::{self, prelude::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ParameterPolicyEvents {
    Table,
    Name,
    PolicyIndex,
    DueAt,
    FiredAt,
}

/// Names are at most 1011 characters (`name::MAX_NAME_LENGTH`).
const NAME_LENGTH: u32 = 1011;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ParameterPolicyEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ParameterPolicyEvents::Name)
                            .string_len(NAME_LENGTH)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ParameterPolicyEvents::PolicyIndex)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ParameterPolicyEvents::DueAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ParameterPolicyEvents::FiredAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    // The key makes recording a firing the claim: of two replicas acting on
                    // the same due event, one insert wins and only that one publishes.
                    .primary_key(
                        Index::create()
                            .col(ParameterPolicyEvents::Name)
                            .col(ParameterPolicyEvents::PolicyIndex)
                            .col(ParameterPolicyEvents::DueAt),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ParameterPolicyEvents::Table).to_owned())
            .await
    }
}
