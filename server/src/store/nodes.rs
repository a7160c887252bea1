//! Queries on `nodes` and the presence bookkeeping that depends on them.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{
    Store, StoreError,
    entity::{DeviceStatus, device, node},
    now, status_history,
};

impl Store {
    /// Records that node `id` is alive (inserting it on first call).
    pub async fn heartbeat_node(&self, id: Uuid) -> Result<(), StoreError> {
        let at = now();
        let updated = node::Entity::update_many()
            .col_expr(node::Column::HeartbeatAt, Expr::value(at))
            .filter(node::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 0 {
            node::ActiveModel {
                id: Set(id),
                started_at: Set(at),
                heartbeat_at: Set(at),
            }
            .insert(&self.db)
            .await?;
        }
        Ok(())
    }

    /// Forgets node `id` (on a clean shutdown).
    pub async fn remove_node(&self, id: Uuid) -> Result<(), StoreError> {
        node::Entity::delete_by_id(id).exec(&self.db).await?;
        Ok(())
    }

    /// Sets OFFLINE every ONLINE device hosted by a node other than `me`
    /// that has not heartbeated since `alive_since` (or is not known at all),
    /// forgets those nodes, and returns the devices.
    pub async fn release_devices_of_dead_nodes(
        &self,
        me: Uuid,
        alive_since: DateTime<Utc>,
    ) -> Result<Vec<device::Model>, StoreError> {
        let tx = self.begin_write().await?;
        let live: Vec<Uuid> = node::Entity::find()
            .filter(node::Column::HeartbeatAt.gte(alive_since))
            .select_only()
            .column(node::Column::Id)
            .into_tuple()
            .all(&tx)
            .await?;
        // ONLINE but hosted by no node, or by a node that is neither this one
        // nor alive.
        let orphaned = Condition::any().add(device::Column::NodeId.is_null()).add(
            Condition::all()
                .add(device::Column::NodeId.ne(me))
                .add(device::Column::NodeId.is_not_in(live)),
        );
        let stale = device::Entity::find()
            .filter(device::Column::Status.eq(DeviceStatus::Online))
            .filter(orphaned)
            .all(&tx)
            .await?;
        let released = go_offline(&tx, stale).await?;
        node::Entity::delete_many()
            .filter(node::Column::HeartbeatAt.lt(alive_since))
            .filter(node::Column::Id.ne(me))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Sets OFFLINE the devices still bound to connector session
    /// `session_id` and returns them. Devices another session has taken over
    /// since are left alone.
    pub async fn release_session(
        &self,
        session_id: Uuid,
    ) -> Result<Vec<device::Model>, StoreError> {
        let tx = self.begin_write().await?;
        let bound = device::Entity::find()
            .filter(device::Column::SessionId.eq(session_id))
            .filter(device::Column::Status.eq(DeviceStatus::Online))
            .all(&tx)
            .await?;
        let released = go_offline(&tx, bound).await?;
        tx.commit().await?;
        Ok(released)
    }
}

/// Marks `devices` OFFLINE and unbound, seen now.
async fn go_offline(
    tx: &sea_orm::DatabaseTransaction,
    devices: Vec<device::Model>,
) -> Result<Vec<device::Model>, StoreError> {
    let at = now();
    let mut released = Vec::with_capacity(devices.len());
    for found in devices {
        let mut model: device::ActiveModel = found.into();
        model.status = Set(DeviceStatus::Offline);
        model.session_id = Set(None);
        model.node_id = Set(None);
        model.last_seen_at = Set(Some(at));
        model.updated_at = Set(at);
        let saved = model.update(tx).await?;
        status_history::record(tx, &saved, at).await?;
        released.push(saved);
    }
    Ok(released)
}
