//! Access tokens (JWT), refresh tokens and API key secrets.
//!
//! Access tokens are short-lived HS256 JWTs and are never stored. Refresh
//! tokens and API keys are opaque random strings; only their SHA-256 is
//! stored. A fast hash is right for them (unlike passwords): they carry 256
//! bits of entropy, so there is nothing to brute-force.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AuthError;

/// Every API key starts with this, so a key is recognisable in a config file,
/// a log scanner or a secret-scanning tool, and the server can tell a key
/// from a JWT without trying both.
pub const API_KEY_PREFIX: &str = "frt_";

/// How many characters of a key (after the prefix) are kept in clear to tell
/// keys apart in listings.
const API_KEY_SHOWN_CHARS: usize = 8;

const ISSUER: &str = "ferrite";

/// `n` random bytes from the operating system, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("BUG: the operating system has no random source");
    URL_SAFE_NO_PAD.encode(buf)
}

/// The stored form of an opaque secret: SHA-256, hex.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new API key: the secret (shown once), what is shown of it later, and
/// what is stored.
pub struct NewApiKeySecret {
    pub secret: String,
    pub shown_prefix: String,
    pub hash: String,
}

pub fn new_api_key_secret() -> NewApiKeySecret {
    let body = random_token(32);
    let secret = format!("{API_KEY_PREFIX}{body}");
    NewApiKeySecret {
        shown_prefix: secret[..API_KEY_PREFIX.len() + API_KEY_SHOWN_CHARS].to_owned(),
        hash: hash_secret(&secret),
        secret,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    iss: String,
    iat: i64,
    exp: i64,
    /// The user's session epoch when the token was issued: a password or
    /// role change moves the user's on, and older tokens stop working.
    #[serde(default)]
    ep: i32,
}

/// What a valid access token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessClaims {
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The user's session epoch at issue.
    pub epoch: i32,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Clock skew tolerated between nodes when checking `exp` and `iat`.
const LEEWAY_SECONDS: u64 = 30;

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A signed access token for `user_id` in its session `epoch`, and when
    /// it expires.
    pub fn issue(&self, user_id: Uuid, epoch: i32) -> Result<(String, DateTime<Utc>), AuthError> {
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(self.ttl)
                .map_err(|_| AuthError::Internal("access token ttl out of range".into()))?;
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.to_owned(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            ep: epoch,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| AuthError::Internal(format!("jwt encode: {err}")))?;
        Ok((token, expires_at))
    }

    /// What a valid access token says.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    AuthError::Unauthenticated("the access token has expired")
                }
                _ => AuthError::Unauthenticated("the access token is not valid"),
            })?;
        // jsonwebtoken never checks `iat`: a token "issued" in the future was
        // not issued by us.
        if data.claims.iat > Utc::now().timestamp() + LEEWAY_SECONDS as i64 {
            return Err(AuthError::Unauthenticated("the access token is not valid"));
        }
        let user = Uuid::parse_str(&data.claims.sub)
            .map_err(|_| AuthError::Unauthenticated("the access token is not valid"))?;
        let expires_at = DateTime::from_timestamp(data.claims.exp, 0)
            .ok_or(AuthError::Unauthenticated("the access token is not valid"))?;
        Ok(AccessClaims {
            user_id: user,
            expires_at,
            epoch: data.claims.ep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_key_only() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let user = Uuid::new_v4();
        let (token, _) = keys.issue(user, 3).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.user_id, claims.epoch), (user, 3));
        let other = JwtKeys::new(b"another secret of enough length!", Duration::from_secs(60));
        assert!(other.verify(&token).is_err());
        assert!(keys.verify("not.a.jwt").is_err());
    }

    #[test]
    fn api_keys_are_recognisable_and_stored_hashed() {
        let key = new_api_key_secret();
        assert!(key.secret.starts_with(API_KEY_PREFIX));
        assert!(key.secret.starts_with(&key.shown_prefix));
        assert_eq!(key.hash, hash_secret(&key.secret));
        assert_eq!(key.hash.len(), 64);
        assert!(!key.hash.contains(&key.secret));
    }
}
