//! The relay between nodes sharing one PostgreSQL database.
//!
//! Nodes tell each other about new rows with `NOTIFY` on the channel
//! [`CHANNEL`]; a notice carries ids only (hints), and the rows are read
//! from the store. Notices are lost while a listener reconnects, so they are
//! never trusted to be complete:
//!
//! - Events: every batch commit sends one notice inside its transaction
//!   (`NOTIFY` costs a global lock at commit: one per batch, not per event).
//!   Any notice, the local ingest writer, a reconnect of the listener, or a
//!   one-second tick wakes the pump, which publishes every event with an id
//!   above the last one it published, in id order. Because commits are
//!   serialised by an advisory lock (see `Store::insert_event_batch`), no
//!   event can appear later with a smaller id.
//! - Device and command changes: a notice per change, sent after commit; the
//!   other nodes read the row and publish it on their own rings. A DELETED
//!   device is gone from the store, so its notice carries a snapshot.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};
use uuid::Uuid;

use super::{Bus, BusEvent, DeviceChangeKind};
use crate::{
    stopped,
    store::{Scope, Store, StoreError, entity::device},
};

/// The `LISTEN/NOTIFY` channel.
pub const CHANNEL: &str = "ferrite";

/// Notices waiting to be sent; beyond this, notices are dropped (and
/// logged): the other nodes then miss a device or command change, never an
/// event.
const OUTBOX: usize = 10_000;

/// Events read from the store per pump query.
const PUMP_PAGE: u64 = 1000;

/// How often the pump looks for events even without a notice.
const PUMP_TICK: Duration = Duration::from_secs(1);

/// What one node tells the others.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Notice {
    /// New events were committed.
    #[serde(rename = "e")]
    Events,
    /// A device changed.
    #[serde(rename = "d")]
    Device {
        node: Uuid,
        id: Uuid,
        kind: DeviceChangeKind,
        /// The device as it was, for DELETED (attributes left out to stay
        /// within NOTIFY's 8000-byte payload limit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<Box<device::Model>>,
    },
    /// A command was sent or changed state.
    #[serde(rename = "c")]
    Command { node: Uuid, id: Uuid },
}

/// The bus's side of the relay.
#[derive(Clone, Debug)]
pub struct RelayLink {
    node: Uuid,
    outbox: mpsc::Sender<Notice>,
    pump: Arc<Notify>,
}

impl RelayLink {
    pub(super) fn wake_pump(&self) {
        self.pump.notify_one();
    }

    pub(super) fn tell_device(&self, kind: DeviceChangeKind, device: &device::Model) {
        let snapshot = (kind == DeviceChangeKind::Deleted).then(|| {
            let mut snapshot = device.clone();
            snapshot.attributes = serde_json::Value::Object(Default::default());
            Box::new(snapshot)
        });
        self.send(Notice::Device {
            node: self.node,
            id: device.id,
            kind,
            snapshot,
        });
    }

    pub(super) fn tell_command(&self, id: Uuid) {
        self.send(Notice::Command {
            node: self.node,
            id,
        });
    }

    fn send(&self, notice: Notice) {
        if let Err(err) = self.outbox.try_send(notice) {
            tracing::warn!(error = %err, "the NOTIFY outbox is full; a change is not relayed to other nodes");
        }
    }
}

/// What the relay task needs; made with the bus, started with the server.
pub struct Relay {
    outbox: mpsc::Receiver<Notice>,
    pump: Arc<Notify>,
    url: String,
    node: Uuid,
}

impl Bus {
    /// A bus for a node sharing PostgreSQL with others. Start the returned
    /// relay with [`Relay::spawn`].
    pub fn relayed(
        capacity: usize,
        catch_ups: Counter,
        node: Uuid,
        database_url: &str,
    ) -> (Bus, Relay) {
        let (outbox_tx, outbox) = mpsc::channel(OUTBOX);
        let pump = Arc::new(Notify::new());
        let mut bus = Bus::new(capacity, catch_ups);
        bus.relay = Some(RelayLink {
            node,
            outbox: outbox_tx,
            pump: pump.clone(),
        });
        (
            bus,
            Relay {
                outbox,
                pump,
                url: database_url.to_owned(),
                node,
            },
        )
    }
}

impl Relay {
    /// Runs the relay until `stop`.
    pub fn spawn(self, store: Store, bus: Bus, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(store, bus, stop))
    }

    async fn run(mut self, store: Store, bus: Bus, mut stop: watch::Receiver<bool>) {
        let (heard_tx, mut heard) = mpsc::channel::<Option<String>>(1024);
        let listener = tokio::spawn(listen(self.url.clone(), heard_tx, stop.clone()));
        let mut head = match store.last_event_id().await {
            Ok(head) => head,
            Err(err) => {
                tracing::error!(error = %err, "the relay cannot read the last event id");
                0
            }
        };
        let mut tick = tokio::time::interval(PUMP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut pump = false;
            tokio::select! {
                // Shutdown. Cancel-safe.
                _ = stopped(&mut stop) => break,
                // The local writer committed events. Cancel-safe.
                _ = self.pump.notified() => pump = true,
                // A notice from any node (None: the listener reconnected and
                // may have missed some). Cancel-safe.
                Some(payload) = heard.recv() => match payload {
                    None => pump = true,
                    Some(payload) => match serde_json::from_str::<Notice>(&payload) {
                        Ok(Notice::Events) => pump = true,
                        Ok(notice) => relay_change(&store, &bus, self.node, notice).await,
                        Err(err) => tracing::warn!(error = %err, "an unreadable NOTIFY payload"),
                    },
                },
                // A notice to send. Cancel-safe.
                Some(notice) = self.outbox.recv() => {
                    let payload = serde_json::to_string(&notice).expect("BUG: notices serialise");
                    if let Err(err) = store.notify(CHANNEL, &payload).await {
                        tracing::warn!(error = %err, "NOTIFY failed");
                    }
                }
                // The safety net: look anyway. Cancel-safe.
                _ = tick.tick() => pump = true,
            }
            if pump {
                match pump_events(&store, &bus, head).await {
                    Ok(next) => head = next,
                    Err(err) => tracing::warn!(error = %err, "the event pump failed; retrying"),
                }
            }
        }
        listener.abort();
    }
}

/// Publishes every event above `head`, in id order; returns the new head.
async fn pump_events(store: &Store, bus: &Bus, mut head: i64) -> Result<i64, StoreError> {
    loop {
        let page = store.events_after_with_location(head, PUMP_PAGE).await?;
        let full = page.len() as u64 == PUMP_PAGE;
        if let Some(last) = page.last() {
            head = last.0.id;
        }
        bus.publish_events(
            page.into_iter()
                .map(|(event, location)| BusEvent::new(Arc::new(event), location)),
        );
        if !full {
            return Ok(head);
        }
    }
}

/// Publishes another node's device or command change on this node's rings.
async fn relay_change(store: &Store, bus: &Bus, me: Uuid, notice: Notice) {
    match notice {
        Notice::Device { node, .. } | Notice::Command { node, .. } if node == me => {}
        Notice::Device {
            kind: DeviceChangeKind::Deleted,
            snapshot: Some(snapshot),
            ..
        } => bus.publish_device_here(DeviceChangeKind::Deleted, *snapshot),
        Notice::Device { id, kind, .. } => match store.device_by_id(id, Scope::All).await {
            Ok(device) => bus.publish_device_here(kind, device),
            Err(StoreError::NotFound) => {}
            Err(err) => tracing::warn!(error = %err, "reading a relayed device failed"),
        },
        Notice::Command { id, .. } => match store.command_by_id(id, Scope::All).await {
            Ok(command) => {
                bus.publish_command_here(command);
            }
            Err(StoreError::NotFound) => {}
            Err(err) => tracing::warn!(error = %err, "reading a relayed command failed"),
        },
        Notice::Events => {}
    }
}

/// Listens on [`CHANNEL`] and forwards payloads; `None` after a reconnect
/// (notices may have been lost). Runs in its own task so that no
/// notification is lost to a cancelled `select!` branch.
async fn listen(url: String, heard: mpsc::Sender<Option<String>>, mut stop: watch::Receiver<bool>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; retrying");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything sent before we listened is read by the pump.
        if heard.send(None).await.is_err() {
            return;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if heard
                        .send(Some(notification.payload().to_owned()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // The connection dropped; it reconnects on the next call.
                Ok(None) => {
                    if heard.send(None).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
