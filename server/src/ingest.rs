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
//! (back-pressure); a batch that fails in the database fails every publisher
//! in it, and nothing of it is stored. When every handle is dropped, the
//! writer finishes the jobs still queued and stops.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    bus::{Bus, BusEvent},
    store::{EventJob, NewEvent, Scope, Store, StoreError, StoredEvent},
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

struct Job {
    job: EventJob,
    reply: oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>,
}

/// Handle to the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
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
    pub fn spawn(store: Store, bus: Bus, settings: IngestSettings) -> (Ingest, JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel(settings.queue.max(1));
        let writer = tokio::spawn(write_batches(store, bus, settings, jobs));
        (Ingest { queue }, writer)
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
    mut jobs: mpsc::Receiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
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
        commit(&store, &bus, batch).await;
    }
}

async fn commit(store: &Store, bus: &Bus, batch: Vec<Job>) {
    let (jobs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.job, j.reply)).unzip();
    match store.insert_event_batch(&jobs).await {
        Ok(outcomes) => {
            let mut fresh: Vec<BusEvent> = outcomes
                .iter()
                .flat_map(|outcome| outcome.iter().flatten())
                .filter(|stored| stored.fresh)
                .map(|stored| BusEvent::from(stored.clone()))
                .collect();
            fresh.sort_by_key(|e| e.event.id);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The publisher may have gone away; its events are stored anyway.
                let _ = reply.send(outcome);
            }
            bus.events_committed(fresh);
        }
        Err(err) => {
            tracing::error!(error = %err, cause = ?std::error::Error::source(&err), jobs = jobs.len(), "an ingest batch failed");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Database(sea_orm::DbErr::Custom(
                    "the batch could not be stored".into(),
                ))));
            }
        }
    }
}
