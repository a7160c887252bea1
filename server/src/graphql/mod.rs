//! The GraphQL API: query and mutation roots, their types, and the rules
//! every resolver follows.
//!
//! Resolvers are thin: read the caller from the context (which checks its
//! permission), validate input, call one function of `service` (for an
//! action others must hear of), `store` (for a read) or `auth`, and map the
//! result. No query is built here, and mutations publish nothing on the
//! bus themselves (the `commands` delivery stream, which marks each command
//! DELIVERED as it hands it over, still does).
//!
//! # Layout
//! - `admission`: size, nesting and cost limits, before any parsing.
//! - `auth`, `devices`, `events`, `telemetry`, `commands`: one area each,
//!   with its types; merged into [`Query`] and [`Mutation`].
//! - `connection`: the page type of every list.
//! - `context`: the caller and state a resolver reads.
//! - `error`: `extensions.code` for every error.
//! - `input`: checks on input, cursors and pages.
//! - `introspection`: the schema's own description, as the SDL has it.
//! - `live`: compiled subscriptions for the WebSocket transport, and the
//!   compiled `publishEvent(s)` both transports run.
//! - `persisted`: Apollo's automatic persisted queries, bounded in bytes.
//! - `scalars`: `DateTime`.
//! - `totals`: `totalCount`, computed when asked for.

/// What a document must satisfy before it is parsed, validated or run.
pub mod admission;
/// Who am I, login sessions, users and API keys.
mod auth;
/// Commands sent to devices and their answers.
mod commands;
/// Relay connections: pages of a list.
mod connection;
/// What a resolver reads from its context.
pub mod context;
/// Devices and their registration.
mod devices;
/// Parsed documents kept by their text.
pub mod documents;
/// Error codes.
pub mod error;
/// Events: history and publishing.
mod events;
/// Validation of client input, cursors and pages.
mod input;
/// Introspection as `schema.graphql` has it.
mod introspection;
/// Subscriptions delivered without per-item execution.
pub mod live;
/// Automatic persisted queries: a hash instead of the query text.
pub mod persisted;
/// `DateTime`, described for clients.
pub mod scalars;
/// Events summarised per time bucket.
mod telemetry;
/// `totalCount` of connections.
mod totals;

use async_graphql::{MergedObject, MergedSubscription, SDLExportOptions, Schema};

pub use context::{RequestContext, SocketLease};

use crate::{AppState, config::Limits};

/// What a client can read: the caller, users and keys, devices, events,
/// telemetry and commands. Every list holds only what the caller may see.
#[derive(MergedObject, Default)]
pub struct Query(
    auth::AuthQuery,
    devices::DeviceQuery,
    events::EventQuery,
    telemetry::TelemetryQuery,
    commands::CommandQuery,
);

/// What a client can change. Each mutation needs a credential with WRITE
/// (devices, events, commands) or ADMIN (keys, users) permission.
#[derive(MergedObject, Default)]
pub struct Mutation(
    auth::AuthMutation,
    devices::DeviceMutation,
    events::EventMutation,
    commands::CommandMutation,
);

/// Live updates over the WebSocket at `/graphql` (graphql-transport-ws,
/// or the legacy graphql-ws protocol). Each one delivers only what the
/// caller may see.
#[derive(MergedSubscription, Default)]
pub struct Subscription(
    events::EventSubscription,
    devices::DeviceSubscription,
    commands::CommandSubscription,
);

pub type FerriteSchema = Schema<Query, Mutation, Subscription>;

fn builder(limits: &Limits) -> async_graphql::SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(limits.query_depth)
    // The cost limit is admission's, which multiplies by page sizes and
    // runs before validation (async-graphql's own counts neither).
    .extension(admission::Admission(std::sync::Arc::new(limits.clone())))
    .extension(error::ErrorCodes)
    .extension(introspection::NoSchemaDescription)
}

/// The schema, serving `state`.
pub fn schema(state: AppState) -> FerriteSchema {
    let limits = state.config.limits.clone();
    builder(&limits).data(state).finish()
}

/// The schema in SDL, as `schema.graphql` holds it.
pub fn sdl() -> String {
    builder(&Limits::default())
        .finish()
        .sdl_with_options(SDLExportOptions::new().include_specified_by())
}

/// The checks `publishEvent` applies to a payload (for the fuzzer).
#[doc(hidden)]
pub fn check_json(field: &str, value: &serde_json::Value, limits: &Limits) -> Result<(), String> {
    input::json(field, value, limits.payload_bytes, limits.json_depth)
        .map_err(|e| e.message().to_owned())
}

/// Parses a `telemetry` field path (for the fuzzer).
#[doc(hidden)]
pub fn check_telemetry_field(field: &str) {
    let _ = telemetry::field_path(field);
}
