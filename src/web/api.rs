//! The JSON API under `/api/v1`: SPEC.md's last section is a contract that
//! tools outside the project rely on, so every key, status and spelling
//! here follows it, and docs/api.md says the rest. Every route answers
//! JSON, errors included (`{"error": "..."}`): axum's own rejections are
//! plain text, so this module reads queries, paths and bodies itself.
//!
//! A request is checked in a fixed order: the token (401), the role (403),
//! the path (404), the query (400) or the body (413, 415, 422), then the
//! change itself (404, 409, 422). Reads run on blocking threads (a store
//! read may wait on the SD card); changes go to ingest, the one writer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::app::AppState;
use crate::domain::catalog::Catalog;
use crate::domain::consent::{self, ConsentState, Gate};
use crate::domain::customer::InvitationState;
use crate::domain::lead::{Lead, LeadEvent, LeadEventKind, LeadStatus, LeadType, Subject};
use crate::domain::vehicle::Vehicle;
use crate::ingest::{Action, Outcome};
use crate::leads::{ActionError, LeadAction};
use crate::link::message::Vin;
use crate::store::leads::{CustomerMessage, LeadFilter};
use crate::store::{Store, StoreError};
use crate::web::auth::{self, Caller, Permission};

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Largest request body, as for every other route.
pub const MAX_BODY: usize = super::MAX_BODY;
/// Longest note, close reason or message text, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest assignee name, in characters.
pub const MAX_USER_CHARS: usize = 100;

/// The API's routes, under `/api/v1` (merged into `web::router`).
pub fn router() -> Router<Arc<AppState>> {
    let routes = Router::new()
        .route("/vehicles", get(vehicles))
        .route("/leads", get(leads))
        .route("/leads/{id}", get(lead))
        .route("/leads/{id}/assign", post(assign))
        .route("/leads/{id}/close", post(close))
        .route("/leads/{id}/reopen", post(reopen))
        .route("/leads/{id}/note", post(note))
        .route("/leads/{id}/message", post(message))
        .route("/dashboard", get(dashboard))
        .route("/bookings", get(bookings))
        .route("/customers", get(customers))
        .route("/customers/{id}", get(customer))
        .route("/customers/{id}/invitations", post(invite))
        .route("/invitations/{id}/events", post(invitation_event))
        // Set after the routes: it applies to the routes already added.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route);
    // A nested router's fallback takes `/api/v1` and `/api/v1/...` but not
    // `/api/v1/`, which would otherwise get the status page's HTML 404.
    Router::new()
        .nest("/api/v1", routes)
        .route("/api/v1/", any(no_route))
}

// ---- Errors ----

/// Everything the API answers with an error status, as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a query parameter (or the query string) is wrong.
    #[error("{0}")]
    BadQuery(String),
    /// 400: the body could not be read off the connection.
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    /// 401: no token, or one that is not valid.
    #[error("{message}")]
    Unauthorized { message: String, presented: bool },
    /// 403: the token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such lead, or no such route.
    #[error("{0}")]
    NotFound(String),
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// 409: the change conflicts with the record's state.
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is over the limit of {MAX_BODY} bytes")]
    TooLarge,
    /// 415: a body that is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the body is not valid JSON, or not what this route takes.
    #[error("{0}")]
    Unprocessable(String),
    /// 503: the store cannot be used now (full disk, I/O error, stopping).
    #[error("the store cannot be used right now; try again later ({0})")]
    Unavailable(String),
    /// 500: a bug; the log says more.
    #[error("the request could not be carried out")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadQuery(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json(
            self.status(),
            &ErrorBody {
                error: self.to_string(),
            },
        );
        if let ApiError::Unauthorized { presented, .. } = self {
            // RFC 6750 section 3: what a client without a valid token should send.
            let value = if presented {
                r#"Bearer realm="forecourt", error="invalid_token""#
            } else {
                r#"Bearer realm="forecourt""#
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The store refuses what the rules should have refused: a
            // second open lead for one key.
            StoreError::Aborted(message) => ApiError::Conflict(message),
            other => {
                tracing::warn!(error = %other, "API request failed on the store");
                ApiError::Unavailable(other.to_string())
            }
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound(m) => ApiError::NotFound(m),
            ActionError::Conflict(m) => ApiError::Conflict(m),
            ActionError::Invalid(m) => ApiError::Unprocessable(m),
            ActionError::Store(e) => e.into(),
        }
    }
}

/// A JSON answer that no cache keeps (the figures change as data arrives).
fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "an API answer could not be encoded");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"internal error"}"#,
            )
                .into_response()
        }
    }
}

/// Runs a store read on a blocking thread.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => {
            tracing::error!(error = %e, "an API read panicked");
            Err(ApiError::Internal)
        }
    }
}

// ---- Who is asking ----

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized {
                message: "this API needs a token: send Authorization: Bearer TOKEN (make one with forecourt token create)"
                    .into(),
                presented: false,
            });
        };
        let refused = || {
            ApiError::Unauthorized {
            message: "the token is not valid: send Authorization: Bearer TOKEN with a token from forecourt token create"
                .into(),
            presented: true,
        }
        };
        let token = value
            .to_str()
            .ok()
            .and_then(auth::bearer)
            .ok_or_else(refused)?
            .to_owned();
        let store = state.store.clone();
        blocking(move || auth::authenticate(&store, &token))
            .await?
            .ok_or_else(refused)
    }
}

fn require(caller: &Caller, p: Permission, what: &str) -> Result<(), ApiError> {
    if caller.can(p) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the {} role may not {what}",
            caller.role.as_str()
        )))
    }
}

/// The `{id}` of a lead route, checked only after the role is (so a
/// refused caller learns nothing of which leads exist).
pub struct LeadPath(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for LeadPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(LeadPath(
            Path::<String>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|p| p.0),
        ))
    }
}

impl LeadPath {
    fn id(&self) -> Result<u64, ApiError> {
        let raw = self.0.as_deref().unwrap_or("");
        let digits = !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| raw.parse().ok())
            .flatten()
            .ok_or_else(|| ApiError::NotFound(format!("no lead {raw:?}")))
    }
}

// ---- Queries, pages and cursors ----

/// A query string's parameters; an empty value counts as absent (SPEC.md
/// writes `?type=&status=&device_id=`).
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Params, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::BadQuery(format!("the query string cannot be read: {e}")))?;
        let mut out = BTreeMap::new();
        for (key, value) in pairs {
            if !allowed.contains(&key.as_str()) {
                let takes = match allowed {
                    [] => "no query parameters".to_owned(),
                    names => names.join(", "),
                };
                return Err(ApiError::BadQuery(format!(
                    "unknown query parameter {key:?}: this endpoint takes {takes}"
                )));
            }
            if value.is_empty() {
                continue;
            }
            if out.insert(key.clone(), value).is_some() {
                return Err(ApiError::BadQuery(format!(
                    "query parameter {key:?} is given twice"
                )));
            }
        }
        Ok(Params(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn limit(&self) -> Result<usize, ApiError> {
        let Some(raw) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        let n = raw
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| raw.parse::<usize>().ok())
            .flatten();
        match n {
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadQuery(format!(
                "limit {raw:?}: a whole number from 1 to {MAX_LIMIT}"
            ))),
        }
    }

    /// The position a `cursor` parameter holds, for a list of `kind`.
    fn cursor(&self, kind: CursorKind) -> Result<Option<Vec<u64>>, ApiError> {
        self.get("cursor")
            .map(|raw| {
                kind.decode(raw).ok_or_else(|| {
                    ApiError::BadQuery(format!(
                        "cursor {raw:?} is not one this list gave out: pass the \"next\" of the previous page, unchanged"
                    ))
                })
            })
            .transpose()
    }
}

/// Cursors are opaque to clients: a tag for the list they belong to, then
/// the sort key of the last item returned, in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CursorKind {
    /// (opened_at ms, id)
    Leads,
    /// device id
    Vehicles,
    /// booking id
    Bookings,
    /// customer id
    Customers,
}

impl CursorKind {
    fn tag_and_words(self) -> (char, usize) {
        match self {
            CursorKind::Leads => ('l', 2),
            CursorKind::Vehicles => ('v', 1),
            CursorKind::Bookings => ('b', 1),
            CursorKind::Customers => ('c', 1),
        }
    }

    fn encode(self, words: &[u64]) -> String {
        let (tag, _) = self.tag_and_words();
        let mut s = tag.to_string();
        for w in words {
            s.push_str(&format!("{w:016x}"));
        }
        s
    }

    fn decode(self, raw: &str) -> Option<Vec<u64>> {
        let (tag, words) = self.tag_and_words();
        let hex = raw.strip_prefix(tag)?;
        if hex.len() != 16 * words || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        (0..words)
            .map(|i| u64::from_str_radix(&hex[16 * i..16 * (i + 1)], 16).ok())
            .collect()
    }
}

// ---- JSON bodies ----

/// Reads a JSON body of at most [`MAX_BODY`] bytes. An empty body reads
/// as `{}`, so `curl -X POST .../reopen` needs no body or header; any
/// other body must say `Content-Type: application/json` (415 otherwise).
async fn read_json<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge);
    }
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::Unprocessable(format!("the body is not valid: {e}")));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON sent with Content-Type: application/json, not {:?}",
            if content_type.is_empty() {
                "(none)"
            } else {
                content_type
            }
        )));
    }
    let invalid =
        |e: serde_json::Error| ApiError::Unprocessable(format!("the body is not valid: {e}"));
    // Parsed as a value first: serde would take `[]` for a struct whose
    // fields are all optional, and every body here is an object.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::Unprocessable(
            "the body must be a JSON object, e.g. {}".into(),
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// The body's bytes, refusing more than [`MAX_BODY`] as they arrive (a
/// chunked body has no length to check first).
async fn read_body(mut body: Body) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| ApiError::BadBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(ApiError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// A key that must be present, though its value may be `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    /// `null` (or "") unassigns.
    #[serde(default, deserialize_with = "present")]
    user: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    #[serde(default)]
    text: Option<String>,
}

/// Reopen takes no fields, but a body it is sent must still be JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

fn check_text(field: &str, text: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    if text.chars().count() > max {
        return Err(ApiError::Unprocessable(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(Some(text))
}

// ---- JSON shapes (docs/api.md) ----

/// RFC 3339 in UTC with milliseconds: lead times are the dongles' own
/// millisecond times, and whole seconds would make two leads opened in one
/// second look tied while the list orders them.
pub fn time(ms: u64) -> String {
    let whole = crate::clock::rfc3339(ms);
    format!("{}.{:03}Z", whole.trim_end_matches('Z'), ms % 1000)
}

#[derive(Serialize)]
pub struct LeadJson {
    pub id: String,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub status: &'static str,
    pub device_id: String,
    pub vin: Option<String>,
    pub lamp: Option<u8>,
    pub ecu: Option<u16>,
    pub code: Option<String>,
    pub class: Option<&'static str>,
    /// The raw ISO 14229-1 status byte of the latest report (error codes).
    pub dtc_status: Option<u8>,
    pub severity: Option<u8>,
    /// One line saying what the lead is about.
    pub summary: String,
    /// The catalog's (or the SAE group's) text for an error code.
    pub description: Option<String>,
    pub opened_at: String,
    pub closed_at: Option<String>,
    pub close_reason: Option<&'static str>,
    pub assignee: Option<String>,
    /// In currency units, e.g. 298.75.
    pub estimated_revenue: Option<f64>,
    pub notes: Vec<NoteJson>,
    pub history: Vec<EventJson>,
}

#[derive(Serialize)]
pub struct NoteJson {
    pub at: String,
    pub by: String,
    pub text: String,
}

/// One history entry; every key on every entry, null where it does not apply.
#[derive(Serialize)]
pub struct EventJson {
    pub at: String,
    /// The token or user, or null for the appliance's rules.
    pub by: Option<String>,
    pub event: &'static str,
    pub text: Option<String>,
    pub assignee: Option<String>,
    pub reason: Option<&'static str>,
    pub class: Option<&'static str>,
    pub dtc_status: Option<u8>,
    pub message_id: Option<String>,
}

fn event_json(e: &LeadEvent) -> EventJson {
    let mut j = EventJson {
        at: time(e.at_ms),
        by: e.by.clone(),
        event: "",
        text: None,
        assignee: None,
        reason: None,
        class: None,
        dtc_status: None,
        message_id: None,
    };
    j.event = match &e.kind {
        LeadEventKind::Opened => "opened",
        LeadEventKind::Progress(text) => {
            j.text = Some(text.clone());
            "progress"
        }
        LeadEventKind::Relit => "relit",
        LeadEventKind::ClassChanged { class, status } => {
            j.class = Some(class.as_str());
            j.dtc_status = Some(*status);
            "class_changed"
        }
        LeadEventKind::Assigned { to: Some(to) } => {
            j.assignee = Some(to.clone());
            "assigned"
        }
        LeadEventKind::Assigned { to: None } => "unassigned",
        LeadEventKind::Closed { reason, note } => {
            j.reason = Some(reason.as_str());
            j.text = note.clone();
            "closed"
        }
        LeadEventKind::Reopened => "reopened",
        LeadEventKind::Note(text) => {
            j.text = Some(text.clone());
            "note"
        }
        LeadEventKind::Messaged { message_id } => {
            j.message_id = Some(message_id.to_string());
            "messaged"
        }
    };
    j
}

pub fn lead_json(l: &Lead) -> LeadJson {
    let (lamp, ecu, code) = match l.key.subject {
        Subject::None => (None, None, None),
        Subject::Lamp(lamp) => (Some(lamp), None, None),
        Subject::Code { ecu, dtc } => (None, Some(ecu), Some(dtc.to_string())),
    };
    LeadJson {
        id: l.id.to_string(),
        ty: l.key.ty.as_str(),
        status: match l.status {
            LeadStatus::Open => "open",
            LeadStatus::Closed => "closed",
        },
        device_id: l.device_id.to_string(),
        vin: l.vin.map(|v| v.to_string()),
        lamp,
        ecu,
        code,
        class: l.class.map(|c| c.as_str()),
        dtc_status: l.status_byte,
        severity: l.severity,
        summary: crate::leads::describe(l),
        description: l.description.clone(),
        opened_at: time(l.opened_at_ms),
        closed_at: l.closed_at_ms.map(time),
        close_reason: l.close_reason.map(|r| r.as_str()),
        assignee: l.assignee.clone(),
        estimated_revenue: l.estimated_revenue_cents.map(|c| c as f64 / 100.0),
        notes: l
            .notes
            .iter()
            .map(|n| NoteJson {
                at: time(n.at_ms),
                by: n.by.clone(),
                text: n.text.clone(),
            })
            .collect(),
        history: l.history.iter().map(event_json).collect(),
    }
}

#[derive(Serialize)]
pub struct VehicleJson {
    pub device_id: String,
    pub vin: Option<String>,
    pub brand: Option<String>,
    /// From the DMS import or the staff (R-VEH-1); null when not registered.
    pub model: Option<String>,
    pub model_year: Option<u16>,
    /// The registered vehicle's customer, when it has one.
    pub customer_id: Option<String>,
    pub odometer_km: Option<u32>,
    pub first_seen: String,
    pub last_seen: String,
    pub on_lot: bool,
    pub open_leads: usize,
    /// `granted`, `pending`, `denied` or `not_required` (R-VEH-4).
    pub consent: &'static str,
    pub battery_v: Option<f64>,
    pub lamps: Vec<u8>,
    pub firmware: Option<String>,
}

/// The model year coded in a VIN's 10th character (ISO 3779, 49 CFR
/// 565.15): 30 codes in a 30-year cycle from 1980, read as the most recent
/// year not after next year (a car sold now may carry next year's code).
/// `None` for a character that codes no year (0, I, O, Q, U, Z), which
/// many European VINs hold there.
pub fn model_year(vin: &Vin, now_ms: u64) -> Option<u16> {
    const CODES: &[u8; 30] = b"ABCDEFGHJKLMNPRSTVWXY123456789";
    let position = CODES
        .iter()
        .position(|&c| c == vin.0[9].to_ascii_uppercase())?;
    let first = 1980 + position as u64;
    // The year is the first four characters of the RFC 3339 form.
    let this_year: u64 = crate::clock::rfc3339(now_ms).get(..4)?.parse().ok()?;
    let latest = this_year + 1;
    (first <= latest)
        .then(|| first + (latest - first) / 30 * 30)
        .and_then(|y| u16::try_from(y).ok())
}

/// What describing a vehicle needs besides the vehicle.
pub struct VehicleContext {
    pub catalog: Catalog,
    pub consent_brands: Vec<String>,
    pub now_ms: u64,
    pub on_lot_ms: u64,
}

impl VehicleContext {
    pub fn read(state: &AppState) -> Result<VehicleContext, StoreError> {
        Ok(VehicleContext {
            catalog: crate::ingest::catalog_in_use(&state.store)?,
            consent_brands: state.settings.consent_brands.clone(),
            now_ms: state.clock.now_ms(),
            on_lot_ms: state.settings.on_lot_ms,
        })
    }
}

/// A vehicle as the API and the pages describe it.
pub fn vehicle_json(
    store: &Store,
    cx: &VehicleContext,
    v: &Vehicle,
) -> Result<VehicleJson, StoreError> {
    let brand = v.vin.as_ref().and_then(|vin| cx.catalog.brand_of(vin));
    let decision = match &v.vin {
        Some(vin) => store.consent(vin)?.map(|c| c.state),
        None => None,
    };
    let consent = match consent::gate(
        v.hello_seen,
        v.vin.as_ref(),
        brand,
        &cx.consent_brands,
        decision,
    ) {
        // Not yet heard in a HELLO: held back until it says which vehicle it is in.
        Gate::NoHello => ConsentState::Pending.as_str(),
        Gate::AwaitingConsent(state) => state.as_str(),
        Gate::Open if decision == Some(ConsentState::Granted) => ConsentState::Granted.as_str(),
        Gate::Open => "not_required",
    };
    // What the DMS or the staff registered for this VIN wins over what
    // the VIN itself says (R-VEH-1).
    let registered = match &v.vin {
        Some(vin) => store.registered_vehicle(vin)?,
        None => None,
    };
    let registered = registered.as_ref();
    Ok(VehicleJson {
        device_id: v.device_id.to_string(),
        vin: v.vin.map(|vin| vin.to_string()),
        brand: registered
            .and_then(|r| r.brand.clone())
            .or(brand.map(str::to_owned)),
        model: registered.and_then(|r| r.model.clone()),
        model_year: registered
            .and_then(|r| r.model_year)
            .or(v.vin.as_ref().and_then(|vin| model_year(vin, cx.now_ms))),
        customer_id: registered
            .and_then(|r| r.customer_id)
            .map(|id| id.to_string()),
        odometer_km: v.odometer_km,
        first_seen: time(v.first_seen_ms),
        last_seen: time(v.last_seen_ms),
        on_lot: v.on_lot(cx.now_ms, cx.on_lot_ms),
        open_leads: store.open_leads_of(v.device_id)?.len(),
        consent,
        battery_v: v.battery_mv.map(|mv| mv as f64 / 1000.0),
        lamps: v.lamps.iter().copied().collect(),
        firmware: v.firmware.map(|f| f.to_string()),
    })
}

#[derive(Serialize)]
struct LeadList {
    leads: Vec<LeadJson>,
    next: Option<String>,
}

#[derive(Serialize)]
struct VehicleList {
    vehicles: Vec<VehicleJson>,
    next: Option<String>,
}

/// A booking as `GET /bookings` will list it (issue: appointments).
#[derive(Serialize)]
struct BookingJson {
    id: String,
    status: &'static str,
    list: Option<&'static str>,
}

#[derive(Serialize)]
struct BookingList {
    bookings: Vec<BookingJson>,
    next: Option<String>,
}

#[derive(Serialize)]
struct LeadAnswer {
    lead: LeadJson,
}

#[derive(Serialize)]
struct MessageJson {
    id: String,
    lead_id: Option<String>,
    device_id: String,
    text: String,
    by: String,
    created_at: String,
    /// `queued`, `sent` or `delivered` (R-CONV-1).
    delivery: crate::store::leads::Delivery,
}

#[derive(Serialize)]
struct MessageAnswer {
    message: MessageJson,
    lead: LeadJson,
}

fn message_json(m: &CustomerMessage) -> MessageJson {
    MessageJson {
        id: m.id.to_string(),
        lead_id: m.lead_id.map(|id| id.to_string()),
        device_id: m.device_id.to_string(),
        text: m.text.clone(),
        by: m.by.clone(),
        created_at: time(m.created_ms),
        delivery: m.delivery,
    }
}

// ---- Reads ----

async fn vehicles(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read vehicles")?;
    let params = Params::parse(&uri, &["limit", "cursor"])?;
    let limit = params.limit()?;
    let after = params.cursor(CursorKind::Vehicles)?.map(|w| w[0]);
    let store = state.store.clone();
    let consent_brands = state.settings.consent_brands.clone();
    let (now_ms, on_lot_ms) = (state.clock.now_ms(), state.settings.on_lot_ms);
    let list = blocking(move || -> Result<VehicleList, StoreError> {
        let cx = VehicleContext {
            catalog: crate::ingest::catalog_in_use(&store)?,
            consent_brands,
            now_ms,
            on_lot_ms,
        };
        // One more than asked tells whether a next page exists.
        let mut page = store.vehicles(after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more
            .then(|| {
                page.last()
                    .map(|v| CursorKind::Vehicles.encode(&[v.device_id]))
            })
            .flatten();
        let vehicles = page
            .iter()
            .map(|v| vehicle_json(&store, &cx, v))
            .collect::<Result<_, _>>()?;
        Ok(VehicleList { vehicles, next })
    })
    .await?;
    Ok(json(StatusCode::OK, &list))
}

async fn leads(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read leads")?;
    let params = Params::parse(&uri, &["type", "status", "device_id", "limit", "cursor"])?;
    let ty = params
        .get("type")
        .map(|t| {
            LeadType::parse(t).ok_or_else(|| {
                ApiError::BadQuery(format!(
                    "type {t:?}: one of warning_lamp, user_lamp, low_battery, disconnected, error_code"
                ))
            })
        })
        .transpose()?;
    let status = match params.get("status") {
        None => None,
        Some("open") => Some(LeadStatus::Open),
        Some("closed") => Some(LeadStatus::Closed),
        Some(s) => return Err(ApiError::BadQuery(format!("status {s:?}: open or closed"))),
    };
    let device_id = params
        .get("device_id")
        .map(|d| {
            d.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| d.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    ApiError::BadQuery(format!("device_id {d:?}: the unit's id in decimal digits"))
                })
        })
        .transpose()?;
    let limit = params.limit()?;
    let after = params.cursor(CursorKind::Leads)?.map(|w| (w[0], w[1]));
    let filter = LeadFilter {
        ty,
        status,
        device_id,
        opened_since_ms: None,
    };
    let store = state.store.clone();
    let page = blocking(move || store.leads(&filter, after, limit)).await?;
    let list = LeadList {
        leads: page.leads.iter().map(lead_json).collect(),
        next: page
            .next
            .map(|(at, id)| CursorKind::Leads.encode(&[at, id])),
    };
    Ok(json(StatusCode::OK, &list))
}

async fn lead(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read leads")?;
    let id = path.id()?;
    let store = state.store.clone();
    let lead = blocking(move || store.lead(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no lead {id}")))?;
    Ok(json(
        StatusCode::OK,
        &LeadAnswer {
            lead: lead_json(&lead),
        },
    ))
}

/// R-DASH-1, one key per section. Sections whose records do not exist yet
/// (quotes, conversations, reminders, conversions, customers, invitations)
/// hold zeros in the shape they will have (docs/api.md).
#[derive(Serialize)]
struct Dashboard {
    computed_at: String,
    leads: LeadFigures,
    conversations: ConversationFigures,
    reminders: ReminderFigures,
    conversions: ConversionFigures,
    vehicles: VehicleFigures,
    invitations: InvitationFigures,
    closed_reminder_reasons: Vec<ReasonShare>,
}

#[derive(Serialize)]
struct LeadFigures {
    open: BTreeMap<&'static str, u64>,
    open_total: u64,
    opened_30d: BTreeMap<&'static str, u64>,
    closed_30d: BTreeMap<&'static str, u64>,
    open_error_codes_by_severity: BTreeMap<&'static str, u64>,
    open_quotes: u64,
    quotes_expiring_30d: u64,
}

#[derive(Serialize)]
struct ConversationFigures {
    open: u64,
    unassigned: u64,
    closed_30d: u64,
}

#[derive(Serialize)]
struct ReminderFigures {
    open: u64,
    overdue: u64,
    unassigned: u64,
}

#[derive(Serialize)]
struct ConversionFigures {
    reminders_30d: u64,
    converted_30d: u64,
    /// converted / reminders, 0..1; null while there are no reminders.
    rate_30d: Option<f64>,
    by_model_year: Vec<ModelYearConversion>,
}

#[derive(Serialize)]
struct ModelYearConversion {
    model_year: u16,
    reminders: u64,
    converted: u64,
    rate: Option<f64>,
    three_years_or_older: bool,
}

#[derive(Serialize)]
struct VehicleFigures {
    /// Units (dongles) heard.
    total: u64,
    /// Vehicles known by VIN (R-VEH-1): imported, entered, or named by a dongle.
    registered: u64,
    /// Registered vehicles no dongle has named.
    not_connected: u64,
    without_customer: u64,
    awaiting_assignment: u64,
    assigned: u64,
}

#[derive(Serialize)]
struct InvitationFigures {
    created: u64,
    sent: u64,
    accepted: u64,
    declined: u64,
    expired: u64,
}

#[derive(Serialize)]
struct ReasonShare {
    reason: &'static str,
    count: u64,
    percent: f64,
}

/// R-REM-2's close reasons, in its order (the ranking's tie order).
const REMINDER_REASONS: [&str; 7] = [
    "booked",
    "serviced_here",
    "serviced_elsewhere",
    "customer_declined",
    "no_response",
    "vehicle_sold",
    "other",
];

async fn dashboard(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read the dashboard")?;
    Params::parse(&uri, &[])?;
    // The figures as of the last commit (web::dashboard::SnapshotCache).
    let snap = crate::web::dashboard::snapshot(&state).await?;
    let (now, counts, vehicles) = (snap.computed_ms, snap.counts.clone(), snap.units);
    let invited = |state| snap.invitations.get(&state).copied().unwrap_or(0);
    let severity_names = ["1", "2", "3"];
    let dashboard = Dashboard {
        computed_at: time(now),
        leads: LeadFigures {
            open_total: counts.open.values().sum(),
            open: counts.open,
            opened_30d: counts.opened_30d,
            closed_30d: counts.closed_30d,
            open_error_codes_by_severity: severity_names
                .into_iter()
                .zip(counts.open_by_severity)
                .collect(),
            open_quotes: 0,
            quotes_expiring_30d: 0,
        },
        conversations: ConversationFigures {
            open: 0,
            unassigned: 0,
            closed_30d: 0,
        },
        reminders: ReminderFigures {
            open: 0,
            overdue: 0,
            unassigned: 0,
        },
        conversions: ConversionFigures {
            reminders_30d: 0,
            converted_30d: 0,
            rate_30d: None,
            by_model_year: Vec::new(),
        },
        vehicles: VehicleFigures {
            total: vehicles,
            registered: snap.assignment.total,
            not_connected: snap
                .assignment
                .total
                .saturating_sub(snap.assignment.connected),
            without_customer: snap.assignment.without_customer,
            awaiting_assignment: snap.assignment.awaiting_assignment,
            assigned: snap.assignment.assigned,
        },
        invitations: InvitationFigures {
            created: invited(InvitationState::Created),
            sent: invited(InvitationState::Sent),
            accepted: invited(InvitationState::Accepted),
            declined: invited(InvitationState::Declined),
            expired: invited(InvitationState::Expired),
        },
        closed_reminder_reasons: REMINDER_REASONS
            .into_iter()
            .map(|reason| ReasonShare {
                reason,
                count: 0,
                percent: 0.0,
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &dashboard))
}

/// Bookings come with the appointments issue; until then every list is
/// empty, with its parameters checked as they will be.
async fn bookings(caller: Caller, uri: Uri) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read bookings")?;
    let params = Params::parse(&uri, &["list", "limit", "cursor"])?;
    match params.get("list") {
        None | Some("actions" | "pending" | "planned" | "escalated" | "all") => {}
        Some(l) => {
            return Err(ApiError::BadQuery(format!(
                "list {l:?}: one of actions, pending, planned, escalated, all"
            )))
        }
    }
    params.limit()?;
    params.cursor(CursorKind::Bookings)?;
    Ok(json(
        StatusCode::OK,
        &BookingList {
            bookings: Vec::new(),
            next: None,
        },
    ))
}

// ---- Lead actions ----

async fn act_on_lead(
    state: &AppState,
    caller: &Caller,
    action: LeadAction,
) -> Result<Response, ApiError> {
    let outcome = state
        .act(Action::Lead {
            action,
            by: caller.name.clone(),
        })
        .await?;
    match outcome {
        Outcome::Lead { lead } => Ok(json(
            StatusCode::OK,
            &LeadAnswer {
                lead: lead_json(&lead),
            },
        )),
        other => {
            tracing::error!(?other, "a lead action answered something else");
            Err(ApiError::Internal)
        }
    }
}

async fn assign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Permission::AssignLead, "assign leads")?;
    let lead_id = path.id()?;
    let body: AssignBody = read_json(&headers, body).await?;
    let user = body.user.ok_or_else(|| {
        ApiError::Unprocessable("the body needs \"user\": a name, or null to unassign".into())
    })?;
    let user = check_text("user", user, MAX_USER_CHARS)?;
    if user
        .as_deref()
        .is_some_and(|u| u.chars().any(char::is_control))
    {
        return Err(ApiError::Unprocessable(
            "user: must not hold control characters".into(),
        ));
    }
    act_on_lead(&state, &caller, LeadAction::Assign { lead_id, user }).await
}

async fn close(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Permission::CloseLead, "close leads")?;
    let lead_id = path.id()?;
    let body: CloseBody = read_json(&headers, body).await?;
    let note = check_text("reason", body.reason, MAX_TEXT_CHARS)?;
    act_on_lead(
        &state,
        &caller,
        LeadAction::Close {
            lead_id,
            note,
            customer: false,
        },
    )
    .await
}

async fn reopen(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Permission::ReopenLead, "reopen leads")?;
    let lead_id = path.id()?;
    let _: EmptyBody = read_json(&headers, body).await?;
    act_on_lead(&state, &caller, LeadAction::Reopen { lead_id }).await
}

async fn note(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Permission::AnnotateLead, "add notes to leads")?;
    let lead_id = path.id()?;
    let body: NoteBody = read_json(&headers, body).await?;
    let text = check_text("text", Some(body.text), MAX_TEXT_CHARS)?.unwrap_or_default();
    act_on_lead(&state, &caller, LeadAction::Note { lead_id, text }).await
}

async fn message(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, Permission::MessageCustomer, "message customers")?;
    let lead_id = path.id()?;
    let body: MessageBody = read_json(&headers, body).await?;
    let text = check_text("text", body.text, MAX_TEXT_CHARS)?;
    let outcome = state
        .act(Action::Lead {
            action: LeadAction::Message { lead_id, text },
            by: caller.name.clone(),
        })
        .await?;
    let Outcome::Message { message } = outcome else {
        tracing::error!(?outcome, "a message action answered something else");
        return Err(ApiError::Internal);
    };
    let store = state.store.clone();
    let lead = blocking(move || store.lead(lead_id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no lead {lead_id}")))?;
    Ok(json(
        StatusCode::CREATED,
        &MessageAnswer {
            message: message_json(&message),
            lead: lead_json(&lead),
        },
    ))
}

// ---- Everything else ----

async fn method_not_allowed(_caller: Caller) -> ApiError {
    ApiError::MethodNotAllowed
}

async fn no_route(_caller: Caller, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "there is no API route {} (docs/api.md lists them)",
        uri.path()
    ))
}

// ---- Customers and invitations (R-VEH-1..3, docs/api.md) ----

/// An invitation as the API shows it; `state` is the state now (a sent
/// invitation past its expiry reads `expired` before it is written down).
#[derive(Serialize)]
pub struct InvitationJson {
    pub id: String,
    pub vin: String,
    pub customer_id: Option<String>,
    pub state: &'static str,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub answered_at: Option<String>,
    pub expired_at: Option<String>,
    /// When a sent invitation lapses (or lapsed), else null.
    pub expires_at: Option<String>,
}

pub fn invitation_json(
    i: &crate::domain::customer::Invitation,
    now_ms: u64,
    rules: crate::domain::customer::InvitationRules,
) -> InvitationJson {
    InvitationJson {
        id: i.id.to_string(),
        vin: i.vin.to_string(),
        customer_id: i.customer_id.map(|c| c.to_string()),
        state: i.state_at(now_ms, rules).as_str(),
        created_at: time(i.created_ms),
        sent_at: i.sent_ms.map(time),
        answered_at: i.answered_ms.map(time),
        expired_at: i.expired_ms.map(time),
        expires_at: i.expires_at(rules).map(time),
    }
}

/// A customer's registered vehicle with its R-VEH-2 state and invitation.
#[derive(Serialize)]
pub struct CustomerVehicleJson {
    pub vin: String,
    pub brand: Option<String>,
    pub model: Option<String>,
    pub model_year: Option<u16>,
    pub fleet: Option<String>,
    /// The dongle last heard with this VIN, or null: "not connected".
    pub device_id: Option<String>,
    pub connected: bool,
    /// `without_customer`, `awaiting_assignment` or `assigned`.
    pub assignment: &'static str,
    pub active: bool,
    pub invitation: Option<InvitationJson>,
}

#[derive(Serialize)]
pub struct CustomerJson {
    pub id: String,
    pub dms_id: Option<String>,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Null: unknown (R-SRC-2).
    pub source: Option<String>,
    /// `YYYY-MM-DD`.
    pub customer_since: String,
    pub created_at: String,
    pub updated_at: String,
    pub vehicles: Vec<CustomerVehicleJson>,
}

/// A customer with their vehicles, read at `now_ms`.
pub fn customer_json(
    store: &Store,
    c: &crate::domain::customer::Customer,
    now_ms: u64,
    rules: crate::domain::customer::InvitationRules,
) -> Result<CustomerJson, StoreError> {
    let vehicles = store
        .vehicles_of_customer(c.id)?
        .into_iter()
        .map(|v| {
            let line = crate::web::customers::vehicle_line(store, v, now_ms, rules)?;
            Ok(CustomerVehicleJson {
                vin: line.vehicle.vin.to_string(),
                brand: line.vehicle.brand.clone(),
                model: line.vehicle.model.clone(),
                model_year: line.vehicle.model_year,
                fleet: line.vehicle.fleet.clone(),
                device_id: line.device_id.map(|d| d.to_string()),
                connected: line.device_id.is_some(),
                assignment: line.assignment.as_str(),
                active: line.active,
                invitation: line
                    .invitation
                    .as_ref()
                    .map(|i| invitation_json(i, now_ms, rules)),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(CustomerJson {
        id: c.id.to_string(),
        dms_id: c.dms_id.clone(),
        name: c.name.clone(),
        phone: c.phone.clone(),
        email: c.email.clone(),
        source: c.source.clone(),
        customer_since: crate::domain::customer::format_date(c.customer_since_ms),
        created_at: time(c.created_ms),
        updated_at: time(c.updated_ms),
        vehicles,
    })
}

#[derive(Serialize)]
struct CustomerList {
    customers: Vec<CustomerJson>,
    next: Option<String>,
}

#[derive(Serialize)]
struct CustomerAnswer {
    customer: CustomerJson,
}

#[derive(Serialize)]
struct InvitationAnswer {
    invitation: InvitationJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    vin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitationEventBody {
    event: String,
}

/// The numeric `{id}` of a customer or invitation route, checked after
/// the role; `what` names the record in the 404.
fn record_id(path: &LeadPath, what: &str) -> Result<u64, ApiError> {
    let raw = path.0.as_deref().unwrap_or("");
    let digits = !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| raw.parse().ok())
        .flatten()
        .ok_or_else(|| ApiError::NotFound(format!("no {what} {raw:?}")))
}

fn invitation_rules(state: &AppState) -> crate::domain::customer::InvitationRules {
    crate::web::customers::rules(state)
}

/// Carries out a customer change through ingest.
async fn act_on_customers(
    state: &AppState,
    action: crate::customers::CustomerAction,
) -> Result<crate::customers::CustomerOutcome, ApiError> {
    let outcome = state
        .act(Action::Customers {
            action,
            invitation_expiry_days: state.settings.invitation_expiry_days,
        })
        .await?;
    match outcome {
        Outcome::Customers { outcome } => Ok(outcome),
        other => {
            tracing::error!(?other, "a customer change answered something else");
            Err(ApiError::Internal)
        }
    }
}

/// `GET /api/v1/customers`: customers in id order, each with its vehicles.
async fn customers(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read customers")?;
    let params = Params::parse(&uri, &["limit", "cursor"])?;
    let limit = params.limit()?;
    let after = params.cursor(CursorKind::Customers)?.map(|w| w[0]);
    let store = state.store.clone();
    let (now_ms, rules) = (state.clock.now_ms(), invitation_rules(&state));
    let list = blocking(move || -> Result<CustomerList, StoreError> {
        // One more than asked tells whether a next page exists.
        let mut page = store.customers(after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more
            .then(|| page.last().map(|c| CursorKind::Customers.encode(&[c.id])))
            .flatten();
        let customers = page
            .iter()
            .map(|c| customer_json(&store, c, now_ms, rules))
            .collect::<Result<_, _>>()?;
        Ok(CustomerList { customers, next })
    })
    .await?;
    Ok(json(StatusCode::OK, &list))
}

/// `GET /api/v1/customers/{id}`.
async fn customer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
) -> Result<Response, ApiError> {
    require(&caller, Permission::Read, "read customers")?;
    let id = record_id(&path, "customer")?;
    let store = state.store.clone();
    let (now_ms, rules) = (state.clock.now_ms(), invitation_rules(&state));
    let answer = blocking(move || -> Result<Option<CustomerAnswer>, StoreError> {
        store
            .customer(id)?
            .map(|c| customer_json(&store, &c, now_ms, rules))
            .transpose()
            .map(|c| c.map(|customer| CustomerAnswer { customer }))
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no customer {id}")))?;
    Ok(json(StatusCode::OK, &answer))
}

/// `POST /api/v1/customers/{id}/invitations` `{"vin": VIN}`: invites the
/// customer of one of their vehicles to the app (201).
async fn invite(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(
        &caller,
        crate::web::customers::CHANGE,
        "invite customers to the app",
    )?;
    let id = record_id(&path, "customer")?;
    let body: InviteBody = read_json(&headers, body).await?;
    let vin = crate::domain::customer::check::vin(&body.vin)
        .map_err(|e| ApiError::Unprocessable(format!("vin: {e}")))?;
    let store = state.store.clone();
    let owner = blocking(move || -> Result<_, StoreError> {
        Ok((
            store.customer(id)?.is_some(),
            store.registered_vehicle(&vin)?.map(|v| v.customer_id),
        ))
    })
    .await?;
    match owner {
        (false, _) => return Err(ApiError::NotFound(format!("no customer {id}"))),
        (true, None) => {
            return Err(ApiError::NotFound(format!(
                "no registered vehicle {vin}: register it first"
            )))
        }
        (true, Some(owner)) if owner != Some(id) => {
            return Err(ApiError::Conflict(format!(
                "vehicle {vin} is not registered to customer {id}"
            )))
        }
        _ => {}
    }
    let action = crate::customers::CustomerAction::Invite {
        vin: vin.to_string(),
        at_ms: None,
    };
    match act_on_customers(&state, action).await? {
        crate::customers::CustomerOutcome::Invitation { invitation } => {
            let j = invitation_json(&invitation, state.clock.now_ms(), invitation_rules(&state));
            Ok(json(
                StatusCode::CREATED,
                &InvitationAnswer { invitation: j },
            ))
        }
        other => {
            tracing::error!(?other, "an invitation answered something else");
            Err(ApiError::Internal)
        }
    }
}

/// An invitation event as the API names it: the state it leads to, as
/// bookings' events are named (`sent`, `accepted`, `declined`), or the
/// domain's verb (`send`, `accept`, `decline`).
fn invitation_event_named(name: &str) -> Option<crate::domain::customer::InvitationEvent> {
    use crate::domain::customer::InvitationEvent;
    match name {
        "sent" => Some(InvitationEvent::Send),
        "accepted" => Some(InvitationEvent::Accept),
        "declined" => Some(InvitationEvent::Decline),
        other => InvitationEvent::parse(other),
    }
}

/// `POST /api/v1/invitations/{id}/events` `{"event": E}`: 409 with the
/// reason for a transition R-VEH-3 does not allow.
async fn invitation_event(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: LeadPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(
        &caller,
        crate::web::customers::CHANGE,
        "record invitation events",
    )?;
    let id = record_id(&path, "invitation")?;
    let body: InvitationEventBody = read_json(&headers, body).await?;
    let event = invitation_event_named(body.event.trim()).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "event {:?}: one of sent, accepted, declined",
            body.event
        ))
    })?;
    let action = crate::customers::CustomerAction::Invitation {
        id,
        event,
        at_ms: None,
    };
    match act_on_customers(&state, action).await? {
        crate::customers::CustomerOutcome::Invitation { invitation } => {
            let j = invitation_json(&invitation, state.clock.now_ms(), invitation_rules(&state));
            Ok(json(StatusCode::OK, &InvitationAnswer { invitation: j }))
        }
        other => {
            tracing::error!(?other, "an invitation event answered something else");
            Err(ApiError::Internal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y2026: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const Y2029: u64 = 1_861_920_000_000; // 2029-01-01T00:00:00Z

    fn vin(tenth: char) -> Vin {
        let mut s = *b"1FAFP4041WF000000";
        s[9] = tenth as u8;
        Vin(s)
    }

    #[test]
    fn r_veh_1_model_year_from_the_tenth_character() {
        assert_eq!(model_year(&vin('N'), Y2026), Some(2022), "N: 1992 or 2022");
        assert_eq!(
            model_year(&vin('A'), Y2026),
            Some(2010),
            "A: 2040 is after next year"
        );
        assert_eq!(model_year(&vin('T'), Y2026), Some(2026));
        assert_eq!(
            model_year(&vin('V'), Y2026),
            Some(2027),
            "next year's models are sold this year"
        );
        assert_eq!(
            model_year(&vin('W'), Y2026),
            Some(1998),
            "2028 is after next year"
        );
        assert_eq!(model_year(&vin('Y'), Y2026), Some(2000));
        assert_eq!(model_year(&vin('Y'), Y2029), Some(2030));
        assert_eq!(model_year(&vin('1'), Y2026), Some(2001));
        assert_eq!(model_year(&vin('9'), Y2026), Some(2009));
        assert_eq!(model_year(&vin('n'), Y2026), Some(2022));
        for no_year in ['0', 'I', 'O', 'Q', 'U', 'Z'] {
            assert_eq!(
                model_year(&vin(no_year), Y2026),
                None,
                "{no_year} codes no year"
            );
        }
    }

    #[test]
    fn times_carry_milliseconds() {
        assert_eq!(time(Y2026), "2026-01-01T00:00:00.000Z");
        assert_eq!(time(Y2026 + 61_250), "2026-01-01T00:01:01.250Z");
        assert_eq!(
            crate::clock::parse_rfc3339(&time(Y2026 + 999)),
            Some(Y2026 + 999)
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_lists() {
        let c = CursorKind::Leads.encode(&[Y2026, 42]);
        assert_eq!(CursorKind::Leads.decode(&c), Some(vec![Y2026, 42]));
        assert_eq!(
            CursorKind::Vehicles.decode(&c),
            None,
            "a leads cursor is not a vehicles cursor"
        );
        let v = CursorKind::Vehicles.encode(&[u64::MAX]);
        assert_eq!(CursorKind::Vehicles.decode(&v), Some(vec![u64::MAX]));
        for bad in [
            "",
            "l",
            "v12",
            "vXYZ0000000000000",
            &v.to_uppercase(),
            &format!("{v}0"),
            "v-000000000000001",
        ] {
            assert_eq!(CursorKind::Vehicles.decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_parameters_are_checked() {
        let uri = |q: &str| -> Uri { format!("/x?{q}").parse().unwrap() };
        let p = Params::parse(
            &uri("type=&status=open&limit="),
            &["type", "status", "limit"],
        )
        .unwrap();
        assert_eq!(p.get("type"), None, "an empty value is absent");
        assert_eq!(p.get("status"), Some("open"));
        assert_eq!(p.limit().unwrap(), DEFAULT_LIMIT);
        assert!(matches!(
            Params::parse(&uri("typo=1"), &["type"]),
            Err(ApiError::BadQuery(_))
        ));
        assert!(matches!(
            Params::parse(&uri("type=a&type=b"), &["type"]),
            Err(ApiError::BadQuery(_))
        ));
        for (limit, ok) in [
            ("1", true),
            ("1000", true),
            ("0", false),
            ("1001", false),
            ("-1", false),
            ("+5", false),
            ("ten", false),
            ("99999999999999999999999", false),
        ] {
            let p = Params::parse(&uri(&format!("limit={limit}")), &["limit"]).unwrap();
            assert_eq!(p.limit().is_ok(), ok, "limit={limit}");
        }
    }

    #[test]
    fn lead_ids_are_decimal() {
        assert_eq!(LeadPath(Some("17".into())).id().unwrap(), 17);
        for bad in [
            None,
            Some(""),
            Some("x"),
            Some("-1"),
            Some("1.0"),
            Some("18446744073709551616"),
        ] {
            assert!(
                matches!(
                    LeadPath(bad.map(str::to_owned)).id(),
                    Err(ApiError::NotFound(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_answer_json_with_their_status() {
        let r = ApiError::Unauthorized {
            message: "no".into(),
            presented: false,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            ApiError::from(StoreError::Engine("disk".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(StoreError::Aborted("taken".into())).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::from(ActionError::Invalid("x".into())).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
