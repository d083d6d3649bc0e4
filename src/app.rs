//! The appliance put together: opens the store, starts every link, the
//! ingest loop, the web server and the control socket, and stops them in
//! the right order (stop reading, commit, ACK, close).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::ingest::{Action, Command, Ingest, IngestOptions, Outcome, Totals};
use crate::leads::ActionError;
use crate::link::{self, LinkContext, LinkStatus, Outbound};
use crate::shutdown::{self, ShutdownTrigger};
use crate::store::{Store, StoreError};

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store in {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A link as the rest of the appliance sees it.
pub struct LinkHandle {
    pub status: Arc<LinkStatus>,
    /// Taken at shutdown so the link can finish once ingest is done.
    tx: Mutex<Option<mpsc::Sender<Outbound>>>,
}

impl LinkHandle {
    /// Queues a payload for the unit at `addr`; false when the link is
    /// stopping or its queue is full.
    pub fn send(&self, addr: u8, payload: Vec<u8>) -> bool {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .is_some_and(|tx| tx.try_send(Outbound { addr, payload }).is_ok())
    }
}

/// What the web server and the control socket share.
pub struct AppState {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub clock: SharedClock,
    pub totals: Arc<Totals>,
    pub links: Vec<LinkHandle>,
    /// Actions for ingest, the one writer of units and leads.
    pub commands: mpsc::Sender<Command>,
    pub started_ms: u64,
    /// The lot scan running or last run (R-LOT-1).
    pub lot_scan: crate::web::lot::LotScan,
    /// The dashboard's figures as of the last commit.
    pub snapshot: crate::web::dashboard::SnapshotCache,
}

impl AppState {
    /// Has ingest carry out `action` and waits for the outcome.
    pub async fn act(&self, action: Action) -> Result<Outcome, ActionError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command { action, reply })
            .await
            .map_err(|_| {
                ActionError::Store(StoreError::Engine("the appliance is stopping".into()))
            })?;
        rx.await.map_err(|_| {
            ActionError::Store(StoreError::Engine("the appliance is stopping".into()))
        })?
    }
}

/// A running appliance.
pub struct Running {
    pub http_addr: SocketAddr,
    pub state: Arc<AppState>,
    trigger: ShutdownTrigger,
    ingest: JoinHandle<()>,
    links: Vec<JoinHandle<()>>,
    others: Vec<JoinHandle<()>>,
}

/// Creates `dir` (and parents) readable by its owner only.
pub fn create_data_dir(dir: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AppError::DataDir {
            path: dir.to_owned(),
            source,
        })
}

/// Starts the appliance.
pub async fn start(settings: Settings, clock: SharedClock) -> Result<Running, AppError> {
    create_data_dir(&settings.data_dir)?;
    let store =
        Store::open(&settings.data_dir, settings.engine).map_err(|source| AppError::Store {
            path: settings.data_dir.clone(),
            source,
        })?;
    let store = Arc::new(store);
    let totals = Totals::load(&store).map_err(|source| AppError::Store {
        path: settings.data_dir.clone(),
        source,
    })?;
    let totals = Arc::new(totals);
    // First start with no users: a one-time code makes the first admin at /setup.
    match crate::web::session::prepare_setup_code(&store, &settings.data_dir) {
        Ok(Some(code)) => tracing::warn!(
            setup_code = %code,
            file = %crate::web::session::setup_code_path(&settings.data_dir).display(),
            "no staff user yet: open /setup and enter this one-time code to create the first admin"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot make a setup code: the first admin cannot be created")
        }
    }
    let (trigger, shutdown) = shutdown::channel();
    // Bounded: when ingest falls behind, links stop reading and the
    // dongles' stop-and-wait does the rest.
    let (events_tx, events_rx) = mpsc::channel(8192);

    let mut link_tasks = Vec::new();
    let mut handles = Vec::new();
    let mut next_id = 0u16;
    let mut make_ctx = |name: String, transport: &'static str| {
        let status = LinkStatus::new(name, transport);
        let (out_tx, out_rx) = mpsc::channel(4096);
        let ctx = LinkContext {
            id: next_id,
            events: events_tx.clone(),
            status: status.clone(),
            outbound: out_rx,
            outbound_tx: out_tx.clone(),
            clock: clock.clone(),
            shutdown: shutdown.clone(),
        };
        next_id += 1;
        handles.push(LinkHandle {
            status,
            tx: Mutex::new(Some(out_tx)),
        });
        ctx
    };
    for s in &settings.serial {
        let ctx = make_ctx(s.path.display().to_string(), "serial");
        link_tasks.push(tokio::spawn(link::serial::run(s.clone(), ctx)));
    }
    for c in &settings.can {
        let ctx = make_ctx(c.interface.clone(), "can");
        let c = c.clone();
        link_tasks.push(tokio::spawn(async move { link::can::run(&c, ctx).await }));
    }
    drop(events_tx);
    if settings.serial.is_empty() && settings.can.is_empty() {
        tracing::warn!("no [[serial]] or [[can]] links configured: no dongle will be heard");
    }

    let options = IngestOptions {
        consent_brands: settings.consent_brands.clone(),
        rules: true,
    };
    let ingest =
        Ingest::new(store.clone(), clock.clone(), totals.clone(), options).map_err(|source| {
            AppError::Store {
                path: settings.data_dir.clone(),
                source,
            }
        })?;
    let (commands, commands_rx) = mpsc::channel(64);
    let ingest = tokio::spawn(ingest.run(events_rx, commands_rx, settings.tick, shutdown.clone()));

    let state = Arc::new(AppState {
        settings: settings.clone(),
        store,
        clock: clock.clone(),
        totals,
        links: handles,
        commands,
        started_ms: clock.now_ms(),
        lot_scan: Default::default(),
        snapshot: Default::default(),
    });

    let listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: settings.http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AppError::Listen {
        addr: settings.http_listen,
        source,
    })?;
    let mut others = Vec::new();
    let app = crate::web::router(state.clone());
    let mut web_shutdown = shutdown.clone();
    others.push(tokio::spawn(async move {
        // The peer's address: login rate limiting is per name and address.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { web_shutdown.fired().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "web server failed");
        }
    }));
    let control = crate::control::bind(&settings.data_dir).map_err(|source| AppError::Control {
        path: crate::control::socket_path(&settings.data_dir),
        source,
    })?;
    others.push(tokio::spawn(crate::control::serve(
        control,
        state.clone(),
        shutdown.clone(),
    )));
    others.push(tokio::spawn(watchdog(shutdown.clone())));
    tracing::info!(http = %http_addr, data_dir = %settings.data_dir.display(), "forecourt running");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    Ok(Running {
        http_addr,
        state,
        trigger,
        ingest,
        links: link_tasks,
        others,
    })
}

impl Running {
    /// Stops on purpose: links stop reading, ingest commits and answers
    /// what it has, then links write those answers and close.
    pub async fn stop(self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        self.trigger.fire();
        if let Err(e) = self.ingest.await {
            tracing::error!(error = %e, "ingest ended abnormally");
        }
        for h in &self.state.links {
            h.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        for t in self.links {
            let _ = t.await;
        }
        for t in self.others {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(crate::control::socket_path(&self.state.settings.data_dir));
        tracing::info!("forecourt stopped");
    }
}

/// `forecourt run`: starts, waits for SIGINT or SIGTERM, stops.
pub async fn run(settings: Settings, clock: SharedClock) -> Result<(), AppError> {
    // Listen for the signals before anything is served, so that a stop
    // asked for the moment the appliance answers is an orderly one.
    let mut signals = Signals::listen();
    let running = start(settings, clock).await?;
    signals.recv().await;
    tracing::info!("stopping: finishing the current batch");
    running.stop().await;
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is made.
pub struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let catch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch {name}");
                None
            }
        };
        Signals {
            int: catch(SignalKind::interrupt(), "SIGINT"),
            term: catch(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => {}
            _ = next(&mut self.term) => {}
        }
    }
}

/// Pets systemd's watchdog (WatchdogSec= in the unit) at half its period
/// while the runtime is alive; a hung runtime stops the petting and
/// systemd restarts the service.
async fn watchdog(mut shutdown: crate::shutdown::Shutdown) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = std::time::Duration::from_micros(usec / 2);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => { let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]); }
            _ = shutdown.fired() => return,
        }
    }
}
