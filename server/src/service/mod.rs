//! Actions on the platform's state, each one committing to the store and
//! then telling live subscribers (the bus), together: register, update,
//! disconnect and delete a device, send and answer a command, delete a user.
//!
//! Resolvers call these rather than the store and the bus one after the
//! other, so an action cannot be written somewhere and forgotten on the
//! bus. They take what the caller is allowed to touch (a [`Scope`] or an
//! owner) and input already checked by the API layer; they return the
//! store's errors, which the API maps to codes.
//!
//! Users, passwords and API keys are in [`accounts`]: their changes reach
//! sockets through the store's revocation notes rather than the bus, so
//! the CLI, which has no bus, uses them too. The hand-over of commands to
//! a gateway is not here: the delivery stream (`bus::command_stream`) does
//! it as it streams.

use uuid::Uuid;

/// Users, passwords and API keys.
pub mod accounts;

pub use accounts::{AccountError, Accounts};

use crate::{
    bus::{Bus, DeviceChangeKind},
    store::{
        DeviceRegistration, DeviceUpdate, NewCommand, RegisterOutcome, Scope, Store, StoreError,
        entity::{command, device, user},
    },
};

/// The actions, over one store and its bus.
pub struct Service<'a> {
    store: &'a Store,
    bus: &'a Bus,
}

impl<'a> Service<'a> {
    pub fn new(store: &'a Store, bus: &'a Bus) -> Self {
        Service { store, bus }
    }

    /// Creates `owner`'s device, or updates the one with the same external
    /// id; subscribers see REGISTERED or UPDATED.
    pub async fn register_device(
        &self,
        owner: Uuid,
        registration: DeviceRegistration,
    ) -> Result<device::Model, StoreError> {
        let (device, outcome) = self.store.register_device(owner, registration).await?;
        let kind = match outcome {
            RegisterOutcome::Created => DeviceChangeKind::Registered,
            RegisterOutcome::Updated => DeviceChangeKind::Updated,
        };
        self.bus.publish_device(kind, device.clone());
        Ok(device)
    }

    /// Changes a device's description; subscribers see UPDATED.
    pub async fn update_device(
        &self,
        id: Uuid,
        scope: Scope,
        update: DeviceUpdate,
    ) -> Result<device::Model, StoreError> {
        let device = self.store.update_device(id, scope, update).await?;
        self.bus
            .publish_device(DeviceChangeKind::Updated, device.clone());
        Ok(device)
    }

    /// Takes a device off its gateway; subscribers see STATUS
    /// (DISCONNECTED).
    pub async fn disconnect_device(
        &self,
        id: Uuid,
        scope: Scope,
    ) -> Result<device::Model, StoreError> {
        let device = self.store.disconnect_device(id, scope).await?;
        self.bus
            .publish_device(DeviceChangeKind::Status, device.clone());
        Ok(device)
    }

    /// Deletes a device with its events and commands; subscribers see
    /// DELETED. Returns the device as it was.
    pub async fn delete_device(&self, id: Uuid, scope: Scope) -> Result<device::Model, StoreError> {
        let device = self.store.delete_device(id, scope).await?;
        self.bus
            .publish_device(DeviceChangeKind::Deleted, device.clone());
        Ok(device)
    }

    /// Deletes a user and everything it owns; subscribers see each of its
    /// devices DELETED (its sockets close through the revocation note the
    /// store writes). Returns the user as it was.
    pub async fn delete_user(&self, id: Uuid) -> Result<user::Model, StoreError> {
        let (user, devices) = self.store.delete_user(id).await?;
        for device in devices {
            self.bus.publish_device(DeviceChangeKind::Deleted, device);
        }
        Ok(user)
    }

    /// Queues a command (PENDING) for a device in `scope`; the gateway
    /// hosting it and `commandUpdated` subscribers hear of it.
    pub async fn send_command(
        &self,
        scope: Scope,
        new: NewCommand,
    ) -> Result<command::Model, StoreError> {
        let command = self.store.insert_command(scope, new).await?;
        self.bus.publish_command(command.clone());
        Ok(command)
    }

    /// Answers a command (SUCCEEDED or FAILED) from the connector session
    /// hosting its device. On a CONFLICT (answered already, or expired just
    /// now) its watchers are told its current state all the same.
    pub async fn respond_command(
        &self,
        id: Uuid,
        scope: Scope,
        answering_session: Option<Uuid>,
        success: bool,
        result: Option<serde_json::Value>,
    ) -> Result<command::Model, StoreError> {
        let answered = self
            .store
            .respond_command(id, scope, answering_session, success, result)
            .await;
        match answered {
            Ok(command) => {
                self.bus.publish_command(command.clone());
                Ok(command)
            }
            Err(StoreError::Conflict(reason)) => {
                // It may have just expired: tell its watchers.
                if let Ok(current) = self.store.command_by_id(id, scope).await {
                    self.bus.publish_command(current);
                }
                Err(StoreError::Conflict(reason))
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, entity::Role};

    /// Every action is both committed and heard: what a subscriber on the
    /// bus receives is what the store now holds (real SQLite).
    #[tokio::test]
    async fn every_action_commits_and_publishes() {
        let (_dir, store) = Store::temporary().await;
        let bus = Bus::new(64, Default::default());
        let service = Service::new(&store, &bus);
        let owner = store
            .create_user("owner", "x".into(), Role::Member)
            .await
            .unwrap()
            .id;
        let mut devices = bus.subscribe_devices();
        let mut commands = bus.subscribe_commands();
        let scope = Scope::Owner(owner);

        let created = service
            .register_device(owner, DeviceRegistration::of("relay"))
            .await
            .unwrap();
        let again = service
            .register_device(owner, DeviceRegistration::of("relay"))
            .await
            .unwrap();
        let update = DeviceUpdate {
            name: Some("Pump relay".into()),
            r#type: None,
            location: None,
            attributes: None,
        };
        let updated = service
            .update_device(created.id, scope, update)
            .await
            .unwrap();
        let disconnected = service.disconnect_device(created.id, scope).await.unwrap();

        let new = NewCommand {
            device_id: created.id,
            service: "set".into(),
            payload: serde_json::json!({"on": true}),
            expires_at: store::now() + chrono::Duration::seconds(60),
        };
        let sent = service.send_command(scope, new).await.unwrap();
        assert_eq!(commands.recv().await.unwrap().command, sent);
        // Only the session hosting the device may answer; the device is
        // hosted by none, so the answer is refused and nothing is heard.
        assert!(
            service
                .respond_command(sent.id, scope, Some(Uuid::new_v4()), true, None)
                .await
                .is_err()
        );

        let deleted = service.delete_device(created.id, scope).await.unwrap();
        assert!(store.device_by_id(created.id, scope).await.is_err());

        let heard: Vec<_> = std::iter::from_fn(|| devices.try_recv().ok())
            .map(|change| (change.kind, change.device.clone()))
            .collect();
        assert_eq!(
            heard,
            [
                (DeviceChangeKind::Registered, created),
                (DeviceChangeKind::Updated, again),
                (DeviceChangeKind::Updated, updated),
                (DeviceChangeKind::Status, disconnected),
                (DeviceChangeKind::Deleted, deleted),
            ]
        );

        // A user's deletion: each of its devices DELETED.
        let kept = service
            .register_device(owner, DeviceRegistration::of("thermometer"))
            .await
            .unwrap();
        let _ = devices.recv().await.unwrap();
        service.delete_user(owner).await.unwrap();
        let gone = devices.recv().await.unwrap();
        assert_eq!(
            (gone.kind, gone.device.id),
            (DeviceChangeKind::Deleted, kept.id)
        );
    }
}
