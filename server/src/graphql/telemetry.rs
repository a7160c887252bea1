//! `telemetry`: a number from one device's events, per time bucket — the
//! history behind a chart, at the resolution the chart can show.

use super::scalars::Timestamp;
use async_graphql::{Context, ID, Object};

use super::{
    context::{principal, state},
    error::{ApiError, ApiResult, OrNotFound},
    events::SERVICE_MAX,
    input,
};
use crate::store::{self, entity::Permission};

/// Keys in a `field` path, and characters in the whole path.
const FIELD_KEYS_MAX: usize = 8;
const FIELD_CHARS_MAX: usize = 256;

/// What one bucket's events said about the field. `start` is inclusive,
/// `end` exclusive. A bucket without a value has `count` 0 and the rest null.
pub struct TelemetryBucket(store::TelemetryBucket);

/// What one bucket's events said about the field. `start` is inclusive,
/// `end` exclusive. A bucket without a value has `count` 0 and the rest null.
#[Object]
impl TelemetryBucket {
    /// Where the bucket begins (inclusive): `from` plus a whole number of
    /// `bucketSeconds`.
    async fn start(&self) -> Timestamp {
        self.0.start.into()
    }
    /// `start` plus `bucketSeconds`, or `to` for a shorter last bucket.
    async fn end(&self) -> Timestamp {
        self.0.end.into()
    }
    /// Events in the bucket whose field holds a number or a boolean (at
    /// most 2 147 483 647, GraphQL's largest Int).
    async fn count(&self) -> i32 {
        i32::try_from(self.0.count).unwrap_or(i32::MAX)
    }
    /// The smallest value; null for an empty bucket.
    async fn min(&self) -> Option<f64> {
        self.0.min
    }
    /// The largest value; null for an empty bucket.
    async fn max(&self) -> Option<f64> {
        self.0.max
    }
    /// `sum / count`; null when the sum is (values adding up past the
    /// largest double).
    async fn avg(&self) -> Option<f64> {
        self.0.sum.map(|sum| sum / self.0.count as f64)
    }
    /// Null for an empty bucket, and when the values add up past the
    /// largest double.
    async fn sum(&self) -> Option<f64> {
        self.0.sum
    }
    /// The value of the bucket's earliest event.
    async fn first(&self) -> Option<f64> {
        self.0.first
    }
    /// The value of the bucket's latest event.
    async fn last(&self) -> Option<f64> {
        self.0.last
    }
}

#[derive(Default)]
pub struct TelemetryQuery;

// The arguments are the contract's (DESIGN.md), one GraphQL argument each.
#[allow(clippy::too_many_arguments)]
#[Object]
impl TelemetryQuery {
    /// One number from a device's events of one `service`, summarised per
    /// bucket of `bucketSeconds` from `from` (inclusive) to `to` (exclusive):
    /// every bucket, oldest first, empty ones included. `field` is the key of
    /// the number in the payload, a dotted path of keys for a nested one
    /// (`"env.temperature"`), or `""` when the payload is the number itself.
    /// Numbers count as they are, booleans as 1 and 0; events where the field
    /// is missing or holds anything else are skipped. An event counts at
    /// `occurredAt` when the device sent one, else at `receivedAt`. At most
    /// `limits.telemetry_buckets` (10 000) buckets per query.
    ///
    /// With `asOf`, only events with ids up to it count: a chart that takes
    /// the id of the newest event first (`events(first: 1)`), asks for
    /// `telemetry(asOf: thatId)` and subscribes to `events(after: thatId)`
    /// extends its buckets live with no event missing or counted twice at
    /// the seam (event ids are committed in order).
    async fn telemetry(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device whose events count.")] device_id: ID,
        #[graphql(desc = "The events' service, e.g. `temperature`.")] service: String,
        #[graphql(
            desc = "Where the number is in the payload: `\"\"`, `\"celsius\"` or `\"env.temperature\"`."
        )]
        field: String,
        #[graphql(desc = "Where the first bucket starts (inclusive).")] from: Timestamp,
        #[graphql(desc = "Where the last bucket ends (exclusive).")] to: Timestamp,
        #[graphql(desc = "Each bucket's width in seconds (1 or more).")] bucket_seconds: i32,
        #[graphql(desc = "Only events with ids up to this one count.")] as_of: Option<ID>,
    ) -> ApiResult<Vec<TelemetryBucket>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        input::text("service", &service, SERVICE_MAX)?;
        if bucket_seconds < 1 {
            return Err(ApiError::bad_input("bucketSeconds must be at least 1"));
        }
        if to <= from {
            return Err(ApiError::bad_input("to must be later than from"));
        }
        let query = store::TelemetryQuery {
            device_id: input::uuid_id("device", &device_id)?,
            service,
            field: field_path(&field)?,
            from: from.into(),
            to: to.into(),
            bucket_seconds: i64::from(bucket_seconds),
            as_of: as_of.map(|id| input::event_position(&id)).transpose()?,
        };
        let max = app.config.limits.telemetry_buckets;
        let buckets = query.bucket_count();
        if buckets > max as u64 {
            return Err(ApiError::bad_input(format!(
                "from..to in buckets of {bucket_seconds} s makes {buckets} buckets; \
                 the limit is {max}: ask for longer buckets or a shorter span"
            )));
        }
        let found = app
            .store
            .telemetry(caller.scope(), &query)
            .await
            .or_not_found("device")?;
        Ok(found.into_iter().map(TelemetryBucket).collect())
    }
}

/// `"a.b"` → `["a", "b"]`; `""` → the payload itself. Keys may hold any
/// printable character except `.` (the separator), `"` and `\`.
pub(super) fn field_path(field: &str) -> ApiResult<Vec<String>> {
    if field.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: &str| ApiError::bad_input(format!("field: {why}"));
    if field.chars().count() > FIELD_CHARS_MAX {
        return Err(bad(&format!("at most {FIELD_CHARS_MAX} characters")));
    }
    let keys: Vec<String> = field.split('.').map(str::to_owned).collect();
    if keys.len() > FIELD_KEYS_MAX {
        return Err(bad(&format!("at most {FIELD_KEYS_MAX} keys")));
    }
    if keys.iter().any(String::is_empty) {
        return Err(bad("an empty key (two dots, or a dot at an end)"));
    }
    if field
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(bad("no quotes, backslashes or control characters"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::field_path;

    #[test]
    fn a_field_is_a_dotted_path_of_keys() {
        assert_eq!(field_path("").unwrap(), Vec::<String>::new());
        assert_eq!(field_path("temperature").unwrap(), ["temperature"]);
        assert_eq!(field_path("env.t-1 °C").unwrap(), ["env", "t-1 °C"]);
        for bad in [".", "a.", ".a", "a..b", "a\"b", "a\\b", "a\nb"] {
            assert!(field_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(field_path("a.".repeat(8).trim_end_matches('.')).is_ok());
        assert!(field_path("a.".repeat(9).trim_end_matches('.')).is_err());
        assert!(field_path(&"x".repeat(257)).is_err());
    }
}
