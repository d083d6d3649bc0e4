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
    seed_demo_customers(&running, &lot, clock.now_ms()).await;
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

/// Customers for the lot (R-VEH-1..3, R-SRC-1..3): a DMS file imported
/// through the same path as `forecourt import customers`, then the
/// workshop's mapping of sources, some marketing spend, and invitations in
/// every state. Deterministic from the lot's seed (times are relative to now).
async fn seed_demo_customers(running: &crate::app::Running, lot: &LotConfig, now_ms: u64) {
    use crate::customers::CustomerAction;
    use crate::ingest::{Action, Outcome};
    let identities = sim::lot_identities(lot, now_ms.saturating_sub(lot.backfill_ms));
    let plan = demo_customers(&identities, lot.seed, now_ms);
    let state = &running.state;
    match state
        .act(Action::ImportCustomers {
            csv: plan.csv,
            dry_run: false,
        })
        .await
    {
        Ok(Outcome::CustomerImport { report }) => tracing::info!(%report, "demo customers"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "demo: cannot import the customers");
            return;
        }
    }
    let days = state.settings.invitation_expiry_days;
    let act = |action| Action::Customers {
        action,
        invitation_expiry_days: days,
    };
    for action in plan.actions {
        if let Err(e) = state.act(act(action)).await {
            tracing::warn!(error = %e, "demo: a customer change was refused");
        }
    }
    for (vin, steps) in plan.invitations {
        let invite = CustomerAction::Invite {
            vin: vin.to_string(),
            at_ms: Some(steps.created_ms),
        };
        let id = match state.act(act(invite)).await {
            Ok(Outcome::Customers {
                outcome: crate::customers::CustomerOutcome::Invitation { invitation },
            }) => invitation.id,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "demo: cannot invite");
                continue;
            }
        };
        for (event, at_ms) in steps.events {
            let change = CustomerAction::Invitation {
                id,
                event,
                at_ms: Some(at_ms),
            };
            if let Err(e) = state.act(act(change)).await {
                tracing::warn!(error = %e, "demo: an invitation change was refused");
            }
        }
    }
}

/// An invitation the demo makes: when, and what happens to it after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoInvitation {
    pub created_ms: u64,
    pub events: Vec<(crate::domain::customer::InvitationEvent, u64)>,
}

/// The demo's customer data: the DMS file, the workshop's changes after
/// it, and the invitations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoCustomers {
    pub csv: String,
    pub actions: Vec<crate::customers::CustomerAction>,
    pub invitations: Vec<(crate::link::message::Vin, DemoInvitation)>,
}

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannes", "Ines", "Jonas", "Katrin",
    "Lukas", "Mia", "Niklas", "Olga", "Paul", "Rosa", "Stefan", "Tanja", "Uwe", "Vera", "Yusuf",
];
const LAST_NAMES: &[&str] = &[
    "Berg",
    "Schmidt",
    "Novak",
    "Rossi",
    "Keller",
    "Jansen",
    "Weber",
    "Horvat",
    "Fischer",
    "Lindqvist",
    "Moreau",
    "Kowalski",
    "Brandt",
    "Yilmaz",
    "Vogel",
    "Haas",
    "Dubois",
];
/// Sources as a DMS writes them, with their share of customers (in
/// percent; the rest, about 15%, have none) and the category the demo
/// workshop mapped them to (None: not mapped yet).
const DEMO_SOURCES: &[(&str, u32, Option<crate::domain::customer::MainCategory>)] = {
    use crate::domain::customer::MainCategory::*;
    &[
        ("Google", 22, Some(Internet)),
        ("Yelp", 7, Some(Internet)),
        ("Facebook", 8, Some(Internet)),
        ("Referral by a friend", 14, Some(Referral)),
        ("Drive-by", 12, Some(DriveBy)),
        ("Repeat", 15, Some(Repeat)),
        ("Radio ad", 4, None),
        ("Newspaper", 3, None),
    ]
};
/// Marketing spend a month, in cents, for the last three months.
const DEMO_SPEND: &[(&str, u64)] = &[
    ("Google", 45_000),
    ("Facebook", 12_000),
    ("Yelp", 8_000),
    ("Radio ad", 30_000),
];

fn demo_model(vin: &crate::link::message::Vin) -> &'static str {
    let models: &[&str] = match vin.wmi() {
        "WVW" => &["Golf", "Passat", "Tiguan", "Polo"],
        "WV1" => &["Caddy", "Transporter"],
        "WV2" => &["Multivan", "California"],
        "WF0" => &["Focus", "Kuga", "Transit"],
        "VF1" => &["Clio", "Megane", "Captur"],
        "WBA" => &["3 Series", "1 Series", "X3"],
        "YV1" => &["XC60", "V60", "XC40"],
        "TMB" => &["Octavia", "Superb", "Fabia"],
        "ZFA" => &["500", "Panda", "Tipo"],
        "VSS" => &["Ibiza", "Leon", "Arona"],
        _ => &["Estate"],
    };
    let pick = vin.0[3..8].iter().map(|b| *b as usize).sum::<usize>();
    models[pick % models.len()]
}

/// The demo's customers for `identities` (the lot's units that know their
/// VIN) plus a few DMS vehicles without a dongle: about one customer per
/// vehicle (some with two), a tenth of the vehicles in fleets, ~15% of
/// customers without a source, and invitations in every state.
pub fn demo_customers(identities: &[sim::Identity], seed: u64, now_ms: u64) -> DemoCustomers {
    use crate::customers::CustomerAction;
    use crate::domain::customer::{format_date, InvitationEvent, Month, DAY_MS};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xC057_0E45);
    let catalog = crate::domain::catalog::Catalog::builtin();
    let this_year = format_date(now_ms)[..4].parse::<u16>().unwrap_or(2026);
    let mut vehicles: Vec<(crate::link::message::Vin, u16)> = identities
        .iter()
        .filter_map(|i| i.vin.map(|v| (v, i.model_year)))
        .collect();
    for _ in 0..6 {
        let year = this_year - rng.random_range(0..10u16);
        vehicles.push((sim::identity::random_vin(&mut rng, year), year));
    }
    let mut csv = crate::customers::COLUMNS.join(",");
    csv.push('\n');
    let mut owned = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut customer = 0usize;
    let mut i = 0;
    while i < vehicles.len() {
        let (vin, year) = vehicles[i];
        let brand = catalog.brand_of(&vin).unwrap_or("");
        let model = demo_model(&vin);
        if rng.random_range(0..10) == 0 {
            let fleet = ["City Taxis", "Stadtwerke"][rng.random_range(0..2)];
            csv.push_str(&format!(",,,,,,{vin},{brand},{model},{year},{fleet}\n"));
            i += 1;
            continue;
        }
        customer += 1;
        let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
        let mut roll = rng.random_range(0..100u32);
        let source = DEMO_SOURCES
            .iter()
            .find(|(_, share, _)| {
                if roll < *share {
                    true
                } else {
                    roll -= share;
                    false
                }
            })
            .map_or("", |s| s.0);
        used.insert(source);
        // Most customers are a year or two old; a fair share came lately.
        let days_ago = if rng.random_range(0..3) == 0 {
            rng.random_range(0..90u64)
        } else {
            rng.random_range(90..730u64)
        };
        let since = format_date(now_ms.saturating_sub(days_ago * DAY_MS));
        let phone = format!("+49 30 {:07}", rng.random_range(0..10_000_000u32));
        let email = format!(
            "{}.{}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        );
        // One customer in eight brings a second vehicle.
        let count = if rng.random_range(0..8) == 0 { 2 } else { 1 };
        for (vin, year) in vehicles.iter().skip(i).take(count) {
            let brand = catalog.brand_of(vin).unwrap_or("");
            csv.push_str(&format!(
                "D{customer:05},{first} {last},{phone},{email},{source},{since},{vin},{brand},{},{year},\n",
                demo_model(vin)
            ));
            owned.push(*vin);
        }
        i += count;
    }
    // The workshop maps the imported sources and creates the ones its
    // DMS did not bring but it spends money on.
    let mut actions = Vec::new();
    for (name, _, category) in DEMO_SOURCES {
        let name = (*name).to_string();
        let category = *category;
        if used.contains(name.as_str()) {
            if category.is_some() {
                actions.push(CustomerAction::MapSource { name, category });
            }
        } else if category.is_some() || DEMO_SPEND.iter().any(|s| s.0 == name) {
            actions.push(CustomerAction::CreateSource { name, category });
        }
    }
    let mut month = Month::of(now_ms.saturating_sub(62 * DAY_MS));
    for _ in 0..3 {
        for (source, cents) in DEMO_SPEND {
            actions.push(CustomerAction::SetSpend {
                source: (*source).into(),
                month: month.to_string(),
                cents: *cents,
            });
        }
        month = month.next();
    }
    // Invitations in every state: a few created, sent, declined and
    // expired (sent over 14 days ago), and most of the rest accepted.
    let day = |d: u64| now_ms.saturating_sub(d * DAY_MS);
    let mut invitations = Vec::new();
    for (n, vin) in owned.iter().enumerate() {
        let (created, events) = match n {
            0..=2 => (day(0), vec![]),
            3..=5 => (day(3), vec![(InvitationEvent::Send, day(2))]),
            6..=7 => (
                day(10),
                vec![
                    (InvitationEvent::Send, day(9)),
                    (InvitationEvent::Decline, day(8)),
                ],
            ),
            8..=9 => (day(30), vec![(InvitationEvent::Send, day(29))]),
            _ if n % 5 == 0 => continue,
            _ => (
                day(60),
                vec![
                    (InvitationEvent::Send, day(59)),
                    (InvitationEvent::Accept, day(57)),
                ],
            ),
        };
        invitations.push((
            *vin,
            DemoInvitation {
                created_ms: created,
                events,
            },
        ));
    }
    DemoCustomers {
        csv,
        actions,
        invitations,
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
    fn the_demo_customers_import_cleanly_with_a_realistic_mix() {
        let now = 1_772_323_200_000;
        let lot = LotConfig {
            vehicles: 60,
            seed: 2026,
            ..LotConfig::default()
        };
        let ids = sim::lot_identities(&lot, now - BACKFILL_MS);
        let a = demo_customers(&ids, lot.seed, now);
        assert_eq!(a, demo_customers(&ids, lot.seed, now), "deterministic");
        let file = crate::customers::parse(a.csv.as_bytes(), now, &mut |_| {}).unwrap();
        let with_vin = ids.iter().filter(|i| i.vin.is_some()).count();
        assert_eq!(
            file.vehicles.len(),
            with_vin + 6,
            "the lot and six without dongle"
        );
        let fleet = file.vehicles.iter().filter(|v| v.1.fleet.is_some()).count();
        assert!((2..=15).contains(&fleet), "{fleet} fleet vehicles");
        let unknown = file
            .customers
            .iter()
            .filter(|c| c.1.source.is_none())
            .count();
        let share = unknown as f64 / file.customers.len() as f64;
        assert!((0.05..=0.30).contains(&share), "{share} without source");
        let mut states = std::collections::BTreeSet::new();
        for (_, inv) in &a.invitations {
            states.insert(inv.events.last().map(|e| e.0.as_str()).unwrap_or("created"));
        }
        assert_eq!(
            states.len(),
            4,
            "created, sent (some lapse), accepted, declined: {states:?}"
        );
        // Played into a store as the demo does: nothing refused, and the
        // invitations end in every state.
        use crate::customers::{apply, import, CustomerAction, CustomerOutcome};
        use crate::domain::customer::{InvitationRules, InvitationState};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), crate::store::EngineKind::Redb).unwrap();
        let rules = InvitationRules::default();
        import(&store, &a.csv, false, now).unwrap();
        for action in a.actions.clone() {
            apply(&store, action, rules, now).unwrap();
        }
        for (vin, steps) in &a.invitations {
            let invite = CustomerAction::Invite {
                vin: vin.to_string(),
                at_ms: Some(steps.created_ms),
            };
            let Ok(CustomerOutcome::Invitation { invitation }) = apply(&store, invite, rules, now)
            else {
                panic!("invite {vin}")
            };
            for (event, at) in &steps.events {
                let change = CustomerAction::Invitation {
                    id: invitation.id,
                    event: *event,
                    at_ms: Some(*at),
                };
                apply(&store, change, rules, now).unwrap();
            }
        }
        let figures = store.invitation_figures(now, rules).unwrap();
        for s in InvitationState::ALL {
            assert!(figures[&s] > 0, "no {} invitation: {figures:?}", s.as_str());
        }
        let f = store.customer_figures().unwrap();
        assert!(f.unknown_source > 0 && f.unmapped_source > 0, "{f:?}");
        let spend = crate::customers::source_report(&store, 0, now).unwrap();
        assert!(spend.total.spend_cents > 0 && spend.total.new_customers > 0);
    }

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
