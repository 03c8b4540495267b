//! The `audit_events` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// UUIDv7 as text: time-ordered, so ordering by id is ordering by time.
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub event_time: ChronoDateTimeUtc,
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// `success`, `failure` or `denied`.
    pub result: String,
    pub error_code: String,
    pub trace_id: String,
    pub source_address: String,
    pub details: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
