//! Queries on `refresh_tokens`: stored hashed, rotated on every use.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{Store, StoreError, entity::refresh_token, now};

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum RotateOutcome {
    /// The token was valid; it is now spent and the new one replaces it.
    Rotated { user_id: Uuid },
    /// No such token, or it expired.
    Invalid,
    /// The token had already been rotated: someone replayed it. Its whole
    /// family (every token descended from the same login) is now revoked.
    Replayed,
}

impl Store {
    /// Stores the first refresh token of a new login session (a new family).
    pub async fn insert_refresh_token(
        &self,
        user_id: Uuid,
        token_hash: String,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        refresh_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            family_id: Set(Uuid::new_v4()),
            token_hash: Set(token_hash),
            expires_at: Set(expires_at),
            rotated_at: Set(None),
            created_at: Set(now()),
        }
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// Spends the token with `old_hash` and stores `new_hash` in its family,
    /// atomically.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: String,
        new_expires_at: DateTime<Utc>,
    ) -> Result<RotateOutcome, StoreError> {
        let tx = self.begin_write().await?;
        let Some(old) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(old_hash))
            .one(&tx)
            .await?
        else {
            return Ok(RotateOutcome::Invalid);
        };
        let at = now();
        if old.rotated_at.is_some() {
            refresh_token::Entity::delete_many()
                .filter(refresh_token::Column::FamilyId.eq(old.family_id))
                .exec(&tx)
                .await?;
            tx.commit().await?;
            return Ok(RotateOutcome::Replayed);
        }
        if old.expires_at <= at {
            refresh_token::Entity::delete_by_id(old.id)
                .exec(&tx)
                .await?;
            tx.commit().await?;
            return Ok(RotateOutcome::Invalid);
        }
        let user_id = old.user_id;
        let family_id = old.family_id;
        let mut spent: refresh_token::ActiveModel = old.into();
        spent.rotated_at = Set(Some(at));
        spent.update(&tx).await?;
        refresh_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            family_id: Set(family_id),
            token_hash: Set(new_hash),
            expires_at: Set(new_expires_at),
            rotated_at: Set(None),
            created_at: Set(at),
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated { user_id })
    }

    /// Ends the login session the token belongs to (its whole family).
    /// Returns false when the token is unknown.
    pub async fn revoke_refresh_token(&self, token_hash: &str) -> Result<bool, StoreError> {
        let tx = self.begin_write().await?;
        let Some(found) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&tx)
            .await?
        else {
            return Ok(false);
        };
        refresh_token::Entity::delete_many()
            .filter(refresh_token::Column::FamilyId.eq(found.family_id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
