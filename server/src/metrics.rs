//! `/metrics`: what an operator graphs and alerts on, in the Prometheus /
//! OpenMetrics text format.
//!
//! Counters and gauges that change with traffic are updated where it
//! happens (the ingest writer, the bus, the WebSocket transport) and cost an
//! atomic add. What lives in the database (devices per status) and in the
//! kernel (resident memory) is read when the endpoint is scraped. Each server
//! owns its own registry — no global — so several servers in one process
//! (the tests) do not mix their figures.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};

use sea_orm::{ActiveEnum, Iterable};

use crate::store::{Store, StoreError, entity::DeviceStatus};

/// What the ingest writer counts.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// Events stored (idempotent retries that stored nothing excluded).
    pub events: Counter,
    /// Transactions committed.
    pub batches: Counter,
    /// How long a batch took from its first statement to its commit.
    pub commit_seconds: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            events: Counter::default(),
            batches: Counter::default(),
            // 0.25 ms to 1 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 13)),
        }
    }
}

/// What logins count: the figures to alert on when someone guesses
/// passwords.
#[derive(Clone, Debug, Default)]
pub struct LoginMetrics {
    /// Wrong username or password.
    pub failed: Counter,
    /// Refused without checking, by the throttle (RATE_LIMITED).
    pub throttled: Counter,
}

/// What the WebSocket transport counts.
#[derive(Clone, Debug, Default)]
pub struct SocketMetrics {
    /// Open WebSocket connections.
    pub open: Gauge,
    /// Of those, connector sessions (gateways).
    pub connector_sessions: Gauge,
}

/// Holds a gauge one higher while it lives (an open socket).
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// Scheduled backups.
#[derive(Clone, Debug, Default)]
pub struct BackupMetrics {
    /// Backups written and checked.
    pub taken: Counter,
    /// Backups that failed (logged with the reason).
    pub failed: Counter,
    /// When the last one succeeded (Unix seconds; 0: none yet).
    pub last_success: Gauge,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    pub ingest: IngestMetrics,
    pub sockets: SocketMetrics,
    pub logins: LoginMetrics,
    /// Event subscribers that fell behind the live ring and caught up from
    /// the store.
    pub catch_ups: Counter,
    /// `publishEvent(s)` calls run on the compiled path
    /// (`graphql::live::publish`).
    pub compiled_publishes: Counter,
    pub backups: BackupMetrics,
    devices: Family<StatusLabel, Gauge>,
    resident_memory: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let (ingest, sockets) = (IngestMetrics::default(), SocketMetrics::default());
        let logins = LoginMetrics::default();
        let catch_ups = Counter::default();
        let compiled_publishes = Counter::default();
        let backups = BackupMetrics::default();
        let devices = Family::<StatusLabel, Gauge>::default();
        let resident_memory = Gauge::default();

        let mut registry = Registry::with_prefix("ferrite");
        registry.register(
            "events_stored",
            "Events committed to the store",
            ingest.events.clone(),
        );
        registry.register(
            "ingest_batches",
            "Group-commit transactions of the ingest writer",
            ingest.batches.clone(),
        );
        registry.register_with_unit(
            "ingest_commit",
            "Time from a batch's first statement to its commit",
            Unit::Seconds,
            ingest.commit_seconds.clone(),
        );
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            sockets.open.clone(),
        );
        registry.register(
            "connector_sessions",
            "Open WebSocket connections of gateways (connector sessions)",
            sockets.connector_sessions.clone(),
        );
        registry.register(
            "logins_failed",
            "Logins refused for a wrong username or password",
            logins.failed.clone(),
        );
        registry.register(
            "logins_throttled",
            "Logins refused by the throttle (RATE_LIMITED) without checking the password",
            logins.throttled.clone(),
        );
        registry.register(
            "subscriber_catch_ups",
            "Event subscribers that fell behind the live stream and read what they missed from the store",
            catch_ups.clone(),
        );
        registry.register(
            "compiled_publishes",
            "publishEvent and publishEvents calls run on the compiled path, without async-graphql's execution (the rest: first runs of a document, and inputs the schema must judge)",
            compiled_publishes.clone(),
        );
        registry.register(
            "backups",
            "Scheduled backups written and checked",
            backups.taken.clone(),
        );
        registry.register(
            "backup_failures",
            "Scheduled backups that failed (the log says why)",
            backups.failed.clone(),
        );
        registry.register_with_unit(
            "backup_last_success_timestamp",
            "When the last scheduled backup succeeded (Unix time; 0: none yet)",
            Unit::Seconds,
            backups.last_success.clone(),
        );
        registry.register(
            "devices",
            "Devices by status (read from the database at each scrape)",
            devices.clone(),
        );
        registry.register(
            "build",
            "The running Ferrite version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_with_unit(
            "resident_memory",
            "Resident memory of the server process",
            Unit::Bytes,
            resident_memory.clone(),
        );
        Metrics {
            registry,
            ingest,
            sockets,
            logins,
            catch_ups,
            compiled_publishes,
            backups,
            devices,
            resident_memory,
        }
    }

    /// The text a scrape gets: refreshes what is read at scrape time, then
    /// encodes every metric.
    pub async fn render(&self, store: &Store) -> Result<String, StoreError> {
        let counts = store.device_count_by_status().await?;
        // Every status, so a series drops to 0 rather than vanishing.
        for status in DeviceStatus::iter() {
            let count = counts
                .iter()
                .find(|(counted, _)| *counted == status)
                .map_or(0, |(_, count)| *count);
            self.devices
                .get_or_create(&StatusLabel {
                    status: status.to_value(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("BUG: writing to a String cannot fail");
        Ok(text)
    }
}

/// The process's resident set, from `VmRSS` in `/proc/self/status`
/// (Linux; in kB whatever the page size); `None` elsewhere.
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_text_is_openmetrics_with_every_metric() {
        let (_dir, store) = Store::temporary().await;
        let metrics = Metrics::new();
        metrics.ingest.events.inc_by(5);
        metrics.ingest.commit_seconds.observe(0.002);
        metrics.sockets.open.inc();
        let text = metrics.render(&store).await.unwrap();
        for line in [
            "ferrite_events_stored_total 5",
            "ferrite_ingest_commit_seconds_count 1",
            "ferrite_websocket_connections 1",
            "ferrite_connector_sessions 0",
            "ferrite_devices{status=\"ONLINE\"} 0",
            "ferrite_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("ferrite_resident_memory_bytes "))
            .and_then(|v| v.parse::<i64>().ok())
            .expect("the resident memory");
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
