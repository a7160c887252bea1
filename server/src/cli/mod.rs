//! The `ferrite` command line: `serve`, `migrate`, `schema`, `backup`,
//! `restore` (in `backup`), `user …`, `apikey …` (in `accounts`).
//!
//! Every verb loads the same configuration as the server (file, `FERRITE_*`,
//! flags), so `ferrite user add` works on the database `ferrite serve` uses.
//! Verbs other than `serve` work on the database directly; the server need
//! not be running.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

/// `ferrite user …` and `ferrite apikey …`.
mod accounts;
/// `ferrite backup` and `ferrite restore`.
mod backup;

use crate::{
    Server,
    config::{Config, Overrides},
    graphql, open_store,
    store::entity::{Permission, Role},
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
        Command::Backup { file } => backup::backup(file, &config).await,
        Command::Restore { file } => backup::restore(&file, &config).await,
        Command::User { command } => accounts::user(command, &config).await,
        Command::Apikey { command } => accounts::apikey(command, &config).await,
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
