//! Queries on `events`.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, NotSet,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Query,
};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    Scope, Store, StoreError,
    entity::{device, event},
    now,
    page::{Order, Page, PageArgs, fetch_page},
    scoped,
};

/// Which events a list returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub device_ids: Option<Vec<Uuid>>,
    pub services: Option<Vec<String>>,
    /// Events of devices at these locations.
    pub locations: Option<Vec<String>>,
    /// Received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Received before this time.
    pub until: Option<DateTime<Utc>>,
}

impl EventFilter {
    fn condition(&self) -> Condition {
        let mut all = Condition::all();
        if let Some(device_ids) = &self.device_ids {
            all = all.add(event::Column::DeviceId.is_in(device_ids.iter().copied()));
        }
        if let Some(services) = &self.services {
            all = all.add(event::Column::Service.is_in(services.iter().cloned()));
        }
        if let Some(locations) = &self.locations {
            all = all.add(
                event::Column::DeviceId.in_subquery(
                    Query::select()
                        .column(device::Column::Id)
                        .from(device::Entity)
                        .and_where(device::Column::Location.is_in(locations.iter().cloned()))
                        .to_owned(),
                ),
            );
        }
        if let Some(since) = self.since {
            all = all.add(event::Column::ReceivedAt.gte(since));
        }
        if let Some(until) = self.until {
            all = all.add(event::Column::ReceivedAt.lt(until));
        }
        all
    }
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub device_id: Uuid,
    pub service: String,
    pub payload: Json,
    pub occurred_at: Option<DateTime<Utc>>,
    /// A retried publish with the same key (per device) stores nothing new and
    /// returns the event stored the first time.
    pub idempotency_key: Option<String>,
}

impl Store {
    pub async fn event_by_id(&self, id: i64, scope: Scope) -> Result<event::Model, StoreError> {
        scoped(event::Entity::find_by_id(id), scope, event::Column::OwnerId)
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A page of events, newest first.
    pub async fn list_events(
        &self,
        scope: Scope,
        filter: &EventFilter,
        args: PageArgs<i64>,
        default_size: u64,
    ) -> Result<Page<event::Model>, StoreError> {
        let query =
            scoped(event::Entity::find(), scope, event::Column::OwnerId).filter(filter.condition());
        fetch_page(
            &self.db,
            query,
            event::Column::Id,
            Order::Descending,
            args,
            default_size,
        )
        .await
    }

    pub async fn count_events(
        &self,
        scope: Scope,
        filter: &EventFilter,
    ) -> Result<u64, StoreError> {
        Ok(scoped(event::Entity::find(), scope, event::Column::OwnerId)
            .filter(filter.condition())
            .count(&self.db)
            .await?)
    }

    /// Stores the events of several publishers in one transaction (a group
    /// commit) and returns, per job, its events in input order or why none of
    /// them were stored.
    ///
    /// A job is all or nothing: if any of its devices is unknown or outside its
    /// scope, the job gets `NotFound` and stores nothing, while the other jobs
    /// of the batch are stored. An event whose idempotency key was seen before
    /// for its device is not stored again: the stored event stands in for it
    /// (with `fresh: false`). A database error fails the whole batch.
    ///
    /// On PostgreSQL the transaction first takes an advisory lock, so batches
    /// from every node commit one at a time and event ids become visible in
    /// increasing order: a reader that has seen id N has seen every id below.
    pub async fn insert_event_batch(
        &self,
        jobs: &[EventJob],
    ) -> Result<Vec<Result<Vec<StoredEvent>, StoreError>>, StoreError> {
        let tx = self.begin_ingest().await?;
        if self.backend() == DbBackend::Postgres {
            tx.execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({EVENT_COMMIT_LOCK})"
            ))
            .await?;
        }

        // Every device the batch names, with its owner and location.
        let mut device_ids: Vec<Uuid> = jobs
            .iter()
            .flat_map(|job| job.events.iter().map(|e| e.device_id))
            .collect();
        device_ids.sort_unstable();
        device_ids.dedup();
        let mut devices: HashMap<Uuid, (Uuid, Option<String>)> = HashMap::new();
        for chunk in device_ids.chunks(INSERT_CHUNK) {
            let rows = device::Entity::find()
                .filter(device::Column::Id.is_in(chunk.iter().copied()))
                .select_only()
                .column(device::Column::Id)
                .column(device::Column::OwnerId)
                .column(device::Column::Location)
                .into_tuple::<(Uuid, Uuid, Option<String>)>()
                .all(&tx)
                .await?;
            devices.extend(
                rows.into_iter()
                    .map(|(id, owner, location)| (id, (owner, location))),
            );
        }
        let visible = |scope: Scope, device_id: &Uuid| match (scope, devices.get(device_id)) {
            (_, None) => false,
            (Scope::All, Some(_)) => true,
            (Scope::Owner(owner), Some((device_owner, _))) => owner == *device_owner,
        };
        let accepted: Vec<bool> = jobs
            .iter()
            .map(|job| job.events.iter().all(|e| visible(job.scope, &e.device_id)))
            .collect();

        // Events stored before under the same (device, idempotency key).
        let mut known: HashMap<(Uuid, String), event::Model> = HashMap::new();
        let keyed: Vec<(Uuid, String)> = jobs
            .iter()
            .zip(&accepted)
            .filter(|(_, ok)| **ok)
            .flat_map(|(job, _)| job.events.iter())
            .filter_map(|e| e.idempotency_key.clone().map(|key| (e.device_id, key)))
            .collect();
        for chunk in keyed.chunks(INSERT_CHUNK) {
            let rows = event::Entity::find()
                .filter(event::Column::DeviceId.is_in(chunk.iter().map(|(d, _)| *d)))
                .filter(event::Column::IdempotencyKey.is_in(chunk.iter().map(|(_, k)| k.clone())))
                .all(&tx)
                .await?;
            for row in rows {
                if let Some(key) = row.idempotency_key.clone() {
                    known.insert((row.device_id, key), row);
                }
            }
        }

        // Which input becomes which stored row: an existing one, or a new one
        // (a key repeated within the batch is inserted once).
        enum Slot {
            Existing(event::Model),
            New(usize),
        }
        let received_at = now();
        // The rows to insert, as they will be stored (ids come with the insert).
        let mut fresh: Vec<event::Model> = Vec::new();
        let mut first_in_batch: HashMap<(Uuid, String), usize> = HashMap::new();
        let mut slots: Vec<Option<Vec<Slot>>> = Vec::with_capacity(jobs.len());
        for (job, ok) in jobs.iter().zip(&accepted) {
            if !ok {
                slots.push(None);
                continue;
            }
            let mut job_slots = Vec::with_capacity(job.events.len());
            for new in &job.events {
                let key = new.idempotency_key.clone().map(|k| (new.device_id, k));
                if let Some(existing) = key.as_ref().and_then(|k| known.get(k)) {
                    job_slots.push(Slot::Existing(existing.clone()));
                    continue;
                }
                if let Some(index) = key.as_ref().and_then(|k| first_in_batch.get(k)) {
                    job_slots.push(Slot::New(*index));
                    continue;
                }
                if let Some(key) = key {
                    first_in_batch.insert(key, fresh.len());
                }
                job_slots.push(Slot::New(fresh.len()));
                fresh.push(event::Model {
                    id: 0,
                    device_id: new.device_id,
                    owner_id: devices[&new.device_id].0,
                    service: new.service.clone(),
                    payload: new.payload.clone(),
                    occurred_at: new.occurred_at,
                    received_at,
                    idempotency_key: new.idempotency_key.clone(),
                });
            }
            slots.push(Some(job_slots));
        }

        let mut inserted = Vec::with_capacity(fresh.len());
        let mut rows = fresh.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
            let stored = match self.backend() {
                DbBackend::Sqlite => insert_numbering(&tx, chunk).await?,
                _ => insert_returning(&tx, chunk).await?,
            };
            inserted.extend(stored.into_iter().map(Arc::new));
        }
        tx.commit().await?;

        let location = |device_id: &Uuid| devices.get(device_id).and_then(|(_, l)| l.clone());
        let mut claimed = vec![false; inserted.len()];
        Ok(slots
            .into_iter()
            .map(|job_slots| match job_slots {
                None => Err(StoreError::NotFound),
                Some(job_slots) => Ok(job_slots
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Existing(event) => StoredEvent {
                            location: location(&event.device_id),
                            event: Arc::new(event),
                            fresh: false,
                        },
                        Slot::New(index) => {
                            let event = inserted[index].clone();
                            // A key repeated in the batch: only its first
                            // occurrence counts as new.
                            let fresh = !std::mem::replace(&mut claimed[index], true);
                            StoredEvent {
                                location: location(&event.device_id),
                                event,
                                fresh,
                            }
                        }
                    })
                    .collect()),
            })
            .collect())
    }

    /// Up to `limit` events in `scope` matching `filter` with ids above
    /// `after`, oldest first: how a subscriber catches up.
    pub async fn events_after(
        &self,
        scope: Scope,
        filter: &EventFilter,
        after: i64,
        limit: u64,
    ) -> Result<Vec<event::Model>, StoreError> {
        Ok(scoped(event::Entity::find(), scope, event::Column::OwnerId)
            .filter(filter.condition())
            .filter(event::Column::Id.gt(after))
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Up to `limit` events with ids above `after`, in id order, each with
    /// its device's location: what the relay publishes.
    pub async fn events_after_with_location(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(event::Model, Option<String>)>, StoreError> {
        let events = self
            .events_after(Scope::All, &EventFilter::default(), after, limit)
            .await?;
        let mut device_ids: Vec<Uuid> = events.iter().map(|e| e.device_id).collect();
        device_ids.sort_unstable();
        device_ids.dedup();
        let locations: HashMap<Uuid, Option<String>> = device::Entity::find()
            .filter(device::Column::Id.is_in(device_ids))
            .select_only()
            .column(device::Column::Id)
            .column(device::Column::Location)
            .into_tuple::<(Uuid, Option<String>)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        Ok(events
            .into_iter()
            .map(|event| {
                let location = locations.get(&event.device_id).cloned().flatten();
                (event, location)
            })
            .collect())
    }

    /// Sends a PostgreSQL notification (outside any transaction).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [channel.into(), payload.into()],
            ))
            .await?;
        Ok(())
    }

    /// The highest event id stored, or 0.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(event::Entity::find()
            .select_only()
            .column_as(event::Column::Id.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten()
            .unwrap_or(0))
    }
}

/// Inserts events on SQLite and numbers them from the id of the last one,
/// instead of reading every column back: the rows are stored as given.
///
/// Why the numbering holds: `events.id` is `INTEGER PRIMARY KEY
/// AUTOINCREMENT`, the batch's transaction is the only writer, and one
/// multi-row INSERT stores its rows in order, each taking the next id: the
/// ids are `last - n + 1 ..= last`.
///
/// Why the rows are as stored: SQLite keeps `payload` as the JSON text
/// serialised here and a read parses it back. With serde_json's
/// `float_roundtrip`, parsing gives back exactly the number that was
/// written, so the event a publisher and the live subscribers get is the
/// one a later query reads (the byte-for-byte `compiled_publishing` test
/// checks both). Times are stored with all the digits they have.
///
/// Reading every row back (`RETURNING *`) cost a copy of each value in the
/// driver, one message per row from SQLite's thread and a parse of each
/// payload: about a third of the writer's time in batches of 100.
///
/// Tried and dropped: all rows as one JSON text in one parameter, unpacked
/// by `json_each` (one statement text for every batch size, prepared once).
/// SQLite's unpacking cost more than the preparing and binding it saved:
/// 10–17 % more writer time in batches of 100, no gain one at a time.
async fn insert_numbering(
    tx: &DatabaseTransaction,
    rows: Vec<event::Model>,
) -> Result<Vec<event::Model>, StoreError> {
    let mut insert = Query::insert();
    insert.into_table(event::Entity).columns([
        event::Column::DeviceId,
        event::Column::OwnerId,
        event::Column::Service,
        event::Column::Payload,
        event::Column::OccurredAt,
        event::Column::ReceivedAt,
        event::Column::IdempotencyKey,
    ]);
    for row in &rows {
        // The JSON text the driver would bind for a `Json` value, without
        // copying the payload's tree first.
        let payload = serde_json::to_string(&row.payload)
            .map_err(|err| sea_orm::DbErr::Custom(format!("payload: {err}")))?;
        insert.values_panic([
            row.device_id.into(),
            row.owner_id.into(),
            row.service.clone().into(),
            payload.into(),
            row.occurred_at.into(),
            row.received_at.into(),
            row.idempotency_key.clone().into(),
        ]);
    }
    let done = tx.execute_raw(DbBackend::Sqlite.build(&insert)).await?;
    let count = rows.len() as u64;
    let first = (done.last_insert_id() + 1)
        .checked_sub(count)
        .filter(|_| done.rows_affected() == count)
        .and_then(|first| i64::try_from(first).ok())
        .ok_or_else(|| {
            StoreError::Database(sea_orm::DbErr::Custom(format!(
                "{count} events inserted, {} stored, the last as {}",
                done.rows_affected(),
                done.last_insert_id()
            )))
        })?;
    Ok(rows
        .into_iter()
        .zip(first..)
        .map(|(row, id)| event::Model { id, ..row })
        .collect())
}

/// Inserts events and reads them back as stored (PostgreSQL: `jsonb`
/// rewrites payloads, `-0.0` becomes `0`, and times keep microseconds).
async fn insert_returning(
    tx: &DatabaseTransaction,
    rows: Vec<event::Model>,
) -> Result<Vec<event::Model>, StoreError> {
    let rows = rows.into_iter().map(|row| event::ActiveModel {
        id: NotSet,
        device_id: Set(row.device_id),
        owner_id: Set(row.owner_id),
        service: Set(row.service),
        payload: Set(row.payload),
        occurred_at: Set(row.occurred_at),
        received_at: Set(row.received_at),
        idempotency_key: Set(row.idempotency_key),
    });
    let mut stored = event::Entity::insert_many(rows)
        .exec_with_returning(tx)
        .await?;
    // Ids are assigned in row order; RETURNING need not keep that order, so
    // sort by id to line rows up with their inputs.
    stored.sort_by_key(|e| e.id);
    Ok(stored)
}

/// Rows per INSERT or IN list: well under SQLite's and PostgreSQL's limits on
/// bound parameters.
const INSERT_CHUNK: usize = 500;

/// The advisory lock that serialises event commits across nodes on PostgreSQL.
const EVENT_COMMIT_LOCK: i64 = 0x6665_7272_6974_6501; // "ferrite" + 1

/// One publisher's events within a group-commit batch.
#[derive(Debug, Clone)]
pub struct EventJob {
    pub scope: Scope,
    pub events: Vec<NewEvent>,
}

/// An event as a publish stored it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Shared: the publisher's answer and the bus hold the same event.
    pub event: Arc<event::Model>,
    /// The device's location when the event was stored (for live filters).
    pub location: Option<String>,
    /// False when an idempotent retry returned an event stored before.
    pub fresh: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(device_id: Uuid, payload: Json, key: Option<&str>) -> NewEvent {
        NewEvent {
            device_id,
            service: "probe".into(),
            payload,
            occurred_at: Some(DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap()),
            idempotency_key: key.map(Into::into),
        }
    }

    /// Finite doubles from random bits (splitmix64, fixed seed), and the
    /// awkward ones: signed zero, subnormals, the extremes.
    fn awkward_floats(count: usize) -> Vec<f64> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut floats = vec![
            -0.0,
            5e-324,
            2.225_073_858_507_201e-308,
            f64::MAX,
            f64::MIN_POSITIVE,
            0.1 + 0.2,
            1e-7,
            9_007_199_254_740_993.0,
        ];
        while floats.len() < count {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let float = f64::from_bits(z ^ (z >> 31));
            if float.is_finite() {
                floats.push(float);
            }
        }
        floats
    }

    /// What a batch answers (and hands to live subscribers) is what a later
    /// read gives, to the bit: ids across several INSERT chunks, times, and
    /// every payload number. Alongside: a refused job, a key repeated
    /// within the batch, and a key stored by an earlier batch.
    #[tokio::test]
    async fn a_batch_answers_its_events_as_a_later_read_gives_them() {
        let (_dir, store) = Store::temporary().await;
        let (owner, device) = store.member_with_device("owner").await;
        let scope = Scope::Owner(owner);
        let earlier = store
            .insert_event_batch(&[EventJob {
                scope,
                events: vec![new_event(device, serde_json::json!(1), Some("earlier"))],
            }])
            .await
            .unwrap();
        let earlier = earlier[0].as_ref().unwrap()[0].event.clone();

        let floats = awkward_floats(INSERT_CHUNK * 2 * 8 + 100);
        let many: Vec<NewEvent> = floats
            .chunks(8)
            .map(|values| new_event(device, serde_json::json!({ "values": values }), None))
            .collect();
        assert!(many.len() > INSERT_CHUNK * 2, "three INSERT chunks");
        let jobs = [
            EventJob {
                scope,
                events: many,
            },
            EventJob {
                scope,
                events: vec![new_event(Uuid::new_v4(), serde_json::json!(0), None)],
            },
            EventJob {
                scope,
                events: vec![
                    new_event(device, serde_json::json!({ "twice": -0.0 }), Some("k")),
                    new_event(device, serde_json::json!({ "twice": 2 }), Some("k")),
                    new_event(device, serde_json::json!(3), Some("earlier")),
                ],
            },
        ];
        let outcomes = store.insert_event_batch(&jobs).await.unwrap();

        assert!(matches!(outcomes[1], Err(StoreError::NotFound)));
        let keyed = outcomes[2].as_ref().unwrap();
        assert_eq!(
            keyed[0].event, keyed[1].event,
            "a key repeated in the batch"
        );
        assert_eq!((keyed[0].fresh, keyed[1].fresh), (true, false));
        assert_eq!(keyed[2].event, earlier, "a key stored before");
        assert!(!keyed[2].fresh);

        let mut answered: Vec<&StoredEvent> = outcomes[0].as_ref().unwrap().iter().collect();
        answered.push(&keyed[0]);
        let first = answered[0].event.id;
        assert_eq!(first, earlier.id + 1);
        for (at, stored) in answered.iter().enumerate() {
            let read = store
                .event_by_id(stored.event.id, Scope::All)
                .await
                .unwrap();
            assert_eq!(stored.event.id, first + at as i64, "ids in input order");
            assert_eq!(*stored.event, read);
            // `Json`'s equality takes -0.0 for 0.0; the text does not.
            assert_eq!(
                serde_json::to_string(&stored.event.payload).unwrap(),
                serde_json::to_string(&read.payload).unwrap(),
                "event {} as answered and as read",
                stored.event.id
            );
        }
        assert_eq!(
            serde_json::to_string(&answered[0].event.payload).unwrap(),
            serde_json::to_string(&serde_json::json!({ "values": floats[..8] })).unwrap(),
        );
    }

    /// The packed insert stores the very values the driver binds one by
    /// one (`insert_returning`, SeaORM's own insert): same SQLite types,
    /// same bytes, for awkward texts, payloads and times.
    #[tokio::test]
    async fn packed_rows_are_stored_as_the_driver_binds_them() {
        let (_dir, store) = Store::temporary().await;
        let (owner, device) = store.member_with_device("owner").await;
        let received_at = now();
        let row = |key: Option<&str>, occurred_at, payload| event::Model {
            id: 0,
            device_id: device,
            owner_id: owner,
            service: "ünï \"q\" \\ 😀 \u{2028}".into(),
            payload,
            occurred_at,
            received_at,
            idempotency_key: key.map(Into::into),
        };
        let payloads = [
            serde_json::json!({ "a": [1, -0.0, 1.5e300, 1e-7, u64::MAX, "\u{0}\n\"\\😀"], "b": null }),
            serde_json::json!("\u{7f}\u{1f}</script>"),
            serde_json::json!(-9_223_372_036_854_775_808_i64),
        ];
        let times = [
            Some(DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap()),
            Some(DateTime::from_timestamp(0, 0).unwrap()),
            None,
        ];
        let rows = |prefix: &str| -> Vec<event::Model> {
            payloads
                .iter()
                .zip(times)
                .enumerate()
                .map(|(at, (payload, time))| {
                    let key = format!("{prefix}{at}");
                    row((at != 1).then_some(key.as_str()), time, payload.clone())
                })
                .collect()
        };

        let tx = store.begin_ingest().await.unwrap();
        let bound = insert_returning(&tx, rows("a")).await.unwrap();
        let packed = insert_numbering(&tx, rows("b")).await.unwrap();
        tx.commit().await.unwrap();

        let stored = |id: i64| {
            let store = store.clone();
            async move {
                let row = store
                    .db
                    .query_one_raw(sea_orm::Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "SELECT typeof(device_id) || quote(device_id), \
                         typeof(owner_id) || quote(owner_id), quote(service), \
                         quote(payload), quote(occurred_at), quote(received_at), \
                         quote(idempotency_key) FROM events WHERE id = ?",
                        [id.into()],
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                (0..7)
                    .map(|at| row.try_get_by_index::<String>(at).unwrap())
                    .collect::<Vec<_>>()
            }
        };
        for (bound, packed) in bound.iter().zip(&packed) {
            let (mut bound_row, mut packed_row) = (stored(bound.id).await, stored(packed.id).await);
            assert!(bound_row[0].starts_with("blobX'"), "{bound_row:?}");
            // The keys differ by their prefix only (they must be unique).
            let (bound_key, packed_key) = (bound_row.pop().unwrap(), packed_row.pop().unwrap());
            assert_eq!(bound_key.replacen("'a", "'b", 1), packed_key);
            assert_eq!(bound_row, packed_row);
            assert_eq!(
                *bound,
                event::Model {
                    id: bound.id,
                    idempotency_key: bound.idempotency_key.clone(),
                    ..packed.clone()
                }
            );
        }
        assert_eq!(packed[1].id + 1, packed[2].id);
    }

    /// Only the writer's own connection keeps temporary data in memory
    /// (`temp_store=MEMORY`, 2); the pool keeps SQLite's default (0).
    #[tokio::test]
    async fn only_the_writer_connection_keeps_its_journal_in_memory() {
        let (_dir, store) = Store::temporary().await;
        let temp_store = |db: sea_orm::DatabaseConnection| async move {
            db.query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA temp_store",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap()
        };
        assert_eq!(temp_store(store.ingest.clone()).await, 2);
        assert_eq!(temp_store(store.db.clone()).await, 0);
    }
}
