//! Throw-away databases for tests: a fresh PostgreSQL schema or a fresh SQLite file each.
//!
//! PostgreSQL comes from `BOSUN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable the helpers panic:
//! a test that silently skips its PostgreSQL half proves nothing.
//!
//! ```ignore
//! #[tokio::test]
//! async fn widgets_round_trip() {
//!     for test_db in bosun_store::testing::both().await {
//!         bosun_store::migrate::<Migrator>(&test_db.db).await.expect("migrations apply");
//!         // ... the same checks on SQLite and PostgreSQL
//!     }
//! }
//! ```

use std::time::Duration;

use sea_orm::DatabaseConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use crate::{Backend, connect, postgres_url_with_search_path, redact_url, sqlite_url};

/// The environment variable naming the PostgreSQL database tests create schemas in.
pub const DATABASE_URL_ENV: &str = "BOSUN_TEST_DATABASE_URL";

/// Where tests find PostgreSQL when [`DATABASE_URL_ENV`] is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Bounds dropping a test schema, so a connection still holding locks (a test that panicked
/// mid-transaction) cannot hang the test run; a leftover schema is harmless.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A database that exists for one test.
///
/// `url` opens the same database from another connection or process (for a server under
/// test): for PostgreSQL it carries `options=-c search_path=t_<uuid>`, for SQLite it names
/// the file. The schema or file is removed when the value is dropped, or by [`cleanup`].
///
/// [`cleanup`]: TestDatabase::cleanup
pub struct TestDatabase {
    pub url: String,
    pub db: DatabaseConnection,
    pub backend: Backend,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Removing the directory removes the database, its WAL and its shared-memory file.
    Sqlite { _directory: tempfile::TempDir },
    Postgres {
        admin_url: String,
        schema: String,
        dropped: bool,
    },
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestDatabase")
            .field("url", &redact_url(&self.url))
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// The PostgreSQL schema this database lives in; `None` for SQLite.
    pub fn schema(&self) -> Option<&str> {
        match &self.cleanup {
            Cleanup::Postgres { schema, .. } => Some(schema),
            Cleanup::Sqlite { .. } => None,
        }
    }

    /// Closes the pool and drops the schema (PostgreSQL) or deletes the file (SQLite) now.
    ///
    /// Dropping the value does the same, but blocks a thread to do it; prefer this at the
    /// end of a test. Failures are reported on stderr only: a leftover schema is harmless.
    pub async fn cleanup(mut self) {
        if let Err(error) = self.db.close_by_ref().await {
            eprintln!("bosun-store testing: closing the test pool failed: {error}");
        }
        if let Cleanup::Postgres {
            admin_url,
            schema,
            dropped,
        } = &mut self.cleanup
        {
            if let Err(error) = drop_schema(admin_url, schema).await {
                eprintln!("bosun-store testing: dropping test schema {schema} failed: {error}");
            }
            *dropped = true;
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Cleanup::Postgres {
            admin_url,
            schema,
            dropped: false,
        } = &self.cleanup
        else {
            return;
        };
        let (admin_url, schema) = (admin_url.clone(), schema.clone());
        // The test's runtime may already be shutting down and our pool belongs to it, so the
        // schema is dropped from a thread with its own runtime and a fresh connection.
        let cleanup = std::thread::Builder::new()
            .name("bosun-test-db-cleanup".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| format!("start a runtime: {error}"))?;
                runtime.block_on(drop_schema(&admin_url, &schema))
            });
        let outcome = match cleanup {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err("the cleanup thread panicked".to_owned())),
            Err(error) => Err(format!("spawn the cleanup thread: {error}")),
        };
        if let Err(error) = outcome {
            eprintln!("bosun-store testing: dropping a test schema failed: {error}");
        }
    }
}

/// One plain connection to the administrative database, for creating and dropping schemas.
async fn admin_connection(admin_url: &str) -> Result<PgConnection, String> {
    let options = admin_url
        .parse::<PgConnectOptions>()
        .map_err(|error| error.to_string())?;
    tokio::time::timeout(CLEANUP_TIMEOUT, options.connect())
        .await
        .map_err(|_| format!("no answer within {CLEANUP_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())
}

async fn drop_schema(admin_url: &str, schema: &str) -> Result<(), String> {
    let mut connection = admin_connection(admin_url).await?;
    // A lock still held by the test's own connections must not stall the run forever.
    sqlx::raw_sql("SET lock_timeout = '5s'")
        .execute(&mut connection)
        .await
        .map_err(|error| error.to_string())?;
    let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    tokio::time::timeout(
        CLEANUP_TIMEOUT,
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut connection),
    )
    .await
    .map_err(|_| format!("drop schema {schema}: no answer within {CLEANUP_TIMEOUT:?}"))?
    .map_err(|error| format!("drop schema {schema}: {error}"))?;
    connection.close().await.map_err(|error| error.to_string())
}

/// The PostgreSQL database tests create their schemas in: [`DATABASE_URL_ENV`] when set,
/// else [`DEFAULT_POSTGRES_URL`].
pub fn postgres_admin_url() -> String {
    std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A fresh schema `t_<uuid>` in the PostgreSQL database at [`DATABASE_URL_ENV`] (or
/// [`DEFAULT_POSTGRES_URL`]); `url` and `db` have `search_path` set to it.
///
/// # Panics
///
/// When PostgreSQL is unreachable or the schema cannot be created: tests must fail, not skip.
pub async fn postgres() -> TestDatabase {
    let admin_url = postgres_admin_url();
    let fail = |error: &dyn std::fmt::Display| -> ! {
        panic!(
            "bosun-store tests need PostgreSQL at {} (set {DATABASE_URL_ENV}, or start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`): {error}",
            redact_url(&admin_url)
        )
    };

    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = admin_connection(&admin_url)
        .await
        .unwrap_or_else(|error| fail(&error));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| fail(&format_args!("create schema {schema}: {error}")));
    if let Err(error) = admin.close().await {
        eprintln!("bosun-store testing: closing the admin connection failed: {error}");
    }

    let url =
        postgres_url_with_search_path(&admin_url, &schema).unwrap_or_else(|error| fail(&error));
    let db = match connect(&url).await {
        Ok(db) => db,
        Err(error) => {
            if let Err(cleanup_error) = drop_schema(&admin_url, &schema).await {
                eprintln!(
                    "bosun-store testing: dropping test schema {schema} failed: {cleanup_error}"
                );
            }
            fail(&error)
        }
    };
    TestDatabase {
        url,
        db,
        backend: Backend::Postgres,
        cleanup: Cleanup::Postgres {
            admin_url,
            schema,
            dropped: false,
        },
    }
}

/// A fresh SQLite file in a temporary directory that lives as long as the value, opened
/// exactly as [`connect`] opens any SQLite URL (WAL, busy time-out, foreign keys).
///
/// # Panics
///
/// When the temporary directory or the database cannot be created.
pub async fn sqlite() -> TestDatabase {
    let directory = tempfile::Builder::new()
        .prefix("bosun-store-test-")
        .tempdir()
        .unwrap_or_else(|error| {
            panic!("create a temporary directory for a test database: {error}")
        });
    let url = sqlite_url(&directory.path().join("bosun.db"));
    let db = connect(&url)
        .await
        .unwrap_or_else(|error| panic!("open the test sqlite database: {error}"));
    TestDatabase {
        url,
        db,
        backend: Backend::Sqlite,
        cleanup: Cleanup::Sqlite {
            _directory: directory,
        },
    }
}

/// One SQLite and one PostgreSQL test database, in that order, for tests that run the same
/// checks on both.
///
/// # Panics
///
/// As [`sqlite`] and [`postgres`] do.
pub async fn both() -> Vec<TestDatabase> {
    vec![sqlite().await, postgres().await]
}
