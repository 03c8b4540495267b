//! Many invocation rows changed by one statement:
//! `UPDATE command_invocations SET … FROM (VALUES …) AS v WHERE (command_id, node_id) match
//! AND state IN (…) RETURNING command_id, node_id`, the same SQL on PostgreSQL and SQLite
//! (≥ 3.35) except for placeholders and casts. VALUES columns are `column1`, `column2`, … on
//! both.

use bosun_core::ApiError;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};

use super::db_error;

/// The SQL type of a VALUES column (PostgreSQL needs casts for parameters of unknown type).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Text,
    Int,
    Timestamp,
}

/// One column set from the VALUES row: `column = v.columnN`.
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

/// Rows per statement (keeps parameters well below both databases' limits).
const ROWS_PER_STATEMENT: usize = 500;

/// Sets `columns` of the invocations named by the first two values of each row
/// (command_id, node_id) when their state is one of `states`. Returns the (command_id,
/// node_id) of the rows changed.
pub(crate) async fn update_invocations(
    conn: &impl ConnectionTrait,
    columns: &[Column],
    rows: Vec<Vec<Value>>,
    states: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    update_invocations_where(conn, columns, rows, "state", states).await
}

/// As [`update_invocations`], with the condition on `filter_column` (a column name).
pub(crate) async fn update_invocations_where(
    conn: &impl ConnectionTrait,
    columns: &[Column],
    rows: Vec<Vec<Value>>,
    filter_column: &'static str,
    states: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let backend = conn.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let mut changed = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let mut values = Vec::with_capacity(chunk.len() * (columns.len() + 2) + states.len());
        let mut next = 0usize;
        let mut placeholder = |kind: Option<Kind>| {
            next += 1;
            if postgres {
                let cast = match kind {
                    None | Some(Kind::Text) => "::text",
                    Some(Kind::Int) => "::integer",
                    Some(Kind::Timestamp) => "::timestamptz",
                };
                format!("${next}{cast}")
            } else {
                "?".to_owned()
            }
        };
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            if row.len() != columns.len() + 2 {
                return Err(ApiError::internal("bulk update: row of the wrong width"));
            }
            let mut parts = Vec::with_capacity(row.len());
            for (index, value) in row.into_iter().enumerate() {
                let kind = index.checked_sub(2).map(|index| columns[index].kind);
                parts.push(placeholder(kind));
                values.push(value);
            }
            tuples.push(format!("({})", parts.join(", ")));
        }
        let sets: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(index, column)| format!("{} = v.column{}", column.name, index + 3))
            .collect();
        let state_list: Vec<String> = states
            .iter()
            .map(|state| {
                values.push((*state).into());
                placeholder(Some(Kind::Text))
            })
            .collect();
        let sql = format!(
            "UPDATE command_invocations SET {} FROM (VALUES {}) AS v \
             WHERE command_invocations.command_id = v.column1 \
             AND command_invocations.node_id = v.column2 \
             AND command_invocations.{} IN ({}) \
             RETURNING command_invocations.command_id, command_invocations.node_id",
            sets.join(", "),
            tuples.join(", "),
            filter_column,
            state_list.join(", ")
        );
        let result = conn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .map_err(db_error("bulk update invocations"))?;
        for row in result {
            let command_id: String = row
                .try_get("", "command_id")
                .map_err(db_error("bulk update invocations"))?;
            let node_id: String = row
                .try_get("", "node_id")
                .map_err(db_error("bulk update invocations"))?;
            changed.push((command_id, node_id));
        }
    }
    Ok(changed)
}
