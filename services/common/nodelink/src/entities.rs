//! The `node_messages` table: one row per message to a node, the truth about what is owed.

pub mod node_message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "node_messages")]
    pub struct Model {
        /// UUID v7, so ids sort by creation time.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub node_id: String,
        pub topic: String,
        #[sea_orm(column_type = "Blob")]
        pub payload: Vec<u8>,
        /// JSON object of the W3C trace context of the request that made the work.
        #[sea_orm(column_type = "Text")]
        pub trace_context: String,
        pub created_at: ChronoDateTimeUtc,
        pub expires_at: Option<ChronoDateTimeUtc>,
        pub acked_at: Option<ChronoDateTimeUtc>,
        pub last_sent_at: Option<ChronoDateTimeUtc>,
        pub send_count: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
