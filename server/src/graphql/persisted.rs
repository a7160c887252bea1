//! Automatic persisted queries (Apollo's APQ protocol): a client sends the
//! SHA-256 of its query instead of the query, and the query only when the
//! server does not know the hash yet.
//!
//! A request with `extensions.persistedQuery = {version: 1, sha256Hash}`:
//! - without a query: the query is taken from the cache, or the request
//!   fails with `PersistedQueryNotFound` (code `PERSISTED_QUERY_NOT_FOUND`),
//!   and the client sends it again with the query;
//! - with a query: the hash must be the query's (else `BAD_USER_INPUT`),
//!   and once the query has passed admission (size, nesting and cost, see
//!   `admission`) it is remembered under its hash.
//!
//! The query then goes through exactly what a plain request goes through:
//! a hash is a shorter way to send the text, not a way around a limit.
//! The cache holds query texts, least recently used out first, within
//! `limits.persisted_queries_bytes` of text (4 MiB by default: a few
//! thousand ordinary queries), so it costs its bound and no more whatever
//! clients send. It is per node and in memory: after a restart, or on
//! another node, a client's first request with a hash is a miss it
//! recovers from by itself.

use std::sync::{Arc, Mutex};

use async_graphql::{Pos, Request, ServerError};
use hashlink::LruCache;
use sha2::{Digest, Sha256};

use super::{
    admission,
    documents::{Documents, Primed},
    error::ApiError,
    live::Publish,
};
use crate::config::Limits;

/// A query's SHA-256.
type Hash = [u8; 32];

/// The query texts clients registered, by hash, bounded in bytes.
pub struct PersistedQueries {
    cache: Mutex<Cache>,
    capacity_bytes: usize,
    /// Parsed documents of admitted texts, so a repeated operation is not
    /// parsed again (see `documents`).
    documents: Documents,
}

struct Cache {
    queries: LruCache<Hash, Arc<str>>,
    bytes: usize,
}

/// A query sent with its hash, to remember once admitted.
#[must_use = "remember it once the query is admitted"]
pub struct Registration(Hash);

impl PersistedQueries {
    /// A cache of at most `capacity_bytes` of query text.
    pub fn new(capacity_bytes: usize) -> Self {
        PersistedQueries {
            cache: Mutex::new(Cache {
                queries: LruCache::new_unbounded(),
                bytes: 0,
            }),
            capacity_bytes,
            documents: Documents::default(),
        }
    }

    /// Reads `extensions.persistedQuery`: fills in the query of a request
    /// that sent only the hash, or checks a query against the hash it came
    /// with and returns it to [`remember`](Self::remember) once admitted.
    /// A request without the extension is left alone.
    pub fn resolve(&self, request: &mut Request) -> Result<Option<Registration>, ServerError> {
        let Some(extension) = request.extensions.get("persistedQuery") else {
            return Ok(None);
        };
        let hash = parse_extension(extension)?;
        if request.query.is_empty() {
            let found = self.lock().queries.get(&hash).cloned();
            let Some(query) = found else {
                return Err(error(ApiError::PersistedQueryNotFound));
            };
            request.query = query.to_string();
            return Ok(None);
        }
        let digest: Hash = Sha256::digest(request.query.as_bytes()).into();
        if digest != hash {
            return Err(error(ApiError::bad_input(
                "provided sha does not match query: `persistedQuery.sha256Hash` must be the SHA-256 of `query`, in hex",
            )));
        }
        Ok(Some(Registration(hash)))
    }

    /// What every transport does with a request before running it: fills
    /// in a persisted query from its hash, admits the document (see
    /// `admission`; a text admitted before is not parsed again, but still
    /// scanned and counted), and remembers a query sent with its hash once
    /// it has passed. Any refusal is the request's error.
    ///
    /// A trusted publishing mutation (see `documents`) is returned instead
    /// of parsed: its text was admitted when it was kept, and its cost does
    /// not depend on the variables. The request is then left unparsed and
    /// unmarked, so if it still goes to the schema it is admitted there.
    pub fn admit(
        &self,
        request: &mut Request,
        limits: &Limits,
    ) -> Result<Option<Arc<Publish>>, ServerError> {
        let registration = self.resolve(request)?;
        let primed = self.documents.prime(request);
        let publish = match primed {
            Primed::Publish(publish) => Some(publish),
            Primed::Parsed => {
                admission::admit(request, limits)?;
                None
            }
            Primed::Unknown => {
                admission::admit(request, limits)?;
                self.documents.keep(request);
                None
            }
        };
        if let Some(registration) = registration {
            self.remember(registration, &request.query);
        }
        Ok(publish)
    }

    /// Trusts a publishing mutation async-graphql has run without a
    /// request error (see `live::publish`).
    pub fn trust(&self, text: &str, publish: Arc<Publish>) {
        self.documents.trust(text, publish);
    }

    /// Remembers an admitted query under its hash, making room by
    /// forgetting the least recently used ones. A query larger than the
    /// whole cache is not kept (the client keeps sending it whole).
    pub fn remember(&self, registration: Registration, query: &str) {
        let size = query.len();
        if size > self.capacity_bytes {
            return;
        }
        let mut cache = self.lock();
        if cache.queries.get(&registration.0).is_some() {
            return;
        }
        while cache.bytes + size > self.capacity_bytes {
            let Some((_, evicted)) = cache.queries.remove_lru() else {
                break;
            };
            cache.bytes -= evicted.len();
        }
        cache.queries.insert(registration.0, Arc::from(query));
        cache.bytes += size;
    }

    /// Queries held, and their bytes (for tests and metrics).
    pub fn usage(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.queries.len(), cache.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves the map consistent (every
        // step above is a single map call), so a poisoned lock is usable.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `{"version": 1, "sha256Hash": "<64 hex digits>"}`, checked before
/// anything is looked up.
fn parse_extension(extension: &async_graphql::Value) -> Result<Hash, ServerError> {
    const EXPECTED: &str = "`extensions.persistedQuery` must be {\"version\": 1, \"sha256Hash\": \"<the query's SHA-256, 64 hex digits>\"}";
    let async_graphql::Value::Object(fields) = extension else {
        return Err(error(ApiError::bad_input(EXPECTED)));
    };
    let version = fields.get("version");
    if version != Some(&async_graphql::Value::from(1)) {
        return Err(error(ApiError::bad_input(format!(
            "only version 1 of persisted queries is supported; {EXPECTED}"
        ))));
    }
    let Some(async_graphql::Value::String(hex)) = fields.get("sha256Hash") else {
        return Err(error(ApiError::bad_input(EXPECTED)));
    };
    decode_hex(hex).ok_or_else(|| error(ApiError::bad_input(EXPECTED)))
}

/// 64 hex digits (either case) as 32 bytes; anything else is `None`.
fn decode_hex(text: &str) -> Option<Hash> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let nibble = |digit: u8| (digit as char).to_digit(16).map(|n| n as u8);
    let mut hash = [0; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(hash)
}

fn error(err: ApiError) -> ServerError {
    async_graphql::Error::from(err).into_server_error(Pos::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(query: &str) -> String {
        Sha256::digest(query.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn request(query: &str, hash: &str) -> Request {
        let mut request = Request::new(query);
        request.extensions.insert(
            "persistedQuery".to_owned(),
            async_graphql::Value::from_json(serde_json::json!({"version": 1, "sha256Hash": hash}))
                .unwrap(),
        );
        request
    }

    fn code(err: &ServerError) -> String {
        err.extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .map(|c| c.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_hash_is_a_miss_until_its_query_is_registered() {
        let cache = PersistedQueries::new(1024);
        let query = "{ me { permission } }";
        let miss = cache.resolve(&mut request("", &hex(query))).err().unwrap();
        assert_eq!(miss.message, "PersistedQueryNotFound");
        assert_eq!(code(&miss), "\"PERSISTED_QUERY_NOT_FOUND\"");

        let registration = cache.resolve(&mut request(query, &hex(query))).unwrap();
        cache.remember(registration.unwrap(), query);
        let mut by_hash = request("", &hex(query).to_uppercase());
        assert!(cache.resolve(&mut by_hash).unwrap().is_none());
        assert_eq!(by_hash.query, query);
    }

    #[test]
    fn a_hash_that_is_not_the_query_is_refused() {
        let cache = PersistedQueries::new(1024);
        let err = cache
            .resolve(&mut request(
                "{ me { permission } }",
                &hex("{ users { id } }"),
            ))
            .err()
            .unwrap();
        assert_eq!(code(&err), "\"BAD_USER_INPUT\"");
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn garbage_extensions_are_refused_before_any_lookup() {
        let cache = PersistedQueries::new(1024);
        let long = "a".repeat(10 * 1024 * 1024);
        for garbage in [
            serde_json::json!("yes"),
            serde_json::json!({"version": 2, "sha256Hash": hex("{ a }")}),
            serde_json::json!({"version": "1", "sha256Hash": hex("{ a }")}),
            serde_json::json!({"version": 1}),
            serde_json::json!({"version": 1, "sha256Hash": 42}),
            serde_json::json!({"version": 1, "sha256Hash": "zz".repeat(32)}),
            serde_json::json!({"version": 1, "sha256Hash": "é".repeat(32)}),
            serde_json::json!({"version": 1, "sha256Hash": long}),
        ] {
            let mut request = Request::new("");
            request.extensions.insert(
                "persistedQuery".to_owned(),
                async_graphql::Value::from_json(garbage.clone()).unwrap(),
            );
            let err = cache.resolve(&mut request).err().unwrap();
            assert_eq!(code(&err), "\"BAD_USER_INPUT\"", "{garbage:.80}");
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bytes() {
        let cache = PersistedQueries::new(100);
        let queries: Vec<String> = (0..50).map(|i| format!("{{ q{i:02} }}")).collect();
        for query in &queries {
            let registration = cache.resolve(&mut request(query, &hex(query))).unwrap();
            cache.remember(registration.unwrap(), query);
            assert!(cache.usage().1 <= 100);
        }
        let (count, bytes) = cache.usage();
        assert_eq!((count, bytes), (14, 98), "7-byte queries in 100 bytes");
        // The oldest are gone, the newest are there.
        assert!(cache.resolve(&mut request("", &hex(&queries[0]))).is_err());
        assert!(cache.resolve(&mut request("", &hex(&queries[49]))).is_ok());
        // A query larger than the cache is never kept.
        let huge = "{ ".to_owned() + &"x ".repeat(100) + "}";
        let registration = cache.resolve(&mut request(&huge, &hex(&huge))).unwrap();
        cache.remember(registration.unwrap(), &huge);
        assert_eq!(cache.usage(), (14, 98));
    }
}
