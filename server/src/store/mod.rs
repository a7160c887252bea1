//! Storage: SeaORM entities and every query Ferrite runs.
//!
//! Nothing outside this module builds SQL. The same code runs on SQLite (the
//! embedded default) and PostgreSQL; callers never learn which one is behind
//! the [`Store`].
//!
//! Tenant isolation starts here: every read or write of devices, events and
//! commands takes a [`Scope`], and a row outside it is reported as
//! [`StoreError::NotFound`], exactly like a row that does not exist.
//!
//! # Layout
//! - [`entity`]: the tables and the enums stored in them.
//! - `users`, `api_keys`, `refresh_tokens`, `devices`, `events`, `commands`:
//!   the queries of one table each, as methods on [`Store`].
//! - `telemetry`: events summarised per time bucket.
//! - `backup`: a consistent copy of the database in one SQLite file.
//! - `revocations`: notes that a user's credentials changed, for every node's sockets.
//! - `page`: keyset pagination shared by every list.

/// The tables, and the enums stored in them.
pub mod entity;

/// API keys: created, listed, revoked, looked up by secret hash.
mod api_keys;
/// A consistent copy of the database in one SQLite file, and restore.
mod backup;
/// Commands: queued, delivered, answered, expired.
mod commands;
/// Devices: registered, bound to sessions, disconnected, deleted.
mod devices;
/// Events: stored in batches, listed, streamed after an id.
mod events;
/// Server nodes and their heartbeats; the devices of a node that stopped.
mod nodes;
/// Keyset pagination shared by every list.
mod page;
/// Refresh tokens: issued, rotated, replay detection.
mod refresh_tokens;
/// Deleting events (and status history) past the retention.
mod retention;
/// Notes that a user's credentials changed, for every node's sockets.
mod revocations;
/// Every ONLINE / OFFLINE / DISCONNECTED of a device.
mod status_history;
/// Events summarised per time bucket.
mod telemetry;
/// Users: created, passwords, roles, disabled, deleted.
mod users;

use std::{path::Path, time::Duration};

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqlErr,
    TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};
use uuid::Uuid;

pub use backup::{
    BACKUP_PREFIX, BACKUP_SUFFIX, BackupError, BackupSummary, backup_file_in, file_stamp,
    inspect_backup, partial_path, remove_sqlite_files, sqlite_files, write_backup,
};
pub use commands::CommandFilter;
pub use commands::NewCommand;
pub use devices::{
    ConnectorSession, DeviceFilter, DeviceRegistration, DeviceUpdate, RegisterOutcome,
};
pub use events::{EventFilter, EventJob, NewEvent, StoredEvent};
pub use page::{Page, PageArgs};
pub use refresh_tokens::RotateOutcome;
pub use telemetry::{TelemetryBucket, TelemetryQuery};

/// Which tenants' rows a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant (an ADMIN).
    All,
    /// Only rows owned by this user (a MEMBER).
    Owner(Uuid),
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist, or is outside the caller's scope.
    #[error("not found")]
    NotFound,
    /// The write would break a uniqueness rule or a state transition; the
    /// message says which.
    #[error("{0}")]
    Conflict(&'static str),
    /// The row is visible, but this caller may not make this change.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The database failed; the cause is logged, never shown to clients.
    #[error("database error")]
    Database(#[source] DbErr),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match err {
            DbErr::RecordNotFound(_) => StoreError::NotFound,
            other => StoreError::Database(other),
        }
    }
}

/// True when the error is a unique-constraint violation.
fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Handle on the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Where the ingest writer stores events: on SQLite its own connection
    /// (see [`Store::connect`]); on PostgreSQL the pool.
    ingest: DatabaseConnection,
}

/// What a checkpoint of SQLite's write-ahead log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Frames (pages) in the log.
    pub logged: u64,
    /// Of those, frames now copied into the database.
    pub copied: u64,
}

impl Checkpoint {
    /// Everything in the log is in the database: the next write starts the
    /// log over from its beginning.
    pub fn complete(&self) -> bool {
        self.copied >= self.logged
    }
}

/// Bytes the write-ahead log file is cut back to when it starts over.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Connection settings that are not in the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size. SQLite readers run in parallel in WAL mode; writers queue
    /// behind `busy_timeout`.
    pub max_connections: u32,
    /// How long a SQLite writer waits for the lock before failing.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl Store {
    /// The URL of the embedded SQLite database in `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("ferrite.db").display())
    }

    /// Opens the database at `url` (`sqlite://…` or `postgres://…`).
    ///
    /// SQLite is opened in WAL mode with foreign keys on, `synchronous=NORMAL`
    /// and a busy timeout, and the file is created if missing.
    ///
    /// On SQLite the ingest writer gets a connection of its own, beside the
    /// pool:
    /// - Its statement journal stays in memory (`temp_store=MEMORY`). A
    ///   multi-row INSERT keeps one, to undo itself alone if a row fails,
    ///   and by default it spills to a temporary file past 64 KiB: a file
    ///   created, written and deleted by many batches (seen in the profile
    ///   as `unixOpen` and `pwrite` under `subjournalPageIfRequired`). Only
    ///   this connection: on the pool it would also keep every sort in
    ///   memory, such as building an index over all events in a migration.
    /// - It is not pinged before each batch, and its statement cache keeps
    ///   the writer's statements.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let busy_timeout = options.busy_timeout;
        let mut connect = ConnectOptions::new(url.to_owned());
        connect
            .max_connections(options.max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |o| sqlite_options(o, busy_timeout));
        let db = Database::connect(connect.clone()).await?;
        let ingest = match db.get_database_backend() {
            DbBackend::Sqlite => {
                // The pool's settings, for one connection of its own.
                connect
                    .max_connections(1)
                    .test_before_acquire(false)
                    .map_sqlx_sqlite_opts(move |o| {
                        sqlite_options(o, busy_timeout).pragma("temp_store", "memory")
                    });
                Database::connect(connect).await?
            }
            _ => db.clone(),
        };
        Ok(Store { db, ingest })
    }

    /// Runs every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use ferrite_migration::MigratorTrait;
        ferrite_migration::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// For unit tests: a migrated store on real SQLite in a fresh
    /// directory, which lives as long as the returned guard.
    #[cfg(test)]
    pub(crate) async fn temporary() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::connect(&Store::sqlite_url(dir.path()), &StoreOptions::default())
            .await
            .expect("SQLite opens");
        store.migrate().await.expect("the migrations run");
        (dir, store)
    }

    /// For unit tests: a new member named `name` and a device of theirs,
    /// as `(member, device)`.
    #[cfg(test)]
    pub(crate) async fn member_with_device(&self, name: &str) -> (Uuid, Uuid) {
        let member = self
            .create_user(name, "x".into(), entity::Role::Member)
            .await
            .expect("a new member")
            .id;
        let device = self
            .register_device(member, DeviceRegistration::of("meter"))
            .await
            .expect("a new device")
            .0
            .id;
        (member, device)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// On SQLite, copies the write-ahead log back into the database without
    /// blocking writers (`PASSIVE`); a no-op elsewhere.
    ///
    /// The log only starts over from its beginning (instead of growing) when
    /// a checkpoint has copied all of it and nobody writes in between: see
    /// [`crate::ingest::Checkpoints`], which finishes this between two
    /// batches of the writer.
    pub async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        if self.backend() != DbBackend::Sqlite {
            return Ok(Checkpoint::default());
        }
        use sea_orm::{ConnectionTrait, Statement};
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(PASSIVE)",
            ))
            .await?
            .ok_or_else(|| StoreError::Database(DbErr::Custom("no checkpoint result".into())))?;
        // (busy, frames in the log, frames copied to the database)
        let (_, logged, copied): (i64, i64, i64) = row.try_get_many_by_index()?;
        Ok(Checkpoint {
            logged: logged.max(0) as u64,
            copied: copied.max(0) as u64,
        })
    }

    /// Which database is behind the store.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Closes the pool (and the ingest connection), waiting for connections
    /// to be returned.
    pub async fn close(self) {
        if self.backend() == DbBackend::Sqlite
            && let Err(err) = self.ingest.close().await
        {
            tracing::warn!(error = %err, "closing the ingest connection failed");
        }
        if let Err(err) = self.db.close().await {
            tracing::warn!(error = %err, "closing the database pool failed");
        }
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that reads
    /// and then writes fails with "database is locked" when another
    /// connection writes in between, and the busy timeout cannot help it.
    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        begin_write_on(&self.db).await
    }

    /// Begins a transaction of the ingest writer (see [`Store::connect`]).
    async fn begin_ingest(&self) -> Result<DatabaseTransaction, DbErr> {
        begin_write_on(&self.ingest).await
    }
}

async fn begin_write_on(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let sqlite_transaction_mode = match db.get_database_backend() {
        DbBackend::Sqlite => Some(sea_orm::SqliteTransactionMode::Immediate),
        _ => None,
    };
    db.begin_with_options(TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode,
    })
    .await
}

/// How every SQLite connection is opened.
fn sqlite_options(options: SqliteConnectOptions, busy_timeout: Duration) -> SqliteConnectOptions {
    options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(busy_timeout)
        // Checkpoints (and their fsync) run in a background task
        // (`checkpoint`), not in whichever commit crosses the
        // threshold: the ingest writer never stalls on them.
        .pragma("wal_autocheckpoint", "0")
        // After a burst, the log file shrinks back to this when
        // it starts over (it would otherwise keep its largest size).
        .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
}

/// Applies a [`Scope`] to a query on a table with an owner column.
fn scoped<Q, C>(query: Q, scope: Scope, owner_column: C) -> Q
where
    Q: sea_orm::QueryFilter,
    C: sea_orm::ColumnTrait,
{
    match scope {
        Scope::All => query,
        Scope::Owner(owner) => query.filter(owner_column.eq(owner)),
    }
}

/// The current time, truncated to microseconds so what is written and what is
/// read back compare equal on both backends.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
