//! A bare WebSocket relay on tokio-tungstenite: the "glue code" a user
//! might write instead of Ferrite, and the floor of what moving a message
//! over a WebSocket costs on this machine. It stores nothing, checks
//! nothing and has no protocol beyond its first frame.
//!
//! A client's first text frame says what it is: `sub` (answered `ready`
//! once registered; then it receives every published frame, verbatim) or
//! `pub` (each text frame it sends is queued for every subscriber, then
//! acknowledged with `ack`, in order). A subscriber that falls behind
//! slows the publishers down (bounded queues) rather than losing frames.
//!
//! It runs as its own process (`loadgen --serve-relay ADDR`), so its CPU
//! and memory are measured apart from the load generator's.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, watch},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes, protocol::WebSocketConfig};

use crate::workload::{Plan, Socket, Stamp, Tally, listening_addr, tally_frames};

/// Frames queued per subscriber before publishers wait.
const QUEUE: usize = 1024;

/// The buffers Ferrite's sockets have by default (1 KiB to read, 4 KiB to
/// write), rather than tungstenite's 128 KiB read buffer: the relay is to
/// show the floor of what a socket costs, like for like.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
}

type Subscribers = Arc<Mutex<Vec<mpsc::Sender<Utf8Bytes>>>>;

/// The relay's accept loop; runs until killed.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the relay only listens on loopback");
    }
    let listener = TcpListener::bind(listen).await?;
    eprintln!("relay is listening addr={}", listener.local_addr()?);
    let subscribers: Subscribers = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let subscribers = subscribers.clone();
        tokio::spawn(async move {
            let _ = connection(stream, subscribers).await;
        });
    }
}

async fn connection(stream: TcpStream, subscribers: Subscribers) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let socket = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await?;
    let (mut sink, mut frames) = socket.split();
    let role = match frames.next().await {
        Some(Ok(Message::Text(text))) => text,
        _ => return Ok(()),
    };
    if role.as_str() == "sub" {
        let (sender, mut queue) = mpsc::channel(QUEUE);
        subscribers.lock().expect("not poisoned").push(sender);
        sink.send(Message::text("ready")).await?;
        loop {
            tokio::select! {
                // Written in bursts: flushed when nothing more is queued.
                frame = queue.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    sink.feed(Message::Text(frame)).await?;
                    while let Ok(frame) = queue.try_recv() {
                        sink.feed(Message::Text(frame)).await?;
                    }
                    sink.flush().await?;
                }
                // A subscriber that closed is dropped (its queue with it).
                frame = frames.next() => match frame {
                    Some(Ok(_)) => {}
                    _ => return Ok(()),
                },
            }
        }
    }
    while let Some(Ok(frame)) = frames.next().await {
        let Message::Text(text) = frame else { continue };
        let targets = {
            let mut subscribers = subscribers.lock().expect("not poisoned");
            subscribers.retain(|subscriber| !subscriber.is_closed());
            subscribers.clone()
        };
        for target in targets {
            // A subscriber that left is skipped.
            let _ = target.send(text.clone()).await;
        }
        sink.send(Message::text("ack")).await?;
    }
    Ok(())
}

/// The relay as a child process: this binary with `--serve-relay`.
pub struct RelayProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl RelayProcess {
    pub fn start(loadgen: &Path) -> anyhow::Result<RelayProcess> {
        let mut child = Command::new(loadgen)
            .args(["--serve-relay", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the relay")?;
        let addr = listening_addr(&mut child, "relay is listening addr=", "the relay")?;
        Ok(RelayProcess { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open(addr: SocketAddr, role: &'static str) -> anyhow::Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    socket.send(Message::text(role)).await?;
    Ok(socket)
}

/// Publishes publisher `publisher`'s share of the plan; returns the
/// messages acknowledged.
pub async fn publish(addr: SocketAddr, publisher: usize, plan: Plan) -> anyhow::Result<u64> {
    let total = plan.counts[publisher];
    let socket = open(addr, "pub").await?;
    let (mut sink, mut frames) = socket.split();
    let window = Arc::new(Semaphore::new(plan.window));
    let reader = tokio::spawn({
        let window = window.clone();
        async move {
            let mut acked = 0;
            while acked < total {
                match frames.next().await {
                    Some(Ok(Message::Text(_))) => {
                        acked += 1;
                        window.add_permits(1);
                    }
                    Some(Ok(_)) => {}
                    _ => bail!("relay publisher {publisher}: the connection ended"),
                }
            }
            anyhow::Ok(acked)
        }
    });
    let started = Instant::now();
    for seq in 0..total {
        if let Some(due) = plan.due(started, seq) {
            tokio::time::sleep_until(due).await;
        }
        window.acquire().await?.forget();
        let text = serde_json::to_string(&plan.stamp(publisher, seq))?;
        sink.send(Message::text(text)).await?;
    }
    let acked = reader.await??;
    let _ = sink.close().await;
    Ok(acked)
}

/// A subscriber, tallying until `stop`. Returns once the relay has
/// registered it, with the task that hands the tally over.
pub async fn subscribe(
    addr: SocketAddr,
    plan: Plan,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Tally>> {
    let mut socket = open(addr, "sub").await?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) if text.as_str() == "ready" => {}
        other => bail!("the relay did not register a subscriber: {other:?}"),
    }
    Ok(tally_frames(socket, plan, stop, |text| {
        serde_json::from_str::<Stamp>(text).ok()
    }))
}

/// An idle subscriber, kept open until the task is aborted.
pub async fn idle(addr: SocketAddr) -> anyhow::Result<JoinHandle<()>> {
    let mut socket = open(addr, "sub").await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(_)) = socket.next().await {}
    }))
}
