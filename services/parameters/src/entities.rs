//! The Parameter Store tables: one row per parameter (its current metadata), one per kept
//! version, one per label, one per tag, one per policy firing that happened, and one per change event not yet published.

pub mod parameter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parameters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// String, StringList or SecureString.
        pub parameter_type: String,
        /// Standard or Advanced; never Intelligent-Tiering once stored.
        pub tier: String,
        /// The master key of a SecureString; empty otherwise.
        pub key_id: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        #[sea_orm(column_type = "Text")]
        pub allowed_pattern: String,
        pub data_type: String,
        /// Bumped with a conditional update on every write, so concurrent overwrites each
        /// get their own version or fail with TooManyUpdates.
        pub latest_version: i64,
        pub last_modified_at: ChronoDateTimeUtc,
        pub last_modified_user: String,
        /// JSON array of canonical policy objects; `[]` when none.
        #[sea_orm(column_type = "Text")]
        pub policies: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parameter_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        /// The value; for a SecureString the base64 envelope, never plaintext.
        #[sea_orm(column_type = "Text")]
        pub value: String,
        pub parameter_type: String,
        pub key_id: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        #[sea_orm(column_type = "Text")]
        pub allowed_pattern: String,
        pub tier: String,
        #[sea_orm(column_type = "Text")]
        pub policies: String,
        pub data_type: String,
        pub modified_at: ChronoDateTimeUtc,
        pub modified_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod label {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parameter_labels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// The key makes a label sit on at most one version of a parameter.
        #[sea_orm(primary_key, auto_increment = false)]
        pub label: String,
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parameter_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod policy_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parameter_policy_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub policy_index: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub due_at: ChronoDateTimeUtc,
        pub fired_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parameter_event_outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub payload: String,
        pub headers: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
