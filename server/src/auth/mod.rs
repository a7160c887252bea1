//! Authentication and authorisation: who is calling, and what may they do.
//!
//! A request carries `Authorization: Bearer <token>`, where the token is a
//! JWT access token (a person logged in) or an API key secret (a program or a
//! gateway; it starts with [`token::API_KEY_PREFIX`]). [`Auth::authenticate`]
//! turns it into a [`Principal`], and every resolver asks the principal for
//! the [`Permission`] it needs and the [`Scope`] of rows it may see.
//!
//! # Layout
//! - `password`: argon2id hashing on the blocking pool, bounded.
//! - `token`: JWT access tokens, opaque refresh tokens and API key secrets.
//! - `throttle`: login attempts counted per client address and username,
//!   and per address.
//!
//! # Rules
//! - A login session (JWT) may do everything its user's role allows.
//! - An API key may do what its permission allows, capped by its owner's
//!   role: a MEMBER's keys are at most WRITE, so only a person manages keys.
//! - Only an ADMIN (role) sees every tenant and manages users.

/// argon2id hashing on the blocking pool, bounded.
mod password;
/// Login attempts counted per address and username, and per address.
mod throttle;
/// JWT access tokens, opaque refresh tokens and API key secrets.
pub mod token;

use std::{net::IpAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use password::PasswordHasher;
pub use throttle::{LoginThrottle, address_key};
pub use token::JwtKeys;

use crate::metrics::LoginMetrics;
use crate::store::{
    RotateOutcome, Scope, Store, StoreError,
    entity::{Permission, Role, api_key, user},
};

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that is not (or no longer) valid.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid credential without the right to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Too many failed logins; try again later.
    #[error("too many failed login attempts; try again in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Unavailable,
    /// A bug or a broken dependency; logged, never shown to the client.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A JWT from `login` or `refresh`.
    Session,
    /// An API key.
    ApiKey { id: Uuid },
}

/// The authenticated caller of one request or one WebSocket connection.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
    /// What this credential may do, already capped by the role.
    pub permission: Permission,
    pub credential: Credential,
    /// When the credential stops being valid (an access token's `exp`);
    /// `None` for API keys, which last until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// The user's session epoch when this principal was authenticated.
    pub epoch: i32,
}

/// The strongest permission a credential of a user with `role` may hold.
pub fn permission_cap(role: Role) -> Permission {
    match role {
        Role::Admin => Permission::Admin,
        Role::Member => Permission::Write,
    }
}

impl Principal {
    fn session(user: user::Model, expires_at: DateTime<Utc>) -> Self {
        Self {
            user_id: user.id,
            username: user.username,
            role: user.role,
            // A person may manage their own keys and password, whatever the role.
            permission: Permission::Admin,
            credential: Credential::Session,
            expires_at: Some(expires_at),
            epoch: user.session_epoch,
        }
    }

    fn api_key(key: &api_key::Model, owner: user::Model) -> Self {
        Self {
            user_id: owner.id,
            username: owner.username,
            role: owner.role,
            // A key never outranks its owner, even one demoted after the key
            // was made.
            permission: key.permission.min(permission_cap(owner.role)),
            credential: Credential::ApiKey { id: key.id },
            expires_at: None,
            epoch: owner.session_epoch,
        }
    }

    /// The rows this principal may see and touch.
    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Admin => Scope::All,
            Role::Member => Scope::Owner(self.user_id),
        }
    }

    /// Refuses unless the credential holds at least `needed`.
    pub fn require(&self, needed: Permission) -> Result<(), AuthError> {
        if self.permission >= needed {
            Ok(())
        } else {
            Err(AuthError::Forbidden(match needed {
                Permission::Read => "this credential may not read",
                Permission::Write => "this credential may only read",
                Permission::Admin => "this needs an ADMIN credential",
            }))
        }
    }

    /// Refuses unless the principal is an ADMIN user with an ADMIN credential.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.role == Role::Admin && self.permission == Permission::Admin {
            Ok(())
        } else {
            Err(AuthError::Forbidden("only an administrator may do this"))
        }
    }
}

/// What became of a credential since it was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It works as it did.
    Valid,
    /// It works, in the user's new role: authenticate again to get it.
    RoleChanged,
    /// It no longer works, for this reason.
    Revoked(&'static str),
}

/// The tokens a login or refresh hands out.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    pub user: user::Model,
}

/// Settings of [`Auth`].
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Password hashes computed at once; more wait.
    pub parallel_hashes: usize,
    pub login_attempts: u32,
    pub login_address_attempts: u32,
    pub login_window: Duration,
}

/// The authentication service: one per server, cheap to clone.
#[derive(Clone, Debug)]
pub struct Auth {
    store: Store,
    /// Shared, not copied: every socket and request clones the app state,
    /// and the keys hold the secret and the validation's claim sets (a
    /// clone was two hash sets and two secrets allocated per publish).
    jwt: Arc<JwtKeys>,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    refresh_token_ttl: Duration,
    logins: LoginMetrics,
}

/// Password length limits: a minimum for safety, a maximum so a huge
/// "password" cannot make hashing expensive.
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_BYTES: usize = 1024;

/// The token of an `Authorization` value: `Bearer <token>`, the scheme in
/// any case, any whitespace around. Another scheme (`Basic …`) or an empty
/// token is `None`. HTTP requires this form; a WebSocket's
/// `connection_init` also takes the bare token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks a username: 3 to 64 characters from `[A-Za-z0-9._-]`.
pub fn validate_username(username: &str) -> Result<(), &'static str> {
    let valid_chars = username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !(3..=64).contains(&username.len()) || !valid_chars {
        return Err("the username must be 3 to 64 characters from letters, digits, `.`, `_`, `-`");
    }
    Ok(())
}

/// Longest API key name, in characters.
pub const KEY_NAME_MAX: usize = 100;

/// Checks an API key's name: 1 to [`KEY_NAME_MAX`] characters, none of them
/// a control character (names are listed on pages and written to logs).
pub fn validate_key_name(name: &str) -> Result<(), &'static str> {
    let chars = name.chars().count();
    if chars == 0 || chars > KEY_NAME_MAX {
        return Err("the key name must be 1 to 100 characters long");
    }
    if name.chars().any(char::is_control) {
        return Err("the key name must not contain control characters");
    }
    Ok(())
}

/// Checks a new password against the length limits.
pub fn validate_new_password(password: &str) -> Result<(), &'static str> {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err("the password must have at least 8 characters");
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err("the password must not be longer than 1024 bytes");
    }
    Ok(())
}

impl Auth {
    /// `logins` counts failed and throttled logins (the server's metrics).
    pub fn new(
        store: Store,
        jwt_secret: &[u8],
        settings: &AuthSettings,
        logins: LoginMetrics,
    ) -> Self {
        Self {
            store,
            jwt: Arc::new(JwtKeys::new(jwt_secret, settings.access_token_ttl)),
            hasher: PasswordHasher::new(settings.parallel_hashes),
            throttle: LoginThrottle::new(
                settings.login_attempts,
                settings.login_address_attempts,
                settings.login_window,
            ),
            refresh_token_ttl: settings.refresh_token_ttl,
            logins,
        }
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Who the bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(token::API_KEY_PREFIX) {
            let hash = token::hash_secret(token);
            match self.store.authenticate_api_key(&hash).await {
                Ok((key, owner)) => Ok(Principal::api_key(&key, owner)),
                Err(StoreError::NotFound) => Err(AuthError::Unauthenticated(
                    "the API key is not valid or has been revoked",
                )),
                Err(err) => Err(err.into()),
            }
        } else {
            let claims = self.jwt.verify(token)?;
            match self.store.user_by_id(claims.user_id).await {
                Ok(user) if user.disabled_at.is_some() => {
                    Err(AuthError::Unauthenticated("the account is disabled"))
                }
                // The password or the role changed since it was issued.
                Ok(user) if user.session_epoch != claims.epoch => Err(AuthError::Unauthenticated(
                    "the access token was revoked; sign in again",
                )),
                Ok(user) => Ok(Principal::session(user, claims.expires_at)),
                Err(StoreError::NotFound) => {
                    Err(AuthError::Unauthenticated("the access token is not valid"))
                }
                Err(err) => Err(err.into()),
            }
        }
    }

    /// What became of `principal`'s credential since it was authenticated,
    /// asked by a socket when the user's credentials changed.
    pub async fn standing(&self, principal: &Principal) -> Result<Standing, AuthError> {
        let user = match self.store.user_by_id(principal.user_id).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Ok(Standing::Revoked("the user has been deleted")),
            Err(err) => return Err(err.into()),
        };
        if user.disabled_at.is_some() {
            return Ok(Standing::Revoked("the user has been disabled"));
        }
        match principal.credential {
            // A password change moves the epoch on; keys outlive it.
            Credential::Session if user.session_epoch != principal.epoch => {
                return Ok(Standing::Revoked("the session has ended; sign in again"));
            }
            Credential::Session => {}
            Credential::ApiKey { id } => match self.store.api_key_by_id(id, Scope::All).await {
                Ok(key) if key.revoked_at.is_none() => {}
                Ok(_) | Err(StoreError::NotFound) => {
                    return Ok(Standing::Revoked("the API key has been revoked"));
                }
                Err(err) => return Err(err.into()),
            },
        }
        Ok(if user.role == principal.role {
            Standing::Valid
        } else {
            Standing::RoleChanged
        })
    }

    /// Checks a username and password and starts a session.
    pub async fn login(
        &self,
        client: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<SessionTokens, AuthError> {
        let attempt = match self.throttle.begin(client, username) {
            Ok(attempt) => attempt,
            Err(throttled) => {
                self.logins.throttled.inc();
                return Err(throttled);
            }
        };
        if password.len() > PASSWORD_MAX_BYTES {
            self.logins.failed.inc();
            return Err(AuthError::Unauthenticated("wrong username or password"));
        }
        let user = match self.store.user_by_username(username).await {
            Ok(user) => Some(user),
            Err(StoreError::NotFound) => None,
            Err(err) => return Err(err.into()),
        };
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self.hasher.verify(password.to_owned(), stored_hash).await?;
        match user {
            // Only once the password matched: a disabled account is not
            // told apart from a wrong password to someone guessing.
            Some(user) if matches && user.disabled_at.is_some() => {
                attempt.succeeded();
                Err(AuthError::Forbidden(
                    "this account is disabled; ask an administrator",
                ))
            }
            Some(user) if matches => {
                attempt.succeeded();
                self.start_session(user).await
            }
            // The attempt stays counted.
            _ => {
                self.logins.failed.inc();
                Err(AuthError::Unauthenticated("wrong username or password"))
            }
        }
    }

    async fn start_session(&self, user: user::Model) -> Result<SessionTokens, AuthError> {
        let (access_token, expires_at) = self.jwt.issue(user.id, user.session_epoch)?;
        let refresh_token = token::random_token(32);
        self.store
            .insert_refresh_token(
                user.id,
                token::hash_secret(&refresh_token),
                self.refresh_expiry()?,
            )
            .await?;
        Ok(SessionTokens {
            access_token,
            refresh_token,
            expires_at,
            user,
        })
    }

    fn refresh_expiry(&self) -> Result<DateTime<Utc>, AuthError> {
        let ttl = chrono::Duration::from_std(self.refresh_token_ttl)
            .map_err(|_| AuthError::Internal("refresh token ttl out of range".into()))?;
        Ok(crate::store::now() + ttl)
    }

    /// Trades a refresh token for new tokens; the old one stops working.
    pub async fn refresh(&self, refresh_token: &str) -> Result<SessionTokens, AuthError> {
        let next = token::random_token(32);
        let outcome = self
            .store
            .rotate_refresh_token(
                &token::hash_secret(refresh_token),
                token::hash_secret(&next),
                self.refresh_expiry()?,
            )
            .await?;
        match outcome {
            RotateOutcome::Rotated { user_id } => {
                let user = self.store.user_by_id(user_id).await?;
                if user.disabled_at.is_some() {
                    return Err(AuthError::Unauthenticated("the account is disabled"));
                }
                let (access_token, expires_at) = self.jwt.issue(user.id, user.session_epoch)?;
                Ok(SessionTokens {
                    access_token,
                    refresh_token: next,
                    expires_at,
                    user,
                })
            }
            RotateOutcome::Invalid => Err(AuthError::Unauthenticated(
                "the refresh token is not valid or has expired",
            )),
            RotateOutcome::Replayed => {
                tracing::warn!(
                    "a rotated refresh token was presented again; its session is revoked"
                );
                Err(AuthError::Unauthenticated(
                    "the refresh token was already used; the session has been revoked",
                ))
            }
        }
    }

    /// Ends the session of a refresh token; false when it was unknown.
    pub async fn logout(&self, refresh_token: &str) -> Result<bool, AuthError> {
        Ok(self
            .store
            .revoke_refresh_token(&token::hash_secret(refresh_token))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules the API and the CLI share, written once.
    #[test]
    fn names_and_tokens_are_checked_the_same_everywhere() {
        assert!(validate_key_name("kitchen gateway").is_ok());
        assert!(validate_key_name(&"k".repeat(KEY_NAME_MAX)).is_ok());
        assert!(validate_key_name(&"k".repeat(KEY_NAME_MAX + 1)).is_err());
        assert!(validate_key_name("").is_err());
        assert!(validate_key_name("line\nbreak").is_err());
        assert!(validate_key_name("\u{1b}[31mred").is_err());

        assert!(validate_username("ada.l_ovelace-1").is_ok());
        assert!(validate_username("ad").is_err());
        assert!(validate_username("ada lovelace").is_err());

        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("  bearer \t abc  "), Some("abc"));
        assert_eq!(bearer_token("Basic YWJj"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
