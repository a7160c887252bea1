//! The bus: fan-out of what was committed to the live subscribers of this
//! node, and the lossless event stream built on it.
//!
//! Publishers hand the bus rows that are already committed; each message is
//! wrapped in an `Arc` once and shared by every subscriber, never copied per
//! subscriber. The channels are bounded `broadcast` rings: a publisher never
//! waits for a subscriber, and a subscriber that falls more than `capacity`
//! messages behind is told it lagged. [`event_stream`] then catches up from
//! the store by cursor and rejoins the ring: nothing is lost, only read from
//! a different place.
//!
//! Event messages are published in increasing id order. On SQLite the
//! ingest writer, the only writer of events, publishes each batch after it
//! commits. On PostgreSQL several nodes write, so events reach the bus only
//! through the relay (`postgres`), which reads them from the store in id
//! order; commits are serialised by an advisory lock, so reading "ids above
//! the last one published" never skips an event committed later.
//!
//! # Layout
//! - this module: the rings, the lossless [`event_stream`], live filters;
//! - `device_stream`: the lossless stream of device changes
//!   ([`device_changes`]), resynced from the store after a lag;
//! - `command_stream`: a gateway's command delivery
//!   ([`command_delivery`]) and one command's transitions
//!   ([`command_updates`]), resynced the same way;
//! - `postgres`: the relay between nodes over `LISTEN/NOTIFY`;
//! - `revocations`: revoked credentials, read from the store on every node.

/// A gateway's command delivery and one command's transitions.
mod command_stream;
/// The lossless stream of device changes one subscriber sees.
mod device_stream;
/// Fan-out between nodes sharing a PostgreSQL database.
pub mod postgres;
/// Revoked credentials, from the store to this node's sockets.
pub mod revocations;

pub use command_stream::{command_delivery, command_updates};
pub use device_stream::device_changes;

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use async_graphql::futures_util::{FutureExt, Stream, StreamExt, future::BoxFuture};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use uuid::Uuid;

use crate::store::{
    DeviceFilter, EventFilter, Scope, Store, StoreError, StoredEvent,
    entity::{command, device, event},
};

/// A message's serialised forms for live subscriptions: one per distinct
/// selection (keyed by the id of the plan that renders it), made by the
/// first subscriber that asks and shared with the others.
#[derive(Debug, Default)]
pub struct Renderings(Mutex<Vec<(u64, Arc<str>)>>);

impl Renderings {
    /// The message as plan `plan` renders it: `render` runs for the first
    /// subscriber that asks; the others get its text.
    pub fn get_or_render(&self, plan: u64, render: impl FnOnce() -> String) -> Arc<str> {
        // A poisoned lock only means another subscriber panicked while
        // rendering; the cache itself is still a valid list.
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, text)) = cache.iter().find(|(id, _)| *id == plan) {
            return text.clone();
        }
        let text: Arc<str> = render().into();
        cache.push((plan, text.clone()));
        text
    }
}

/// An event as subscribers see it.
#[derive(Debug)]
pub struct BusEvent {
    pub event: Arc<event::Model>,
    /// The device's location when the event was stored, for location filters.
    pub location: Option<String>,
    pub renderings: Renderings,
}

impl BusEvent {
    pub fn new(event: Arc<event::Model>, location: Option<String>) -> Self {
        BusEvent {
            event,
            location,
            renderings: Renderings::default(),
        }
    }
}

impl From<StoredEvent> for BusEvent {
    fn from(stored: StoredEvent) -> Self {
        BusEvent::new(stored.event, stored.location)
    }
}

/// What happened to a device.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum, serde::Serialize, serde::Deserialize,
)]
pub enum DeviceChangeKind {
    /// Registered for the first time.
    Registered,
    /// Its description changed (or it was registered again).
    Updated,
    /// It went ONLINE, OFFLINE or DISCONNECTED.
    Status,
    /// It was deleted.
    Deleted,
}

/// A committed change of a device, with the device as it is now (as it was,
/// for DELETED).
#[derive(Debug)]
pub struct DeviceChange {
    pub kind: DeviceChangeKind,
    pub device: device::Model,
    pub renderings: Renderings,
}

impl DeviceChange {
    pub fn new(kind: DeviceChangeKind, device: device::Model) -> Self {
        DeviceChange {
            kind,
            device,
            renderings: Renderings::default(),
        }
    }
}

/// A committed command, new or in a new state.
#[derive(Debug)]
pub struct BusCommand {
    pub command: command::Model,
    pub renderings: Renderings,
}

impl BusCommand {
    pub fn new(command: command::Model) -> Self {
        BusCommand {
            command,
            renderings: Renderings::default(),
        }
    }
}

/// Revocation notices a socket may fall behind by before it checks its
/// credential against the store regardless.
const REVOCATIONS_CAPACITY: usize = 1024;

/// Handle on the bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    events: broadcast::Sender<Arc<BusEvent>>,
    devices: broadcast::Sender<Arc<DeviceChange>>,
    commands: broadcast::Sender<Arc<BusCommand>>,
    /// Users whose credentials changed: their connections check theirs.
    revocations: broadcast::Sender<Uuid>,
    /// Set on PostgreSQL: changes are also told to the other nodes, and
    /// events reach the rings through the relay.
    relay: Option<postgres::RelayLink>,
    /// Counts event subscribers that lagged and caught up from the store.
    catch_ups: Counter,
}

impl Bus {
    /// A bus for one node on its own (SQLite), whose rings hold `capacity`
    /// messages each; `catch_ups` counts event subscribers that lag.
    pub fn new(capacity: usize, catch_ups: Counter) -> Self {
        let capacity = capacity.max(1);
        Bus {
            events: broadcast::channel(capacity).0,
            devices: broadcast::channel(capacity).0,
            commands: broadcast::channel(capacity).0,
            revocations: broadcast::channel(REVOCATIONS_CAPACITY).0,
            relay: None,
            catch_ups,
        }
    }

    /// The ingest writer committed these events.
    pub fn events_committed(&self, events: Vec<BusEvent>) {
        match &self.relay {
            None => self.publish_events(events),
            // The relay reads them back in global id order.
            Some(relay) => relay.wake_pump(),
        }
    }

    /// Fans a committed device change out, here and to the other nodes.
    pub fn publish_device(&self, kind: DeviceChangeKind, device: device::Model) {
        if let Some(relay) = &self.relay {
            relay.tell_device(kind, &device);
        }
        self.publish_device_here(kind, device);
    }

    fn publish_device_here(&self, kind: DeviceChangeKind, device: device::Model) {
        let _ = self.devices.send(Arc::new(DeviceChange::new(kind, device)));
    }

    /// A receiver of every device change from now on.
    pub fn subscribe_devices(&self) -> broadcast::Receiver<Arc<DeviceChange>> {
        self.devices.subscribe()
    }

    /// Fans a committed command (new, or in a new state) out, here and to
    /// the other nodes. Returns the message subscribers here share.
    pub fn publish_command(&self, command: command::Model) -> Arc<BusCommand> {
        if let Some(relay) = &self.relay {
            relay.tell_command(command.id);
        }
        self.publish_command_here(command)
    }

    fn publish_command_here(&self, command: command::Model) -> Arc<BusCommand> {
        let message = Arc::new(BusCommand::new(command));
        // An error only means nobody is subscribed right now.
        let _ = self.commands.send(message.clone());
        message
    }

    /// A user's credentials changed. Only the revocation watcher publishes:
    /// every change, from whichever node or process, passes through the
    /// store.
    fn publish_revoked(&self, user_id: Uuid) {
        // An error only means nobody is subscribed right now.
        let _ = self.revocations.send(user_id);
    }

    /// A receiver of the users whose credentials change from now on.
    pub fn subscribe_revocations(&self) -> broadcast::Receiver<Uuid> {
        self.revocations.subscribe()
    }

    /// A receiver of every command change from now on.
    pub fn subscribe_commands(&self) -> broadcast::Receiver<Arc<BusCommand>> {
        self.commands.subscribe()
    }

    /// Fans committed events out, in the order given (increasing ids).
    fn publish_events(&self, events: impl IntoIterator<Item = BusEvent>) {
        for event in events {
            // An error only means nobody is subscribed right now.
            let _ = self.events.send(Arc::new(event));
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.events.subscribe()
    }
}

/// Whether a live event is one a subscriber with `scope` and `filter` sees;
/// the same rules the store applies to its queries.
pub fn event_matches(scope: Scope, filter: &EventFilter, message: &BusEvent) -> bool {
    let event = &message.event;
    if let Scope::Owner(owner) = scope
        && event.owner_id != owner
    {
        return false;
    }
    if let Some(ids) = &filter.device_ids
        && !ids.contains(&event.device_id)
    {
        return false;
    }
    if let Some(services) = &filter.services
        && !services.contains(&event.service)
    {
        return false;
    }
    if let Some(locations) = &filter.locations
        && !message
            .location
            .as_ref()
            .is_some_and(|location| locations.contains(location))
    {
        return false;
    }
    if filter.since.is_some_and(|since| event.received_at < since) {
        return false;
    }
    if filter.until.is_some_and(|until| event.received_at >= until) {
        return false;
    }
    true
}

/// What an event stream yields.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// Fresh from the ring: the message every subscriber of this node
    /// shares, with its cache of serialised forms.
    Live(Arc<BusEvent>),
    /// Read back from the store while replaying or catching up.
    Stored(Arc<event::Model>),
    /// Sent first when the requested `after` is below what retention has
    /// already deleted: events up to `pruned_through` are gone. The stream
    /// goes on with the oldest event still stored.
    Gap { pruned_through: i64 },
}

/// Events read from the store per query while replaying or catching up.
const CATCH_UP_PAGE: u64 = 1000;

/// Every event in `scope` matching `filter`, in id order, without gap or
/// duplicate: first those stored with ids above `after` (if given), then
/// live ones as they are committed. Without `after`, it starts with the next
/// event committed. If `after` is below what retention deleted, the first
/// item is a [`LiveEvent::Gap`]. After an error from the store it ends.
///
/// The ring is joined before the store is read, so nothing committed in
/// between is missed; ids already yielded are skipped when the ring repeats
/// them. When this subscriber lags behind the ring, it reads what it missed
/// from the store by cursor and carries on.
///
/// Written by hand rather than with `async-stream`: an idle subscriber is
/// this struct and a waiting ring receiver (a few hundred bytes), where a
/// generator would keep room for its largest store query in every idle
/// subscription (~2 KiB measured).
pub struct EventStream {
    store: Store,
    scope: Scope,
    filter: Arc<EventFilter>,
    ring: BroadcastStream<Arc<BusEvent>>,
    /// Every event with an id up to `seen` has been yielded or skipped.
    seen: i64,
    /// A store read under way: the starting point, or a page.
    reading: Option<BoxFuture<'static, Result<Read, StoreError>>>,
    /// The rest of the last page read.
    page: std::vec::IntoIter<event::Model>,
    /// Once `page` is yielded, read another page before going live.
    catching_up: bool,
    ended: bool,
    catch_ups: Counter,
}

/// What a store read of [`EventStream`] brings back.
enum Read {
    Start {
        gap: Option<i64>,
        seen: i64,
        catch_up: bool,
    },
    Page(Vec<event::Model>),
}

impl EventStream {
    pub fn new(
        store: Store,
        bus: &Bus,
        scope: Scope,
        filter: EventFilter,
        after: Option<i64>,
    ) -> Self {
        // Joined first: whatever commits while the store is read below is
        // in the ring.
        let ring = BroadcastStream::new(bus.subscribe_events());
        let start = {
            let store = store.clone();
            async move {
                let mut gap = None;
                if let Some(after) = after {
                    let pruned_through = store.events_pruned_through().await?;
                    if after < pruned_through {
                        gap = Some(pruned_through);
                    }
                }
                let seen = match after {
                    Some(after) => after,
                    None => store.last_event_id().await?,
                };
                Ok(Read::Start {
                    gap,
                    seen,
                    catch_up: after.is_some(),
                })
            }
        };
        EventStream {
            store,
            scope,
            filter: Arc::new(filter),
            ring,
            seen: 0,
            reading: Some(start.boxed()),
            page: Vec::new().into_iter(),
            catching_up: false,
            ended: false,
            catch_ups: bus.catch_ups.clone(),
        }
    }

    fn read_page(&mut self) {
        let (store, filter) = (self.store.clone(), self.filter.clone());
        let (scope, seen) = (self.scope, self.seen);
        self.reading = Some(
            async move {
                let page = store
                    .events_after(scope, &filter, seen, CATCH_UP_PAGE)
                    .await?;
                Ok(Read::Page(page))
            }
            .boxed(),
        );
    }
}

impl Stream for EventStream {
    type Item = Result<LiveEvent, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(event) = this.page.next() {
                this.seen = event.id;
                return Poll::Ready(Some(Ok(LiveEvent::Stored(Arc::new(event)))));
            }
            if this.catching_up && this.reading.is_none() {
                this.catching_up = false;
                this.read_page();
            }
            if let Some(reading) = &mut this.reading {
                let read = ready!(reading.poll_unpin(cx));
                this.reading = None;
                match read {
                    Err(err) => {
                        this.ended = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                    Ok(Read::Start {
                        gap,
                        seen,
                        catch_up,
                    }) => {
                        this.seen = seen;
                        this.catching_up = catch_up;
                        if let Some(pruned_through) = gap {
                            return Poll::Ready(Some(Ok(LiveEvent::Gap { pruned_through })));
                        }
                    }
                    Ok(Read::Page(events)) => {
                        // A full page: there may be more behind it.
                        this.catching_up = events.len() as u64 == CATCH_UP_PAGE;
                        this.page = events.into_iter();
                    }
                }
                continue;
            }
            match ready!(this.ring.poll_next_unpin(cx)) {
                Some(Ok(message)) => {
                    if message.event.id <= this.seen {
                        continue;
                    }
                    this.seen = message.event.id;
                    if event_matches(this.scope, &this.filter, &message) {
                        return Poll::Ready(Some(Ok(LiveEvent::Live(message))));
                    }
                }
                Some(Err(BroadcastStreamRecvError::Lagged(missed))) => {
                    tracing::debug!(
                        missed,
                        "an event subscriber lagged; catching up from the store"
                    );
                    this.catching_up = true;
                    this.catch_ups.inc();
                }
                None => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Whether a device change is one a subscriber with `scope` and `filter`
/// sees.
pub fn device_matches(scope: Scope, filter: &DeviceFilter, device: &device::Model) -> bool {
    if let Scope::Owner(owner) = scope
        && device.owner_id != owner
    {
        return false;
    }
    let within = |values: &Option<Vec<String>>, value: &str| {
        values
            .as_ref()
            .is_none_or(|values| values.iter().any(|v| v == value))
    };
    filter
        .ids
        .as_ref()
        .is_none_or(|ids| ids.contains(&device.id))
        && within(&filter.external_ids, &device.external_id)
        && within(&filter.types, &device.r#type)
        && filter.locations.as_ref().is_none_or(|locations| {
            device
                .location
                .as_ref()
                .is_some_and(|location| locations.contains(location))
        })
        && filter
            .status
            .as_ref()
            .is_none_or(|status| status.contains(&device.status))
}
