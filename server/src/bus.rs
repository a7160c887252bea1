//! The bus: fan-out of what was committed to the live subscribers of this
//! node.
//!
//! Publishers hand the bus rows that are already committed; each message is
//! wrapped in an `Arc` once and shared by every subscriber, never copied per
//! subscriber. The channels are bounded `broadcast` rings: a publisher never
//! waits for a subscriber, and a subscriber that falls more than `capacity`
//! messages behind is told it lagged (it then catches up from the store by
//! cursor and rejoins; see `graphql::subscriptions`). Nothing is lost, only
//! read from a different place.
//!
//! Event messages are published in increasing id order: the ingest writer is
//! the only publisher of events and commits batches one at a time.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::{StoredEvent, entity::event};

/// An event as subscribers see it.
#[derive(Debug)]
pub struct BusEvent {
    pub event: event::Model,
    /// The device's location when the event was stored, for location filters.
    pub location: Option<String>,
}

impl From<StoredEvent> for BusEvent {
    fn from(stored: StoredEvent) -> Self {
        BusEvent {
            event: stored.event,
            location: stored.location,
        }
    }
}

/// Handle on the bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    events: broadcast::Sender<Arc<BusEvent>>,
}

impl Bus {
    /// A bus whose rings hold `capacity` messages each.
    pub fn new(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.max(1));
        Bus { events }
    }

    /// Fans committed events out, in the order given (increasing ids).
    pub fn publish_events(&self, events: impl IntoIterator<Item = BusEvent>) {
        for event in events {
            // An error only means nobody is subscribed right now.
            let _ = self.events.send(Arc::new(event));
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.events.subscribe()
    }

    /// How many event subscribers are listening.
    pub fn event_subscribers(&self) -> usize {
        self.events.receiver_count()
    }
}
