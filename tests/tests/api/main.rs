//! End-to-end tests of the GraphQL API over HTTP, against the real server on
//! a loopback port, on SQLite and on PostgreSQL. One binary with a module per
//! area, so the test suite links once.

mod auth;
mod cluster;
mod commands;
mod compiled_publishing;
mod connector;
mod connector_faults;
mod devices;
mod events;
mod gateway_processes;
mod gateways;
mod hostile;
mod http;
mod live_plans;
mod metrics;
mod operations;
mod persisted;
mod readme;
mod realtime;
mod revocation;
mod session;
mod shutdown;
mod telemetry;
mod websocket;
