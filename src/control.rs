//! The control socket: how commands that read or change data reach a
//! running appliance (the store is locked by it). A Unix socket in the data
//! directory, owner-only; one JSON request per line, one JSON answer per
//! line. When the appliance is not running, the same commands open the
//! store directly ([`Target`]).
//!
//! Adding a verb: a [`Request`] variant, its arm in [`handle`], and its
//! direct-on-store arm where it changes data.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::app::AppState;
use crate::ingest::{Action, IngestOptions, Outcome, TotalsSnapshot};
use crate::link::LinkReport;
use crate::shutdown::Shutdown;

/// Largest request line accepted (a catalog CSV travels in one).
const MAX_REQUEST: usize = 24 * 1024 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    /// Totals, links and store health.
    Status,
    /// A change carried out by ingest (consent, catalog, lead actions).
    Act { action: Action },
    /// The catalog in use, as CSV.
    CatalogCsv,
    /// Customers and registered vehicles, as CSV (docs/customers.md).
    CustomersCsv,
    /// A new API token; the answer holds its text, shown this once.
    CreateToken {
        name: String,
        role: crate::web::auth::Role,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Done { outcome: Outcome },
    Csv { text: String },
    Token { token: String },
    Error { message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub running: bool,
    pub totals: TotalsSnapshotOwned,
    pub links: Vec<LinkLine>,
    pub store_error: Option<String>,
    pub disk_bytes: Option<u64>,
}

/// [`TotalsSnapshot`] in a form that can be read back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsSnapshotOwned {
    pub vehicles: u64,
    pub messages: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

impl From<TotalsSnapshot> for TotalsSnapshotOwned {
    fn from(t: TotalsSnapshot) -> Self {
        TotalsSnapshotOwned {
            vehicles: t.vehicles,
            messages: t.messages,
            duplicates: t.duplicates,
            rejected: t.rejected,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkLine {
    pub name: String,
    pub transport: String,
    pub state: String,
    pub payloads: u64,
    pub rejected: u64,
}

impl From<LinkReport> for LinkLine {
    fn from(r: LinkReport) -> Self {
        LinkLine {
            name: r.name,
            transport: r.transport.into(),
            state: r.state,
            payloads: r.payloads,
            rejected: r.rejected.values().sum(),
        }
    }
}

/// Errors of a control client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot talk to the running appliance at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the appliance answered something unreadable: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
    #[error("the store is locked but the control socket does not answer: is another forecourt using {0}?")]
    Orphaned(PathBuf),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Binds the socket, owner-only. A stale socket file left by a crash is
/// replaced; a live one means another appliance runs on this directory.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another forecourt is running on this data directory",
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until shutdown.
pub async fn serve(listener: UnixListener, state: Arc<AppState>, mut shutdown: Shutdown) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
            _ = shutdown.fired() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(rd.take_limit()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(&state, req).await,
                    Err(e) => Response::Error {
                        message: format!("bad request: {e}"),
                    },
                };
                let mut out = serde_json::to_vec(&answer).unwrap_or_default();
                out.push(b'\n');
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

trait TakeLimit {
    fn take_limit(self) -> tokio::io::Take<Self>
    where
        Self: Sized;
}

impl<T: tokio::io::AsyncRead> TakeLimit for T {
    fn take_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, MAX_REQUEST as u64)
    }
}

/// Answers one request in the running appliance.
pub async fn handle(state: &AppState, req: Request) -> Response {
    match req {
        Request::Status => Response::Status(StatusReport {
            running: true,
            totals: state.totals.snapshot().into(),
            links: state
                .links
                .iter()
                .map(|l| l.status.report().into())
                .collect(),
            store_error: state.totals.store_error(),
            disk_bytes: state.store.disk_size().ok(),
        }),
        Request::Act { action } => match state.act(action).await {
            Ok(outcome) => Response::Done { outcome },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        },
        Request::CatalogCsv => match crate::ingest::catalog_in_use(&state.store) {
            Ok(c) => Response::Csv { text: c.to_csv() },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        },
        Request::CustomersCsv => {
            let store = state.store.clone();
            // A whole-store read: off the async threads.
            match tokio::task::spawn_blocking(move || crate::customers::export_csv(&store)).await {
                Ok(Ok(text)) => Response::Csv { text },
                Ok(Err(e)) => Response::Error {
                    message: e.to_string(),
                },
                Err(e) => Response::Error {
                    message: format!("exporting customers failed: {e}"),
                },
            }
        }
        Request::CreateToken { name, role } => {
            let store = state.store.clone();
            let now = state.clock.now_ms();
            // A commit fsyncs: off the async threads.
            match tokio::task::spawn_blocking(move || {
                crate::web::auth::create_token(&store, &name, role, now)
            })
            .await
            {
                Ok(Ok(token)) => Response::Token { token },
                Ok(Err(e)) => Response::Error {
                    message: e.to_string(),
                },
                Err(e) => Response::Error {
                    message: format!("creating the token failed: {e}"),
                },
            }
        }
    }
}

/// The catalog in use as CSV, from the running appliance or the store.
pub fn catalog_csv(
    data_dir: &Path,
    engine: crate::store::EngineKind,
) -> Result<String, ControlError> {
    match Target::find(data_dir, engine)? {
        Target::Running(path) => match request(&path, &Request::CatalogCsv)? {
            Response::Csv { text } => Ok(text),
            other => Err(ControlError::Protocol(format!(
                "unexpected answer {other:?}"
            ))),
        },
        Target::Offline(store) => Ok(crate::ingest::catalog_in_use(&store)?.to_csv()),
    }
}

/// Customers and registered vehicles as CSV, from the running appliance or
/// the store.
pub fn customers_csv(
    data_dir: &Path,
    engine: crate::store::EngineKind,
) -> Result<String, ControlError> {
    match Target::find(data_dir, engine)? {
        Target::Running(path) => match request(&path, &Request::CustomersCsv)? {
            Response::Csv { text } => Ok(text),
            other => Err(ControlError::Protocol(format!(
                "unexpected answer {other:?}"
            ))),
        },
        Target::Offline(store) => Ok(crate::customers::export_csv(&store)?),
    }
}

/// Carries out `action` in the running appliance, or directly on the store
/// when it is not running.
pub fn act(
    data_dir: &Path,
    engine: crate::store::EngineKind,
    options: IngestOptions,
    action: Action,
) -> Result<Outcome, ControlError> {
    match Target::find(data_dir, engine)? {
        Target::Running(path) => match request(&path, &Request::Act { action })? {
            Response::Done { outcome } => Ok(outcome),
            other => Err(ControlError::Protocol(format!(
                "unexpected answer {other:?}"
            ))),
        },
        Target::Offline(store) => {
            let store = Arc::new(store);
            let totals = Arc::new(crate::ingest::Totals::load(&store)?);
            let clock: crate::clock::SharedClock = Arc::new(crate::clock::SystemClock);
            let mut ingest = crate::ingest::Ingest::new(store, clock, totals, options)?;
            ingest
                .apply_action(action)
                .map_err(|e| ControlError::Refused(e.to_string()))
        }
    }
}

/// Makes an API token in the running appliance, or directly in the store
/// when it is not running; returns the token's text.
pub fn create_token(
    data_dir: &Path,
    engine: crate::store::EngineKind,
    name: &str,
    role: crate::web::auth::Role,
) -> Result<String, ControlError> {
    match Target::find(data_dir, engine)? {
        Target::Running(path) => match request(
            &path,
            &Request::CreateToken {
                name: name.to_owned(),
                role,
            },
        )? {
            Response::Token { token } => Ok(token),
            other => Err(ControlError::Protocol(format!(
                "unexpected answer {other:?}"
            ))),
        },
        Target::Offline(store) => {
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            crate::web::auth::create_token(&store, name, role, now)
                .map_err(|e| ControlError::Refused(e.to_string()))
        }
    }
}

/// Where a command is carried out.
pub enum Target {
    /// The appliance runs: ask it.
    Running(PathBuf),
    /// It does not: open the store directly.
    Offline(crate::store::Store),
}

impl Target {
    /// Picks the running appliance when its socket answers, else the store.
    pub fn find(data_dir: &Path, engine: crate::store::EngineKind) -> Result<Target, ControlError> {
        let path = socket_path(data_dir);
        if UnixStream::connect(&path).is_ok() {
            return Ok(Target::Running(path));
        }
        match crate::store::Store::open(data_dir, engine) {
            Ok(s) => Ok(Target::Offline(s)),
            Err(crate::store::StoreError::Locked(_)) => {
                Err(ControlError::Orphaned(data_dir.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Sends one request to a running appliance and waits for its answer.
pub fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    match serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(e.to_string()))? {
        Response::Error { message } => Err(ControlError::Refused(message)),
        r => Ok(r),
    }
}

/// `forecourt status`: from the running appliance, or from the store.
pub fn status(
    data_dir: &Path,
    engine: crate::store::EngineKind,
) -> Result<StatusReport, ControlError> {
    match Target::find(data_dir, engine)? {
        Target::Running(path) => match request(&path, &Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(ControlError::Protocol(format!(
                "unexpected answer {other:?}"
            ))),
        },
        Target::Offline(store) => {
            let totals = crate::ingest::Totals::load(&store)?;
            Ok(StatusReport {
                running: false,
                totals: totals.snapshot().into(),
                links: Vec::new(),
                store_error: None,
                disk_bytes: store.disk_size().ok(),
            })
        }
    }
}
