//! Retention: deleting old events, and remembering how far it went.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::OnConflict,
};

use super::{
    Store, StoreError,
    entity::{event, setting},
};

const PRUNED_THROUGH: &str = "events_pruned_through";

impl Store {
    /// The highest event id retention has deleted (0: none).
    pub async fn events_pruned_through(&self) -> Result<i64, StoreError> {
        Ok(setting::Entity::find_by_id(PRUNED_THROUGH.to_owned())
            .one(&self.db)
            .await?
            .and_then(|row| row.value.parse().ok())
            .unwrap_or(0))
    }

    /// Deletes up to `limit` of the oldest events received before `cutoff`
    /// and records the highest id deleted. Returns how many were deleted.
    pub async fn prune_events(&self, cutoff: DateTime<Utc>, limit: u64) -> Result<u64, StoreError> {
        let tx = self.begin_write().await?;
        let ids: Vec<i64> = event::Entity::find()
            .filter(event::Column::ReceivedAt.lt(cutoff))
            .select_only()
            .column(event::Column::Id)
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(&tx)
            .await?;
        let Some(&highest) = ids.last() else {
            return Ok(0);
        };
        // Everything up to `highest` that is old enough goes; the ids are in
        // receive order, so this is a prefix of the log.
        let deleted = event::Entity::delete_many()
            .filter(event::Column::Id.lte(highest))
            .filter(event::Column::ReceivedAt.lt(cutoff))
            .exec(&tx)
            .await?
            .rows_affected;
        setting::Entity::insert(setting::ActiveModel {
            key: Set(PRUNED_THROUGH.to_owned()),
            value: Set(highest.to_string()),
        })
        .on_conflict(
            OnConflict::column(setting::Column::Key)
                .update_column(setting::Column::Value)
                .to_owned(),
        )
        .exec(&tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
