//! Queries on `devices`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    Scope, Store, StoreError,
    entity::{DeviceStatus, device, device_tombstone},
    is_unique_violation, now,
    page::{Order, Page, PageArgs, fetch_page},
    scoped, status_history,
};

/// Which devices a list returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub ids: Option<Vec<Uuid>>,
    pub external_ids: Option<Vec<String>>,
    pub types: Option<Vec<String>>,
    pub locations: Option<Vec<String>>,
    pub status: Option<Vec<DeviceStatus>>,
}

impl DeviceFilter {
    fn condition(&self) -> Condition {
        let mut all = Condition::all();
        if let Some(ids) = &self.ids {
            all = all.add(device::Column::Id.is_in(ids.iter().copied()));
        }
        if let Some(external_ids) = &self.external_ids {
            all = all.add(device::Column::ExternalId.is_in(external_ids.iter().cloned()));
        }
        if let Some(types) = &self.types {
            all = all.add(device::Column::Type.is_in(types.iter().cloned()));
        }
        if let Some(locations) = &self.locations {
            all = all.add(device::Column::Location.is_in(locations.iter().cloned()));
        }
        if let Some(status) = &self.status {
            all = all.add(device::Column::Status.is_in(status.iter().copied()));
        }
        all
    }
}

/// A device as a gateway describes it when registering.
#[derive(Debug, Clone)]
pub struct DeviceRegistration {
    pub external_id: String,
    /// Kept as is on re-registration when `None`; defaults to the external id.
    pub name: Option<String>,
    /// Kept as is on re-registration when `None`; defaults to `generic`.
    pub r#type: Option<String>,
    pub location: Option<String>,
    pub attributes: Option<Json>,
    /// The connector session registering it, if any: the device is then ONLINE
    /// and bound to that session.
    pub session: Option<ConnectorSession>,
}

impl DeviceRegistration {
    /// A registration of `external_id` alone, outside any connector session:
    /// the defaults for a new device, nothing changed on an existing one.
    pub fn of(external_id: impl Into<String>) -> Self {
        DeviceRegistration {
            external_id: external_id.into(),
            name: None,
            r#type: None,
            location: None,
            attributes: None,
            session: None,
        }
    }
}

/// A gateway's WebSocket session: devices it registers are bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorSession {
    /// Unique per socket.
    pub id: Uuid,
    /// The node the socket is connected to.
    pub node_id: Uuid,
    /// The gateway's own name for itself, from `connection_init`.
    pub connector_id: String,
}

/// Whether `register_device` created the device or updated an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    Created,
    Updated,
}

/// A partial update: `None` leaves a field alone; `Some(None)` clears an
/// optional one.
#[derive(Debug, Clone, Default)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    pub r#type: Option<String>,
    pub location: Option<Option<String>>,
    pub attributes: Option<Json>,
}

/// The type of a device registered without one.
pub const DEFAULT_DEVICE_TYPE: &str = "generic";

impl Store {
    /// How many devices of every tenant are in each status, for `/metrics`;
    /// a status no device has is left out.
    pub async fn device_count_by_status(&self) -> Result<Vec<(DeviceStatus, u64)>, StoreError> {
        let counts = device::Entity::find()
            .select_only()
            .column(device::Column::Status)
            .column_as(device::Column::Id.count(), "count")
            .group_by(device::Column::Status)
            .into_tuple::<(DeviceStatus, i64)>()
            .all(&self.db)
            .await?;
        Ok(counts
            .into_iter()
            .map(|(status, count)| (status, count.max(0) as u64))
            .collect())
    }

    pub async fn device_by_id(&self, id: Uuid, scope: Scope) -> Result<device::Model, StoreError> {
        scoped(
            device::Entity::find_by_id(id),
            scope,
            device::Column::OwnerId,
        )
        .one(&self.db)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// A page of devices, oldest first.
    pub async fn list_devices(
        &self,
        scope: Scope,
        filter: &DeviceFilter,
        args: PageArgs<Uuid>,
        default_size: u64,
    ) -> Result<Page<device::Model>, StoreError> {
        let query = scoped(device::Entity::find(), scope, device::Column::OwnerId)
            .filter(filter.condition());
        fetch_page(
            &self.db,
            query,
            device::Column::Id,
            Order::Ascending,
            args,
            default_size,
        )
        .await
    }

    pub async fn count_devices(
        &self,
        scope: Scope,
        filter: &DeviceFilter,
    ) -> Result<u64, StoreError> {
        Ok(
            scoped(device::Entity::find(), scope, device::Column::OwnerId)
                .filter(filter.condition())
                .count(&self.db)
                .await?,
        )
    }

    /// Creates the device `owner` knows as `external_id`, or updates it if it
    /// exists (an upsert keyed by owner and external id).
    pub async fn register_device(
        &self,
        owner: Uuid,
        registration: DeviceRegistration,
    ) -> Result<(device::Model, RegisterOutcome), StoreError> {
        // Two registrations of a new external id can race on PostgreSQL; the
        // loser hits the unique index and retries as an update.
        match self.try_register_device(owner, &registration).await {
            Err(StoreError::Database(err)) if is_unique_violation(&err) => {
                self.try_register_device(owner, &registration).await
            }
            other => other,
        }
    }

    async fn try_register_device(
        &self,
        owner: Uuid,
        registration: &DeviceRegistration,
    ) -> Result<(device::Model, RegisterOutcome), StoreError> {
        let tx = self.begin_write().await?;
        let existing = device::Entity::find()
            .filter(device::Column::OwnerId.eq(owner))
            .filter(device::Column::ExternalId.eq(&registration.external_id))
            .one(&tx)
            .await?;
        let at = now();
        let session = registration.session.as_ref();
        let connector_id = session.map(|s| s.connector_id.clone());
        let session_id = session.map(|s| s.id);
        let node_id = session.map(|s| s.node_id);
        let (saved, outcome) = match existing {
            Some(found) => {
                let was_disconnected = found.status == DeviceStatus::Disconnected;
                let (status_before, session_before) = (found.status, found.session_id);
                let mut model: device::ActiveModel = found.into();
                if let Some(name) = &registration.name {
                    model.name = Set(name.clone());
                }
                if let Some(kind) = &registration.r#type {
                    model.r#type = Set(kind.clone());
                }
                if let Some(location) = &registration.location {
                    model.location = Set(Some(location.clone()));
                }
                if let Some(attributes) = &registration.attributes {
                    model.attributes = Set(attributes.clone());
                }
                // Registered over a session: ONLINE and bound to it. Over
                // HTTP: the device keeps its presence, but a DISCONNECTED one
                // is back on the platform, OFFLINE.
                if session.is_some() {
                    model.status = Set(DeviceStatus::Online);
                    model.connector_id = Set(connector_id);
                    model.session_id = Set(session_id);
                    model.node_id = Set(node_id);
                    model.last_seen_at = Set(Some(at));
                } else if was_disconnected {
                    model.status = Set(DeviceStatus::Offline);
                }
                model.updated_at = Set(at);
                let saved = model.update(&tx).await?;
                // A new status, or ONLINE on another session (a gateway
                // that reconnected before its old socket was noticed gone).
                if saved.status != status_before || saved.session_id != session_before {
                    status_history::record(&tx, &saved, at).await?;
                }
                (saved, RegisterOutcome::Updated)
            }
            None => {
                let model = device::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    owner_id: Set(owner),
                    external_id: Set(registration.external_id.clone()),
                    name: Set(registration
                        .name
                        .clone()
                        .unwrap_or_else(|| registration.external_id.clone())),
                    r#type: Set(registration
                        .r#type
                        .clone()
                        .unwrap_or_else(|| DEFAULT_DEVICE_TYPE.to_owned())),
                    location: Set(registration.location.clone()),
                    attributes: Set(registration
                        .attributes
                        .clone()
                        .unwrap_or_else(|| Json::Object(Default::default()))),
                    status: Set(if session.is_some() {
                        DeviceStatus::Online
                    } else {
                        DeviceStatus::Offline
                    }),
                    connector_id: Set(connector_id),
                    last_seen_at: Set(session.map(|_| at)),
                    created_at: Set(at),
                    updated_at: Set(at),
                    session_id: Set(session_id),
                    node_id: Set(node_id),
                };
                let saved = model.insert(&tx).await?;
                status_history::record(&tx, &saved, at).await?;
                (saved, RegisterOutcome::Created)
            }
        };
        tx.commit().await?;
        Ok((saved, outcome))
    }

    pub async fn update_device(
        &self,
        id: Uuid,
        scope: Scope,
        update: DeviceUpdate,
    ) -> Result<device::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = scoped(
            device::Entity::find_by_id(id),
            scope,
            device::Column::OwnerId,
        )
        .one(&tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut model: device::ActiveModel = found.into();
        if let Some(name) = update.name {
            model.name = Set(name);
        }
        if let Some(kind) = update.r#type {
            model.r#type = Set(kind);
        }
        if let Some(location) = update.location {
            model.location = Set(location);
        }
        if let Some(attributes) = update.attributes {
            model.attributes = Set(attributes);
        }
        model.updated_at = Set(now());
        let saved = model.update(&tx).await?;
        tx.commit().await?;
        Ok(saved)
    }

    /// Takes a device off its gateway: DISCONNECTED and unbound, but kept.
    pub async fn disconnect_device(
        &self,
        id: Uuid,
        scope: Scope,
    ) -> Result<device::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = scoped(
            device::Entity::find_by_id(id),
            scope,
            device::Column::OwnerId,
        )
        .one(&tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let at = now();
        let was_online = found.status == DeviceStatus::Online;
        let was_disconnected = found.status == DeviceStatus::Disconnected;
        let mut model: device::ActiveModel = found.into();
        model.status = Set(DeviceStatus::Disconnected);
        model.connector_id = Set(None);
        model.session_id = Set(None);
        model.node_id = Set(None);
        if was_online {
            model.last_seen_at = Set(Some(at));
        }
        model.updated_at = Set(at);
        let saved = model.update(&tx).await?;
        if !was_disconnected {
            status_history::record(&tx, &saved, at).await?;
        }
        tx.commit().await?;
        Ok(saved)
    }

    /// The ids of the devices bound to a connector session.
    pub async fn session_device_ids(&self, session_id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        Ok(device::Entity::find()
            .select_only()
            .column(device::Column::Id)
            .filter(device::Column::SessionId.eq(session_id))
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Deletes a device with its events and commands (foreign keys cascade).
    pub async fn delete_device(&self, id: Uuid, scope: Scope) -> Result<device::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = scoped(
            device::Entity::find_by_id(id),
            scope,
            device::Column::OwnerId,
        )
        .one(&tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        device::Entity::delete_by_id(found.id).exec(&tx).await?;
        device_tombstone::ActiveModel {
            device_id: Set(found.id),
            owner_id: Set(found.owner_id),
            device: Set(serde_json::to_value(&found).expect("BUG: a device row serialises")),
            deleted_at: Set(now()),
            ..Default::default()
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Devices in `scope` deleted at or after `since`, oldest first, up to
    /// `limit` with ids above `after`: what a `deviceChanged` subscriber
    /// that fell behind replays as DELETED.
    pub async fn deleted_devices_since(
        &self,
        scope: Scope,
        since: DateTime<Utc>,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, device::Model)>, StoreError> {
        let rows = scoped(
            device_tombstone::Entity::find(),
            scope,
            device_tombstone::Column::OwnerId,
        )
        .filter(device_tombstone::Column::DeletedAt.gte(since))
        .filter(device_tombstone::Column::Id.gt(after))
        .order_by_asc(device_tombstone::Column::Id)
        .limit(limit)
        .all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            // A row this version cannot read back is skipped, not fatal.
            .filter_map(|row| Some((row.id, serde_json::from_value(row.device).ok()?)))
            .collect())
    }

    /// Forgets devices deleted before `cutoff`. Returns how many.
    pub async fn prune_device_tombstones(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        // A read first: most sweeps find nothing and need no write lock.
        let any = device_tombstone::Entity::find()
            .filter(device_tombstone::Column::DeletedAt.lt(cutoff))
            .count(&self.db)
            .await?;
        if any == 0 {
            return Ok(0);
        }
        Ok(device_tombstone::Entity::delete_many()
            .filter(device_tombstone::Column::DeletedAt.lt(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
