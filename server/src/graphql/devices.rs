//! Devices: listing, registering, updating, disconnecting, deleting, and
//! their live changes.

use super::connection::{Connection, connection};
use super::scalars::Timestamp;
use std::sync::Arc;

use async_graphql::{
    Context, ID, InputObject, MaybeUndefined, Object, Subscription,
    futures_util::{
        StreamExt,
        stream::{self, BoxStream},
    },
};
use serde_json::Value as Json;

use super::{
    context::{principal, request, state},
    error::{ApiError, ApiResult, OrNotFound},
    input::{self, CursorKind},
    live,
    totals::TotalCount,
};
use crate::{
    bus::{self as fanout, DeviceChangeKind},
    config::Limits,
    store::{
        self, DeviceRegistration, DeviceUpdate,
        entity::{DeviceStatus, Permission, device, device_status_change},
    },
};

/// `statusHistory`'s page when the query gives no `first`.
pub const STATUS_HISTORY_PAGE: i32 = 100;

/// Longest external id, name, type and location, in characters.
const EXTERNAL_ID_MAX: usize = 128;
const NAME_MAX: usize = 200;
const TYPE_MAX: usize = 64;
const LOCATION_MAX: usize = 200;

/// A thing a gateway brings onto the platform.
pub struct Device(pub device::Model);

/// A change of a device, as `deviceChanged` streams it.
pub struct DeviceChange(Arc<fanout::DeviceChange>);

/// One change of a device, as `deviceChanged` delivers it.
#[Object]
impl DeviceChange {
    /// What happened to the device.
    async fn kind(&self) -> DeviceChangeKind {
        self.0.kind
    }
    /// The device as it is now (as it was, for DELETED).
    async fn device(&self) -> Device {
        Device(self.0.device.clone())
    }
}

/// A thing a gateway brings onto the platform: a sensor, a relay, a
/// machine. It belongs to the user whose credential registered it, and it
/// is ONLINE while a gateway's WebSocket session hosts it.
#[Object]
impl Device {
    /// Server-assigned; stable for the device's life.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The gateway's own id for the device, unique per owner.
    async fn external_id(&self) -> &str {
        &self.0.external_id
    }
    /// A name for people (up to 200 characters); the external id unless
    /// given.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// What kind of device it is (`thermometer`, `relay`…), as its
    /// gateway says; `generic` unless given.
    #[graphql(name = "type")]
    async fn kind(&self) -> &str {
        &self.0.r#type
    }
    /// Where the device is, as free text (`greenhouse`, `lab 2`); null if
    /// never given.
    async fn location(&self) -> Option<&str> {
        self.0.location.as_deref()
    }
    /// Free-form description, as JSON.
    async fn attributes(&self) -> async_graphql::Json<&Json> {
        async_graphql::Json(&self.0.attributes)
    }
    /// ONLINE, OFFLINE or DISCONNECTED.
    async fn status(&self) -> DeviceStatus {
        self.0.status
    }
    /// The connector session hosting the device, while it is ONLINE.
    async fn connector_id(&self) -> Option<&str> {
        self.0.connector_id.as_deref()
    }
    /// When the device was last known to be online.
    async fn last_seen_at(&self) -> Option<Timestamp> {
        self.0.last_seen_at.map(Timestamp)
    }
    /// The user the device belongs to.
    async fn owner_id(&self) -> ID {
        ID(self.0.owner_id.to_string())
    }
    /// When the device was first registered.
    async fn created_at(&self) -> Timestamp {
        self.0.created_at.into()
    }
    /// When its name, type, location, attributes or status last changed.
    async fn updated_at(&self) -> Timestamp {
        self.0.updated_at.into()
    }
    /// The device's status changes, newest first (the dashboard's status
    /// timeline). With `since`: the changes from then on, plus the one
    /// before, which says what the status was at `since`. `first` (default
    /// 100) is at most `limits.page_size`. Kept as long as events are
    /// (`retention`).
    async fn status_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the changes from then on, plus the one before.")] since: Option<
            Timestamp,
        >,
        #[graphql(
            default_with = "STATUS_HISTORY_PAGE",
            desc = "How many changes at most (the newest)."
        )]
        first: i32,
    ) -> ApiResult<Vec<DeviceStatusChange>> {
        let app = state(ctx);
        let limit = input::page_size("first", first, 1, &app.config.limits)?;
        let changes = app
            .store
            .device_status_history(self.0.id, since.map(Into::into), limit)
            .await?;
        Ok(changes.into_iter().map(DeviceStatusChange).collect())
    }
}

/// A device entered `status` at `at`.
pub struct DeviceStatusChange(device_status_change::Model);

/// A device's status changing, as `statusHistory` lists it.
#[Object]
impl DeviceStatusChange {
    /// The status the device entered.
    async fn status(&self) -> DeviceStatus {
        self.0.status
    }
    /// The gateway the device came ONLINE on, or went OFFLINE from.
    async fn connector_id(&self) -> Option<&str> {
        self.0.connector_id.as_deref()
    }
    /// When it entered it.
    async fn at(&self) -> Timestamp {
        self.0.at.into()
    }
}

/// Which devices to list; every field given must match (a list matches any
/// of its values).
#[derive(InputObject, Default)]
pub struct DeviceFilter {
    /// Devices with one of these ids.
    pub ids: Option<Vec<ID>>,
    /// Devices with one of these external ids.
    pub external_ids: Option<Vec<String>>,
    /// Devices of one of these types.
    pub types: Option<Vec<String>>,
    /// Devices at one of these locations.
    pub locations: Option<Vec<String>>,
    /// Devices in one of these statuses.
    pub status: Option<Vec<DeviceStatus>>,
}

impl DeviceFilter {
    pub fn into_store(self, limits: &Limits) -> ApiResult<store::DeviceFilter> {
        let max = limits.filter_values;
        input::filter_list("ids", &self.ids, max)?;
        input::filter_list("externalIds", &self.external_ids, max)?;
        input::filter_list("types", &self.types, max)?;
        input::filter_list("locations", &self.locations, max)?;
        input::filter_list("status", &self.status, max)?;
        Ok(store::DeviceFilter {
            ids: input::uuid_ids("device", &self.ids)?,
            external_ids: self.external_ids,
            types: self.types,
            locations: self.locations,
            status: self.status,
        })
    }
}

/// A device as its gateway describes it, for `registerDevice`.
#[derive(InputObject)]
pub struct RegisterDeviceInput {
    /// Your id for the device (1–128 characters); registering it again
    /// updates the existing device.
    pub external_id: String,
    /// Default: the external id.
    pub name: Option<String>,
    /// Default: `generic`.
    #[graphql(name = "type")]
    pub kind: Option<String>,
    /// Where the device is (up to 200 characters).
    pub location: Option<String>,
    /// Anything else worth knowing about the device, as a JSON value
    /// (within the server's payload size and depth limits).
    pub attributes: Option<async_graphql::Json<Json>>,
}

/// What changes in a device, for `updateDevice`; fields left out stay.
#[derive(InputObject)]
pub struct UpdateDeviceInput {
    /// A new name (up to 200 characters).
    pub name: Option<String>,
    /// A new type (up to 64 characters).
    #[graphql(name = "type")]
    pub kind: Option<String>,
    /// `null` clears the location.
    pub location: MaybeUndefined<String>,
    /// New attributes, replacing the old ones whole.
    pub attributes: Option<async_graphql::Json<Json>>,
}

fn validate_common(
    name: Option<&str>,
    kind: Option<&str>,
    location: Option<&str>,
    attributes: Option<&Json>,
    limits: &Limits,
) -> ApiResult<()> {
    input::optional_text("name", name, NAME_MAX)?;
    input::optional_text("type", kind, TYPE_MAX)?;
    input::optional_text("location", location, LOCATION_MAX)?;
    if let Some(attributes) = attributes {
        input::json(
            "attributes",
            attributes,
            limits.attributes_bytes,
            limits.json_depth,
        )?;
    }
    Ok(())
}

#[derive(Default)]
pub struct DeviceQuery;

#[Object]
impl DeviceQuery {
    /// One device, by id; NOT_FOUND unless the caller may see it.
    async fn device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device's id.")] id: ID,
    ) -> ApiResult<Device> {
        let caller = principal(ctx, Permission::Read)?;
        let id = input::uuid_id("device", &id)?;
        let found = state(ctx)
            .store
            .device_by_id(id, caller.scope())
            .await
            .or_not_found("device")?;
        Ok(Device(found))
    }

    /// Devices, oldest first.
    async fn devices(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which devices; all the caller may see when left out.")] filter: Option<
            DeviceFilter,
        >,
        #[graphql(
            desc = "How many items at most, from the start or after `after`; at most the server's page size."
        )]
        first: Option<i32>,
        #[graphql(desc = "A cursor (`pageInfo.endCursor`, or an edge's): the items after it.")]
        after: Option<String>,
        #[graphql(
            desc = "How many items at most, from the end or before `before`; at most the server's page size."
        )]
        last: Option<i32>,
        #[graphql(desc = "A cursor (`pageInfo.startCursor`, or an edge's): the items before it.")]
        before: Option<String>,
    ) -> ApiResult<Connection<Device>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        let limits = &app.config.limits;
        let filter = filter.unwrap_or_default().into_store(limits)?;
        let args = input::page_args(CursorKind::Device, first, after, last, before, limits)?;
        let page = app
            .store
            .list_devices(caller.scope(), &filter, args, limits.default_page_size)
            .await?;
        Ok(connection(
            page,
            CursorKind::Device,
            |d| d.id.to_string(),
            Device,
            TotalCount::Devices(caller.scope(), filter),
        ))
    }
}

#[derive(Default)]
pub struct DeviceMutation;

#[Object]
impl DeviceMutation {
    /// Creates the device, or updates the caller's device with the same
    /// `externalId` (fields left out keep their values).
    async fn register_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device's external id and description.")] input: RegisterDeviceInput,
    ) -> ApiResult<Device> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        input::text("externalId", &input.external_id, EXTERNAL_ID_MAX)?;
        let attributes = input.attributes.map(|json| json.0);
        validate_common(
            input.name.as_deref(),
            input.kind.as_deref(),
            input.location.as_deref(),
            attributes.as_ref(),
            &app.config.limits,
        )?;
        let registration = DeviceRegistration {
            external_id: input.external_id,
            name: input.name,
            r#type: input.kind,
            location: input.location,
            attributes,
            session: request(ctx).session.clone(),
        };
        let device = app
            .service()
            .register_device(caller.user_id, registration)
            .await?;
        Ok(Device(device))
    }

    /// Changes a device's name, type, location or attributes; fields left
    /// out keep their values.
    async fn update_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device's id.")] id: ID,
        #[graphql(desc = "What changes.")] input: UpdateDeviceInput,
    ) -> ApiResult<Device> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let id = input::uuid_id("device", &id)?;
        let attributes = input.attributes.map(|json| json.0);
        let location = match input.location {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(location) => Some(Some(location)),
        };
        validate_common(
            input.name.as_deref(),
            input.kind.as_deref(),
            location.as_ref().and_then(|l| l.as_deref()),
            attributes.as_ref(),
            &app.config.limits,
        )?;
        let update = DeviceUpdate {
            name: input.name,
            r#type: input.kind,
            location,
            attributes,
        };
        let device = app
            .service()
            .update_device(id, caller.scope(), update)
            .await
            .or_not_found("device")?;
        Ok(Device(device))
    }

    /// Takes the device off its gateway: DISCONNECTED, unbound, but kept with
    /// its history.
    async fn disconnect_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device's id.")] id: ID,
    ) -> ApiResult<Device> {
        let caller = principal(ctx, Permission::Write)?;
        let id = input::uuid_id("device", &id)?;
        let app = state(ctx);
        let device = app
            .service()
            .disconnect_device(id, caller.scope())
            .await
            .or_not_found("device")?;
        Ok(Device(device))
    }

    /// Deletes the device with its events and commands. Returns its id.
    async fn delete_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device's id.")] id: ID,
    ) -> ApiResult<ID> {
        let caller = principal(ctx, Permission::Write)?;
        let id = input::uuid_id("device", &id)?;
        let app = state(ctx);
        let device = app
            .service()
            .delete_device(id, caller.scope())
            .await
            .or_not_found("device")?;
        Ok(ID(device.id.to_string()))
    }
}

#[derive(Default)]
pub struct DeviceSubscription;

#[Subscription]
impl DeviceSubscription {
    /// Changes of devices matching the filter, live: REGISTERED, UPDATED,
    /// STATUS (ONLINE, OFFLINE, DISCONNECTED) and DELETED. A subscriber that
    /// falls behind receives the current state of every matching device (as
    /// UPDATED), then every matching device deleted since it was last in
    /// step (as DELETED; deletions are remembered for a day, and one may
    /// arrive twice), and carries on.
    async fn device_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which devices; all the caller may see when left out.")] filter: Option<
            DeviceFilter,
        >,
    ) -> async_graphql::Result<BoxStream<'static, ApiResult<DeviceChange>>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        let filter = filter.unwrap_or_default().into_store(&app.config.limits)?;
        let changes =
            fanout::device_changes(app.store.clone(), app.bus.clone(), caller.scope(), filter)
                .map(|change| change.map_err(ApiError::from));
        // The WebSocket transport delivers compiled subscriptions itself.
        if let Some(handoff) = ctx.data_opt::<live::Handoff>() {
            handoff.give(live::Feed::Devices(changes.boxed()));
            return Ok(stream::empty().boxed());
        }
        Ok(changes.map(|change| change.map(DeviceChange)).boxed())
    }
}
