//! `forecourt`: parses the command line, sets up logging (the journal under
//! systemd, stderr otherwise) and hands over to the library.

use clap::Parser;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = forecourt::cli::Cli::parse();
    let filter =
        EnvFilter::try_from_env("FORECOURT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    match forecourt::cli::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes, no backtrace: this is for people.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
