//! The commands tables. States are stored as the names of [`crate::model::CommandState`] and
//! [`crate::model::InvocationState`]; JSON columns say what they hold.

pub mod command {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "commands")]
    pub struct Model {
        /// A UUID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(column_type = "Text")]
        pub document_name: String,
        /// The version that runs, a number.
        #[sea_orm(column_type = "Text")]
        pub document_version: String,
        /// Hex SHA-256 of the version's content.
        #[sea_orm(column_type = "Text")]
        pub document_hash: String,
        /// JSON object: parameter name → list of values, as requested (never resolved
        /// `{{ssm:}}` values).
        #[sea_orm(column_type = "Text")]
        pub parameters: String,
        /// JSON list of node ids as requested (empty when targets were given).
        #[sea_orm(column_type = "Text")]
        pub instance_ids: String,
        /// JSON list of `{"key":…,"values":[…]}` as requested.
        #[sea_orm(column_type = "Text")]
        pub targets: String,
        #[sea_orm(column_type = "Text")]
        pub comment: String,
        /// Delivery timeout.
        pub timeout_seconds: i32,
        /// The document's execution timeout (the agent enforces it per invocation).
        pub execution_timeout_seconds: i64,
        /// As requested (`50`, `10%`).
        #[sea_orm(column_type = "Text")]
        pub max_concurrency: String,
        #[sea_orm(column_type = "Text")]
        pub max_errors: String,
        /// `max_concurrency` applied to the target count: invocations in flight at most (≥ 1).
        pub concurrency_limit: i32,
        /// `max_errors` applied to the target count: the run stops when errors exceed it.
        pub error_limit: i32,
        #[sea_orm(column_type = "Text")]
        pub output_bucket: String,
        #[sea_orm(column_type = "Text")]
        pub output_prefix: String,
        /// JSON [`crate::model::Notification`], or empty.
        #[sea_orm(column_type = "Text")]
        pub notification: String,
        /// JSON [`crate::model::Plan`]: the rendered steps every invocation runs.
        #[sea_orm(column_type = "Text")]
        pub plan: String,
        /// [`crate::model::CommandState`] name.
        pub state: String,
        pub requested_at: ChronoDateTimeUtc,
        /// requested_at + timeout_seconds: an invocation not started by then never starts.
        pub delivery_deadline: ChronoDateTimeUtc,
        /// delivery_deadline + execution timeout (SSM's `ExpiresAfter`): any invocation not
        /// ended by then ends DeliveryTimedOut.
        pub expires_at: ChronoDateTimeUtc,
        pub finished_at: Option<ChronoDateTimeUtc>,
        pub target_count: i32,
        pub completed_count: i32,
        pub error_count: i32,
        pub delivery_timed_out_count: i32,
        #[sea_orm(column_type = "Text")]
        pub requested_by: String,
        pub cancel_requested: bool,
        /// JSON object of W3C trace-context keys of the SendCommand call.
        #[sea_orm(column_type = "Text")]
        pub trace_context: String,
        /// The dispatcher replica holding the command (see `engine`).
        #[sea_orm(column_type = "Text", nullable)]
        pub lease_owner: Option<String>,
        pub lease_until: Option<ChronoDateTimeUtc>,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod invocation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "command_invocations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub command_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub node_id: String,
        #[sea_orm(column_type = "Text")]
        pub node_name: String,
        #[sea_orm(column_type = "Text")]
        pub platform_type: String,
        /// Dispatch order within the command (0, 1, …).
        pub seq: i32,
        /// Comma-separated indexes of the plan's steps that run on this node (their
        /// preconditions hold), e.g. `0,2`.
        #[sea_orm(column_type = "Text")]
        pub steps: String,
        /// [`crate::model::InvocationState`] name.
        pub state: String,
        /// The `node_messages` id of the `commands.run` message, once dispatched.
        #[sea_orm(column_type = "Text", nullable)]
        pub message_id: Option<String>,
        pub dispatched_at: Option<ChronoDateTimeUtc>,
        /// When the agent reported the first plugin started.
        pub started_at: Option<ChronoDateTimeUtc>,
        pub ended_at: Option<ChronoDateTimeUtc>,
        /// Exit code of the last plugin that ran; -1 when none ran.
        pub response_code: i32,
        /// JSON list of `bosun_document::run::PluginResult` (the last the agent reported).
        #[sea_orm(column_type = "Text")]
        pub plugins: String,
        /// Why the invocation failed as a whole, if it did (agent interrupted, …).
        #[sea_orm(column_type = "Text")]
        pub error: String,
        pub cancel_requested: bool,
        /// [`crate::model::OutputState`] name.
        pub output_state: String,
        /// When output still incomplete is stored as it is.
        pub output_deadline: Option<ChronoDateTimeUtc>,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod output_chunk {
    use sea_orm::entity::prelude::*;

    /// Output streamed by an agent while a plugin runs, until the invocation's output is
    /// stored whole in the object store.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "command_output_chunks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub command_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub node_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub plugin_index: i32,
        /// `stdout` or `stderr`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub stream: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub offset: i64,
        #[sea_orm(column_type = "Blob")]
        pub data: Vec<u8>,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_outbox {
    use sea_orm::entity::prelude::*;

    /// Status-change events staged in the change's transaction, published to the queue
    /// stream `events` after commit.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "command_event_outbox")]
    pub struct Model {
        /// The event id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The event JSON.
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
