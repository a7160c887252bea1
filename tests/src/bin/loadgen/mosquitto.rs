//! Mosquitto, what a user would pick instead of Ferrite for moving
//! readings: started on loopback with QoS 1 and no persistence, and
//! driven through rumqttc with the same plan as Ferrite.
//!
//! Publishers publish QoS 1 to `load/<publisher>` with at most `window`
//! messages unacknowledged (a PUBACK frees a slot); subscribers subscribe
//! QoS 1 to `load/#`. The broker is told to queue without limit for a
//! subscriber that falls behind, so that it, like Ferrite, loses nothing.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::workload::{Plan, Stamp, Tally};

/// A `mosquitto` child on a port of its own.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start(bin: &Path) -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir()?;
        // A free port: bound, read, released.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 max_inflight_messages 64\n\
                 max_queued_messages 0\n\
                 log_type error\n"
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it with scripts/bench-vs.sh, or apt-get install mosquitto)",
                    bin.display()
                )
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker {
            child,
            addr,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(addr: SocketAddr, client_id: String, window: usize) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(window.min(u16::MAX as usize) as u16);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    options
}

/// Publishes publisher `publisher`'s share of the plan; returns the
/// messages acknowledged.
pub async fn publish(addr: SocketAddr, publisher: usize, plan: Plan) -> anyhow::Result<u64> {
    let total = plan.counts[publisher];
    let (client, mut eventloop) = AsyncClient::new(
        options(addr, format!("loadgen-pub-{publisher}"), plan.window),
        plan.window.max(10),
    );
    let window = Arc::new(Semaphore::new(plan.window));
    let acked = Arc::new(AtomicU64::new(0));
    // The event loop sends what the client queues and counts PUBACKs.
    let poller = tokio::spawn({
        let (window, acked) = (window.clone(), acked.clone());
        async move {
            while acked.load(Ordering::Relaxed) < total {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        window.add_permits(1);
                    }
                    Ok(_) => {}
                    Err(err) => bail!("publisher {publisher}: {err}"),
                }
            }
            anyhow::Ok(())
        }
    });
    let started = Instant::now();
    let topic = format!("load/{publisher}");
    for seq in 0..total {
        if let Some(due) = plan.due(started, seq) {
            tokio::time::sleep_until(due).await;
        }
        window.acquire().await?.forget();
        let payload = serde_json::to_vec(&plan.stamp(publisher, seq))?;
        client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await?;
    }
    poller.await??;
    let _ = client.disconnect().await;
    Ok(acked.load(Ordering::Relaxed))
}

/// Connects and subscribes to `topic`; returns once the broker confirmed.
async fn subscribed(
    addr: SocketAddr,
    client_id: String,
    topic: &str,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (client, mut eventloop) = AsyncClient::new(options(addr, client_id, 64), 10);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::SubAck(_)) => return Ok((client, eventloop)),
            _ => continue,
        }
    }
}

/// A subscriber to every publisher's topic, tallying until `stop`.
/// Returns once subscribed, with the task that hands the tally over.
pub async fn subscribe(
    addr: SocketAddr,
    index: usize,
    plan: Plan,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Tally>> {
    let (client, mut eventloop) =
        subscribed(addr, format!("loadgen-sub-{index}"), "load/#").await?;
    Ok(tokio::spawn(async move {
        let _client = client;
        let mut tally = Tally::new(&plan);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        tally.note(serde_json::from_slice::<Stamp>(&publish.payload).ok());
                    }
                    Ok(_) => {}
                    Err(err) => {
                        eprintln!("mosquitto subscriber {index}: {err}");
                        break;
                    }
                },
            }
        }
        tally
    }))
}

/// An idle client subscribed to a topic nobody publishes to, kept alive
/// (pings answered) until the task is aborted.
pub async fn idle(addr: SocketAddr, index: usize) -> anyhow::Result<JoinHandle<()>> {
    let (client, mut eventloop) =
        subscribed(addr, format!("loadgen-idle-{index}"), "idle/never").await?;
    Ok(tokio::spawn(async move {
        let _client = client;
        while eventloop.poll().await.is_ok() {}
    }))
}
