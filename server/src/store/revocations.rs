//! Revocations: a note, each time a user's credentials change, that every
//! node (and not only the one that made the change) reads to have the
//! user's open sockets check their credential again. The CLI changes
//! credentials from another process, which no bus reaches; the row it
//! writes is what the running servers read.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{Store, StoreError, entity::revocation, now};

/// Notes, in the transaction (or on the connection) that changed them,
/// that `user_id`'s credentials changed.
pub(super) async fn record<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<(), StoreError> {
    revocation::ActiveModel {
        user_id: Set(user_id),
        at: Set(now()),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The notes recorded at or after `since`: their ids and users. (Read
    /// by time, not "ids above the last one seen": on PostgreSQL ids are
    /// taken before commit, so a lower id can become visible after a
    /// higher one.)
    pub async fn revocations_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(i64, Uuid)>, StoreError> {
        let rows = revocation::Entity::find()
            .filter(revocation::Column::At.gte(since))
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row.user_id)).collect())
    }

    /// Forgets notes recorded before `cutoff` (what they announced is in
    /// the keys' and users' own rows).
    pub async fn prune_revocations(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(revocation::Entity::delete_many()
            .filter(revocation::Column::At.lt(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
