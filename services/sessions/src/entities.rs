//! The `sessions` table: one row per session, from StartSession to its end. Statuses are
//! stored as [`crate::SessionStatus`] names; durations as the document's minutes (unscaled).

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        /// `<owner>-<17 hex digits>`, at most 96 characters.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub node_id: String,
        /// The principal that started it (`user/alice`).
        pub owner: String,
        /// [`crate::SessionStatus`] name.
        pub status: String,
        /// `Standard_Stream`, `InteractiveCommands` or `Port`.
        pub session_type: String,
        /// The canonical name (`Bosun-StartShellSession` when an alias was asked for).
        #[sea_orm(column_type = "Text")]
        pub document_name: String,
        /// The version that runs, a number.
        pub document_version: String,
        #[sea_orm(column_type = "Text")]
        pub reason: String,
        /// The OS user on the node (empty for Port sessions).
        pub run_as: String,
        /// Port sessions: where the agent connects, and the document's local port (0 = any).
        #[sea_orm(column_type = "Text")]
        pub host: String,
        pub port_number: i32,
        pub local_port_number: i32,
        /// JSON object: parameter name → list of values, as requested.
        #[sea_orm(column_type = "Text")]
        pub parameters: String,
        /// Minutes of the document (`SessionsConfig::minutes` scales them).
        pub idle_timeout_minutes: i32,
        /// 0 = no limit.
        pub max_duration_minutes: i32,
        /// A transcript is kept.
        pub transcript: bool,
        /// The transcript records the client's input too.
        pub record_input: bool,
        /// Hex SHA-256 of the current client token (never the token).
        pub token_hash: String,
        pub token_expires_at: ChronoDateTimeUtc,
        /// A token opens one stream.
        pub token_used: bool,
        /// The gateway replica holding the agent's end, once it attached.
        pub hub: Option<String>,
        /// When the hub last said it was alive.
        pub hub_seen_at: Option<ChronoDateTimeUtc>,
        /// The session's start date.
        pub created_at: ChronoDateTimeUtc,
        pub ended_at: Option<ChronoDateTimeUtc>,
        /// Why it ended (`exit status 0`, `terminated by user/alice`, ...).
        #[sea_orm(column_type = "Text")]
        pub details: String,
        pub exit_code: Option<i32>,
        /// Payload bytes client → node and node → client.
        pub bytes_in: i64,
        pub bytes_out: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
