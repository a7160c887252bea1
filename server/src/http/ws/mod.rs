//! GraphQL over WebSocket on `/graphql`: the `graphql-transport-ws`
//! protocol, and the legacy `graphql-ws` (subscriptions-transport-ws) one.
//!
//! Written here rather than taken from async-graphql because its transport
//! closes with codes the protocol does not define (a rejected
//! `connection_init` gets 1002 instead of 4403, which clients then retry
//! forever) and has no init timeout.
//!
//! Layout: `protocol` holds the dialects' messages, the subprotocol choice
//! and the close codes, without I/O (unit-tested); `connection` is one
//! socket's task; this module accepts the upgrade.
//!
//! One task per socket owns both halves and every running operation (a
//! `StreamMap` keyed by operation id), so there is no lock and no unbounded
//! queue: when a client stops reading, the task stops polling its
//! subscriptions, which then lag on the bus and later catch up from the
//! store.
//!
//! Close codes: `protocol::code` lists them (graphql-transport-ws's 44xx
//! and RFC 6455's). Keep-alive: the server pings every
//! `websocket.keepalive_seconds` (clients answer pings automatically) and
//! closes with 1001 after `websocket.idle_timeout_seconds` of silence; the
//! legacy protocol also gets `ka` messages.

use std::net::SocketAddr;

use axum::{
    extract::ws::WebSocketUpgrade,
    http::{HeaderMap, HeaderValue},
    response::Response as HttpResponse,
};

use super::HttpState;
use crate::config::Limits;

/// One socket's task.
mod connection;
/// Expiry, renewal and revocation of a socket's credential.
mod credential;
/// Messages, subprotocols and close codes.
mod protocol;

use connection::Connection;
use protocol::{Protocol, preferred_protocol};

/// Accepts the upgrade with small buffers and a bounded message size.
pub(super) fn upgrade(
    ws: WebSocketUpgrade,
    state: HttpState,
    client: SocketAddr,
    headers: &HeaderMap,
) -> HttpResponse {
    let settings = &state.app.config.websocket;
    let mut ws = ws;
    if let Some(chosen) = preferred_protocol(headers) {
        ws.set_selected_protocol(HeaderValue::from_static(chosen));
    }
    let ws = ws
        .read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(settings.write_buffer_bytes)
        .max_message_size(settings.max_message_bytes)
        .max_frame_size(settings.max_message_bytes);
    let protocol = Protocol::of(ws.selected_protocol().and_then(|p| p.to_str().ok()));
    ws.on_upgrade(move |socket| async move {
        let _open = state.open_sockets.clone();
        let connection = Connection {
            state,
            client,
            protocol,
            session: None,
            connector_session: None,
            failed: Vec::new(),
        };
        // Boxed, so the task's own cell stays small: a heap profile of idle
        // sockets showed the unboxed task at ~9 KiB each.
        Box::pin(connection.run(socket)).await
    })
}

/// Decodes a client's text message as a socket does (for the fuzzer).
pub(super) fn decode(text: &str, limits: &Limits) -> Option<async_graphql::Request> {
    match protocol::decode(text, limits).ok()? {
        protocol::ClientMessage::Subscribe { payload, .. }
        | protocol::ClientMessage::Start { payload, .. } => Some(payload),
        _ => None,
    }
}
