//! The inventory tables: activations, nodes, their tags, and resource groups.

pub mod activation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Hex SHA-256 of the activation code. Never the code.
        pub code_hash: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        #[sea_orm(column_type = "Text")]
        pub default_instance_name: String,
        pub registration_limit: i32,
        pub registrations_count: i32,
        pub expires_at: ChronoDateTimeUtc,
        pub created_at: ChronoDateTimeUtc,
        /// JSON object of tag key to value, given to every node registered with it.
        #[sea_orm(column_type = "Text")]
        pub tags: String,
        pub deleted: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod node {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "nodes")]
    pub struct Model {
        /// `mi-` and 17 lowercase hex digits.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub activation_id: String,
        #[sea_orm(column_type = "Text")]
        pub name: String,
        /// Ed25519 public key, 32 raw bytes.
        #[sea_orm(column_type = "Blob")]
        pub public_key: Vec<u8>,
        pub registered_at: ChronoDateTimeUtc,
        pub deregistered_at: Option<ChronoDateTimeUtc>,
        pub last_ping_at: Option<ChronoDateTimeUtc>,
        #[sea_orm(column_type = "Text")]
        pub agent_version: String,
        #[sea_orm(column_type = "Text")]
        pub platform_type: String,
        #[sea_orm(column_type = "Text")]
        pub platform_name: String,
        #[sea_orm(column_type = "Text")]
        pub platform_version: String,
        #[sea_orm(column_type = "Text")]
        pub hostname: String,
        /// JSON list of addresses.
        #[sea_orm(column_type = "Text")]
        pub ip_addresses: String,
        #[sea_orm(column_type = "Text")]
        pub architecture: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod node_tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "node_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub node_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod resource_group {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "resource_groups")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        /// The checked `ResourceQuery` as JSON (see `validate::GroupQuery`).
        #[sea_orm(column_type = "Text")]
        pub query: String,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
