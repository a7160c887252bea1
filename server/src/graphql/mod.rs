//! The GraphQL API: query and mutation roots, their types, and the rules
//! every resolver follows.
//!
//! Resolvers are thin: read the caller from the context (which checks its
//! permission), validate input, call one function of `store` or `auth`, and
//! map the result. No query is built here.
//!
//! # Layout
//! - `admission`: size, nesting and cost limits, before any parsing.
//! - `auth`, `devices`, `events`, `telemetry`, `commands`: one area each,
//!   with its types; merged into [`Query`] and [`Mutation`].
//! - `context`: the caller and state a resolver reads.
//! - `error`: `extensions.code` for every error.
//! - `input`: checks on input, cursors and pages.
//! - `live`: compiled subscriptions for the WebSocket transport.
//! - `totals`: `totalCount`, computed when asked for.

/// What a document must satisfy before it is parsed, validated or run.
pub mod admission;
/// Who am I, login sessions, users and API keys.
mod auth;
/// Commands sent to devices and their answers.
mod commands;
/// What a resolver reads from its context.
pub mod context;
/// Devices and their registration.
mod devices;
/// Error codes.
pub mod error;
/// Events: history and publishing.
mod events;
/// Validation of client input, cursors and pages.
mod input;
/// Subscriptions delivered without per-item execution.
pub mod live;
/// Events summarised per time bucket.
mod telemetry;
/// `totalCount` of connections.
mod totals;

use async_graphql::{MergedObject, MergedSubscription, Schema};

pub use auth::validate_username;
pub use context::{RequestContext, SocketLease};

use crate::{AppState, config::Limits};

#[derive(MergedObject, Default)]
pub struct Query(
    auth::AuthQuery,
    devices::DeviceQuery,
    events::EventQuery,
    telemetry::TelemetryQuery,
    commands::CommandQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    auth::AuthMutation,
    devices::DeviceMutation,
    events::EventMutation,
    commands::CommandMutation,
);

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
}

/// The schema, serving `state`.
pub fn schema(state: AppState) -> FerriteSchema {
    let limits = state.config.limits.clone();
    builder(&limits).data(state).finish()
}

/// The schema in SDL, as `schema.graphql` holds it.
pub fn sdl() -> String {
    builder(&Limits::default()).finish().sdl()
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
