//! Queries on `api_keys`: secrets stored only as hashes.

use chrono::Duration;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};
use uuid::Uuid;

use super::{
    Scope, Store, StoreError,
    entity::{Permission, api_key, user},
    now, revocations, scoped,
};

/// `last_used_at` is refreshed at most this often, so authenticating a
/// request does not write to the database every time.
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

impl Store {
    pub async fn create_api_key(
        &self,
        user_id: Uuid,
        name: &str,
        permission: Permission,
        prefix: String,
        secret_hash: String,
    ) -> Result<api_key::Model, StoreError> {
        let model = api_key::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            name: Set(name.to_owned()),
            prefix: Set(prefix),
            secret_hash: Set(secret_hash),
            permission: Set(permission),
            created_at: Set(now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        };
        Ok(model.insert(&self.db).await?)
    }

    /// The keys in `scope`, oldest first, revoked ones included.
    pub async fn list_api_keys(&self, scope: Scope) -> Result<Vec<api_key::Model>, StoreError> {
        Ok(
            scoped(api_key::Entity::find(), scope, api_key::Column::UserId)
                .order_by_asc(api_key::Column::Id)
                .all(&self.db)
                .await?,
        )
    }

    pub async fn api_key_by_id(
        &self,
        id: Uuid,
        scope: Scope,
    ) -> Result<api_key::Model, StoreError> {
        scoped(
            api_key::Entity::find_by_id(id),
            scope,
            api_key::Column::UserId,
        )
        .one(&self.db)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Marks a key revoked (idempotent) and returns it; the sockets opened
    /// with it close on every node (see `revocations`).
    pub async fn revoke_api_key(
        &self,
        id: Uuid,
        scope: Scope,
    ) -> Result<api_key::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = scoped(
            api_key::Entity::find_by_id(id),
            scope,
            api_key::Column::UserId,
        )
        .one(&tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if found.revoked_at.is_some() {
            return Ok(found);
        }
        let mut model: api_key::ActiveModel = found.into();
        model.revoked_at = Set(Some(now()));
        let revoked = model.update(&tx).await?;
        revocations::record(&tx, revoked.user_id).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// The live (not revoked) key with this secret hash and its owner, and
    /// notes that it was used.
    pub async fn authenticate_api_key(
        &self,
        secret_hash: &str,
    ) -> Result<(api_key::Model, user::Model), StoreError> {
        let key = api_key::Entity::find()
            .filter(api_key::Column::SecretHash.eq(secret_hash))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        let owner = self.user_by_id(key.user_id).await?;
        if owner.disabled_at.is_some() {
            return Err(StoreError::NotFound);
        }
        let at = now();
        if key
            .last_used_at
            .is_none_or(|used| at - used > LAST_USED_RESOLUTION)
        {
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
                .filter(api_key::Column::Id.eq(key.id))
                .exec(&self.db)
                .await?;
        }
        Ok((key, owner))
    }
}
