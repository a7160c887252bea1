//! [`ConnectorOptions`]: everything a session needs, validated as it is set.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{Error, types::check_text};

/// An API key that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        let key = key.trim().to_owned();
        if key.is_empty() {
            return Err(invalid("api_key", "is empty"));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("api_key", "contains whitespace"));
        }
        Ok(ApiKey(key))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What [`Connector::event`](crate::Connector::event) does when the outbox
/// already holds `outbox_max_events` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxFullPolicy {
    /// Refuse the new event with [`Error::OutboxFull`]: nothing accepted is
    /// ever dropped, the caller decides. The default.
    #[default]
    Reject,
    /// Drop the oldest waiting event to make room (its waiter, if any, gets
    /// [`Error::Dropped`]): for telemetry where the newest matters most.
    DropOldest,
}

/// Options of a [`Connector`](crate::Connector). Build with
/// [`ConnectorOptions::new`], adjust with the setters (each validates its
/// value), or load a `connector.toml` with
/// [`ConnectorConfig`](crate::ConnectorConfig).
///
/// ```
/// use std::time::Duration;
/// use ferrite_connector::ConnectorOptions;
///
/// let options = ConnectorOptions::new("ws://127.0.0.1:8080/graphql", "frt_example", "greenhouse")?
///     .outbox_path("/var/lib/greenhouse/outbox.db")?
///     .request_timeout(Duration::from_secs(5))?;
/// assert_eq!(options.url(), "ws://127.0.0.1:8080/graphql");
/// # Ok::<(), ferrite_connector::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    pub(crate) url: String,
    pub(crate) api_key: ApiKey,
    pub(crate) connector_id: String,
    pub(crate) outbox_path: PathBuf,
    pub(crate) outbox_max_events: u64,
    pub(crate) outbox_full_policy: OutboxFullPolicy,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) reconnect_min_delay: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) max_payload_bytes: usize,
    pub(crate) max_attributes_bytes: usize,
    pub(crate) batch_events: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) channel_capacity: usize,
    /// Certificates to trust for `wss://` instead of the public roots.
    pub(crate) tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Defaults, also the values `connector.toml` documents.
pub mod defaults {
    use std::time::Duration;

    pub const OUTBOX_PATH: &str = "./connector-data/outbox.db";
    pub const OUTBOX_MAX_EVENTS: u64 = 1_000_000;
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(45);
    pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(500);
    pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);
    /// The server's default `limits.payload_bytes`.
    pub const MAX_PAYLOAD_BYTES: usize = 65_536;
    /// The server's default `limits.attributes_bytes`.
    pub const MAX_ATTRIBUTES_BYTES: usize = 16_384;
    pub const BATCH_EVENTS: usize = 500;
    /// Well under the server's default 1 MiB WebSocket message limit.
    pub const BATCH_BYTES: usize = 512 * 1024;
    pub const CHANNEL_CAPACITY: usize = 256;
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        reason: reason.into(),
    }
}

fn positive(option: &'static str, value: Duration) -> Result<Duration, Error> {
    if value.is_zero() {
        return Err(invalid(option, "must be more than zero"));
    }
    Ok(value)
}

/// Accepts `ws://`, `wss://`, and `http://`/`https://` (turned into the
/// WebSocket scheme), with a host. A bare `host:port` gets `ws://` and the
/// `/graphql` path.
pub(crate) fn normalize_url(url: &str) -> Result<String, Error> {
    let url = url.trim();
    if url.is_empty() {
        return Err(invalid("url", "is empty"));
    }
    let with_scheme = if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        url.to_owned()
    } else if url.contains("://") {
        return Err(invalid(
            "url",
            format!("{url:?}: the scheme must be ws, wss, http or https"),
        ));
    } else {
        format!("ws://{url}/graphql")
    };
    let uri: tokio_tungstenite::tungstenite::http::Uri = with_scheme
        .parse()
        .map_err(|err| invalid("url", format!("{url:?} is not a URL: {err}")))?;
    match uri.host() {
        Some(host) if !host.is_empty() => {}
        _ => return Err(invalid("url", format!("{url:?} has no host"))),
    }
    Ok(with_scheme)
}

impl ConnectorOptions {
    /// The three things every gateway needs: the server's GraphQL URL
    /// (`ws://host:8080/graphql`), an API key with WRITE permission, and
    /// the gateway's connector id (1–128 characters, stable across runs).
    pub fn new(
        url: impl AsRef<str>,
        api_key: impl Into<String>,
        connector_id: impl Into<String>,
    ) -> Result<Self, Error> {
        let connector_id = connector_id.into();
        check_text("connector id", &connector_id)
            .map_err(|err| invalid("connector_id", err.to_string()))?;
        Ok(ConnectorOptions {
            url: normalize_url(url.as_ref())?,
            api_key: ApiKey::new(api_key)?,
            connector_id,
            outbox_path: defaults::OUTBOX_PATH.into(),
            outbox_max_events: defaults::OUTBOX_MAX_EVENTS,
            outbox_full_policy: OutboxFullPolicy::Reject,
            request_timeout: defaults::REQUEST_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            keepalive_interval: defaults::KEEPALIVE_INTERVAL,
            keepalive_timeout: defaults::KEEPALIVE_TIMEOUT,
            reconnect_min_delay: defaults::RECONNECT_MIN_DELAY,
            reconnect_max_delay: defaults::RECONNECT_MAX_DELAY,
            max_payload_bytes: defaults::MAX_PAYLOAD_BYTES,
            max_attributes_bytes: defaults::MAX_ATTRIBUTES_BYTES,
            batch_events: defaults::BATCH_EVENTS,
            batch_bytes: defaults::BATCH_BYTES,
            channel_capacity: defaults::CHANNEL_CAPACITY,
            tls_roots: Vec::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }

    /// The SQLite file holding events not yet acknowledged and the devices
    /// the gateway manages. Created (with its directory) if missing; one
    /// process at a time.
    pub fn outbox_path(mut self, path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(invalid("outbox_path", "is empty"));
        }
        if path.is_dir() {
            return Err(invalid(
                "outbox_path",
                format!("{} is a directory; name a file", path.display()),
            ));
        }
        self.outbox_path = path;
        Ok(self)
    }

    /// Most events the outbox holds; see [`OutboxFullPolicy`].
    pub fn outbox_max_events(mut self, max: u64) -> Result<Self, Error> {
        if max == 0 {
            return Err(invalid("outbox_max_events", "must be at least 1"));
        }
        self.outbox_max_events = max;
        Ok(self)
    }

    pub fn outbox_full_policy(mut self, policy: OutboxFullPolicy) -> Result<Self, Error> {
        self.outbox_full_policy = policy;
        Ok(self)
    }

    /// How long a call waits for the server's answer.
    pub fn request_timeout(mut self, timeout: Duration) -> Result<Self, Error> {
        self.request_timeout = positive("request_timeout", timeout)?;
        Ok(self)
    }

    /// How long one connection attempt (TCP, TLS, WebSocket handshake and
    /// `connection_ack`) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Result<Self, Error> {
        self.connect_timeout = positive("connect_timeout", timeout)?;
        Ok(self)
    }

    /// The client pings this often, and gives the connection up when the
    /// server has been silent for `timeout` (more than `interval`).
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Result<Self, Error> {
        positive("keepalive_interval", interval)?;
        if timeout <= interval {
            return Err(invalid(
                "keepalive_timeout",
                format!("must be longer than the interval ({interval:?})"),
            ));
        }
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        Ok(self)
    }

    /// Reconnect delays: exponential from `min` to `max`, with jitter.
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Result<Self, Error> {
        positive("reconnect_min_delay", min)?;
        if max < min {
            return Err(invalid(
                "reconnect_max_delay",
                format!("must be at least reconnect_min_delay ({min:?})"),
            ));
        }
        self.reconnect_min_delay = min;
        self.reconnect_max_delay = max;
        Ok(self)
    }

    /// The largest event payload (as JSON) accepted into the outbox. Set it
    /// to the server's `limits.payload_bytes`; bigger events are refused at
    /// once rather than queued and rejected later.
    pub fn max_payload_bytes(mut self, max: usize) -> Result<Self, Error> {
        if max == 0 {
            return Err(invalid("max_payload_bytes", "must be at least 1"));
        }
        if max > self.batch_bytes {
            return Err(invalid(
                "max_payload_bytes",
                format!("must not exceed batch_bytes ({})", self.batch_bytes),
            ));
        }
        self.max_payload_bytes = max;
        Ok(self)
    }

    /// Most events, and most bytes of payload, sent in one `publishEvents`.
    pub fn batch(mut self, events: usize, bytes: usize) -> Result<Self, Error> {
        if events == 0 || events > 1000 {
            return Err(invalid("batch_events", "must be 1–1000"));
        }
        if bytes < self.max_payload_bytes {
            return Err(invalid(
                "batch_bytes",
                format!(
                    "must be at least max_payload_bytes ({})",
                    self.max_payload_bytes
                ),
            ));
        }
        self.batch_events = events;
        self.batch_bytes = bytes;
        Ok(self)
    }

    /// For `wss://`: trust the certificate authorities in this PEM file
    /// (e.g. a self-signed server's certificate) instead of the public
    /// roots. Read and checked now.
    pub fn tls_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let path = path.as_ref();
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certificates| certificates.collect())
            .map_err(|err| invalid("tls_ca_file", format!("{}: {err}", path.display())))?;
        if certificates.is_empty() {
            return Err(invalid(
                "tls_ca_file",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        let mut store = rustls::RootCertStore::empty();
        let (_, refused) = store.add_parsable_certificates(certificates.iter().cloned());
        if refused > 0 {
            return Err(invalid(
                "tls_ca_file",
                format!("{}: {refused} certificate(s) do not parse", path.display()),
            ));
        }
        self.tls_roots = certificates;
        Ok(self)
    }

    /// Capacity of the request channel and of each command/event stream.
    pub fn channel_capacity(mut self, capacity: usize) -> Result<Self, Error> {
        if capacity == 0 {
            return Err(invalid("channel_capacity", "must be at least 1"));
        }
        self.channel_capacity = capacity;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_garbage_is_refused() {
        assert_eq!(
            normalize_url("http://h:8080/graphql").unwrap(),
            "ws://h:8080/graphql"
        );
        assert_eq!(
            normalize_url("https://h/graphql").unwrap(),
            "wss://h/graphql"
        );
        assert_eq!(
            normalize_url("127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/graphql"
        );
        for bad in [
            "",
            "  ",
            "ftp://h/x",
            "ws://",
            "ws:// spaces /x",
            "http://[::1/x",
        ] {
            let err = normalize_url(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidOption { option: "url", .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn setters_refuse_bad_values() {
        let options = ConnectorOptions::new("ws://h/graphql", "frt_x", "gw").unwrap();
        assert!(ConnectorOptions::new("ws://h/graphql", " ", "gw").is_err());
        assert!(ConnectorOptions::new("ws://h/graphql", "frt x", "gw").is_err());
        assert!(ConnectorOptions::new("ws://h/graphql", "frt_x", "").is_err());
        assert!(ConnectorOptions::new("ws://h/graphql", "frt_x", "g".repeat(129)).is_err());
        assert!(ConnectorOptions::new("ws://h/graphql", "frt_x", "gw\n2").is_err());
        assert!(ConnectorOptions::new("ws://h/graphql", "frt_x", "gw\u{0}").is_err());
        assert!(options.clone().request_timeout(Duration::ZERO).is_err());
        assert!(options.clone().outbox_max_events(0).is_err());
        assert!(options.clone().outbox_path("").is_err());
        assert!(options.clone().outbox_path(std::env::temp_dir()).is_err());
        assert!(
            options
                .clone()
                .keepalive(Duration::from_secs(10), Duration::from_secs(10))
                .is_err()
        );
        assert!(
            options
                .clone()
                .reconnect_delay(Duration::from_secs(2), Duration::from_secs(1))
                .is_err()
        );
        assert!(options.clone().batch(0, 1 << 20).is_err());
        assert!(options.clone().batch(1001, 1 << 20).is_err());
        assert!(options.clone().batch(10, 10).is_err());
        assert!(options.clone().max_payload_bytes(0).is_err());
        assert!(options.clone().max_payload_bytes(1 << 30).is_err());
        assert!(options.clone().channel_capacity(0).is_err());
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        for path in [not_pem, dir.path().join("missing.pem")] {
            let error = options.clone().tls_ca_file(&path).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidOption {
                        option: "tls_ca_file",
                        ..
                    }
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn the_api_key_never_prints() {
        let options = ConnectorOptions::new("ws://h/graphql", "frt_secret", "gw").unwrap();
        assert!(!format!("{options:?}").contains("frt_secret"));
    }
}
