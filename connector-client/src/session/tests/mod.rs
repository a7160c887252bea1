//! The session's state machine, driven without a socket: each test plays
//! the server (JSON frames in), the clock (`advance`) and the outbox (rows
//! in), and checks the frames and actions that come out. This covers what
//! only the end-to-end tests and their fake server reached before: a
//! silent server, garbage, refused events, passing failures, slow readers,
//! a device deleted behind the gateway's back, a lost connection.
//!
//! This file is the harness ([`Gateway`]); the tests are grouped by what
//! they exercise, as the state machine is.

/// Connecting, keep-alive, garbage, limits, losing the connection.
mod connection;
/// Device sync.
mod devices;
/// Publishing the outbox.
mod publishing;
/// Command and event streams.
mod streams;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::state::{
    Action, End, Input, MAX_IN_FLIGHT, PUBLISH_RETRY_MAX, PUBLISH_RETRY_MIN, Respond, Resume, Room,
    Settings, State, Step, next_step,
};
use crate::{
    Command, Device, DeviceSpec, Error, EventFilter, ReceivedEvent,
    connector::{Registry, Request},
    outbox::{DeviceEntry, DeviceState, OutboxRow, PreparedEvent},
};

const KEEPALIVE: Duration = Duration::from_secs(15);
const SILENCE: Duration = Duration::from_secs(45);
const BATCH: usize = 10;

/// A gateway's session with the world played by the test.
struct Gateway {
    state: State,
    devices: Registry,
    now: Instant,
    /// Frames sent since the last `take_sent`, decoded.
    sent: Vec<Value>,
    /// The other actions since the last `take_effects`, in order.
    effects: Vec<Action>,
}

impl Gateway {
    fn new(entries: &[DeviceEntry]) -> Self {
        let settings = Settings {
            batch_events: BATCH,
            batch_bytes: 64 * 1024,
            keepalive_interval: KEEPALIVE,
            keepalive_timeout: SILENCE,
        };
        let now = Instant::now();
        let mut devices = Registry::default();
        for entry in entries {
            devices.replace(entry.clone());
        }
        Gateway {
            state: State::new(settings, entries, now),
            devices,
            now,
            sent: Vec::new(),
            effects: Vec::new(),
        }
    }

    fn input(&mut self, input: Input<'_>) -> Result<(), End> {
        let result = self.state.handle(self.now, input, &mut self.devices);
        for action in self.state.take_actions() {
            match action {
                Action::Send(text) => self.sent.push(serde_json::from_str(&text).unwrap()),
                other => self.effects.push(other),
            }
        }
        result
    }

    fn ok(&mut self, input: Input<'_>) {
        if let Err(end) = self.input(input) {
            panic!("the connection ended: {end:?}");
        }
    }

    fn connect(&mut self) {
        self.ok(Input::Connected);
    }

    fn server(&mut self, message: Value) -> Result<(), End> {
        self.input(Input::Text(&message.to_string()))
    }

    fn request(&mut self, request: Request) {
        self.ok(Input::Request(request));
    }

    /// Moves the clock and tells the session.
    fn advance(&mut self, by: Duration) -> Result<(), End> {
        self.now += by;
        self.input(Input::Tick)
    }

    fn take_sent(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.sent)
    }

    fn take_effects(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.effects)
    }

    /// The id of the operation started last whose query contains `needle`.
    fn op(&self, needle: &str) -> String {
        self.sent
            .iter()
            .rev()
            .find(|frame| frame["type"] == "subscribe" && query(frame).contains(needle))
            .unwrap_or_else(|| panic!("no {needle} among {:#?}", self.sent))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Answers operation `id` with `data`.
    fn answer(&mut self, id: &str, data: Value) -> Result<(), End> {
        self.server(json!({"type": "next", "id": id, "payload": {"data": data}}))?;
        self.server(json!({"type": "complete", "id": id}))
    }

    /// Answers operation `id` with one error carrying `code`.
    fn refuse(&mut self, id: &str, code: &str) -> Result<(), End> {
        let error = json!({"message": format!("refused: {code}"), "extensions": {"code": code}});
        self.server(json!({"type": "next", "id": id, "payload": {"errors": [error]}}))?;
        self.server(json!({"type": "complete", "id": id}))
    }

    /// Whether the session asked to read the outbox; with how many events.
    fn outbox_read(&mut self) -> Option<usize> {
        let at = self
            .effects
            .iter()
            .position(|action| matches!(action, Action::ReadOutbox { .. }))?;
        match self.effects.remove(at) {
            Action::ReadOutbox { max_events, .. } => Some(max_events),
            _ => unreachable!(),
        }
    }

    /// Registers `external_id` as the platform would, answering the
    /// session's `registerDevice`.
    fn confirm_registration(&mut self, external_id: &str, server_id: &str) {
        let id = self.op("registerDevice");
        let device = device(server_id, external_id);
        self.answer(&id, json!({"registerDevice": device})).unwrap();
    }

    fn sync(&mut self, external_id: &str) -> oneshot::Receiver<Result<Option<Device>, Error>> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::SyncDevice {
            external_id: external_id.into(),
            reply,
        });
        answer
    }
}

fn query(frame: &Value) -> &str {
    frame["payload"]["query"].as_str().unwrap_or_default()
}

fn device(server_id: &str, external_id: &str) -> Value {
    json!({
        "id": server_id, "externalId": external_id, "name": external_id, "type": "generic",
        "location": null, "attributes": {}, "status": "ONLINE", "connectorId": "gw",
        "lastSeenAt": null,
    })
}

fn entry(external_id: &str, server_id: Option<&str>) -> DeviceEntry {
    DeviceEntry {
        spec: DeviceSpec::new(external_id),
        state: DeviceState::Active,
        server_id: server_id.map(str::to_owned),
        dirty: server_id.is_none(),
    }
}

fn row(seq: i64, device: &str) -> OutboxRow {
    OutboxRow {
        seq,
        event: PreparedEvent {
            device: device.into(),
            service: "temperature".into(),
            payload: format!("{seq}"),
            occurred_at: None,
            idempotency_key: format!("key-{seq}"),
        },
    }
}

fn acks(seqs: impl IntoIterator<Item = i64>) -> Value {
    let stored: Vec<Value> = seqs
        .into_iter()
        .map(|seq| {
            json!({"id": (1000 + seq).to_string(), "receivedAt": "2026-12-03T10:00:00Z",
                   "idempotencyKey": format!("key-{seq}")})
        })
        .collect();
    json!({"publishEvents": stored})
}

/// A gateway connected with one registered device `d` (platform id `p`),
/// the outbox read pending.
fn connected_with_device() -> Gateway {
    let mut gateway = Gateway::new(&[entry("d", Some("p"))]);
    gateway.connect();
    gateway.confirm_registration("d", "p");
    gateway.take_sent();
    gateway.take_effects();
    gateway
}

/// Publishes `rows` (answering the pending outbox read) and returns the
/// `publishEvents` operation's id and the events it carried.
fn publish(gateway: &mut Gateway, rows: Vec<OutboxRow>) -> (String, Vec<Value>) {
    gateway.ok(Input::OutboxRows(Ok(rows)));
    let id = gateway.op("publishEvents");
    let frame = gateway.take_sent().pop().unwrap();
    let events = frame["payload"]["variables"]["events"]
        .as_array()
        .unwrap()
        .clone();
    (id, events)
}

impl Gateway {
    fn disconnect_and_reconnect(&mut self) {
        self.state.disconnected();
        self.take_sent();
        self.take_effects();
        self.connect();
    }
}
