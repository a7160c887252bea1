//! Ferrite's load generator: G gateway sockets publish events over
//! graphql-transport-ws while S subscriber sockets receive them; then N idle
//! subscribed sockets are opened to weigh what an idle socket costs the
//! server.
//!
//! It reports events persisted per second (acknowledged publishes),
//! deliveries per second, publish→receive latency (p50/p99/p999, measured
//! in this process: each event carries its send time) and the server's RSS:
//! idle, after the load, and per idle subscribed socket.
//!
//! ```text
//! cargo build --release -p ferrite-server -p ferrite-e2e
//! target/release/loadgen --server-bin target/release/ferrite --gateways 4 --subscribers 1 --events 200000
//! target/release/loadgen --server-bin target/release/ferrite --rate 10000 --seconds 20
//! ```
//!
//! With `--connector` it measures the gateway library instead: events
//! through `ferrite-connector`'s durable outbox, one at a time (`event`,
//! waiting for each commit) and queued (`queue`, one per call and 100 per
//! call), until the server has committed all of them.
//!
//! With `--server-bin` it starts the server itself on a fresh temporary
//! SQLite database on 127.0.0.1 (and can read its RSS); with `--url` it uses
//! a running one (`--pid` for RSS). It only ever connects to loopback, and
//! stops by itself.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use ferrite_e2e::process::rss_kib;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Load generator for Ferrite (loopback only)")]
struct Args {
    /// Start this `ferrite` binary on a fresh temporary database.
    #[arg(long, conflicts_with = "url")]
    server_bin: Option<PathBuf>,
    /// Use a running server at this address (127.0.0.1:PORT).
    #[arg(long)]
    url: Option<SocketAddr>,
    /// The running server's pid, to read its RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// The running server's admin password.
    #[arg(long, default_value = "loadgen-admin-password")]
    admin_password: String,
    /// Publishing gateway sockets.
    #[arg(long, default_value_t = 4)]
    gateways: usize,
    /// Subscriber sockets (each receives every event).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Events per publishEvents call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Calls in flight per gateway socket.
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// Total events to publish (as fast as possible, unless --rate).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Target events per second over all gateways (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate: how long to publish, in seconds (overrides --events).
    #[arg(long)]
    seconds: Option<u64>,
    /// Idle subscribed sockets to open after the load, to weigh them.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Open the idle sockets without subscribing (to weigh the socket alone).
    #[arg(long)]
    idle_unsubscribed: bool,
    /// What each idle socket subscribes to, one subscription per query
    /// (repeat the flag for several). Default: an `events` subscription
    /// no event matches.
    #[arg(long = "idle-query", value_name = "QUERY")]
    idle_queries: Vec<String>,
    /// Measure the ferrite-connector library (outbox → server) instead.
    #[arg(long)]
    connector: bool,
    /// Also print the latency per window of this many milliseconds (by
    /// send time): where in the run the slow events were.
    #[arg(long)]
    timeline_ms: Option<u64>,
}

/// Latency per window of `window_us` by send time: events, p99 and max.
fn print_timeline(timed: &[(u64, u32)], window_us: u64) {
    let mut windows: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    for (sent, latency) in timed {
        windows.entry(sent / window_us).or_default().push(*latency);
    }
    println!("window start (s)   events   p99 (ms)   max (ms)");
    for (window, mut latencies) in windows {
        latencies.sort_unstable();
        let p99 = latencies[(latencies.len() - 1) * 99 / 100] as f64 / 1000.0;
        let max = *latencies.last().unwrap_or(&0) as f64 / 1000.0;
        println!(
            "{:>16.2} {:>8} {:>10.2} {:>10.2}",
            (window * window_us) as f64 / 1e6,
            latencies.len(),
            p99,
            max
        );
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (addr, pid, _server) = match (&args.server_bin, args.url) {
        (Some(bin), _) => {
            let server = Server::start(bin, &args.admin_password)?;
            (server.addr, Some(server.child.id()), Some(server))
        }
        (None, Some(url)) => {
            if !url.ip().is_loopback() {
                bail!("loadgen only targets loopback addresses");
            }
            (url, args.pid, None)
        }
        (None, None) => bail!("give --server-bin or --url"),
    };
    let rss = |label: &str| {
        let kib = pid.and_then(rss_kib);
        if let Some(kib) = kib {
            println!("{label:<32} {:>10.1} MiB", kib as f64 / 1024.0);
        }
        kib
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss("server RSS, idle");

    let http = reqwest::Client::new();
    let graphql = format!("http://{addr}/graphql");
    let token = login(&http, &graphql, &args.admin_password).await?;
    let device = gql(
        &http,
        &graphql,
        &token,
        "mutation { registerDevice(input: {externalId: \"loadgen\"}) { id } }",
        json!({}),
    )
    .await?["registerDevice"]["id"]
        .as_str()
        .context("a device id")?
        .to_owned();

    if args.connector {
        return connector_bench(addr, &http, &graphql, &token, args.events).await;
    }

    let clock = Instant::now();
    let total = match (args.rate, args.seconds) {
        (rate, Some(seconds)) if rate > 0 => rate * seconds,
        _ => args.events,
    };

    // Subscribers first, so they see every event.
    let received = Arc::new(AtomicU64::new(0));
    // (sent at, µs since the start; latency, µs)
    let latencies = Arc::new(Mutex::new(Vec::<(u64, u32)>::with_capacity(
        (total as usize) * args.subscribers,
    )));
    let mut subscribers = Vec::new();
    for _ in 0..args.subscribers {
        let mut socket = open(addr, &token, None).await?;
        send(&mut socket, json!({"type": "subscribe", "id": "s", "payload": {"query": "subscription { events { payload } }"}})).await?;
        let received = received.clone();
        let latencies = latencies.clone();
        subscribers.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(total as usize);
            while (mine.len() as u64) < total {
                let Some(Ok(frame)) = socket.next().await else {
                    break;
                };
                let tungstenite::Message::Text(text) = frame else {
                    continue;
                };
                let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if let Some(sent) = message["payload"]["data"]["events"]["payload"]["t"].as_u64() {
                    let now = clock.elapsed().as_micros() as u64;
                    mine.push((sent, now.saturating_sub(sent).min(u32::MAX as u64) as u32));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies.lock().await.extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Gateways publish `total` events in batches.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let next_batch = Arc::new(AtomicU64::new(0));
    let batches = total.div_ceil(args.batch as u64);
    let failed = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_ticks();
    let started = Instant::now();
    let mut gateways = Vec::new();
    for g in 0..args.gateways {
        let mut socket = open(addr, &token, Some(&format!("loadgen-{g}"))).await?;
        let device = device.clone();
        let acknowledged = acknowledged.clone();
        let next_batch = next_batch.clone();
        let failed = failed.clone();
        let (batch, inflight, rate) = (args.batch, args.inflight, args.rate);
        gateways.push(tokio::spawn(async move {
            let mut pending = 0usize;
            let mut done = false;
            loop {
                while !done && pending < inflight {
                    let n = next_batch.fetch_add(1, Ordering::Relaxed);
                    if n >= batches {
                        done = true;
                        break;
                    }
                    if rate > 0 {
                        // Batch n is due at n * batch / rate seconds.
                        let due = started + Duration::from_secs_f64(n as f64 * batch as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let t = clock.elapsed().as_micros() as u64;
                    let inputs: Vec<Value> = (0..batch)
                        .map(|_| json!({"deviceId": device, "service": "load", "payload": {"t": t}}))
                        .collect();
                    let message = json!({"type": "subscribe", "id": n.to_string(), "payload": {
                        "query": "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                        "variables": {"i": inputs}}});
                    if send(&mut socket, message).await.is_err() {
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    pending += 1;
                }
                if pending == 0 {
                    return;
                }
                let Some(Ok(frame)) = socket.next().await else {
                    failed.store(true, Ordering::Relaxed);
                    return;
                };
                let tungstenite::Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                match message["type"].as_str() {
                    Some("next") => {
                        if let Some(events) = message["payload"]["data"]["publishEvents"].as_array() {
                            acknowledged.fetch_add(events.len() as u64, Ordering::Relaxed);
                        } else {
                            eprintln!("publish failed: {message}");
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                    Some("complete") | Some("error") => pending -= 1,
                    _ => {}
                }
            }
        }));
    }
    for gateway in gateways {
        gateway.await?;
    }
    let publish_elapsed = started.elapsed();
    // Wait for the subscribers to catch up (at most 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = acknowledged.load(Ordering::Relaxed) * args.subscribers as u64;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliver_elapsed = started.elapsed();
    let cpu_after = cpu_ticks();
    for subscriber in subscribers {
        // Each hands its latencies over once it has every event.
        if tokio::time::timeout(Duration::from_secs(5), subscriber)
            .await
            .is_err()
        {
            eprintln!("a subscriber did not receive every event");
        }
    }
    let acked = acknowledged.load(Ordering::Relaxed);
    let delivered = received.load(Ordering::Relaxed);
    println!(
        "gateways / subscribers / batch     {} / {} / {}",
        args.gateways, args.subscribers, args.batch
    );
    if args.rate > 0 {
        println!(
            "target rate                      {:>10} events/s",
            args.rate
        );
    }
    println!(
        "events persisted                 {acked:>10} in {:.2} s = {:>8.0} events/s",
        publish_elapsed.as_secs_f64(),
        acked as f64 / publish_elapsed.as_secs_f64()
    );
    println!(
        "deliveries                       {delivered:>10} in {:.2} s = {:>8.0} deliveries/s",
        deliver_elapsed.as_secs_f64(),
        delivered as f64 / deliver_elapsed.as_secs_f64()
    );
    let timed = std::mem::take(&mut *latencies.lock().await);
    let mut latencies: Vec<u32> = timed.iter().map(|(_, latency)| *latency).collect();
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "publish→receive latency          p50 {:.2} ms   p99 {:.2} ms   p999 {:.2} ms   max {:.2} ms",
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
    print_cpu(cpu_before, cpu_after);
    if let Some(window) = args.timeline_ms {
        print_timeline(&timed, window.max(1) * 1000);
    }
    let loaded_rss = rss("server RSS, after the load");

    // Idle subscribed sockets.
    if args.idle > 0 {
        let idle_queries = if args.idle_queries.is_empty() {
            vec![r#"subscription { events(filter: {services: ["never"]}) { id } }"#.to_owned()]
        } else {
            args.idle_queries.clone()
        };
        let before = rss("server RSS, before idle sockets");
        let mut idle = Vec::with_capacity(args.idle);
        for i in 0..args.idle {
            let mut socket = open(addr, &token, None).await?;
            if !args.idle_unsubscribed {
                for (n, query) in idle_queries.iter().enumerate() {
                    send(&mut socket, json!({"type": "subscribe", "id": format!("idle{n}"), "payload": {"query": query}})).await?;
                }
            }
            idle.push(socket);
            if i % 200 == 199 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss(&format!("server RSS, {} idle sockets", args.idle));
        if let (Some(before), Some(after)) = (before, after) {
            println!(
                "per idle subscribed socket       {:>10.2} KiB",
                (after.saturating_sub(before)) as f64 / args.idle as f64
            );
        }
        drop(idle);
    }
    let _ = (idle_rss, loaded_rss);
    if failed.load(Ordering::Relaxed) {
        bail!("some publishes failed");
    }
    Ok(())
}

/// The server's resident set size, from /proc.
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

/// Prints how busy the machine was between two `cpu_ticks` readings.
fn print_cpu(before: Option<(u64, u64, u64)>, after: Option<(u64, u64, u64)>) {
    if let (Some((b0, s0, t0)), Some((b1, s1, t1))) = (before, after) {
        let total = (t1 - t0).max(1) as f64;
        println!(
            "machine CPU during the load        busy {:.0}%   stolen by the hypervisor {:.0}%",
            (b1 - b0) as f64 * 100.0 / total,
            (s1 - s0) as f64 * 100.0 / total
        );
    }
}

/// Events through the gateway library: its outbox (SQLite, synchronous=FULL)
/// and its one session, until the server committed them.
async fn connector_bench(
    addr: SocketAddr,
    http: &reqwest::Client,
    graphql: &str,
    token: &str,
    events: u64,
) -> anyhow::Result<()> {
    use ferrite_connector::{Connector, ConnectorOptions, DeviceSpec, Event};
    let key = gql(
        http,
        graphql,
        token,
        "mutation { createApiKey(name: \"loadgen-gateway\", permission: WRITE) { secret } }",
        json!({}),
    )
    .await?["createApiKey"]["secret"]
        .as_str()
        .context("a key")?
        .to_owned();
    let dir = tempfile::tempdir()?;
    let options = ConnectorOptions::new(format!("ws://{addr}/graphql"), key, "loadgen")?
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

async fn login(http: &reqwest::Client, url: &str, password: &str) -> anyhow::Result<String> {
    let data = gql(
        http,
        url,
        "",
        "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
        json!({"p": password}),
    )
    .await?;
    Ok(data["login"]["accessToken"]
        .as_str()
        .context("an access token")?
        .to_owned())
}

async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let mut request = http
        .post(url)
        .json(&json!({"query": query, "variables": variables}));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await?.json().await?;
    if body.get("errors").is_some() {
        bail!("GraphQL errors: {body}");
    }
    Ok(body["data"].clone())
}

async fn open(addr: SocketAddr, token: &str, connector: Option<&str>) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{addr}/graphql").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    let mut payload = json!({"Authorization": format!("Bearer {token}")});
    if let Some(id) = connector {
        payload["connectorId"] = json!(id);
    }
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await?;
    loop {
        let frame = socket.next().await.context("closed during init")??;
        if let tungstenite::Message::Text(text) = frame {
            let message: Value = serde_json::from_str(text.as_str())?;
            if message["type"] == "connection_ack" {
                return Ok(socket);
            }
            bail!("unexpected during init: {message}");
        }
    }
}

async fn send(socket: &mut Socket, message: Value) -> anyhow::Result<()> {
    socket
        .send(tungstenite::Message::Text(message.to_string().into()))
        .await?;
    Ok(())
}

/// A `ferrite serve` child on a temporary data directory.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &PathBuf, admin_password: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let bin = std::fs::canonicalize(bin)
            .with_context(|| format!("no server binary at {}", bin.display()))?;
        let mut child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("FERRITE_ADMIN_PASSWORD", admin_password)
            .env("FERRITE_LOG", "info")
            .env("FERRITE_LIMITS__LOGIN_ATTEMPTS", "1000")
            // Every socket of the load comes from 127.0.0.1.
            .env("FERRITE_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "1000000")
            .env("FERRITE_HTTP__MAX_CONNECTIONS", "1000000")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let addr = loop {
            let line = lines
                .next()
                .context("the server exited before listening")??;
            if let Some(rest) = line.split("ferrite is listening addr=").nth(1) {
                break rest.trim().parse()?;
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
