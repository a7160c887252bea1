//! The ingest writer: every publish, from every socket and HTTP request, is
//! written by one task in short batched transactions (group commit).
//!
//! A publisher sends its events with a reply channel over a bounded queue and
//! waits; the writer takes everything queued (up to `batch_events` events,
//! lingering up to `linger` for more), stores it in one transaction, answers
//! each publisher once the transaction has committed, and only then hands the
//! new events to the bus. One writer means SQLite never sees two writers
//! fight over its lock, and events reach the bus in id order.
//!
//! At the limit: when the queue is full, publishers wait for room
//! (back-pressure). A batch that fails in the database is stored again one
//! publish at a time, so only a publish that fails on its own is refused:
//! one publisher's bad input never fails another's events. When every handle is dropped, the
//! writer finishes the jobs still queued and stops.
//!
//! SQLite's write-ahead log starts over from its beginning only after a
//! checkpoint copied all of it with no write in between. Under steady load
//! the background checkpoint never gets there (the writer appends while it
//! copies) and the log grows without bound: 330 MB in 15 s at 10 000
//! events/s, measured. So the writer also finishes checkpoints between two
//! batches when asked ([`Checkpoints`]): after the background one copied the
//! bulk, only the last few pages are left, and the writer pauses for those.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    bus::{Bus, BusEvent},
    metrics::IngestMetrics,
    store::{Checkpoint, EventJob, NewEvent, Scope, Store, StoreError, StoredEvent},
};

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Most events in one transaction.
    pub batch_events: usize,
    /// How long the writer waits for more publishes before committing a batch
    /// that is not full. Zero: commit what has queued up, at once.
    pub linger: Duration,
    /// Publishes that may wait in the queue.
    pub queue: usize,
}

/// Why a publish was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Where a publisher waits for its events' fate.
type Reply = oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>;

struct Job {
    job: EventJob,
    reply: Reply,
}

/// Handle to the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
}

type CheckpointReply = oneshot::Sender<Result<Checkpoint, StoreError>>;

/// Asks the writer to checkpoint SQLite's log between two batches. Holding
/// one does not keep the writer running: it stops with the last [`Ingest`].
#[derive(Clone, Debug)]
pub struct Checkpoints(mpsc::Sender<CheckpointReply>);

impl Checkpoints {
    /// Checkpoints SQLite's log so that it starts over instead of growing:
    /// twice in the background, beside the writer (the first copies the
    /// bulk, tens of milliseconds; the second what the writer appended
    /// meanwhile), then the last few pages between two of the writer's
    /// batches (it pauses 1–4 ms, measured at 10 000 events/s). A no-op on
    /// PostgreSQL and when nothing was written since the log started over.
    pub async fn run(&self, store: &Store) {
        let mut logged = 0;
        for _ in 0..2 {
            match store.checkpoint().await {
                // `complete()` means little here: the writer kept appending
                // after the frames this checkpoint counted.
                Ok(done) => logged = done.logged,
                Err(err) => {
                    tracing::warn!(error = %err, "WAL checkpoint failed");
                    return;
                }
            }
            if logged == 0 {
                return;
            }
        }
        match self.between_batches().await {
            Ok(Some(done)) if !done.complete() => {
                // A reader still uses older pages: the next round finishes.
                tracing::debug!(logged, ?done, "WAL checkpoint left pages behind");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed"),
        }
    }

    /// Checkpoints once the batch being written (if any) has committed,
    /// before the next one starts. `Ok(None)`: the writer has stopped.
    async fn between_batches(&self) -> Result<Option<Checkpoint>, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.0.send(reply).await.is_err() {
            return Ok(None);
        }
        match answer.await {
            Ok(done) => done.map(Some),
            Err(_) => Ok(None),
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("events", &self.job.events.len())
            .finish()
    }
}

impl Ingest {
    /// Starts the writer. It stops once every `Ingest` handle is dropped and
    /// the queue is drained; await the returned handle to know when.
    pub fn spawn(
        store: Store,
        bus: Bus,
        settings: IngestSettings,
        metrics: IngestMetrics,
    ) -> (Ingest, Checkpoints, JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel(settings.queue.max(1));
        let (checkpoints, requests) = mpsc::channel(1);
        let writer = tokio::spawn(write_batches(store, bus, settings, metrics, jobs, requests));
        (Ingest { queue }, Checkpoints(checkpoints), writer)
    }

    /// Stores events (all or none) and returns them once committed.
    pub async fn publish(
        &self,
        scope: Scope,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, IngestError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                job: EventJob { scope, events },
                reply,
            })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(answer.await.map_err(|_| IngestError::ShuttingDown)??)
    }
}

async fn write_batches(
    store: Store,
    bus: Bus,
    settings: IngestSettings,
    metrics: IngestMetrics,
    mut jobs: mpsc::Receiver<Job>,
    mut checkpoints: mpsc::Receiver<CheckpointReply>,
) {
    loop {
        let first = tokio::select! {
            // A checkpoint first: under load there is always a job waiting.
            biased;
            // Cancel-safe; a closed channel disables this branch.
            Some(reply) = checkpoints.recv() => {
                // The asker may have given up; nothing to undo.
                let started = Instant::now();
                let done = store.checkpoint().await;
                tracing::debug!(took = ?started.elapsed(), ?done, "the writer finished a WAL checkpoint");
                let _ = reply.send(done);
                continue;
            }
            // Cancel-safe.
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let mut count = first.job.events.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + settings.linger;
        while count < settings.batch_events {
            let next = match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if settings.linger.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    // More work within the linger: cancel-safe (recv loses nothing).
                    job = jobs.recv() => job,
                    // Linger over: commit what we have.
                    _ = tokio::time::sleep_until(deadline) => None,
                },
            };
            let Some(job) = next else { break };
            count += job.job.events.len();
            batch.push(job);
        }
        commit(&store, &bus, &metrics, batch).await;
    }
}

async fn commit(store: &Store, bus: &Bus, metrics: &IngestMetrics, batch: Vec<Job>) {
    let (jobs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.job, j.reply)).unzip();
    let started = Instant::now();
    let stored = store.insert_event_batch(&jobs).await;
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    match stored {
        Ok(outcomes) => delivered(bus, metrics, replies, outcomes),
        Err(err) if jobs.len() == 1 => failed(replies, &err),
        Err(err) => {
            // One publisher's events must not fail everyone else's: store
            // each publish on its own, so only the one that fails again is
            // refused. Every event was validated before it was queued, so
            // this is rare (a database fault, or an input the checks missed).
            tracing::warn!(error = %err, jobs = jobs.len(), "an ingest batch failed; storing its publishes one by one");
            for (job, reply) in jobs.iter().zip(replies) {
                match store.insert_event_batch(std::slice::from_ref(job)).await {
                    Ok(outcomes) => delivered(bus, metrics, vec![reply], outcomes),
                    Err(err) => failed(vec![reply], &err),
                }
            }
        }
    }
}

/// Answers the publishers of a committed batch, then hands its new events
/// to the bus.
fn delivered(
    bus: &Bus,
    metrics: &IngestMetrics,
    replies: Vec<Reply>,
    outcomes: Vec<Result<Vec<StoredEvent>, StoreError>>,
) {
    let mut fresh: Vec<BusEvent> = outcomes
        .iter()
        .flat_map(|outcome| outcome.iter().flatten())
        .filter(|stored| stored.fresh)
        .map(|stored| BusEvent::from(stored.clone()))
        .collect();
    fresh.sort_by_key(|e| e.event.id);
    metrics.batches.inc();
    metrics.events.inc_by(fresh.len() as u64);
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // The publisher may have gone away; its events are stored anyway.
        let _ = reply.send(outcome);
    }
    bus.events_committed(fresh);
}

/// Fails the publishers of a batch that was not stored.
fn failed(replies: Vec<Reply>, err: &StoreError) {
    tracing::error!(error = %err, cause = ?std::error::Error::source(err), publishes = replies.len(), "storing events failed");
    for reply in replies {
        let _ = reply.send(Err(StoreError::Database(sea_orm::DbErr::Custom(
            "the events could not be stored".into(),
        ))));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };

    use super::*;

    /// Under steady writing, a checkpoint round makes SQLite's log start
    /// over (real SQLite). Before the writer finished checkpoints, the log
    /// only grew while anything was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_let_the_log_start_over_under_steady_writing() {
        let (_dir, store) = Store::temporary().await;
        let (owner, device) = store.member_with_device("owner").await;
        let settings = IngestSettings {
            batch_events: 1000,
            linger: Duration::ZERO,
            queue: 64,
        };
        let (ingest, checkpoints, writer) = Ingest::spawn(
            store.clone(),
            Bus::new(16, Default::default()),
            settings,
            IngestMetrics::default(),
        );

        // One publisher, never pausing until its budget of commits is
        // spent: there is always a batch being written.
        let (stop, commits) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let publisher = tokio::spawn({
            let (stop, commits, budget) = (stop.clone(), commits.clone(), budget.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if commits.load(Ordering::Relaxed) >= budget.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let events = (0..10)
                        .map(|n| NewEvent {
                            device_id: device,
                            service: "power".into(),
                            payload: serde_json::json!({"watts": n}),
                            occurred_at: None,
                            idempotency_key: None,
                        })
                        .collect();
                    ingest.publish(Scope::Owner(owner), events).await.unwrap();
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let until_commits = |target: u64| {
            let commits = commits.clone();
            async move {
                while commits.load(Ordering::Relaxed) < target {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };

        // A log of some size, checkpointed in the background only: it keeps
        // growing (the writer appends while the checkpoint copies).
        let mut grown = 0;
        while grown < 2000 {
            until_commits(commits.load(Ordering::Relaxed) + 20).await;
            grown = store.checkpoint().await.unwrap().logged;
        }

        // A full round while the writer is busy; then five more commits at
        // most: the log started over at the first, and holds only those.
        checkpoints.run(&store).await;
        let target = commits.load(Ordering::Relaxed) + 5;
        budget.store(target, Ordering::Relaxed);
        until_commits(target).await;
        let restarted = store.checkpoint().await.unwrap().logged;
        assert!(
            restarted < grown / 2,
            "after a round the log should have started over: {grown} -> {restarted} frames"
        );

        stop.store(true, Ordering::Relaxed);
        publisher.await.unwrap();
        writer.await.unwrap();
    }
}
