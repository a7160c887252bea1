//! The `ferrite` command line: `serve`, `migrate`, `schema`, `user …`,
//! `apikey …`.
//!
//! Every verb loads the same configuration as the server (file, `FERRITE_*`,
//! flags), so `ferrite user add` works on the database `ferrite serve` uses.
//! Verbs other than `serve` work on the database directly; the server need
//! not be running.

use std::{
    io::{BufRead, IsTerminal},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::{
    Server, auth,
    config::{Config, Overrides},
    graphql, open_store,
    service::{AccountError, Accounts},
    store::{
        Scope, Store, StoreError,
        entity::{Permission, Role, user},
    },
};

/// Ferrite: a self-hosted IoT platform with one GraphQL endpoint.
///
/// Configuration is read from --config FILE, else ./ferrite.toml, else
/// $XDG_CONFIG_HOME/ferrite/ferrite.toml, else /etc/ferrite/ferrite.toml;
/// FERRITE_* environment variables override the file and flags override both.
#[derive(Debug, Parser)]
#[command(name = "ferrite", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). It must exist when given.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: the SQLite database and the generated JWT secret [default: ./ferrite-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER:PASS@HOST/DB [default: SQLite in the data directory]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Log filter, e.g. `info` or `ferrite_server=debug` [default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: GraphQL (and GraphiQL) on /graphql, health on /healthz and /readyz.
    ///
    /// Applies pending migrations first. On an empty database it creates the
    /// user `admin` with FERRITE_ADMIN_PASSWORD, or a random password that is
    /// printed once.
    Serve {
        /// Address to listen on [default: 0.0.0.0:8080]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// PEM certificate chain: serve HTTPS and WSS (with --tls-key)
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit (refused while a server
    /// runs on the same data directory; `serve` migrates when it starts).
    Migrate,
    /// Print the GraphQL schema (SDL) and exit.
    Schema,
    /// Write a consistent copy of the database to FILE while the server
    /// runs (a SQLite file, checked after writing). Default FILE:
    /// <data_dir>/backups/ferrite-<UTC time>.db
    Backup {
        /// Where to write it; must not exist.
        file: Option<PathBuf>,
    },
    /// Replace the database with a backup (refused while a server runs).
    /// Checks the file first; on SQLite the database it replaces is kept
    /// beside it, on PostgreSQL it is replaced in one transaction. A
    /// SQLite backup restored with --database-url postgres://… moves a
    /// installation to PostgreSQL.
    Restore {
        /// A file written by `ferrite backup`.
        file: PathBuf,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API keys (the secret is printed once, at creation).
    Apikey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. Prints a random password unless --password-stdin is given.
    Add {
        username: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Member)]
        role: RoleArg,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password (ends its login sessions; its sockets close on
    /// every running server). Prints a random one unless --password-stdin
    /// is given.
    Passwd {
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make a user ADMIN or MEMBER (its sockets close and reconnect with
    /// the new role).
    Role {
        username: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Disable a user: no sign-in, no credential works, its sockets close;
    /// its devices, events and keys are kept.
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
    /// Delete a user and everything it owns (devices, events, commands,
    /// keys), for good.
    Delete {
        username: String,
        /// Needed when the user owns devices: they are deleted with it.
        #[arg(long)]
        with_devices: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a user and print its secret (shown only this once).
    Create {
        /// The user the key acts for.
        #[arg(long)]
        user: String,
        /// A name to recognise the key by, e.g. the gateway's.
        #[arg(long)]
        name: String,
        /// read: queries and subscriptions; write: also data mutations; admin: everything.
        #[arg(long, value_enum, default_value_t = PermissionArg::Write)]
        permission: PermissionArg,
    },
    /// List API keys (never their secrets).
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API key by id; it stops working at once.
    Revoke { id: Uuid },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Member,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Member => Role::Member,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PermissionArg {
    Read,
    Write,
    Admin,
}

impl From<PermissionArg> for Permission {
    fn from(permission: PermissionArg) -> Self {
        match permission {
            PermissionArg::Read => Permission::Read,
            PermissionArg::Write => Permission::Write,
            PermissionArg::Admin => Permission::Admin,
        }
    }
}

impl Cli {
    /// The configuration this invocation runs with.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let (listen, tls_cert, tls_key) = match &self.command {
            Command::Serve {
                listen,
                tls_cert,
                tls_key,
            } => (*listen, tls_cert.clone(), tls_key.clone()),
            _ => (None, None, None),
        };
        let overrides = Overrides {
            listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            log: self.log.clone(),
            tls_cert,
            tls_key,
        };
        let (config, _file) = Config::load(self.config.as_deref(), &overrides)?;
        Ok(config)
    }
}

/// Runs a parsed command line with its loaded configuration.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate => {
            // Not under a running server: it migrates when it starts.
            let _lock = crate::lock_data_dir(&config)?;
            open_store(&config).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Backup { file } => backup(file, &config).await,
        Command::Restore { file } => restore(&file, &config).await,
        Command::User { command } => user(command, &config).await,
        Command::Apikey { command } => apikey(command, &config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    if let Some(password) = server.generated_admin_password() {
        // Printed, not logged: logs are kept and shipped; this is shown once.
        println!();
        println!("  Created the first administrator. Keep this password; it is not shown again:");
        println!("    username: {}", crate::FIRST_ADMIN);
        println!("    password: {password}");
        println!();
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        // Either signal starts a graceful shutdown; both are cancel-safe.
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

/// A password from stdin, or a random one that is printed.
fn password_from(stdin: bool) -> anyhow::Result<(String, bool)> {
    if !stdin {
        return Ok((auth::token::random_token(18), true));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("password (then Enter):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    // Checked here too, so a bad one is refused before anything else.
    auth::validate_new_password(&password).map_err(anyhow::Error::msg)?;
    Ok((password, false))
}

async fn user(command: UserCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let hasher = auth::PasswordHasher::new(1);
    let accounts = Accounts::new(&store, &hasher);
    match command {
        UserCommand::Add {
            username,
            role,
            password_stdin,
        } => {
            // Before asking for a password.
            auth::validate_username(&username).map_err(anyhow::Error::msg)?;
            let (password, generated) = password_from(password_stdin)?;
            let user = accounts
                .create_user(&username, password.clone(), role.into())
                .await
                .map_err(refused)?;
            println!(
                "created user {} ({:?}, id {})",
                user.username, user.role, user.id
            );
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            println!("{:<36}  {:<8}  {:<24}  USERNAME", "ID", "ROLE", "CREATED");
            for user in store.list_users().await? {
                println!(
                    "{:<36}  {:<8}  {:<24}  {}",
                    user.id,
                    format!("{:?}", user.role).to_uppercase(),
                    user.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    user.username
                );
            }
        }
        UserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let user = user_named(&store, &username).await?;
            let (password, generated) = password_from(password_stdin)?;
            accounts
                .set_password(user.id, password.clone())
                .await
                .map_err(refused)?;
            println!("password of {username} changed; its sessions are ended");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Role { username, role } => {
            let user = user_named(&store, &username).await?;
            let user = refused_as_conflict(store.set_role(user.id, role.into()).await)?;
            println!(
                "{username} is now {:?}; its sockets reconnect with the new role",
                user.role
            );
        }
        UserCommand::Disable { username } => {
            let user = user_named(&store, &username).await?;
            refused_as_conflict(store.set_disabled(user.id, true).await)?;
            println!("{username} is disabled; its sessions and sockets are ended, its data kept");
        }
        UserCommand::Enable { username } => {
            let user = user_named(&store, &username).await?;
            refused_as_conflict(store.set_disabled(user.id, false).await)?;
            println!("{username} is enabled");
        }
        UserCommand::Delete {
            username,
            with_devices,
        } => {
            let user = user_named(&store, &username).await?;
            let owned = store
                .count_devices(Scope::Owner(user.id), &Default::default())
                .await?;
            if owned > 0 && !with_devices {
                bail!(
                    "{username} owns {owned} devices, which would be deleted with their events \
                     and commands; pass --with-devices to do so, or `ferrite user disable` to keep them"
                );
            }
            let (_, devices) = refused_as_conflict(store.delete_user(user.id).await)?;
            println!(
                "deleted {username} and {} devices with their data",
                devices.len()
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn backup(file: Option<PathBuf>, config: &Config) -> anyhow::Result<()> {
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

async fn restore(file: &Path, config: &Config) -> anyhow::Result<()> {
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

async fn user_named(store: &Store, username: &str) -> anyhow::Result<user::Model> {
    match store.user_by_username(username).await {
        Err(StoreError::NotFound) => bail!("no user named {username}"),
        other => Ok(other?),
    }
}

/// An account action's refusal as the operator reads it: a conflict is
/// its message alone, like [`refused_as_conflict`].
fn refused(err: AccountError) -> anyhow::Error {
    match err {
        AccountError::Store(StoreError::Conflict(msg)) => anyhow::anyhow!("{msg}"),
        other => other.into(),
    }
}

/// A store refusal (a taken username, the last administrator) as the
/// message it carries.
fn refused_as_conflict<T>(result: Result<T, StoreError>) -> anyhow::Result<T> {
    match result {
        Err(StoreError::Conflict(msg)) => bail!("{msg}"),
        other => Ok(other?),
    }
}

async fn apikey(command: ApiKeyCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    // Keys need no password hashing; the hasher is never used.
    let hasher = auth::PasswordHasher::new(1);
    let accounts = Accounts::new(&store, &hasher);
    let find_user = |username: String| {
        let store = store.clone();
        async move {
            match store.user_by_username(&username).await {
                Err(StoreError::NotFound) => bail!("no user named {username}"),
                other => Ok(other?),
            }
        }
    };
    match command {
        ApiKeyCommand::Create {
            user,
            name,
            permission,
        } => {
            let owner = find_user(user).await?;
            // The operator of the machine creates keys as an administrator.
            let created = accounts
                .create_api_key(&owner, Permission::Admin, &name, permission.into())
                .await
                .map_err(refused)?;
            let key = created.key;
            println!(
                "created API key {} ({:?}) for {}",
                key.id, key.permission, owner.username
            );
            println!("secret (shown only now): {}", created.secret);
        }
        ApiKeyCommand::List { user } => {
            let scope = match user {
                Some(username) => Scope::Owner(find_user(username).await?.id),
                None => Scope::All,
            };
            println!(
                "{:<36}  {:<14}  {:<6}  {:<8}  NAME",
                "ID", "PREFIX", "PERM", "STATE"
            );
            for key in store.list_api_keys(scope).await? {
                println!(
                    "{:<36}  {:<14}  {:<6}  {:<8}  {}",
                    key.id,
                    key.prefix,
                    format!("{:?}", key.permission).to_uppercase(),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    key.name
                );
            }
        }
        ApiKeyCommand::Revoke { id } => match accounts.revoke_api_key(id, Scope::All).await {
            Ok(key) => println!("revoked API key {} ({})", key.id, key.name),
            Err(AccountError::Store(StoreError::NotFound)) => bail!("no API key with id {id}"),
            Err(err) => return Err(refused(err)),
        },
    }
    store.close().await;
    Ok(())
}
