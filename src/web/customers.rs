//! The customers pages (R-VEH-1..3, docs/customers.md): the list paged by
//! id, a customer's page with their contact details, source, registered
//! vehicles (connected or not), each vehicle's assignment state and
//! invitation, and the forms that change them; a new customer; the DMS
//! file import with a dry run ("check only") and the export.
//!
//! Every change goes through ingest ([`AppState::act`]), the one writer,
//! exactly like the CLI's and the API's. A refused form is shown again at
//! its place with the domain's message and what was typed. Changes need
//! [`CHANGE`]: the permission the role table gives advisors and admins for
//! work with the customer, and not technicians (docs/ui.md says why).
//!
//! The import is a multipart upload of up to 8 MB, far over the 64 KiB
//! every other form may send: [`upload_routes`] is mounted outside the
//! router's small body limit, behind the session gate, with its own limit
//! ([`UPLOAD_MAX_BODY`]), as the catalog upload is (settings.rs).

use std::sync::Arc;

use crate::web::forms::Upload;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::customers::{CustomerAction, CustomerOutcome, ImportReport, MAX_FILE_BYTES};
use crate::domain::customer::{
    assignment_state, format_date, is_active, AssignmentState, Customer, Invitation,
    InvitationEvent, InvitationRules, InvitationState, RegisteredVehicle, Source,
};
use crate::ingest::{Action, Outcome};
use crate::leads::ActionError;
use crate::store::Store;
use crate::web::auth::Permission;
use crate::web::session::{self, CsrfForm, Staff, StaffForm, WebError};
use crate::web::users::blocking;
use crate::web::views_customers;

/// Customers on one page of the list.
pub const PAGE_ROWS: usize = 50;
/// The permission every change to customer data needs: advisors and
/// admins have it, technicians do not (R-VEH-5: they work on the vehicle,
/// not with the customer).
pub const CHANGE: Permission = Permission::MessageCustomer;
const CHANGE_WHAT: &str = "change customer data";
/// Largest import upload: the largest customer file plus room for the form.
pub const UPLOAD_MAX_BODY: usize = MAX_FILE_BYTES + 1024 * 1024;
/// The file field of the import form.
pub const FILE_FIELD: &str = "customers";

/// The routes of this module as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/customers"),
    ("POST", "/customers"),
    ("GET", "/customers/new"),
    ("GET", "/customers/export.csv"),
    ("GET", "/customers/import"),
    ("POST", "/customers/import"),
    ("GET", "/customers/{id}"),
    ("POST", "/customers/{id}"),
    ("POST", "/customers/{id}/source"),
    ("POST", "/customers/{id}/vehicles"),
    ("POST", "/customers/{id}/invite"),
    ("POST", "/customers/{id}/invitation"),
];

/// The pages and small forms; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/customers", get(list).post(create))
        .route("/customers/new", get(new_page))
        .route("/customers/export.csv", get(export_csv))
        .route("/customers/import", get(import_page))
        .route("/customers/{id}", get(show).post(save_contact))
        .route("/customers/{id}/source", post(set_source))
        .route("/customers/{id}/vehicles", post(add_vehicle))
        .route("/customers/{id}/invite", post(invite))
        .route("/customers/{id}/invitation", post(invitation_event))
}

/// The import upload, with its own body limit and the session gate; to be
/// merged outside the router's 64 KiB limit.
pub fn upload_routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/customers/import", post(upload))
        .layer(DefaultBodyLimit::max(UPLOAD_MAX_BODY))
        .route_layer(axum::middleware::from_fn_with_state(state, session::gate))
}

/// The invitation rules of the configuration (`[customers]`).
pub fn rules(state: &AppState) -> InvitationRules {
    InvitationRules {
        expiry_days: state.settings.invitation_expiry_days,
    }
}

// ---- The list ----

/// One row of the list.
pub struct ListRow {
    pub customer: Customer,
    pub vehicles: usize,
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    /// The last id of the previous page.
    #[serde(default)]
    after: Option<String>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read customers")?;
    let q = query.map_err(|e| WebError::BadRequest(e.body_text()))?.0;
    let after = match q.after.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| {
            WebError::BadRequest(format!(
                "after {a:?}: use the address of the \"Next page\" link"
            ))
        })?),
    };
    let store = state.store.clone();
    let (rows, next, figures) = blocking(move || {
        let mut page = store.customers(after, PAGE_ROWS + 1)?;
        let more = page.len() > PAGE_ROWS;
        page.truncate(PAGE_ROWS);
        let next = more.then(|| page.last().map(|c| c.id)).flatten();
        let rows = page
            .into_iter()
            .map(|customer| {
                let vehicles = store.vehicles_of_customer(customer.id)?.len();
                Ok(ListRow { customer, vehicles })
            })
            .collect::<Result<Vec<_>, WebError>>()?;
        Ok((rows, next, store.customer_figures()?))
    })
    .await?;
    Ok(views_customers::list(
        &staff,
        &views_customers::ListView {
            rows: &rows,
            first_page: after.is_none(),
            next,
            figures: &figures,
        },
    )
    .into_response())
}

// ---- One customer ----

/// A registered vehicle with what its row on the customer's page shows.
pub struct VehicleLine {
    pub vehicle: RegisteredVehicle,
    /// The dongle last heard with this VIN: `None` is "not connected".
    pub device_id: Option<u64>,
    pub invitation: Option<Invitation>,
    /// The invitation's state now (a sent one may have lapsed).
    pub invitation_state: Option<InvitationState>,
    pub expires_ms: Option<u64>,
    pub assignment: AssignmentState,
    pub active: bool,
}

impl VehicleLine {
    /// The invitation events the state machine allows now (R-VEH-3).
    pub fn events(&self) -> Vec<InvitationEvent> {
        match self.invitation_state {
            Some(InvitationState::Created) => InvitationEvent::ALL.to_vec(),
            Some(InvitationState::Sent) => vec![InvitationEvent::Accept, InvitationEvent::Decline],
            _ => Vec::new(),
        }
    }

    /// Whether a new invitation may be made (none out, none accepted).
    pub fn can_invite(&self) -> bool {
        self.vehicle.fleet.is_none()
            && self.vehicle.customer_id.is_some()
            && !matches!(
                self.invitation_state,
                Some(InvitationState::Created | InvitationState::Sent | InvitationState::Accepted)
            )
    }
}

/// Reads a vehicle's line at `now_ms`.
pub fn vehicle_line(
    store: &Store,
    vehicle: RegisteredVehicle,
    now_ms: u64,
    rules: InvitationRules,
) -> Result<VehicleLine, crate::store::StoreError> {
    let device_id = store.device_of_vin(&vehicle.vin)?;
    let invitation = store.current_invitation(&vehicle)?;
    let assignment = assignment_state(&vehicle, invitation.as_ref(), now_ms, rules);
    let active = is_active(&vehicle, invitation.as_ref());
    let invitation_state = invitation.as_ref().map(|i| i.state_at(now_ms, rules));
    let expires_ms = invitation.as_ref().and_then(|i| i.expires_at(rules));
    Ok(VehicleLine {
        vehicle,
        device_id,
        invitation,
        invitation_state,
        expires_ms,
        assignment,
        active,
    })
}

/// Everything a customer's page shows.
pub struct CustomerPage {
    pub customer: Customer,
    pub vehicles: Vec<VehicleLine>,
    /// Every source, for the source form.
    pub sources: Vec<Source>,
    pub now_ms: u64,
}

/// A form refused, shown again at its place with what was typed.
#[derive(Debug, Default)]
pub struct Refusal {
    /// The form's id: `contact`, `source`, `vehicle`, `invite` or `event`.
    pub form: String,
    pub message: String,
    pub typed: Vec<(String, String)>,
}

impl Refusal {
    /// What was typed in `field`, if this refusal kept it.
    pub fn typed(&self, field: &str) -> Option<&str> {
        self.typed
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_id(raw: &str) -> Result<u64, WebError> {
    raw.parse()
        .map_err(|_| WebError::NotFound(format!("There is no customer {raw:?}.")))
}

async fn read_page(state: &AppState, id: u64) -> Result<CustomerPage, WebError> {
    let store = state.store.clone();
    let now_ms = state.clock.now_ms();
    let rules = rules(state);
    blocking(move || {
        let customer = store
            .customer(id)?
            .ok_or_else(|| WebError::NotFound(format!("There is no customer {id}.")))?;
        let vehicles = store
            .vehicles_of_customer(id)?
            .into_iter()
            .map(|v| vehicle_line(&store, v, now_ms, rules))
            .collect::<Result<_, _>>()?;
        Ok(CustomerPage {
            customer,
            vehicles,
            sources: store.sources()?,
            now_ms,
        })
    })
    .await
}

async fn customer_page(
    state: &AppState,
    staff: &Staff,
    id: u64,
    status: StatusCode,
    refusal: Option<&Refusal>,
) -> Result<Response, WebError> {
    let page = read_page(state, id).await?;
    Ok((status, views_customers::customer(staff, &page, refusal)).into_response())
}

async fn show(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read customers")?;
    let id = parse_id(&raw)?;
    customer_page(&state, &staff, id, StatusCode::OK, None).await
}

async fn new_page(staff: Staff) -> Result<Response, WebError> {
    staff.require(CHANGE, CHANGE_WHAT)?;
    Ok(views_customers::new_customer(&staff, None).into_response())
}

// ---- Forms ----

#[derive(Debug, Default, Deserialize)]
pub struct ContactForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub customer_since: String,
}

impl ContactForm {
    fn typed(&self) -> Vec<(String, String)> {
        [
            ("name", &self.name),
            ("phone", &self.phone),
            ("email", &self.email),
            ("customer_since", &self.customer_since),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SourceForm {
    #[serde(default)]
    pub csrf: String,
    /// A source's name; empty for unknown.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct VehicleForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub vin: String,
    #[serde(default)]
    pub brand: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub model_year: String,
}

impl VehicleForm {
    fn typed(&self) -> Vec<(String, String)> {
        [
            ("vin", &self.vin),
            ("brand", &self.brand),
            ("model", &self.model),
            ("model_year", &self.model_year),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub vin: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub invitation: String,
    #[serde(default)]
    pub event: String,
}

macro_rules! csrf_forms {
    ($($t:ty),*) => {$(
        impl CsrfForm for $t {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    )*};
}
csrf_forms!(ContactForm, SourceForm, VehicleForm, InviteForm, EventForm);

/// Empty text as `None`, the way [`CustomerAction`] takes optional fields.
fn optional(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The status a refused action answers with, and its message; `Err` for
/// what is not a refusal (a missing record, the store).
fn refused(e: ActionError) -> Result<(StatusCode, String), WebError> {
    match e {
        ActionError::NotFound(m) => Ok((StatusCode::NOT_FOUND, m)),
        ActionError::Conflict(m) => Ok((StatusCode::CONFLICT, m)),
        ActionError::Invalid(m) => Ok((StatusCode::UNPROCESSABLE_ENTITY, m)),
        ActionError::Store(e) => Err(e.into()),
    }
}

/// Carries out a customer change through ingest.
async fn change(state: &AppState, action: CustomerAction) -> Result<CustomerOutcome, ActionError> {
    let action = Action::Customers {
        action,
        invitation_expiry_days: state.settings.invitation_expiry_days,
    };
    match state.act(action).await? {
        Outcome::Customers { outcome } => Ok(outcome),
        other => {
            tracing::error!(?other, "a customer change answered something else");
            Err(ActionError::Invalid(
                "the change answered something unexpected; see the log".into(),
            ))
        }
    }
}

/// Carries out `action` on customer `id`'s page: back to the page (303)
/// when done, or the page with the refusal at `form` (the typed values
/// kept) when refused.
async fn submit(
    state: &AppState,
    staff: &Staff,
    id: u64,
    action: Result<CustomerAction, String>,
    form: &str,
    typed: Vec<(String, String)>,
) -> Result<Response, WebError> {
    let outcome = match action {
        Ok(action) => match change(state, action).await {
            Ok(_) => Ok(()),
            Err(e) => Err(refused(e)?),
        },
        Err(m) => Err((StatusCode::UNPROCESSABLE_ENTITY, m)),
    };
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/customers/{id}")).into_response()),
        Err((status, message)) => {
            tracing::info!(customer = id, form, %message, by = %staff.name, "customer change refused");
            let refusal = Refusal {
                form: form.to_string(),
                message,
                typed,
            };
            customer_page(state, staff, id, status, Some(&refusal)).await
        }
    }
}

/// 404 unless customer `id` exists, before anything is changed.
async fn existing(state: &AppState, id: u64) -> Result<Customer, WebError> {
    let store = state.store.clone();
    blocking(move || {
        store
            .customer(id)?
            .ok_or_else(|| WebError::NotFound(format!("There is no customer {id}.")))
    })
    .await
}

/// `POST /customers`: a new customer; to their page when made.
async fn create(
    State(state): State<Arc<AppState>>,
    f: StaffForm<ContactForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let action = CustomerAction::SaveCustomer {
        id: None,
        name: form.name.clone(),
        phone: optional(&form.phone),
        email: optional(&form.email),
        source: None,
        customer_since: optional(&form.customer_since),
    };
    match change(&state, action).await {
        Ok(CustomerOutcome::Customer { customer }) => {
            tracing::info!(customer = customer.id, by = %staff.name, "customer created");
            Ok(Redirect::to(&format!("/customers/{}", customer.id)).into_response())
        }
        Ok(_) => Err(WebError::Internal),
        Err(e) => {
            let (status, message) = refused(e)?;
            let refusal = Refusal {
                form: "contact".into(),
                message,
                typed: form.typed(),
            };
            Ok((
                status,
                views_customers::new_customer(&staff, Some(&refusal)),
            )
                .into_response())
        }
    }
}

/// `POST /customers/{id}`: the contact details (the source keeps its value).
async fn save_contact(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<ContactForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let id = parse_id(&raw)?;
    let current = existing(&state, id).await?;
    let action = CustomerAction::SaveCustomer {
        id: Some(id),
        name: form.name.clone(),
        phone: optional(&form.phone),
        email: optional(&form.email),
        source: current.source,
        customer_since: optional(&form.customer_since),
    };
    submit(&state, &staff, id, Ok(action), "contact", form.typed()).await
}

/// `POST /customers/{id}/source` (R-SRC-2): empty is unknown.
async fn set_source(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<SourceForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let id = parse_id(&raw)?;
    existing(&state, id).await?;
    let action = CustomerAction::SetSource {
        customer_id: id,
        source: optional(&form.source),
    };
    let typed = vec![("source".to_string(), form.source.clone())];
    submit(&state, &staff, id, Ok(action), "source", typed).await
}

/// A model year as typed: empty, or a whole number.
pub fn parse_model_year(text: &str) -> Result<Option<u16>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<u16>()
        .map(Some)
        .map_err(|_| format!("model year {t:?}: write the year in four digits, e.g. 2019"))
}

/// `POST /customers/{id}/vehicles`: registers a vehicle by VIN for this
/// customer (an existing VIN moves to them).
async fn add_vehicle(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<VehicleForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let id = parse_id(&raw)?;
    existing(&state, id).await?;
    let action = parse_model_year(&form.model_year).map(|model_year| CustomerAction::SaveVehicle {
        vin: form.vin.clone(),
        customer_id: Some(id),
        fleet: None,
        brand: optional(&form.brand),
        model: optional(&form.model),
        model_year,
    });
    submit(&state, &staff, id, action, "vehicle", form.typed()).await
}

/// The customer's vehicle with `vin` as typed, or why not.
async fn own_vehicle(state: &AppState, id: u64, vin: &str) -> Result<Result<(), String>, WebError> {
    let store = state.store.clone();
    let vin = vin.trim().to_ascii_uppercase();
    blocking(move || {
        let owns = store
            .vehicles_of_customer(id)?
            .iter()
            .any(|v| v.vin.to_string() == vin);
        Ok(if owns {
            Ok(())
        } else {
            Err(format!("vehicle {vin} is not registered to customer {id}"))
        })
    })
    .await
}

/// `POST /customers/{id}/invite` (R-VEH-3): invites the customer of one
/// of their vehicles to the app.
async fn invite(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<InviteForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let id = parse_id(&raw)?;
    existing(&state, id).await?;
    let action = own_vehicle(&state, id, &form.vin)
        .await?
        .map(|()| CustomerAction::Invite {
            vin: form.vin.clone(),
            at_ms: None,
        });
    let typed = vec![("vin".to_string(), form.vin.clone())];
    submit(&state, &staff, id, action, "invite", typed).await
}

/// The invitation `raw` when it is one of customer `id`'s vehicles'.
async fn own_invitation(state: &AppState, id: u64, raw: &str) -> Result<u64, WebError> {
    let missing = || WebError::NotFound(format!("Customer {id} has no invitation {raw:?}."));
    let inv_id: u64 = raw.trim().parse().map_err(|_| missing())?;
    let store = state.store.clone();
    let found = blocking(move || {
        Ok(match store.invitation(inv_id)? {
            Some(inv) => store
                .registered_vehicle(&inv.vin)?
                .is_some_and(|v| v.customer_id == Some(id)),
            None => false,
        })
    })
    .await?;
    found.then_some(inv_id).ok_or_else(missing)
}

/// `POST /customers/{id}/invitation`: something happened to a vehicle's
/// invitation (sent, accepted, declined), entered by the staff.
async fn invitation_event(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    f: StaffForm<EventForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(CHANGE, CHANGE_WHAT)?;
    let id = parse_id(&raw)?;
    existing(&state, id).await?;
    let inv_id = own_invitation(&state, id, &form.invitation).await?;
    let action = InvitationEvent::parse(form.event.trim())
        .ok_or_else(|| format!("event {:?}: one of send, accept, decline", form.event))
        .map(|event| CustomerAction::Invitation {
            id: inv_id,
            event,
            at_ms: None,
        });
    let typed = vec![("invitation".to_string(), inv_id.to_string())];
    submit(&state, &staff, id, action, "event", typed).await
}

// ---- Export ----

/// `GET /customers/export.csv`: the same file as `forecourt export
/// customers`, which imports back changing nothing.
async fn export_csv(
    State(state): State<Arc<AppState>>,
    staff: Staff,
) -> Result<Response, WebError> {
    staff.require(Permission::Read, "read customers")?;
    let store = state.store.clone();
    let csv = blocking(move || Ok(crate::customers::export_csv(&store)?)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"forecourt-customers.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

// ---- Import ----

/// What the import page shows after an upload.
#[derive(Debug)]
pub enum ImportResult {
    /// The report of an import or a dry run.
    Done(ImportReport),
    /// Why nothing was imported: one line each (every bad row numbered).
    Refused(Vec<String>),
}

async fn import_page(staff: Staff) -> Result<Response, WebError> {
    staff.require(CHANGE, CHANGE_WHAT)?;
    Ok(views_customers::import(&staff, None).into_response())
}

fn import_answer(staff: &Staff, status: StatusCode, result: ImportResult) -> Response {
    (status, views_customers::import(staff, Some(&result))).into_response()
}

/// The lines of a refusal's message, without blank ones.
fn lines(message: &str) -> Vec<String> {
    message
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The file's text, or why the file as a whole cannot be read.
fn file_text(up: &Upload) -> Result<String, (StatusCode, Vec<String>)> {
    if !up.has_file || (up.file_len == 0 && up.file_name.as_deref().is_none_or(str::is_empty)) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["Choose the customer file (CSV) to import.".into()],
        ));
    }
    if up.file_len == 0 {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["The file is empty: choose the customer CSV file exported from the DMS.".into()],
        ));
    }
    if up.file_len > MAX_FILE_BYTES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![format!(
                "The file is {} bytes: at most {MAX_FILE_BYTES} bytes (8 MB) are accepted; split it.",
                up.file_len
            )],
        ));
    }
    match crate::customers::decode(&up.file) {
        Ok(text) => Ok(text.to_string()),
        Err(rows) => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            lines(&crate::customers::rows_message(&rows)),
        )),
    }
}

/// `POST /customers/import`: a DMS customer file as a multipart form with
/// the session's `csrf` field and, for a dry run, `dry_run`. A file with
/// any bad row changes nothing; the page lists every bad row.
async fn upload(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, WebError> {
    staff.require(CHANGE, CHANGE_WHAT)?;
    if !session::same_origin(&headers) {
        return Err(WebError::CrossSite);
    }
    let refuse = |status, lines| Ok(import_answer(&staff, status, ImportResult::Refused(lines)));
    let form = match form {
        Ok(f) => f,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                vec![format!(
                    "The upload could not be read ({}): send the file with this page's form.",
                    e.body_text()
                )],
            )
        }
    };
    let up = match crate::web::forms::read_upload(form, FILE_FIELD, MAX_FILE_BYTES).await {
        Ok(up) => up,
        Err(e) => {
            let status = e.status();
            return refuse(
                status,
                vec![format!(
                    "The upload ended early, was over {} MB or was not a well-formed form ({}): choose the file and send it again.",
                    UPLOAD_MAX_BODY / (1024 * 1024),
                    e.body_text()
                )],
            );
        }
    };
    if !crate::web::session::constant_time_eq(up.csrf.as_bytes(), staff.csrf.as_bytes()) {
        return Err(WebError::Csrf);
    }
    let csv = match file_text(&up) {
        Ok(csv) => csv,
        Err((status, lines)) => return refuse(status, lines),
    };
    let dry_run = up.dry_run;
    match state.act(Action::ImportCustomers { csv, dry_run }).await {
        Ok(Outcome::CustomerImport { report }) => {
            tracing::info!(file = ?up.file_name, dry_run, by = %staff.name, %report, "customer file");
            Ok(import_answer(
                &staff,
                StatusCode::OK,
                ImportResult::Done(report),
            ))
        }
        Ok(other) => {
            tracing::error!(?other, "a customer import answered something else");
            Err(WebError::Internal)
        }
        Err(ActionError::Store(e)) => Err(e.into()),
        Err(e) => refuse(StatusCode::UNPROCESSABLE_ENTITY, lines(&e.to_string())),
    }
}

/// The date a customer is a customer since, as the forms show it.
pub fn since_text(c: &Customer) -> String {
    format_date(c.customer_since_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(state: Option<InvitationState>, fleet: bool) -> VehicleLine {
        let vin = crate::domain::customer::check::vin("WF0XXXGCDX1234567").unwrap();
        let mut vehicle =
            RegisteredVehicle::new(vin, crate::domain::customer::VehicleOrigin::Forecourt, 0);
        vehicle.customer_id = Some(1);
        if fleet {
            vehicle.fleet = Some("Taxis".into());
        }
        VehicleLine {
            vehicle,
            device_id: None,
            invitation: None,
            invitation_state: state,
            expires_ms: None,
            assignment: AssignmentState::WithoutCustomer,
            active: false,
        }
    }

    #[test]
    fn buttons_follow_the_invitation_state_machine() {
        use InvitationEvent::*;
        assert_eq!(
            line(Some(InvitationState::Created), false).events(),
            vec![Send, Accept, Decline]
        );
        assert_eq!(
            line(Some(InvitationState::Sent), false).events(),
            vec![Accept, Decline]
        );
        for s in [
            InvitationState::Accepted,
            InvitationState::Declined,
            InvitationState::Expired,
        ] {
            assert!(line(Some(s), false).events().is_empty(), "{s:?}");
        }
    }

    #[test]
    fn invite_is_offered_only_when_the_domain_would_allow_it() {
        assert!(line(None, false).can_invite());
        assert!(line(Some(InvitationState::Declined), false).can_invite());
        assert!(line(Some(InvitationState::Expired), false).can_invite());
        assert!(!line(Some(InvitationState::Sent), false).can_invite());
        assert!(!line(Some(InvitationState::Accepted), false).can_invite());
        assert!(!line(None, true).can_invite(), "fleet vehicles need none");
    }

    #[test]
    fn model_years_are_whole_numbers_or_empty() {
        assert_eq!(parse_model_year(" 2019 "), Ok(Some(2019)));
        assert_eq!(parse_model_year(""), Ok(None));
        assert!(parse_model_year("nineteen")
            .unwrap_err()
            .contains("four digits"));
        assert!(parse_model_year("-1").is_err());
    }

    #[test]
    fn refusals_keep_what_was_typed() {
        let r = Refusal {
            form: "vehicle".into(),
            message: "m".into(),
            typed: vec![("vin".into(), "ABC".into())],
        };
        assert_eq!(r.typed("vin"), Some("ABC"));
        assert_eq!(r.typed("brand"), None);
    }
}
