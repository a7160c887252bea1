//! The durable outbox: a SQLite file holding (1) every event accepted but
//! not yet acknowledged by the server, oldest first, and (2) the devices the
//! gateway manages, so a restarted gateway still knows what to register and
//! where its queued events belong.
//!
//! Writes use `synchronous=FULL` in WAL mode: an event [`Outbox::push`]
//! returned for survives a crash of the process and of the machine. The
//! file is opened with an exclusive lock, so two gateways cannot share it.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::{
    Row, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePoolOptions,
        SqliteSynchronous,
    },
};
use tokio::sync::{Mutex, watch};

use crate::{DeviceSpec, Error, OutboxFullPolicy};

/// Bumped with every change to the tables below.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    device          TEXT NOT NULL,
    service         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    occurred_at     TEXT,
    idempotency_key TEXT NOT NULL,
    queued_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_device ON outbox (device);
CREATE TABLE IF NOT EXISTS devices (
    external_id TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    server_id   TEXT,
    dirty       INTEGER NOT NULL
);
";

/// An event checked and ready for the outbox.
#[derive(Debug, Clone)]
pub(crate) struct PreparedEvent {
    pub device: String,
    pub service: String,
    /// The payload as JSON text, exactly as it will be sent.
    pub payload: String,
    pub occurred_at: Option<String>,
    pub idempotency_key: String,
}

/// An event waiting in the outbox.
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    pub seq: i64,
    pub event: PreparedEvent,
}

/// What the gateway wants for a device; the session makes the platform
/// match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeviceState {
    /// Registered and ONLINE while the session is up.
    Active,
    /// Taken off the gateway (DISCONNECTED on the platform).
    Disconnected,
    /// To be deleted from the platform; forgotten once it is.
    Deleted,
}

/// One managed device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceEntry {
    pub spec: DeviceSpec,
    pub state: DeviceState,
    /// The platform's id, once known.
    pub server_id: Option<String>,
    /// The platform may not match `spec`/`state` yet.
    pub dirty: bool,
}

/// Handle to the outbox file. Cheap to share behind an `Arc`.
pub(crate) struct Outbox {
    pool: SqlitePool,
    /// Rows in `outbox`. An async mutex, held across the statements that
    /// change the table, so the count and the table never disagree.
    len: Mutex<u64>,
    /// The same count for watchers ([`crate::Connector::flush`]), published
    /// after every change.
    len_watch: watch::Sender<u64>,
    max_events: u64,
    policy: OutboxFullPolicy,
}

/// What [`Outbox::push`] did.
pub(crate) struct Pushed {
    /// Idempotency keys of older events dropped to make room.
    pub dropped: Vec<String>,
}

impl Outbox {
    pub async fn open(
        path: &Path,
        max_events: u64,
        policy: OutboxFullPolicy,
    ) -> Result<Outbox, Error> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|err| Error::Outbox(format!("cannot create {}: {err}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .locking_mode(SqliteLockingMode::Exclusive)
            .busy_timeout(Duration::from_millis(200));
        let in_use = |err: sqlx::Error| {
            let text = err.to_string();
            if text.contains("locked") || text.contains("busy") {
                Error::Outbox(format!(
                    "{} is in use by another process (one gateway per outbox)",
                    path.display()
                ))
            } else {
                Error::Outbox(format!("{}: {text}", path.display()))
            }
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(in_use)?;
        // The first write takes the exclusive lock for the life of the pool.
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .map_err(in_use)?;
        if version > SCHEMA_VERSION {
            return Err(Error::Outbox(format!(
                "{} was written by a newer ferrite-connector (schema {version}, this one knows {SCHEMA_VERSION})",
                path.display()
            )));
        }
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(in_use)?;
        // A constant, not input: nothing to inject.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {SCHEMA_VERSION}"
        )))
        .execute(&pool)
        .await?;
        let len: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await?;
        Ok(Outbox {
            pool,
            len: Mutex::new(len as u64),
            len_watch: watch::channel(len as u64).0,
            max_events,
            policy,
        })
    }

    /// Events waiting.
    pub async fn len(&self) -> u64 {
        *self.len.lock().await
    }

    /// Watches the number of events waiting.
    pub fn watch_len(&self) -> watch::Receiver<u64> {
        self.len_watch.subscribe()
    }

    fn set_len(&self, len: &mut u64, value: u64) {
        *len = value;
        self.len_watch.send_replace(value);
    }

    /// Appends events in one transaction, applying the full-outbox policy.
    #[cfg(test)]
    pub async fn push(&self, events: &[PreparedEvent]) -> Result<Pushed, Error> {
        self.push_groups(&[events])
            .await?
            .pop()
            .expect("BUG: one result per group")
    }

    /// Appends several callers' events in ONE transaction (one fsync: the
    /// group commit of [`crate::Connector`]'s outbox writer). Each group is
    /// accepted or refused whole by the full-outbox policy, in order.
    pub async fn push_groups(
        &self,
        groups: &[&[PreparedEvent]],
    ) -> Result<Vec<Result<Pushed, Error>>, Error> {
        let mut len = self.len.lock().await;
        let mut count = *len;
        let mut results = Vec::with_capacity(groups.len());
        let mut tx = self.pool.begin().await?;
        let queued_at = chrono::Utc::now().to_rfc3339();
        for events in groups {
            let incoming = events.len() as u64;
            let over = (count + incoming).saturating_sub(self.max_events);
            if over > 0 && (self.policy == OutboxFullPolicy::Reject || incoming > self.max_events) {
                results.push(Err(Error::OutboxFull(count)));
                continue;
            }
            let mut dropped = Vec::new();
            if over > 0 {
                dropped = sqlx::query_scalar(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)
                     RETURNING idempotency_key",
                )
                .bind(over as i64)
                .fetch_all(&mut *tx)
                .await?;
            }
            for event in *events {
                sqlx::query(
                    "INSERT INTO outbox (device, service, payload, occurred_at, idempotency_key, queued_at)
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&event.device)
                .bind(&event.service)
                .bind(&event.payload)
                .bind(&event.occurred_at)
                .bind(&event.idempotency_key)
                .bind(&queued_at)
                .execute(&mut *tx)
                .await?;
            }
            count = count + incoming - dropped.len() as u64;
            results.push(Ok(Pushed { dropped }));
        }
        tx.commit().await?;
        self.set_len(&mut len, count);
        Ok(results)
    }

    /// The oldest events, at most `max_events` of them and about
    /// `max_bytes` of payload (always at least one).
    pub async fn peek(&self, max_events: usize, max_bytes: usize) -> Result<Vec<OutboxRow>, Error> {
        let rows = sqlx::query(
            "SELECT seq, device, service, payload, occurred_at, idempotency_key
             FROM outbox ORDER BY seq LIMIT ?",
        )
        .bind(max_events as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut batch = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for row in rows {
            let event = PreparedEvent {
                device: row.try_get("device")?,
                service: row.try_get("service")?,
                payload: row.try_get("payload")?,
                occurred_at: row.try_get("occurred_at")?,
                idempotency_key: row.try_get("idempotency_key")?,
            };
            bytes += event.payload.len() + event.service.len() + 200;
            if bytes > max_bytes && !batch.is_empty() {
                break;
            }
            batch.push(OutboxRow {
                seq: row.try_get("seq")?,
                event,
            });
        }
        Ok(batch)
    }

    /// Removes acknowledged (or rejected) events.
    pub async fn remove(&self, seqs: &[i64]) -> Result<(), Error> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut len = self.len.lock().await;
        // One statement for the whole set: a batch of 500 is one fsync.
        let seqs = serde_json::to_string(seqs).expect("BUG: integers serialise");
        let removed =
            sqlx::query("DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))")
                .bind(seqs)
                .execute(&self.pool)
                .await?
                .rows_affected();
        let left = *len - removed;
        self.set_len(&mut len, left);
        Ok(())
    }

    /// Removes every waiting event of a device; returns their keys.
    pub async fn remove_device(&self, device: &str) -> Result<Vec<String>, Error> {
        let mut len = self.len.lock().await;
        let keys: Vec<String> =
            sqlx::query_scalar("DELETE FROM outbox WHERE device = ? RETURNING idempotency_key")
                .bind(device)
                .fetch_all(&self.pool)
                .await?;
        let left = *len - keys.len() as u64;
        self.set_len(&mut len, left);
        Ok(keys)
    }

    pub async fn devices(&self) -> Result<Vec<DeviceEntry>, Error> {
        let rows =
            sqlx::query("SELECT spec, state, server_id, dirty FROM devices ORDER BY external_id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| {
                let spec: String = row.try_get("spec")?;
                let state: String = row.try_get("state")?;
                let corrupt = |err: serde_json::Error| {
                    Error::Outbox(format!("a stored device does not parse: {err}"))
                };
                Ok(DeviceEntry {
                    spec: serde_json::from_str(&spec).map_err(corrupt)?,
                    state: serde_json::from_value(state.into()).map_err(corrupt)?,
                    server_id: row.try_get("server_id")?,
                    dirty: row.try_get("dirty")?,
                })
            })
            .collect()
    }

    pub async fn save_device(&self, entry: &DeviceEntry) -> Result<(), Error> {
        let spec = serde_json::to_string(&entry.spec).expect("BUG: a DeviceSpec serialises");
        let state = serde_json::to_value(entry.state).expect("BUG: a DeviceState serialises");
        sqlx::query(
            "INSERT INTO devices (external_id, spec, state, server_id, dirty) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (external_id) DO UPDATE SET
                spec = excluded.spec, state = excluded.state,
                server_id = excluded.server_id, dirty = excluded.dirty",
        )
        .bind(&entry.spec.external_id)
        .bind(spec)
        .bind(state.as_str())
        .bind(&entry.server_id)
        .bind(entry.dirty)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn forget_device(&self, external_id: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM devices WHERE external_id = ?")
            .bind(external_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> PreparedEvent {
        PreparedEvent {
            device: "d".into(),
            service: "s".into(),
            payload: format!("{{\"n\":{n}}}"),
            occurred_at: None,
            idempotency_key: format!("k{n}"),
        }
    }

    async fn open(path: &Path, max_events: u64, policy: OutboxFullPolicy) -> Outbox {
        Outbox::open(path, max_events, policy)
            .await
            .expect("the outbox opens")
    }

    /// The idempotency keys waiting, oldest first.
    async fn waiting_keys(outbox: &Outbox) -> Vec<String> {
        let rows = outbox.peek(100, 1 << 20).await.unwrap();
        rows.into_iter().map(|r| r.event.idempotency_key).collect()
    }

    #[tokio::test]
    async fn events_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/outbox.db");
        let outbox = open(&path, 10, OutboxFullPolicy::Reject).await;
        outbox.push(&[event(1), event(2)]).await.unwrap();
        outbox.push(&[event(3)]).await.unwrap();
        outbox.close().await;

        let outbox = open(&path, 10, OutboxFullPolicy::Reject).await;
        assert_eq!(outbox.len().await, 3);
        let rows = outbox.peek(10, 1 << 20).await.unwrap();
        let keys: Vec<_> = rows
            .iter()
            .map(|r| r.event.idempotency_key.as_str())
            .collect();
        assert_eq!(keys, ["k1", "k2", "k3"]);
        outbox.remove(&[rows[0].seq]).await.unwrap();
        assert_eq!(outbox.len().await, 2);
        assert_eq!(
            outbox.peek(1, 1 << 20).await.unwrap()[0]
                .event
                .idempotency_key,
            "k2"
        );
    }

    #[tokio::test]
    async fn a_full_outbox_rejects_or_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let reject = open(&dir.path().join("r.db"), 2, OutboxFullPolicy::Reject).await;
        reject.push(&[event(1), event(2)]).await.unwrap();
        assert_eq!(
            reject.push(&[event(3)]).await.err(),
            Some(Error::OutboxFull(2))
        );
        assert_eq!(reject.len().await, 2);

        let drop = open(&dir.path().join("d.db"), 2, OutboxFullPolicy::DropOldest).await;
        drop.push(&[event(1), event(2)]).await.unwrap();
        let pushed = drop.push(&[event(3)]).await.unwrap();
        assert_eq!(pushed.dropped, ["k1"]);
        assert_eq!(waiting_keys(&drop).await, ["k2", "k3"]);
    }

    #[tokio::test]
    async fn groups_share_a_transaction_and_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir.path().join("g.db"), 3, OutboxFullPolicy::Reject).await;
        let first = [event(1), event(2)];
        let too_many = [event(3), event(4)];
        let fits = [event(5)];
        let results = outbox
            .push_groups(&[&first, &too_many, &fits])
            .await
            .unwrap();
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().err(), Some(&Error::OutboxFull(2)));
        assert!(results[2].is_ok());
        assert_eq!(waiting_keys(&outbox).await, ["k1", "k2", "k5"]);
        assert_eq!(outbox.len().await, 3);
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let first = open(&path, 10, OutboxFullPolicy::Reject).await;
        first.push(&[event(1)]).await.unwrap();
        let second = Outbox::open(&path, 10, OutboxFullPolicy::Reject).await;
        match second {
            Err(Error::Outbox(message)) => assert!(message.contains("in use"), "{message}"),
            other => panic!("expected in use, got {:?}", other.err()),
        }
        assert_eq!(first.len().await, 1);
    }

    #[tokio::test]
    async fn batches_stop_at_the_byte_budget_but_take_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir.path().join("o.db"), 10, OutboxFullPolicy::Reject).await;
        outbox.push(&[event(1), event(2), event(3)]).await.unwrap();
        assert_eq!(outbox.peek(10, 1).await.unwrap().len(), 1);
        assert_eq!(outbox.peek(10, 450).await.unwrap().len(), 2);
        assert_eq!(outbox.peek(2, 1 << 20).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn devices_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let outbox = open(&path, 10, OutboxFullPolicy::Reject).await;
        let mut entry = DeviceEntry {
            spec: DeviceSpec::new("t1").name("Thermometer"),
            state: DeviceState::Active,
            server_id: None,
            dirty: true,
        };
        outbox.save_device(&entry).await.unwrap();
        entry.server_id = Some("uuid".into());
        entry.dirty = false;
        outbox.save_device(&entry).await.unwrap();
        outbox.close().await;
        let outbox = open(&path, 10, OutboxFullPolicy::Reject).await;
        assert_eq!(outbox.devices().await.unwrap(), [entry]);
        outbox.forget_device("t1").await.unwrap();
        assert!(outbox.devices().await.unwrap().is_empty());
    }
}
