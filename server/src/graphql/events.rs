//! Events: reading history and publishing.

use super::connection::{Connection, connection};
use super::scalars::Timestamp;
use std::sync::Arc;

use async_graphql::{
    Context, ID, InputObject, Object, Subscription,
    futures_util::{
        StreamExt,
        stream::{self, BoxStream},
    },
};
use serde_json::Value as Json;

use super::{
    context::{principal, state},
    devices::Device,
    error::{ApiError, ApiResult, OrNotFound},
    input::{self, CursorKind},
    live,
    totals::TotalCount,
};
use crate::{
    bus::{EventStream, LiveEvent},
    config::Limits,
    ingest::IngestError,
    store::{
        self, NewEvent, StoredEvent,
        entity::{Permission, event},
    },
};

/// Longest `service` name, in characters (as the column allows).
pub(super) const SERVICE_MAX: usize = 128;
const IDEMPOTENCY_KEY_MAX: usize = 128;

/// Something a device reported.
pub struct Event(pub Arc<event::Model>);

impl Event {
    fn new(model: event::Model) -> Self {
        Event(Arc::new(model))
    }
}

/// Something a device reported: a reading, a state change, an alarm.
/// Stored in order, kept for the server's retention, and delivered live by
/// the `events` subscription.
#[Object]
impl Event {
    /// Increases with every stored event: the cursor of subscriptions.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The device that reported it.
    async fn device_id(&self) -> ID {
        ID(self.0.device_id.to_string())
    }
    /// The device that reported it; null once the device is deleted.
    async fn device(&self, ctx: &Context<'_>) -> ApiResult<Option<Device>> {
        let caller = principal(ctx, Permission::Read)?;
        match state(ctx)
            .store
            .device_by_id(self.0.device_id, caller.scope())
            .await
        {
            Ok(device) => Ok(Some(Device(device))),
            Err(store::StoreError::NotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
    /// What happened, e.g. `temperature`.
    async fn service(&self) -> &str {
        &self.0.service
    }
    /// What the device reported, as the JSON value it sent.
    async fn payload(&self) -> async_graphql::Json<&Json> {
        async_graphql::Json(&self.0.payload)
    }
    /// The device's clock, when it sent one.
    async fn occurred_at(&self) -> Option<Timestamp> {
        self.0.occurred_at.map(Timestamp)
    }
    /// The server's clock when the event was stored.
    async fn received_at(&self) -> Timestamp {
        self.0.received_at.into()
    }
    /// The key the publisher gave, if any: publishing again with it
    /// returns this event instead of storing another.
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }
}

/// Which events to list; every field given must match.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Events of one of these devices.
    pub device_ids: Option<Vec<ID>>,
    /// Events of one of these services.
    pub services: Option<Vec<String>>,
    /// Events of devices at these locations.
    pub locations: Option<Vec<String>>,
    /// Received at or after.
    pub since: Option<Timestamp>,
    /// Received before.
    pub until: Option<Timestamp>,
}

impl EventFilter {
    pub fn into_store(self, limits: &Limits) -> ApiResult<store::EventFilter> {
        let max = limits.filter_values;
        input::filter_list("deviceIds", &self.device_ids, max)?;
        input::filter_list("services", &self.services, max)?;
        input::filter_list("locations", &self.locations, max)?;
        Ok(store::EventFilter {
            device_ids: input::uuid_ids("device", &self.device_ids)?,
            services: self.services,
            locations: self.locations,
            since: self.since.map(Into::into),
            until: self.until.map(Into::into),
        })
    }
}

/// An event to store, for `publishEvent` and `publishEvents`.
#[derive(InputObject)]
pub struct EventInput {
    /// The device the event is about; the caller must own it (or be ADMIN).
    pub device_id: ID,
    /// What happened (1–128 characters), e.g. `temperature`.
    pub service: String,
    /// At most `limits.payload_bytes` (64 KiB by default) as JSON.
    pub payload: async_graphql::Json<Json>,
    /// The device's clock.
    pub occurred_at: Option<Timestamp>,
    /// Retrying a publish with the same key (per device) stores the event
    /// once and returns the stored one.
    pub idempotency_key: Option<String>,
}

impl EventInput {
    pub(in crate::graphql) fn into_store(self, limits: &Limits) -> ApiResult<NewEvent> {
        input::text("service", &self.service, SERVICE_MAX)?;
        input::optional_text(
            "idempotencyKey",
            self.idempotency_key.as_deref(),
            IDEMPOTENCY_KEY_MAX,
        )?;
        input::json(
            "payload",
            &self.payload.0,
            limits.payload_bytes,
            limits.json_depth,
        )?;
        Ok(NewEvent {
            device_id: input::uuid_id("device", &self.device_id)?,
            service: self.service,
            payload: self.payload.0,
            occurred_at: self.occurred_at.map(Into::into),
            idempotency_key: self.idempotency_key,
        })
    }
}

#[derive(Default)]
pub struct EventQuery;

#[Object]
impl EventQuery {
    /// One event, by id; NOT_FOUND unless the caller may see it.
    async fn event(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event's id.")] id: ID,
    ) -> ApiResult<Event> {
        let caller = principal(ctx, Permission::Read)?;
        let id = input::event_id(&id)?;
        let found = state(ctx)
            .store
            .event_by_id(id, caller.scope())
            .await
            .or_not_found("event")?;
        Ok(Event::new(found))
    }

    /// Events, newest first.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which events; all the caller may see when left out.")] filter: Option<
            EventFilter,
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
    ) -> ApiResult<Connection<Event>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        let limits = &app.config.limits;
        let filter = filter.unwrap_or_default().into_store(limits)?;
        let args = input::page_args(CursorKind::Event, first, after, last, before, limits)?;
        let page = app
            .store
            .list_events(caller.scope(), &filter, args, limits.default_page_size)
            .await?;
        Ok(connection(
            page,
            CursorKind::Event,
            |e| e.id.to_string(),
            Event::new,
            TotalCount::Events(caller.scope(), filter),
        ))
    }
}

pub(in crate::graphql) fn stored_or_error(
    result: Result<Vec<StoredEvent>, IngestError>,
) -> ApiResult<Vec<StoredEvent>> {
    match result {
        Ok(stored) => Ok(stored),
        Err(IngestError::Store(err)) => Err(err).or_not_found("device"),
        Err(err @ IngestError::ShuttingDown) => Err(ApiError::internal(&err)),
    }
}

#[derive(Default)]
pub struct EventMutation;

#[Object]
impl EventMutation {
    /// Stores one event; answers once it is committed.
    async fn publish_event(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event.")] input: EventInput,
    ) -> ApiResult<Event> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let new = input.into_store(&app.config.limits)?;
        let stored = app.ingest.publish(caller.scope(), vec![new]).await;
        let stored = stored_or_error(stored)?;
        stored
            .into_iter()
            .next()
            .map(|s| Event(s.event))
            .ok_or(ApiError::Internal)
    }

    /// Stores several events in one transaction, all or none; answers once
    /// they are committed. At most `limits.batch_events` (1000) per call.
    async fn publish_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The events, stored in this order.")] inputs: Vec<EventInput>,
    ) -> ApiResult<Vec<Event>> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let limits = &app.config.limits;
        if inputs.len() > limits.batch_events {
            return Err(ApiError::bad_input(format!(
                "{} events in one call; the limit is {}",
                inputs.len(),
                limits.batch_events
            )));
        }
        let events = inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                input.into_store(limits).map_err(|err| match err {
                    ApiError::BadInput(msg) => ApiError::BadInput(format!("inputs[{i}]: {msg}")),
                    other => other,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let stored = stored_or_error(app.ingest.publish(caller.scope(), events).await)?;
        Ok(stored.into_iter().map(|s| Event(s.event)).collect())
    }
}

#[derive(Default)]
pub struct EventSubscription;

#[Subscription]
impl EventSubscription {
    /// Events matching the filter, in id order. With `after`, first every
    /// stored event with a larger id, then live ones, with no gap and no
    /// duplicate in between; without it, live events from now on. A client
    /// that reconnects passes the id of the last event it received. If
    /// retention has deleted events after `after`, the first message is an
    /// error with code EVENTS_PRUNED and `extensions.prunedThrough` (the
    /// highest id deleted); the stream then goes on with the oldest event
    /// still stored.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which events; all the caller may see when left out.")] filter: Option<
            EventFilter,
        >,
        #[graphql(desc = "The id of the last event the client has: replay every later one first.")]
        after: Option<ID>,
    ) -> async_graphql::Result<BoxStream<'static, ApiResult<Event>>> {
        Ok(self.event_stream(ctx, filter, after)?)
    }
}

impl EventSubscription {
    fn event_stream(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        after: Option<ID>,
    ) -> ApiResult<BoxStream<'static, ApiResult<Event>>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        let filter = filter.unwrap_or_default().into_store(&app.config.limits)?;
        let after = after.map(|id| input::event_position(&id)).transpose()?;
        let events = EventStream::new(app.store.clone(), &app.bus, caller.scope(), filter, after);
        // The WebSocket transport delivers compiled subscriptions itself.
        if let Some(handoff) = ctx.data_opt::<live::Handoff>() {
            handoff.give(live::Feed::Events(events));
            return Ok(stream::empty().boxed());
        }
        Ok(events
            .map(|item| match item {
                Ok(LiveEvent::Gap { pruned_through }) => {
                    Err(ApiError::EventsPruned { pruned_through })
                }
                Ok(LiveEvent::Live(message)) => Ok(Event(message.event.clone())),
                Ok(LiveEvent::Stored(event)) => Ok(Event(event)),
                Err(err) => Err(ApiError::from(err)),
            })
            .boxed())
    }
}
