//! Queries on `events`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect, Set, sea_query::Query,
};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    Scope, Store, StoreError,
    entity::{device, event},
    is_unique_violation, now,
    page::{Order, Page, PageArgs, fetch_page},
    scoped,
};

/// Which events a list returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub device_ids: Option<Vec<Uuid>>,
    pub services: Option<Vec<String>>,
    /// Events of devices at these locations.
    pub locations: Option<Vec<String>>,
    /// Received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Received before this time.
    pub until: Option<DateTime<Utc>>,
}

impl EventFilter {
    fn condition(&self) -> Condition {
        let mut all = Condition::all();
        if let Some(device_ids) = &self.device_ids {
            all = all.add(event::Column::DeviceId.is_in(device_ids.iter().copied()));
        }
        if let Some(services) = &self.services {
            all = all.add(event::Column::Service.is_in(services.iter().cloned()));
        }
        if let Some(locations) = &self.locations {
            all = all.add(
                event::Column::DeviceId.in_subquery(
                    Query::select()
                        .column(device::Column::Id)
                        .from(device::Entity)
                        .and_where(device::Column::Location.is_in(locations.iter().cloned()))
                        .to_owned(),
                ),
            );
        }
        if let Some(since) = self.since {
            all = all.add(event::Column::ReceivedAt.gte(since));
        }
        if let Some(until) = self.until {
            all = all.add(event::Column::ReceivedAt.lt(until));
        }
        all
    }
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub device_id: Uuid,
    pub service: String,
    pub payload: Json,
    pub occurred_at: Option<DateTime<Utc>>,
    /// A retried publish with the same key (per device) stores nothing new and
    /// returns the event stored the first time.
    pub idempotency_key: Option<String>,
}

impl Store {
    pub async fn event_by_id(&self, id: i64, scope: Scope) -> Result<event::Model, StoreError> {
        scoped(event::Entity::find_by_id(id), scope, event::Column::OwnerId)
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// A page of events, newest first.
    pub async fn list_events(
        &self,
        scope: Scope,
        filter: &EventFilter,
        args: PageArgs<i64>,
        default_size: u64,
    ) -> Result<Page<event::Model>, StoreError> {
        let query =
            scoped(event::Entity::find(), scope, event::Column::OwnerId).filter(filter.condition());
        fetch_page(
            &self.db,
            query,
            event::Column::Id,
            Order::Descending,
            args,
            default_size,
        )
        .await
    }

    pub async fn count_events(
        &self,
        scope: Scope,
        filter: &EventFilter,
    ) -> Result<u64, StoreError> {
        Ok(scoped(event::Entity::find(), scope, event::Column::OwnerId)
            .filter(filter.condition())
            .count(&self.db)
            .await?)
    }

    /// Stores events in one transaction and returns them in input order.
    ///
    /// All or nothing: if any device is unknown or outside `scope`, nothing
    /// is stored and the error is `NotFound`. Events whose idempotency key was
    /// seen before for their device are not stored again; the stored event is
    /// returned in their place.
    pub async fn insert_events(
        &self,
        scope: Scope,
        events: Vec<NewEvent>,
    ) -> Result<Vec<event::Model>, StoreError> {
        // On PostgreSQL two publishers can race to store the same key; the
        // loser's transaction hits the unique index, and its retry finds the
        // winner's event. (SQLite writers are serialised by BEGIN IMMEDIATE.)
        match self.try_insert_events(scope, events.clone()).await {
            Err(StoreError::Database(err)) if is_unique_violation(&err) => {
                self.try_insert_events(scope, events).await
            }
            other => other,
        }
    }

    async fn try_insert_events(
        &self,
        scope: Scope,
        events: Vec<NewEvent>,
    ) -> Result<Vec<event::Model>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.begin_write().await?;

        let mut device_ids: Vec<Uuid> = events.iter().map(|e| e.device_id).collect();
        device_ids.sort_unstable();
        device_ids.dedup();
        let owners: HashMap<Uuid, Uuid> =
            scoped(device::Entity::find(), scope, device::Column::OwnerId)
                .filter(device::Column::Id.is_in(device_ids.iter().copied()))
                .select_only()
                .column(device::Column::Id)
                .column(device::Column::OwnerId)
                .into_tuple::<(Uuid, Uuid)>()
                .all(&tx)
                .await?
                .into_iter()
                .collect();
        if owners.len() != device_ids.len() {
            return Err(StoreError::NotFound);
        }

        let received_at = now();
        let mut stored = Vec::with_capacity(events.len());
        for new in events {
            if let Some(key) = &new.idempotency_key {
                let existing = event::Entity::find()
                    .filter(event::Column::DeviceId.eq(new.device_id))
                    .filter(event::Column::IdempotencyKey.eq(key))
                    .one(&tx)
                    .await?;
                if let Some(existing) = existing {
                    stored.push(existing);
                    continue;
                }
            }
            let model = event::ActiveModel {
                id: Default::default(),
                device_id: Set(new.device_id),
                owner_id: Set(owners[&new.device_id]),
                service: Set(new.service),
                payload: Set(new.payload),
                occurred_at: Set(new.occurred_at),
                received_at: Set(received_at),
                idempotency_key: Set(new.idempotency_key),
            };
            stored.push(model.insert(&tx).await?);
        }
        tx.commit().await?;
        Ok(stored)
    }
}
