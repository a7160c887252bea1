//! The one error type of the library.

use std::time::Duration;

/// What went wrong with a call. `Clone`, so one failure can answer every
/// caller waiting on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An option or configuration value is invalid (checked when set).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// Refused by the library before anything was stored or sent: an
    /// oversized payload, an unknown device, an empty service name…
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The server answered with a GraphQL error. `code` is its
    /// `extensions.code` (`NOT_FOUND`, `BAD_USER_INPUT`, `FORBIDDEN`, …).
    #[error("the server refused ({code}): {message}")]
    Server { code: String, message: String },
    /// The server rejected a queued event for good (its input was invalid,
    /// or its device is gone); the event was removed from the outbox.
    #[error("event rejected by the server ({code}): {message}")]
    Rejected { code: String, message: String },
    /// No answer within the call's timeout. The request may still take
    /// effect: device changes are retried on every reconnect.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The event is stored in the outbox but the server has not confirmed
    /// it within the timeout. It is not lost: it is sent (again) until the
    /// server acknowledges it, and stored there exactly once.
    #[error("event queued but not acknowledged within {0:?}; it stays in the outbox")]
    NotAcknowledged(Duration),
    /// The outbox holds `outbox_max_events` events and the policy is
    /// `reject`: this event was not accepted.
    #[error("the outbox is full ({0} events waiting); event not accepted")]
    OutboxFull(u64),
    /// The outbox was full and the policy is `drop_oldest`: this event, the
    /// oldest waiting, was dropped to make room.
    #[error("event dropped from the full outbox (policy drop_oldest)")]
    Dropped,
    /// The server refused the credentials (close code 4403) or the key may
    /// not do what the gateway needs. The session stops: retrying would not
    /// help until the configuration changes.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The local outbox database failed.
    #[error("outbox: {0}")]
    Outbox(String),
    /// The command stream was already taken by another caller.
    #[error("the command stream is already taken")]
    CommandsTaken,
    /// The connector was shut down (or its session ended).
    #[error("the connector has stopped")]
    Stopped,
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::Outbox(error.to_string())
    }
}
