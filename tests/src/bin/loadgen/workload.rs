//! What every system is driven with: the plan (who publishes how many
//! messages, how fast, with how many unacknowledged), the stamp each
//! message carries, and the tally a subscriber keeps of what it received.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// What each message carries, whatever the system: which publisher sent
/// it, its sequence number there, and when (µs since the run's clock).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stamp {
    pub p: u32,
    pub s: u64,
    pub t: u64,
}

/// The load of one round.
#[derive(Clone)]
pub struct Plan {
    /// Messages each publisher sends (its sequence numbers are 0..count).
    pub counts: Arc<Vec<u64>>,
    /// Calls each publisher may have unacknowledged.
    pub window: usize,
    /// Messages per call (Ferrite's `publishEvents`; 1 everywhere else).
    pub batch: usize,
    /// Messages per second per publisher; 0: as fast as the window allows.
    pub rate_per_publisher: f64,
    /// Time zero of every stamp.
    pub clock: Instant,
    /// Deliveries so far, over all subscribers.
    pub received: Arc<AtomicU64>,
}

impl Plan {
    pub fn new(publishers: usize, total: u64, window: usize, batch: usize, rate: u64) -> Plan {
        let publishers = publishers.max(1);
        let counts = (0..publishers as u64)
            .map(|p| total / publishers as u64 + u64::from(p < total % publishers as u64))
            .collect();
        Plan {
            counts: Arc::new(counts),
            window: window.max(1),
            batch: batch.max(1),
            rate_per_publisher: rate as f64 / publishers as f64,
            clock: Instant::now(),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Microseconds since the clock's start.
    pub fn now_us(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    /// When message `seq` of a publisher that started at `started` is due
    /// (`None`: at once).
    pub fn due(&self, started: Instant, seq: u64) -> Option<tokio::time::Instant> {
        (self.rate_per_publisher > 0.0).then(|| {
            (started + Duration::from_secs_f64(seq as f64 / self.rate_per_publisher)).into()
        })
    }

    pub fn stamp(&self, publisher: usize, seq: u64) -> Stamp {
        Stamp {
            p: publisher as u32,
            s: seq,
            t: self.now_us(),
        }
    }
}

/// What one subscriber received: each message's latency, and whether each
/// sequence number of each publisher came exactly once.
pub struct Tally {
    /// (sent at, latency), µs.
    pub timed: Vec<(u64, u32)>,
    /// Times each (publisher, seq) was received.
    seen: Vec<Vec<u8>>,
    /// Messages that name no message of the plan.
    pub strays: u64,
    plan: Plan,
}

impl Tally {
    pub fn new(plan: &Plan) -> Tally {
        Tally {
            timed: Vec::with_capacity(plan.total() as usize),
            seen: plan.counts.iter().map(|n| vec![0; *n as usize]).collect(),
            strays: 0,
            plan: plan.clone(),
        }
    }

    /// Notes one message as received now.
    pub fn note(&mut self, stamp: Option<Stamp>) {
        let slot = stamp.and_then(|stamp| {
            let slot = self
                .seen
                .get_mut(stamp.p as usize)?
                .get_mut(stamp.s as usize)?;
            Some((stamp, slot))
        });
        let Some((stamp, slot)) = slot else {
            self.strays += 1;
            return;
        };
        *slot = slot.saturating_add(1);
        let now = self.plan.now_us();
        let latency = now.saturating_sub(stamp.t).min(u32::MAX as u64) as u32;
        self.timed.push((stamp.t, latency));
        self.plan.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages of the plan never received.
    pub fn lost(&self) -> u64 {
        self.seen.iter().flatten().filter(|n| **n == 0).count() as u64
    }

    /// Receptions beyond the first.
    pub fn duplicated(&self) -> u64 {
        self.seen
            .iter()
            .flatten()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

/// A WebSocket client connection, as the Ferrite and relay drivers open it.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Tallies the stamps `decode` finds in `socket`'s text frames until
/// `stop` (or the socket ends), and hands the tally over.
pub fn tally_frames(
    mut socket: Socket,
    plan: Plan,
    mut stop: tokio::sync::watch::Receiver<bool>,
    decode: fn(&str) -> Option<Stamp>,
) -> tokio::task::JoinHandle<Tally> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::spawn(async move {
        let mut tally = Tally::new(&plan);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => tally.note(decode(text.as_str())),
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        tally
    })
}

/// Reads a child's standard error until it announces its address after
/// `marker`, then drains the rest in a thread (so the child never blocks
/// on a full pipe).
pub fn listening_addr(
    child: &mut std::process::Child,
    marker: &str,
    who: &str,
) -> anyhow::Result<std::net::SocketAddr> {
    use std::io::{BufRead, BufReader};
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("{who}: stderr is not piped"))?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let Some(line) = lines.next() else {
            anyhow::bail!("{who} exited before listening");
        };
        if let Some(rest) = line?.split(marker).nth(1) {
            break rest.trim().parse()?;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(addr)
}

/// The CPU time process `pid` has used so far, in seconds (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every mainstream Linux build.
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_finds_the_lost_and_the_duplicated() {
        let plan = Plan::new(3, 10, 4, 1, 0);
        assert_eq!(*plan.counts, vec![4, 3, 3]);
        let mut tally = Tally::new(&plan);
        for p in 0..3 {
            for s in 0..plan.counts[p] {
                if (p, s) != (1, 2) {
                    tally.note(Some(plan.stamp(p, s)));
                }
            }
        }
        tally.note(Some(plan.stamp(0, 0)));
        tally.note(Some(plan.stamp(7, 0)));
        tally.note(None);
        assert_eq!(tally.lost(), 1);
        assert_eq!(tally.duplicated(), 1);
        assert_eq!(tally.strays, 2);
        assert_eq!(plan.received.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spent = cpu_seconds(std::process::id()).unwrap();
        assert!(spent >= 0.0);
    }
}
