//! The revocation watcher: every node reads the notes of changed
//! credentials recorded in the store (by itself, another node, or the CLI
//! in another process) about twice a second, and publishes each once on its
//! bus, where the user's sockets hear it, check their credential against
//! the store, and close if it no longer holds (4403).
//!
//! Rows are read by time, over the last [`WINDOW`], not by "ids above the
//! last one seen": on PostgreSQL a lower id can commit after a higher one.
//! The ids published within the window are remembered, so each row is
//! published once. A note heard late (or again, after a restart) closes
//! nothing it should not: sockets close on what the store says now, not on
//! the note.

use std::{collections::HashSet, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use super::Bus;
use crate::store::{self, Store};

/// How often the store is read.
pub const POLL: Duration = Duration::from_millis(500);
/// How far back each read looks: longer than any write transaction, and
/// than the clock skew between nodes.
const WINDOW: chrono::Duration = chrono::Duration::minutes(2);

/// Starts the watcher; it ends when `stop` turns true.
pub fn spawn(store: Store, bus: Bus, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = HashSet::new();
        loop {
            tokio::select! {
                // Shutdown: cancel-safe, nothing is in flight between ticks.
                _ = crate::stopped(&mut stop) => break,
                // Next read: cancel-safe.
                _ = tick.tick() => {
                    match store.revocations_since(store::now() - WINDOW).await {
                        Ok(rows) => {
                            for (_, user) in rows.iter().filter(|(id, _)| !seen.contains(id)) {
                                bus.publish_revoked(*user);
                            }
                            seen = rows.into_iter().map(|(id, _)| id).collect();
                        }
                        Err(err) => tracing::warn!(error = %err, "reading revocations failed"),
                    }
                }
            }
        }
    })
}
