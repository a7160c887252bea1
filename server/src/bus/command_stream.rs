//! The live command streams: the delivery stream of a gateway's connector
//! session (`commands`), which hands each command over and marks it
//! DELIVERED, and one command's transitions (`commandUpdated`). Both are
//! lossless: after a lag they read the store and rejoin the ring.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use uuid::Uuid;

use super::{Bus, BusCommand, DeviceChange, DeviceChangeKind};
use crate::store::{
    ConnectorSession, Scope, Store, StoreError,
    entity::{CommandStatus, DeviceStatus, command},
};

/// How many delivered command ids a delivery stream remembers to skip
/// repeats (a command seen both in the initial query and on the ring).
const REMEMBERED_DELIVERIES: usize = 4096;

/// What woke a delivery stream up.
enum Wake {
    Command(Result<Arc<BusCommand>, RecvError>),
    Device(Result<Arc<DeviceChange>, RecvError>),
}

/// The commands a connector session should receive, marking each DELIVERED.
///
/// The stream keeps the ids of the devices bound to its session (read at
/// the start and after a lag, then kept from the device changes on the bus),
/// so a new command costs no store query in the sessions that do not host
/// its device: a user's hundred gateways do not each look up every command.
/// The set is a filter, not the authority: the hand-over marks a command
/// DELIVERED only if its device is still bound to this session, in one
/// statement.
pub fn command_delivery(
    store: Store,
    bus: Bus,
    scope: Scope,
    session: ConnectorSession,
) -> impl Stream<Item = Result<Arc<BusCommand>, StoreError>> + Send + 'static {
    async_stream::try_stream! {
        let mut commands = bus.subscribe_commands();
        let mut devices = bus.subscribe_devices();
        let mut hosted: HashSet<Uuid> = HashSet::new();
        let mut delivered: HashSet<Uuid> = HashSet::new();
        let mut order: VecDeque<Uuid> = VecDeque::new();
        // Open commands for the session's devices: at the start, after a lag,
        // and when a device is bound to this session.
        let mut resync = true;
        loop {
            if resync {
                resync = false;
                hosted = store.session_device_ids(session.id).await?.into_iter().collect();
                for command in store.open_commands_for_session(session.id).await? {
                    if delivered.insert(command.id) {
                        order.push_back(command.id);
                        if let Some(message) =
                            hand_over(&store, &bus, &session, Arc::new(BusCommand::new(command))).await?
                        {
                            yield message;
                        }
                    }
                }
            }
            while order.len() > REMEMBERED_DELIVERIES {
                if let Some(old) = order.pop_front() {
                    delivered.remove(&old);
                }
            }
            // `yield` and `?` cannot sit inside `select!`: pick, then act.
            let wake = tokio::select! {
                // A new or changed command. Cancel-safe.
                message = commands.recv() => Wake::Command(message),
                // A device changed (maybe bound to this session). Cancel-safe.
                message = devices.recv() => Wake::Device(message),
            };
            match wake {
                Wake::Command(Ok(message)) => {
                    let command = &message.command;
                    let ours = command.status == CommandStatus::Pending
                        && hosted.contains(&command.device_id)
                        && !delivered.contains(&command.id)
                        && match scope {
                            Scope::All => true,
                            Scope::Owner(owner) => command.owner_id == owner,
                        };
                    if ours {
                        delivered.insert(command.id);
                        order.push_back(command.id);
                        if let Some(message) = hand_over(&store, &bus, &session, message).await? {
                            yield message;
                        }
                    }
                }
                Wake::Device(Ok(change)) => {
                    let device = &change.device;
                    let bound = change.kind != DeviceChangeKind::Deleted
                        && device.session_id == Some(session.id)
                        && device.status == DeviceStatus::Online;
                    if bound {
                        // Deliver what waited for it (a command may also have
                        // passed on the ring before this change did).
                        resync = hosted.insert(device.id);
                    } else {
                        hosted.remove(&device.id);
                    }
                }
                Wake::Command(Err(RecvError::Lagged(_))) | Wake::Device(Err(RecvError::Lagged(_))) => {
                    resync = true;
                }
                Wake::Command(Err(RecvError::Closed)) | Wake::Device(Err(RecvError::Closed)) => break,
            }
        }
    }
}

/// Marks a command DELIVERED (and says so on the bus) before it is handed to
/// the gateway, so the gateway's answer always comes after DELIVERED.
/// A command already DELIVERED (listed again after a reconnect: delivery is
/// at least once) is handed over as it is; `None` when it is no longer this
/// session's to deliver (answered, expired, or its device is bound
/// elsewhere now).
async fn hand_over(
    store: &Store,
    bus: &Bus,
    session: &ConnectorSession,
    message: Arc<BusCommand>,
) -> Result<Option<Arc<BusCommand>>, StoreError> {
    if message.command.status == CommandStatus::Delivered {
        return Ok(Some(message));
    }
    Ok(store
        .mark_delivered(message.command.id, session.id)
        .await?
        // The message its watchers get: rendered once for both.
        .map(|updated| bus.publish_command(updated)))
}

/// One command's transitions, starting with `current`, until it is final.
pub fn command_updates(
    store: Store,
    mut ring: broadcast::Receiver<Arc<BusCommand>>,
    scope: Scope,
    current: command::Model,
) -> impl Stream<Item = Result<Arc<BusCommand>, StoreError>> + Send + 'static {
    async_stream::try_stream! {
        let id = current.id;
        let mut last = (current.status, current.updated_at);
        let done = !current.status.is_open();
        yield Arc::new(BusCommand::new(current));
        if done {
            return;
        }
        loop {
            let latest = match ring.recv().await {
                Ok(message) if message.command.id == id => message,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {
                    Arc::new(BusCommand::new(store.command_by_id(id, scope).await?))
                }
                Err(RecvError::Closed) => break,
            };
            let command = &latest.command;
            if (command.status, command.updated_at) == last {
                continue;
            }
            last = (command.status, command.updated_at);
            let done = !command.status.is_open();
            yield latest;
            if done {
                break;
            }
        }
    }
}
