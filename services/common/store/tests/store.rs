//! Integration tests for bosun-store against real PostgreSQL and SQLite: connecting,
//! per-service migrations, test-schema isolation, SQLite connection settings, URL errors.

mod migrations;

use std::collections::BTreeSet;

use bosun_store::sea_orm::sqlx::{self, Row as _};
use bosun_store::sea_orm::{
    self, ActiveModelTrait, ActiveValue, ConnectionTrait, DatabaseConnection, EntityTrait,
    Statement,
};
use bosun_store::sea_orm_migration::SchemaManager;
use bosun_store::testing::{self, TestDatabase};
use bosun_store::{Backend, StoreError};
use migrations::{
    BROKEN_MIGRATION_TABLE, BrokenMigrator, DefaultTableMigrator, MIGRATION_TABLE, Migrator,
};

/// The table the test migrations create, as an entity, to exercise sea-orm through the re-export.
mod widget {
    use bosun_store::sea_orm;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "widgets")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        pub colour: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

async fn has_table(db: &DatabaseConnection, table: &str) -> bool {
    SchemaManager::new(db)
        .has_table(table)
        .await
        .expect("query the catalogue for a table")
}

async fn applied_migrations(db: &DatabaseConnection, table: &str) -> Vec<String> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT version FROM {table} ORDER BY version"),
        ))
        .await
        .expect("read the migration table");
    rows.iter()
        .map(|row| {
            row.try_get::<String>("", "version")
                .expect("version is text")
        })
        .collect()
}

#[tokio::test]
async fn migrations_apply_idempotently_and_rows_round_trip_on_both_backends() {
    let databases = testing::both().await;
    let backends: Vec<Backend> = databases.iter().map(|test_db| test_db.backend).collect();
    assert_eq!(backends, [Backend::Sqlite, Backend::Postgres]);

    for test_db in databases {
        let db = &test_db.db;
        assert_eq!(bosun_store::backend(db), test_db.backend);

        bosun_store::migrate::<Migrator>(db)
            .await
            .unwrap_or_else(|error| panic!("{}: first migrate: {error}", test_db.backend));
        bosun_store::migrate::<Migrator>(db)
            .await
            .unwrap_or_else(|error| panic!("{}: second migrate: {error}", test_db.backend));

        assert!(has_table(db, MIGRATION_TABLE).await, "{}", test_db.backend);
        assert!(
            !has_table(db, "seaql_migrations").await,
            "{}",
            test_db.backend
        );
        assert_eq!(
            applied_migrations(db, MIGRATION_TABLE).await,
            ["m0001_create_widgets", "m0002_add_widget_colour"],
            "{}: each migration recorded exactly once",
            test_db.backend
        );

        let inserted = widget::ActiveModel {
            name: ActiveValue::Set("sprocket".to_owned()),
            colour: ActiveValue::Set(Some("teal".to_owned())),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap_or_else(|error| panic!("{}: insert a widget: {error}", test_db.backend));
        let read = widget::Entity::find_by_id(inserted.id)
            .one(db)
            .await
            .unwrap_or_else(|error| panic!("{}: read the widget: {error}", test_db.backend));
        assert_eq!(
            read,
            Some(widget::Model {
                id: inserted.id,
                name: "sprocket".to_owned(),
                colour: Some("teal".to_owned()),
            }),
            "{}",
            test_db.backend
        );
        test_db.cleanup().await;
    }
}

#[tokio::test]
async fn postgres_test_schemas_do_not_see_each_others_tables() {
    let first = testing::postgres().await;
    let second = testing::postgres().await;
    assert_ne!(first.schema(), second.schema());

    bosun_store::migrate::<Migrator>(&first.db)
        .await
        .expect("migrate the first schema");
    widget::ActiveModel {
        name: ActiveValue::Set("only in the first".to_owned()),
        ..Default::default()
    }
    .insert(&first.db)
    .await
    .expect("insert into the first schema");

    assert!(has_table(&first.db, "widgets").await);
    assert!(!has_table(&second.db, "widgets").await);
    assert!(!has_table(&second.db, MIGRATION_TABLE).await);
    let query = widget::Entity::find().all(&second.db).await;
    assert!(
        query.is_err(),
        "second schema must not resolve `widgets`: {query:?}"
    );

    // Migrating the second schema starts from nothing, not from the first one's records.
    bosun_store::migrate::<Migrator>(&second.db)
        .await
        .expect("migrate the second schema");
    let rows = widget::Entity::find()
        .all(&second.db)
        .await
        .expect("read the second schema");
    assert!(rows.is_empty(), "{rows:?}");

    first.cleanup().await;
    second.cleanup().await;
}

#[tokio::test]
async fn postgres_test_url_puts_every_new_connection_in_the_schema() {
    let test_db = testing::postgres().await;
    let schema = test_db.schema().expect("postgres has a schema").to_owned();
    assert!(
        test_db
            .url
            .contains(&format!("options=-c%20search_path%3D{schema}")),
        "{}",
        test_db.url
    );
    bosun_store::migrate::<Migrator>(&test_db.db)
        .await
        .expect("migrate");

    // A separate pool, as another process would open it from the URL alone.
    let other = bosun_store::connect(&test_db.url)
        .await
        .expect("connect with the test url");
    let pool = other.get_postgres_connection_pool();
    let mut connections = Vec::new();
    for _ in 0..3 {
        connections.push(pool.acquire().await.expect("acquire a pooled connection"));
    }
    for connection in &mut connections {
        let current: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut **connection)
            .await
            .expect("read current_schema()");
        assert_eq!(current, schema);
    }
    drop(connections);
    assert!(has_table(&other, "widgets").await);
    other.close().await.expect("close the second pool");
    test_db.cleanup().await;
}

#[tokio::test]
async fn postgres_concurrent_migrations_of_one_service_are_serialised() {
    let test_db = testing::postgres().await;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(
            bosun_store::connect(&test_db.url)
                .await
                .expect("connect a replica"),
        );
    }
    let tasks: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|db| tokio::spawn(async move { bosun_store::migrate::<Migrator>(&db).await }))
        .collect();
    for task in tasks {
        task.await
            .expect("the migrate task ran to completion")
            .expect("every replica migrates without tripping over the others");
    }
    assert_eq!(
        applied_migrations(&test_db.db, MIGRATION_TABLE).await,
        ["m0001_create_widgets", "m0002_add_widget_colour"]
    );
    for replica in replicas {
        replica.close().await.expect("close a replica pool");
    }
    test_db.cleanup().await;
}

#[tokio::test]
async fn sqlite_every_pooled_connection_has_wal_and_busy_timeout() {
    let test_db = testing::sqlite().await;
    let pool = test_db.db.get_sqlite_connection_pool();
    // Hold as many connections as the pool allows at once, so each is a distinct one.
    let size = pool.options().get_max_connections();
    assert!(
        size > 1,
        "the sqlite pool should allow concurrent readers, has {size}"
    );
    let mut connections = Vec::new();
    for _ in 0..size {
        connections.push(pool.acquire().await.expect("acquire a pooled connection"));
    }
    assert_eq!(pool.size(), size);

    for connection in &mut connections {
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **connection)
            .await
            .expect("read journal_mode");
        assert_eq!(journal_mode.to_lowercase(), "wal");
        let row = sqlx::query("PRAGMA busy_timeout")
            .fetch_one(&mut **connection)
            .await
            .expect("read busy_timeout");
        assert_eq!(row.try_get::<i64, _>(0).expect("integer"), 5000);
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut **connection)
            .await
            .expect("read foreign_keys");
        assert_eq!(foreign_keys, 1);
        // 1 is NORMAL (0 OFF, 2 FULL, 3 EXTRA).
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **connection)
            .await
            .expect("read synchronous");
        assert_eq!(synchronous, 1);
    }
    drop(connections);
    test_db.cleanup().await;
}

#[tokio::test]
async fn sqlite_creates_missing_directories_and_file() {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let file = directory.path().join("nested/deeper/bosun.db");
    let db = bosun_store::connect(&bosun_store::sqlite_url(&file))
        .await
        .expect("open a sqlite file under missing directories");
    bosun_store::migrate::<Migrator>(&db)
        .await
        .expect("migrate");
    assert!(file.is_file(), "{} should exist", file.display());
    db.close().await.expect("close");

    // Also without `mode=rwc`: the file is created all the same.
    let plain = directory.path().join("other/plain.db");
    let db = bosun_store::connect(&format!("sqlite://{}", plain.display()))
        .await
        .expect("open a sqlite url without mode=rwc");
    db.close().await.expect("close");
    assert!(plain.is_file(), "{} should exist", plain.display());
}

#[tokio::test]
async fn sqlite_in_memory_database_keeps_its_data_between_queries() {
    let db = bosun_store::connect("sqlite::memory:")
        .await
        .expect("open an in-memory database");
    assert_eq!(bosun_store::backend(&db), Backend::Sqlite);
    bosun_store::migrate::<Migrator>(&db)
        .await
        .expect("migrate");
    widget::ActiveModel {
        name: ActiveValue::Set("ephemeral".to_owned()),
        ..Default::default()
    }
    .insert(&db)
    .await
    .expect("insert");
    let names: BTreeSet<String> = widget::Entity::find()
        .all(&db)
        .await
        .expect("read back")
        .into_iter()
        .map(|model| model.name)
        .collect();
    assert_eq!(names, BTreeSet::from(["ephemeral".to_owned()]));
}

#[tokio::test]
async fn bad_urls_are_invalid_url_with_the_password_redacted() {
    for url in [
        "postgres://bosun:hunter2@127.0.0.1:notaport/test",
        "mysql://bosun:hunter2@127.0.0.1:3306/test",
        "postgres://bosun:hunter2@127.0.0.1:5432/test?sslmode=sometimes",
    ] {
        let error = bosun_store::connect(url)
            .await
            .expect_err("a bad url must not connect");
        let message = error.to_string();
        assert!(
            matches!(&error, StoreError::InvalidUrl { url_redacted, .. } if url_redacted.contains("bosun:***@")),
            "{url}: {error:?}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
        assert!(message.starts_with("invalid database url "), "{message}");
    }

    let error = bosun_store::connect("sqlite://bosun.db?mode=sometimes")
        .await
        .expect_err("an unknown sqlite mode must not connect");
    assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error:?}");
}

#[tokio::test]
async fn unreachable_postgres_is_a_connect_error() {
    let url = "postgres://postgres:hunter2@127.0.0.1:1/test";
    let error = bosun_store::connect(url)
        .await
        .expect_err("nothing listens on port 1");
    let StoreError::Connect(detail) = &error else {
        panic!("expected a connect error, got {error:?}");
    };
    assert!(detail.contains("127.0.0.1:1"), "{detail}");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[tokio::test]
async fn a_migrator_on_the_default_table_is_refused() {
    let test_db = testing::sqlite().await;
    let error = bosun_store::migrate::<DefaultTableMigrator>(&test_db.db)
        .await
        .expect_err("the default migration table is shared by every service");
    assert!(
        matches!(&error, StoreError::Migrate { service, .. } if service == "seaql_migrations"),
        "{error:?}"
    );
    assert!(!has_table(&test_db.db, "widgets").await, "nothing ran");
}

#[tokio::test]
async fn a_failing_migration_names_its_table_on_both_backends() {
    for test_db in testing::both().await {
        let error = bosun_store::migrate::<BrokenMigrator>(&test_db.db)
            .await
            .expect_err("invalid sql cannot migrate");
        assert!(
            matches!(&error, StoreError::Migrate { service, .. } if service == BROKEN_MIGRATION_TABLE),
            "{}: {error:?}",
            test_db.backend
        );
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("migrate {BROKEN_MIGRATION_TABLE}: ")),
            "{message}"
        );
        assert!(
            applied_migrations(&test_db.db, BROKEN_MIGRATION_TABLE)
                .await
                .is_empty(),
            "{}: a failed migration is not recorded",
            test_db.backend
        );
        test_db.cleanup().await;
    }
}

#[tokio::test]
async fn dropping_a_postgres_test_database_drops_its_schema() {
    let test_db: TestDatabase = testing::postgres().await;
    let schema = test_db.schema().expect("postgres has a schema").to_owned();
    let admin = bosun_store::connect(&testing::postgres_admin_url())
        .await
        .expect("connect to the admin database");
    drop(test_db);
    let remaining = admin
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = $1",
            [schema.clone().into()],
        ))
        .await
        .expect("query schemata")
        .expect("count returns a row")
        .try_get::<i64>("", "n")
        .expect("count is an integer");
    assert_eq!(remaining, 0, "schema {schema} should be gone after drop");
    admin.close().await.expect("close");
}

#[tokio::test]
async fn sqlite_read_then_write_transactions_need_immediate_mode() {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};

    let test_db = testing::sqlite().await;
    let db = test_db.db.clone();
    bosun_store::migrate::<Migrator>(&db)
        .await
        .expect("migrate");
    let new_widget = |name: &str| widget::ActiveModel {
        name: ActiveValue::Set(name.to_owned()),
        ..Default::default()
    };

    // The hazard the crate docs warn about: a deferred transaction that has read cannot
    // write once another connection has committed, and fails without waiting.
    let deferred = db.begin().await.expect("begin");
    widget::Entity::find()
        .all(&deferred)
        .await
        .expect("read in the transaction");
    new_widget("committed elsewhere")
        .insert(&db)
        .await
        .expect("write on another pooled connection");
    let upgrade = new_widget("too late").insert(&deferred).await;
    assert!(
        upgrade.is_err(),
        "a stale deferred transaction cannot write: {upgrade:?}"
    );
    deferred.rollback().await.expect("rollback");

    // The remedy: immediate transactions queue behind each other on the busy time-out.
    let tasks: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let db = db.clone();
            tokio::spawn(async move {
                let options = TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                };
                let transaction = db.begin_with_options(options).await?;
                widget::Entity::find().all(&transaction).await?;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                widget::ActiveModel {
                    name: ActiveValue::Set(name.to_owned()),
                    ..Default::default()
                }
                .insert(&transaction)
                .await?;
                transaction.commit().await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("the transaction task ran to completion")
            .expect("immediate transactions wait for each other instead of failing");
    }
    let count = widget::Entity::find().all(&db).await.expect("read").len();
    assert_eq!(count, 3);
    test_db.cleanup().await;
}
