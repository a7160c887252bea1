//! Checks on client input that the type system cannot express: lengths,
//! sizes, id formats, page bounds and cursors.

use async_graphql::ID;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    admission::shown,
    error::{ApiError, ApiResult},
};
use crate::{config::Limits, store::PageArgs};

/// A required text of 1 to `max` characters without control characters.
pub fn text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(ApiError::bad_input(format!(
            "{field} must be 1 to {max} characters long"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_input(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> ApiResult<()> {
    value.map_or(Ok(()), |value| text(field, value, max))
}

/// A JSON value no deeper than `max_depth` (checked first, without
/// recursion), no larger than `max` bytes once serialised, and storable on
/// both backends: PostgreSQL's `jsonb` refuses the character U+0000 in
/// strings and keys, so it is refused everywhere, before anything is stored.
///
/// The depth limit keeps every later step (serialising, storing, reading
/// back, rendering for subscribers) far from serde_json's own recursion
/// limit of 128, whose error used to fail the whole ingest batch.
pub fn json(field: &str, value: &Json, max: usize, max_depth: usize) -> ApiResult<()> {
    let depth = json_depth(value, max_depth);
    if depth > max_depth {
        return Err(ApiError::bad_input(format!(
            "{field} is nested more than {max_depth} levels deep, the limit"
        )));
    }
    let size = serde_json::to_vec(value)
        .map_err(|_| ApiError::bad_input(format!("{field} is not valid JSON")))?
        .len();
    if size > max {
        return Err(ApiError::bad_input(format!(
            "{field} is {size} bytes; the limit is {max} bytes"
        )));
    }
    if contains_nul(value) {
        return Err(ApiError::bad_input(format!(
            "{field} must not contain the character U+0000 (\\u0000)"
        )));
    }
    Ok(())
}

/// How many arrays and objects `value` nests (a scalar is 0, `[1]` is 1,
/// `{"a": [1]}` is 2), counted without recursion and given up past `stop`.
pub fn json_depth(value: &Json, stop: usize) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((value, around)) = pending.pop() {
        let depth = around + 1;
        match value {
            Json::Array(items) => pending.extend(items.iter().map(|item| (item, depth))),
            Json::Object(map) => pending.extend(map.values().map(|item| (item, depth))),
            Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_) => continue,
        }
        deepest = deepest.max(depth);
        if deepest > stop {
            break;
        }
    }
    deepest
}

fn contains_nul(value: &Json) -> bool {
    match value {
        Json::String(text) => text.contains('\0'),
        Json::Array(items) => items.iter().any(contains_nul),
        Json::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        Json::Null | Json::Bool(_) | Json::Number(_) => false,
    }
}

/// A filter list of at most `max` values.
pub fn filter_list<T>(field: &str, values: &Option<Vec<T>>, max: usize) -> ApiResult<()> {
    match values {
        Some(values) if values.len() > max => Err(ApiError::bad_input(format!(
            "filter.{field} has {} values; the limit is {max}",
            values.len()
        ))),
        _ => Ok(()),
    }
}

pub fn uuid_id(what: &str, id: &ID) -> ApiResult<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| {
        ApiError::bad_input(format!("`{}` is not a valid {what} id", shown(id.as_str())))
    })
}

pub fn uuid_ids(what: &str, ids: &Option<Vec<ID>>) -> ApiResult<Option<Vec<Uuid>>> {
    ids.as_ref()
        .map(|ids| ids.iter().map(|id| uuid_id(what, id)).collect())
        .transpose()
}

pub fn event_id(id: &ID) -> ApiResult<i64> {
    id.as_str()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_input(format!("`{}` is not a valid event id", shown(id.as_str())))
        })
}

/// An event id used as a position in the stream (`after`, `asOf`): `0`
/// stands before every event.
pub fn event_position(id: &ID) -> ApiResult<i64> {
    id.as_str()
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            ApiError::bad_input(format!(
                "`{}` is not a valid event id (or 0)",
                shown(id.as_str())
            ))
        })
}

/// What kind of list a cursor belongs to; a cursor of one list is refused by
/// another.
#[derive(Debug, Clone, Copy)]
pub enum CursorKind {
    Device,
    Event,
    Command,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Device => "device",
            CursorKind::Event => "event",
            CursorKind::Command => "command",
        }
    }
}

/// Cursors are opaque to clients: base64url of `<kind>:<key>`.
pub fn encode_cursor(kind: CursorKind, key: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{key}", kind.tag()))
}

fn decode_cursor<K: std::str::FromStr>(kind: CursorKind, cursor: &str) -> ApiResult<K> {
    let invalid = || {
        ApiError::bad_input(format!(
            "`{}` is not a valid cursor for this list",
            shown(cursor)
        ))
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let key = raw
        .strip_prefix(kind.tag())
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    key.parse().map_err(|_| invalid())
}

/// A page size (`first`, `last`) from `least` to `limits.page_size`.
pub fn page_size(name: &str, value: i32, least: u64, limits: &Limits) -> ApiResult<u64> {
    u64::try_from(value)
        .ok()
        .filter(|n| (least..=limits.page_size).contains(n))
        .ok_or_else(|| {
            ApiError::bad_input(format!(
                "`{name}` must be between {least} and {}",
                limits.page_size
            ))
        })
}

/// Relay arguments, checked against the limits and decoded.
pub fn page_args<K: std::str::FromStr>(
    kind: CursorKind,
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
    limits: &Limits,
) -> ApiResult<PageArgs<K>> {
    if first.is_some() && last.is_some() {
        return Err(ApiError::bad_input(
            "pass either `first` (with `after`) or `last` (with `before`), not both",
        ));
    }
    let size =
        |name: &str, value: Option<i32>| value.map(|n| page_size(name, n, 0, limits)).transpose();
    Ok(PageArgs {
        first: size("first", first)?,
        after: after.map(|c| decode_cursor(kind, &c)).transpose()?,
        last: size("last", last)?,
        before: before.map(|c| decode_cursor(kind, &c)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_only_in_its_own_list() {
        let cursor = encode_cursor(CursorKind::Event, 42);
        assert_eq!(
            decode_cursor::<i64>(CursorKind::Event, &cursor).unwrap(),
            42
        );
        assert!(decode_cursor::<i64>(CursorKind::Command, &cursor).is_err());
        assert!(decode_cursor::<i64>(CursorKind::Event, "garbage!").is_err());
    }

    #[test]
    fn json_deeper_than_the_limit_is_bad_input() {
        let mut deep = serde_json::json!(1);
        for _ in 0..64 {
            deep = serde_json::json!([deep]);
        }
        assert_eq!(json_depth(&deep, 1000), 64);
        assert!(json("payload", &deep, usize::MAX, 64).is_ok());
        let err = json("payload", &deep, usize::MAX, 63).unwrap_err();
        assert_eq!(err.code(), "BAD_USER_INPUT");
        assert_eq!(json_depth(&serde_json::json!({"a": [1]}), 10), 2);
        assert_eq!(json_depth(&serde_json::json!("text"), 10), 0);
    }

    #[test]
    fn an_over_long_id_is_not_echoed_whole() {
        let id = ID::from("x".repeat(100_000));
        let err = uuid_id("device", &id).unwrap_err();
        assert!(err.message().len() < 200, "{}", err.message());
    }

    #[test]
    fn text_limits_count_characters() {
        assert!(text("name", "ß".repeat(10).as_str(), 10).is_ok());
        assert!(text("name", "", 10).is_err());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert!(text("name", "abcdefghijk", 10).is_err());
    }
}
