//! The settings page, for admins only (`Permission::ManageSettings`): the
//! workshop's hourly labour rate (R-LEAD-REV) and the catalog (R-CAT-1):
//! import a catalog CSV file (docs/catalog.md), download the one in use.
//!
//! Both changes go through ingest ([`AppState::act`]), the one writer, so
//! the lead estimates use the new rate and catalog from the next message
//! on. Input is checked here first so that the page can say what is wrong
//! in the staff's terms; a refused form is shown again as it was typed and
//! nothing changes.
//!
//! The catalog upload is a multipart form of up to 5 MB, far over the
//! 64 KiB every other form may send: [`upload_routes`] is mounted outside
//! the router's small body limit, behind the session gate, with its own
//! limit ([`UPLOAD_MAX_BODY`]).

use std::sync::Arc;

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::catalog::{Catalog, MAX_FILE_BYTES};
use crate::ingest::Action;
use crate::leads::ActionError;
use crate::store::{Store, StoreError};
use crate::web::auth::Permission;
use crate::web::session::{self, CsrfForm, Staff, StaffForm, WebError};
use crate::web::users::blocking;
use crate::web::views::money;
use crate::web::views_settings::{self, Done, SettingsView};

/// The settings pages' routes as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/settings"),
    ("POST", "/settings/labour-rate"),
    ("GET", "/settings/catalog.csv"),
    ("POST", "/settings/catalog"),
];

/// Largest catalog upload: the largest catalog file plus room for the
/// form around it.
pub const UPLOAD_MAX_BODY: usize = MAX_FILE_BYTES + 1024 * 1024;
/// Lowest labour rate the page accepts, in cents an hour.
pub const MIN_RATE_CENTS: u64 = 100;
/// Highest labour rate the page accepts, in cents an hour: far above what
/// a workshop charges, low enough to catch a rate typed in cents.
pub const MAX_RATE_CENTS: u64 = 100_000;
/// The file field of the upload form.
pub const FILE_FIELD: &str = "catalog";

const MANAGE: &str = "change the workshop's settings";

/// The page and the labour rate form; mounted behind `session::gate`
/// with the other pages.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/settings", get(page))
        .route("/settings/labour-rate", post(set_rate))
        .route("/settings/catalog.csv", get(catalog_csv))
}

/// The catalog upload, with its own body limit and the session gate; to be
/// merged outside the router's 64 KiB limit.
pub fn upload_routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/settings/catalog", post(upload))
        .layer(DefaultBodyLimit::max(UPLOAD_MAX_BODY))
        .route_layer(axum::middleware::from_fn_with_state(state, session::gate))
}

// ---- Checking what was typed or sent ----

/// A labour rate as typed: `95`, `95.5`, `95.50` or `95,50`, an amount an
/// hour in the workshop's currency, to cents.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    use crate::web::forms::{parse_money, MoneyError};
    let t = text.trim();
    let cents = parse_money(t, MAX_RATE_CENTS).map_err(|e| match e {
        MoneyError::Empty => "Enter the labour rate an hour, e.g. 95.00.".to_string(),
        MoneyError::Negative => "A labour rate cannot be negative.".to_string(),
        MoneyError::NotAmount => format!(
            "{t:?} is not an amount: write it like 95 or 95.50 (digits, at most two decimals, no thousands separator)."
        ),
        MoneyError::TooHigh => format!(
            "{t} an hour is more than the {} the page accepts: check the number.",
            money(MAX_RATE_CENTS)
        ),
    })?;
    if cents < MIN_RATE_CENTS {
        return Err(format!(
            "{t} an hour is less than the {} the page accepts: check the number.",
            money(MIN_RATE_CENTS)
        ));
    }
    Ok(cents)
}

/// An uploaded catalog file's text; `Err` says what is wrong with the file
/// as a whole (its rows are checked on import).
pub fn upload_text(bytes: Vec<u8>) -> Result<String, UploadRefusal> {
    let unprocessable = |m: String| UploadRefusal {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        messages: vec![m],
    };
    if bytes.is_empty() {
        return Err(unprocessable(
            "The file is empty: choose the catalog CSV file.".into(),
        ));
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(bytes.len()));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(unprocessable(
            "The file is UTF-16 text: save it as \"CSV UTF-8\" (comma separated).".into(),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let u = e.utf8_error();
        let offset = u.valid_up_to();
        if u.error_len().is_none() {
            return unprocessable(format!(
                "The file ends in the middle of a character (after byte {offset}): it was cut off. Export it again and import the whole file."
            ));
        }
        let line = 1 + e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        unprocessable(format!(
            "The file is not UTF-8 (bad byte at offset {offset}, line {line}): save it as \"CSV UTF-8\" (comma separated)."
        ))
    })
}

fn too_large(len: usize) -> UploadRefusal {
    UploadRefusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        messages: vec![format!(
            "The file is {len} bytes: a catalog file has at most {MAX_FILE_BYTES} bytes (5 MB)."
        )],
    }
}

/// Why an upload was refused, as the page says it.
#[derive(Debug, PartialEq, Eq)]
pub struct UploadRefusal {
    pub status: StatusCode,
    pub messages: Vec<String>,
}

impl From<MultipartError> for UploadRefusal {
    fn from(e: MultipartError) -> Self {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "The upload is larger than {} MB: a catalog file has at most 5 MB.",
                UPLOAD_MAX_BODY / (1024 * 1024)
            )
        } else {
            format!(
                "The upload ended early or was not a well-formed form ({}): choose the file and send it again.",
                e.body_text()
            )
        };
        UploadRefusal {
            status,
            messages: vec![message],
        }
    }
}

// ---- Reading the settings in use ----

/// The labour rate (cents an hour) and the catalog in use, as ingest
/// loads them: the built-in rows under the imported ones.
pub fn settings_in_use(store: &Store) -> Result<(u64, Catalog), StoreError> {
    Ok((
        crate::ingest::labour_rate_in_use(store)?,
        crate::ingest::catalog_in_use(store)?,
    ))
}

async fn in_use(state: &AppState) -> Result<(u64, Catalog), WebError> {
    let store = state.store.clone();
    blocking(move || Ok(settings_in_use(&store)?)).await
}

// ---- Handlers ----

/// What a refused form showed, to show it again.
#[derive(Debug, Default)]
struct Refused {
    rate: Option<(String, String)>,
    catalog: Vec<String>,
}

async fn render(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    refused: Refused,
    done: Option<Done>,
) -> Result<Response, WebError> {
    let (rate, catalog) = in_use(state).await?;
    let (rate_error, rate_draft) = match refused.rate {
        Some((message, draft)) => (Some(message), draft),
        None => (None, money(rate)),
    };
    let page = views_settings::settings(
        staff,
        &SettingsView {
            labour_rate_cents: rate,
            rate_draft: &rate_draft,
            rate_error: rate_error.as_deref(),
            catalog: &catalog,
            catalog_errors: &refused.catalog,
            done,
        },
    );
    Ok((status, page).into_response())
}

async fn page(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    staff.require(Permission::ManageSettings, MANAGE)?;
    // Set by the redirect after a change (post, redirect, get).
    let done = match query.as_deref() {
        Some("saved=labour_rate") => Some(Done::LabourRate),
        Some("saved=catalog") => Some(Done::Catalog),
        _ => None,
    };
    render(&state, &staff, StatusCode::OK, Refused::default(), done).await
}

#[derive(Debug, Default, Deserialize)]
pub struct RateForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub rate: String,
}

impl CsrfForm for RateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The page's words for a refused action; `Err` when the store failed.
fn refusal(e: ActionError) -> Result<Vec<String>, WebError> {
    match e {
        ActionError::Store(e) => Err(e.into()),
        other => Ok(other
            .to_string()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()),
    }
}

async fn set_rate(
    State(state): State<Arc<AppState>>,
    f: StaffForm<RateForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::ManageSettings, MANAGE)?;
    let refuse = |message: String| Refused {
        rate: Some((message, form.rate.clone())),
        catalog: Vec::new(),
    };
    let cents_per_hour = match parse_rate(&form.rate) {
        Ok(c) => c,
        Err(m) => {
            let refused = refuse(m);
            return render(
                &state,
                &staff,
                StatusCode::UNPROCESSABLE_ENTITY,
                refused,
                None,
            )
            .await;
        }
    };
    match state.act(Action::SetLabourRate { cents_per_hour }).await {
        Ok(_) => {
            tracing::info!(cents_per_hour, by = %staff.name, "labour rate set");
            Ok(Redirect::to("/settings?saved=labour_rate").into_response())
        }
        Err(e) => {
            let refused = refuse(refusal(e)?.join(" "));
            render(
                &state,
                &staff,
                StatusCode::UNPROCESSABLE_ENTITY,
                refused,
                None,
            )
            .await
        }
    }
}

/// `GET /settings/catalog.csv`: the catalog in use, in the import format.
async fn catalog_csv(
    State(state): State<Arc<AppState>>,
    staff: Staff,
) -> Result<Response, WebError> {
    staff.require(Permission::ManageSettings, MANAGE)?;
    let (_, catalog) = in_use(&state).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"forecourt-catalog.csv\"",
            ),
        ],
        catalog.to_csv(),
    )
        .into_response())
}

/// The page again, with why the upload was refused.
async fn refuse_upload(
    state: &AppState,
    staff: &Staff,
    r: UploadRefusal,
) -> Result<Response, WebError> {
    let refused = Refused {
        rate: None,
        catalog: r.messages,
    };
    render(state, staff, r.status, refused, None).await
}

/// `POST /settings/catalog`: a catalog CSV file as a multipart form with
/// the session's `csrf` field. A file with any bad row changes nothing.
async fn upload(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::ManageSettings, MANAGE)?;
    if !session::same_origin(&headers) {
        return Err(WebError::CrossSite);
    }
    let form = match form {
        Ok(f) => f,
        Err(e) => {
            return refuse_upload(
                &state,
                &staff,
                UploadRefusal {
                    status: StatusCode::BAD_REQUEST,
                    messages: vec![format!(
                        "The upload could not be read ({}): send the file with this page's form.",
                        e.body_text()
                    )],
                },
            )
            .await
        }
    };
    let up = match crate::web::forms::read_upload(form, FILE_FIELD, MAX_FILE_BYTES).await {
        Ok(up) => up,
        Err(e) => return refuse_upload(&state, &staff, e.into()).await,
    };
    if !crate::web::session::constant_time_eq(up.csrf.as_bytes(), staff.csrf.as_bytes()) {
        return Err(WebError::Csrf);
    }
    let named = |m: String| match up.file_name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{n}: {m}"),
        None => m,
    };
    if !up.has_file || (up.file_len == 0 && up.file_name.as_deref().is_none_or(str::is_empty)) {
        return refuse_upload(
            &state,
            &staff,
            UploadRefusal {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                messages: vec!["Choose a catalog file (CSV) to import.".into()],
            },
        )
        .await;
    }
    if up.file_len > MAX_FILE_BYTES {
        let mut r = too_large(up.file_len);
        r.messages = r.messages.into_iter().map(named).collect();
        return refuse_upload(&state, &staff, r).await;
    }
    let csv = match upload_text(up.file) {
        Ok(t) => t,
        Err(mut r) => {
            r.messages = r.messages.into_iter().map(named).collect();
            return refuse_upload(&state, &staff, r).await;
        }
    };
    match state.act(Action::ImportCatalog { csv }).await {
        Ok(_) => {
            tracing::info!(file = ?up.file_name, by = %staff.name, "catalog imported");
            Ok(Redirect::to("/settings?saved=catalog").into_response())
        }
        Err(e) => {
            let mut messages = refusal(e)?;
            if let Some(first) = messages.first_mut() {
                *first = named(std::mem::take(first));
            }
            refuse_upload(
                &state,
                &staff,
                UploadRefusal {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    messages,
                },
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_amounts_an_hour() {
        assert_eq!(parse_rate("95"), Ok(9_500));
        assert_eq!(parse_rate(" 98.5 "), Ok(9_850));
        assert_eq!(parse_rate("98.05"), Ok(9_805));
        assert_eq!(parse_rate("98,50"), Ok(9_850), "a decimal comma is fine");
        assert_eq!(parse_rate("1"), Ok(MIN_RATE_CENTS));
        assert_eq!(parse_rate("1000.00"), Ok(MAX_RATE_CENTS));
        assert_eq!(parse_rate("0001000"), Ok(MAX_RATE_CENTS));
    }

    #[test]
    fn bad_rates_say_why() {
        for (typed, says) in [
            ("", "Enter"),
            ("   ", "Enter"),
            ("-5", "negative"),
            ("abc", "not an amount"),
            ("95.505", "not an amount"),
            ("95.", "not an amount"),
            (".5", "not an amount"),
            ("1,000.00", "not an amount"),
            ("9 5", "not an amount"),
            ("+95", "not an amount"),
            ("0", "less than"),
            ("0.99", "less than"),
            ("1000.01", "more than"),
            ("9500", "more than"),
            ("99999999999999999999999", "more than"),
        ] {
            let e = parse_rate(typed).expect_err(typed);
            assert!(e.contains(says), "{typed:?}: {e}");
        }
    }

    #[test]
    fn upload_text_is_utf8_csv_under_the_limit() {
        assert_eq!(
            upload_text(b"kind,key\n".to_vec()),
            Ok("kind,key\n".to_string())
        );
        let refused = |b: Vec<u8>| upload_text(b).expect_err("refused");
        assert!(refused(Vec::new()).messages[0].contains("empty"));
        let latin1 = b"kind,key,name\nservice,X,Pr\xe9paration\n".to_vec();
        let r = refused(latin1);
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(r.messages[0].contains("line 2"), "{r:?}");
        let cut = "kind,key,name\nservice,X,Préparation".as_bytes();
        let cut = cut[..cut.len() - "paration".len() - 1].to_vec();
        assert!(refused(cut).messages[0].contains("cut off"));
        assert!(refused(vec![0xFF, 0xFE, b'k', 0]).messages[0].contains("UTF-16"));
        let big = refused(vec![b'a'; MAX_FILE_BYTES + 1]);
        assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn the_settings_in_use_start_from_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::EngineKind::Redb).unwrap();
        let (rate, catalog) = settings_in_use(&store).unwrap();
        assert_eq!(rate, crate::ingest::DEFAULT_LABOUR_RATE_CENTS);
        assert_eq!(catalog, Catalog::builtin());
    }
}
