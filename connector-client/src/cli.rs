//! The `ferrite-connector` command line: `run` a simulated gateway from
//! `connector.toml`, or one-shot verbs for scripts (`register`, `event`,
//! `listen`, `check`).
//!
//! Exit codes: 0 done; 1 failed (the server refused, the outbox is in use…);
//! 2 bad configuration or usage; 75 (EX_TEMPFAIL) an event was queued in the
//! outbox but the server did not confirm it in time (it is sent by the next
//! run that uses the same outbox).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{
    Connector, DeviceSpec, Error, Event,
    config::{ConnectorConfig, Rotation},
    simulate,
};

/// Exit code of an event queued but not confirmed (sysexits EX_TEMPFAIL).
pub const EXIT_NOT_ACKNOWLEDGED: u8 = 75;

#[derive(Debug, Parser)]
#[command(
    name = "ferrite-connector",
    version,
    about = "A Ferrite gateway: simulated devices, or one-shot verbs for scripts"
)]
struct Cli {
    /// The configuration file. Default: ./connector.toml when it exists;
    /// without a file, FERRITE_CONNECTOR_* variables configure everything.
    #[arg(long, short, global = true, env = "FERRITE_CONNECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Use this outbox file instead of the configured one (e.g. for a
    /// one-shot verb next to a running gateway, which holds its own).
    #[arg(long, global = true)]
    outbox: Option<PathBuf>,
    /// Log filter, overriding log.level.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Runs the gateway: registers the file's [[device]]s, simulates them
    /// and answers their commands, until Ctrl-C.
    Run,
    /// Registers (or updates) a device and prints it as JSON.
    Register {
        /// The device's external id.
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "type")]
        device_type: Option<String>,
        #[arg(long)]
        location: Option<String>,
        /// A JSON object.
        #[arg(long)]
        attributes: Option<String>,
    },
    /// Publishes one event, waits until the server committed it, and prints
    /// the acknowledgement as JSON. An unknown device is registered first.
    Event {
        /// The device's external id.
        device: String,
        /// What happened, e.g. temperature.
        service: String,
        /// The payload, as JSON (e.g. '{"celsius": 21.5}').
        payload: String,
        /// When it happened (RFC 3339), by the device's clock.
        #[arg(long)]
        occurred_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Your idempotency key (default: a fresh one).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Hosts devices and prints their commands as JSON lines.
    Listen {
        /// External ids of devices to host (besides those the outbox
        /// already manages).
        devices: Vec<String>,
        /// Answer each command: ok (SUCCEEDED) or fail (FAILED). Default:
        /// leave them unanswered.
        #[arg(long)]
        answer: Option<Answer>,
        /// Stop after this many commands.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Checks the configuration and prints it (without the API key).
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Answer {
    Ok,
    Fail,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("ferrite-connector: {message}");
            return ExitCode::from(2);
        }
    };
    let _guard = match init_logging(&config, cli.log.as_deref()) {
        Ok(guard) => guard,
        Err(message) => {
            eprintln!("ferrite-connector: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(run(cli.command, config))
}

fn load(cli: &Cli) -> Result<ConnectorConfig, String> {
    let file = cli.config.clone().or_else(|| {
        let default = PathBuf::from("connector.toml");
        default.is_file().then_some(default)
    });
    let mut config = ConnectorConfig::load(file.as_deref()).map_err(|err| err.to_string())?;
    if let Some(outbox) = &cli.outbox {
        config.outbox.path = outbox.clone();
        config.options().map_err(|err| err.to_string())?;
    }
    Ok(config)
}

/// Standard error, plus rotating files when `log.directory` is set. The
/// guard flushes the file writer when dropped.
fn init_logging(
    config: &ConnectorConfig,
    level: Option<&str>,
) -> Result<Option<WorkerGuard>, String> {
    let level = level.unwrap_or(&config.log.level);
    let filter = |level: &str| {
        EnvFilter::try_new(level).map_err(|err| format!("log level {level:?}: {err}"))
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter(level)?);
    if config.log.directory.as_os_str().is_empty() {
        tracing_subscriber::registry().with(stderr).init();
        return Ok(None);
    }
    let rotation = match config.log.rotation {
        Rotation::Minutely => tracing_appender::rolling::Rotation::MINUTELY,
        Rotation::Hourly => tracing_appender::rolling::Rotation::HOURLY,
        Rotation::Daily => tracing_appender::rolling::Rotation::DAILY,
        Rotation::Never => tracing_appender::rolling::Rotation::NEVER,
    };
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(rotation)
        .filename_prefix("ferrite-connector")
        .filename_suffix("log")
        .max_log_files(config.log.max_files)
        .build(&config.log.directory)
        .map_err(|err| format!("log.directory {}: {err}", config.log.directory.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer)
        .with_filter(filter(level)?);
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
    Ok(Some(guard))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("BUG: output values serialise")
    );
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("ferrite-connector: {error}");
    match error {
        Error::InvalidInput(_) | Error::InvalidOption { .. } => ExitCode::from(2),
        Error::NotAcknowledged(_) => ExitCode::from(EXIT_NOT_ACKNOWLEDGED),
        _ => ExitCode::FAILURE,
    }
}

async fn run(verb: Verb, config: ConnectorConfig) -> ExitCode {
    if let Verb::Check = verb {
        print_json(&json!({
            "url": config.options().map(|o| o.url().to_owned()).unwrap_or_default(),
            "connectorId": config.connector_id,
            "outbox": config.outbox,
            "timeouts": config.timeouts,
            "limits": config.limits,
            "log": config.log,
            "devices": config.devices,
        }));
        return ExitCode::SUCCESS;
    }
    if let Verb::Run = verb
        && config.devices.is_empty()
    {
        eprintln!(
            "ferrite-connector: the configuration has no [[device]] to simulate (see connector.example.toml)"
        );
        return ExitCode::from(2);
    }
    let options = config
        .options()
        .expect("BUG: the configuration was validated when loaded");
    let connector = match Connector::start(options).await {
        Ok(connector) => connector,
        Err(error) => return fail(&error),
    };
    let outcome = match verb {
        Verb::Run => simulate::run(connector.clone(), config.devices, shutdown_signal())
            .await
            .map(|()| ExitCode::SUCCESS),
        Verb::Register {
            id,
            name,
            device_type,
            location,
            attributes,
        } => register(&connector, id, name, device_type, location, attributes).await,
        Verb::Event {
            device,
            service,
            payload,
            occurred_at,
            idempotency_key,
        } => {
            event(
                &connector,
                device,
                service,
                payload,
                occurred_at,
                idempotency_key,
            )
            .await
        }
        Verb::Listen {
            devices,
            answer,
            count,
        } => listen(&connector, devices, answer, count).await,
        Verb::Check => unreachable!("BUG: handled above"),
    };
    let stopped = connector.shutdown().await;
    match (outcome, stopped) {
        (Ok(code), Ok(())) => code,
        (Err(error), _) | (Ok(_), Err(error)) => fail(&error),
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, Error> {
    serde_json::from_str(text)
        .map_err(|err| Error::InvalidInput(format!("{what} is not JSON ({err}): {text}")))
}

async fn register(
    connector: &Connector,
    id: String,
    name: Option<String>,
    device_type: Option<String>,
    location: Option<String>,
    attributes: Option<String>,
) -> Result<ExitCode, Error> {
    let mut spec = DeviceSpec::new(id);
    spec.name = name;
    spec.device_type = device_type;
    spec.location = location;
    spec.attributes = attributes
        .map(|text| parse_json("--attributes", &text))
        .transpose()?;
    let device = connector.register(spec).await?;
    print_json(&device);
    Ok(ExitCode::SUCCESS)
}

async fn event(
    connector: &Connector,
    device: String,
    service: String,
    payload: String,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    idempotency_key: Option<String>,
) -> Result<ExitCode, Error> {
    let payload = parse_json("the payload", &payload)?;
    if !connector
        .devices()
        .await
        .iter()
        .any(|spec| spec.external_id == device)
    {
        match connector.register(DeviceSpec::new(&device)).await {
            // Offline: it is managed now and registered on connect.
            Ok(_) | Err(Error::Timeout(_)) => {}
            Err(error) => return Err(error),
        }
    }
    let mut event = Event::new(device, service, payload);
    event.occurred_at = occurred_at;
    event.idempotency_key = idempotency_key;
    let ack = connector.publish(event).await?;
    print_json(&ack);
    Ok(ExitCode::SUCCESS)
}

async fn listen(
    connector: &Connector,
    devices: Vec<String>,
    answer: Option<Answer>,
    count: Option<u64>,
) -> Result<ExitCode, Error> {
    for device in devices {
        match connector.register(DeviceSpec::new(&device)).await {
            Ok(_) | Err(Error::Timeout(_)) => {}
            Err(error) => return Err(error),
        }
    }
    let mut commands = connector.commands().await?;
    let mut received = 0;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    while count.is_none_or(|count| received < count) {
        let command = tokio::select! {
            command = commands.recv() => command,
            _ = &mut shutdown => break,
            error = connector.closed() => return Err(error),
        };
        let Some(command) = command else { break };
        received += 1;
        print_json(&command);
        let outcome = match answer {
            None => continue,
            Some(Answer::Ok) => Ok(json!({"ok": true})),
            Some(Answer::Fail) => Err(json!({"error": "refused by ferrite-connector listen"})),
        };
        connector.respond(&command.id, outcome).await?;
    }
    // Let the answers' confirmations and queued events go out.
    let _ = connector.flush(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}
