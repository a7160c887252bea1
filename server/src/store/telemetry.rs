//! `telemetry`: one number from one device's events, summarised per time
//! bucket (count, min, max, sum, first, last) — what a chart or an RRD
//! consolidation needs, without shipping every event to the client.
//!
//! An event's time is when it happened on the device (`occurred_at`) when the
//! device said so, else when the server stored it: a gateway that was offline
//! for an hour and then empties its outbox places its readings where they
//! belong, not in the minute they arrived. The database selects the events
//! (through the index `idx_events_device_service_time`, whose expression the
//! query repeats exactly) and extracts the number; the buckets are filled
//! here, with exact integer arithmetic on times, so both backends agree to the
//! microsecond on which bucket an event falls in.

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::TryStreamExt;
use sea_orm::{DbBackend, Statement, StreamTrait, Value};
use uuid::Uuid;

use super::{Scope, Store, StoreError};

/// When an event counts as having happened; the index is on this expression.
const EVENT_TIME: &str = "COALESCE(occurred_at, received_at)";
/// The index on (device_id, service, EVENT_TIME), made by migration 11.
const TELEMETRY_INDEX: &str = "idx_events_device_service_time";

/// One telemetry question: which number, of which events, over which span.
#[derive(Debug, Clone)]
pub struct TelemetryQuery {
    pub device_id: Uuid,
    pub service: String,
    /// Object keys leading from the payload to the number; empty for a
    /// payload that is the number itself.
    pub field: Vec<String>,
    /// Inclusive.
    pub from: DateTime<Utc>,
    /// Exclusive; after `from`.
    pub to: DateTime<Utc>,
    /// Whole seconds, at least 1.
    pub bucket_seconds: i64,
    /// Only events with ids up to this one count (the seam between a
    /// chart's history and its live tail).
    pub as_of: Option<i64>,
}

impl TelemetryQuery {
    /// How many buckets span `from`..`to` (the last one may be shorter).
    pub fn bucket_count(&self) -> u64 {
        let span = self.to - self.from;
        let seconds = span.num_seconds();
        let fraction = span - TimeDelta::seconds(seconds);
        let whole = seconds / self.bucket_seconds;
        let partial = seconds % self.bucket_seconds != 0 || fraction > TimeDelta::zero();
        (whole + i64::from(partial)).max(0) as u64
    }
}

/// What the events in one bucket said. A value is a JSON number, or a
/// boolean counted as 1 (true) or 0 (false); events whose field is missing or
/// holds anything else are not counted.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryBucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// None as well when the values add up past the largest double.
    pub sum: Option<f64>,
    /// The value of the earliest event (by time, then id).
    pub first: Option<f64>,
    /// The value of the latest event (by time, then id).
    pub last: Option<f64>,
}

/// Running totals of one bucket, with the (time, id) of its first and last
/// values so that ties between events of the same instant resolve by id.
#[derive(Default)]
struct Totals {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    first: Option<((DateTime<Utc>, i64), f64)>,
    last: Option<((DateTime<Utc>, i64), f64)>,
}

impl Totals {
    fn add(&mut self, at: DateTime<Utc>, id: i64, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        let key = (at, id);
        if self.first.is_none_or(|(first, _)| key < first) {
            self.first = Some((key, value));
        }
        if self.last.is_none_or(|(last, _)| key > last) {
            self.last = Some((key, value));
        }
    }
}

/// Fills buckets from events in any order.
struct Bucketing {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_seconds: i64,
    totals: Vec<Totals>,
}

impl Bucketing {
    fn new(query: &TelemetryQuery) -> Self {
        let count = query.bucket_count() as usize;
        Self {
            from: query.from,
            to: query.to,
            bucket_seconds: query.bucket_seconds,
            totals: (0..count).map(|_| Totals::default()).collect(),
        }
    }

    fn add(&mut self, at: DateTime<Utc>, id: i64, value: f64) {
        if at < self.from || at >= self.to {
            return;
        }
        // Buckets start on whole seconds after `from`, so truncating the
        // sub-second part before dividing gives the exact floor.
        let index = ((at - self.from).num_seconds() / self.bucket_seconds) as usize;
        if let Some(totals) = self.totals.get_mut(index) {
            totals.add(at, id, value);
        }
    }

    fn finish(self) -> Vec<TelemetryBucket> {
        let (from, to, step) = (self.from, self.to, self.bucket_seconds);
        self.totals
            .into_iter()
            .enumerate()
            .map(|(index, totals)| {
                let start = from + TimeDelta::seconds(step * index as i64);
                let end = start
                    .checked_add_signed(TimeDelta::seconds(step))
                    .map_or(to, |end| end.min(to));
                let counted = totals.count > 0;
                TelemetryBucket {
                    start,
                    end,
                    count: totals.count,
                    min: counted.then_some(totals.min),
                    max: counted.then_some(totals.max),
                    // Values near the largest double can add up past it; an
                    // infinite sum is not a number GraphQL can send.
                    sum: counted.then_some(totals.sum).filter(|sum| sum.is_finite()),
                    first: totals.first.map(|(_, value)| value),
                    last: totals.last.map(|(_, value)| value),
                }
            })
            .collect()
    }
}

impl Store {
    /// Every bucket from `query.from` to `query.to`, oldest first, empty ones
    /// included (count 0). `NotFound` when the device does not exist or is
    /// outside `scope`. The caller bounds [`TelemetryQuery::bucket_count`].
    pub async fn telemetry(
        &self,
        scope: Scope,
        query: &TelemetryQuery,
    ) -> Result<Vec<TelemetryBucket>, StoreError> {
        self.device_by_id(query.device_id, scope).await?;

        let mut buckets = Bucketing::new(query);
        let mut rows = self.db.stream_raw(self.telemetry_statement(query)).await?;
        while let Some(row) = rows.try_next().await? {
            let value: Option<f64> = row.try_get("", "value")?;
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let id: i64 = row.try_get("", "id")?;
            if query.as_of.is_some_and(|as_of| id > as_of) {
                continue;
            }
            let at: DateTime<Utc> = row.try_get("", "at")?;
            buckets.add(at, id, value);
        }
        Ok(buckets.finish())
    }

    /// `id`, `at` and `value` of the events the query is about.
    ///
    /// Written out rather than built with sea-query for two reasons: the
    /// time conditions must repeat the index's expression word for word, and
    /// SQLite must be told to use that index. Without statistics (Ferrite
    /// never runs ANALYZE) SQLite 3.51 prefers `idx_events_device_id`, which
    /// would read the device's whole history for every query; `INDEXED BY`
    /// makes that impossible (and a missing index an error, not a slow
    /// query). PostgreSQL plans with its own statistics.
    fn telemetry_statement(&self, query: &TelemetryQuery) -> Statement {
        let backend = self.backend();
        let mut values: Vec<Value> = Vec::new();
        let mut bind = |value: Value| {
            values.push(value);
            match backend {
                DbBackend::Postgres => format!("${}", values.len()),
                _ => "?".to_owned(),
            }
        };
        let value = numeric_value(backend, &query.field, &mut bind);
        let device = bind(query.device_id.into());
        let service = bind(query.service.as_str().into());
        let from = bind(query.from.into());
        let to = bind(query.to.into());
        let index = match backend {
            DbBackend::Postgres => String::new(),
            _ => format!(" INDEXED BY {TELEMETRY_INDEX}"),
        };
        let sql = format!(
            "SELECT id, {EVENT_TIME} AS at, {value} AS value \
             FROM events{index} \
             WHERE device_id = {device} AND service = {service} \
             AND {EVENT_TIME} >= {from} AND {EVENT_TIME} < {to}"
        );
        Statement::from_sql_and_values(backend, sql, values)
    }
}

/// The number at `field` in an event's payload as a double, or NULL when it
/// is not a number or a boolean. Keys are bound as parameters (through
/// `bind`, which answers the placeholder), never spliced into the SQL.
fn numeric_value(
    backend: DbBackend,
    field: &[String],
    bind: &mut impl FnMut(Value) -> String,
) -> String {
    match backend {
        DbBackend::Postgres => {
            // payload -> 'a' -> 'b'; PostgreSQL needs its placeholders
            // numbered, so each use of the path binds its keys again.
            let mut path = || {
                field.iter().fold("payload".to_owned(), |path, key| {
                    format!("({path} -> {})", bind(key.as_str().into()))
                })
            };
            let (typed, number, boolean) = (path(), path(), path());
            format!(
                "CASE jsonb_typeof({typed}) \
                 WHEN 'number' THEN CAST({number} AS double precision) \
                 WHEN 'boolean' THEN CASE WHEN CAST({boolean} AS boolean) THEN 1.0 ELSE 0.0 END \
                 END"
            )
        }
        _ => {
            // A JSON path with every key quoted: $."a"."b".
            let path: String = std::iter::once("$".to_owned())
                .chain(field.iter().map(|key| format!(".\"{key}\"")))
                .collect();
            let (typed, integer, real) = (
                bind(path.clone().into()),
                bind(path.clone().into()),
                bind(path.into()),
            );
            format!(
                "CASE json_type(payload, {typed}) \
                 WHEN 'integer' THEN CAST(json_extract(payload, {integer}) AS REAL) \
                 WHEN 'real' THEN json_extract(payload, {real}) \
                 WHEN 'true' THEN 1.0 \
                 WHEN 'false' THEN 0.0 \
                 END"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
            + TimeDelta::microseconds(micros)
    }

    fn query(from: DateTime<Utc>, to: DateTime<Utc>, bucket_seconds: i64) -> TelemetryQuery {
        TelemetryQuery {
            device_id: Uuid::nil(),
            service: "t".into(),
            field: vec![],
            from,
            to,
            bucket_seconds,
            as_of: None,
        }
    }

    /// Real SQLite answers through the index made for it, bounded by device,
    /// service and both ends of the span: dropping `INDEXED BY` or changing
    /// either expression would quietly make every query read the device's
    /// whole history. (PostgreSQL's plan: docs/PERFORMANCE.md.)
    #[tokio::test]
    async fn sqlite_answers_from_the_telemetry_index() {
        use sea_orm::ConnectionTrait;

        let (_dir, store) = Store::temporary().await;
        let mut query = query(at(0, 0), at(60, 0), 10);
        query.field = vec!["env".into(), "t".into()];
        let statement = store.telemetry_statement(&query);
        let plan = store
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {}", statement.sql),
                statement.values.map(|v| v.0).unwrap_or_default(),
            ))
            .await
            .unwrap();
        let details: Vec<String> = plan
            .iter()
            .map(|row| row.try_get::<String>("", "detail").unwrap())
            .collect();
        assert!(
            details.iter().any(|d| d.contains(
                "USING INDEX idx_events_device_service_time \
                     (device_id=? AND service=? AND <expr>>? AND <expr><?)"
            )),
            "{details:?} for {}",
            statement.sql
        );
    }

    #[test]
    fn the_bucket_count_rounds_a_partial_last_bucket_up() {
        assert_eq!(query(at(0, 0), at(60, 0), 60).bucket_count(), 1);
        assert_eq!(query(at(0, 0), at(61, 0), 60).bucket_count(), 2);
        assert_eq!(query(at(0, 0), at(60, 1), 60).bucket_count(), 2);
        assert_eq!(query(at(0, 0), at(0, 1), 60).bucket_count(), 1);
        assert_eq!(query(at(0, 0), at(3600, 0), 1).bucket_count(), 3600);
    }

    #[test]
    fn events_fall_in_the_bucket_their_time_floors_to() {
        let mut buckets = Bucketing::new(&query(at(0, 0), at(25, 0), 10));
        buckets.add(at(0, 0), 1, 5.0); // first instant: bucket 0
        buckets.add(at(9, 999_999), 2, 7.0); // last microsecond of bucket 0
        buckets.add(at(10, 0), 3, 1.0); // first instant of bucket 1
        buckets.add(at(24, 999_999), 4, 2.0); // the short last bucket
        buckets.add(at(25, 0), 5, 100.0); // `to` is exclusive
        buckets.add(at(-1, 0), 6, 100.0); // before `from`
        let buckets = buckets.finish();
        assert_eq!(buckets.len(), 3);
        assert_eq!(
            buckets.iter().map(|b| b.count).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        assert_eq!(buckets[0].sum, Some(12.0));
        assert_eq!((buckets[2].start, buckets[2].end), (at(20, 0), at(25, 0)));
    }

    #[test]
    fn first_and_last_go_by_time_then_id_whatever_the_arrival_order() {
        let mut buckets = Bucketing::new(&query(at(0, 0), at(10, 0), 10));
        buckets.add(at(5, 0), 10, 3.0);
        buckets.add(at(1, 0), 11, -4.0); // arrived later, happened first
        buckets.add(at(5, 0), 9, 8.0); // same instant as id 10, smaller id
        buckets.add(at(2, 0), 12, 0.5);
        let bucket = &buckets.finish()[0];
        assert_eq!(bucket.first, Some(-4.0));
        assert_eq!(bucket.last, Some(3.0));
        assert_eq!((bucket.min, bucket.max), (Some(-4.0), Some(8.0)));
        assert_eq!(bucket.count, 4);
    }

    #[test]
    fn a_sum_past_the_largest_double_is_left_out_not_infinite() {
        let mut buckets = Bucketing::new(&query(at(0, 0), at(10, 0), 10));
        buckets.add(at(1, 0), 1, 1e308);
        buckets.add(at(2, 0), 2, 1e308);
        let bucket = &buckets.finish()[0];
        assert_eq!(bucket.sum, None);
        assert_eq!(
            (bucket.count, bucket.max, bucket.last),
            (2, Some(1e308), Some(1e308))
        );
    }

    #[test]
    fn an_empty_bucket_has_a_count_of_zero_and_no_values() {
        let buckets = Bucketing::new(&query(at(0, 0), at(20, 0), 10)).finish();
        assert_eq!(buckets.len(), 2);
        for bucket in buckets {
            assert_eq!(bucket.count, 0);
            assert_eq!(
                (
                    bucket.min,
                    bucket.max,
                    bucket.sum,
                    bucket.first,
                    bucket.last
                ),
                (None, None, None, None, None)
            );
        }
    }
}
