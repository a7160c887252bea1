//! What ends a socket's credential: its access token's expiry (which
//! `renewConnection` moves), and for every credential the revocation
//! notices that ask the store whether it still holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};
use uuid::Uuid;

use super::protocol::{Close, code};
use crate::auth::{Auth, Principal, Standing};

/// What ends a connection's credential.
#[derive(Default)]
pub(super) struct Credential {
    pub(super) expires: Option<watch::Receiver<Option<DateTime<Utc>>>>,
    /// Who authenticated, and the users whose credentials change.
    pub(super) revoked: Option<(Principal, broadcast::Receiver<Uuid>)>,
}

/// A deadline that never comes, for connections without one.
pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

impl Credential {
    /// When the connection must close for want of a valid token.
    pub(super) fn deadline(&self) -> Instant {
        let expires_at = self.expires.as_ref().and_then(|rx| *rx.borrow());
        match expires_at {
            None => far_future(),
            Some(at) => {
                let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                Instant::now() + left
            }
        }
    }
}

/// Resolves when the expiry changes (true) or can no longer change (false);
/// never, without a lease.
pub(super) async fn renewed(expires: &mut Option<watch::Receiver<Option<DateTime<Utc>>>>) -> bool {
    match expires {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Resolves, with how to close, once the connection's credential no longer
/// holds: revoked (4403), or the user's role changed (1012, "reconnect":
/// the connection's operations were authorised in the old role, and a
/// gateway reconnects with its key in the new one). Never without a
/// credential. The store decides, not the notice, so a notice heard late
/// closes nothing that was authenticated since; a connection that fell
/// behind the notices asks the store too.
pub(super) async fn revoked(
    revoked: &mut Option<(Principal, broadcast::Receiver<Uuid>)>,
    auth: &Auth,
) -> Close {
    let Some((principal, rx)) = revoked else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(user) if user != principal.user_id => continue,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
        // Boxed: a store query's future is large and this is rare; inline,
        // it would sit in every idle socket's task (it is polled in the
        // socket's `select!`).
        match Box::pin(auth.standing(principal)).await {
            Ok(Standing::Valid) => {}
            Ok(Standing::RoleChanged) => {
                return Close::new(
                    code::RECONNECT,
                    "the user's role changed; reconnect to continue in the new one",
                );
            }
            Ok(Standing::Revoked(reason)) => return Close::new(code::FORBIDDEN, reason),
            // The store is away: checked again at the next notice.
            Err(err) => tracing::warn!(error = %err, "checking a connection's credential failed"),
        }
    }
}
