//! Presence: which devices are ONLINE, keyed by the connector session that
//! hosts them.
//!
//! A device registered over a connector session (a WebSocket whose
//! `connection_init` names a `connectorId`) is ONLINE and bound to that
//! session and this node. When the session ends — closed, broken, or silent
//! past the keep-alive timeout — its devices go OFFLINE with `lastSeenAt`.
//! Only devices still bound to *that* session are touched, so a late close
//! of an old session never marks OFFLINE a device a newer session has
//! already brought back.
//!
//! Nodes heartbeat into the `nodes` table. At start and then periodically,
//! a node sets OFFLINE the devices of nodes that stopped heartbeating (a
//! crash, a kill -9) — and on a single node, at start, every device left
//! ONLINE by the previous run.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use crate::{
    bus::{Bus, DeviceChangeKind},
    stopped,
    store::{Store, StoreError},
};

/// How often a node heartbeats and looks for dead nodes.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A node silent this long is dead.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Handle on this node's presence bookkeeping. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Presence {
    node_id: Uuid,
    store: Store,
    bus: Bus,
}

impl Presence {
    /// Registers this node and releases devices left ONLINE by dead ones.
    pub async fn start(node_id: Uuid, store: Store, bus: Bus) -> Result<Presence, StoreError> {
        let presence = Presence {
            node_id,
            store,
            bus,
        };
        presence.store.heartbeat_node(presence.node_id).await?;
        presence.release_dead_nodes().await?;
        Ok(presence)
    }

    /// This node's id.
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// A connector session ended: its devices go OFFLINE.
    pub async fn session_closed(&self, session_id: Uuid) {
        match self.store.release_session(session_id).await {
            Ok(devices) => {
                for device in devices {
                    self.bus.publish_device(DeviceChangeKind::Status, device);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, %session_id, "releasing a session's devices failed")
            }
        }
    }

    async fn release_dead_nodes(&self) -> Result<(), StoreError> {
        let cutoff = crate::store::now()
            - chrono::Duration::from_std(NODE_TIMEOUT).expect("BUG: constant in range");
        let released = self
            .store
            .release_devices_of_dead_nodes(self.node_id, cutoff)
            .await?;
        for device in released {
            self.bus.publish_device(DeviceChangeKind::Status, device);
        }
        Ok(())
    }

    /// Heartbeats and releases dead nodes' devices until `stop`; then
    /// removes this node.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    // Shutdown: cancel-safe.
                    _ = stopped(&mut stop) => break,
                    // Heartbeat: cancel-safe between ticks.
                    _ = tick.tick() => {
                        if let Err(err) = self.store.heartbeat_node(self.node_id).await {
                            tracing::warn!(error = %err, "node heartbeat failed");
                        }
                        if let Err(err) = self.release_dead_nodes().await {
                            tracing::warn!(error = %err, "releasing dead nodes' devices failed");
                        }
                    }
                }
            }
            if let Err(err) = self.store.remove_node(self.node_id).await {
                tracing::warn!(error = %err, "removing this node failed");
            }
        })
    }
}
