//! The state machine's vocabulary: what the I/O loop tells it
//! ([`Input`]), what it asks the I/O loop to do ([`Action`]), and how a
//! connection ends ([`End`]).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{
    Command, Device, Error, EventAck, ReceivedEvent,
    connector::{Request, SyncReply},
    outbox::{DeviceEntry, OutboxRow},
};

/// The options the decisions depend on.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub batch_events: usize,
    pub batch_bytes: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// What happened, as the I/O loop tells it.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    /// A connection was opened and `connection_init` acknowledged.
    Connected,
    /// A text frame from the server.
    Text(&'a str),
    /// A caller's request from the handle.
    Request(Request),
    /// A stream's reader made room again.
    Resume(Resume),
    /// Events were queued in the outbox.
    OutboxReady,
    /// The answer to [`Action::ReadOutbox`].
    OutboxRows(Result<Vec<OutboxRow>, Error>),
    /// The clock reached [`State::next_deadline`] (or any time after).
    Tick,
}

/// What the I/O loop is to do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a text frame.
    Send(String),
    /// Read the oldest events of the outbox and hand them back as
    /// [`Input::OutboxRows`].
    ReadOutbox { max_events: usize, max_bytes: usize },
    /// Remove these events from the outbox (acknowledged or rejected).
    RemoveEvents(Vec<i64>),
    /// Write a device entry to the outbox file (with the registry lock
    /// held, so memory and file agree).
    SaveDevice(DeviceEntry),
    /// Remove a device whose deletion the platform confirmed from the file.
    ForgetDevice(String),
    /// Answer the callers waiting for a device to be in sync.
    AnswerSync {
        waiters: Vec<SyncReply>,
        result: Result<Option<Device>, Error>,
    },
    /// Answer a caller of `respond`.
    AnswerRespond {
        reply: oneshot::Sender<Result<(), Error>>,
        result: Result<(), Error>,
    },
    /// Answer the caller waiting for this event's acknowledgement.
    AnswerEvent {
        key: String,
        result: Result<EventAck, Error>,
    },
    /// Feed [`Input::Resume`] back once this reader has room.
    WatchRoom(Room),
}

/// A stream whose reader is behind.
#[derive(Debug)]
pub(crate) enum Room {
    Commands(mpsc::Sender<Command>),
    Events(u64, mpsc::Sender<Result<ReceivedEvent, Error>>),
}

impl Room {
    /// What to feed back once the reader has room.
    pub fn resume(&self) -> Resume {
        match self {
            Room::Commands(_) => Resume::Commands,
            Room::Events(sub, _) => Resume::Events(*sub),
        }
    }
}

/// A stream paused because its reader fell behind, ready to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    Commands,
    Events(u64),
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Shut down on request.
    Stopped,
    /// For good (credentials refused): the session stops.
    Fatal(Error),
    /// Reconnect.
    Lost(String),
}

/// A command answer from the handle, kept until the server confirms it.
#[derive(Debug)]
pub(crate) struct Respond {
    pub command_id: String,
    pub success: bool,
    pub result: Option<Value>,
    pub reply: oneshot::Sender<Result<(), Error>>,
}
