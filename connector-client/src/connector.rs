//! [`Connector`]: the handle a gateway holds. Cheap to clone; every clone
//! talks to the one session task over a bounded channel.
//!
//! (Over 600 lines on purpose: this is the library's public surface, every
//! method a gateway calls with its documentation, kept in one file in the
//! order a gateway uses them; the work is in `session` and `outbox`.)

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use serde_json::Value;
use tokio::{
    sync::{Mutex, Notify, mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::{
    Command, ConnectorOptions, Device, DeviceSpec, DeviceUpdate, Error, Event, EventAck,
    EventFilter, ReceivedEvent,
    outbox::{DeviceEntry, DeviceState, Outbox, PreparedEvent},
    session::{Respond, Session},
    types::{check_json, check_text},
};

/// Where the session stands, as seen through [`Connector::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first connection attempt.
    Connecting,
    /// Connected and authenticated.
    Connected,
    /// The connection was lost (or never made); waiting to try again.
    Disconnected { reason: String },
    /// Trying again (attempt number since the last healthy connection).
    Reconnecting { attempt: u32 },
    /// Refused for good (e.g. a revoked API key): see the error.
    Failed(Error),
    /// Shut down.
    Stopped,
}

/// What callers ask of the session task.
#[derive(Debug)]
pub(crate) enum Request {
    /// Make the platform match the device's entry; answer when it does.
    SyncDevice {
        external_id: String,
        reply: SyncReply,
    },
    Respond(Respond),
    Commands {
        sender: mpsc::Sender<Command>,
    },
    Events {
        filter: EventFilter,
        after: Option<i64>,
        sender: mpsc::Sender<Result<ReceivedEvent, Error>>,
    },
}

/// The devices the gateway manages, in memory (mirrored in the outbox
/// file). Each entry carries a generation that every caller's change bumps,
/// so the session never marks a newer change done with an older answer.
#[derive(Default)]
pub(crate) struct Registry {
    entries: BTreeMap<String, (DeviceEntry, u64)>,
}

impl Registry {
    pub fn get(&self, external_id: &str) -> Option<DeviceEntry> {
        self.get_ref(external_id).cloned()
    }

    pub fn get_ref(&self, external_id: &str) -> Option<&DeviceEntry> {
        self.entries.get(external_id).map(|(entry, _)| entry)
    }

    pub fn generation(&self, external_id: &str) -> u64 {
        self.entries
            .get(external_id)
            .map_or(0, |(_, generation)| *generation)
    }

    /// The session's write: keeps the generation.
    pub fn replace(&mut self, entry: DeviceEntry) {
        let generation = self.generation(&entry.spec.external_id);
        self.entries
            .insert(entry.spec.external_id.clone(), (entry, generation));
    }

    /// A caller's change: a new generation.
    pub(crate) fn change(&mut self, entry: DeviceEntry) {
        let generation = self.generation(&entry.spec.external_id) + 1;
        self.entries
            .insert(entry.spec.external_id.clone(), (entry, generation));
    }

    pub fn forget(&mut self, external_id: &str) {
        self.entries.remove(external_id);
    }

    pub fn snapshot(&self) -> Vec<DeviceEntry> {
        self.entries
            .values()
            .map(|(entry, _)| entry.clone())
            .collect()
    }
}

type EventWaiter = oneshot::Sender<Result<EventAck, Error>>;
/// The session task; taken by the first [`Connector::shutdown`].
type SessionTask = JoinHandle<Result<(), Error>>;
/// Answers a device change with the platform's device (`None`: deleted).
pub(crate) type SyncReply = oneshot::Sender<Result<Option<Device>, Error>>;

/// State shared by the handles and the session task.
pub(crate) struct ConnectorShared {
    pub options: ConnectorOptions,
    pub outbox: Outbox,
    /// Held across the file write of a change, so memory and file agree.
    pub devices: Mutex<Registry>,
    /// Callers of [`Connector::event`] waiting for their acknowledgement, by
    /// idempotency key.
    waiters: std::sync::Mutex<HashMap<String, EventWaiter>>,
    /// Wakes the session when events were queued.
    pub outbox_ready: Notify,
    pub state: watch::Sender<ConnectionState>,
    commands_taken: AtomicBool,
}

impl ConnectorShared {
    pub fn answer_event(&self, key: &str, result: Result<EventAck, Error>) {
        let waiter = self
            .waiters
            .lock()
            .expect("BUG: the waiter lock is never poisoned")
            .remove(key);
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }

    pub fn fail_event_waiters(&self, error: &Error) {
        let waiters = std::mem::take(
            &mut *self
                .waiters
                .lock()
                .expect("BUG: the waiter lock is never poisoned"),
        );
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(error.clone()));
        }
    }
}

/// The gateway's connection to Ferrite. Clone it freely: clones share one
/// session (one WebSocket) run by a task the library spawns.
///
/// ```no_run
/// use ferrite_connector::{Connector, ConnectorOptions, DeviceSpec};
/// use serde_json::json;
///
/// # async fn run() -> Result<(), ferrite_connector::Error> {
/// let options = ConnectorOptions::new("ws://127.0.0.1:8080/graphql", "frt_…", "greenhouse")?
///     .outbox_path("greenhouse-outbox.db")?;
/// let connector = Connector::start(options).await?;
/// connector
///     .register(DeviceSpec::new("thermo-1").name("Greenhouse thermometer"))
///     .await?;
/// let ack = connector.event("thermo-1", "temperature", json!({"celsius": 21.5})).await?;
/// println!("stored as event {}", ack.id);
/// connector.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connector {
    shared: Arc<ConnectorShared>,
    requests: mpsc::Sender<Request>,
    /// To the outbox writer, which commits concurrent callers' events together.
    pushes: mpsc::Sender<Push>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<Mutex<Option<SessionTask>>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connector_id", &self.shared.options.connector_id)
            .field("url", &self.shared.options.url)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Connector {
    /// Opens the outbox and starts the session task. Returns at once: the
    /// session connects (and reconnects) in the background, and calls made
    /// before it is connected wait for it (up to their timeout).
    pub async fn start(options: ConnectorOptions) -> Result<Connector, Error> {
        // Whichever TLS provider the build has, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let outbox = Outbox::open(
            &options.outbox_path,
            options.outbox_max_events,
            options.outbox_full_policy,
        )
        .await?;
        let devices = outbox.devices().await?;
        let waiting = outbox.len().await;
        if waiting > 0 {
            tracing::info!(
                events = waiting,
                "events from an earlier run wait in the outbox"
            );
        }
        let mut registry = Registry::default();
        for entry in &devices {
            registry.replace(entry.clone());
        }
        let (requests, receiver) = mpsc::channel(options.channel_capacity);
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(ConnectorShared {
            options,
            outbox,
            devices: Mutex::new(registry),
            waiters: std::sync::Mutex::new(HashMap::new()),
            outbox_ready: Notify::new(),
            state: watch::channel(ConnectionState::Connecting).0,
            commands_taken: AtomicBool::new(false),
        });
        let session = Session::new(shared.clone(), receiver, stopped, &devices);
        let task = tokio::spawn(session.run());
        let (pushes, waiting_pushes) = mpsc::channel(shared.options.channel_capacity);
        tokio::spawn(outbox_writer(shared.clone(), waiting_pushes));
        Ok(Connector {
            shared,
            requests,
            pushes,
            stop: Arc::new(stop),
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// [`Connector::start`] with the options of a `connector.toml` (and
    /// `FERRITE_CONNECTOR_*` variables).
    pub async fn start_from_file(path: impl AsRef<std::path::Path>) -> Result<Connector, Error> {
        let invalid = |err: crate::config::ConfigError| Error::InvalidOption {
            option: "configuration",
            reason: err.to_string(),
        };
        let config = crate::ConnectorConfig::load(Some(path.as_ref())).map_err(invalid)?;
        Connector::start(config.options().map_err(invalid)?).await
    }

    /// The options the connector runs with.
    pub fn options(&self) -> &ConnectorOptions {
        &self.shared.options
    }

    /// Watch the session: connected, reconnecting, failed…
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Waits until the session is connected, up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let mut state = self.state();
        let wait = state.wait_for(|state| {
            matches!(
                state,
                ConnectionState::Connected | ConnectionState::Failed(_) | ConnectionState::Stopped
            )
        });
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(state)) => match &*state {
                ConnectionState::Connected => Ok(()),
                ConnectionState::Failed(error) => Err(error.clone()),
                _ => Err(Error::Stopped),
            },
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// The error the session stopped with, if it did.
    fn refuse_if_down(&self) -> Result<(), Error> {
        match &*self.shared.state.borrow() {
            ConnectionState::Failed(error) => Err(error.clone()),
            ConnectionState::Stopped => Err(Error::Stopped),
            _ => Ok(()),
        }
    }

    /// Sends a request and waits for its answer, within the request timeout.
    async fn call<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Request,
    ) -> Result<T, Error> {
        let limit = self.shared.options.request_timeout;
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.requests
                .send(request(reply))
                .await
                .map_err(|_| Error::Stopped)?;
            answer.await.map_err(|_| self.stopped_error())?
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(limit)),
        }
    }

    /// Hands the session a request that needs no answer, within the
    /// request timeout (the channel is bounded).
    async fn send(&self, request: Request) -> Result<(), Error> {
        let limit = self.shared.options.request_timeout;
        match tokio::time::timeout(limit, self.requests.send(request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout(limit)),
        }
    }

    fn stopped_error(&self) -> Error {
        match &*self.shared.state.borrow() {
            ConnectionState::Failed(error) => error.clone(),
            _ => Error::Stopped,
        }
    }

    /// Records a caller's change to a device (memory and file), then asks
    /// the session to carry it to the platform.
    async fn change_device(
        &self,
        external_id: &str,
        change: impl FnOnce(Option<DeviceEntry>) -> Result<DeviceEntry, Error>,
    ) -> Result<Option<Device>, Error> {
        self.refuse_if_down()?;
        {
            let mut devices = self.shared.devices.lock().await;
            let entry = change(devices.get(external_id))?;
            self.shared.outbox.save_device(&entry).await?;
            devices.change(entry);
        }
        let external_id = external_id.to_owned();
        self.call(|reply| Request::SyncDevice { external_id, reply })
            .await
    }

    /// Adds a device to the gateway (or changes its description) and
    /// registers it on the platform, where it is ONLINE while the session
    /// is up. The device is managed from now on, across reconnects and
    /// restarts, whatever the platform call answers.
    pub async fn register(&self, spec: DeviceSpec) -> Result<Device, Error> {
        spec.validate(self.shared.options.max_attributes_bytes)?;
        let external_id = spec.external_id.clone();
        let device = self
            .change_device(&external_id, |existing| {
                Ok(DeviceEntry {
                    spec,
                    state: DeviceState::Active,
                    server_id: existing.and_then(|entry| entry.server_id),
                    dirty: true,
                })
            })
            .await?;
        device.ok_or(Error::Stopped)
    }

    /// Changes a managed device's description on the gateway and on the
    /// platform.
    pub async fn update(&self, external_id: &str, update: DeviceUpdate) -> Result<Device, Error> {
        let max_attributes = self.shared.options.max_attributes_bytes;
        let device = self
            .change_device(external_id, |existing| {
                let mut entry = managed(external_id, existing)?;
                update.apply(&mut entry.spec);
                entry.spec.validate(max_attributes)?;
                entry.dirty = true;
                Ok(entry)
            })
            .await?;
        device.ok_or(Error::Stopped)
    }

    /// Takes a device off the gateway: DISCONNECTED on the platform, kept
    /// there with its history. [`Connector::register`] brings it back.
    pub async fn disconnect(&self, external_id: &str) -> Result<Device, Error> {
        let device = self
            .change_device(external_id, |existing| {
                let mut entry = managed(external_id, existing)?;
                entry.state = DeviceState::Disconnected;
                entry.dirty = true;
                Ok(entry)
            })
            .await?;
        device.ok_or(Error::Stopped)
    }

    /// Deletes a device from the gateway and from the platform (with its
    /// events and commands). Its events still in the outbox are dropped:
    /// their waiters get [`Error::Rejected`].
    pub async fn delete(&self, external_id: &str) -> Result<(), Error> {
        self.refuse_if_down()?;
        let dropped = self.shared.outbox.remove_device(external_id).await?;
        for key in dropped {
            self.shared.answer_event(
                &key,
                Err(Error::Rejected {
                    code: "NOT_FOUND".into(),
                    message: format!("device {external_id:?} was deleted"),
                }),
            );
        }
        self.change_device(external_id, |existing| {
            let mut entry = managed(external_id, existing)?;
            entry.state = DeviceState::Deleted;
            entry.dirty = true;
            Ok(entry)
        })
        .await
        .map(|_| ())
    }

    /// The devices the gateway manages (not deleted), as last described.
    pub async fn devices(&self) -> Vec<DeviceSpec> {
        self.shared
            .devices
            .lock()
            .await
            .snapshot()
            .into_iter()
            .filter(|entry| entry.state != DeviceState::Deleted)
            .map(|entry| entry.spec)
            .collect()
    }

    /// The platform's id of a managed device ([`Device::id`], used in event
    /// filters), once it has been registered.
    pub async fn platform_id(&self, external_id: &str) -> Option<String> {
        let devices = self.shared.devices.lock().await;
        let entry = devices.get_ref(external_id)?;
        if entry.state == DeviceState::Deleted {
            return None;
        }
        entry.server_id.clone()
    }

    /// Publishes an event and waits until the server has committed it.
    ///
    /// The event is first written to the outbox; from then on it is not
    /// lost. If the server does not confirm within the request timeout the
    /// call returns [`Error::NotAcknowledged`] and the event is still sent,
    /// and stored exactly once.
    pub async fn event(
        &self,
        device: &str,
        service: &str,
        payload: Value,
    ) -> Result<EventAck, Error> {
        self.publish(Event::new(device, service, payload)).await
    }

    /// [`Connector::event`] with an occurrence time or your own
    /// idempotency key.
    pub async fn publish(&self, event: Event) -> Result<EventAck, Error> {
        self.refuse_if_down()?;
        let prepared = self.prepare(vec![event]).await?;
        let key = prepared[0].idempotency_key.clone();
        let (waiter, acknowledged) = oneshot::channel();
        self.shared
            .waiters
            .lock()
            .expect("BUG: the waiter lock is never poisoned")
            .insert(key.clone(), waiter);
        if let Err(error) = self.enqueue(prepared).await {
            self.forget_waiter(&key);
            return Err(error);
        }
        let limit = self.shared.options.request_timeout;
        match tokio::time::timeout(limit, acknowledged).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => {
                self.forget_waiter(&key);
                Err(Error::NotAcknowledged(limit))
            }
        }
    }

    /// Queues events in the outbox (one transaction) and returns at once
    /// with their idempotency keys; the session sends them in order. For
    /// sensors that publish faster than a round trip.
    pub async fn queue(&self, events: Vec<Event>) -> Result<Vec<String>, Error> {
        self.refuse_if_down()?;
        let prepared = self.prepare(events).await?;
        let keys = prepared
            .iter()
            .map(|event| event.idempotency_key.clone())
            .collect();
        self.enqueue(prepared).await?;
        Ok(keys)
    }

    fn forget_waiter(&self, key: &str) {
        self.shared
            .waiters
            .lock()
            .expect("BUG: the waiter lock is never poisoned")
            .remove(key);
    }

    /// Checks events before they may enter the outbox (all or none).
    async fn prepare(&self, events: Vec<Event>) -> Result<Vec<PreparedEvent>, Error> {
        let devices = self.shared.devices.lock().await;
        events
            .into_iter()
            .map(|event| prepare_one(&self.shared.options, &devices, event))
            .collect()
    }

    /// Hands events to the outbox writer and waits for their commit.
    async fn enqueue(&self, events: Vec<PreparedEvent>) -> Result<(), Error> {
        let (reply, committed) = oneshot::channel();
        self.pushes
            .send(Push { events, reply })
            .await
            .map_err(|_| Error::Stopped)?;
        committed.await.map_err(|_| Error::Stopped)?
    }

    /// Events waiting in the outbox.
    pub async fn pending_events(&self) -> u64 {
        self.shared.outbox.len().await
    }

    /// Waits until the outbox is empty (everything acknowledged), up to
    /// `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let mut len = self.shared.outbox.watch_len();
        match tokio::time::timeout(timeout, len.wait_for(|len| *len == 0)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// The commands for the gateway's devices, from now on (open ones
    /// queued while the gateway was away first). One stream per connector:
    /// a second call gets [`Error::CommandsTaken`]. A command delivered
    /// just before a reconnect may come again (same id) if it was not
    /// answered yet.
    pub async fn commands(&self) -> Result<Commands, Error> {
        self.refuse_if_down()?;
        if self.shared.commands_taken.swap(true, Ordering::SeqCst) {
            return Err(Error::CommandsTaken);
        }
        let (sender, receiver) = mpsc::channel(self.shared.options.channel_capacity);
        if let Err(error) = self.send(Request::Commands { sender }).await {
            self.shared.commands_taken.store(false, Ordering::SeqCst);
            return Err(error);
        }
        Ok(Commands { receiver })
    }

    /// Answers a command: `Ok(result)` → SUCCEEDED, `Err(result)` →
    /// FAILED. Waits for the server's confirmation; an answer that could
    /// not be sent before a reconnect is sent after it.
    pub async fn respond(
        &self,
        command_id: &str,
        outcome: Result<Value, Value>,
    ) -> Result<(), Error> {
        self.refuse_if_down()?;
        let (success, result) = match outcome {
            Ok(result) => (true, result),
            Err(result) => (false, result),
        };
        let command_id = command_id.to_owned();
        self.call(|reply| {
            Request::Respond(Respond {
                command_id,
                success,
                result: Some(result),
                reply,
            })
        })
        .await
    }

    /// Events of the platform matching `filter` (any device the key may
    /// see, so one device can react to another). With `after`, stored
    /// events after that id come first. The stream survives reconnects
    /// without gap or duplicate: it resumes after the last event it
    /// delivered. A reader that falls behind pauses the subscription
    /// rather than losing events.
    pub async fn subscribe_events(
        &self,
        filter: EventFilter,
        after: Option<i64>,
    ) -> Result<EventStream, Error> {
        self.refuse_if_down()?;
        let (sender, receiver) = mpsc::channel(self.shared.options.channel_capacity);
        self.send(Request::Events {
            filter,
            after,
            sender,
        })
        .await?;
        Ok(EventStream { receiver })
    }

    /// Stops the session: closes the socket cleanly and waits for the task.
    /// Events not yet acknowledged stay in the outbox for the next start.
    /// Returns the error the session failed with, if it did.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.stop.send_replace(true);
        let task = self.task.lock().await.take();
        let result = match task {
            Some(task) => task.await.unwrap_or(Err(Error::Stopped)),
            None => Ok(()),
        };
        self.shared.outbox.close().await;
        result
    }

    /// Waits until the session ends by itself (it only does when refused
    /// for good) and returns why. For a gateway's main loop.
    pub async fn closed(&self) -> Error {
        let mut state = self.state();
        let ended = state
            .wait_for(|state| {
                matches!(state, ConnectionState::Failed(_) | ConnectionState::Stopped)
            })
            .await;
        match ended.as_deref() {
            Ok(ConnectionState::Failed(error)) => error.clone(),
            _ => Error::Stopped,
        }
    }
}

/// Checks one event against the options and the managed devices.
fn prepare_one(
    options: &crate::ConnectorOptions,
    devices: &Registry,
    event: Event,
) -> Result<PreparedEvent, Error> {
    check_text("service", &event.service)?;
    match devices.get_ref(&event.device) {
        Some(entry) if entry.state != DeviceState::Deleted => {}
        _ => {
            return Err(Error::InvalidInput(format!(
                "device {:?} is not managed by this gateway: register it first",
                event.device
            )));
        }
    }
    check_json("the payload", &event.payload)?;
    let payload = event.payload.to_string();
    if payload.len() > options.max_payload_bytes {
        return Err(Error::InvalidInput(format!(
            "the payload is {} bytes as JSON, more than max_payload_bytes ({})",
            payload.len(),
            options.max_payload_bytes
        )));
    }
    let idempotency_key = match event.idempotency_key {
        Some(key) => {
            check_text("idempotency key", &key)?;
            key
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    Ok(PreparedEvent {
        device: event.device,
        service: event.service,
        payload,
        // Unless the caller knows better, the event happened now: an event
        // that waits in the outbox through an outage still carries the time
        // it was taken, not the time the server finally got it.
        occurred_at: Some(
            event
                .occurred_at
                .unwrap_or_else(chrono::Utc::now)
                .to_rfc3339(),
        ),
        idempotency_key,
    })
}

/// One caller's events for the outbox writer.
struct Push {
    events: Vec<PreparedEvent>,
    reply: oneshot::Sender<Result<(), Error>>,
}

/// Most events the writer commits in one transaction.
const GROUP_COMMIT_EVENTS: usize = 1000;

/// Writes the outbox: takes every push waiting (up to
/// [`GROUP_COMMIT_EVENTS`]) and commits them in one transaction, so
/// concurrent callers share one fsync instead of queueing for one each.
/// Ends when every [`Connector`] clone is gone.
async fn outbox_writer(shared: Arc<ConnectorShared>, mut pushes: mpsc::Receiver<Push>) {
    while let Some(first) = pushes.recv().await {
        let mut events = first.events.len();
        let mut batch = vec![first];
        while events < GROUP_COMMIT_EVENTS {
            match pushes.try_recv() {
                Ok(push) => {
                    events += push.events.len();
                    batch.push(push);
                }
                Err(_) => break,
            }
        }
        let groups: Vec<&[PreparedEvent]> = batch.iter().map(|push| &push.events[..]).collect();
        match shared.outbox.push_groups(&groups).await {
            Ok(results) => {
                // Older events dropped to make room (policy drop_oldest).
                for dropped in results.iter().flatten().flat_map(|pushed| &pushed.dropped) {
                    tracing::warn!(key = %dropped, "outbox full: dropped the oldest event");
                    shared.answer_event(dropped, Err(Error::Dropped));
                }
                // One wake-up of the session per commit.
                shared.outbox_ready.notify_one();
                for (push, result) in batch.into_iter().zip(results) {
                    let _ = push.reply.send(result.map(|_| ()));
                }
            }
            Err(error) => {
                for push in batch {
                    let _ = push.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The entry of a managed (not deleted) device, or the error saying it is not.
fn managed(external_id: &str, existing: Option<DeviceEntry>) -> Result<DeviceEntry, Error> {
    match existing {
        Some(entry) if entry.state != DeviceState::Deleted => Ok(entry),
        _ => Err(Error::InvalidInput(format!(
            "device {external_id:?} is not managed by this gateway"
        ))),
    }
}

/// The stream of [`Command`]s; see [`Connector::commands`].
#[derive(Debug)]
pub struct Commands {
    receiver: mpsc::Receiver<Command>,
}

impl Commands {
    /// The next command; `None` once the connector stopped.
    pub async fn recv(&mut self) -> Option<Command> {
        self.receiver.recv().await
    }
}

impl Stream for Commands {
    type Item = Command;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        self.receiver.poll_recv(cx)
    }
}

/// The stream of a [`Connector::subscribe_events`] subscription. An `Err`
/// item reports a server error (e.g. `EVENTS_PRUNED`: events after `after`
/// were deleted by retention) and the stream goes on.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<Result<ReceivedEvent, Error>>,
}

impl EventStream {
    pub async fn recv(&mut self) -> Option<Result<ReceivedEvent, Error>> {
        self.receiver.recv().await
    }
}

impl Stream for EventStream {
    type Item = Result<ReceivedEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
