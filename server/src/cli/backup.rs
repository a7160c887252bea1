//! `ferrite backup` and `ferrite restore`: a consistent copy of the
//! database taken while the server runs, and putting one back while it
//! does not (see the README's "Backups").

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::{config::Config, open_store, store::Scope};

pub(super) async fn backup(file: Option<PathBuf>, config: &Config) -> anyhow::Result<()> {
    let file = match file {
        Some(file) => file,
        None => {
            let dir = config.backup_dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            crate::store::backup_file_in(&dir)
        }
    };
    let store = open_store(config).await?;
    let started = std::time::Instant::now();
    eprintln!("backing up to {} …", file.display());
    // A progress line for large databases: what is written so far, against
    // the size of the SQLite file being copied (PostgreSQL: unknown).
    let source_bytes = config
        .sqlite_path()
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| m.len());
    let partial = crate::store::partial_path(&file);
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        tick.tick().await;
        loop {
            tick.tick().await;
            let written = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            match source_bytes {
                Some(total) => eprintln!(
                    "  {:.0} MB of about {:.0} MB written",
                    written as f64 / 1e6,
                    total as f64 / 1e6
                ),
                None => eprintln!("  {:.0} MB written", written as f64 / 1e6),
            }
        }
    });
    let written = crate::store::write_backup(&store, &file).await;
    progress.abort();
    store.close().await;
    let summary = written?;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "backed up to {} ({:.1} MB in {:.1} s, checked): {} users, {} API keys, {} devices, {} events, {} commands; schema {}",
        file.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        summary.users,
        summary.api_keys,
        summary.devices,
        summary.events,
        summary.commands,
        summary.schema
    );
    Ok(())
}

pub(super) async fn restore(file: &Path, config: &Config) -> anyhow::Result<()> {
    use crate::store::inspect_backup;
    // Not under a server on this data directory or database file
    // (PostgreSQL: on any node, checked below).
    let _lock = crate::lock_data_dir(config)?;
    let summary = inspect_backup(file).await?;
    eprintln!(
        "{} checks out: {} users, {} devices, {} events; schema {}",
        file.display(),
        summary.users,
        summary.devices,
        summary.events,
        summary.schema
    );
    let started = std::time::Instant::now();
    let kept = if config.uses_sqlite() {
        restore_sqlite_file(file, config).await?
    } else {
        restore_into_postgres(file, config).await?;
        None
    };
    // What is there now is what the backup held.
    let store = open_store(config).await?;
    let events = store.count_events(Scope::All, &Default::default()).await?;
    let users = store.count_users().await?;
    store.close().await;
    if events != summary.events as u64 || users != summary.users as u64 {
        bail!(
            "the restored database holds {users} users and {events} events, not what the backup holds; look at it before starting a server"
        );
    }
    println!(
        "restored {} in {:.1} s: {} users, {} devices, {} events",
        file.display(),
        started.elapsed().as_secs_f64(),
        summary.users,
        summary.devices,
        summary.events
    );
    if let Some(kept) = kept {
        println!("the database it replaced is kept as {}", kept.display());
    }
    Ok(())
}

/// SQLite: the backup file becomes the database (migrated forward if it is
/// older); the files it replaces are moved aside first, and back if
/// anything fails. Returns where they were kept.
async fn restore_sqlite_file(file: &Path, config: &Config) -> anyhow::Result<Option<PathBuf>> {
    let target = config
        .sqlite_path()
        .context("the database URL names no SQLite file")?;
    let stamp = crate::store::file_stamp();
    let mut moved = Vec::new();
    for path in crate::store::sqlite_files(&target).filter(|path| path.exists()) {
        let aside = PathBuf::from(format!("{}.before-restore-{stamp}", path.display()));
        std::fs::rename(&path, &aside)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        moved.push((path, aside));
    }
    let put_back = |moved: &[(PathBuf, PathBuf)]| {
        let _ = std::fs::remove_file(&target);
        for (path, aside) in moved {
            let _ = std::fs::rename(aside, path);
        }
    };
    let copied = (|| {
        let partial = target.with_extension("restoring");
        std::fs::copy(file, &partial)?;
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &target)
    })();
    if let Err(err) = copied {
        put_back(&moved);
        bail!(
            "cannot copy {} to {}: {err}; nothing was changed",
            file.display(),
            target.display()
        );
    }
    // Opening migrates an older backup forward.
    match open_store(config).await {
        Ok(store) => store.close().await,
        Err(err) => {
            put_back(&moved);
            bail!("the restored database does not open ({err}); the previous one is back in place");
        }
    }
    Ok(moved.first().map(|(_, aside)| aside.clone()))
}

/// PostgreSQL: refused while any node runs on the database; the backup is
/// brought to this version's schema in a temporary copy, then its rows
/// replace the database's in one transaction.
async fn restore_into_postgres(file: &Path, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let live = store.live_nodes(chrono::Duration::seconds(60)).await?;
    if live > 0 {
        store.close().await;
        bail!("{live} server node(s) ran on this database within the last minute; stop them first");
    }
    // A scratch copy in the data directory, removed when done.
    let copy = config
        .data_dir
        .join(format!("restore-{}.db", std::process::id()));
    let _scratch = RemoveOnDrop(copy.clone());
    std::fs::copy(file, &copy).with_context(|| format!("cannot copy {}", file.display()))?;
    let migrated =
        crate::store::Store::connect(&format!("sqlite://{}", copy.display()), &Default::default())
            .await?;
    migrated.migrate().await?;
    migrated.close().await;
    let last = std::sync::Mutex::new(std::time::Instant::now());
    let progress = |table: &str, rows: u64| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= std::time::Duration::from_secs(1) {
            eprintln!("  {table}: {rows} rows");
            *last = std::time::Instant::now();
        }
    };
    let result = store.restore_rows_from(&copy, &progress).await;
    store.close().await;
    result.context("the restore failed; the database is as it was")?;
    Ok(())
}

/// Removes a scratch SQLite database (and its companions) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        crate::store::remove_sqlite_files(&self.0);
    }
}
