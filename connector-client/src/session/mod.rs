//! The session task: owns the WebSocket, reconnects with backoff, and makes
//! the platform match what the gateway asked for.
//!
//! On every connection it (1) authenticates in `connection_init`, (2)
//! re-registers the devices it manages (and replays disconnects/deletes the
//! platform has not confirmed), (3) re-subscribes to commands and to every
//! event subscription from the last event delivered, (4) re-sends command
//! answers that were not confirmed, and (5) drains the outbox oldest first,
//! one `publishEvents` batch in flight at a time. An event leaves the outbox
//! only when the server has answered it (committed, or rejected for good).
//!
//! Nothing here blocks on a caller: answers go through `oneshot`s, streams
//! through bounded channels. A stream whose reader falls behind is paused
//! (its subscription completed) and resumed from where it stopped once the
//! reader makes room, so a slow reader loses nothing and costs no memory.
//!
//! # Layout
//! ```text
//! io.rs     connect, TLS, backoff; the select! loop: waits, then
//!    │        state.handle(input) ──► actions ──► carried out in order
//!    ▼
//! state.rs  every decision, no I/O: operations, device sync, publishing,
//!           streams, keep-alive (unit-tested in tests.rs with virtual time)
//! ```

/// Connecting and the loop that carries out the state machine's actions.
mod io;
/// The session's decisions as a state machine without I/O.
mod state;
/// Table-driven tests of the state machine.
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::Value;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

pub(crate) use io::Session;
pub(crate) use state::Respond;
use state::{Input, Settings, State};

use crate::{
    EventFilter,
    connector::{Registry, Request},
    outbox::{DeviceEntry, DeviceState, OutboxRow},
};

/// Feeds one text frame from the server to a session with something of
/// every kind in flight (a registration, a batch of events, the command
/// and an event subscription, a command answer): what the session does
/// with a hostile message, without a socket. For the fuzzer (`fuzz/`).
pub(crate) fn fuzz_server_text(text: &str) {
    let settings = Settings {
        batch_events: 10,
        batch_bytes: 64 * 1024,
        keepalive_interval: Duration::from_secs(15),
        keepalive_timeout: Duration::from_secs(45),
    };
    let now = Instant::now();
    let active = |external_id: &str, server_id: Option<&str>| DeviceEntry {
        spec: crate::DeviceSpec::new(external_id),
        state: DeviceState::Active,
        server_id: server_id.map(str::to_owned),
        dirty: server_id.is_none(),
    };
    let known = active("known", Some("1"));
    let mut devices = Registry::default();
    devices.replace(known.clone());
    devices.replace(active("new", None));
    let mut state = State::new(settings, &[known], now);
    let (commands, _command_reader) = mpsc::channel(1);
    let (events, _event_reader) = mpsc::channel(1);
    let requests = [
        Request::Commands { sender: commands },
        Request::Events {
            filter: EventFilter::default(),
            after: Some(5),
            sender: events,
        },
        Request::Respond(Respond {
            command_id: "7".into(),
            success: true,
            result: None,
            reply: oneshot::channel().0,
        }),
        Request::SyncDevice {
            external_id: "new".into(),
            reply: oneshot::channel().0,
        },
    ];
    let _ = state.handle(now, Input::Connected, &mut devices);
    for request in requests {
        let _ = state.handle(now, Input::Request(request), &mut devices);
    }
    let row = |seq: i64| OutboxRow {
        seq,
        event: crate::outbox::PreparedEvent {
            device: "known".into(),
            service: "temperature".into(),
            payload: "21.5".into(),
            occurred_at: None,
            idempotency_key: format!("key-{seq}"),
        },
    };
    let rows = Input::OutboxRows(Ok(vec![row(1), row(2)]));
    let _ = state.handle(now, rows, &mut devices);
    // The same frame for every operation id in flight, and as it is.
    let mut frames = vec![text.to_owned()];
    if let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) {
        for id in 1..=8 {
            message.insert("id".into(), Value::String(id.to_string()));
            frames.push(Value::Object(message.clone()).to_string());
        }
    }
    for frame in &frames {
        let _ = state.handle(now, Input::Text(frame), &mut devices);
        let _ = state.take_actions();
    }
}
