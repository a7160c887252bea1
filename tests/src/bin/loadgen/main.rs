//! Ferrite's load generator, and the same load on what users would pick
//! instead: Mosquitto (an MQTT broker, QoS 1) and a bare WebSocket relay.
//!
//! First N idle subscribed connections are opened on the fresh server to
//! weigh what one costs, and closed; then G publishers send messages with
//! at most `--inflight` calls unacknowledged each, while S subscribers
//! receive every message. Every
//! message carries its publisher, its sequence number and its send time,
//! so each subscriber checks it got every message exactly once, and
//! publish→receive latency is measured by one clock, in this process.
//!
//! It reports messages acknowledged per second (for Ferrite: committed),
//! deliveries per second, latency (p50/p99/p999), the server's CPU time
//! per message (from `/proc/<pid>/stat`) and its RSS: idle, after the load
//! and per idle subscribed connection.
//!
//! ```text
//! cargo build --release -p ferrite-server -p ferrite-e2e
//! target/release/loadgen --server-bin target/release/ferrite --gateways 4 --subscribers 1 --events 200000
//! target/release/loadgen --server-bin target/release/ferrite --rate 10000 --seconds 20
//! # side by side, rounds in alternating order, with ratios (scripts/bench-vs.sh)
//! target/release/loadgen --server-bin target/release/ferrite --systems ferrite,mosquitto,relay \
//!     --rounds 3 --batch 1 --inflight 64 --events 200000
//! ```
//!
//! With `--batch 1`, Ferrite's publishers call `publishEvent` once per
//! message (what a gateway sending one reading at a time does); with more,
//! `publishEvents` with that many. Mosquitto and the relay always carry
//! one message per call.
//!
//! With `--connector` it measures the gateway library instead: events
//! through `ferrite-connector`'s durable outbox, one at a time (`event`,
//! waiting for each commit) and queued (`queue`, one per call and 100 per
//! call), until the server has committed all of them.
//!
//! With `--server-bin` it starts the server itself on a fresh temporary
//! SQLite database on 127.0.0.1 (and can read its RSS); with `--url` it uses
//! a running one (`--pid` for RSS and CPU). It only ever connects to
//! loopback, and stops by itself.

/// Ferrite over graphql-transport-ws.
mod ferrite;
/// Mosquitto through rumqttc.
mod mosquitto;
/// A bare tokio-tungstenite relay, and its clients.
mod relay;
/// The plan, the stamps, the tally.
mod workload;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use ferrite_e2e::process::rss_kib;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};

use workload::{Plan, Tally, cpu_seconds};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Load generator for Ferrite (loopback only)")]
struct Args {
    /// Start this `ferrite` binary on a fresh temporary database.
    #[arg(long, conflicts_with = "url")]
    server_bin: Option<PathBuf>,
    /// Use a running server at this address (127.0.0.1:PORT).
    #[arg(long)]
    url: Option<SocketAddr>,
    /// The running server's pid, to read its RSS and CPU time.
    #[arg(long)]
    pid: Option<u32>,
    /// The running server's admin password.
    #[arg(long, default_value = "loadgen-admin-password")]
    admin_password: String,
    /// The systems to load, in this order (reversed every other round).
    #[arg(long, value_delimiter = ',', default_value = "ferrite")]
    systems: Vec<System>,
    /// Rounds over the systems.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The mosquitto binary, for `--systems mosquitto`.
    #[arg(long, default_value = "mosquitto")]
    mosquitto_bin: PathBuf,
    /// Publishing connections (Ferrite: gateway sockets).
    #[arg(long, default_value_t = 4)]
    gateways: usize,
    /// Subscriber connections (each receives every message).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Messages per call: Ferrite's publishEvents batch (1: publishEvent).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Calls unacknowledged per publishing connection.
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// Total messages to publish (as fast as possible, unless --rate).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Target messages per second over all publishers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate: how long to publish, in seconds (overrides --events).
    #[arg(long)]
    seconds: Option<u64>,
    /// Idle subscribed connections to open before the load, to weigh them.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Open Ferrite's idle sockets without subscribing (the socket alone).
    #[arg(long)]
    idle_unsubscribed: bool,
    /// What each idle Ferrite socket subscribes to, one subscription per
    /// query (repeat the flag for several). Default: an `events`
    /// subscription no event matches.
    #[arg(long = "idle-query", value_name = "QUERY")]
    idle_queries: Vec<String>,
    /// Measure the ferrite-connector library (outbox → server) instead.
    #[arg(long)]
    connector: bool,
    /// Also print the latency per window of this many milliseconds (by
    /// send time): where in the run the slow messages were.
    #[arg(long)]
    timeline_ms: Option<u64>,
    /// Run the bare relay on this loopback address (how `--systems relay`
    /// starts it, as a process of its own).
    #[arg(long, hide = true)]
    serve_relay: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    Ferrite,
    Mosquitto,
    Relay,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Ferrite => "ferrite",
            System::Mosquitto => "mosquitto",
            System::Relay => "relay",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(listen) = args.serve_relay {
        return relay::serve(listen).await;
    }
    if args.connector {
        let server = start_ferrite(&args).await?;
        return connector_bench(&server, args.events).await;
    }
    if args.batch > 1 && args.systems.iter().any(|s| *s != System::Ferrite) {
        eprintln!("note: --batch applies to Ferrite only; the others carry one message per call");
    }
    let mut results = Vec::new();
    for round in 0..args.rounds {
        let mut order = args.systems.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for system in order {
            println!(
                "--- {} (round {} of {})",
                system.name(),
                round + 1,
                args.rounds
            );
            let result = run_round(system, &args).await?;
            result.print(&args);
            results.push(result);
        }
    }
    if results.len() > 1 {
        print_summary(&args.systems, &results);
    }
    if let Some(bad) = results.iter().find(|r| !r.clean()) {
        bail!(
            "{}: {} lost, {} duplicated, {} strays, failure: {:?}",
            bad.system.name(),
            bad.lost,
            bad.duplicated,
            bad.strays,
            bad.failure
        );
    }
    Ok(())
}

async fn start_ferrite(args: &Args) -> anyhow::Result<ferrite::Ferrite> {
    ferrite::Ferrite::start(
        args.server_bin.as_deref(),
        args.url,
        args.pid,
        &args.admin_password,
    )
    .await
}

/// One system, started for the round and stopped after it.
enum Target {
    Ferrite(ferrite::Ferrite),
    Mosquitto(mosquitto::Broker),
    Relay(relay::RelayProcess),
}

impl Target {
    async fn start(system: System, args: &Args) -> anyhow::Result<Target> {
        Ok(match system {
            System::Ferrite => Target::Ferrite(start_ferrite(args).await?),
            System::Mosquitto => Target::Mosquitto(mosquitto::Broker::start(&args.mosquitto_bin)?),
            System::Relay => {
                let me = std::env::current_exe().context("this binary's path")?;
                Target::Relay(relay::RelayProcess::start(&me)?)
            }
        })
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Target::Ferrite(ferrite) => ferrite.pid,
            Target::Mosquitto(broker) => Some(broker.pid()),
            Target::Relay(relay) => Some(relay.pid()),
        }
    }

    /// RSS once started and settled, before any work.
    async fn idle_rss_kib(&self) -> Option<u64> {
        match self {
            Target::Ferrite(ferrite) => ferrite.idle_rss_kib,
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.pid().and_then(rss_kib)
            }
        }
    }

    async fn subscribe(
        &self,
        index: usize,
        plan: Plan,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<Tally>> {
        match self {
            Target::Ferrite(f) => ferrite::subscribe(f.addr, &f.token, plan, stop).await,
            Target::Mosquitto(broker) => mosquitto::subscribe(broker.addr, index, plan, stop).await,
            Target::Relay(relay) => relay::subscribe(relay.addr, plan, stop).await,
        }
    }

    fn publish(&self, publisher: usize, plan: Plan) -> JoinHandle<anyhow::Result<u64>> {
        match self {
            Target::Ferrite(f) => tokio::spawn(ferrite::publish(
                f.addr,
                f.token.clone(),
                f.device.clone(),
                publisher,
                plan,
            )),
            Target::Mosquitto(broker) => {
                tokio::spawn(mosquitto::publish(broker.addr, publisher, plan))
            }
            Target::Relay(relay) => tokio::spawn(relay::publish(relay.addr, publisher, plan)),
        }
    }

    async fn idle(&self, index: usize, args: &Args) -> anyhow::Result<JoinHandle<()>> {
        match self {
            Target::Ferrite(f) => {
                let queries = if args.idle_unsubscribed {
                    Vec::new()
                } else if args.idle_queries.is_empty() {
                    vec![r#"subscription { events(filter: {services: ["never"]}) { id } }"#.into()]
                } else {
                    args.idle_queries.clone()
                };
                ferrite::idle(f.addr, &f.token, &queries).await
            }
            Target::Mosquitto(broker) => mosquitto::idle(broker.addr, index).await,
            Target::Relay(relay) => relay::idle(relay.addr).await,
        }
    }
}

/// What one round of one system measured.
struct RoundResult {
    system: System,
    acked: u64,
    publish_seconds: f64,
    delivered: u64,
    deliver_seconds: f64,
    /// p50, p99, p999, max in ms.
    latency: Option<[f64; 4]>,
    server_cpu_seconds: Option<f64>,
    idle_rss_kib: Option<u64>,
    loaded_rss_kib: Option<u64>,
    per_idle_kib: Option<f64>,
    lost: u64,
    duplicated: u64,
    strays: u64,
    failure: Option<String>,
    machine: Option<(f64, f64)>,
    timed: Vec<(u64, u32)>,
}

impl RoundResult {
    fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.strays == 0 && self.failure.is_none()
    }

    fn per_second(&self) -> f64 {
        self.acked as f64 / self.publish_seconds
    }

    fn deliveries_per_second(&self) -> f64 {
        self.delivered as f64 / self.deliver_seconds
    }

    /// The server's CPU time per acknowledged message, in µs.
    fn cpu_per_message_us(&self) -> Option<f64> {
        self.server_cpu_seconds
            .map(|cpu| cpu * 1e6 / self.acked.max(1) as f64)
    }

    /// The server's CPU use while loaded, in % of one core.
    fn cpu_percent(&self) -> Option<f64> {
        self.server_cpu_seconds
            .map(|cpu| cpu * 100.0 / self.deliver_seconds)
    }

    fn print(&self, args: &Args) {
        let mib =
            |kib: Option<u64>| kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!(
            "publishers / subscribers / batch   {} / {} / {}",
            args.gateways,
            args.subscribers,
            if self.system == System::Ferrite {
                args.batch
            } else {
                1
            }
        );
        println!(
            "messages acknowledged            {:>10} in {:.2} s = {:>8.0} /s",
            self.acked,
            self.publish_seconds,
            self.per_second()
        );
        println!(
            "deliveries                       {:>10} in {:.2} s = {:>8.0} /s",
            self.delivered,
            self.deliver_seconds,
            self.deliveries_per_second()
        );
        if let Some([p50, p99, p999, max]) = self.latency {
            println!(
                "publish→receive latency          p50 {p50:.2} ms   p99 {p99:.2} ms   p999 {p999:.2} ms   max {max:.2} ms"
            );
        }
        if let (Some(per), Some(percent)) = (self.cpu_per_message_us(), self.cpu_percent()) {
            println!(
                "server CPU                       {per:>10.1} µs per message, {percent:.0} % of a core"
            );
        }
        if let Some((busy, steal)) = self.machine {
            println!(
                "machine CPU during the load        busy {busy:.0}%   stolen by the hypervisor {steal:.0}%"
            );
        }
        println!(
            "exactly once                       {} lost, {} duplicated, {} strays",
            self.lost, self.duplicated, self.strays
        );
        if let Some(failure) = &self.failure {
            println!("FAILED                           {failure}");
        }
        println!(
            "server RSS                       idle {} MiB, after the load {} MiB",
            mib(self.idle_rss_kib),
            mib(self.loaded_rss_kib)
        );
        if let Some(per) = self.per_idle_kib {
            println!("per idle subscribed connection   {per:>10.2} KiB");
        }
        if let Some(window) = args.timeline_ms {
            print_timeline(&self.timed, window.max(1) * 1000);
        }
    }
}

async fn run_round(system: System, args: &Args) -> anyhow::Result<RoundResult> {
    let target = Target::start(system, args).await?;
    let pid = target.pid();
    let idle_rss_kib = target.idle_rss_kib().await;
    // Idle subscribed connections first, on the fresh server: after the
    // load, memory its queues freed would be reused and hide their cost.
    let mut per_idle_kib = None;
    if args.idle > 0 {
        let before = pid.and_then(rss_kib);
        let mut idle = Vec::with_capacity(args.idle);
        for index in 0..args.idle {
            idle.push(target.idle(index, args).await?);
            if index % 200 == 199 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = pid.and_then(rss_kib);
        if let (Some(before), Some(after)) = (before, after) {
            per_idle_kib = Some(after.saturating_sub(before) as f64 / args.idle as f64);
        }
        for connection in idle {
            connection.abort();
        }
        // Let the server see them go before the load starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = match (args.rate, args.seconds) {
        (rate, Some(seconds)) if rate > 0 => rate * seconds,
        _ => args.events,
    };
    let batch = if system == System::Ferrite {
        args.batch
    } else {
        1
    };
    let plan = Plan::new(args.gateways, total, args.inflight, batch, args.rate);

    // Subscribers first, so they see every message.
    let (stop, stopped) = watch::channel(false);
    let mut subscribers = Vec::new();
    for index in 0..args.subscribers {
        subscribers.push(
            target
                .subscribe(index, plan.clone(), stopped.clone())
                .await?,
        );
    }
    if system == System::Ferrite {
        // graphql-transport-ws does not confirm a subscription.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let machine_before = cpu_ticks();
    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let publishers: Vec<_> = (0..args.gateways)
        .map(|publisher| target.publish(publisher, plan.clone()))
        .collect();
    let mut acked = 0;
    let mut failure = None;
    for publisher in publishers {
        match publisher.await? {
            Ok(count) => acked += count,
            Err(err) => failure = Some(format!("{err:#}")),
        }
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    // Wait for the subscribers to catch up (at most 60 s).
    let expected = acked * args.subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while plan.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliver_seconds = started.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(cpu_seconds);
    let machine = machine_share(machine_before, cpu_ticks());
    // A moment for late duplicates to show, then the tallies.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(true);
    let (mut lost, mut duplicated, mut strays) = (0, 0, 0);
    let mut timed = Vec::new();
    for subscriber in subscribers {
        let tally = subscriber.await?;
        lost += tally.lost();
        duplicated += tally.duplicated();
        strays += tally.strays;
        timed.extend(tally.timed);
    }
    let mut latencies: Vec<u32> = timed.iter().map(|(_, latency)| *latency).collect();
    latencies.sort_unstable();
    let latency = (!latencies.is_empty()).then(|| {
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        [at(0.5), at(0.99), at(0.999), at(1.0)]
    });
    let loaded_rss_kib = pid.and_then(rss_kib);
    Ok(RoundResult {
        system,
        acked,
        publish_seconds,
        delivered: plan.received.load(Ordering::Relaxed),
        deliver_seconds,
        latency,
        server_cpu_seconds: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        idle_rss_kib,
        loaded_rss_kib,
        per_idle_kib,
        lost,
        duplicated,
        strays,
        failure,
        machine,
        timed: if args.timeline_ms.is_some() {
            timed
        } else {
            Vec::new()
        },
    })
}

/// The median of each figure per system over the rounds, and Ferrite's
/// ratio to each other system, as a Markdown table.
fn print_summary(systems: &[System], results: &[RoundResult]) {
    fn median(mut values: Vec<f64>) -> Option<f64> {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        (!values.is_empty()).then(|| values[values.len() / 2])
    }
    type Figure = (&'static str, fn(&RoundResult) -> Option<f64>);
    let figures: [Figure; 9] = [
        ("messages acknowledged/s", |r| Some(r.per_second())),
        ("deliveries/s", |r| Some(r.deliveries_per_second())),
        ("server CPU per message (µs)", |r| r.cpu_per_message_us()),
        ("server CPU (% of a core)", |r| r.cpu_percent()),
        ("latency p50 (ms)", |r| r.latency.map(|l| l[0])),
        ("latency p99 (ms)", |r| r.latency.map(|l| l[1])),
        ("latency p999 (ms)", |r| r.latency.map(|l| l[2])),
        ("idle RSS (MiB)", |r| {
            r.idle_rss_kib.map(|k| k as f64 / 1024.0)
        }),
        ("per idle subscribed connection (KiB)", |r| r.per_idle_kib),
    ];
    let others: Vec<System> = systems
        .iter()
        .copied()
        .filter(|s| *s != System::Ferrite)
        .collect();
    let has_ferrite = systems.contains(&System::Ferrite);
    let rounds = results.len() / systems.len().max(1);
    println!("\nmedian of {rounds} rounds per system");
    let mut header = String::from("| |");
    let mut rule = String::from("|---|");
    for system in systems {
        header += &format!(" {} |", system.name());
        rule += "---|";
    }
    if has_ferrite {
        for other in &others {
            header += &format!(" ferrite ÷ {} |", other.name());
            rule += "---|";
        }
    }
    println!("{header}\n{rule}");
    for (label, figure) in figures {
        let medians: Vec<Option<f64>> = systems
            .iter()
            .map(|system| {
                median(
                    results
                        .iter()
                        .filter(|r| r.system == *system)
                        .filter_map(figure)
                        .collect(),
                )
            })
            .collect();
        let mut row = format!("| {label} |");
        for value in &medians {
            row += &match value {
                Some(v) if *v >= 100.0 => format!(" {v:.0} |"),
                Some(v) => format!(" {v:.2} |"),
                None => " - |".into(),
            };
        }
        if has_ferrite {
            let ferrite = systems
                .iter()
                .position(|s| *s == System::Ferrite)
                .and_then(|i| medians[i]);
            for other in &others {
                let theirs = systems
                    .iter()
                    .position(|s| s == other)
                    .and_then(|i| medians[i]);
                row += &match (ferrite, theirs) {
                    (Some(f), Some(o)) if o > 0.0 => format!(" {:.2}× |", f / o),
                    _ => " - |".into(),
                };
            }
        }
        println!("{row}");
    }
    let unclean: Vec<String> = results
        .iter()
        .filter(|r| !r.clean())
        .map(|r| r.system.name().to_owned())
        .collect();
    if unclean.is_empty() {
        println!("\nevery subscriber received every message exactly once, in every round");
    } else {
        println!(
            "\nNOT exactly once in some rounds of: {}",
            unclean.join(", ")
        );
    }
}

/// Latency per window of `window_us` by send time: messages, p99 and max.
fn print_timeline(timed: &[(u64, u32)], window_us: u64) {
    let mut windows: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    for (sent, latency) in timed {
        windows.entry(sent / window_us).or_default().push(*latency);
    }
    println!("window start (s)   messages   p99 (ms)   max (ms)");
    for (window, mut latencies) in windows {
        latencies.sort_unstable();
        let p99 = latencies[(latencies.len() - 1) * 99 / 100] as f64 / 1000.0;
        let max = *latencies.last().unwrap_or(&0) as f64 / 1000.0;
        println!(
            "{:>16.2} {:>10} {:>10.2} {:>10.2}",
            (window * window_us) as f64 / 1e6,
            latencies.len(),
            p99,
            max
        );
    }
}

/// The machine's CPU time so far, from `/proc/stat`: (busy, steal, total)
/// in clock ticks. Steal is time the hypervisor gave to other machines
/// while this one wanted to run: on a shared VM it explains most outliers.
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some((busy, steal, busy + idle + iowait + steal))
}

/// How busy the machine was between two `cpu_ticks` readings: (busy %,
/// stolen %).
fn machine_share(
    before: Option<(u64, u64, u64)>,
    after: Option<(u64, u64, u64)>,
) -> Option<(f64, f64)> {
    let ((b0, s0, t0), (b1, s1, t1)) = (before?, after?);
    let total = (t1 - t0).max(1) as f64;
    Some((
        (b1 - b0) as f64 * 100.0 / total,
        (s1 - s0) as f64 * 100.0 / total,
    ))
}

/// Events through the gateway library: its outbox (SQLite, synchronous=FULL)
/// and its one session, until the server committed them.
async fn connector_bench(server: &ferrite::Ferrite, events: u64) -> anyhow::Result<()> {
    use ferrite_connector::{Connector, ConnectorOptions, DeviceSpec, Event};
    let key = ferrite::gql(
        &server.http,
        &server.graphql_url(),
        &server.token,
        "mutation { createApiKey(name: \"loadgen-gateway\", permission: WRITE) { secret } }",
        json!({}),
    )
    .await?["createApiKey"]["secret"]
        .as_str()
        .context("a key")?
        .to_owned();
    let dir = tempfile::tempdir()?;
    let options = ConnectorOptions::new(format!("ws://{}/graphql", server.addr), key, "loadgen")?
        .outbox_path(dir.path().join("outbox.db"))?
        .request_timeout(Duration::from_secs(60))?;
    let connector = Connector::start(options).await?;
    connector.register(DeviceSpec::new("bench")).await?;
    let report = |label: &str, count: u64, elapsed: Duration| {
        println!(
            "{label:<44} {count:>7} events {:>8.2} s {:>9.0} events/s",
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64()
        );
    };

    let one_by_one = events.min(2_000);
    let started = Instant::now();
    for n in 0..one_by_one {
        connector.event("bench", "n", json!(n)).await?;
    }
    report(
        "event(): each waits for its commit",
        one_by_one,
        started.elapsed(),
    );

    for per_call in [1_u64, 100] {
        let started = Instant::now();
        let mut queued = 0;
        while queued < events {
            let batch = per_call.min(events - queued);
            connector
                .queue(
                    (0..batch)
                        .map(|n| Event::new("bench", "n", json!(n)))
                        .collect(),
                )
                .await?;
            queued += batch;
        }
        let accepted = started.elapsed();
        connector.flush(Duration::from_secs(600)).await?;
        report(
            &format!("queue({per_call}/call): accepted into the outbox"),
            events,
            accepted,
        );
        report(
            &format!("queue({per_call}/call): committed by the server"),
            events,
            started.elapsed(),
        );
    }
    // Many sensors at once, each publishing one event per call: the outbox
    // writer commits what they queued together.
    let tasks = 16_u64;
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..tasks {
        let connector = connector.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..events / tasks {
                connector
                    .queue(vec![Event::new("bench", "n", json!(n))])
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let accepted = started.elapsed();
    connector.flush(Duration::from_secs(600)).await?;
    let count = events / tasks * tasks;
    report(
        &format!("queue(1/call) from {tasks} tasks: accepted"),
        count,
        accepted,
    );
    report(
        &format!("queue(1/call) from {tasks} tasks: committed"),
        count,
        started.elapsed(),
    );
    connector.shutdown().await?;
    Ok(())
}
