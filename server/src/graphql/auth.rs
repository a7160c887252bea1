//! Accounts: who am I, logging in and out, users and API keys.

use super::scalars::Timestamp;
use async_graphql::{Context, Enum, ID, InputObject, Object};

use super::{
    context::{principal, request, state},
    error::{ApiError, ApiResult, OrNotFound},
    input,
};
use crate::{
    auth::{Credential, Principal as AuthPrincipal, SessionTokens},
    store::entity::{Permission, Role, api_key, user},
};

/// A person who logs in.
pub struct User(pub user::Model);

/// A person who signs in to Ferrite with a username and password. Devices,
/// events, commands and API keys belong to a user; a MEMBER sees only its
/// own, an ADMIN sees everyone's.
#[Object]
impl User {
    /// The user's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The name the user signs in with; unique.
    async fn username(&self) -> &str {
        &self.0.username
    }
    /// ADMIN or MEMBER.
    async fn role(&self) -> Role {
        self.0.role
    }
    /// When the user was created.
    async fn created_at(&self) -> Timestamp {
        self.0.created_at.into()
    }
    /// When the user was disabled; null while enabled. A disabled user
    /// cannot sign in, and none of its credentials work.
    async fn disabled_at(&self) -> Option<Timestamp> {
        self.0.disabled_at.map(Timestamp)
    }
}

/// An API key as stored (never its secret).
pub struct ApiKey(pub api_key::Model);

/// A credential for programs and gateways, acting for the user that owns
/// it with at most that user's rights. The secret is shown once, by
/// `createApiKey`; only its hash is stored.
#[Object]
impl ApiKey {
    /// The key's id (a UUID), for `revokeApiKey`.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// What the key is for, as its creator named it.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The first characters of the secret, to tell keys apart.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    /// What the key may do: READ, WRITE or ADMIN.
    async fn permission(&self) -> Permission {
        self.0.permission
    }
    /// The user the key acts for.
    async fn owner_id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }
    /// When the key was created.
    async fn created_at(&self) -> Timestamp {
        self.0.created_at.into()
    }
    /// When the key last authenticated a request (to the minute).
    async fn last_used_at(&self) -> Option<Timestamp> {
        self.0.last_used_at.map(Timestamp)
    }
    /// When the key was revoked; null while it works.
    async fn revoked_at(&self) -> Option<Timestamp> {
        self.0.revoked_at.map(Timestamp)
    }
}

/// A freshly created API key and its secret.
pub struct NewApiKey {
    key: api_key::Model,
    secret: String,
}

/// A freshly created API key and its secret, shown this once: store the
/// secret now.
#[Object]
impl NewApiKey {
    /// The key as `apiKeys` will list it.
    async fn api_key(&self) -> ApiKey {
        ApiKey(self.key.clone())
    }
    /// Send it as `Authorization: Bearer <secret>`. It cannot be shown again.
    async fn secret(&self) -> &str {
        &self.secret
    }
}

/// The tokens of a login session.
pub struct AuthPayload(SessionTokens);

/// The tokens of a login session, from `login` or `refresh`.
#[Object]
impl AuthPayload {
    /// A short-lived JWT: send it as `Authorization: Bearer <accessToken>`.
    async fn access_token(&self) -> &str {
        &self.0.access_token
    }
    /// Trade it for new tokens with `refresh` before `expiresAt`; each one
    /// works once.
    async fn refresh_token(&self) -> &str {
        &self.0.refresh_token
    }
    /// When the access token expires.
    async fn expires_at(&self) -> Timestamp {
        self.0.expires_at.into()
    }
    /// Who signed in.
    async fn user(&self) -> User {
        User(self.0.user.clone())
    }
}

/// How the caller authenticated.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A login session (JWT).
    Session,
    /// An API key.
    ApiKey,
}

/// The caller of this request.
pub struct Principal(AuthPrincipal);

/// Who is calling, and with what: the answer to `me`.
#[Object]
impl Principal {
    /// The user the credential acts for.
    async fn user(&self, ctx: &Context<'_>) -> ApiResult<User> {
        Ok(User(state(ctx).store.user_by_id(self.0.user_id).await?))
    }
    /// What this credential may do (for an API key, capped by its owner's role).
    async fn permission(&self) -> Permission {
        self.0.permission
    }
    /// A login session or an API key.
    async fn credential(&self) -> CredentialKind {
        match self.0.credential {
            Credential::Session => CredentialKind::Session,
            Credential::ApiKey { .. } => CredentialKind::ApiKey,
        }
    }
    /// The API key in use, when the credential is one.
    async fn api_key_id(&self) -> Option<ID> {
        match self.0.credential {
            Credential::ApiKey { id } => Some(ID(id.to_string())),
            Credential::Session => None,
        }
    }
}

/// A new user, for `createUser`.
#[derive(InputObject)]
pub struct CreateUserInput {
    /// 3 to 64 characters: letters, digits, `.`, `_`, `-`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// ADMIN or MEMBER; MEMBER when left out.
    #[graphql(default_with = "Role::Member")]
    pub role: Role,
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<Principal> {
        Ok(Principal(principal(ctx, Permission::Read)?.clone()))
    }

    /// The caller's API keys (every user's, for an administrator), revoked ones
    /// included. Needs an ADMIN credential (a login session is one).
    async fn api_keys(&self, ctx: &Context<'_>) -> ApiResult<Vec<ApiKey>> {
        let caller = principal(ctx, Permission::Admin)?;
        let keys = state(ctx).store.list_api_keys(caller.scope()).await?;
        Ok(keys.into_iter().map(ApiKey).collect())
    }

    /// Every user. Administrators only.
    async fn users(&self, ctx: &Context<'_>) -> ApiResult<Vec<User>> {
        principal(ctx, Permission::Read)?.require_admin()?;
        let users = state(ctx).store.list_users().await?;
        Ok(users.into_iter().map(User).collect())
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Starts a session. Repeated failures from one address for one username
    /// are refused for a while with RATE_LIMITED.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's name.")] username: String,
        #[graphql(desc = "The user's password.")] password: String,
    ) -> ApiResult<AuthPayload> {
        let client = request(ctx).client;
        let tokens = state(ctx).auth.login(client, &username, &password).await?;
        Ok(AuthPayload(tokens))
    }

    /// Trades a refresh token for new tokens. The old refresh token stops
    /// working; presenting it again revokes the whole session.
    async fn refresh(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `refreshToken` of the latest `login` or `refresh`.")]
        refresh_token: String,
    ) -> ApiResult<AuthPayload> {
        Ok(AuthPayload(state(ctx).auth.refresh(&refresh_token).await?))
    }

    /// Ends the session of a refresh token. False when it was unknown.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session's latest `refreshToken`.")] refresh_token: String,
    ) -> ApiResult<bool> {
        Ok(state(ctx).auth.logout(&refresh_token).await?)
    }

    /// Creates a user. Administrators only.
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new user's name, password and role.")] input: CreateUserInput,
    ) -> ApiResult<User> {
        principal(ctx, Permission::Admin)?.require_admin()?;
        let user = state(ctx)
            .accounts()
            .create_user(&input.username, input.password, input.role)
            .await?;
        Ok(User(user))
    }

    /// Sets another user's password (an administrator resetting a
    /// forgotten one) and ends all of that user's login sessions: refresh
    /// and access tokens stop working, and sockets opened with them close
    /// (4403) on every node within a second. The user's API keys stay.
    /// Administrators only. To change your own, use `changePassword`, which
    /// asks for the current one.
    async fn set_user_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's id.")] id: ID,
        #[graphql(desc = "At least 8 characters.")] new_password: String,
    ) -> ApiResult<bool> {
        principal(ctx, Permission::Admin)?.require_admin()?;
        let id = input::uuid_id("user", &id)?;
        state(ctx)
            .accounts()
            .set_password(id, new_password)
            .await
            .or_not_found("user")?;
        Ok(true)
    }

    /// Makes a user ADMIN or MEMBER. The user's access tokens stop working
    /// (a refresh gets one with the new role) and every socket of the user,
    /// its keys' too, closes (4403) within a second, so none keeps the old
    /// role; an API key of a demoted user is capped at WRITE. The last
    /// administrator cannot be demoted (CONFLICT). Administrators only.
    async fn set_user_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's id.")] id: ID,
        #[graphql(desc = "The role it gets.")] role: Role,
    ) -> ApiResult<User> {
        principal(ctx, Permission::Admin)?.require_admin()?;
        let id = input::uuid_id("user", &id)?;
        let user = state(ctx)
            .store
            .set_role(id, role)
            .await
            .or_not_found("user")?;
        Ok(User(user))
    }

    /// Disables a user: it cannot sign in, none of its credentials work
    /// (API keys included), its sessions end and its sockets close (4403)
    /// on every node within a second; its devices go OFFLINE as their
    /// gateways are disconnected. Its devices, events, commands and keys
    /// are kept for `enableUser`. The last administrator cannot be disabled
    /// (CONFLICT). Administrators only.
    async fn disable_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's id.")] id: ID,
    ) -> ApiResult<User> {
        principal(ctx, Permission::Admin)?.require_admin()?;
        let id = input::uuid_id("user", &id)?;
        let user = state(ctx)
            .store
            .set_disabled(id, true)
            .await
            .or_not_found("user")?;
        Ok(User(user))
    }

    /// Enables a disabled user again: it can sign in, and its API keys
    /// work again. Administrators only.
    async fn enable_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's id.")] id: ID,
    ) -> ApiResult<User> {
        principal(ctx, Permission::Admin)?.require_admin()?;
        let id = input::uuid_id("user", &id)?;
        let user = state(ctx)
            .store
            .set_disabled(id, false)
            .await
            .or_not_found("user")?;
        Ok(User(user))
    }

    /// Deletes a user and everything it owns, for good: its devices with
    /// their events, commands and status history, its API keys and its
    /// sessions. Its sockets close (4403) on every node within a second,
    /// and `deviceChanged` subscribers see each device DELETED. To keep the
    /// data, use `disableUser`. The last administrator cannot be deleted
    /// (CONFLICT). Administrators only. Returns the user as it was.
    async fn delete_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's id.")] id: ID,
    ) -> ApiResult<User> {
        principal(ctx, Permission::Admin)?.require_admin()?;
        let id = input::uuid_id("user", &id)?;
        let app = state(ctx);
        let user = app.service().delete_user(id).await.or_not_found("user")?;
        Ok(User(user))
    }

    /// Changes the caller's password and ends all of its login sessions,
    /// the calling one too (sign in again with the new password): refresh
    /// and access tokens stop working, sockets opened with them close. API
    /// keys stay.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The password the caller signs in with now.")] current_password: String,
        #[graphql(desc = "At least 8 characters.")] new_password: String,
    ) -> ApiResult<bool> {
        let caller = principal(ctx, Permission::Admin)?;
        state(ctx)
            .accounts()
            .change_password(caller.user_id, current_password, new_password)
            .await?;
        Ok(true)
    }

    /// Creates an API key for the caller. A key is never stronger than the
    /// credential creating it, nor than its owner's role (a MEMBER's keys are
    /// at most WRITE).
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What the key is for (up to 100 characters), to tell keys apart.")]
        name: String,
        #[graphql(desc = "READ, WRITE or ADMIN; at most the caller's own.")] permission: Permission,
    ) -> ApiResult<NewApiKey> {
        let caller = principal(ctx, Permission::Admin)?;
        let app = state(ctx);
        let owner = app.store.user_by_id(caller.user_id).await?;
        let created = app
            .accounts()
            .create_api_key(&owner, caller.permission, &name, permission)
            .await?;
        Ok(NewApiKey {
            key: created.key,
            secret: created.secret,
        })
    }

    /// On a WebSocket opened with an access token: presents a newer access
    /// token of the same user (from `refresh`) so the connection outlives
    /// the one it was opened with (a connection whose access token expires
    /// is closed with 4403). Returns the new expiry. An API key is refused,
    /// and so is renewing a connection opened with one (it does not expire;
    /// revoking the key closes it).
    async fn renew_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A fresh `accessToken` of the same user.")] token: String,
    ) -> ApiResult<Option<Timestamp>> {
        let Some(lease) = request(ctx).socket.clone() else {
            return Err(ApiError::bad_input(
                "renewConnection is for WebSocket connections; over HTTP, send the new token with each request",
            ));
        };
        if lease.credential != crate::auth::Credential::Session {
            return Err(ApiError::bad_input(
                "this connection was opened with an API key, which does not expire: there is nothing to renew",
            ));
        }
        let fresh = state(ctx).auth.authenticate(&token).await?;
        if fresh.credential != crate::auth::Credential::Session {
            return Err(ApiError::bad_input(
                "renew a connection opened with an access token with a newer access token (from `refresh`), not an API key",
            ));
        }
        if fresh.user_id != lease.user_id {
            return Err(ApiError::Forbidden(
                "the new token belongs to another user; open a new connection".into(),
            ));
        }
        lease.expires.send_replace(fresh.expires_at);
        Ok(fresh.expires_at.map(Timestamp))
    }

    /// Revokes one of the caller's keys (any key, for an administrator). It
    /// stops working at once; connections opened with it close (4403) on
    /// every node within a second.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key's id (not its secret).")] id: ID,
    ) -> ApiResult<ApiKey> {
        let caller = principal(ctx, Permission::Admin)?;
        let id = input::uuid_id("API key", &id)?;
        let key = state(ctx)
            .accounts()
            .revoke_api_key(id, caller.scope())
            .await
            .or_not_found("API key")?;
        Ok(ApiKey(key))
    }
}
