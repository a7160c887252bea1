//! `ferrite-connector`: the library a gateway embeds to bring its devices
//! onto [Ferrite](https://github.com/ferrite-iot/ferrite), and the
//! `ferrite-connector` command line built on it.
//!
//! A [`Connector`] keeps one WebSocket session (`graphql-transport-ws`)
//! open to the server, authenticated with an API key and the gateway's
//! connector id. It reconnects by itself, re-registers the gateway's
//! devices and re-subscribes on every connection, and never loses an
//! event: each one is written to a local SQLite outbox before it is sent
//! and removed only once the server has committed it (the server stores an
//! idempotency key with it, so a retry is stored once).
//!
//! ```no_run
//! use ferrite_connector::{Connector, ConnectorOptions, DeviceSpec};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), ferrite_connector::Error> {
//! let connector = Connector::start(ConnectorOptions::new(
//!     "ws://127.0.0.1:8080/graphql",
//!     "frt_…",
//!     "greenhouse",
//! )?)
//! .await?;
//! connector.register(DeviceSpec::new("relay-1").device_type("relay")).await?;
//! let mut commands = connector.commands().await?;
//! while let Some(command) = commands.recv().await {
//!     // … switch the relay …
//!     connector.respond(&command.id, Ok(json!({"on": true}))).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! ```text
//! Connector (handle, Clone) ──bounded channel──► session task ──WebSocket──► server
//!        │                                          │
//!        └──────────► outbox (SQLite: events, devices) ◄┘
//! ```
//! A call checks its input, records what it changes in the outbox file,
//! and hands the session a request with a `oneshot` for the answer. The
//! session owns the socket and makes the platform match the outbox. It is
//! two halves: `session/state.rs` decides (a state machine without I/O,
//! unit-tested with virtual time) and `session/io.rs` connects, waits and
//! carries out what the state machine asks for.

/// The `ferrite-connector` command line.
pub mod cli;
/// The gateway's `connector.toml`: file, environment, validation.
pub mod config;
/// The handle: [`Connector`] and its streams.
mod connector;
/// The error type.
mod error;
/// Options with validating setters.
mod options;
/// The SQLite outbox of events and managed devices.
mod outbox;
/// graphql-transport-ws messages.
mod protocol;
/// The session task that owns the socket: a sans-I/O state machine and
/// the loop that drives it.
mod session;
/// The gateway simulator of `ferrite-connector run`.
pub mod simulate;

/// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Hands a server message to a session with every kind of operation
    /// in flight.
    pub fn server_message(text: &str) {
        crate::session::fuzz_server_text(text);
    }

    /// Parses and validates a `connector.toml`.
    pub fn config(text: &str) {
        let _ = crate::config::ConnectorConfig::from_toml_str(text);
    }
}
/// Devices, events and commands.
mod types;

pub use config::ConnectorConfig;
pub use connector::{Commands, ConnectionState, Connector, EventStream};
pub use error::Error;
pub use options::{ApiKey, ConnectorOptions, OutboxFullPolicy, defaults};
pub use types::{
    Command, Device, DeviceSpec, DeviceStatus, DeviceUpdate, Event, EventAck, EventFilter,
    ReceivedEvent,
};

/// The README's examples, compiled as doctests so they keep working.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
