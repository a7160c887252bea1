//! Ferrite's own scalars, described for the clients that read them.
//!
//! async-graphql's chrono scalar would describe `DateTime` as
//! "Implement the DateTime<Utc> scalar": a Rust type a client never sees.
//! The feature is off in the workspace, so a `chrono::DateTime` in a
//! resolver's signature does not compile and every timestamp goes through
//! [`Timestamp`].

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{DateTime, Utc};

/// A point in time, in UTC on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

/// A point in time as an RFC 3339 string, such as
/// `"2026-12-03T18:05:19.123+00:00"`. Answers are in UTC with up to
/// nanosecond precision; input may carry any offset (`Z` included) and is
/// compared as the instant it names.
#[Scalar(
    name = "DateTime",
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for Timestamp {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => Ok(Timestamp(text.parse::<DateTime<Utc>>()?)),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_rfc3339())
    }
}

impl Timestamp {
    /// The text [`ScalarType::to_value`] answers with; the compiled
    /// subscriptions write the same.
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339()
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Timestamp(at)
    }
}

impl From<Timestamp> for DateTime<Utc> {
    fn from(at: Timestamp) -> Self {
        at.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_in_utc_out() {
        let parsed = Timestamp::parse(Value::String("2026-12-03T20:05:19.5+02:00".into())).unwrap();
        assert_eq!(
            parsed.to_value(),
            Value::String("2026-12-03T18:05:19.500+00:00".into())
        );
        assert!(Timestamp::parse(Value::String("yesterday".into())).is_err());
        assert!(Timestamp::parse(Value::Number(1.into())).is_err());
    }
}
