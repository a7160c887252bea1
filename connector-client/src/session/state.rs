//! The session's decisions, without a socket, a file or a clock: a state
//! machine in the manner of rumqttc's `state.rs`.
//!
//! [`State::handle`] takes one [`Input`] (a connection opened, a text
//! frame from the server, a caller's request, rows read from the outbox, a
//! tick of the clock, passed in as `now`) and the in-memory device
//! [`Registry`], changes the state, and queues [`Action`]s for the I/O
//! loop (`io.rs`) to carry out in order: frames to send, outbox rows to
//! read or remove, devices to save, callers to answer. It never awaits, so
//! every decision is unit-tested with plain values and virtual time
//! (`tests.rs`).
//!
//! What lives here:
//! - the operation table of the connection (ids, at most
//!   [`MAX_IN_FLIGHT`] at once, each answer routed to what it was for);
//! - the device-sync queue: one step at a time per device until the
//!   platform matches its entry ([`next_step`]);
//! - publishing: one `publishEvents` batch in flight, a batch the server
//!   refuses sent again one event at a time to find the bad one, a passing
//!   failure retried after a growing pause;
//! - command and event streams: delivered without blocking, paused while
//!   their reader is behind and resumed where they stopped;
//! - keep-alive: a ping every interval, the connection given up after a
//!   silence.
//!
//! Streams and callers' answers are in-memory channels: delivering to a
//! stream happens here (it must know at once whether the reader has
//! room); answering a caller is an action, so it comes after the file
//! writes queued before it.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    Command, Device, Error, EventFilter, ReceivedEvent,
    connector::{Registry, Request, SyncReply},
    outbox::{DeviceEntry, OutboxRow},
    protocol::{ClientMessage, GraphqlError, Request as GqlRequest},
};

/// Routing the server's messages to what they answer.
mod answers;
/// Device sync.
mod devices;
/// Inputs, actions, and how a connection ends.
mod interface;
/// Publishing the outbox.
mod publish;
/// Command and event streams.
mod streams;

pub(crate) use devices::{Step, next_step};
pub(crate) use interface::{Action, End, Input, Respond, Resume, Room, Settings};

/// Operations in flight on one socket at most; the server allows 100 by
/// default and subscriptions count too.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// First wait after a publish the server failed for a passing reason.
pub(crate) const PUBLISH_RETRY_MIN: Duration = Duration::from_millis(500);
pub(crate) const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(30);

const RESPOND: &str = "mutation($id: ID!, $success: Boolean!, $result: JSON) { respondCommand(id: $id, success: $success, result: $result) { id } }";

/// What an operation on the socket is for, so its answer finds its way.
#[derive(Debug)]
enum Op {
    Sync {
        external_id: String,
        step: Step,
        generation: u64,
    },
    Respond(Respond),
    Publish {
        rows: Vec<OutboxRow>,
    },
    Commands,
    LatestEvent {
        sub: u64,
    },
    Events {
        sub: u64,
    },
    /// Answered; waiting for the server's `complete` so the id is not reused.
    Done,
}

/// An `events` subscription, kept across connections.
#[derive(Debug)]
struct EventSub {
    filter: EventFilter,
    /// The last event handed to the reader: where to resume.
    after: Option<i64>,
    sender: mpsc::Sender<Result<ReceivedEvent, Error>>,
    /// Waiting for the reader to make room.
    paused: bool,
}

/// The state of one live connection; dropped with it.
#[derive(Debug)]
struct Link {
    ops: HashMap<String, Op>,
    next_op: u64,
    /// Active devices registered on this connection (bound to it).
    bound: HashSet<String>,
    /// Devices with a step in flight, and those waiting for room.
    syncing: HashSet<String>,
    sync_queue: VecDeque<String>,
    /// The outbox is being read or a batch is in flight.
    publishing: bool,
    /// Waiting after a failed publish; see `publish_delay`.
    publish_retry_at: Option<Instant>,
    /// Send events one by one up to this outbox seq, to find the one that
    /// made a batch fail.
    isolate_through: Option<i64>,
    last_heard: Instant,
    next_ping: Instant,
    /// The command subscription is to be (re)started.
    commands_wanted: bool,
    /// Event subscriptions to (re)start.
    pending_event_subs: Vec<u64>,
}

/// Everything the session knows, across connections.
#[derive(Debug)]
pub(crate) struct State {
    settings: Settings,
    /// The time of the input being handled.
    now: Instant,
    /// `None` while offline.
    link: Option<Link>,
    /// Callers waiting for a device to be in sync, by external id.
    sync_waiters: HashMap<String, Vec<SyncReply>>,
    /// The platform's last answer for each device.
    last_device: HashMap<String, Device>,
    /// Platform id → external id, to name the device of a command.
    external_ids: HashMap<String, String>,
    /// Answers not yet confirmed by the server (sent again after a reconnect).
    responds: VecDeque<Respond>,
    commands: Option<mpsc::Sender<Command>>,
    commands_paused: bool,
    event_subs: BTreeMap<u64, EventSub>,
    next_sub: u64,
    /// More events may be waiting in the outbox.
    outbox_dirty: bool,
    publish_delay: Duration,
    actions: Vec<Action>,
}

impl State {
    /// A session that manages `devices` (as read from the outbox file).
    pub fn new(settings: Settings, devices: &[DeviceEntry], now: Instant) -> Self {
        let external_ids = devices
            .iter()
            .filter_map(|entry| Some((entry.server_id.clone()?, entry.spec.external_id.clone())))
            .collect();
        State {
            settings,
            now,
            link: None,
            sync_waiters: HashMap::new(),
            last_device: HashMap::new(),
            external_ids,
            responds: VecDeque::new(),
            commands: None,
            commands_paused: false,
            event_subs: BTreeMap::new(),
            next_sub: 0,
            outbox_dirty: true,
            publish_delay: PUBLISH_RETRY_MIN,
            actions: Vec::new(),
        }
    }

    /// The actions queued so far, to be carried out in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// When to feed [`Input::Tick`] next (`None`: nothing timed is due).
    pub fn next_deadline(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        Some(match link.publish_retry_at {
            Some(retry) => retry.min(link.next_ping),
            None => link.next_ping,
        })
    }

    /// Any frame at all from the server: it is alive.
    pub fn heard(&mut self, now: Instant) {
        if let Some(link) = &mut self.link {
            link.last_heard = now;
        }
    }

    /// Handles one input. `Err` ends the connection (the state already
    /// forgot it; the I/O loop closes the socket); the queued actions are
    /// to be carried out either way.
    pub fn handle(
        &mut self,
        now: Instant,
        input: Input<'_>,
        devices: &mut Registry,
    ) -> Result<(), End> {
        self.now = now;
        if let Input::Connected = input {
            self.link = Some(self.new_link(devices));
        }
        let Some(mut link) = self.link.take() else {
            self.handle_offline(input);
            return Ok(());
        };
        let result = self
            .handle_online(&mut link, input, devices)
            .and_then(|()| self.pump(&mut link, devices));
        match result {
            Ok(()) => self.link = Some(link),
            Err(_) => self.forget_link(link),
        }
        result
    }

    /// The I/O loop lost the connection.
    pub fn disconnected(&mut self) {
        if let Some(link) = self.link.take() {
            self.forget_link(link);
        }
    }

    /// The session ends for good: answers everyone still waiting.
    pub fn finish(&mut self, error: &Error) {
        self.disconnected();
        for (_, waiters) in self.sync_waiters.drain() {
            self.actions.push(Action::AnswerSync {
                waiters,
                result: Err(error.clone()),
            });
        }
        for respond in self.responds.drain(..) {
            self.actions.push(Action::AnswerRespond {
                reply: respond.reply,
                result: Err(error.clone()),
            });
        }
        if *error != Error::Stopped {
            for sub in self.event_subs.values() {
                let _ = sub.sender.try_send(Err(error.clone()));
            }
        }
    }

    fn handle_offline(&mut self, input: Input<'_>) {
        match input {
            // Kept for the next connection.
            Input::Request(request) => self.accept(request, None),
            Input::Resume(resume) => self.resume(resume, None),
            Input::OutboxReady => self.outbox_dirty = true,
            // Rows read for a connection that is gone stay in the outbox.
            Input::OutboxRows(_) | Input::Tick | Input::Text(_) | Input::Connected => {}
        }
    }

    fn handle_online(
        &mut self,
        link: &mut Link,
        input: Input<'_>,
        devices: &mut Registry,
    ) -> Result<(), End> {
        match input {
            Input::Connected => Ok(()),
            Input::Text(text) => {
                link.last_heard = self.now;
                self.on_message(link, text, devices)
            }
            Input::Request(request) => {
                self.accept(request, Some(link));
                Ok(())
            }
            Input::Resume(resume) => {
                self.resume(resume, Some(link));
                Ok(())
            }
            Input::OutboxReady => {
                self.outbox_dirty = true;
                Ok(())
            }
            Input::OutboxRows(rows) => {
                link.publishing = false;
                self.on_outbox_rows(link, rows, devices);
                Ok(())
            }
            Input::Tick => self.on_tick(link),
        }
    }

    /// A fresh connection: everything to bring up to date.
    fn new_link(&mut self, devices: &Registry) -> Link {
        let mut link = Link {
            ops: HashMap::new(),
            next_op: 0,
            bound: HashSet::new(),
            syncing: HashSet::new(),
            sync_queue: VecDeque::new(),
            publishing: false,
            publish_retry_at: None,
            isolate_through: None,
            last_heard: self.now,
            next_ping: self.now + self.settings.keepalive_interval,
            commands_wanted: self.commands.is_some() && !self.commands_paused,
            pending_event_subs: self
                .event_subs
                .iter()
                .filter(|(_, sub)| !sub.paused)
                .map(|(id, _)| *id)
                .collect(),
        };
        for entry in devices.snapshot() {
            if next_step(&entry, false).is_some() {
                link.queue_sync(entry.spec.external_id);
            }
        }
        self.outbox_dirty = true;
        self.publish_delay = PUBLISH_RETRY_MIN;
        link
    }

    /// What was in flight on a lost connection waits for the next one.
    fn forget_link(&mut self, link: Link) {
        for (_, op) in link.ops {
            if let Op::Respond(respond) = op {
                self.responds.push_front(respond);
            }
        }
    }

    fn on_tick(&mut self, link: &mut Link) -> Result<(), End> {
        if link.publish_retry_at.is_some_and(|at| at <= self.now) {
            link.publish_retry_at = None;
        }
        if self.now >= link.next_ping {
            let silence = self.settings.keepalive_timeout;
            if self.now.saturating_duration_since(link.last_heard) > silence {
                return Err(End::Lost(format!("the server was silent for {silence:?}")));
            }
            link.next_ping = self.now + self.settings.keepalive_interval;
            self.send(ClientMessage::Ping {});
        }
        Ok(())
    }

    /// Takes a caller's request; sends it at once when `link` is up.
    fn accept(&mut self, request: Request, link: Option<&mut Link>) {
        match request {
            Request::SyncDevice { external_id, reply } => {
                self.sync_waiters
                    .entry(external_id.clone())
                    .or_default()
                    .push(reply);
                if let Some(link) = link {
                    link.queue_sync(external_id);
                }
            }
            Request::Respond(respond) => self.responds.push_back(respond),
            Request::Commands { sender } => {
                self.commands = Some(sender);
                self.commands_paused = false;
                if let Some(link) = link {
                    link.commands_wanted = true;
                }
            }
            Request::Events {
                filter,
                after,
                sender,
            } => {
                let id = self.next_sub;
                self.next_sub += 1;
                self.event_subs.insert(
                    id,
                    EventSub {
                        filter,
                        after,
                        sender,
                        paused: false,
                    },
                );
                if let Some(link) = link {
                    link.pending_event_subs.push(id);
                }
            }
        }
    }

    fn resume(&mut self, resume: Resume, link: Option<&mut Link>) {
        match resume {
            Resume::Commands => {
                self.commands_paused = false;
                if let Some(link) = link {
                    link.commands_wanted = true;
                }
            }
            Resume::Events(id) => {
                if let Some(sub) = self.event_subs.get_mut(&id) {
                    sub.paused = false;
                    if let Some(link) = link {
                        link.pending_event_subs.push(id);
                    }
                }
            }
        }
    }

    fn send(&mut self, message: ClientMessage<'_>) {
        self.actions.push(Action::Send(message.to_text()));
    }

    /// Starts an operation.
    fn start(&mut self, link: &mut Link, query: &str, variables: Value, op: Op) {
        link.next_op += 1;
        let id = link.next_op.to_string();
        self.send(ClientMessage::Subscribe {
            id: &id,
            payload: GqlRequest { query, variables },
        });
        link.ops.insert(id, op);
    }

    /// Stops an operation on our side.
    fn complete(&mut self, link: &mut Link, id: &str) {
        link.ops.remove(id);
        self.send(ClientMessage::Complete { id });
    }

    /// Starts whatever is waiting and fits.
    fn pump(&mut self, link: &mut Link, devices: &mut Registry) -> Result<(), End> {
        if link.commands_wanted && link.has_room() {
            link.commands_wanted = false;
            self.start_commands(link);
        }
        while link.has_room() {
            let Some(id) = link.pending_event_subs.pop() else {
                break;
            };
            self.start_event_sub(link, id);
        }
        while link.has_room() {
            let Some(external_id) = link.sync_queue.pop_front() else {
                break;
            };
            self.start_sync(link, external_id, devices);
        }
        while link.has_room() {
            let Some(respond) = self.responds.pop_front() else {
                break;
            };
            let variables = json!({
                "id": respond.command_id,
                "success": respond.success,
                "result": respond.result,
            });
            self.start(link, RESPOND, variables, Op::Respond(respond));
        }
        if !link.publishing
            && link.publish_retry_at.is_none()
            && self.outbox_dirty
            && link.has_room()
        {
            let max_events = if link.isolate_through.is_some() {
                1
            } else {
                self.settings.batch_events
            };
            link.publishing = true;
            self.actions.push(Action::ReadOutbox {
                max_events,
                max_bytes: self.settings.batch_bytes,
            });
        }
        Ok(())
    }
}

impl Link {
    fn queue_sync(&mut self, external_id: String) {
        if !self.syncing.contains(&external_id) && !self.sync_queue.contains(&external_id) {
            self.sync_queue.push_back(external_id);
        }
    }

    fn has_room(&self) -> bool {
        self.ops.len() < MAX_IN_FLIGHT
    }
}

fn fields(query: &str, fields: &str) -> String {
    query.replace("__FIELDS__", fields)
}

/// The first error of a result, as the caller sees it.
fn server_error(errors: &[GraphqlError]) -> Error {
    match errors.first() {
        Some(error) => Error::Server {
            code: error.code(),
            message: error.message.clone(),
        },
        None => Error::Server {
            code: "UNKNOWN".into(),
            message: "the server answered without data".into(),
        },
    }
}

/// Codes that mean the credential may not do this: the gateway cannot go on.
fn is_credential_error(error: &Error) -> bool {
    matches!(error, Error::Server { code, .. } if code == "FORBIDDEN" || code == "UNAUTHENTICATED")
}
