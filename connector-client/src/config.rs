//! `connector.toml`: the gateway's configuration file, with environment
//! overrides (`FERRITE_CONNECTOR_URL`, `FERRITE_CONNECTOR_API_KEY`,
//! `FERRITE_CONNECTOR_OUTBOX__PATH`: double underscore for a `[section]`
//! key). Every value is checked before anything starts; unknown keys are
//! errors, so a typo does not silently fall back to a default.
//!
//! `connector.example.toml` in this crate lists every key with its default
//! (a test keeps the two equal).

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ConnectorOptions, DeviceSpec, Error, OutboxFullPolicy, defaults};

/// The environment prefix of overrides.
pub const ENV_PREFIX: &str = "FERRITE_CONNECTOR_";

/// The whole file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The server's GraphQL URL, e.g. `ws://127.0.0.1:8080/graphql`.
    pub url: String,
    /// An API key with WRITE permission (`frt_…`). Best given as
    /// `FERRITE_CONNECTOR_API_KEY` rather than written in the file.
    pub api_key: String,
    /// The gateway's stable name on the platform.
    pub connector_id: String,
    /// For `wss://` to a server with its own (e.g. self-signed) certificate:
    /// a PEM file of the certificates to trust. Empty: the public roots.
    pub tls_ca_file: PathBuf,
    pub outbox: OutboxConfig,
    pub timeouts: TimeoutConfig,
    pub limits: LimitConfig,
    pub log: LogConfig,
    /// Simulated devices for `ferrite-connector run`.
    #[serde(default, rename = "device", skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<SimulatedDevice>,
}

impl fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .field("connector_id", &self.connector_id)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("outbox", &self.outbox)
            .field("timeouts", &self.timeouts)
            .field("limits", &self.limits)
            .field("log", &self.log)
            .field("devices", &self.devices)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// The SQLite file of events waiting for the server (and of the
    /// devices the gateway manages).
    pub path: PathBuf,
    /// Most events it holds…
    pub max_events: u64,
    /// …and what happens beyond: `reject` new events, or `drop_oldest`.
    pub full_policy: OutboxFullPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    pub request_seconds: f64,
    pub connect_seconds: f64,
    pub keepalive_seconds: f64,
    pub keepalive_timeout_seconds: f64,
    pub reconnect_min_seconds: f64,
    pub reconnect_max_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub max_payload_bytes: usize,
    pub batch_events: usize,
    pub batch_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or per module.
    pub level: String,
    /// Also write rotating log files here (empty: standard error only).
    pub directory: PathBuf,
    /// `minutely`, `hourly`, `daily` or `never`.
    pub rotation: Rotation,
    /// Log files kept; older ones are deleted.
    pub max_files: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Minutely,
    Hourly,
    Daily,
    Never,
}

/// A simulated device of `ferrite-connector run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedDevice {
    /// The device's external id.
    pub id: String,
    /// What it does.
    pub kind: DeviceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
    /// How often it publishes (thermometer, switch).
    #[serde(default = "default_interval")]
    pub interval_seconds: f64,
    /// The external id of the switch a `lamp` follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

fn default_interval() -> f64 {
    5.0
}

/// What a simulated device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Publishes `temperature` `{"celsius": …}` (a random walk).
    Thermometer,
    /// Publishes `state` `{"on": …}`, toggling every interval.
    Switch,
    /// Answers `set` commands (`{"on": true}`) and publishes its `state`.
    Relay,
    /// Follows a switch (`follows`) through an event subscription: publishes
    /// `state` `{"on": …, "following": <the switch's event id>}` when it changes.
    Lamp,
}

impl DeviceKind {
    fn type_name(self) -> &'static str {
        match self {
            DeviceKind::Thermometer => "thermometer",
            DeviceKind::Switch => "switch",
            DeviceKind::Relay => "relay",
            DeviceKind::Lamp => "lamp",
        }
    }
}

impl SimulatedDevice {
    pub fn spec(&self) -> DeviceSpec {
        let mut spec = DeviceSpec::new(&self.id).device_type(self.kind.type_name());
        spec.name = self.name.clone();
        spec.location = self.location.clone();
        spec.attributes = self.attributes.clone();
        spec
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_seconds)
    }
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            url: "ws://127.0.0.1:8080/graphql".into(),
            api_key: String::new(),
            connector_id: String::new(),
            tls_ca_file: PathBuf::new(),
            outbox: OutboxConfig {
                path: defaults::OUTBOX_PATH.into(),
                max_events: defaults::OUTBOX_MAX_EVENTS,
                full_policy: OutboxFullPolicy::Reject,
            },
            timeouts: TimeoutConfig {
                request_seconds: defaults::REQUEST_TIMEOUT.as_secs_f64(),
                connect_seconds: defaults::CONNECT_TIMEOUT.as_secs_f64(),
                keepalive_seconds: defaults::KEEPALIVE_INTERVAL.as_secs_f64(),
                keepalive_timeout_seconds: defaults::KEEPALIVE_TIMEOUT.as_secs_f64(),
                reconnect_min_seconds: defaults::RECONNECT_MIN_DELAY.as_secs_f64(),
                reconnect_max_seconds: defaults::RECONNECT_MAX_DELAY.as_secs_f64(),
            },
            limits: LimitConfig {
                max_payload_bytes: defaults::MAX_PAYLOAD_BYTES,
                batch_events: defaults::BATCH_EVENTS,
                batch_bytes: defaults::BATCH_BYTES,
            },
            log: LogConfig {
                level: "info".into(),
                directory: PathBuf::new(),
                rotation: Rotation::Daily,
                max_files: 7,
            },
            devices: Vec::new(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<Error> for ConfigError {
    fn from(error: Error) -> Self {
        ConfigError::Invalid(error.to_string())
    }
}

impl ConnectorConfig {
    /// Defaults, then `file` (if given: it must exist), then
    /// `FERRITE_CONNECTOR_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<ConnectorConfig, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Defaults, then the TOML in `text`; validated. No file, no environment.
    pub fn from_toml_str(text: &str) -> Result<ConnectorConfig, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(ConnectorConfig::default()))
                .merge(Toml::string(text)),
        )
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<ConnectorConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ConnectorConfig::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::extract(figment.merge(env))
    }

    /// The configuration the layers of `figment` make, validated.
    fn extract(figment: Figment) -> Result<ConnectorConfig, ConfigError> {
        let config: ConnectorConfig = figment.extract().map_err(Box::new)?;
        config.options()?;
        config.validate_devices()?;
        Ok(config)
    }

    /// The library options this file describes (validated).
    pub fn options(&self) -> Result<ConnectorOptions, ConfigError> {
        if self.api_key.trim().is_empty() {
            return Err(ConfigError::Invalid(format!(
                "api_key is missing: set it in the file or as {ENV_PREFIX}API_KEY"
            )));
        }
        if self.connector_id.trim().is_empty() {
            return Err(ConfigError::Invalid(format!(
                "connector_id is missing: set it in the file or as {ENV_PREFIX}CONNECTOR_ID"
            )));
        }
        let timeouts = &self.timeouts;
        let seconds = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value < 1e9 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(ConfigError::Invalid(format!(
                    "timeouts.{name} must be a positive number of seconds, got {value}"
                )))
            }
        };
        let options = ConnectorOptions::new(&self.url, &self.api_key, &self.connector_id)?
            .outbox_path(&self.outbox.path)?
            .outbox_max_events(self.outbox.max_events)?
            .outbox_full_policy(self.outbox.full_policy)?
            .request_timeout(seconds("request_seconds", timeouts.request_seconds)?)?
            .connect_timeout(seconds("connect_seconds", timeouts.connect_seconds)?)?
            .keepalive(
                seconds("keepalive_seconds", timeouts.keepalive_seconds)?,
                seconds(
                    "keepalive_timeout_seconds",
                    timeouts.keepalive_timeout_seconds,
                )?,
            )?
            .reconnect_delay(
                seconds("reconnect_min_seconds", timeouts.reconnect_min_seconds)?,
                seconds("reconnect_max_seconds", timeouts.reconnect_max_seconds)?,
            )?
            .batch(self.limits.batch_events, self.limits.batch_bytes)?
            .max_payload_bytes(self.limits.max_payload_bytes)?;
        let options = if self.tls_ca_file.as_os_str().is_empty() {
            options
        } else {
            options.tls_ca_file(&self.tls_ca_file)?
        };
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::Invalid("log.level must not be empty".into()));
        }
        if self.log.max_files == 0 {
            return Err(ConfigError::Invalid(
                "log.max_files must be at least 1".into(),
            ));
        }
        Ok(options)
    }

    fn validate_devices(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for device in &self.devices {
            device
                .spec()
                .validate(defaults::MAX_ATTRIBUTES_BYTES)
                .map_err(|err| ConfigError::Invalid(format!("device {:?}: {err}", device.id)))?;
            if !seen.insert(device.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "device {:?} is listed twice",
                    device.id
                )));
            }
            if !(device.interval_seconds.is_finite() && device.interval_seconds >= 0.01) {
                return Err(ConfigError::Invalid(format!(
                    "device {:?}: interval_seconds must be at least 0.01",
                    device.id
                )));
            }
            match (device.kind, &device.follows) {
                (DeviceKind::Lamp, None) => {
                    return Err(ConfigError::Invalid(format!(
                        "device {:?}: a lamp needs `follows` (the id of a switch)",
                        device.id
                    )));
                }
                (DeviceKind::Lamp, Some(switch)) => {
                    let is_switch = self
                        .devices
                        .iter()
                        .any(|d| &d.id == switch && d.kind == DeviceKind::Switch);
                    if !is_switch {
                        return Err(ConfigError::Invalid(format!(
                            "device {:?} follows {switch:?}, which is not a switch in this file",
                            device.id
                        )));
                    }
                }
                (_, Some(_)) => {
                    return Err(ConfigError::Invalid(format!(
                        "device {:?}: only a lamp follows another device",
                        device.id
                    )));
                }
                (_, None) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::result_large_err)] // figment's Jail error type, tests only
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<ConnectorConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connector.toml");
        std::fs::write(&path, toml).unwrap();
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (key, value) in env {
                jail.set_env(key, value);
            }
            result = Some(ConnectorConfig::load_from(
                Some(&path),
                Env::prefixed(ENV_PREFIX).split("__"),
            ));
            Ok(())
        });
        result.unwrap()
    }

    const MINIMAL: &str = "api_key = \"frt_x\"\nconnector_id = \"gw\"\n";

    #[test]
    fn the_example_file_lists_the_defaults() {
        let example = include_str!("../connector.example.toml");
        let parsed: ConnectorConfig =
            Figment::from(Serialized::defaults(ConnectorConfig::default()))
                .merge(Toml::string(example))
                .extract()
                .expect("the example parses");
        let expected = ConnectorConfig {
            api_key: parsed.api_key.clone(),
            connector_id: parsed.connector_id.clone(),
            devices: parsed.devices.clone(),
            ..ConnectorConfig::default()
        };
        assert_eq!(
            parsed, expected,
            "connector.example.toml drifted from the defaults"
        );
        assert!(
            !parsed.devices.is_empty(),
            "the example shows simulated devices"
        );
        let filled = ConnectorConfig {
            api_key: "frt_example".into(),
            connector_id: "example".into(),
            ..parsed.clone()
        };
        filled
            .options()
            .expect("the example is valid once given a key and an id");
        parsed
            .validate_devices()
            .expect("the example's devices are valid");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = load(
            MINIMAL,
            &[
                ("FERRITE_CONNECTOR_API_KEY", "frt_from_env"),
                ("FERRITE_CONNECTOR_OUTBOX__MAX_EVENTS", "42"),
                ("FERRITE_CONNECTOR_URL", "http://example.org:9000/graphql"),
            ],
        )
        .unwrap();
        assert_eq!(config.api_key, "frt_from_env");
        assert_eq!(config.outbox.max_events, 42);
        assert_eq!(
            config.options().unwrap().url(),
            "ws://example.org:9000/graphql"
        );
        assert!(!format!("{config:?}").contains("frt_from_env"));
    }

    #[test]
    fn garbage_is_refused_with_a_message_naming_it() {
        // (connector.toml, environment, expected in the message)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "api_key = \"frt_x\"\nconnector_id = \"gw\"\nurll = \"x\"",
                &[],
                "urll",
            ),
            ("api_key = ", &[], "connector.toml"),
            ("connector_id = \"gw\"", &[], "api_key is missing"),
            ("api_key = \"frt_x\"", &[], "connector_id is missing"),
            (MINIMAL, &[("FERRITE_CONNECTOR_URL", "ftp://x")], "url"),
            (
                MINIMAL,
                &[("FERRITE_CONNECTOR_OUTBOX__MAX_EVENTS", "-1")],
                "max_events",
            ),
            (
                MINIMAL,
                &[("FERRITE_CONNECTOR_OUTBOX__FULL_POLICY", "explode")],
                "full_policy",
            ),
            (
                MINIMAL,
                &[("FERRITE_CONNECTOR_TIMEOUTS__REQUEST_SECONDS", "0")],
                "request_seconds",
            ),
            (
                MINIMAL,
                &[("FERRITE_CONNECTOR_TIMEOUTS__KEEPALIVE_TIMEOUT_SECONDS", "1")],
                "keepalive_timeout",
            ),
            (
                MINIMAL,
                &[("FERRITE_CONNECTOR_LIMITS__BATCH_EVENTS", "5000")],
                "batch_events",
            ),
            (
                MINIMAL,
                &[("FERRITE_CONNECTOR_LOG__ROTATION", "weekly")],
                "rotation",
            ),
            (
                "api_key = \"frt_x\"\nconnector_id = \"gw\"\n[[device]]\nid = \"a\"\nkind = \"toaster\"",
                &[],
                "toaster",
            ),
            (
                "api_key = \"frt_x\"\nconnector_id = \"gw\"\n[[device]]\nid = \"a\"\nkind = \"switch\"\n[[device]]\nid = \"a\"\nkind = \"relay\"",
                &[],
                "listed twice",
            ),
            (
                "api_key = \"frt_x\"\nconnector_id = \"gw\"\n[[device]]\nid = \"l\"\nkind = \"lamp\"\nfollows = \"nope\"",
                &[],
                "not a switch",
            ),
            (
                "api_key = \"frt_x\"\nconnector_id = \"gw\"\n[[device]]\nid = \"\"\nkind = \"relay\"",
                &[],
                "external id",
            ),
        ];
        for (toml, env, expected) in cases {
            let error = load(toml, env).expect_err(toml).to_string();
            assert!(
                error.to_lowercase().contains(&expected.to_lowercase()),
                "{toml} {env:?}: {error}"
            );
        }
        let missing = ConnectorConfig::load(Some(Path::new("/nonexistent/connector.toml")));
        assert!(matches!(missing, Err(ConfigError::MissingFile(_))));
    }
}
