//! Users, passwords and API keys: the rules for each (names, password
//! length, a key never stronger than its owner's role or than the
//! credential creating it) and the write, in one place for the GraphQL
//! API, the `ferrite user`/`ferrite apikey` commands and the first
//! administrator created at start.
//!
//! These changes reach open sockets through the store, not the bus: a new
//! password, a role change, a disabled user or a revoked key moves a
//! revocation note that every node's sweeper reads (see
//! `auth::revocation`), so the CLI — which runs without a server — ends
//! sockets exactly as the API does.

use uuid::Uuid;

use crate::{
    auth::{self, AuthError, PasswordHasher, token},
    store::{
        Scope, Store, StoreError,
        entity::{Permission, Role, api_key, user},
    },
};

/// Why an account action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input breaks a rule (a name, a password's length).
    #[error("{0}")]
    Invalid(&'static str),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key just created, with the only copy of its secret.
pub struct CreatedKey {
    pub key: api_key::Model,
    pub secret: String,
}

/// The account actions, over one store and a password hasher.
pub struct Accounts<'a> {
    store: &'a Store,
    hasher: &'a PasswordHasher,
}

impl<'a> Accounts<'a> {
    pub fn new(store: &'a Store, hasher: &'a PasswordHasher) -> Self {
        Accounts { store, hasher }
    }

    /// Creates a user; the name and the password are checked first, so a
    /// refused one costs no argon2 run.
    pub async fn create_user(
        &self,
        username: &str,
        password: String,
        role: Role,
    ) -> Result<user::Model, AccountError> {
        auth::validate_username(username).map_err(AccountError::Invalid)?;
        auth::validate_new_password(&password).map_err(AccountError::Invalid)?;
        let hash = self.hasher.hash(password).await?;
        Ok(self.store.create_user(username, hash, role).await?)
    }

    /// Sets a user's password (an administrator's reset, `ferrite user
    /// passwd`) and ends its login sessions. An unknown user is found out
    /// before hashing.
    pub async fn set_password(&self, user_id: Uuid, password: String) -> Result<(), AccountError> {
        auth::validate_new_password(&password).map_err(AccountError::Invalid)?;
        let user = self.store.user_by_id(user_id).await?;
        let hash = self.hasher.hash(password).await?;
        Ok(self.store.set_password(user.id, hash).await?)
    }

    /// A user changes its own password: the current one must match.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: String,
        new: String,
    ) -> Result<(), AccountError> {
        let user = self.store.user_by_id(user_id).await?;
        let matches = current.len() <= auth::PASSWORD_MAX_BYTES
            && self
                .hasher
                .verify(current, Some(user.password_hash))
                .await?;
        if !matches {
            return Err(AccountError::Forbidden(
                "the current password is wrong".into(),
            ));
        }
        auth::validate_new_password(&new).map_err(AccountError::Invalid)?;
        let hash = self.hasher.hash(new).await?;
        Ok(self.store.set_password(user.id, hash).await?)
    }

    /// Creates a key for `owner`. It is never stronger than the owner's
    /// role allows (a MEMBER's keys are at most WRITE) nor than `ceiling`,
    /// the permission of the credential creating it (`ADMIN` for the CLI,
    /// which runs as the machine's operator).
    pub async fn create_api_key(
        &self,
        owner: &user::Model,
        ceiling: Permission,
        name: &str,
        permission: Permission,
    ) -> Result<CreatedKey, AccountError> {
        auth::validate_key_name(name).map_err(AccountError::Invalid)?;
        let cap = auth::permission_cap(owner.role).min(ceiling);
        if permission > cap {
            return Err(AccountError::Forbidden(format!(
                "{} is a {:?} user; a key it creates may have at most {cap:?} permission, not {permission:?}",
                owner.username, owner.role
            )));
        }
        let secret = token::new_api_key_secret();
        let key = self
            .store
            .create_api_key(owner.id, name, permission, secret.shown_prefix, secret.hash)
            .await?;
        Ok(CreatedKey {
            key,
            secret: secret.secret,
        })
    }

    /// Revokes a key within `scope`; it stops working at once and its
    /// sockets close on every node.
    pub async fn revoke_api_key(
        &self,
        id: Uuid,
        scope: Scope,
    ) -> Result<api_key::Model, AccountError> {
        Ok(self.store.revoke_api_key(id, scope).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rules_hold_before_any_write() {
        let (_dir, store) = Store::temporary().await;
        let hasher = PasswordHasher::new(1);
        let accounts = Accounts::new(&store, &hasher);

        let refused = accounts
            .create_user("bad\nname", "long enough".into(), Role::Member)
            .await;
        assert!(matches!(refused, Err(AccountError::Invalid(_))));
        let refused = accounts
            .create_user("ann", "short".into(), Role::Member)
            .await;
        assert!(matches!(refused, Err(AccountError::Invalid(_))));
        assert!(store.list_users().await.unwrap().is_empty());

        let ann = accounts
            .create_user("ann", "long enough".into(), Role::Member)
            .await
            .unwrap();
        let refused = accounts
            .create_user("ann", "long enough".into(), Role::Member)
            .await;
        assert!(matches!(
            refused,
            Err(AccountError::Store(StoreError::Conflict(_)))
        ));

        // A MEMBER's keys are at most WRITE, whoever creates them; a WRITE
        // credential creates at most WRITE keys.
        for (ceiling, permission) in [
            (Permission::Admin, Permission::Admin),
            (Permission::Read, Permission::Write),
        ] {
            let refused = accounts
                .create_api_key(&ann, ceiling, "k", permission)
                .await;
            assert!(matches!(refused, Err(AccountError::Forbidden(_))));
        }
        let refused = accounts
            .create_api_key(&ann, Permission::Admin, "", Permission::Read)
            .await;
        assert!(matches!(refused, Err(AccountError::Invalid(_))));
        assert!(store.list_api_keys(Scope::All).await.unwrap().is_empty());
        let created = accounts
            .create_api_key(&ann, Permission::Admin, "gateway", Permission::Write)
            .await
            .unwrap();
        assert!(created.secret.starts_with(token::API_KEY_PREFIX));
        assert_ne!(
            created.key.secret_hash, created.secret,
            "only the hash is kept"
        );

        // A password change needs the current one.
        let wrong = accounts
            .change_password(ann.id, "not it".into(), "another one".into())
            .await;
        assert!(matches!(wrong, Err(AccountError::Forbidden(_))));
        let over_long = accounts
            .change_password(ann.id, "x".repeat(1 << 20), "another one".into())
            .await;
        assert!(matches!(over_long, Err(AccountError::Forbidden(_))));
        accounts
            .change_password(ann.id, "long enough".into(), "another one".into())
            .await
            .unwrap();
        let unknown = accounts
            .set_password(Uuid::new_v4(), "long enough".into())
            .await;
        assert!(matches!(
            unknown,
            Err(AccountError::Store(StoreError::NotFound))
        ));

        let revoked = accounts
            .revoke_api_key(created.key.id, Scope::Owner(ann.id))
            .await
            .unwrap();
        assert!(revoked.revoked_at.is_some());
    }
}
