//! `forecourt demo`: the real appliance on an embedded simulated lot, with
//! no config. The lot is attached over a real pty (the appliance opens the
//! slave by path, as it would a USB adapter) and replays a week of history
//! quickly, then lives in real time: no device time is ever in the future.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_serial::SerialPort;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::link::serial::SerialSettings;
use crate::sim::{self, LotConfig, SimStats};

/// A file that marks a directory as the demo's own, so that wiping it at
/// start can never delete anything else.
const MARKER: &str = ".forecourt-demo";
/// History the lot replays before it lives in real time.
pub const BACKFILL_MS: u64 = 7 * 24 * 3_600_000;
/// Replay speed: a week in about half a minute.
pub const SPEED: f64 = 20_000.0;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0} exists and is not a Forecourt demo directory: choose another with --data-dir")]
    NotDemoDir(PathBuf),
    #[error("cannot prepare the demo directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a pty for the simulated lot: {0}")]
    Pty(#[from] tokio_serial::Error),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error("cannot make the demo login: {0}")]
    Login(crate::web::session::AuthError),
}

/// The demo's data directory: given, or `forecourt-demo` in the temp dir.
pub fn data_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| std::env::temp_dir().join("forecourt-demo"))
}

/// Empties a demo directory (only one carrying the marker) and marks it.
pub fn prepare_dir(dir: &Path) -> Result<(), DemoError> {
    let io = |source| DemoError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(DemoError::NotDemoDir(dir.to_owned()));
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    crate::app::create_data_dir(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "forecourt demo data: wiped at each `forecourt demo`\n",
    )
    .map_err(io)?;
    Ok(())
}

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run(args: crate::cli::DemoArgs, clock: SharedClock) -> Result<(), DemoError> {
    let mut signals = crate::app::Signals::listen();
    let dir = data_dir(args.data_dir);
    prepare_dir(&dir)?;
    let (master, slave) = tokio_serial::SerialStream::pair()?;
    let slave_path = slave.name().map(PathBuf::from).ok_or_else(|| {
        DemoError::Pty(tokio_serial::Error::new(
            tokio_serial::ErrorKind::NoDevice,
            "pty has no slave path",
        ))
    })?;
    let mut settings = Settings::with_data_dir(dir.clone());
    settings.http_listen = args.listen;
    settings.serial = vec![SerialSettings::new(&slave_path)];
    let login = create_demo_admin(&settings, clock.now_ms())?;
    let running = crate::app::start(settings, clock.clone()).await?;
    let lot = LotConfig {
        vehicles: args.vehicles,
        speed: SPEED,
        seed: 2026,
        backfill_ms: BACKFILL_MS,
        ..LotConfig::default()
    };
    grant_demo_consent(&running, &lot, clock.now_ms()).await;
    let stats = Arc::new(SimStats::new());
    let (sim_stop, sim_shutdown) = crate::shutdown::channel();
    let sim = tokio::spawn(sim::run_serial(
        master,
        lot,
        clock.clone(),
        stats.clone(),
        sim_shutdown,
    ));
    print_banner(running.http_addr, &dir, &slave_path, args.vehicles, &login);
    signals.recv().await;
    println!("Stopping the demo...");
    sim_stop.fire();
    match sim.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "the simulated lot stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the simulated lot task failed"),
        Ok(Ok(())) => {}
    }
    running.stop().await;
    drop(slave);
    Ok(())
}

/// Consent (R-VEH-4) is granted up front for the lot's vehicles of brands
/// that need it, except two, which show what "awaiting consent" looks like.
async fn grant_demo_consent(running: &crate::app::Running, lot: &LotConfig, now_ms: u64) {
    let catalog = crate::domain::catalog::Catalog::builtin();
    let brands = &running.state.settings.consent_brands;
    let gated: Vec<_> = sim::lot_identities(lot, now_ms.saturating_sub(lot.backfill_ms))
        .into_iter()
        .filter_map(|i| i.vin)
        .filter(|vin| {
            catalog
                .brand_of(vin)
                .is_some_and(|b| brands.iter().any(|c| c.eq_ignore_ascii_case(b)))
        })
        .collect();
    let keep_pending = 2.min(gated.len());
    for vin in &gated[..gated.len() - keep_pending] {
        let action = crate::ingest::Action::SetConsent {
            vin: vin.to_string(),
            state: crate::domain::consent::ConsentState::Granted,
            by: "demo".into(),
        };
        if let Err(e) = running.state.act(action).await {
            tracing::warn!(error = %e, "demo: cannot grant consent");
        }
    }
}

/// The demo's login: user `demo`, an admin, with a password made for this
/// run (the data directory is wiped at each start, so it lives as long).
/// Made before the appliance starts, so no setup code is needed.
fn create_demo_admin(settings: &Settings, now_ms: u64) -> Result<(String, String), DemoError> {
    use crate::web::session::{hash_password, AuthError};
    let store =
        crate::store::Store::open(&settings.data_dir, settings.engine).map_err(|source| {
            crate::app::AppError::Store {
                path: settings.data_dir.clone(),
                source,
            }
        })?;
    let mut bytes = [0u8; 9];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)
        .map_err(|e| DemoError::Login(AuthError::Random(e.to_string())))?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let user = crate::store::users::UserRecord {
        name: "demo".into(),
        display_name: "Demo admin".into(),
        role: crate::web::auth::Role::Admin,
        password_hash: hash_password(&password).map_err(DemoError::Login)?,
        disabled: false,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    store
        .write(|tx| tx.put_user(&user))
        .map_err(|source| crate::app::AppError::Store {
            path: settings.data_dir.clone(),
            source,
        })?;
    Ok((user.name, password))
}

fn print_banner(
    addr: SocketAddr,
    dir: &Path,
    pty: &Path,
    vehicles: usize,
    login: &(String, String),
) {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    println!();
    println!("  Forecourt demo is running.");
    println!();
    println!("  Open      http://{host}:{}/", addr.port());
    println!(
        "  Log in    as {} with password {} (an admin)",
        login.0, login.1
    );
    println!(
        "  Lot       {vehicles} simulated vehicles on pty {}, replaying 7 days of history",
        pty.display()
    );
    println!("            in about 30 seconds, then live");
    println!("  Health    http://{host}:{}/healthz", addr.port());
    println!("  Data      {} (wiped at each start)", dir.display());
    println!();
    println!("  Ctrl-C to stop.");
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_directory_is_wiped() {
        let tmp = tempfile::tempdir().unwrap();
        let foreign = tmp.path().join("precious");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("file"), "keep me").unwrap();
        assert!(matches!(
            prepare_dir(&foreign),
            Err(DemoError::NotDemoDir(_))
        ));
        assert!(foreign.join("file").exists());
        let demo = tmp.path().join("demo");
        prepare_dir(&demo).unwrap();
        std::fs::write(demo.join("old"), "x").unwrap();
        prepare_dir(&demo).unwrap();
        assert!(!demo.join("old").exists());
        assert!(demo.join(MARKER).exists());
    }
}
