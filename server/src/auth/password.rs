//! Password hashing with argon2id, off the async runtime and bounded.

use std::sync::Arc;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use tokio::sync::Semaphore;

use super::AuthError;

/// Hashes and verifies passwords with argon2id at OWASP's parameters
/// (m=19 MiB, t=2, p=1).
///
/// Each hash costs ~19 MiB and tens of milliseconds of CPU, so it runs on the
/// blocking pool behind a semaphore: a login flood queues here instead of
/// exhausting memory or stalling the runtime's worker threads.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    /// At most `parallel` hashes run at once.
    pub fn new(parallel: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(parallel.max(1))),
        }
    }

    /// Hashes a password into a PHC string (`$argon2id$…`).
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable)?;
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|err| AuthError::Internal(format!("argon2 hash: {err}")))
        })
        .await
        .map_err(|err| AuthError::Internal(format!("argon2 task: {err}")))?
    }

    /// Whether `password` matches the PHC string `hash`. With `None` (an
    /// unknown user) it hashes the password anyway and returns false, so the
    /// answer takes as long as for a known user and does not reveal which
    /// usernames exist.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable)?;
        tokio::task::spawn_blocking(move || {
            let Some(hash) = hash else {
                let _ = Argon2::default().hash_password(password.as_bytes());
                return Ok(false);
            };
            let parsed = PasswordHash::new(&hash)
                .map_err(|err| AuthError::Internal(format!("stored password hash: {err}")))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(|err| AuthError::Internal(format!("argon2 task: {err}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::new(2);
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let hasher = PasswordHasher::new(1);
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }
}
