//! Creates the identity tables.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuthUsers {
    Table,
    Username,
    PasswordHash,
    CreatedAt,
    PasswordChangedAt,
}

#[derive(DeriveIden)]
enum AuthRoles {
    Table,
    RoleName,
    Description,
    BuiltIn,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuthRolePolicies {
    Table,
    RoleName,
    PolicyName,
    Document,
}

#[derive(DeriveIden)]
enum AuthUserRoles {
    Table,
    Username,
    RoleName,
}

#[derive(DeriveIden)]
enum AuthApiKeys {
    Table,
    KeyId,
    Username,
    Description,
    SecretHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthUsers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuthUsers::Username).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(AuthUsers::PasswordHash).string().not_null())
                    .col(ColumnDef::new(AuthUsers::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(
                        ColumnDef::new(AuthUsers::PasswordChangedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthRoles::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuthRoles::RoleName).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(AuthRoles::Description).string().not_null())
                    .col(ColumnDef::new(AuthRoles::BuiltIn).boolean().not_null())
                    .col(ColumnDef::new(AuthRoles::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthRolePolicies::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuthRolePolicies::RoleName).string_len(64).not_null())
                    .col(ColumnDef::new(AuthRolePolicies::PolicyName).string_len(128).not_null())
                    .col(ColumnDef::new(AuthRolePolicies::Document).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(AuthRolePolicies::RoleName)
                            .col(AuthRolePolicies::PolicyName),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthUserRoles::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuthUserRoles::Username).string_len(64).not_null())
                    .col(ColumnDef::new(AuthUserRoles::RoleName).string_len(64).not_null())
                    .primary_key(
                        Index::create()
                            .col(AuthUserRoles::Username)
                            .col(AuthUserRoles::RoleName),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_auth_user_roles_role")
                    .table(AuthUserRoles::Table)
                    .col(AuthUserRoles::RoleName)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthApiKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuthApiKeys::KeyId).string_len(32).not_null().primary_key())
                    .col(ColumnDef::new(AuthApiKeys::Username).string_len(64).not_null())
                    .col(ColumnDef::new(AuthApiKeys::Description).string().not_null())
                    .col(ColumnDef::new(AuthApiKeys::SecretHash).string_len(64).not_null())
                    .col(ColumnDef::new(AuthApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(AuthApiKeys::ExpiresAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(AuthApiKeys::RevokedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(AuthApiKeys::LastUsedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_auth_api_keys_username")
                    .table(AuthApiKeys::Table)
                    .col(AuthApiKeys::Username)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuthApiKeys::Table.into_iden(),
            AuthUserRoles::Table.into_iden(),
            AuthRolePolicies::Table.into_iden(),
            AuthRoles::Table.into_iden(),
            AuthUsers::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
