//! Ferrite: a self-hosted IoT platform with one GraphQL endpoint.
//!
//! This crate is the server; the `ferrite` binary (`main.rs`) only parses
//! flags and calls [`cli::run`]. Tests drive [`Server`] directly.
//!
//! # Layout
//! A request flows from the edge inwards; what it commits flows back out
//! to live subscribers:
//!
//! ```text
//! http (axum; ws: the sockets) ──► graphql (resolvers) ──► auth (who may do what)
//!                                       ├──► ingest (group commit) ──► store (SeaORM)
//!                                       ├──► store (everything else)
//!                                       └──► bus (rings; postgres: LISTEN/NOTIFY)
//!                                              └──► graphql::live ──► the sockets
//! presence: ONLINE/OFFLINE by connector session, through store and bus
//! ```
//!
//! Resolvers change state through `service`, which commits to the store
//! and publishes on the bus together (`service::accounts`: users,
//! passwords and keys, whose changes reach sockets through the store's
//! revocation notes; the CLI calls it too). The lossless live streams
//! (events, device changes, command delivery) live in `bus`. Around them:
//! `config`, `cli`, `lock` (one server per data directory), `metrics`,
//! `scheduled_backup`.
//!
//! [`Server::start`] loads nothing itself: it takes a validated
//! [`config::Config`], opens and migrates the database, prepares the JWT
//! secret, creates the first administrator on an empty database and binds
//! the listener. [`Server::run`] serves until its shutdown future resolves.

/// Passwords, tokens, API keys, principals and permissions.
pub mod auth;
/// Fan-out of committed events to live subscribers.
pub mod bus;
/// The `ferrite` command line.
pub mod cli;
/// Configuration from file, environment and flags.
pub mod config;
/// The GraphQL schema and resolvers.
pub mod graphql;
/// The axum router: `/graphql`, GraphiQL, health, metrics.
pub mod http;
/// The group-commit writer of events.
pub mod ingest;
/// One server per data directory.
pub mod lock;
/// `/metrics`: counters and gauges in the Prometheus text format.
pub mod metrics;
/// Which devices are online, keyed by connector session.
pub mod presence;
/// Backups the running server takes on a schedule.
pub mod scheduled_backup;
/// Actions that commit to the store and tell live subscribers together;
/// users, passwords and API keys.
pub mod service;
/// SeaORM entities and every query.
pub mod store;

/// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[doc(hidden)]
pub mod fuzzing;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    auth::{Auth, AuthSettings},
    bus::Bus,
    config::Config,
    ingest::Ingest,
    presence::Presence,
    store::{Store, StoreError, StoreOptions, entity::Role},
};

/// The shared state every request sees: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub auth: Auth,
    pub bus: Bus,
    pub ingest: Ingest,
    pub presence: Presence,
    pub config: Arc<Config>,
    pub metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// The actions that change devices, commands and users (see [`service`]).
    pub fn service(&self) -> service::Service<'_> {
        service::Service::new(&self.store, &self.bus)
    }

    /// The actions on users, passwords and API keys (see
    /// [`service::accounts`]).
    pub fn accounts(&self) -> service::Accounts<'_> {
        service::Accounts::new(&self.store, self.auth.hasher())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot open the database: {0}")]
    Database(#[source] StoreError),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] StoreError),
    #[error("cannot read or create the JWT secret {path}: {source}")]
    Secret { path: PathBuf, source: io::Error },
    #[error("cannot create the first administrator: {0}")]
    Bootstrap(#[source] StoreError),
    #[error("cannot hash the first administrator's password: {0}")]
    Password(#[source] auth::AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
}

/// How long shutdown waits for WebSocket connections to send their close
/// frames.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The user created on the first start.
pub const FIRST_ADMIN: &str = "admin";

/// A server that has opened its database and bound its port.
pub struct Server {
    state: AppState,
    listener: TcpListener,
    generated_admin_password: Option<String>,
    ingest_writer: JoinHandle<()>,
    /// Finishes SQLite checkpoints between the writer's batches.
    checkpoints: ingest::Checkpoints,
    /// On PostgreSQL: the fan-out between nodes, started by `run`.
    relay: Option<bus::postgres::Relay>,
    /// Held until the server has stopped: one server per data directory.
    data_dir_lock: Vec<lock::DataDirLock>,
    /// HTTPS and WSS, when `tls_cert` and `tls_key` are set.
    tls: Option<http::tls::Tls>,
}

/// Creates the data directory if needed and takes its lock: a second
/// server (or `ferrite migrate`, `ferrite restore`) on the same directory
/// is refused. A SQLite database kept outside the data directory has its
/// directory locked too, so no two servers share one database file
/// whatever data directories they were given.
pub fn lock_data_dir(config: &Config) -> Result<Vec<lock::DataDirLock>, StartError> {
    create_private_dir(&config.data_dir)?;
    let mut locks = vec![lock::DataDirLock::acquire(&config.data_dir)?];
    let database_dir = config
        .sqlite_path()
        .and_then(|path| path.parent().map(Path::to_owned))
        .filter(|dir| dir.is_dir());
    if let Some(dir) = database_dir {
        let same = match (dir.canonicalize(), config.data_dir.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            locks.push(lock::DataDirLock::acquire(&dir)?);
        }
    }
    Ok(locks)
}

/// Opens and migrates the database the configuration names, creating the
/// data directory for SQLite.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    if config.uses_sqlite() {
        create_private_dir(&config.data_dir)?;
    }
    let options = StoreOptions {
        max_connections: config.database_max_connections,
        ..StoreOptions::default()
    };
    let store = Store::connect(&config.effective_database_url(), &options)
        .await
        .map_err(StartError::Database)?;
    store.migrate().await.map_err(StartError::Migrate)?;
    Ok(store)
}

impl Server {
    /// Prepares everything, binds the listener, and returns without serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let data_dir_lock = lock_data_dir(&config)?;
        // Checked before anything else is opened: a bad file is the
        // operator's to fix, and says which.
        let tls = config.tls_files().map(http::tls::Tls::load).transpose()?;
        let store = open_store(&config).await?;
        let secret = match &config.jwt_secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => load_or_create_jwt_secret(&config.data_dir)?,
        };
        let metrics = Arc::new(metrics::Metrics::new());
        let auth = Auth::new(
            store.clone(),
            &secret,
            &AuthSettings {
                access_token_ttl: config.access_token_ttl(),
                refresh_token_ttl: config.refresh_token_ttl(),
                parallel_hashes: config.limits.parallel_password_hashes,
                login_attempts: config.limits.login_attempts,
                login_address_attempts: config.limits.login_attempts_per_address,
                login_window: Duration::from_secs(config.limits.login_window_seconds),
            },
            metrics.logins.clone(),
        );
        let generated_admin_password = bootstrap_admin(&store, &auth, &config).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let node_id = uuid::Uuid::new_v4();
        let catch_ups = metrics.catch_ups.clone();
        let (bus, relay) = if store.backend() == sea_orm::DbBackend::Postgres {
            let (bus, relay) = Bus::relayed(
                config.bus.capacity,
                catch_ups,
                node_id,
                &config.effective_database_url(),
            );
            (bus, Some(relay))
        } else {
            (Bus::new(config.bus.capacity, catch_ups), None)
        };
        let presence = Presence::start(node_id, store.clone(), bus.clone())
            .await
            .map_err(StartError::Database)?;
        let (ingest, checkpoints, ingest_writer) = Ingest::spawn(
            store.clone(),
            bus.clone(),
            config.ingest_settings(),
            metrics.ingest.clone(),
        );
        Ok(Server {
            state: AppState {
                store,
                auth,
                bus,
                ingest,
                presence,
                config: Arc::new(config),
                metrics,
            },
            listener,
            generated_admin_password,
            ingest_writer,
            checkpoints,
            relay,
            data_dir_lock,
            tls,
        })
    }

    /// Where the server listens (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("BUG: a bound listener has an address")
    }

    /// The password of `admin` when this start created it with a random one.
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.generated_admin_password.as_deref()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish,
    /// commits what the ingest writer still holds, and stops the background
    /// tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let addr = self.local_addr();
        let Server {
            state,
            listener,
            ingest_writer,
            checkpoints,
            relay,
            data_dir_lock,
            tls,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let sweeper = spawn_housekeeping(
            state.store.clone(),
            state.bus.clone(),
            checkpoints,
            state.config.retention.clone(),
            stop_rx.clone(),
        );
        let heartbeat = state.presence.clone().spawn(stop_rx.clone());
        let revocations =
            bus::revocations::spawn(state.store.clone(), state.bus.clone(), stop_rx.clone());
        let tls_reloader = http::tls::spawn_reloader(tls.clone(), stop_rx.clone());
        let backups = scheduled_backup::spawn(
            state.store.clone(),
            state.config.backup_dir(),
            Duration::from_secs(state.config.backup.every_seconds),
            state.config.backup.keep,
            state.metrics.backups.clone(),
            stop_rx.clone(),
        );
        let relay =
            relay.map(|relay| relay.spawn(state.store.clone(), state.bus.clone(), stop_rx.clone()));
        let store = state.store.clone();
        let schema = graphql::schema(state.clone());
        let (open_sockets, mut sockets_closed) = mpsc::channel::<()>(1);
        let http_settings = state.config.http.clone();
        let app = http::router(
            state,
            schema,
            http::SocketShutdown {
                shutdown: stop_rx.clone(),
                open_sockets,
            },
        );
        // One signal for everything: the caller's future flips `stop`, which
        // stops accepting, closes sockets and ends the background tasks.
        tokio::spawn(async move {
            shutdown.await;
            notify_systemd(sd_notify::NotifyState::Stopping);
            let _ = stop_tx.send(true);
        });
        if let Some(tls) = &tls {
            tracing::info!(cert = %tls.cert_path().display(), "serving HTTPS and WSS");
        }
        tracing::info!(%addr, "ferrite is listening");
        // Under systemd (`Type=notify`): migrated, bound, serving. A no-op
        // without NOTIFY_SOCKET.
        notify_systemd(sd_notify::NotifyState::Ready);
        let acceptor = tls.map(|tls| tls.acceptor);
        http::serve::serve(listener, app, &http_settings, acceptor, stop_rx).await;
        // Sockets send their close frames and drop their handles.
        if tokio::time::timeout(SOCKET_CLOSE_GRACE, sockets_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("some WebSocket connections did not close in time");
        }
        // The router (and with it every state handle) is gone: the ingest
        // queue closes, and the writer commits what is left and stops.
        if let Err(err) = ingest_writer.await {
            tracing::error!(error = %err, "the ingest writer failed");
        }
        let _ = sweeper.await;
        let _ = heartbeat.await;
        let _ = revocations.await;
        let _ = tls_reloader.await;
        if let Some(backups) = backups {
            // A backup in progress finishes first: it is never left half-written.
            let _ = backups.await;
        }
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        store.close().await;
        drop(data_dir_lock);
        tracing::info!("ferrite stopped");
        Ok(())
    }
}

/// How long deleted devices are remembered for `deviceChanged` subscribers
/// that fell behind, and how often older ones are forgotten.
const TOMBSTONE_AGE: chrono::Duration = chrono::Duration::days(1);
const TOMBSTONE_SWEEP_SECONDS: u64 = 600;
/// How long revocation notices are kept (every node reads them within
/// seconds; the revocation itself is in the key's or user's row).
const REVOCATION_AGE: chrono::Duration = chrono::Duration::hours(1);

/// Housekeeping, every second: marks commands EXPIRED once their deadline
/// passes and checkpoints the SQLite write-ahead log; every
/// `retention.check_seconds`, deletes events older than
/// `retention.max_age_seconds` (if set); every ten minutes, forgets device
/// deletions older than a day and revocation notices older than an hour.
fn spawn_housekeeping(
    store: Store,
    bus: Bus,
    checkpoints: ingest::Checkpoints,
    retention: config::RetentionConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seconds: u64 = 0;
        loop {
            tokio::select! {
                // Shutdown: cancel-safe, nothing is in flight between ticks.
                _ = stopped(&mut stop) => break,
                // Next sweep: cancel-safe.
                _ = tick.tick() => {
                    match store.expire_commands().await {
                        Ok(expired) => {
                            for command in expired {
                                bus.publish_command(command);
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "expiring commands failed"),
                    }
                    checkpoints.run(&store).await;
                    seconds += 1;
                    if seconds.is_multiple_of(TOMBSTONE_SWEEP_SECONDS) {
                        let cutoff = store::now() - TOMBSTONE_AGE;
                        if let Err(err) = store.prune_device_tombstones(cutoff).await {
                            tracing::warn!(error = %err, "forgetting old device deletions failed");
                        }
                        let cutoff = store::now() - REVOCATION_AGE;
                        if let Err(err) = store.prune_revocations(cutoff).await {
                            tracing::warn!(error = %err, "forgetting old revocation notices failed");
                        }
                    }
                    if retention.max_age_seconds > 0 && seconds.is_multiple_of(retention.check_seconds) {
                        prune(&store, retention.max_age_seconds).await;
                    }
                }
            }
        }
    })
}

/// Deletes events, and device status changes, older than `max_age_seconds`
/// (events a chunk at a time).
async fn prune(store: &Store, max_age_seconds: u64) {
    const CHUNK: u64 = 10_000;
    let Ok(age) = chrono::Duration::from_std(Duration::from_secs(max_age_seconds)) else {
        return;
    };
    let cutoff = store::now() - age;
    if let Err(err) = store.prune_status_changes(cutoff).await {
        tracing::warn!(error = %err, "retention of device status changes failed");
    }
    loop {
        match store.prune_events(cutoff, CHUNK).await {
            Ok(deleted) if deleted >= CHUNK => continue,
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(deleted, "retention deleted old events");
                }
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, "retention failed");
                break;
            }
        }
    }
}

/// Tells systemd about a change of state, if it is listening.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(err) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Creates `dir` (and parents) if missing, owner-only on Unix.
fn create_private_dir(dir: &Path) -> Result<(), StartError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StartError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

/// Reads `<data_dir>/jwt-secret`, creating it (owner-only) with 64 random
/// bytes on the first start.
fn load_or_create_jwt_secret(data_dir: &Path) -> Result<Vec<u8>, StartError> {
    use std::io::Write;
    create_private_dir(data_dir)?;
    let path = data_dir.join("jwt-secret");
    let err = |source| StartError::Secret {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file holds fewer than 32 bytes",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let secret = auth::token::random_token(64);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(err)?;
    file.write_all(secret.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "generated a new JWT signing secret");
    Ok(secret.into_bytes())
}

/// On an empty database, creates `admin` with the configured password or a
/// random one, which is returned so the caller can show it once.
async fn bootstrap_admin(
    store: &Store,
    auth: &Auth,
    config: &Config,
) -> Result<Option<String>, StartError> {
    if store.count_users().await.map_err(StartError::Bootstrap)? > 0 {
        return Ok(None);
    }
    let (password, generated) = match &config.admin_password {
        Some(password) => (password.expose().to_owned(), false),
        None => (auth::token::random_token(18), true),
    };
    let hash = auth
        .hasher()
        .hash(password.clone())
        .await
        .map_err(StartError::Password)?;
    match store.create_user(FIRST_ADMIN, hash, Role::Admin).await {
        Ok(_) => {
            tracing::info!(username = FIRST_ADMIN, "created the first administrator");
            Ok(generated.then_some(password))
        }
        // Another node sharing the database got there first.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(err) => Err(StartError::Bootstrap(err)),
    }
}
