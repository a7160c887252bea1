//! Backups: a consistent copy of the whole database in one file, taken
//! while the server runs and keeps accepting events.
//!
//! The file is a SQLite database with Ferrite's schema, whatever the
//! backend: it can be opened with any SQLite tool, and it is what a restore
//! reads. On SQLite it is written by `VACUUM INTO`, which reads one
//! snapshot (a read transaction: writers carry on in the write-ahead log)
//! and writes a compact copy. Every backup is checked after it is written
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
            _ => Err(StoreError::Conflict(
                "`ferrite backup` of a PostgreSQL database is not built yet; use pg_dump meanwhile",
            )),
        }
    }
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
