//! Ferrite driven over graphql-transport-ws, as a gateway and a dashboard
//! would: publishers are connector sessions calling `publishEvent` (one
//! message per call) or `publishEvents` (a batch per call), acknowledged
//! once committed; subscribers run `subscription { events { payload } }`.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

use crate::workload::{Plan, Socket, Stamp, Tally, listening_addr, tally_frames};

/// A running Ferrite with a signed-in administrator and one device to
/// publish for.
pub struct Ferrite {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// RSS before the first sign-in (whose argon2 run takes 19 MiB that
    /// the allocator may keep).
    pub idle_rss_kib: Option<u64>,
    pub token: String,
    pub device: String,
    pub http: reqwest::Client,
    _server: Option<Server>,
}

impl Ferrite {
    /// Starts `bin` on a fresh SQLite database, or uses the server at `url`.
    pub async fn start(
        bin: Option<&Path>,
        url: Option<SocketAddr>,
        pid: Option<u32>,
        admin_password: &str,
    ) -> anyhow::Result<Ferrite> {
        let (addr, pid, server) = match (bin, url) {
            (Some(bin), _) => {
                let server = Server::start(bin, admin_password)?;
                (server.addr, Some(server.child.id()), Some(server))
            }
            (None, Some(url)) => {
                if !url.ip().is_loopback() {
                    bail!("loadgen only targets loopback addresses");
                }
                (url, pid, None)
            }
            (None, None) => bail!("give --server-bin or --url"),
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let idle_rss_kib = pid.and_then(ferrite_e2e::process::rss_kib);
        let http = reqwest::Client::new();
        let graphql = format!("http://{addr}/graphql");
        let token = login(&http, &graphql, admin_password).await?;
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
        Ok(Ferrite {
            addr,
            pid,
            idle_rss_kib,
            token,
            device,
            http,
            _server: server,
        })
    }

    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }
}

/// Publishes publisher `publisher`'s share of the plan as connector
/// session `loadgen-<publisher>`; returns the events acknowledged.
pub async fn publish(
    addr: SocketAddr,
    token: String,
    device: String,
    publisher: usize,
    plan: Plan,
) -> anyhow::Result<u64> {
    let total = plan.counts[publisher];
    let mut socket = open(addr, &token, Some(&format!("loadgen-{publisher}"))).await?;
    let single = plan.batch == 1;
    let query = if single {
        "mutation($i: EventInput!) { publishEvent(input: $i) { id } }"
    } else {
        "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }"
    };
    let started = Instant::now();
    let (mut next_seq, mut pending, mut acked, mut call) = (0u64, 0usize, 0u64, 0u64);
    loop {
        while next_seq < total && pending < plan.window {
            if let Some(due) = plan.due(started, next_seq) {
                tokio::time::sleep_until(due).await;
            }
            let count = (plan.batch as u64).min(total - next_seq);
            let inputs: Vec<Value> = (next_seq..next_seq + count)
                .map(|seq| {
                    json!({"deviceId": device, "service": "load",
                           "payload": plan.stamp(publisher, seq)})
                })
                .collect();
            let variables = if single {
                json!({"i": inputs[0]})
            } else {
                json!({"i": inputs})
            };
            call += 1;
            send(
                &mut socket,
                json!({"type": "subscribe", "id": call.to_string(),
                       "payload": {"query": query, "variables": variables}}),
            )
            .await?;
            next_seq += count;
            pending += 1;
        }
        if pending == 0 {
            return Ok(acked);
        }
        let frame = socket
            .next()
            .await
            .context("the server closed a publisher's socket")??;
        let tungstenite::Message::Text(text) = frame else {
            continue;
        };
        let message: Value = serde_json::from_str(text.as_str())?;
        match message["type"].as_str() {
            Some("next") => {
                let data = &message["payload"]["data"];
                if let Some(events) = data["publishEvents"].as_array() {
                    acked += events.len() as u64;
                } else if data["publishEvent"].is_object() {
                    acked += 1;
                } else {
                    bail!("a publish failed: {message}");
                }
            }
            Some("complete") | Some("error") => pending -= 1,
            _ => {}
        }
    }
}

/// A subscriber to every event, tallying until `stop`.
pub async fn subscribe(
    addr: SocketAddr,
    token: &str,
    plan: Plan,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Tally>> {
    let mut socket = open(addr, token, None).await?;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "s",
               "payload": {"query": "subscription { events { payload } }"}}),
    )
    .await?;
    Ok(tally_frames(socket, plan, stop, |text| {
        let mut message: Value = serde_json::from_str(text).ok()?;
        let payload = message["payload"]["data"]["events"]["payload"].take();
        serde_json::from_value::<Stamp>(payload).ok()
    }))
}

/// An idle socket with `queries` subscribed (none: the socket alone),
/// kept open until the task is aborted.
pub async fn idle(
    addr: SocketAddr,
    token: &str,
    queries: &[String],
) -> anyhow::Result<JoinHandle<()>> {
    let mut socket = open(addr, token, None).await?;
    for (n, query) in queries.iter().enumerate() {
        send(
            &mut socket,
            json!({"type": "subscribe", "id": format!("idle{n}"), "payload": {"query": query}}),
        )
        .await?;
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(_)) = socket.next().await {}
    }))
}

pub async fn login(http: &reqwest::Client, url: &str, password: &str) -> anyhow::Result<String> {
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

pub async fn gql(
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

pub async fn open(
    addr: SocketAddr,
    token: &str,
    connector: Option<&str>,
) -> anyhow::Result<Socket> {
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

pub async fn send(socket: &mut Socket, message: Value) -> anyhow::Result<()> {
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
    fn start(bin: &Path, admin_password: &str) -> anyhow::Result<Server> {
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
        let addr = listening_addr(&mut child, "ferrite is listening addr=", "the server")?;
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
