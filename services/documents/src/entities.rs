//! The documents tables: one row per document, one per version, its shares and its tags.

pub mod document {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "documents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// `user/<name>` (or another principal) of the creator.
        pub owner: String,
        /// Command, Automation or Session; fixed for the document's life.
        pub document_type: String,
        pub default_version: i32,
        /// The highest version that still exists.
        pub latest_version: i32,
        /// The highest version ever issued, so a deleted number is never reused.
        pub last_issued_version: i32,
        pub target_type: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "document_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        /// Unique within the document when set.
        pub version_name: Option<String>,
        /// Exactly as submitted; its SHA-256 is `sha256`.
        #[sea_orm(column_type = "Text")]
        pub content: String,
        /// `JSON` or `YAML`.
        pub format: String,
        pub schema_version: String,
        pub sha256: String,
        pub display_name: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        /// JSON array of `{name, type, description, default_value}`.
        #[sea_orm(column_type = "Text")]
        pub parameters: String,
        /// JSON array of platform names.
        pub platform_types: String,
        pub target_type: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod share {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "document_shares")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// `user/<name>`, `role/<name>` or `All`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub principal: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "document_tags")]
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
