//! Queries on `device_status_changes`: each device's ONLINE / OFFLINE /
//! DISCONNECTED history, written by the same transaction that changes the
//! device (so the history and the device never disagree).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::{
    Store, StoreError,
    entity::{device, device_status_change},
};

/// Records that `device` (as just saved) entered its status at `at`.
pub(super) async fn record(
    db: &impl ConnectionTrait,
    device: &device::Model,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    device_status_change::ActiveModel {
        device_id: Set(device.id),
        status: Set(device.status),
        connector_id: Set(device.connector_id.clone()),
        at: Set(at),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

impl Store {
    /// A device's status changes, newest first: at most `limit`, and only
    /// those at or after `since` plus the one before it (the status the
    /// device was in at `since`). The caller has checked the device is
    /// visible to it.
    pub async fn device_status_history(
        &self,
        device_id: Uuid,
        since: Option<DateTime<Utc>>,
        limit: u64,
    ) -> Result<Vec<device_status_change::Model>, StoreError> {
        let newest_first = || {
            device_status_change::Entity::find()
                .filter(device_status_change::Column::DeviceId.eq(device_id))
                .order_by_desc(device_status_change::Column::Id)
        };
        let Some(since) = since else {
            return Ok(newest_first().limit(limit).all(&self.db).await?);
        };
        let mut changes = newest_first()
            .filter(device_status_change::Column::At.gte(since))
            .limit(limit)
            .all(&self.db)
            .await?;
        if (changes.len() as u64) < limit {
            let before = newest_first()
                .filter(device_status_change::Column::At.lt(since))
                .one(&self.db)
                .await?;
            changes.extend(before);
        }
        Ok(changes)
    }

    /// Forgets status changes before `cutoff` (retention). Returns how many.
    pub async fn prune_status_changes(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(device_status_change::Entity::delete_many()
            .filter(device_status_change::Column::At.lt(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
