//! Configuration: one typed [`Config`], loaded once and validated before
//! anything starts.
//!
//! Sources, weakest first: built-in defaults, a TOML file, `FERRITE_*`
//! environment variables, command-line flags. The file is `--config FILE`
//! if given (it must exist), else the first of `./ferrite.toml`,
//! `$XDG_CONFIG_HOME/ferrite/ferrite.toml` (or `~/.config/…`),
//! `/etc/ferrite/ferrite.toml` that exists, else none.
//!
//! Nested keys are reached from the environment with a double underscore:
//! `FERRITE_LIMITS__PAYLOAD_BYTES=131072` sets `[limits] payload_bytes`.
//! Unknown keys in the file are errors, so a typo does not pass silently.
//!
//! (Over 600 lines on purpose: every section with its defaults and its
//! validation in one file, in the order of `ferrite.example.toml`, so the
//! whole of what an operator may set is read in one place.)

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// A value that must not be printed: `Debug` shows `"***"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Everything `ferrite` can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite database and the generated JWT secret live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `ferrite.db` in `data_dir`.
    pub database_url: Option<Secret>,
    /// HS256 signing secret for access tokens (at least 32 bytes). Default:
    /// generated on first start into `<data_dir>/jwt-secret`. Several nodes
    /// sharing one PostgreSQL must be given the same value.
    pub jwt_secret: Option<Secret>,
    /// Password of the `admin` user created on the first start. Default: a
    /// random one, printed once.
    pub admin_password: Option<Secret>,
    /// Log filter (`tracing` syntax): `info`, `ferrite_server=debug,info`, …
    pub log: String,
    /// PEM certificate chain for HTTPS/WSS on `listen` (with `tls_key`).
    /// Reloaded on SIGHUP and when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Lifetime of an access token (JWT).
    pub access_token_ttl_seconds: u64,
    /// Lifetime of a refresh token.
    pub refresh_token_ttl_seconds: u64,
    /// SQLite/PostgreSQL pool size.
    pub database_max_connections: u32,
    pub limits: Limits,
    pub http: HttpConfig,
    pub commands: CommandSettings,
    pub ingest: IngestConfig,
    pub bus: BusConfig,
    pub websocket: WebSocketConfig,
    pub retention: RetentionConfig,
    pub metrics: MetricsConfig,
    pub backup: BackupConfig,
}

/// Backups the running server takes by itself (`ferrite backup` files).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// How often, in seconds; 0 takes none. On PostgreSQL, set it on one
    /// node only.
    pub every_seconds: u64,
    /// Where they go; default `<data_dir>/backups`.
    pub dir: Option<PathBuf>,
    /// How many of the newest scheduled backups to keep; older ones are
    /// deleted after each new one.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            every_seconds: 0,
            dir: None,
            keep: 7,
        }
    }
}

/// HTTP connections: caps and timeouts that hold whatever clients do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Open connections (WebSockets included) at most; lowered at start to
    /// fit the open-files limit. Past it, new connections are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64) at most.
    /// Behind a reverse proxy every client has the proxy's address: raise it.
    pub max_connections_per_address: usize,
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout_seconds: u64,
    /// Time a client has to send a request's body.
    pub body_timeout_seconds: u64,
    /// On shutdown, how long open HTTP requests may take to finish before
    /// their connections are closed.
    pub shutdown_grace_seconds: u64,
    /// Web origins (`https://app.example.com`, `http://localhost:5173`)
    /// whose pages may call `/graphql` (CORS) and open its WebSocket.
    /// Empty: same origin only. `["*"]`: any origin (no cookies are
    /// involved: `/graphql` authenticates with the Authorization header).
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_address: 256,
            header_timeout_seconds: 15,
            body_timeout_seconds: 30,
            shutdown_grace_seconds: 10,
            cors_origins: Vec::new(),
        }
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a credential (for a scraper on a private
    /// network). Off: an ADMIN user's token or API key is required.
    pub public: bool,
}

/// How long events are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events received longer ago than this are deleted; 0 keeps them
    /// forever.
    pub max_age_seconds: u64,
    /// How often old events are looked for.
    pub check_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age_seconds: 0,
            check_seconds: 60,
        }
    }
}

/// GraphQL over WebSocket on `/graphql`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The server pings every this many seconds.
    pub keepalive_seconds: u64,
    /// A socket that sends nothing (not even a pong) this long is closed.
    pub idle_timeout_seconds: u64,
    /// Time a client has to send `connection_init` after connecting.
    pub init_timeout_seconds: u64,
    /// Operations one socket may run at once.
    pub max_subscriptions: usize,
    /// Largest frame or message a client may send.
    pub max_message_bytes: usize,
    /// Per-socket read buffer, allocated when the socket opens; small so
    /// idle sockets cost little memory (a larger message is read in
    /// several reads, and the buffer grows to hold it).
    pub read_buffer_bytes: usize,
    /// Per-socket write buffer.
    pub write_buffer_bytes: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            keepalive_seconds: 15,
            idle_timeout_seconds: 60,
            init_timeout_seconds: 10,
            max_subscriptions: 100,
            max_message_bytes: 1024 * 1024,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 4096,
        }
    }
}

/// The group-commit writer of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most events in one transaction.
    pub batch_events: usize,
    /// How long a batch that is not full waits for more publishes, in
    /// microseconds. 0: commit what has queued up at once (publishes that
    /// arrive during a commit still share the next one).
    pub linger_micros: u64,
    /// Publishes that may wait for the writer; beyond this, publishers wait.
    pub queue: usize,
}

/// The in-memory fan-out to live subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Messages each ring holds; a subscriber further behind catches up from
    /// the database.
    pub capacity: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_events: 2000,
            linger_micros: 0,
            queue: 10_000,
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { capacity: 4096 }
    }
}

/// Bounds on what clients can make big.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest HTTP request body.
    pub body_bytes: usize,
    /// Largest event or command payload, as serialised JSON.
    pub payload_bytes: usize,
    /// Largest device `attributes`, as serialised JSON.
    pub attributes_bytes: usize,
    /// Deepest selection (fields within fields) a query may have.
    pub query_depth: usize,
    /// Most a query may cost: each field counts 1, multiplied by the page
    /// size (`first`/`last`, else the default page), the buckets of
    /// `telemetry` or the inputs of `publishEvents` of the lists around
    /// it; fragments count wherever they are spread.
    pub query_complexity: usize,
    /// Longest GraphQL document, in bytes.
    pub query_bytes: usize,
    /// Most tokens (names, punctuation, values) in one document.
    pub query_tokens: usize,
    /// Deepest nesting of brackets (`{`, `[`, `(`) in a document: selections,
    /// arguments and literal values together.
    pub query_nesting: usize,
    /// Most aliased fields in one document.
    pub query_aliases: usize,
    /// Largest response to one query or one subscription message; a larger
    /// one is replaced by an error.
    pub response_bytes: usize,
    /// Deepest JSON value (payloads, attributes, command results) accepted,
    /// counted in arrays and objects: `{"a": [1]}` is 2 deep.
    pub json_depth: usize,
    /// Largest page (`first` / `last`) of a list.
    pub page_size: u64,
    /// Page size when the client gives none.
    pub default_page_size: u64,
    /// Most events in one `publishEvents`.
    pub batch_events: usize,
    /// Most values in one filter list (`ids`, `services`, …).
    pub filter_values: usize,
    /// Most buckets one `telemetry` query may ask for.
    pub telemetry_buckets: usize,
    /// Query text the automatic persisted queries cache holds (per node),
    /// least recently used out first.
    pub persisted_queries_bytes: usize,
    /// Login attempts (counted when they start; a success gives its attempt
    /// back) per client address and username within the window.
    pub login_attempts: u32,
    /// Login attempts per client address (an IPv6 /64), whatever the
    /// usernames, within the window.
    pub login_attempts_per_address: u32,
    pub login_window_seconds: u64,
    /// Password hashes computed at once (each takes ~19 MiB).
    pub parallel_password_hashes: usize,
}

/// Command delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandSettings {
    /// Deadline of a command sent without `timeoutSeconds`.
    pub default_timeout_seconds: u64,
    /// Longest `timeoutSeconds` accepted.
    pub max_timeout_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            data_dir: PathBuf::from("./ferrite-data"),
            database_url: None,
            jwt_secret: None,
            admin_password: None,
            log: "info".to_owned(),
            tls_cert: None,
            tls_key: None,
            access_token_ttl_seconds: 15 * 60,
            refresh_token_ttl_seconds: 30 * 24 * 3600,
            database_max_connections: 8,
            limits: Limits::default(),
            http: HttpConfig::default(),
            commands: CommandSettings::default(),
            ingest: IngestConfig::default(),
            bus: BusConfig::default(),
            websocket: WebSocketConfig::default(),
            retention: RetentionConfig::default(),
            metrics: MetricsConfig::default(),
            backup: BackupConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 4 * 1024 * 1024,
            payload_bytes: 64 * 1024,
            attributes_bytes: 16 * 1024,
            query_depth: 16,
            query_complexity: 50_000,
            query_bytes: 128 * 1024,
            query_tokens: 15_000,
            query_nesting: 96,
            query_aliases: 100,
            response_bytes: 16 * 1024 * 1024,
            json_depth: 64,
            page_size: 500,
            default_page_size: 50,
            batch_events: 1000,
            filter_values: 100,
            telemetry_buckets: 10_000,
            persisted_queries_bytes: 4 * 1024 * 1024,
            login_attempts: 5,
            login_attempts_per_address: 50,
            login_window_seconds: 300,
            parallel_password_hashes: 2,
        }
    }
}

impl Default for CommandSettings {
    fn default() -> Self {
        Self {
            default_timeout_seconds: 300,
            max_timeout_seconds: 7 * 24 * 3600,
        }
    }
}

/// Values given on the command line; they override everything else.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// `http(s)://host[:port]`, nothing more: what browsers send as `Origin`.
fn is_web_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error(transparent)]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Top-level keys read from `FERRITE_*` variables; other `FERRITE_*`
/// variables are ignored rather than rejected.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "jwt_secret",
    "admin_password",
    "log",
    "access_token_ttl_seconds",
    "refresh_token_ttl_seconds",
    "database_max_connections",
    "limits",
    "http",
    "commands",
    "ingest",
    "bus",
    "websocket",
    "retention",
    "metrics",
];

impl Config {
    /// Loads the configuration from file, environment and flags, and
    /// validates it. Returns it with the file it came from, if any.
    pub fn load(
        explicit_file: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let file = match explicit_file {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => Some(path.to_owned()),
            None => default_locations().into_iter().find(|p| p.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("FERRITE_")
            .filter(|key| {
                // Keys arrive in the variable's case: FERRITE_LIMITS__… → LIMITS__….
                let key = key.as_str().to_ascii_lowercase();
                ENV_KEYS
                    .iter()
                    .any(|top| key == *top || key.starts_with(&format!("{top}__")))
            })
            .split("__");
        let config = Self::extract(figment.merge(env).merge(Serialized::globals(overrides)))?;
        Ok((config, file))
    }

    /// Defaults, then the TOML in `text`; validated. No file, no
    /// environment (for the fuzzer and tests).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    /// The configuration the layers of `figment` make, validated.
    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".into());
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !known.iter().any(|scheme| url.starts_with(scheme)) {
                return invalid(
                    "database_url must start with sqlite:, postgres:// or postgresql://".into(),
                );
            }
        }
        let origins = &self.http.cors_origins;
        if origins.iter().any(|o| o == "*") && origins.len() > 1 {
            return invalid(
                "http.cors_origins: \"*\" stands alone (it already allows every origin)".into(),
            );
        }
        if let Some(bad) = origins.iter().find(|o| *o != "*" && !is_web_origin(o)) {
            return invalid(format!(
                "http.cors_origins: {bad:?} is not an origin like \"https://app.example.com\" or \"http://localhost:5173\" (scheme, host, optional port; no path)"
            ));
        }
        if self.backup.every_seconds > 0 && self.backup.keep == 0 {
            return invalid(
                "backup.keep must be at least 1 when backup.every_seconds is set".into(),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert and tls_key go together: give both, or neither".into());
        }
        if let Some(secret) = &self.jwt_secret
            && secret.expose().len() < 32
        {
            return invalid("jwt_secret must be at least 32 bytes long".into());
        }
        if let Some(password) = &self.admin_password
            && let Err(msg) = crate::auth::validate_new_password(password.expose())
        {
            return invalid(format!("admin_password: {msg}"));
        }
        if self.access_token_ttl_seconds == 0 || self.refresh_token_ttl_seconds == 0 {
            return invalid("token lifetimes must be greater than zero".into());
        }
        if self.database_max_connections == 0 {
            return invalid("database_max_connections must be at least 1".into());
        }
        let limits = &self.limits;
        let positive = [
            ("limits.body_bytes", limits.body_bytes as u64),
            ("limits.payload_bytes", limits.payload_bytes as u64),
            ("limits.attributes_bytes", limits.attributes_bytes as u64),
            ("limits.query_depth", limits.query_depth as u64),
            ("limits.query_complexity", limits.query_complexity as u64),
            ("limits.query_bytes", limits.query_bytes as u64),
            ("limits.query_tokens", limits.query_tokens as u64),
            ("limits.query_nesting", limits.query_nesting as u64),
            ("limits.response_bytes", limits.response_bytes as u64),
            ("limits.json_depth", limits.json_depth as u64),
            ("limits.page_size", limits.page_size),
            ("limits.default_page_size", limits.default_page_size),
            ("limits.batch_events", limits.batch_events as u64),
            ("limits.filter_values", limits.filter_values as u64),
            ("limits.telemetry_buckets", limits.telemetry_buckets as u64),
            (
                "limits.persisted_queries_bytes",
                limits.persisted_queries_bytes as u64,
            ),
            ("limits.login_attempts", u64::from(limits.login_attempts)),
            (
                "limits.login_attempts_per_address",
                u64::from(limits.login_attempts_per_address),
            ),
            ("limits.login_window_seconds", limits.login_window_seconds),
            (
                "limits.parallel_password_hashes",
                limits.parallel_password_hashes as u64,
            ),
            ("http.max_connections", self.http.max_connections as u64),
            (
                "http.max_connections_per_address",
                self.http.max_connections_per_address as u64,
            ),
            (
                "http.header_timeout_seconds",
                self.http.header_timeout_seconds,
            ),
            ("http.body_timeout_seconds", self.http.body_timeout_seconds),
            (
                "commands.default_timeout_seconds",
                self.commands.default_timeout_seconds,
            ),
            (
                "commands.max_timeout_seconds",
                self.commands.max_timeout_seconds,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return invalid(format!("{key} must be greater than zero"));
        }
        if self.websocket.idle_timeout_seconds <= self.websocket.keepalive_seconds {
            return invalid(
                "websocket.idle_timeout_seconds must exceed websocket.keepalive_seconds".into(),
            );
        }
        if limits.payload_bytes > limits.body_bytes {
            return invalid("limits.payload_bytes must not exceed limits.body_bytes".into());
        }
        if limits.default_page_size > limits.page_size {
            return invalid("limits.default_page_size must not exceed limits.page_size".into());
        }
        if self.commands.default_timeout_seconds > self.commands.max_timeout_seconds {
            return invalid(
                "commands.default_timeout_seconds must not exceed commands.max_timeout_seconds"
                    .into(),
            );
        }
        Ok(())
    }

    /// The database URL in effect: the configured one, or SQLite in `data_dir`.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => crate::store::Store::sqlite_url(&self.data_dir),
        }
    }

    /// Whether the database is the embedded SQLite one.
    /// Where scheduled backups (and `ferrite backup` without a FILE) go.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// The SQLite database file, when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.effective_database_url();
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty()).then(|| PathBuf::from(path))
    }

    /// The TLS files, when HTTPS is on.
    pub fn tls_files(&self) -> Option<crate::http::tls::TlsFiles> {
        Some(crate::http::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    pub fn uses_sqlite(&self) -> bool {
        self.effective_database_url().starts_with("sqlite:")
    }

    pub fn ingest_settings(&self) -> crate::ingest::IngestSettings {
        crate::ingest::IngestSettings {
            batch_events: self.ingest.batch_events,
            linger: Duration::from_micros(self.ingest.linger_micros),
            queue: self.ingest.queue,
        }
    }

    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_seconds)
    }

    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_seconds)
    }
}

/// Where a configuration file is looked for when `--config` is not given.
fn default_locations() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("ferrite.toml")];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(dir) = xdg {
        paths.push(dir.join("ferrite").join("ferrite.toml"));
    }
    paths.push(PathBuf::from("/etc/ferrite/ferrite.toml"));
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn the_example_file_holds_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferrite.example.toml");
        let (loaded, file) = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(file.as_deref(), Some(path.as_path()));
        let defaults = Config::default();
        assert_eq!(format!("{loaded:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config {
            jwt_secret: Some(Secret::new("super-secret-value-of-32-bytes!!")),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("super-secret"));
    }

    #[test]
    fn a_payload_limit_above_the_body_limit_is_refused() {
        let mut config = Config::default();
        config.limits.payload_bytes = config.limits.body_bytes + 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.payload_bytes"), "{err}");
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let with = |origins: &[&str]| {
            let mut config = Config::default();
            config.http.cors_origins = origins.iter().map(|o| o.to_string()).collect();
            config.validate()
        };
        for good in [
            &["*"][..],
            &["https://app.example.com", "http://localhost:5173"],
            &["http://[::1]:8080"],
        ] {
            with(good).unwrap();
        }
        for bad in [
            &["*", "https://a.example"][..],
            &["app.example.com"],
            &["https://app.example.com/"],
            &["https://app.example.com/path"],
            &["ftp://files.example"],
            &["https://"],
            &["https://a b"],
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("http.cors_origins"), "{bad:?}: {err}");
        }
    }
}
