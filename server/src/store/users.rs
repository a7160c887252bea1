//! Queries on `users`.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::{
    Store, StoreError,
    entity::{Role, refresh_token, user},
    is_unique_violation, now,
};

impl Store {
    /// Creates a user; `Conflict` when the username is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: String,
        role: Role,
    ) -> Result<user::Model, StoreError> {
        let at = now();
        let model = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set(username.to_owned()),
            password_hash: Set(password_hash),
            role: Set(role),
            created_at: Set(at),
            updated_at: Set(at),
        };
        model.insert(&self.db).await.map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::Conflict("a user with this username already exists")
            } else {
                err.into()
            }
        })
    }

    /// The number of users; zero means a fresh installation.
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        Ok(user::Entity::find().count(&self.db).await?)
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<user::Model, StoreError> {
        user::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn user_by_username(&self, username: &str) -> Result<user::Model, StoreError> {
        user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<user::Model>, StoreError> {
        Ok(user::Entity::find()
            .order_by_asc(user::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Gives a user another role. Refuses (`Conflict`) to demote the last
    /// administrator: nobody could manage users afterwards. The
    /// administrators' rows are locked while they are counted (`FOR UPDATE`
    /// on PostgreSQL; SQLite's write transaction is exclusive already), so
    /// two administrators demoting each other at once cannot both succeed.
    pub async fn set_role(&self, user_id: Uuid, role: Role) -> Result<user::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = user::Entity::find_by_id(user_id)
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if found.role == role {
            return Ok(found);
        }
        if found.role == Role::Admin {
            let admins = user::Entity::find()
                .filter(user::Column::Role.eq(Role::Admin))
                .lock_exclusive()
                .all(&tx)
                .await?;
            if admins.len() <= 1 {
                return Err(StoreError::Conflict(
                    "this is the last administrator; make another user ADMIN first",
                ));
            }
        }
        let mut model: user::ActiveModel = found.into();
        model.role = Set(role);
        model.updated_at = Set(now());
        let updated = model.update(&tx).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Replaces a user's password hash and ends all of its login sessions.
    pub async fn set_password(
        &self,
        user_id: Uuid,
        password_hash: String,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write().await?;
        let found = user::Entity::find_by_id(user_id)
            .one(&tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut model: user::ActiveModel = found.into();
        model.password_hash = Set(password_hash);
        model.updated_at = Set(now());
        model.update(&tx).await?;
        refresh_token::Entity::delete_many()
            .filter(refresh_token::Column::UserId.eq(user_id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
