//! The command line (SPEC.md, "Command line, config"): parsed here, carried
//! out by the library. `main.rs` only sets up logging and calls [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "forecourt",
    version,
    about = "Offline-first workshop appliance for CC-Link dongles"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance with a config file.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the appliance on an embedded simulated lot; no config needed.
    Demo(DemoArgs),
    /// Play a simulated lot of dongles into a running appliance.
    Simulate(SimulateArgs),
    /// Show durable totals and link states (running or not).
    Status {
        #[arg(long)]
        config: PathBuf,
    },
    /// The importer's catalog: labour hours, service types, DTC texts, brands.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Import data from a file: `import customers` (docs/customers.md).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Export data as a file on stdout: `export customers`.
    #[command(subcommand)]
    Export(ExportCommand),
    /// OBID consent of a vehicle (R-VEH-4), until sync brings it.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Tokens for the JSON API (docs/api.md).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, and nothing else, on stdout. Only its
    /// hash is kept: store it now, it cannot be shown again.
    Create {
        #[arg(long)]
        config: PathBuf,
        /// Who or what uses it; lead histories record actions by this name.
        #[arg(long)]
        name: String,
        /// admin, advisor or technician (R-VEH-5).
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Import a catalog CSV (docs/catalog.md); a file with any bad row changes nothing.
    Import {
        #[arg(long)]
        config: PathBuf,
        file: PathBuf,
    },
    /// Print the catalog in use as CSV (the import format).
    Export {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Customers and vehicles from the DMS / point of sale (CSV, see
    /// docs/customers.md). A file with any bad row changes nothing; the
    /// same file twice changes nothing the second time.
    Customers {
        #[arg(long)]
        config: PathBuf,
        file: PathBuf,
        /// Check the file and report what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Customers and registered vehicles as CSV (the import format, plus
    /// the dongle heard for each VIN).
    Customers {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Set the consent state of a VIN: granted, denied or pending.
    Set {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        vin: String,
        #[arg(long)]
        state: String,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve the web UI on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory (wiped at start: the demo always begins fresh).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Simulated vehicles on the lot.
    #[arg(long, default_value_t = 60)]
    pub vehicles: usize,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "transport")]
pub struct Transport {
    /// Serial port or pty slave the appliance reads.
    #[arg(long, group = "transport")]
    pub serial: Option<PathBuf>,
    /// CAN interface shared with the appliance.
    #[arg(long, group = "transport")]
    pub can: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub transport: Transport,
    #[arg(long, default_value_t = 60)]
    pub vehicles: usize,
    /// Simulated seconds per real second, until the lot's time reaches now.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start this many hours in the past (history replayed at --speed).
    #[arg(long, default_value_t = 0)]
    pub backfill_hours: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Units whose clocks run minutes ahead until corrected by TIME.
    #[arg(long, default_value_t = 0)]
    pub skewed_units: usize,
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
}

/// Carries out a parsed command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let clock = Arc::new(SystemClock);
    match cli.command {
        Command::Run { config } => {
            let settings = Settings::load(&config)?;
            runtime.block_on(crate::app::run(settings, clock))?;
        }
        Command::Demo(args) => runtime.block_on(crate::demo::run(args, clock))?,
        Command::Simulate(args) => runtime.block_on(simulate(args, clock))?,
        Command::Status { config } => {
            let settings = Settings::load(&config)?;
            let report = crate::control::status(&settings.data_dir, settings.engine)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Catalog(CatalogCommand::Import { config, file }) => {
            let settings = Settings::load(&config)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // Encoding and size are checked here; every row is checked by
            // the appliance against the catalog it holds, and all bad rows
            // are reported at once.
            if bytes.len() > crate::domain::catalog::MAX_FILE_BYTES {
                anyhow::bail!(
                    "{}: {} bytes is over the 5 MB a catalog file may have; nothing was imported",
                    file.display(),
                    bytes.len()
                );
            }
            let csv = String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not UTF-8 (first bad byte at offset {}); nothing was imported",
                    file.display(),
                    e.utf8_error().valid_up_to()
                )
            })?;
            let outcome = crate::control::act(
                &settings.data_dir,
                settings.engine,
                ingest_options(&settings),
                crate::ingest::Action::ImportCatalog { csv },
            )?;
            if let crate::ingest::Outcome::Catalog { rows } = outcome {
                println!(
                    "imported {}: the catalog now has {rows} rows",
                    file.display()
                );
            }
        }
        Command::Catalog(CatalogCommand::Export { config }) => {
            let settings = Settings::load(&config)?;
            print!(
                "{}",
                crate::control::catalog_csv(&settings.data_dir, settings.engine)?
            );
        }
        Command::Import(ImportCommand::Customers {
            config,
            file,
            dry_run,
        }) => import_customers(&config, &file, dry_run)?,
        Command::Export(ExportCommand::Customers { config }) => {
            let settings = Settings::load(&config)?;
            print!(
                "{}",
                crate::control::customers_csv(&settings.data_dir, settings.engine)?
            );
        }
        Command::Consent(ConsentCommand::Set { config, vin, state }) => {
            let settings = Settings::load(&config)?;
            let state = crate::domain::consent::ConsentState::parse(&state)
                .with_context(|| format!("--state {state:?}: use granted, denied or pending"))?;
            let by = std::env::var("USER").unwrap_or_else(|_| "admin".into());
            let outcome = crate::control::act(
                &settings.data_dir,
                settings.engine,
                ingest_options(&settings),
                crate::ingest::Action::SetConsent { vin, state, by },
            )?;
            if let crate::ingest::Outcome::Consent { consent } = outcome {
                println!(
                    "consent for {} is now {}",
                    consent.vin,
                    consent.state.as_str()
                );
            }
        }
        Command::Token(TokenCommand::Create { config, name, role }) => {
            let settings = Settings::load(&config)?;
            let role = crate::web::auth::Role::parse(&role)
                .with_context(|| format!("--role {role:?}: use admin, advisor or technician"))?;
            crate::app::create_data_dir(&settings.data_dir)?;
            let token =
                crate::control::create_token(&settings.data_dir, settings.engine, &name, role)?;
            // SPEC.md: the token and nothing else on stdout, for scripts.
            println!("{token}");
        }
    }
    Ok(())
}

/// `forecourt import customers`: checks the file here first, with progress
/// on stderr and every bad row reported, then has the appliance (or the
/// store, when it is not running) import it in one transaction.
fn import_customers(
    config: &std::path::Path,
    file: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let settings = Settings::load(config)?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > crate::customers::MAX_FILE_BYTES as u64 {
        anyhow::bail!(
            "{}: {size} bytes is over the {} bytes (8 MB) a customer file may have: split it (nothing changed)",
            file.display(),
            crate::customers::MAX_FILE_BYTES
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |p: crate::customers::Progress| {
        if p.done == 0 && p.total > 0 {
            return;
        }
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\rchecked {} of {} rows", p.done, p.total);
            if p.done == p.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "checked {} of {} rows", p.done, p.total);
        }
    };
    let now = crate::clock::Clock::now_ms(&SystemClock);
    if let Err(rows) = crate::customers::parse(&bytes, now, &mut progress) {
        anyhow::bail!(
            "{}: {}",
            file.display(),
            crate::customers::rows_message(&rows)
        );
    }
    // Checked: UTF-8 (a byte-order mark is stripped by the parser).
    let csv = String::from_utf8(bytes).context("the file is not UTF-8")?;
    eprintln!(
        "{} {}...",
        if dry_run { "dry run of" } else { "importing" },
        file.display()
    );
    let outcome = crate::control::act(
        &settings.data_dir,
        settings.engine,
        ingest_options(&settings),
        crate::ingest::Action::ImportCustomers { csv, dry_run },
    )?;
    if let crate::ingest::Outcome::CustomerImport { report } = outcome {
        println!("{report}");
    }
    Ok(())
}

fn ingest_options(settings: &Settings) -> crate::ingest::IngestOptions {
    crate::ingest::IngestOptions {
        consent_brands: settings.consent_brands.clone(),
        rules: true,
    }
}

async fn simulate(args: SimulateArgs, clock: Arc<SystemClock>) -> anyhow::Result<()> {
    use crate::sim;
    let lot = sim::LotConfig {
        vehicles: args.vehicles,
        speed: args.speed,
        seed: args.seed,
        backfill_ms: args.backfill_hours * 3_600_000,
        skewed_units: args.skewed_units,
        ..sim::LotConfig::default()
    };
    let stats = Arc::new(sim::SimStats::new());
    let (trigger, shutdown) = crate::shutdown::channel();
    let mut signals = crate::app::Signals::listen();
    tokio::spawn(async move {
        signals.recv().await;
        trigger.fire();
    });
    let report = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                every.tick().await;
                tracing::info!(stats = ?stats.snapshot(), "simulating");
            }
        })
    };
    let result = match (args.transport.serial, args.transport.can) {
        (Some(path), _) => {
            sim::run_serial_path(&path, args.baud, lot, clock, stats.clone(), shutdown).await
        }
        (None, Some(iface)) => sim::run_can(&iface, lot, clock, stats.clone(), shutdown).await,
        (None, None) => unreachable!("clap requires one transport"),
    };
    report.abort();
    result?;
    println!("{}", serde_json::to_string_pretty(&stats.snapshot())?);
    Ok(())
}
