//! Relational store for Bosun services: opening PostgreSQL or SQLite through sea-orm,
//! per-service migrations each recorded in its own table, and throw-away test databases.
//!
//! # Connection URLs
//!
//! * `postgres://user:password@host:5432/database` (or `postgresql://`). Any libpq-style
//!   query parameter sqlx understands works; in particular a schema is selected with
//!   `?options=-c%20search_path%3D<schema>` — the percent-encoded form of
//!   `options=-c search_path=<schema>`. It is sent in the start-up packet, so every pooled
//!   connection, in this process or another one given the same URL, lands in that schema.
//!   [`postgres_url_with_search_path`] builds it.
//! * `sqlite://<path>` (absolute path: `sqlite:///var/lib/bosun/bosun.db`), optionally with
//!   `?mode=rwc`; the parent directory and the file are created when missing. [`sqlite_url`]
//!   builds it from a path. `sqlite::memory:` opens a private in-memory database.
//!
//! Every SQLite connection in the pool is opened with `journal_mode=WAL`,
//! `busy_timeout=5000` ms, `foreign_keys=ON` and `synchronous=NORMAL`. The pool holds up
//! to four connections so reads proceed beside the single writer. A transaction that reads
//! and then writes should start with
//! `db.begin_with_options(TransactionOptions { sqlite_transaction_mode:
//! Some(SqliteTransactionMode::Immediate), ..Default::default() })`: a plain (deferred)
//! `BEGIN` that later needs to write fails at once with "database is locked" when another
//! connection wrote in between, without waiting for the busy time-out.
//!
//! # Migrations
//!
//! Each service owns a [`sea_orm_migration::MigratorTrait`] implementation that overrides
//! `migration_table_name()` (for example `bosun_audit_migrations`) and runs it with
//! [`migrate`]. Services share one database, so the default `seaql_migrations` table is
//! refused. Use the re-exported crates so every service links the same sea-orm:
//!
//! ```ignore
//! use bosun_store::sea_orm_migration::{self, prelude::*};
//! ```
//! (`DeriveMigrationName` expands to a `sea_orm_migration::` path, hence the `self`.)

pub use sea_orm;
pub use sea_orm_migration;

mod redact;
pub mod testing;

pub use redact::redact_url;

use std::path::Path;
use std::time::Duration;

use sea_orm::sea_query::IntoIden;
use sea_orm::{DatabaseConnection, DbBackend, SqlxPostgresConnector, SqlxSqliteConnector};
use sea_orm_migration::MigratorTrait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _};

/// How long a SQLite connection waits for another writer before failing with "database is locked".
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite has a single writer; a few connections let reads proceed beside it under WAL,
/// more only add lock contention.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

/// Enough for the handful of concurrent requests one service instance serves; PostgreSQL's
/// default `max_connections` of 100 has to cover every service sharing the database.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Bound on opening one connection, so an unreachable host fails start-up instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on waiting for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections are closed after this, so a quiet service does not pin server resources.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Connections are recycled after this, so server-side settings changes and fail-overs are
/// picked up eventually.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Errors from opening or migrating the relational store.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The URL could not be understood; `url_redacted` has any password replaced by `***`.
    #[error("invalid database url {url_redacted}: {reason}")]
    InvalidUrl {
        url_redacted: String,
        reason: String,
    },
    /// The database could not be reached or opened; the text names the (redacted) URL.
    #[error("connect to database {0}")]
    Connect(String),
    /// A service's migrations failed; `service` is the migration table's name.
    #[error("migrate {service}: {reason}")]
    Migrate { service: String, reason: String },
    /// A query failed.
    #[error("database query: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// Which database engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

fn invalid_url(url: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidUrl {
        url_redacted: redact_url(url),
        reason: redact::scrub(&reason.to_string(), url),
    }
}

fn connect_error(url: &str, cause: impl std::fmt::Display) -> StoreError {
    StoreError::Connect(format!(
        "{}: {}",
        redact_url(url),
        redact::scrub(&cause.to_string(), url)
    ))
}

/// The backend a URL names, from its scheme alone.
fn backend_of_url(url: &str) -> Option<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else {
        None
    }
}

/// Opens a connection pool to PostgreSQL or SQLite; see the [crate docs](crate) for the URL forms.
///
/// PostgreSQL is probed with one connection first, so an unreachable server is reported
/// at once with its cause (rather than a pool time-out). Returns
/// [`StoreError::InvalidUrl`] for a URL that cannot be parsed or has another scheme, and
/// [`StoreError::Connect`] when the database cannot be reached or opened.
pub async fn connect(url: &str) -> Result<DatabaseConnection, StoreError> {
    match backend_of_url(url) {
        Some(Backend::Postgres) => connect_postgres(url).await,
        Some(Backend::Sqlite) => connect_sqlite(url).await,
        None => Err(invalid_url(
            url,
            "unsupported scheme, expected postgres://, postgresql:// or sqlite:",
        )),
    }
}

async fn connect_postgres(url: &str) -> Result<DatabaseConnection, StoreError> {
    let options: PgConnectOptions = url.parse().map_err(|error| invalid_url(url, error))?;

    // sqlx's pool retries refused connections until its acquire time-out and then reports
    // only "pool timed out"; one direct attempt gives the operator the real cause.
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| connect_error(url, format_args!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|error| connect_error(url, error))?;
    if let Err(error) = probe.close().await {
        tracing::debug!(%error, "closing the postgres probe connection failed");
    }

    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(IDLE_TIMEOUT)
        .max_lifetime(MAX_LIFETIME)
        .connect_with(options)
        .await
        .map_err(|error| connect_error(url, error))?;
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}

/// What the SQLite URL asks for, beyond what sqlx's options expose.
struct SqliteUrlMode {
    in_memory: bool,
    read_only: bool,
}

impl SqliteUrlMode {
    /// Mirrors sqlx's own parsing of `sqlite:` URLs (sqlx-sqlite `options/parse.rs`), which
    /// keeps these flags private.
    fn of(url: &str) -> Self {
        let rest = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
        let mode = url::form_urlencoded::parse(params.as_bytes())
            .find(|(key, _)| key == "mode")
            .map(|(_, value)| value.into_owned());
        SqliteUrlMode {
            in_memory: database == ":memory:" || mode.as_deref() == Some("memory"),
            read_only: mode.as_deref() == Some("ro"),
        }
    }
}

async fn connect_sqlite(url: &str) -> Result<DatabaseConnection, StoreError> {
    let mode = SqliteUrlMode::of(url);
    // These options are applied by sqlx to every connection the pool opens, not just the first.
    let mut options: SqliteConnectOptions = url.parse().map_err(|error| invalid_url(url, error))?;
    options = options
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        .synchronous(SqliteSynchronous::Normal);

    let pool_options = if mode.in_memory {
        // A shared-cache in-memory database lives only while a connection is open, and
        // several connections to it fail with SQLITE_LOCKED rather than waiting: keep exactly
        // one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        if !mode.read_only {
            // WAL is a property of the file; switching a read-only database is impossible,
            // and it is already WAL if we created it.
            options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            create_parent_directory(url, options.get_filename()).await?;
        }
        SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .min_connections(0)
            .idle_timeout(IDLE_TIMEOUT)
            .max_lifetime(MAX_LIFETIME)
    };
    let pool = pool_options
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| connect_error(url, error))?;

    if !mode.in_memory && !mode.read_only {
        // SQLite silently keeps another journal mode where WAL is unsupported (some network
        // file systems); say so, since concurrent readers will then block the writer.
        let journal_mode: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await;
        match journal_mode {
            Ok(journal_mode) if journal_mode.eq_ignore_ascii_case("wal") => {}
            Ok(journal_mode) => {
                tracing::warn!(url = %redact_url(url), %journal_mode, "sqlite database is not in WAL mode")
            }
            Err(error) => return Err(connect_error(url, error)),
        }
    }
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

async fn create_parent_directory(url: &str, file: &Path) -> Result<(), StoreError> {
    let Some(parent) = file.parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() {
        return Ok(());
    }
    tokio::fs::create_dir_all(parent).await.map_err(|error| {
        connect_error(
            url,
            format_args!("create directory {}: {error}", parent.display()),
        )
    })
}

/// The engine behind a connection opened by [`connect`].
///
/// # Panics
///
/// If `db` is a MySQL connection or was disconnected, neither of which [`connect`] returns.
pub fn backend(db: &DatabaseConnection) -> Backend {
    match db.get_database_backend() {
        DbBackend::Postgres => Backend::Postgres,
        DbBackend::Sqlite => Backend::Sqlite,
        other => panic!("bosun-store supports postgres and sqlite, not {other:?}"),
    }
}

/// Builds a `sqlite://` URL for a database file, escaping what sqlx would otherwise read
/// as URL syntax (`%`, `?`, `#`).
pub fn sqlite_url(path: &Path) -> String {
    let path = path.to_string_lossy();
    let mut url = String::with_capacity(path.len() + 18);
    url.push_str("sqlite://");
    for character in path.chars() {
        match character {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            other => url.push(other),
        }
    }
    url.push_str("?mode=rwc");
    url
}

/// Adds `options=-c search_path=<schema>` (percent-encoded) to a PostgreSQL URL, so that
/// every connection opened from the result, by [`connect`] or by libpq tools, uses `schema`
/// for unqualified table names.
///
/// `schema` must be a plain lowercase identifier (`[a-z_][a-z0-9_]*`): PostgreSQL folds
/// unquoted names in `search_path` to lower case and the start-up `options` string has its
/// own escaping, so anything else would silently name another schema.
pub fn postgres_url_with_search_path(base_url: &str, schema: &str) -> Result<String, StoreError> {
    if backend_of_url(base_url) != Some(Backend::Postgres) {
        return Err(invalid_url(
            base_url,
            "expected a postgres:// url to add a search_path to",
        ));
    }
    let plain = schema
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(invalid_url(
            base_url,
            format_args!("schema {schema:?} is not a plain lowercase identifier"),
        ));
    }
    let separator = if base_url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{base_url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// Applies `M`'s pending migrations, recording them in `M::migration_table_name()`.
///
/// Idempotent: applied migrations are skipped. On PostgreSQL a session advisory lock keyed
/// on the schema and the migration table serialises replicas of one service that start at
/// the same moment. Errors are [`StoreError::Migrate`] naming the migration table; a
/// migrator that keeps sea-orm's default table name is refused, because services share one
/// database and would see each other's migrations as missing files.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), StoreError> {
    let table = M::migration_table_name().to_string();
    let failed = |reason: String| StoreError::Migrate {
        service: table.clone(),
        reason,
    };
    let default_table = sea_orm_migration::seaql_migrations::Entity
        .into_iden()
        .to_string();
    if table == default_table {
        return Err(failed(format!(
            "the migrator keeps the default table {default_table}; \
             override MigratorTrait::migration_table_name() with a per-service name"
        )));
    }

    match backend(db) {
        Backend::Sqlite => M::up(db, None)
            .await
            .map_err(|error| failed(error.to_string())),
        Backend::Postgres => {
            // The lock lives on its own connection, outside the pool, for the whole run; the
            // migrations themselves use other pooled connections.
            let mut lock_connection = db
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map_err(|error| {
                    failed(format!(
                        "acquire a connection for the migration lock: {error}"
                    ))
                })?
                .detach();
            sqlx::query(
                "SELECT pg_advisory_lock(hashtext(coalesce(current_schema(), '') || '.' || $1))",
            )
            .bind(&table)
            .execute(&mut lock_connection)
            .await
            .map_err(|error| failed(format!("take the migration lock: {error}")))?;
            let result = M::up(db, None).await;
            // Ending the session releases the advisory lock, whatever state it is in.
            if let Err(error) = lock_connection.close().await {
                tracing::debug!(%error, table, "closing the migration lock connection failed");
            }
            result.map_err(|error| failed(error.to_string()))
        }
    }
}

/// Begins a transaction that will write. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes waits on
/// `busy_timeout` instead of failing with "database is locked" when another connection
/// commits in between; on PostgreSQL it is a plain `BEGIN`.
pub async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::TransactionTrait;
    match backend(db) {
        Backend::Sqlite => {
            db.begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        Backend::Postgres => db.begin().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_is_added_as_an_encoded_options_parameter() {
        assert_eq!(
            postgres_url_with_search_path("postgres://postgres@127.0.0.1:5432/test", "t_abc")
                .expect("plain schema"),
            "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dt_abc"
        );
        assert_eq!(
            postgres_url_with_search_path("postgres://h/db?sslmode=disable", "bosun")
                .expect("plain schema"),
            "postgres://h/db?sslmode=disable&options=-c%20search_path%3Dbosun"
        );
    }

    #[test]
    fn search_path_url_is_understood_by_sqlx() {
        let url = postgres_url_with_search_path("postgres://h/db", "t_abc").expect("plain schema");
        let options: PgConnectOptions = url.parse().expect("sqlx parses the url");
        assert_eq!(options.get_options(), Some("-c search_path=t_abc"));
    }

    #[test]
    fn search_path_refuses_schemas_that_would_be_misread() {
        for schema in ["", "Upper", "with space", "a;b", "9lives", "a-b"] {
            let error = postgres_url_with_search_path("postgres://h/db", schema)
                .expect_err("not a plain identifier");
            assert!(
                matches!(error, StoreError::InvalidUrl { .. }),
                "{schema}: {error:?}"
            );
        }
        assert!(postgres_url_with_search_path("sqlite::memory:", "t_abc").is_err());
    }

    #[test]
    fn sqlite_url_escapes_url_syntax_in_paths() {
        assert_eq!(
            sqlite_url(Path::new("/var/lib/bosun/bosun.db")),
            "sqlite:///var/lib/bosun/bosun.db?mode=rwc"
        );
        let url = sqlite_url(Path::new("/tmp/odd?#%dir/bosun.db"));
        assert_eq!(url, "sqlite:///tmp/odd%3F%23%25dir/bosun.db?mode=rwc");
        let options: SqliteConnectOptions = url.parse().expect("sqlx parses the url");
        assert_eq!(options.get_filename(), Path::new("/tmp/odd?#%dir/bosun.db"));
    }

    #[test]
    fn sqlite_url_modes_are_recognised() {
        assert!(SqliteUrlMode::of("sqlite::memory:").in_memory);
        assert!(SqliteUrlMode::of("sqlite://:memory:").in_memory);
        assert!(SqliteUrlMode::of("sqlite://?mode=memory").in_memory);
        assert!(SqliteUrlMode::of("sqlite://a.db?mode=ro").read_only);
        let file = SqliteUrlMode::of("sqlite:///a/b.db?mode=rwc");
        assert!(!file.in_memory && !file.read_only);
    }

    #[test]
    fn urls_name_their_backend_by_scheme() {
        assert_eq!(backend_of_url("postgres://h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of_url("postgresql://h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(backend_of_url("mysql://h/db"), None);
    }
}
