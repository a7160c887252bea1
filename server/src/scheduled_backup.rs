//! Scheduled backups: the running server writes a `ferrite backup` file
//! into `backup.dir` every `backup.every_seconds`, keeps the newest
//! `backup.keep`, and counts successes and failures in `/metrics`.
//!
//! The schedule survives restarts: the next backup is due `every_seconds`
//! after the newest one in the directory (at once if that is past), not
//! after the start. A failure is logged with its reason and retried after
//! a tenth of the interval (at least a minute, at most an hour), so a full
//! disk does not go unnoticed until the next day.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    metrics::BackupMetrics,
    stopped,
    store::{self, Store},
};

/// Starts the schedule (nothing when `every` is zero).
pub fn spawn(
    store: Store,
    dir: PathBuf,
    every: Duration,
    keep: usize,
    metrics: BackupMetrics,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        if let Err(err) = std::fs::create_dir_all(&dir) {
            tracing::error!(error = %err, dir = %dir.display(), "cannot create the backup directory");
        }
        let retry = (every / 10)
            .clamp(Duration::from_secs(60), Duration::from_secs(3600))
            .min(every);
        let mut wait = until_due(&dir, every);
        loop {
            tokio::select! {
                // Shutdown: cancel-safe.
                _ = stopped(&mut stop) => break,
                // Due. Cancel-safe: nothing started yet.
                _ = tokio::time::sleep(wait) => {}
            }
            let file = store::backup_file_in(&dir);
            let started = std::time::Instant::now();
            match store::write_backup(&store, &file).await {
                Ok(summary) => {
                    metrics.taken.inc();
                    metrics.last_success.set(chrono::Utc::now().timestamp());
                    tracing::info!(file = %file.display(), events = summary.events, seconds = started.elapsed().as_secs_f64(), "scheduled backup written");
                    prune(&dir, keep);
                    wait = every;
                }
                Err(err) => {
                    metrics.failed.inc();
                    tracing::error!(error = %err, file = %file.display(), "the scheduled backup failed; retrying in {} s", retry.as_secs());
                    wait = retry;
                }
            }
        }
    }))
}

/// The scheduled backups in `dir`, oldest first.
fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(store::BACKUP_PREFIX) && n.ends_with(store::BACKUP_SUFFIX)
            })
        })
        .collect();
    found.sort();
    found
}

/// How long until the next backup is due: `every` after the newest one.
fn until_due(dir: &Path, every: Duration) -> Duration {
    let newest = backups(dir)
        .last()
        .and_then(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
    match newest {
        Some(at) => (at + every)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        None => every,
    }
}

/// Deletes all but the newest `keep` scheduled backups.
fn prune(dir: &Path, keep: usize) {
    let found = backups(dir);
    let excess = found.len().saturating_sub(keep);
    for old in &found[..excess] {
        match std::fs::remove_file(old) {
            Ok(()) => tracing::info!(file = %old.display(), "deleted an old scheduled backup"),
            Err(err) => {
                tracing::warn!(error = %err, file = %old.display(), "cannot delete an old backup")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_are_kept_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["20261201T000000Z", "20261202T000000Z", "20261203T000000Z"] {
            std::fs::write(dir.path().join(format!("ferrite-{stamp}.db")), b"x").unwrap();
        }
        std::fs::write(dir.path().join("nightly-by-hand.db"), b"x").unwrap();
        std::fs::write(dir.path().join("ferrite-20261204T000000Z.partial"), b"x").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "ferrite-20261202T000000Z.db",
                "ferrite-20261203T000000Z.db",
                "ferrite-20261204T000000Z.partial",
                "nightly-by-hand.db"
            ]
        );
    }

    #[test]
    fn the_schedule_continues_from_the_newest_backup() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(until_due(dir.path(), hour), hour);
        std::fs::write(dir.path().join("ferrite-20261203T000000Z.db"), b"x").unwrap();
        let due = until_due(dir.path(), hour);
        assert!(
            due <= hour && due > hour - Duration::from_secs(60),
            "{due:?}"
        );
        // Long past: due at once.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("ferrite-20261203T000000Z.db"))
            .unwrap();
        file.set_modified(SystemTime::now() - 2 * hour).unwrap();
        assert_eq!(until_due(dir.path(), hour), Duration::ZERO);
    }
}
