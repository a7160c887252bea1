//! What the library sends and receives: device descriptions, events,
//! commands. Field names follow the GraphQL API (camelCase on the wire).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Longest external id, name, type, location and service, in characters
/// (the server's limit).
pub const TEXT_MAX: usize = 128;

/// A device as the gateway describes it. The `external_id` is the
/// gateway's own name for it (unique per owner on the platform).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub external_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
}

impl DeviceSpec {
    /// A device with only its external id; the server names it after it.
    pub fn new(external_id: impl Into<String>) -> Self {
        DeviceSpec {
            external_id: external_id.into(),
            name: None,
            device_type: None,
            location: None,
            attributes: None,
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn device_type(mut self, device_type: impl Into<String>) -> Self {
        self.device_type = Some(device_type.into());
        self
    }

    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    pub fn attributes(mut self, attributes: Value) -> Self {
        self.attributes = Some(attributes);
        self
    }

    /// Checks the limits the server would check, so a bad description is
    /// refused at once instead of on every reconnect.
    pub fn validate(&self, attributes_max_bytes: usize) -> Result<(), Error> {
        check_text("external id", &self.external_id)?;
        for (what, value) in [
            ("name", &self.name),
            ("type", &self.device_type),
            ("location", &self.location),
        ] {
            if let Some(value) = value {
                check_text(what, value)?;
            }
        }
        if let Some(attributes) = &self.attributes {
            if !attributes.is_object() {
                return Err(Error::InvalidInput(
                    "attributes must be a JSON object".into(),
                ));
            }
            check_json("attributes", attributes)?;
            let size = attributes.to_string().len();
            if size > attributes_max_bytes {
                return Err(Error::InvalidInput(format!(
                    "attributes are {size} bytes as JSON, more than {attributes_max_bytes}"
                )));
            }
        }
        Ok(())
    }

    /// `registerDevice` input.
    pub(crate) fn to_input(&self) -> Value {
        let mut input = serde_json::Map::new();
        input.insert("externalId".into(), self.external_id.clone().into());
        if let Some(name) = &self.name {
            input.insert("name".into(), name.clone().into());
        }
        if let Some(device_type) = &self.device_type {
            input.insert("type".into(), device_type.clone().into());
        }
        if let Some(location) = &self.location {
            input.insert("location".into(), location.clone().into());
        }
        if let Some(attributes) = &self.attributes {
            input.insert("attributes".into(), attributes.clone());
        }
        Value::Object(input)
    }

    /// `updateDevice` input: every field, so the platform ends up exactly
    /// as described (a missing location clears it).
    pub(crate) fn to_update_input(&self) -> Value {
        serde_json::json!({
            "name": self.name.clone().unwrap_or_else(|| self.external_id.clone()),
            "type": self.device_type.clone().unwrap_or_else(|| "generic".into()),
            "location": self.location,
            "attributes": self.attributes.clone().unwrap_or_else(|| serde_json::json!({})),
        })
    }
}

/// A change to a device's description; fields left `None` stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    pub device_type: Option<String>,
    /// `Some(None)` clears the location.
    pub location: Option<Option<String>>,
    pub attributes: Option<Value>,
}

impl DeviceUpdate {
    pub(crate) fn apply(self, spec: &mut DeviceSpec) {
        if let Some(name) = self.name {
            spec.name = Some(name);
        }
        if let Some(device_type) = self.device_type {
            spec.device_type = Some(device_type);
        }
        if let Some(location) = self.location {
            spec.location = location;
        }
        if let Some(attributes) = self.attributes {
            spec.attributes = Some(attributes);
        }
    }
}

/// Where a device stands on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    Online,
    Offline,
    Disconnected,
}

/// A device as the platform stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The platform's id (a UUID), used in event filters and by other clients.
    pub id: String,
    pub external_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub device_type: String,
    pub location: Option<String>,
    pub attributes: Value,
    pub status: DeviceStatus,
    pub connector_id: Option<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// The selection the library asks for whenever the server returns a device.
pub(crate) const DEVICE_FIELDS: &str =
    "id externalId name type location attributes status connectorId lastSeenAt";

/// An event to publish for one of the gateway's devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub device: String,
    pub service: String,
    pub payload: Value,
    pub occurred_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
}

impl Event {
    /// An event of the device with this external id.
    pub fn new(device: impl Into<String>, service: impl Into<String>, payload: Value) -> Self {
        Event {
            device: device.into(),
            service: service.into(),
            payload,
            occurred_at: None,
            idempotency_key: None,
        }
    }

    /// When it happened by the device's clock. Default: when the event was
    /// handed to the library (`event`, `publish`, `queue`), so an event that
    /// waited in the outbox keeps the time it was taken.
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// Your own key (1–128 characters). Publishing the same key twice for a
    /// device stores the event once. Default: a fresh UUID per event.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The server's confirmation that an event is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventAck {
    /// The event's id on the platform (the subscription cursor).
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub idempotency_key: String,
}

/// An event received from an `events` subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedEvent {
    pub id: i64,
    /// The platform id of the device.
    pub device_id: String,
    /// The device's external id, when the subscriber may see the device.
    pub external_id: Option<String>,
    pub service: String,
    pub payload: Value,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

pub(crate) const EVENT_FIELDS: &str =
    "id deviceId device { externalId } service payload occurredAt receivedAt";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireEvent {
    id: String,
    device_id: String,
    device: Option<WireDeviceRef>,
    service: String,
    payload: Value,
    occurred_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDeviceRef {
    external_id: String,
}

impl TryFrom<WireEvent> for ReceivedEvent {
    type Error = String;

    fn try_from(wire: WireEvent) -> Result<Self, String> {
        Ok(ReceivedEvent {
            id: wire
                .id
                .parse()
                .map_err(|_| format!("event id {:?} is not an integer", wire.id))?,
            device_id: wire.device_id,
            external_id: wire.device.map(|device| device.external_id),
            service: wire.service,
            payload: wire.payload,
            occurred_at: wire.occurred_at,
            received_at: wire.received_at,
        })
    }
}

/// Which events an `events` subscription receives. Empty lists match all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Platform device ids ([`Device::id`]).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub device_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub services: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub locations: Vec<String>,
}

impl EventFilter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn device_ids<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.device_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    pub fn services<S: Into<String>>(mut self, services: impl IntoIterator<Item = S>) -> Self {
        self.services = services.into_iter().map(Into::into).collect();
        self
    }

    pub fn locations<S: Into<String>>(mut self, locations: impl IntoIterator<Item = S>) -> Self {
        self.locations = locations.into_iter().map(Into::into).collect();
        self
    }
}

/// A command for one of the gateway's devices. Answer it with
/// [`Connector::respond`](crate::Connector::respond).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub id: String,
    /// The platform id of the device.
    pub device_id: String,
    /// The device's external id (the gateway's name for it).
    pub device: String,
    pub service: String,
    pub payload: Value,
    pub expires_at: DateTime<Utc>,
}

pub(crate) const COMMAND_FIELDS: &str = "id deviceId service payload expiresAt";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCommand {
    pub id: String,
    pub device_id: String,
    pub service: String,
    pub payload: Value,
    pub expires_at: DateTime<Utc>,
}

/// Refuses empty or over-long names, and names with control characters,
/// the way the server does.
pub(crate) fn check_text(what: &str, value: &str) -> Result<(), Error> {
    let length = value.chars().count();
    if length == 0 || length > TEXT_MAX {
        return Err(Error::InvalidInput(format!(
            "{what} must be 1–{TEXT_MAX} characters, got {length}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{what} must not contain control characters: {value:?}"
        )));
    }
    Ok(())
}

/// Refuses JSON the server cannot store: PostgreSQL's `jsonb` has no
/// character U+0000, so the server refuses it in any string or key on
/// every backend. Checked here so such an event never enters the outbox.
pub(crate) fn check_json(what: &str, value: &Value) -> Result<(), Error> {
    fn contains_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(contains_nul),
            Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || contains_nul(value)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if contains_nul(value) {
        return Err(Error::InvalidInput(format!(
            "{what} must not contain the character U+0000 (\\u0000)"
        )));
    }
    Ok(())
}
