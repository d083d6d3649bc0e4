//! Who is using the web UI (issue 4, "Security"): staff log in with a name
//! and an Argon2id-hashed password, and a browser then carries a session
//! cookie. Every page behind [`gate`] needs a live session; every
//! state-changing form goes through [`StaffForm`], which also checks that
//! the request comes from one of the appliance's own pages (the `Origin`
//! and `Sec-Fetch-Site` headers) and carries the session's CSRF token.
//! Logins are rate limited per name and address ([`Throttle`]). The first
//! admin is made at `/setup` with a one-time code that the appliance logs
//! and writes to its data directory on a start with no users.
//!
//! The cookie holds 32 random bytes; the store keeps only their SHA-256,
//! so a copy of the store replays no session. A session ends after
//! [`IDLE_MS`] without a request or [`MAX_AGE_MS`] after login, whichever
//! comes first, and at once when its user is disabled. The JSON API keeps
//! its bearer tokens (`web::auth`); nothing here applies to it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Form, Router};
use rand::TryRngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::store::users::{SessionRecord, UserRecord};
use crate::store::{Store, StoreError};
use crate::web::auth::{Permission, Role};
use crate::web::{users, views, views_auth};

/// The session cookie's name.
pub const COOKIE: &str = "forecourt_session";
/// A session unused this long is over: a working day and then some.
pub const IDLE_MS: u64 = 12 * HOUR_MS;
/// A session is over this long after login, however busy.
pub const MAX_AGE_MS: u64 = 7 * 24 * HOUR_MS;
/// A session's last-seen time is written at most this often, so that
/// browsing the pages does not write to the SD card on every request.
pub const TOUCH_EVERY_MS: u64 = 5 * 60 * 1000;
/// Failed logins allowed per name and address in [`FAILURE_WINDOW_MS`].
pub const MAX_FAILURES: u32 = 5;
/// The window in which [`MAX_FAILURES`] are counted, from the first.
pub const FAILURE_WINDOW_MS: u64 = 15 * 60 * 1000;
/// Name-and-address pairs the throttle remembers (bounded: a flood of
/// made-up names evicts the oldest entries, not the appliance's memory).
pub const THROTTLE_ENTRIES: usize = 4096;
/// The file in the data directory that holds the one-time setup code.
pub const SETUP_CODE_FILE: &str = "setup-code";
const HOUR_MS: u64 = 3_600_000;
/// The throttle key of setup attempts, which no user name can equal (names
/// hold no `#`).
const SETUP_THROTTLE_NAME: &str = "#setup";

// ---- Errors ----

/// Why a page request was refused, as the page says it.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No live session: a page (GET, HEAD) redirects to the login form,
    /// anything else is refused.
    #[error("log in first")]
    NoSession { page: bool },
    /// 403: the request did not come from one of the appliance's pages.
    #[error("this request did not come from a Forecourt page (cross-site requests are refused)")]
    CrossSite,
    /// 403: the form's CSRF token is missing or wrong.
    #[error("this form has expired or was not made by Forecourt: reload the page and try again")]
    Csrf,
    /// 403: the user's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 400: an address the page cannot show, e.g. an unknown filter.
    #[error("{0}")]
    BadRequest(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 422: the form could not be read at all.
    #[error("the form could not be read: {0}")]
    BadForm(String),
    /// 503: the store cannot be used now.
    #[error("the store cannot be used right now; try again later ({0})")]
    Unavailable(String),
    /// 500: a bug; the log says more.
    #[error("the request could not be carried out")]
    Internal,
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::NoSession { .. }
            | WebError::CrossSite
            | WebError::Csrf
            | WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadForm(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::NoSession { page: true } = self {
            return Redirect::to("/login").into_response();
        }
        let status = self.status();
        let mut response = (status, views::error(status, &self.to_string())).into_response();
        no_store(&mut response);
        response
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "a page request failed on the store");
        WebError::Unavailable(e.to_string())
    }
}

impl From<AuthError> for WebError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "a page request failed");
                WebError::Internal
            }
        }
    }
}

/// Why a password, a session or the setup code could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error("the password could not be hashed: {0}")]
    Hash(String),
    #[error("cannot write the setup code to {path}: {source}")]
    SetupFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pages that hold what a person is doing must not be kept by a cache.
fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Runs store work and Argon2 (tens of milliseconds by design) off the
/// async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a page's blocking work panicked");
        Err(WebError::Internal)
    })
}

// ---- Secrets ----

fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit, so the time taken does not tell how many
/// leading bytes matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Argon2id with the argon2 crate's defaults (19 MiB, 2 passes, 1 lane:
/// the first of OWASP's Password Storage Cheat Sheet settings for Argon2id).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt_bytes: [u8; 16] = random()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`; a malformed hash
/// matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash cannot be read");
            false
        }
    }
}

/// A hash that no password is tried against successfully, with the same
/// cost as a real one: an unknown name costs a login as much time as a
/// known one, so the time taken does not tell which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let password = random::<32>().map(|b| to_hex(&b)).unwrap_or_default();
        hash_password(&password).unwrap_or_default()
    })
}

fn session_key(id: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(id).into()
}

// ---- Sessions ----

/// A logged-in member of staff, as the pages see them.
#[derive(Clone, Debug)]
pub struct Staff {
    pub name: String,
    pub display_name: String,
    pub role: Role,
    /// The session's CSRF token, in hex, for the forms a page shows.
    pub csrf: String,
    key: [u8; 32],
}

impl Staff {
    pub fn can(&self, p: Permission) -> bool {
        self.role.can(p)
    }

    /// 403 unless the role may do `p`; `what` completes "may not ...".
    pub fn require(&self, p: Permission, what: &str) -> Result<(), WebError> {
        if self.can(p) {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "the {} role may not {what}",
                self.role.as_str()
            )))
        }
    }

    /// The key of this browser's session in the store.
    pub fn session_key(&self) -> [u8; 32] {
        self.key
    }
}

/// The session id of the request's cookie, if it carries a well-formed one.
fn cookie_id(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| from_hex(value.trim()))
}

/// `Set-Cookie` for a new session: the browser sends it back only to this
/// appliance, only on same-site requests, and no script can read it. No
/// `Secure`: the appliance serves plain HTTP on the workshop's LAN.
fn session_cookie(id: &[u8; 32]) -> HeaderValue {
    let value = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", to_hex(id));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("forecourt_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether a session seen last at `last_seen_ms`, made at `created_ms`, is
/// still live at `now_ms`.
pub fn session_live(s: &SessionRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(s.last_seen_ms) < IDLE_MS
        && now_ms.saturating_sub(s.created_ms) < MAX_AGE_MS
}

/// The member of staff a session id stands for at `now_ms`, if any. Ends
/// sessions found expired or whose user is gone or disabled.
pub fn lookup(store: &Store, id: &[u8; 32], now_ms: u64) -> Result<Option<Staff>, StoreError> {
    let key = session_key(id);
    let Some(session) = store.session(&key)? else {
        return Ok(None);
    };
    let user = store.user(&session.user)?;
    let user = match user {
        Some(u) if !u.disabled && session_live(&session, now_ms) => u,
        _ => {
            store.write(|tx| tx.delete_session(&key))?;
            return Ok(None);
        }
    };
    if now_ms.saturating_sub(session.last_seen_ms) >= TOUCH_EVERY_MS {
        let touched = SessionRecord {
            last_seen_ms: now_ms,
            ..session.clone()
        };
        store.write(|tx| {
            // Not if it was ended meanwhile (logout in another tab).
            if tx.session(&key)?.is_some() {
                tx.put_session(&key, &touched)?;
            }
            Ok(())
        })?;
    }
    Ok(Some(Staff {
        name: user.name,
        display_name: user.display_name,
        role: user.role,
        csrf: to_hex(&session.csrf),
        key,
    }))
}

/// Starts a session for `user`; returns the cookie's id. Expired sessions
/// are dropped on the way, so the table holds only live ones and a few
/// stale ones between logins.
pub fn start_session(store: &Store, user: &str, now_ms: u64) -> Result<[u8; 32], AuthError> {
    let id: [u8; 32] = random()?;
    let record = SessionRecord {
        user: crate::store::users::user_key(user),
        csrf: random()?,
        created_ms: now_ms,
        last_seen_ms: now_ms,
    };
    store.write(|tx| {
        tx.delete_sessions_where(|_, s| !session_live(s, now_ms))?;
        tx.put_session(&session_key(&id), &record)
    })?;
    Ok(id)
}

/// Ends every session of `user` but `keep` (when a password is reset or a
/// user disabled).
pub fn end_sessions(
    tx: &mut crate::store::WriteTx<'_>,
    user: &str,
    keep: Option<&[u8; 32]>,
) -> Result<usize, StoreError> {
    let user = crate::store::users::user_key(user);
    tx.delete_sessions_where(|key, s| s.user == user && keep.is_none_or(|k| key != k.as_slice()))
}

async fn staff_of(parts: &Parts, state: &Arc<AppState>) -> Result<Staff, WebError> {
    let page = parts.method == Method::GET || parts.method == Method::HEAD;
    let id = cookie_id(&parts.headers).ok_or(WebError::NoSession { page })?;
    let store = state.store.clone();
    let now = state.clock.now_ms();
    blocking(move || Ok(lookup(&store, &id, now)?))
        .await?
        .ok_or(WebError::NoSession { page })
}

impl FromRequestParts<Arc<AppState>> for Staff {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, WebError> {
        // The gate has looked the session up already on routes behind it.
        if let Some(staff) = parts.extensions.get::<Staff>() {
            return Ok(staff.clone());
        }
        staff_of(parts, state).await
    }
}

/// Refuses every request without a live session before it reaches its
/// handler: a route added behind it is closed by default, whatever its
/// handler takes.
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match staff_of(&parts, &state).await {
        Ok(staff) => {
            parts.extensions.insert(staff);
            let mut response = next.run(Request::from_parts(parts, body)).await;
            no_store(&mut response);
            response
        }
        Err(e) => e.into_response(),
    }
}

// ---- Forms that change something ----

/// A form that carries the session's CSRF token in a field named `csrf`.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A state-changing form from a logged-in member of staff, checked in
/// order: the session, that it comes from this appliance's own page, then
/// its CSRF token. Only then does its handler see it.
pub struct StaffForm<T> {
    pub staff: Staff,
    pub form: T,
}

/// Whether a request's `Sec-Fetch-Site` and `Origin` (when the browser
/// sends them; every current one does on a POST) say it comes from a page
/// of this appliance. A request with neither (curl, an old browser) still
/// needs the CSRF token, which only a page of this appliance can show.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        // "none": typed by the user or a bookmark, not made by another site.
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    let host = host.trim();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

impl<T> FromRequest<Arc<AppState>> for StaffForm<T>
where
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = WebError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, WebError> {
        let (mut parts, body) = request.into_parts();
        let staff = Staff::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers) {
            return Err(WebError::CrossSite);
        }
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| WebError::BadForm(e.body_text()))?;
        if !constant_time_eq(form.csrf().as_bytes(), staff.csrf.as_bytes()) {
            return Err(WebError::Csrf);
        }
        Ok(StaffForm { staff, form })
    }
}

// ---- Login rate limiting ----

#[derive(Clone, Copy, Debug)]
struct Failures {
    first_ms: u64,
    count: u32,
}

/// Failed logins per (name, address): [`MAX_FAILURES`] in
/// [`FAILURE_WINDOW_MS`] from the first, then refused until the window
/// ends. Per name and address, so that a guesser elsewhere on the LAN
/// cannot lock a colleague out. Kept in memory: a restart forgives.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// How long until `name` may be tried again from `ip`, if it may not now.
    pub fn blocked_for(&self, name: &str, ip: IpAddr, now_ms: u64) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.get(&(name.to_owned(), ip))?;
        let ends = f.first_ms.saturating_add(FAILURE_WINDOW_MS);
        (f.count >= MAX_FAILURES && now_ms < ends).then(|| ends - now_ms)
    }

    pub fn failed(&self, name: &str, ip: IpAddr, now_ms: u64) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= THROTTLE_ENTRIES && !map.contains_key(&(name.to_owned(), ip)) {
            map.retain(|_, f| now_ms < f.first_ms.saturating_add(FAILURE_WINDOW_MS));
            if map.len() >= THROTTLE_ENTRIES {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, f)| f.first_ms)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        let f = map.entry((name.to_owned(), ip)).or_insert(Failures {
            first_ms: now_ms,
            count: 0,
        });
        if now_ms >= f.first_ms.saturating_add(FAILURE_WINDOW_MS) {
            *f = Failures {
                first_ms: now_ms,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    pub fn succeeded(&self, name: &str, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(name.to_owned(), ip));
    }
}

fn client_ip(parts_extensions: &axum::http::Extensions) -> IpAddr {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn too_many(ms: u64) -> String {
    let minutes = ms.div_ceil(60_000).max(1);
    format!(
        "Too many failed attempts for this name from this computer: try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    )
}

// ---- Login, logout ----

/// The routes open without a session: the login and setup forms.
pub fn open_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/setup", get(setup_form).post(setup))
        .layer(Extension(Arc::new(Throttle::new())))
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub password: String,
}

fn page(status: StatusCode, markup: maud::Markup) -> Response {
    let mut response = (status, markup).into_response();
    no_store(&mut response);
    response
}

async fn login_form(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, WebError> {
    let (parts, _) = request.into_parts();
    if let Ok(staff) = staff_of(&parts, &state).await {
        return Ok(page(StatusCode::OK, views_auth::logged_in(&staff)));
    }
    let store = state.store.clone();
    let first = !blocking(move || Ok(store.has_users()?)).await?;
    if first {
        return Ok(Redirect::to("/setup").into_response());
    }
    Ok(page(StatusCode::OK, views_auth::login(None, "")))
}

async fn login(
    State(state): State<Arc<AppState>>,
    Extension(throttle): Extension<Arc<Throttle>>,
    request: Request,
) -> Result<Response, WebError> {
    let (parts, body) = request.into_parts();
    if !same_origin(&parts.headers) {
        return Err(WebError::CrossSite);
    }
    let ip = client_ip(&parts.extensions);
    let Form(form) = Form::<LoginForm>::from_request(Request::from_parts(parts, body), &state)
        .await
        .map_err(|e| WebError::BadForm(e.body_text()))?;
    let name = crate::store::users::user_key(&form.name);
    if name.is_empty() || form.password.is_empty() {
        let markup = views_auth::login(Some("Enter your name and password."), &form.name);
        return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, markup));
    }
    let now = state.clock.now_ms();
    if let Some(ms) = throttle.blocked_for(&name, ip, now) {
        let markup = views_auth::login(Some(&too_many(ms)), &form.name);
        let mut response = page(StatusCode::TOO_MANY_REQUESTS, markup);
        let secs = HeaderValue::from(ms.div_ceil(1000));
        response.headers_mut().insert(header::RETRY_AFTER, secs);
        return Ok(response);
    }
    let store = state.store.clone();
    let key = name.clone();
    let session = blocking(move || {
        let user = store.user(&key)?;
        // The hash is checked whatever the record says, and a decoy when
        // there is none, so that every refusal takes as long.
        let hash = user
            .as_ref()
            .map_or(decoy_hash(), |u| u.password_hash.as_str());
        let matches = verify_password(hash, &form.password);
        match user {
            Some(u) if matches && !u.disabled => Ok(Some(start_session(&store, &u.name, now)?)),
            _ => Ok(None),
        }
    })
    .await?;
    match session {
        Some(id) => {
            throttle.succeeded(&name, ip);
            tracing::info!(user = %name, "logged in");
            let mut response = Redirect::to("/").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&id));
            Ok(response)
        }
        None => {
            throttle.failed(&name, ip, now);
            tracing::info!(user = %name, %ip, "login refused");
            let markup = views_auth::login(
                Some("Wrong name or password, or the account is disabled."),
                &form.name,
            );
            Ok(page(StatusCode::UNAUTHORIZED, markup))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /logout`: ends this browser's session.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    f: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    let key = f.staff.session_key();
    let store = state.store.clone();
    blocking(move || Ok(store.write(|tx| tx.delete_session(&key))?)).await?;
    tracing::info!(user = %f.staff.name, "logged out");
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie());
    Ok(response)
}

// ---- First start ----

/// Where the setup code is written.
pub fn setup_code_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SETUP_CODE_FILE)
}

/// On a start with no users, makes a new one-time setup code, writes it
/// to the data directory (owner-only) and returns it for the log; with
/// users, removes a stale code file and returns `None`.
pub fn prepare_setup_code(store: &Store, data_dir: &Path) -> Result<Option<String>, AuthError> {
    let path = setup_code_path(data_dir);
    if store.has_users()? {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    // 16 characters of Crockford's base32 (no I, L, O or U): 80 bits.
    let bytes: [u8; 16] = random()?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| CROCKFORD[usize::from(b % 32)] as char)
        .collect();
    let code = chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-");
    write_owner_only(&path, &format!("{code}\n"))
        .map_err(|source| AuthError::SetupFile { path, source })?;
    Ok(Some(code))
}

fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An older file keeps its mode through `open`: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The setup code's alphabet (https://www.crockford.com/base32.html).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Codes are compared as Crockford's base32 reads them: without case,
/// dashes or spaces, O as 0 and I or L as 1, as people type them.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .map(|c| match c {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub password_again: String,
}

async fn setup_form(State(state): State<Arc<AppState>>) -> Result<Response, WebError> {
    let store = state.store.clone();
    if blocking(move || Ok(store.has_users()?)).await? {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(page(
        StatusCode::OK,
        views_auth::setup(None, &SetupForm::default()),
    ))
}

async fn setup(
    State(state): State<Arc<AppState>>,
    Extension(throttle): Extension<Arc<Throttle>>,
    request: Request,
) -> Result<Response, WebError> {
    let (parts, body) = request.into_parts();
    if !same_origin(&parts.headers) {
        return Err(WebError::CrossSite);
    }
    let ip = client_ip(&parts.extensions);
    let Form(form) = Form::<SetupForm>::from_request(Request::from_parts(parts, body), &state)
        .await
        .map_err(|e| WebError::BadForm(e.body_text()))?;
    let now = state.clock.now_ms();
    let refuse = |status: StatusCode, message: &str, form: &SetupForm| {
        let shown = SetupForm {
            password: String::new(),
            password_again: String::new(),
            ..clone_setup(form)
        };
        Ok(page(status, views_auth::setup(Some(message), &shown)))
    };
    if let Some(ms) = throttle.blocked_for(SETUP_THROTTLE_NAME, ip, now) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, &too_many(ms), &form);
    }
    let path = setup_code_path(&state.settings.data_dir);
    let expected = std::fs::read_to_string(&path)
        .map(|c| normalize_code(&c))
        .unwrap_or_default();
    let given = normalize_code(&form.code);
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        throttle.failed(SETUP_THROTTLE_NAME, ip, now);
        let message = if expected.is_empty() {
            "There is no setup code: setup is done, or restart the appliance to get a new code."
        } else {
            "That is not the setup code. It is in the log and in the file setup-code in the data directory."
        };
        return refuse(StatusCode::FORBIDDEN, message, &form);
    }
    let new = match users::parse_new_user(
        &form.name,
        &form.display_name,
        Role::Admin,
        &form.password,
        &form.password_again,
    ) {
        Ok(n) => n,
        Err(message) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, &message, &form),
    };
    let store = state.store.clone();
    let created = blocking(move || {
        let record = UserRecord {
            name: new.name.clone(),
            display_name: new.display_name,
            role: Role::Admin,
            password_hash: hash_password(&new.password)?,
            disabled: false,
            created_ms: now,
            updated_ms: now,
        };
        let created = store.write(|tx| {
            // Two tabs with the code: only the first makes an admin.
            if tx.has_users()? {
                return Ok(false);
            }
            tx.put_user(&record)?;
            Ok(true)
        })?;
        if !created {
            return Ok(None);
        }
        Ok(Some((
            new.name.clone(),
            start_session(&store, &new.name, now)?,
        )))
    })
    .await?;
    let Some((name, id)) = created else {
        return refuse(
            StatusCode::CONFLICT,
            "Setup is done: an admin exists. Log in instead.",
            &form,
        );
    };
    // The code has done its one job.
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, path = %path.display(), "cannot remove the used setup code");
    }
    tracing::info!(user = %name, "first admin created with the setup code");
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&id));
    Ok(response)
}

fn clone_setup(f: &SetupForm) -> SetupForm {
    SetupForm {
        code: f.code.clone(),
        name: f.name.clone(),
        display_name: f.display_name.clone(),
        password: f.password.clone(),
        password_again: f.password_again.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let same = |a: &str, b: &str| constant_time_eq(a.as_bytes(), b.as_bytes());
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "abcd"));
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
    const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 21));

    #[test]
    fn five_failures_block_the_name_from_that_address_for_the_window() {
        let t = Throttle::new();
        for i in 0..MAX_FAILURES as u64 {
            assert_eq!(t.blocked_for("ines", IP, 1000 + i), None);
            t.failed("ines", IP, 1000 + i);
        }
        assert_eq!(
            t.blocked_for("ines", IP, 1000 + 5),
            Some(FAILURE_WINDOW_MS - 5)
        );
        assert_eq!(
            t.blocked_for("ines", OTHER_IP, 1005),
            None,
            "another computer"
        );
        assert_eq!(t.blocked_for("bruno", IP, 1005), None, "another name");
        assert_eq!(
            t.blocked_for("ines", IP, 1000 + FAILURE_WINDOW_MS),
            None,
            "the window is over"
        );
    }

    #[test]
    fn a_success_forgives_and_old_failures_expire() {
        let t = Throttle::new();
        for _ in 0..4 {
            t.failed("ines", IP, 0);
        }
        t.succeeded("ines", IP);
        t.failed("ines", IP, 1);
        assert_eq!(t.blocked_for("ines", IP, 2), None);
        for _ in 0..4 {
            t.failed("ines", IP, FAILURE_WINDOW_MS + 10);
        }
        // The first failure was in an earlier window: four in this one.
        assert_eq!(t.blocked_for("ines", IP, FAILURE_WINDOW_MS + 11), None);
    }

    #[test]
    fn the_throttle_is_bounded() {
        let t = Throttle::new();
        for i in 0..(THROTTLE_ENTRIES as u64 + 10) {
            t.failed(&format!("n{i}"), IP, i);
        }
        let n = t.failures.lock().unwrap().len();
        assert_eq!(n, THROTTLE_ENTRIES);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn session_cookies_are_http_only_and_strict() {
        let v = session_cookie(&[0xab; 32]);
        let v = v.to_str().unwrap();
        assert!(v.starts_with(&format!("{COOKIE}={}", "ab".repeat(32))));
        assert!(
            v.contains("; HttpOnly") && v.contains("; SameSite=Strict") && v.contains("; Path=/")
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {v}")).unwrap(),
        );
        assert_eq!(cookie_id(&h), Some([0xab; 32]));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("forecourt_session=zz"),
        );
        assert_eq!(cookie_id(&h), None);
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let s = SessionRecord {
            user: "a".into(),
            csrf: [0; 32],
            created_ms: 0,
            last_seen_ms: 0,
        };
        assert!(session_live(&s, IDLE_MS - 1));
        assert!(!session_live(&s, IDLE_MS));
        let busy = SessionRecord {
            last_seen_ms: MAX_AGE_MS - 1,
            ..s
        };
        assert!(!session_live(&busy, MAX_AGE_MS));
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&headers(&[("host", "pi:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "pi:8080"),
            ("origin", "http://pi:8080"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "pi:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "pi:8080"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "pi:8080"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "pi:8080"),
            ("sec-fetch-site", "same-site")
        ])));
    }

    #[test]
    fn setup_codes_are_written_owner_only_and_only_without_users() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::EngineKind::Redb).unwrap();
        let code = prepare_setup_code(&store, dir.path())
            .unwrap()
            .expect("no users yet");
        assert_eq!(code.len(), 19, "{code}");
        let path = setup_code_path(dir.path());
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), code);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            normalize_code(&code.to_lowercase().replace('-', " ")),
            normalize_code(&code)
        );
        assert_eq!(normalize_code("o1l-I"), "0111");
        let again = prepare_setup_code(&store, dir.path()).unwrap().unwrap();
        assert_ne!(again, code, "a new code at each start");
        store
            .write(|tx| {
                tx.put_user(&UserRecord {
                    name: "a".into(),
                    display_name: "A".into(),
                    role: Role::Admin,
                    password_hash: String::new(),
                    disabled: false,
                    created_ms: 0,
                    updated_ms: 0,
                })
            })
            .unwrap();
        assert_eq!(prepare_setup_code(&store, dir.path()).unwrap(), None);
        assert!(!path.exists(), "a stale code is removed");
    }
}
