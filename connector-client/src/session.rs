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

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until, timeout},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};

use crate::{
    Command, ConnectionState, Device, Error, EventAck, EventFilter, ReceivedEvent,
    connector::{ConnectorShared, Request, SyncReply},
    outbox::{DeviceEntry, DeviceState, OutboxRow},
    protocol::{
        CLOSE_FORBIDDEN, ClientMessage, GraphqlError, Request as GqlRequest, Response, SUBPROTOCOL,
        ServerMessage,
    },
    types::{COMMAND_FIELDS, DEVICE_FIELDS, EVENT_FIELDS, WireCommand, WireEvent},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Operations in flight on one socket at most; the server allows 100 by
/// default and subscriptions count too.
const MAX_IN_FLIGHT: usize = 64;
/// A connection that stayed up this long resets the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// First wait after a publish the server failed for a passing reason.
const PUBLISH_RETRY_MIN: Duration = Duration::from_millis(500);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(30);

const REGISTER: &str =
    "mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { __FIELDS__ } }";
const UPDATE: &str = "mutation($id: ID!, $input: UpdateDeviceInput!) { updateDevice(id: $id, input: $input) { __FIELDS__ } }";
const DISCONNECT: &str = "mutation($id: ID!) { disconnectDevice(id: $id) { __FIELDS__ } }";
const DELETE: &str = "mutation($id: ID!) { deleteDevice(id: $id) }";
const PUBLISH: &str = "mutation($events: [EventInput!]!) { publishEvents(inputs: $events) { id receivedAt idempotencyKey } }";
const RESPOND: &str = "mutation($id: ID!, $success: Boolean!, $result: JSON) { respondCommand(id: $id, success: $success, result: $result) { id } }";
const COMMANDS: &str = "subscription { commands { __FIELDS__ } }";
const EVENTS: &str = "subscription($filter: EventFilter, $after: ID) { events(filter: $filter, after: $after) { __FIELDS__ } }";
const LATEST_EVENT: &str =
    "query($filter: EventFilter) { events(filter: $filter, first: 1) { edges { node { id } } } }";

/// One step towards making the platform match a device entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Register,
    Update,
    Disconnect,
    Delete,
}

/// What an operation on the socket is for, so its answer finds its way.
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

pub(crate) struct Respond {
    pub command_id: String,
    pub success: bool,
    pub result: Option<Value>,
    pub reply: oneshot::Sender<Result<(), Error>>,
}

/// An `events` subscription, kept across connections.
struct EventSub {
    filter: EventFilter,
    /// The last event handed to the reader: where to resume.
    after: Option<i64>,
    sender: mpsc::Sender<Result<ReceivedEvent, Error>>,
    /// Waiting for the reader to make room.
    paused: bool,
}

/// A stream paused because its reader fell behind, ready to go on.
enum Resume {
    Commands,
    Events(u64),
}

/// Why a connection ended.
enum End {
    /// Shut down on request.
    Stopped,
    /// For good (credentials refused): the session stops.
    Fatal(Error),
    /// Reconnect.
    Lost(String),
}

/// The state of one live connection.
struct Link {
    socket: Socket,
    ops: HashMap<String, Op>,
    next_op: u64,
    /// Active devices registered on this connection (bound to it).
    bound: HashSet<String>,
    /// Devices with a step in flight, and those waiting for room.
    syncing: HashSet<String>,
    sync_queue: VecDeque<String>,
    publishing: bool,
    /// Waiting after a failed publish; see `publish_delay`.
    publish_retry_at: Option<Instant>,
    /// Send events one by one up to this outbox seq, to find the one that
    /// made a batch fail.
    isolate_through: Option<i64>,
    last_heard: Instant,
    /// The command subscription is to be (re)started.
    commands_wanted: bool,
    /// Event subscriptions to (re)start.
    pending_event_subs: Vec<u64>,
}

pub(crate) struct Session {
    shared: Arc<ConnectorShared>,
    requests: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
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
    resume_tx: mpsc::UnboundedSender<Resume>,
    resume_rx: mpsc::UnboundedReceiver<Resume>,
    /// More events may be waiting in the outbox.
    outbox_dirty: bool,
    publish_delay: Duration,
}

impl Session {
    pub fn new(
        shared: Arc<ConnectorShared>,
        requests: mpsc::Receiver<Request>,
        stop: watch::Receiver<bool>,
        devices: &[DeviceEntry],
    ) -> Self {
        let (resume_tx, resume_rx) = mpsc::unbounded_channel();
        let external_ids = devices
            .iter()
            .filter_map(|entry| Some((entry.server_id.clone()?, entry.spec.external_id.clone())))
            .collect();
        Session {
            shared,
            requests,
            stop,
            sync_waiters: HashMap::new(),
            last_device: HashMap::new(),
            external_ids,
            responds: VecDeque::new(),
            commands: None,
            commands_paused: false,
            event_subs: BTreeMap::new(),
            next_sub: 0,
            resume_tx,
            resume_rx,
            outbox_dirty: true,
            publish_delay: PUBLISH_RETRY_MIN,
        }
    }

    /// Runs until shut down (`Ok`) or refused for good (`Err`).
    pub async fn run(mut self) -> Result<(), Error> {
        let mut attempt: u32 = 0;
        loop {
            self.set_state(if attempt == 0 {
                ConnectionState::Connecting
            } else {
                ConnectionState::Reconnecting { attempt }
            });
            let connected = tokio::select! {
                // Cancel-safe: dropping a half-open connection is fine.
                result = connect(&self.shared) => result,
                // Shutdown while connecting.
                _ = self.stop.changed() => return self.finish(Ok(())).await,
            };
            let reason = match connected {
                Ok(socket) => {
                    let since = Instant::now();
                    self.set_state(ConnectionState::Connected);
                    tracing::info!(url = %self.shared.options.url, "connected");
                    match self.run_link(socket).await {
                        End::Stopped => return self.finish(Ok(())).await,
                        End::Fatal(error) => return self.finish(Err(error)).await,
                        End::Lost(reason) => {
                            if since.elapsed() >= HEALTHY_AFTER {
                                attempt = 0;
                            }
                            reason
                        }
                    }
                }
                Err(End::Fatal(error)) => return self.finish(Err(error)).await,
                Err(End::Lost(reason)) => reason,
                Err(End::Stopped) => return self.finish(Ok(())).await,
            };
            attempt = attempt.saturating_add(1);
            let delay = backoff(
                attempt,
                self.shared.options.reconnect_min_delay,
                self.shared.options.reconnect_max_delay,
            );
            tracing::warn!(%reason, retry_in = ?delay, attempt, "connection lost; reconnecting");
            self.set_state(ConnectionState::Disconnected { reason });
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    // The backoff is over.
                    _ = sleep_until(wake) => break,
                    // Shutdown while waiting.
                    _ = self.stop.changed() => return self.finish(Ok(())).await,
                    // Calls made while offline are kept for the next
                    // connection (cancel-safe).
                    request = self.requests.recv() => match request {
                        Some(request) => self.accept(request, None),
                        None => return self.finish(Ok(())).await,
                    },
                    // A reader made room: resume on the next connection.
                    Some(resume) = self.resume_rx.recv() => self.resume(resume, None),
                }
            }
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.shared.state.send_replace(state);
    }

    /// Answers everyone still waiting, and reports how the session ended.
    async fn finish(mut self, outcome: Result<(), Error>) -> Result<(), Error> {
        let error = outcome.clone().err().unwrap_or(Error::Stopped);
        for (_, waiters) in self.sync_waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        for respond in self.responds.drain(..) {
            let _ = respond.reply.send(Err(error.clone()));
        }
        self.shared.fail_event_waiters(&error);
        for sub in self.event_subs.values() {
            if error != Error::Stopped {
                let _ = sub.sender.try_send(Err(error.clone()));
            }
        }
        match &outcome {
            Ok(()) => self.set_state(ConnectionState::Stopped),
            Err(error) => {
                tracing::error!(%error, "the session stopped for good");
                self.set_state(ConnectionState::Failed(error.clone()))
            }
        }
        outcome
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
                    link.subscribe_commands_later();
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
                    link.subscribe_commands_later();
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
}

/// Opens the socket and completes `connection_init`.
async fn connect(shared: &ConnectorShared) -> Result<Socket, End> {
    let options = &shared.options;
    let attempt = async {
        let mut request = options.url.as_str().into_client_request().map_err(|err| {
            End::Fatal(Error::InvalidOption {
                option: "url",
                reason: err.to_string(),
            })
        })?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(16 * 1024);
        // Our own roots when given (a self-signed server); otherwise the
        // library's default: the public (webpki) roots for wss://.
        let tls = (!options.tls_roots.is_empty()).then(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(options.tls_roots.iter().cloned());
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_tungstenite::Connector::Rustls(Arc::new(config))
        });
        let (mut socket, response) =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, tls)
                .await
                .map_err(|err| End::Lost(describe_connect_error(&err)))?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|value| value.to_str().ok());
        if protocol != Some(SUBPROTOCOL) {
            return Err(End::Lost(format!(
                "the server did not accept the {SUBPROTOCOL} subprotocol (answered {protocol:?})"
            )));
        }
        let init = ClientMessage::ConnectionInit {
            payload: json!({
                "Authorization": format!("Bearer {}", options.api_key.expose()),
                "connectorId": options.connector_id,
            }),
        };
        socket
            .send(Message::text(init.to_text()))
            .await
            .map_err(|err| End::Lost(format!("sending connection_init: {err}")))?;
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(ServerMessage::ConnectionAck) => return Ok(socket),
                    Ok(ServerMessage::Ping) => {
                        let pong = ClientMessage::Pong {}.to_text();
                        let _ = socket.send(Message::text(pong)).await;
                    }
                    _ => {
                        return Err(End::Lost(format!(
                            "unexpected message before connection_ack: {text}"
                        )));
                    }
                },
                Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(End::Lost(err.to_string())),
                None => return Err(End::Lost("closed before connection_ack".into())),
            }
        }
    };
    match timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(End::Lost(format!(
            "no connection_ack within {:?}",
            options.connect_timeout
        ))),
    }
}

/// Says what a failed handshake means for the person reading the log.
fn describe_connect_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => format!(
            "the server answered HTTP {} instead of upgrading to WebSocket (is the URL's path /graphql?)",
            response.status()
        ),
        // tokio-rustls reports handshake failures as I/O errors.
        tungstenite::Error::Io(err)
            if err
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            format!("TLS: {err} (for a server with its own certificate, set tls_ca_file)")
        }
        tungstenite::Error::Io(err) => format!("cannot connect: {err}"),
        tungstenite::Error::Tls(err) => {
            format!("TLS: {err} (for a server with its own certificate, set tls_ca_file)")
        }
        other => other.to_string(),
    }
}

/// How a close frame ends the connection: 4403 is for good.
fn closed(frame: Option<CloseFrame>) -> End {
    match frame {
        Some(frame) if u16::from(frame.code) == CLOSE_FORBIDDEN => {
            End::Fatal(Error::Unauthorized(format!(
                "the server refused the API key ({}): check that it is valid and not revoked",
                frame.reason
            )))
        }
        Some(frame) => End::Lost(format!(
            "the server closed the connection ({}: {})",
            u16::from(frame.code),
            frame.reason
        )),
        None => End::Lost("the server closed the connection".into()),
    }
}

/// Exponential backoff from `min` to `max` with jitter in [½, 1] of the
/// step, so a fleet of gateways does not reconnect in lockstep.
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let step = min
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
        .min(max);
    let jitter = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    step.mul_f64(0.5 + 0.5 * jitter)
}

impl Link {
    fn new(socket: Socket) -> Self {
        Link {
            socket,
            ops: HashMap::new(),
            next_op: 0,
            bound: HashSet::new(),
            syncing: HashSet::new(),
            sync_queue: VecDeque::new(),
            publishing: false,
            publish_retry_at: None,
            isolate_through: None,
            last_heard: Instant::now(),
            commands_wanted: false,
            pending_event_subs: Vec::new(),
        }
    }

    fn queue_sync(&mut self, external_id: String) {
        if !self.syncing.contains(&external_id) && !self.sync_queue.contains(&external_id) {
            self.sync_queue.push_back(external_id);
        }
    }

    fn subscribe_commands_later(&mut self) {
        self.commands_wanted = true;
    }

    async fn send(&mut self, message: ClientMessage<'_>) -> Result<(), End> {
        self.socket
            .send(Message::text(message.to_text()))
            .await
            .map_err(|err| End::Lost(format!("sending: {err}")))
    }

    /// Starts an operation; returns its id.
    async fn start(&mut self, query: &str, variables: Value, op: Op) -> Result<String, End> {
        self.next_op += 1;
        let id = self.next_op.to_string();
        self.send(ClientMessage::Subscribe {
            id: &id,
            payload: GqlRequest { query, variables },
        })
        .await?;
        self.ops.insert(id.clone(), op);
        Ok(id)
    }

    async fn complete(&mut self, id: &str) -> Result<(), End> {
        self.ops.remove(id);
        self.send(ClientMessage::Complete { id }).await
    }

    fn has_room(&self) -> bool {
        self.ops.len() < MAX_IN_FLIGHT
    }
}

/// The next step for a device, or `None` when the platform matches.
fn next_step(entry: &DeviceEntry, bound: bool) -> Option<Step> {
    match entry.state {
        DeviceState::Active if !bound => Some(Step::Register),
        DeviceState::Active if entry.dirty => Some(if entry.server_id.is_some() {
            Step::Update
        } else {
            Step::Register
        }),
        DeviceState::Active => None,
        DeviceState::Disconnected if !entry.dirty => None,
        DeviceState::Disconnected if entry.server_id.is_none() => Some(Step::Register),
        DeviceState::Disconnected => Some(Step::Disconnect),
        DeviceState::Deleted if entry.server_id.is_none() => None,
        DeviceState::Deleted => Some(Step::Delete),
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

/// Codes that blame one event's input rather than a passing condition.
fn is_input_error(code: &str) -> bool {
    matches!(code, "BAD_USER_INPUT" | "NOT_FOUND" | "CONFLICT")
}

impl Session {
    /// Serves one connection until it ends.
    async fn run_link(&mut self, socket: Socket) -> End {
        let mut link = Link::new(socket);
        match self.serve(&mut link).await {
            Ok(()) => End::Stopped,
            Err(end) => {
                // A closing handshake, best effort and bounded (a hung
                // server must not hold up a shutdown), when we end it.
                if matches!(end, End::Stopped | End::Fatal(_)) {
                    let close = link.socket.close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "gateway stopping".into(),
                    }));
                    let _ = timeout(Duration::from_secs(1), close).await;
                }
                self.forget_link(link);
                end
            }
        }
    }

    /// What was in flight on a lost connection waits for the next one.
    fn forget_link(&mut self, link: Link) {
        for (_, op) in link.ops {
            if let Op::Respond(respond) = op {
                self.responds.push_front(respond);
            }
        }
    }

    async fn serve(&mut self, link: &mut Link) -> Result<(), End> {
        self.on_connected(link).await?;
        let keepalive = self.shared.options.keepalive_interval;
        let silence = self.shared.options.keepalive_timeout;
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        loop {
            self.pump(link).await?;
            let retry_at = link.publish_retry_at;
            tokio::select! {
                // A message from the server (cancel-safe).
                message = link.socket.next() => {
                    link.last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => self.on_message(link, &text).await?,
                        Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                        Some(Ok(Message::Binary(_))) => {
                            return Err(End::Lost("the server sent a binary message".into()))
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(End::Lost(err.to_string())),
                        None => return Err(End::Lost("the connection closed".into())),
                    }
                }
                // A caller's request (cancel-safe).
                request = self.requests.recv() => match request {
                    Some(request) => self.accept(request, Some(link)),
                    None => return Err(End::Stopped),
                },
                // A reader made room in its stream.
                Some(resume) = self.resume_rx.recv() => self.resume(resume, Some(link)),
                // Keep-alive: ping, and give up on a silent server.
                _ = ping.tick() => {
                    if link.last_heard.elapsed() > silence {
                        return Err(End::Lost(format!("the server was silent for {silence:?}")));
                    }
                    link.send(ClientMessage::Ping {}).await?;
                }
                // The pause after a failed publish is over.
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    link.publish_retry_at = None;
                }
                // New events in the outbox (a stored permit: cancel-safe).
                _ = self.shared.outbox_ready.notified() => self.outbox_dirty = true,
                // Shutdown.
                _ = self.stop.changed() => return Err(End::Stopped),
            }
        }
    }

    /// Brings a fresh connection up to date.
    async fn on_connected(&mut self, link: &mut Link) -> Result<(), End> {
        let devices = self.shared.devices.lock().await.snapshot();
        for entry in devices {
            if next_step(&entry, false).is_some() {
                link.queue_sync(entry.spec.external_id);
            }
        }
        link.commands_wanted = self.commands.is_some() && !self.commands_paused;
        link.pending_event_subs = self
            .event_subs
            .iter()
            .filter(|(_, sub)| !sub.paused)
            .map(|(id, _)| *id)
            .collect();
        self.outbox_dirty = true;
        self.publish_delay = PUBLISH_RETRY_MIN;
        Ok(())
    }

    /// Starts whatever is waiting and fits.
    async fn pump(&mut self, link: &mut Link) -> Result<(), End> {
        if link.commands_wanted && link.has_room() {
            link.commands_wanted = false;
            if self.commands.as_ref().is_some_and(|s| !s.is_closed()) {
                link.start(&fields(COMMANDS, COMMAND_FIELDS), json!({}), Op::Commands)
                    .await?;
            }
        }
        while link.has_room() {
            let Some(id) = link.pending_event_subs.pop() else {
                break;
            };
            self.start_event_sub(link, id).await?;
        }
        while link.has_room() {
            let Some(external_id) = link.sync_queue.pop_front() else {
                break;
            };
            self.start_sync(link, external_id).await?;
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
            link.start(RESPOND, variables, Op::Respond(respond)).await?;
        }
        if !link.publishing
            && link.publish_retry_at.is_none()
            && self.outbox_dirty
            && link.has_room()
        {
            self.publish(link).await?;
        }
        Ok(())
    }

    async fn start_event_sub(&mut self, link: &mut Link, id: u64) -> Result<(), End> {
        let Some(sub) = self.event_subs.get(&id) else {
            return Ok(());
        };
        if sub.sender.is_closed() {
            self.event_subs.remove(&id);
            return Ok(());
        }
        let filter = serde_json::to_value(&sub.filter).expect("BUG: filters serialise");
        match sub.after {
            // Pin the starting point first, so a reconnect before the first
            // event still resumes without a gap.
            None => {
                link.start(
                    LATEST_EVENT,
                    json!({"filter": filter}),
                    Op::LatestEvent { sub: id },
                )
                .await?;
            }
            Some(after) => {
                let variables = json!({"filter": filter, "after": after.to_string()});
                link.start(
                    &fields(EVENTS, EVENT_FIELDS),
                    variables,
                    Op::Events { sub: id },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Sends the next step for a device, or answers its waiters when there
    /// is none.
    async fn start_sync(&mut self, link: &mut Link, external_id: String) -> Result<(), End> {
        let (entry, generation) = {
            let devices = self.shared.devices.lock().await;
            (devices.get(&external_id), devices.generation(&external_id))
        };
        let Some(entry) = entry else {
            self.answer_sync(&external_id, Ok(None));
            return Ok(());
        };
        let Some(step) = next_step(&entry, link.bound.contains(&external_id)) else {
            if entry.state == DeviceState::Deleted {
                self.forget_device(&external_id).await;
                self.answer_sync(&external_id, Ok(None));
            } else {
                let device = self.last_device.get(&external_id).cloned();
                self.answer_sync(&external_id, Ok(device));
            }
            return Ok(());
        };
        let server_id = entry.server_id.clone().unwrap_or_default();
        let (query, variables) = match step {
            Step::Register => (
                fields(REGISTER, DEVICE_FIELDS),
                json!({"input": entry.spec.to_input()}),
            ),
            Step::Update => (
                fields(UPDATE, DEVICE_FIELDS),
                json!({"id": server_id, "input": entry.spec.to_update_input()}),
            ),
            Step::Disconnect => (fields(DISCONNECT, DEVICE_FIELDS), json!({"id": server_id})),
            Step::Delete => (DELETE.to_owned(), json!({"id": server_id})),
        };
        link.syncing.insert(external_id.clone());
        link.start(
            &query,
            variables,
            Op::Sync {
                external_id,
                step,
                generation,
            },
        )
        .await?;
        Ok(())
    }

    fn answer_sync(&mut self, external_id: &str, result: Result<Option<Device>, Error>) {
        for waiter in self.sync_waiters.remove(external_id).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }

    /// Forgets a device whose deletion the platform confirmed, unless the
    /// gateway registered it again meanwhile.
    async fn forget_device(&mut self, external_id: &str) {
        let shared = self.shared.clone();
        let mut devices = shared.devices.lock().await;
        if devices.get_ref(external_id).map(|entry| entry.state) != Some(DeviceState::Deleted) {
            return;
        }
        devices.forget(external_id);
        if let Err(error) = shared.outbox.forget_device(external_id).await {
            tracing::error!(%error, external_id, "cannot forget a deleted device");
        }
        drop(devices);
        self.last_device.remove(external_id);
        self.external_ids
            .retain(|_, external| external != external_id);
    }

    /// Sends the oldest events of the outbox, or rejects those that can
    /// never be sent.
    async fn publish(&mut self, link: &mut Link) -> Result<(), End> {
        let options = &self.shared.options;
        let max_events = if link.isolate_through.is_some() {
            1
        } else {
            options.batch_events
        };
        let rows = match self
            .shared
            .outbox
            .peek(max_events, options.batch_bytes)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox");
                link.publish_retry_at = Some(Instant::now() + PUBLISH_RETRY_MAX);
                return Ok(());
            }
        };
        if rows.is_empty() {
            self.outbox_dirty = false;
            return Ok(());
        }
        // One pass under the device lock: the prefix of rows that can go
        // now (with their inputs), stopping at a row that must wait for its
        // device's registration or can never be sent.
        let mut batch = Vec::new();
        let mut inputs = Vec::new();
        let mut unsendable = None;
        {
            let devices = self.shared.devices.lock().await;
            for row in rows {
                let device = &row.event.device;
                let entry = devices
                    .get_ref(device)
                    .filter(|entry| entry.state != DeviceState::Deleted);
                let Some(entry) = entry else {
                    let why = format!("device {device:?} is not managed by this gateway any more");
                    unsendable = Some((row, why));
                    break;
                };
                let syncing = link.syncing.contains(device) || link.sync_queue.contains(device);
                match &entry.server_id {
                    // Wait for a registration in progress: events follow
                    // their device, in order.
                    _ if syncing && entry.state == DeviceState::Active => break,
                    None if syncing => break,
                    Some(server_id) => {
                        inputs.push(publish_input(server_id, &row));
                        batch.push(row);
                    }
                    None => {
                        let why =
                            format!("device {device:?} could not be registered on the platform");
                        unsendable = Some((row, why));
                        break;
                    }
                }
            }
        }
        if let Some((row, why)) = unsendable {
            // The rows before it go first, then the loop looks again.
            if batch.is_empty() {
                self.reject(row, "NOT_FOUND", why).await;
                return Ok(());
            }
        }
        if batch.is_empty() {
            // Waiting for a device; a sync answer wakes us up.
            self.outbox_dirty = false;
            return Ok(());
        }
        link.publishing = true;
        link.start(
            PUBLISH,
            json!({"events": inputs}),
            Op::Publish { rows: batch },
        )
        .await?;
        Ok(())
    }

    /// Removes an event the server will never accept and tells its waiter.
    async fn reject(&mut self, row: OutboxRow, code: &str, message: String) {
        tracing::error!(
            device = %row.event.device,
            service = %row.event.service,
            key = %row.event.idempotency_key,
            code,
            %message,
            "event rejected; removed from the outbox"
        );
        if let Err(error) = self.shared.outbox.remove(&[row.seq]).await {
            tracing::error!(%error, "cannot remove a rejected event from the outbox");
        }
        self.shared.answer_event(
            &row.event.idempotency_key,
            Err(Error::Rejected {
                code: code.to_owned(),
                message,
            }),
        );
        self.outbox_dirty = true;
    }

    async fn on_message(&mut self, link: &mut Link, text: &str) -> Result<(), End> {
        let message: ServerMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(err) => {
                return Err(End::Lost(format!(
                    "the server sent a message that is not graphql-transport-ws ({err})"
                )));
            }
        };
        match message {
            ServerMessage::Ping => link.send(ClientMessage::Pong {}).await?,
            ServerMessage::Pong | ServerMessage::ConnectionAck => {}
            ServerMessage::Next { id, payload } => self.on_result(link, &id, payload).await?,
            ServerMessage::Error { id, payload } => {
                // The operation is over (the server sends no `complete`).
                let error = server_error(&payload);
                match link.ops.remove(&id) {
                    Some(Op::Commands) => {
                        tracing::error!(%error, "the command subscription was refused");
                        if is_credential_error(&error) {
                            return Err(End::Fatal(Error::Unauthorized(format!(
                                "the API key may not receive commands: {error}"
                            ))));
                        }
                    }
                    Some(Op::Events { sub }) => {
                        if let Some(sub) = self.event_subs.remove(&sub) {
                            let _ = sub.sender.try_send(Err(error));
                        }
                    }
                    Some(op) => {
                        link.ops.insert(id.clone(), op);
                        let response = Response {
                            data: None,
                            errors: payload,
                        };
                        self.on_result(link, &id, response).await?;
                        link.ops.remove(&id);
                    }
                    None => {}
                }
            }
            ServerMessage::Complete { id } => {
                if let Some(op) = link.ops.remove(&id) {
                    self.on_complete(link, op);
                }
            }
        }
        Ok(())
    }

    /// A subscription ended by the server.
    fn on_complete(&mut self, link: &mut Link, op: Op) {
        match op {
            Op::Commands => {
                tracing::warn!("the server ended the command subscription");
            }
            Op::Events { sub } => {
                // Resume it later rather than end the reader's stream.
                if self.event_subs.contains_key(&sub) {
                    tracing::warn!(sub, "the server ended an event subscription; resuming");
                    link.pending_event_subs.push(sub);
                }
            }
            // A result that never came: try again on this connection.
            Op::Publish { .. } => link.publishing = false,
            Op::Sync { external_id, .. } => {
                link.syncing.remove(&external_id);
            }
            Op::Respond(respond) => self.responds.push_back(respond),
            Op::LatestEvent { sub } => link.pending_event_subs.push(sub),
            Op::Done => {}
        }
    }

    async fn on_result(
        &mut self,
        link: &mut Link,
        id: &str,
        response: Response,
    ) -> Result<(), End> {
        // Streams stay registered; one-shot operations are answered now and
        // their `complete` ignored.
        let Some(op) = link.ops.get(id) else {
            return Ok(());
        };
        match op {
            Op::Commands => return self.on_command(link, id, response).await,
            Op::Events { sub } => {
                let sub = *sub;
                return self.on_event(link, id, sub, response).await;
            }
            _ => {}
        }
        // Keep the id reserved until the server's `complete`.
        let op = link
            .ops
            .insert(id.to_owned(), Op::Done)
            .expect("BUG: checked above");
        match op {
            Op::Sync {
                external_id,
                step,
                generation,
            } => {
                link.syncing.remove(&external_id);
                self.on_sync_result(link, external_id, step, generation, response)
                    .await
            }
            Op::Respond(respond) => {
                let result = if response.errors.is_empty() {
                    Ok(())
                } else {
                    Err(server_error(&response.errors))
                };
                let _ = respond.reply.send(result);
                Ok(())
            }
            Op::Publish { rows } => {
                link.publishing = false;
                self.on_publish_result(link, rows, response).await
            }
            Op::LatestEvent { sub } => {
                if let Some(sub_entry) = self.event_subs.get_mut(&sub) {
                    if let Some(error) = response.errors.first() {
                        let error = Error::Server {
                            code: error.code(),
                            message: error.message.clone(),
                        };
                        let _ = sub_entry.sender.try_send(Err(error));
                        self.event_subs.remove(&sub);
                        return Ok(());
                    }
                    let latest = response
                        .data
                        .as_ref()
                        .and_then(|data| data["events"]["edges"][0]["node"]["id"].as_str())
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(0);
                    sub_entry.after = Some(latest);
                    link.pending_event_subs.push(sub);
                }
                Ok(())
            }
            Op::Commands | Op::Events { .. } | Op::Done => Ok(()),
        }
    }

    async fn on_sync_result(
        &mut self,
        link: &mut Link,
        external_id: String,
        step: Step,
        generation: u64,
        response: Response,
    ) -> Result<(), End> {
        let shared = self.shared.clone();
        if !response.errors.is_empty() {
            let error = server_error(&response.errors);
            if is_credential_error(&error) {
                return Err(End::Fatal(Error::Unauthorized(format!(
                    "the API key may not manage devices: {error}"
                ))));
            }
            let gone = matches!(&error, Error::Server { code, .. } if code == "NOT_FOUND");
            if gone && step != Step::Register {
                // Deleted on the platform meanwhile: forget the old id and
                // start over (a delete is then done).
                let mut devices = shared.devices.lock().await;
                if let Some(mut entry) = devices.get(&external_id) {
                    entry.server_id = None;
                    devices.replace(entry.clone());
                    save(&shared, &entry).await;
                }
                drop(devices);
                link.queue_sync(external_id);
                return Ok(());
            }
            tracing::error!(%error, external_id, ?step, "the platform refused a device change");
            self.answer_sync(&external_id, Err(error));
            return Ok(());
        }
        let data = response.data.unwrap_or(Value::Null);
        let device = match step {
            Step::Delete => None,
            Step::Register => data.get("registerDevice").cloned(),
            Step::Update => data.get("updateDevice").cloned(),
            Step::Disconnect => data.get("disconnectDevice").cloned(),
        };
        let device: Option<Device> = match device.map(serde_json::from_value).transpose() {
            Ok(device) => device,
            Err(err) => {
                return Err(End::Lost(format!(
                    "the server's device does not parse: {err}"
                )));
            }
        };
        // Held across the save, so memory and file agree.
        let mut devices = shared.devices.lock().await;
        let Some(mut entry) = devices.get(&external_id) else {
            return Ok(());
        };
        // A caller changed the device since this step was sent: the change
        // is not done yet.
        let current = devices.generation(&external_id) == generation;
        if let Some(device) = &device {
            entry.server_id = Some(device.id.clone());
            self.external_ids
                .insert(device.id.clone(), external_id.clone());
            self.last_device.insert(external_id.clone(), device.clone());
        }
        match step {
            Step::Register if entry.state == DeviceState::Active => {
                link.bound.insert(external_id.clone());
                // registerDevice keeps fields it is not given, so a location
                // cleared on the gateway needs an update to follow.
                let location_to_clear = entry.spec.location.is_none()
                    && device.as_ref().is_some_and(|d| d.location.is_some());
                if !(entry.dirty && location_to_clear) {
                    entry.dirty &= !current;
                }
            }
            Step::Register => {}
            Step::Update => entry.dirty &= !current,
            Step::Disconnect => {
                link.bound.remove(&external_id);
                entry.dirty &= !current;
            }
            Step::Delete => {
                link.bound.remove(&external_id);
                entry.server_id = None;
            }
        }
        devices.replace(entry.clone());
        save(&shared, &entry).await;
        drop(devices);
        // Next step, or answer the waiters.
        link.queue_sync(external_id);
        self.outbox_dirty = true;
        Ok(())
    }

    async fn on_publish_result(
        &mut self,
        link: &mut Link,
        rows: Vec<OutboxRow>,
        response: Response,
    ) -> Result<(), End> {
        if response.errors.is_empty() {
            let stored = response
                .data
                .as_ref()
                .and_then(|data| data.get("publishEvents"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if stored.len() != rows.len() {
                return Err(End::Lost(format!(
                    "the server acknowledged {} of {} events",
                    stored.len(),
                    rows.len()
                )));
            }
            let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
            if let Err(error) = self.shared.outbox.remove(&seqs).await {
                // Sent again later; the server stores each key once.
                tracing::error!(%error, "cannot remove acknowledged events from the outbox");
            }
            for (row, stored) in rows.iter().zip(stored) {
                let ack = ack_of(&stored, &row.event.idempotency_key);
                self.shared.answer_event(&row.event.idempotency_key, ack);
            }
            if let Some(through) = link.isolate_through
                && rows.last().is_some_and(|row| row.seq >= through)
            {
                link.isolate_through = None;
            }
            self.publish_delay = PUBLISH_RETRY_MIN;
            self.outbox_dirty = true;
            return Ok(());
        }
        let error = server_error(&response.errors);
        if is_credential_error(&error) {
            return Err(End::Fatal(Error::Unauthorized(format!(
                "the API key may not publish events: {error}"
            ))));
        }
        let Error::Server { code, message } = error else {
            unreachable!("BUG: server_error returns Error::Server")
        };
        if is_input_error(&code) {
            if rows.len() == 1 {
                let row = rows.into_iter().next().expect("BUG: one row");
                self.reject(row, &code, message).await;
            } else {
                // One of them is bad: send them one at a time to find it.
                link.isolate_through = rows.last().map(|row| row.seq);
                self.outbox_dirty = true;
            }
            return Ok(());
        }
        tracing::warn!(%code, %message, retry_in = ?self.publish_delay, "publishing failed; will retry");
        link.publish_retry_at = Some(Instant::now() + self.publish_delay);
        self.publish_delay = (self.publish_delay * 2).min(PUBLISH_RETRY_MAX);
        Ok(())
    }

    async fn on_command(
        &mut self,
        link: &mut Link,
        id: &str,
        response: Response,
    ) -> Result<(), End> {
        if !response.errors.is_empty() {
            let error = server_error(&response.errors);
            tracing::error!(%error, "the command subscription failed");
            link.ops.remove(id);
            if is_credential_error(&error) {
                return Err(End::Fatal(Error::Unauthorized(format!(
                    "the API key may not receive commands: {error}"
                ))));
            }
            return Ok(());
        }
        let Some(sender) = self.commands.clone() else {
            return link.complete(id).await;
        };
        let wire = response
            .data
            .and_then(|mut data| data.get_mut("commands").map(Value::take))
            .map(serde_json::from_value::<WireCommand>);
        let wire = match wire {
            Some(Ok(wire)) => wire,
            other => {
                tracing::error!(?other, "a command does not parse; ignored");
                return Ok(());
            }
        };
        let command = Command {
            device: self
                .external_ids
                .get(&wire.device_id)
                .cloned()
                .unwrap_or_default(),
            id: wire.id,
            device_id: wire.device_id,
            service: wire.service,
            payload: wire.payload,
            expires_at: wire.expires_at,
        };
        match sender.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(command)) => {
                // The reader is behind: stop the subscription and start it
                // again once it made room; the server hands over every open
                // command again, this one included.
                tracing::debug!(command = %command.id, "command reader behind; pausing");
                self.commands_paused = true;
                link.complete(id).await?;
                let resume = self.resume_tx.clone();
                tokio::spawn(async move {
                    if let Ok(permit) = sender.reserve().await {
                        drop(permit);
                        let _ = resume.send(Resume::Commands);
                    }
                });
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.commands = None;
                link.complete(id).await
            }
        }
    }

    async fn on_event(
        &mut self,
        link: &mut Link,
        id: &str,
        sub_id: u64,
        response: Response,
    ) -> Result<(), End> {
        let Some(sub) = self.event_subs.get_mut(&sub_id) else {
            return link.complete(id).await;
        };
        let item = if let Some(error) = response.errors.first() {
            Err(Error::Server {
                code: error.code(),
                message: error.message.clone(),
            })
        } else {
            let wire = response
                .data
                .and_then(|mut data| data.get_mut("events").map(Value::take))
                .map(serde_json::from_value::<WireEvent>);
            match wire {
                Some(Ok(wire)) => match ReceivedEvent::try_from(wire) {
                    Ok(event) => Ok(event),
                    Err(reason) => return Err(End::Lost(reason)),
                },
                other => {
                    return Err(End::Lost(format!("an event does not parse: {other:?}")));
                }
            }
        };
        let event_id = item.as_ref().ok().map(|event| event.id);
        match sub.sender.try_send(item) {
            Ok(()) => {
                if let Some(event_id) = event_id {
                    sub.after = Some(event_id);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Stop here and resume after the last delivered event once
                // the reader made room: nothing lost, nothing buffered.
                sub.paused = true;
                let sender = sub.sender.clone();
                link.complete(id).await?;
                let resume = self.resume_tx.clone();
                tokio::spawn(async move {
                    if let Ok(permit) = sender.reserve().await {
                        drop(permit);
                        let _ = resume.send(Resume::Events(sub_id));
                    }
                });
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.event_subs.remove(&sub_id);
                link.complete(id).await
            }
        }
    }
}

/// One event as `publishEvents` takes it.
fn publish_input(server_id: &str, row: &OutboxRow) -> Value {
    let event = &row.event;
    let payload: Value = serde_json::from_str(&event.payload)
        .expect("BUG: the outbox holds payloads that were valid JSON");
    json!({
        "deviceId": server_id,
        "service": event.service,
        "payload": payload,
        "occurredAt": event.occurred_at,
        "idempotencyKey": event.idempotency_key,
    })
}

async fn save(shared: &ConnectorShared, entry: &DeviceEntry) {
    if let Err(error) = shared.outbox.save_device(entry).await {
        tracing::error!(%error, external_id = %entry.spec.external_id, "cannot save a device");
    }
}

fn ack_of(stored: &Value, key: &str) -> Result<EventAck, Error> {
    let id = stored["id"].as_str().and_then(|id| id.parse().ok());
    let received_at = stored["receivedAt"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
    match (id, received_at) {
        (Some(id), Some(received_at)) => Ok(EventAck {
            id,
            received_at: received_at.to_utc(),
            idempotency_key: key.to_owned(),
        }),
        _ => Err(Error::Server {
            code: "UNKNOWN".into(),
            message: format!("the server's acknowledgement does not parse: {stored}"),
        }),
    }
}

/// What the session does with one text message from the server, without a
/// socket: decode it and every part of it the session would read (errors,
/// commands, publish acknowledgements). For the fuzzer (`fuzz/`).
pub(crate) fn decode_server_text(text: &str) {
    let Ok(message) = serde_json::from_str::<ServerMessage>(text) else {
        return;
    };
    match message {
        ServerMessage::Next { payload, .. } => {
            if !payload.errors.is_empty() {
                let _ = is_credential_error(&server_error(&payload.errors));
            }
            if let Some(data) = payload.data {
                if let Some(command) = data.get("commands") {
                    let _ = serde_json::from_value::<WireCommand>(command.clone());
                }
                if let Some(stored) = data.get("publishEvents").and_then(Value::as_array) {
                    for stored in stored {
                        let _ = ack_of(stored, "key");
                    }
                }
            }
        }
        ServerMessage::Error { payload, .. } => {
            let _ = server_error(&payload);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..40 {
            let delay = backoff(attempt, min, max);
            let step = (min * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(delay >= step / 2 && delay <= step, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn device_steps_follow_the_wanted_state() {
        let mut entry = DeviceEntry {
            spec: crate::DeviceSpec::new("d"),
            state: DeviceState::Active,
            server_id: None,
            dirty: true,
        };
        assert_eq!(next_step(&entry, false), Some(Step::Register));
        entry.server_id = Some("id".into());
        assert_eq!(next_step(&entry, true), Some(Step::Update));
        entry.dirty = false;
        assert_eq!(next_step(&entry, true), None);
        assert_eq!(next_step(&entry, false), Some(Step::Register));
        entry.state = DeviceState::Disconnected;
        assert_eq!(next_step(&entry, false), None);
        entry.dirty = true;
        assert_eq!(next_step(&entry, false), Some(Step::Disconnect));
        entry.server_id = None;
        assert_eq!(next_step(&entry, false), Some(Step::Register));
        entry.state = DeviceState::Deleted;
        assert_eq!(next_step(&entry, false), None);
        entry.server_id = Some("id".into());
        assert_eq!(next_step(&entry, false), Some(Step::Delete));
    }
}
