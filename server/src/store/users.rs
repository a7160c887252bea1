//! Queries on `users`.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::{
    Store, StoreError,
    entity::{Role, device, device_tombstone, refresh_token, user},
    is_unique_violation, now, revocations,
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
            session_epoch: Set(0),
            disabled_at: Set(None),
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
    /// administrator: nobody could manage users afterwards. Requests read
    /// the role each time, so tokens and keys carry on in the new role;
    /// the user's open sockets, which would keep the old one, are told to
    /// reconnect (see `revocations`).
    pub async fn set_role(&self, user_id: Uuid, role: Role) -> Result<user::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = find_user(&tx, user_id).await?;
        if found.role == role {
            return Ok(found);
        }
        ensure_another_admin(
            &tx,
            &found,
            "this is the last administrator; make another user ADMIN first",
        )
        .await?;
        let mut model: user::ActiveModel = found.into();
        model.role = Set(role);
        model.updated_at = Set(now());
        let updated = model.update(&tx).await?;
        revocations::record(&tx, user_id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Replaces a user's password hash and ends all of its login sessions:
    /// refresh tokens, access tokens, and the sockets opened with them.
    /// API keys stay valid: they are separate credentials, revoked on
    /// their own.
    pub async fn set_password(
        &self,
        user_id: Uuid,
        password_hash: String,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write().await?;
        let found = find_user(&tx, user_id).await?;
        let mut model: user::ActiveModel = found.into();
        model.password_hash = Set(password_hash);
        end_sessions(&tx, model).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables (or enables again) a user. A disabled user cannot sign in
    /// and none of its credentials work, keys included; its sessions end
    /// and its sockets close. Its devices, events and keys stay, for when
    /// it is enabled again. The last administrator cannot be disabled.
    pub async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
    ) -> Result<user::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = find_user(&tx, user_id).await?;
        if found.disabled_at.is_some() == disabled {
            return Ok(found);
        }
        let updated = if disabled {
            ensure_another_admin(
                &tx,
                &found,
                "this is the last administrator; it cannot be disabled",
            )
            .await?;
            let mut model: user::ActiveModel = found.into();
            model.disabled_at = Set(Some(now()));
            end_sessions(&tx, model).await?
        } else {
            let mut model: user::ActiveModel = found.into();
            model.disabled_at = Set(None);
            model.updated_at = Set(now());
            model.update(&tx).await?
        };
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes a user and everything it owns: devices (with their events,
    /// commands and status history), API keys and sessions; its sockets
    /// close. Returns the user and its devices as they were, for the
    /// `deviceChanged` notices. The last administrator cannot be deleted.
    pub async fn delete_user(
        &self,
        user_id: Uuid,
    ) -> Result<(user::Model, Vec<device::Model>), StoreError> {
        let tx = self.begin_write().await?;
        let found = find_user(&tx, user_id).await?;
        ensure_another_admin(
            &tx,
            &found,
            "this is the last administrator; it cannot be deleted",
        )
        .await?;
        let devices = device::Entity::find()
            .filter(device::Column::OwnerId.eq(user_id))
            .all(&tx)
            .await?;
        // Subscribers that fell behind learn of the deletions as of any
        // other (`deleted_devices_since`).
        let at = now();
        for chunk in devices.chunks(500) {
            device_tombstone::Entity::insert_many(chunk.iter().map(|d| {
                device_tombstone::ActiveModel {
                    device_id: Set(d.id),
                    owner_id: Set(d.owner_id),
                    device: Set(serde_json::to_value(d).expect("BUG: a device row serialises")),
                    deleted_at: Set(at),
                    ..Default::default()
                }
            }))
            .exec(&tx)
            .await?;
        }
        // Devices, keys and refresh tokens go with the user (ON DELETE
        // CASCADE), and events, commands and status changes with the devices.
        user::Entity::delete_by_id(user_id).exec(&tx).await?;
        revocations::record(&tx, user_id).await?;
        tx.commit().await?;
        Ok((found, devices))
    }
}

/// The user, its row locked until the transaction ends (`FOR UPDATE` on
/// PostgreSQL; SQLite's write transaction is exclusive already).
async fn find_user(tx: &DatabaseTransaction, user_id: Uuid) -> Result<user::Model, StoreError> {
    user::Entity::find_by_id(user_id)
        .lock_exclusive()
        .one(tx)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Refuses (`Conflict`, with `why`) when `user` is the only enabled
/// administrator. The administrators' rows are locked while they are
/// counted (`FOR UPDATE` on PostgreSQL; SQLite's write transaction is
/// exclusive already), so two administrators removing each other at once
/// cannot both succeed.
async fn ensure_another_admin(
    tx: &DatabaseTransaction,
    user: &user::Model,
    why: &'static str,
) -> Result<(), StoreError> {
    if user.role != Role::Admin || user.disabled_at.is_some() {
        return Ok(());
    }
    let admins = user::Entity::find()
        .filter(user::Column::Role.eq(Role::Admin))
        .filter(user::Column::DisabledAt.is_null())
        .lock_exclusive()
        .all(tx)
        .await?;
    if admins.iter().any(|admin| admin.id != user.id) {
        Ok(())
    } else {
        Err(StoreError::Conflict(why))
    }
}

/// Saves `model` with its session epoch moved on (the user's access tokens
/// stop working) and its refresh tokens deleted, and notes the change for
/// the user's sockets. `model` comes from [`find_user`] in the same
/// transaction, whose row lock keeps two changes from moving the epoch to
/// the same number.
async fn end_sessions(
    tx: &DatabaseTransaction,
    mut model: user::ActiveModel,
) -> Result<user::Model, StoreError> {
    let epoch = model.session_epoch.take().unwrap_or_default();
    model.session_epoch = Set(epoch.saturating_add(1));
    model.updated_at = Set(now());
    let updated = model.update(tx).await?;
    refresh_token::Entity::delete_many()
        .filter(refresh_token::Column::UserId.eq(updated.id))
        .exec(tx)
        .await?;
    revocations::record(tx, updated.id).await?;
    Ok(updated)
}
