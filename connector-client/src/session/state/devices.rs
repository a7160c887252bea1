//! Device sync: one step at a time per device ([`next_step`]) until the
//! platform matches the gateway's entry; the entry saved after each
//! answer, its callers answered when nothing is left to do.

use serde_json::{Value, json};

use super::{End, Link, Op, State, fields, is_credential_error, server_error};
use crate::{
    Device, Error,
    connector::Registry,
    outbox::{DeviceEntry, DeviceState},
    protocol::Response,
    session::state::Action,
    types::DEVICE_FIELDS,
};

const REGISTER: &str =
    "mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { __FIELDS__ } }";
const UPDATE: &str = "mutation($id: ID!, $input: UpdateDeviceInput!) { updateDevice(id: $id, input: $input) { __FIELDS__ } }";
const DISCONNECT: &str = "mutation($id: ID!) { disconnectDevice(id: $id) { __FIELDS__ } }";
const DELETE: &str = "mutation($id: ID!) { deleteDevice(id: $id) }";

/// One step towards making the platform match a device entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Register,
    Update,
    Disconnect,
    Delete,
}

impl State {
    /// Sends the next step for a device, or answers its waiters when there
    /// is none.
    pub(super) fn start_sync(
        &mut self,
        link: &mut Link,
        external_id: String,
        devices: &mut Registry,
    ) {
        let generation = devices.generation(&external_id);
        let Some(entry) = devices.get(&external_id) else {
            self.answer_sync(&external_id, Ok(None));
            return;
        };
        let Some(step) = next_step(&entry, link.bound.contains(&external_id)) else {
            if entry.state == DeviceState::Deleted {
                self.forget_device(&external_id, devices);
                self.answer_sync(&external_id, Ok(None));
            } else {
                let device = self.last_device.get(&external_id).cloned();
                self.answer_sync(&external_id, Ok(device));
            }
            return;
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
        let op = Op::Sync {
            external_id,
            step,
            generation,
        };
        self.start(link, &query, variables, op);
    }

    pub(super) fn answer_sync(&mut self, external_id: &str, result: Result<Option<Device>, Error>) {
        if let Some(waiters) = self.sync_waiters.remove(external_id) {
            self.actions.push(Action::AnswerSync { waiters, result });
        }
    }

    /// Forgets a device whose deletion the platform confirmed, unless the
    /// gateway registered it again meanwhile.
    pub(super) fn forget_device(&mut self, external_id: &str, devices: &mut Registry) {
        if devices.get_ref(external_id).map(|entry| entry.state) != Some(DeviceState::Deleted) {
            return;
        }
        devices.forget(external_id);
        self.actions
            .push(Action::ForgetDevice(external_id.to_owned()));
        self.last_device.remove(external_id);
        self.external_ids
            .retain(|_, external| external != external_id);
    }

    pub(super) fn on_sync_result(
        &mut self,
        link: &mut Link,
        external_id: String,
        step: Step,
        generation: u64,
        response: Response,
        devices: &mut Registry,
    ) -> Result<(), End> {
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
                if let Some(mut entry) = devices.get(&external_id) {
                    entry.server_id = None;
                    devices.replace(entry.clone());
                    self.actions.push(Action::SaveDevice(entry));
                }
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
        self.actions.push(Action::SaveDevice(entry));
        // Next step, or answer the waiters.
        link.queue_sync(external_id);
        self.outbox_dirty = true;
        Ok(())
    }
}

/// The next step for a device, or `None` when the platform matches.
pub(crate) fn next_step(entry: &DeviceEntry, bound: bool) -> Option<Step> {
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
