//! Backups: a consistent copy of the whole database in one file, taken
//! while the server runs and keeps accepting events.
//!
//! The file is a SQLite database with Ferrite's schema, whatever the
//! backend: it can be opened with any SQLite tool, and it is what a restore
//! reads. On SQLite it is written by `VACUUM INTO`, which reads one
//! snapshot (a read transaction: writers carry on in the write-ahead log)
//! and writes a compact copy; on PostgreSQL every row is read in one
//! `REPEATABLE READ` transaction and written to a new SQLite file with the
//! same schema. Restoring copies rows the other way (`restore_rows_from`)
//! or, on SQLite, puts the file in place. Every backup is checked after it is written
//! ([`inspect_backup`]): SQLite's integrity check, and that it holds a
//! schema this binary knows.

use std::path::Path;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

use super::{Store, StoreError};

/// What a backup file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The newest migration applied to it.
    pub schema: String,
    pub users: i64,
    pub api_keys: i64,
    pub devices: i64,
    pub events: i64,
    pub commands: i64,
}

/// Why a file is not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not a readable SQLite database: {1}")]
    Unreadable(String, String),
    #[error("{0} is damaged: SQLite's integrity check says {1}")]
    Damaged(String, String),
    #[error("{0} is not a Ferrite backup (it has no Ferrite schema)")]
    Foreign(String),
    #[error(
        "{0} has schema {1}, which this version of Ferrite does not know (a newer version made it)"
    )]
    Newer(String, String),
    #[error("{0} exists; give a new file name (a backup never overwrites)")]
    Exists(String),
    #[error("cannot write {0}: {1}")]
    Write(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Writes a consistent copy of the database to `path`, which must not
    /// exist. Not checked: see [`inspect_backup`].
    pub async fn backup_into(&self, path: &Path) -> Result<(), StoreError> {
        match self.backend() {
            DbBackend::Sqlite => {
                // A string literal: quotes doubled.
                let target = path.to_string_lossy().replace('\'', "''");
                self.db
                    .execute_unprepared(&format!("VACUUM INTO '{target}'"))
                    .await?;
                Ok(())
            }
            _ => self.backup_rows_into(path).await,
        }
    }

    /// PostgreSQL: every row, read in one `REPEATABLE READ` transaction (a
    /// single snapshot while writers carry on), written to a new SQLite
    /// file with this version's schema.
    async fn backup_rows_into(&self, path: &Path) -> Result<(), StoreError> {
        use sea_orm::{AccessMode, IsolationLevel, TransactionTrait};
        let file =
            Store::connect(&format!("sqlite://{}", path.display()), &Default::default()).await?;
        file.migrate().await?;
        let snapshot = self
            .db
            .begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?;
        let dst = file.begin_write().await?;
        let quiet = |_: &str, _: u64| {};
        copy_all(&snapshot, &dst, &quiet).await?;
        dst.commit().await?;
        snapshot.commit().await?;
        file.db
            .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await?;
        file.close().await;
        // One file: the backup is not left in write-ahead-log mode.
        let plain = Database::connect(format!("sqlite://{}", path.display())).await?;
        plain
            .execute_unprepared("PRAGMA journal_mode = DELETE")
            .await?;
        plain.close().await.ok();
        Ok(())
    }
}

/// Names of backup files: `ferrite-<UTC time>.db`, which sort by time.
pub const BACKUP_PREFIX: &str = "ferrite-";
pub const BACKUP_SUFFIX: &str = ".db";

/// The current UTC time as file names carry it (`20261203T174500Z`).
pub fn file_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// A new backup file's path in `dir`, named for now.
pub fn backup_file_in(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("{BACKUP_PREFIX}{}{BACKUP_SUFFIX}", file_stamp()))
}

/// Where [`write_backup`] writes `file` before it checks out.
pub fn partial_path(file: &Path) -> std::path::PathBuf {
    file.with_extension("partial")
}

/// A SQLite database's files: the database, its write-ahead log, its
/// shared-memory index (and a rollback journal, if any).
pub fn sqlite_files(database: &Path) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    ["", "-wal", "-shm", "-journal"]
        .into_iter()
        .map(move |suffix| std::path::PathBuf::from(format!("{}{suffix}", database.display())))
}

/// Removes a SQLite database and its companion files, whichever exist.
pub fn remove_sqlite_files(database: &Path) {
    for path in sqlite_files(database) {
        let _ = std::fs::remove_file(path);
    }
}

/// Writes a checked backup to `file` (which must not exist): under a
/// temporary name first, renamed once [`inspect_backup`] passes, so a file
/// with the final name is always a whole, verified backup.
pub async fn write_backup(store: &Store, file: &Path) -> Result<BackupSummary, BackupError> {
    if file.exists() {
        return Err(BackupError::Exists(file.display().to_string()));
    }
    let partial = partial_path(file);
    remove_sqlite_files(&partial);
    if let Err(err) = store.backup_into(&partial).await {
        remove_sqlite_files(&partial);
        return Err(err.into());
    }
    let summary = match inspect_backup(&partial).await {
        Ok(summary) => summary,
        Err(err) => {
            remove_sqlite_files(&partial);
            return Err(err);
        }
    };
    std::fs::rename(&partial, file)
        .map_err(|err| BackupError::Write(file.display().to_string(), err.to_string()))?;
    Ok(summary)
}

/// Opens `path` read-only and checks that it is a whole Ferrite backup
/// this version can restore; says what it holds.
pub async fn inspect_backup(path: &Path) -> Result<BackupSummary, BackupError> {
    let shown = path.display().to_string();
    let unreadable =
        |err: &dyn std::fmt::Display| BackupError::Unreadable(shown.clone(), err.to_string());
    if !path.is_file() {
        return Err(BackupError::Unreadable(shown, "no such file".into()));
    }
    let url = format!("sqlite://{}?mode=ro", path.display());
    let db = Database::connect(&url).await.map_err(|e| unreadable(&e))?;
    let one = |sql: &str| Statement::from_string(DbBackend::Sqlite, sql.to_owned());
    let integrity = db
        .query_one_raw(one("PRAGMA integrity_check"))
        .await
        .map_err(|e| unreadable(&e))?
        .and_then(|row| row.try_get_by_index::<String>(0).ok())
        .unwrap_or_default();
    if integrity != "ok" {
        db.close().await.ok();
        return Err(BackupError::Damaged(shown, integrity));
    }
    let schema = match db
        .query_one_raw(one(
            "SELECT version FROM seaql_migrations ORDER BY version DESC LIMIT 1",
        ))
        .await
    {
        Ok(Some(row)) => row
            .try_get_by_index::<String>(0)
            .map_err(|e| unreadable(&e))?,
        _ => {
            db.close().await.ok();
            return Err(BackupError::Foreign(shown));
        }
    };
    use ferrite_migration::MigratorTrait;
    let known = ferrite_migration::Migrator::migrations()
        .iter()
        .any(|m| m.name() == schema);
    if !known {
        db.close().await.ok();
        return Err(BackupError::Newer(shown, schema));
    }
    let mut counts = Vec::new();
    for table in ["users", "api_keys", "devices", "events", "commands"] {
        let count = db
            .query_one_raw(one(&format!("SELECT COUNT(*) FROM {table}")))
            .await
            .map_err(|_| BackupError::Foreign(shown.clone()))?
            .and_then(|row| row.try_get_by_index::<i64>(0).ok())
            .ok_or_else(|| BackupError::Foreign(shown.clone()))?;
        counts.push(count);
    }
    db.close().await.ok();
    Ok(BackupSummary {
        schema,
        users: counts[0],
        api_keys: counts[1],
        devices: counts[2],
        events: counts[3],
        commands: counts[4],
    })
}

impl Store {
    /// Nodes that heartbeat within the last `within` (a server running on
    /// this database).
    pub async fn live_nodes(&self, within: chrono::Duration) -> Result<usize, StoreError> {
        use super::entity::node;
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        Ok(node::Entity::find()
            .filter(node::Column::HeartbeatAt.gte(super::now() - within))
            .count(&self.db)
            .await? as usize)
    }
}

/// Rows copied per statement while restoring.
const RESTORE_CHUNK: u64 = 1_000;

impl Store {
    /// Replaces everything this (PostgreSQL) database holds with the rows
    /// of the backup at `source`, which must be at this binary's schema,
    /// in one transaction: a failure leaves the database as it was. Ids
    /// are kept, so event cursors (`after`) mean the same afterwards, and
    /// the id sequences continue after the highest. `progress` hears
    /// (table, rows copied so far) after each chunk.
    pub async fn restore_rows_from(
        &self,
        source: &Path,
        progress: &(dyn Fn(&str, u64) + Sync),
    ) -> Result<(), StoreError> {
        use super::entity::{
            api_key, command, device, device_status_change, device_tombstone, node, refresh_token,
            setting, user,
        };
        let url = format!("sqlite://{}?mode=ro", source.display());
        let src = Database::connect(&url).await?;
        let tx = self.begin_write().await?;
        tx.execute_unprepared(
            "TRUNCATE users, refresh_tokens, api_keys, devices, events, commands, \
             device_status_changes, device_tombstones, settings, nodes, revocations",
        )
        .await?;
        // Parents before children (foreign keys).
        copy_rows::<user::Entity>(&src, &tx, user::Column::Id, "users", progress).await?;
        copy_rows::<refresh_token::Entity>(
            &src,
            &tx,
            refresh_token::Column::Id,
            "refresh_tokens",
            progress,
        )
        .await?;
        copy_rows::<api_key::Entity>(&src, &tx, api_key::Column::Id, "api_keys", progress).await?;
        copy_rows::<device::Entity>(&src, &tx, device::Column::Id, "devices", progress).await?;
        copy_events(&src, &tx, progress).await?;
        copy_rows::<command::Entity>(&src, &tx, command::Column::Id, "commands", progress).await?;
        copy_rows::<device_status_change::Entity>(
            &src,
            &tx,
            device_status_change::Column::Id,
            "device_status_changes",
            progress,
        )
        .await?;
        copy_rows::<device_tombstone::Entity>(
            &src,
            &tx,
            device_tombstone::Column::Id,
            "device_tombstones",
            progress,
        )
        .await?;
        copy_rows::<setting::Entity>(&src, &tx, setting::Column::Key, "settings", progress).await?;
        copy_rows::<node::Entity>(&src, &tx, node::Column::Id, "nodes", progress).await?;
        for table in [
            "events",
            "device_status_changes",
            "device_tombstones",
            "revocations",
        ] {
            // The next id is one above the highest restored.
            tx.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 GREATEST(COALESCE(MAX(id), 0), 1), MAX(id) IS NOT NULL) FROM {table}"
            ))
            .await?;
        }
        tx.commit().await?;
        src.close().await.ok();
        Ok(())
    }
}

/// Copies every table that makes an installation (not `revocations`: notes
/// for running nodes), parents before children (foreign keys).
async fn copy_all(
    src: &impl ConnectionTrait,
    dst: &impl ConnectionTrait,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<(), StoreError> {
    use super::entity::{
        api_key, command, device, device_status_change, device_tombstone, node, refresh_token,
        setting, user,
    };
    copy_rows::<user::Entity>(src, dst, user::Column::Id, "users", progress).await?;
    copy_rows::<refresh_token::Entity>(
        src,
        dst,
        refresh_token::Column::Id,
        "refresh_tokens",
        progress,
    )
    .await?;
    copy_rows::<api_key::Entity>(src, dst, api_key::Column::Id, "api_keys", progress).await?;
    copy_rows::<device::Entity>(src, dst, device::Column::Id, "devices", progress).await?;
    copy_events(src, dst, progress).await?;
    copy_rows::<command::Entity>(src, dst, command::Column::Id, "commands", progress).await?;
    copy_rows::<device_status_change::Entity>(
        src,
        dst,
        device_status_change::Column::Id,
        "device_status_changes",
        progress,
    )
    .await?;
    copy_rows::<device_tombstone::Entity>(
        src,
        dst,
        device_tombstone::Column::Id,
        "device_tombstones",
        progress,
    )
    .await?;
    copy_rows::<setting::Entity>(src, dst, setting::Column::Key, "settings", progress).await?;
    copy_rows::<node::Entity>(src, dst, node::Column::Id, "nodes", progress).await?;
    Ok(())
}

/// Copies a table's rows in pages ordered by `order` (small tables).
async fn copy_rows<E>(
    src: &impl ConnectionTrait,
    dst: &impl ConnectionTrait,
    order: E::Column,
    table: &str,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<u64, StoreError>
where
    E: sea_orm::EntityTrait,
    E::Model: sea_orm::IntoActiveModel<E::ActiveModel>,
    E::ActiveModel: sea_orm::ActiveModelTrait<Entity = E> + Send,
{
    use sea_orm::{ActiveModelTrait, IntoActiveModel, QueryOrder, QuerySelect};
    let mut copied = 0;
    loop {
        let rows = E::find()
            .order_by_asc(order)
            .offset(copied)
            .limit(RESTORE_CHUNK)
            .all(src)
            .await?;
        if rows.is_empty() {
            break;
        }
        copied += rows.len() as u64;
        E::insert_many(
            rows.into_iter()
                .map(|row| row.into_active_model().reset_all()),
        )
        .exec_without_returning(dst)
        .await?;
        progress(table, copied);
    }
    Ok(copied)
}

/// Copies the events by id (keyset pages: a million events is a thousand
/// cheap reads, not a thousand ever longer skips).
async fn copy_events(
    src: &impl ConnectionTrait,
    dst: &impl ConnectionTrait,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<u64, StoreError> {
    use super::entity::event;
    use sea_orm::{
        ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
        QuerySelect,
    };
    let (mut after, mut copied) = (i64::MIN, 0u64);
    loop {
        let rows = event::Entity::find()
            .filter(event::Column::Id.gt(after))
            .order_by_asc(event::Column::Id)
            .limit(RESTORE_CHUNK)
            .all(src)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        copied += rows.len() as u64;
        event::Entity::insert_many(
            rows.into_iter()
                .map(|row| row.into_active_model().reset_all()),
        )
        .exec_without_returning(dst)
        .await?;
        progress("events", copied);
    }
    Ok(copied)
}
