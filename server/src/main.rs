//! The `ferrite` binary: parses flags, sets up logging, hands over to the
//! library.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use ferrite_server::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ferrite: {err:#}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&config.log) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("ferrite: invalid log filter {:?}: {err}", config.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferrite: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferrite: {err:#}");
            ExitCode::FAILURE
        }
    }
}
