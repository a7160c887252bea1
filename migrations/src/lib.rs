//! Ferrite's database schema, as a sequence of sea-orm-migration steps.
//!
//! This crate is the only place the schema changes. Each migration creates or
//! alters one thing, is named `mYYYYMMDD_NNNNNN_<what>`, and has a `down`.
//! The same migrations run on SQLite and PostgreSQL: only sea-query's portable
//! column types are used, so no dialect leaks in.
//!
//! # Layout
//! - [`Migrator`] lists the migrations in order; `ferrite serve` runs pending
//!   ones at start, `ferrite migrate` runs them alone.
//! - one module per change, in order: users, refresh tokens, API keys,
//!   devices, events, commands, device sessions, nodes, settings, device
//!   tombstones, the events index behind `telemetry`, device status
//!   history.
//!
//! One index is an expression, which sea-query cannot write for SQLite; its
//! migration spells out the one statement, identical on both backends.

pub use sea_orm_migration::prelude::*;

/// `users`: people who log in.
mod m20261122_000001_create_users;
/// `refresh_tokens`: hashed, rotating refresh tokens of login sessions.
mod m20261122_000002_create_refresh_tokens;
/// `api_keys`: hashed secrets for programs and gateways.
mod m20261122_000003_create_api_keys;
/// `devices`: things that gateways register, unique per owner and external id.
mod m20261122_000004_create_devices;
/// `events`: what devices report; the integer id is the cursor.
mod m20261122_000005_create_events;
/// `commands`: requests sent to devices and their results.
mod m20261122_000006_create_commands;
/// `devices.session_id`, `devices.node_id`: which connector session hosts a device.
mod m20261122_000007_add_device_sessions;
/// `nodes`: servers sharing the database, with heartbeats.
mod m20261122_000008_create_nodes;
/// `settings`: facts the server keeps about itself (what retention pruned).
mod m20261122_000009_create_settings;
/// `device_tombstones`: deleted devices, for subscribers that fell behind.
mod m20261122_000010_create_device_tombstones;
/// `events`: an index by device, service and time, for `telemetry`.
mod m20261202_000011_add_events_telemetry_index;
/// `device_status_changes`: each device's ONLINE/OFFLINE/DISCONNECTED history.
mod m20261203_000012_create_device_status_changes;
/// `users.session_epoch`, `users.disabled_at`, `revocations`: revocation that
/// reaches open sockets on every node.
mod m20261203_000013_add_revocations;

/// Every migration of the schema, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_refresh_tokens::Migration),
            Box::new(m20261122_000003_create_api_keys::Migration),
            Box::new(m20261122_000004_create_devices::Migration),
            Box::new(m20261122_000005_create_events::Migration),
            Box::new(m20261122_000006_create_commands::Migration),
            Box::new(m20261122_000007_add_device_sessions::Migration),
            Box::new(m20261122_000008_create_nodes::Migration),
            Box::new(m20261122_000009_create_settings::Migration),
            Box::new(m20261122_000010_create_device_tombstones::Migration),
            Box::new(m20261202_000011_add_events_telemetry_index::Migration),
            Box::new(m20261203_000012_create_device_status_changes::Migration),
            Box::new(m20261203_000013_add_revocations::Migration),
        ]
    }
}
