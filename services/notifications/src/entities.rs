//! The notifications tables: one row per webhook, one per (webhook, event) delivery.

pub mod webhook {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhooks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub webhook_id: String,
        pub url: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        /// JSON arrays of strings; empty matches everything.
        #[sea_orm(column_type = "Text")]
        pub sources: String,
        #[sea_orm(column_type = "Text")]
        pub operations: String,
        #[sea_orm(column_type = "Text")]
        pub name_prefixes: String,
        pub enabled: bool,
        /// Base64 of the signing key sealed by the Parameter Store key ring with the webhook
        /// id as context. Never the plaintext.
        #[sea_orm(column_type = "Text")]
        pub sealed_secret: String,
        pub created_by: String,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub webhook_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub source: String,
        pub operation: String,
        #[sea_orm(column_type = "Text")]
        pub name: String,
        /// The event JSON exactly as published: the body of every attempt.
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        /// Pending, Succeeded or Failed.
        pub status: String,
        pub attempts: i32,
        pub last_status_code: Option<i32>,
        pub last_error: Option<String>,
        /// Due time of the next attempt; NULL once Succeeded or Failed.
        pub next_attempt_at: Option<ChronoDateTimeUtc>,
        /// The worker sending the current attempt, until `lease_until`.
        pub lease_owner: Option<String>,
        pub lease_until: Option<ChronoDateTimeUtc>,
        pub delivered_at: Option<ChronoDateTimeUtc>,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
