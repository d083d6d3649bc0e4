//! The staff users pages (R-VEH-5: add, edit, disable users), for admins
//! only: the list with a form to add one, and one page per user to change
//! the display name and role, disable or enable, and reset the password.
//! Two rules keep the appliance usable: an admin cannot disable themself,
//! and the last enabled admin cannot be disabled or lose the role.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::app::AppState;
use crate::store::users::{user_key, UserRecord};
use crate::store::Store;
use crate::web::auth::{Permission, Role};
use crate::web::session::{self, CsrfForm, CsrfOnly, Staff, StaffForm, WebError};
use crate::web::views_auth;

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest display name, in characters.
pub const MAX_DISPLAY_CHARS: usize = 64;
/// Shortest password, in characters (NIST SP 800-63B section 3.1.1.2 asks
/// for at least 8; staff share a workshop, so a little more).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password, in characters: bounds the work one login costs.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The users pages' routes as (method, path), for the route-table test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/{name}"),
    ("POST", "/users/{name}"),
    ("POST", "/users/{name}/password"),
    ("POST", "/users/{name}/disable"),
    ("POST", "/users/{name}/enable"),
];

/// The routes of [`ROUTES`]; mounted behind `session::gate`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/users", get(list).post(add))
        .route("/users/{name}", get(show).post(edit))
        .route("/users/{name}/password", post(reset_password))
        .route("/users/{name}/disable", post(disable))
        .route("/users/{name}/enable", post(enable))
}

/// A user to be made, checked.
#[derive(Debug)]
pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub role: Role,
    pub password: String,
}

/// A user name: what staff type to log in, and what the lead history shows
/// as "by". Lower case letters, digits, `.`, `-` and `_`.
pub fn parse_name(name: &str) -> Result<String, String> {
    let name = user_key(name);
    if name.is_empty() {
        return Err("Enter a user name.".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "A user name has at most {MAX_NAME_CHARS} characters."
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err("A user name holds only letters a-z, digits, '.', '-' and '_'.".into());
    }
    Ok(name)
}

pub fn parse_display_name(display: &str, name: &str) -> Result<String, String> {
    let display = display.trim();
    let display = if display.is_empty() { name } else { display };
    if display.chars().count() > MAX_DISPLAY_CHARS {
        return Err(format!(
            "A display name has at most {MAX_DISPLAY_CHARS} characters."
        ));
    }
    if display.chars().any(char::is_control) {
        return Err("A display name must not hold control characters.".into());
    }
    Ok(display.to_owned())
}

pub fn check_password(password: &str, again: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(format!(
            "A password has at least {MIN_PASSWORD_CHARS} characters."
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(format!(
            "A password has at most {MAX_PASSWORD_CHARS} characters."
        ));
    }
    if password != again {
        return Err("The two passwords differ.".into());
    }
    Ok(())
}

pub fn parse_new_user(
    name: &str,
    display: &str,
    role: Role,
    password: &str,
    again: &str,
) -> Result<NewUser, String> {
    let name = parse_name(name)?;
    let display_name = parse_display_name(display, &name)?;
    check_password(password, again)?;
    Ok(NewUser {
        name,
        display_name,
        role,
        password: password.to_owned(),
    })
}

fn parse_role(role: &str) -> Result<Role, String> {
    Role::parse(role).ok_or_else(|| "Choose a role: admin, advisor or technician.".into())
}

/// Enabled admins other than `except`.
fn other_admins(users: &[UserRecord], except: &str) -> usize {
    users
        .iter()
        .filter(|u| u.role == Role::Admin && !u.disabled && u.name != except)
        .count()
}

/// What the add form held, shown again when it is refused.
#[derive(Debug, Default, Deserialize)]
pub struct AddUserForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub password_again: String,
}

impl CsrfForm for AddUserForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EditUserForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub role: String,
}

impl CsrfForm for EditUserForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub password_again: String,
}

impl CsrfForm for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Runs store work off the async threads; a panic there is a 500.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a users page's blocking work panicked");
        Err(WebError::Internal)
    })
}

async fn all_users(store: &Arc<Store>) -> Result<Vec<UserRecord>, WebError> {
    let store = store.clone();
    blocking(move || Ok(store.users()?)).await
}

async fn one_user(store: &Arc<Store>, name: &str) -> Result<UserRecord, WebError> {
    let store = store.clone();
    let key = name.to_owned();
    blocking(move || Ok(store.user(&key)?))
        .await?
        .ok_or_else(|| WebError::NotFound(format!("There is no user {name:?}.")))
}

const MANAGE: &str = "manage users";

async fn list(State(state): State<Arc<AppState>>, staff: Staff) -> Result<Response, WebError> {
    staff.require(Permission::ManageUsers, MANAGE)?;
    let users = all_users(&state.store).await?;
    Ok(views_auth::users(&staff, &users, None, &AddUserForm::default()).into_response())
}

async fn add(
    State(state): State<Arc<AppState>>,
    f: StaffForm<AddUserForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::ManageUsers, MANAGE)?;
    let refuse =
        |status: StatusCode, message: String, users: Vec<UserRecord>, form: AddUserForm| {
            let shown = AddUserForm {
                password: String::new(),
                password_again: String::new(),
                ..form
            };
            (
                status,
                views_auth::users(&staff, &users, Some(&message), &shown),
            )
                .into_response()
        };
    let new = parse_role(&form.role).and_then(|role| {
        parse_new_user(
            &form.name,
            &form.display_name,
            role,
            &form.password,
            &form.password_again,
        )
    });
    let new = match new {
        Ok(n) => n,
        Err(message) => {
            let users = all_users(&state.store).await?;
            return Ok(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                message,
                users,
                form,
            ));
        }
    };
    let store = state.store.clone();
    let now = state.clock.now_ms();
    let name = new.name.clone();
    let added = blocking(move || {
        let record = UserRecord {
            name: new.name,
            display_name: new.display_name,
            role: new.role,
            password_hash: session::hash_password(&new.password)?,
            disabled: false,
            created_ms: now,
            updated_ms: now,
        };
        Ok(store.write(|tx| {
            if tx.user(&record.name)?.is_some() {
                return Ok(false);
            }
            tx.put_user(&record)?;
            Ok(true)
        })?)
    })
    .await?;
    if !added {
        let users = all_users(&state.store).await?;
        return Ok(refuse(
            StatusCode::CONFLICT,
            format!("There is a user {name:?} already."),
            users,
            form,
        ));
    }
    tracing::info!(user = %name, by = %staff.name, "user added");
    Ok(Redirect::to("/users").into_response())
}

async fn show(
    State(state): State<Arc<AppState>>,
    staff: Staff,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    staff.require(Permission::ManageUsers, MANAGE)?;
    let user = one_user(&state.store, &name).await?;
    Ok(views_auth::user(&staff, &user, None).into_response())
}

/// A change to one user, checked against all of them in the transaction
/// that makes it; `Err` is what the page says, with its status.
type Change =
    Box<dyn FnOnce(&mut UserRecord, &[UserRecord]) -> Result<(), (StatusCode, String)> + Send>;

/// Applies `change` to user `name`; also ends that user's sessions (all
/// but the caller's own) when `end_sessions` is set. Answers the user's
/// page with the outcome.
async fn change_user(
    state: &AppState,
    staff: &Staff,
    name: String,
    end_sessions: bool,
    change: Change,
) -> Result<Response, WebError> {
    let store = state.store.clone();
    let now = state.clock.now_ms();
    let keep = staff.session_key();
    let key = name.clone();
    let outcome = blocking(move || {
        Ok(store.write(|tx| {
            let users = tx.users()?;
            let Some(mut user) = users.iter().find(|u| u.name == user_key(&key)).cloned() else {
                return Ok(None);
            };
            if let Err(refusal) = change(&mut user, &users) {
                return Ok(Some((user, Some(refusal))));
            }
            user.updated_ms = now;
            tx.put_user(&user)?;
            if end_sessions {
                session::end_sessions(tx, &user.name, Some(&keep))?;
            }
            Ok(Some((user, None)))
        })?)
    })
    .await?;
    match outcome {
        None => Err(WebError::NotFound(format!("There is no user {name:?}."))),
        Some((user, Some((status, message)))) => {
            Ok((status, views_auth::user(staff, &user, Some(&message))).into_response())
        }
        Some((user, None)) => {
            tracing::info!(user = %user.name, by = %staff.name, "user changed");
            Ok(Redirect::to(&format!("/users/{}", user.name)).into_response())
        }
    }
}

async fn edit(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    f: StaffForm<EditUserForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::ManageUsers, MANAGE)?;
    let change: Change = Box::new(move |user, users| {
        let unprocessable = |m: String| (StatusCode::UNPROCESSABLE_ENTITY, m);
        let role = parse_role(&form.role).map_err(unprocessable)?;
        let display = parse_display_name(&form.display_name, &user.name).map_err(unprocessable)?;
        if user.role == Role::Admin
            && role != Role::Admin
            && !user.disabled
            && other_admins(users, &user.name) == 0
        {
            return Err((
                StatusCode::CONFLICT,
                "This is the last admin: make another admin first.".into(),
            ));
        }
        user.role = role;
        user.display_name = display;
        Ok(())
    });
    change_user(&state, &staff, name, false, change).await
}

async fn reset_password(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    f: StaffForm<PasswordForm>,
) -> Result<Response, WebError> {
    let StaffForm { staff, form } = f;
    staff.require(Permission::ManageUsers, MANAGE)?;
    if let Err(message) = check_password(&form.password, &form.password_again) {
        let user = one_user(&state.store, &name).await?;
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            views_auth::user(&staff, &user, Some(&message)),
        )
            .into_response());
    }
    let password = form.password;
    let hash = blocking(move || Ok(session::hash_password(&password)?)).await?;
    let change: Change = Box::new(move |user, _| {
        user.password_hash = hash;
        Ok(())
    });
    change_user(&state, &staff, name, true, change).await
}

async fn disable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    f: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    let staff = f.staff;
    staff.require(Permission::ManageUsers, MANAGE)?;
    let me = staff.name.clone();
    let change: Change = Box::new(move |user, users| {
        if user.name == me {
            return Err((StatusCode::CONFLICT, "You cannot disable yourself.".into()));
        }
        if user.role == Role::Admin && !user.disabled && other_admins(users, &user.name) == 0 {
            return Err((
                StatusCode::CONFLICT,
                "This is the last admin: make another admin first.".into(),
            ));
        }
        user.disabled = true;
        Ok(())
    });
    change_user(&state, &staff, name, true, change).await
}

async fn enable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    f: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    let staff = f.staff;
    staff.require(Permission::ManageUsers, MANAGE)?;
    let change: Change = Box::new(|user, _| {
        user.disabled = false;
        Ok(())
    });
    change_user(&state, &staff, name, false, change).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_plain() {
        assert_eq!(parse_name(" Ines.D "), Ok("ines.d".into()));
        assert!(parse_name("").is_err());
        assert!(parse_name("ines duarte").is_err());
        assert!(
            parse_name("#setup").is_err(),
            "the setup throttle's key is no name"
        );
        assert!(parse_name(&"a".repeat(33)).is_err());
        assert!(parse_name(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn display_names_default_to_the_name() {
        assert_eq!(parse_display_name("  ", "ines"), Ok("ines".into()));
        assert_eq!(
            parse_display_name(" Inês Duarte ", "ines"),
            Ok("Inês Duarte".into())
        );
        assert!(parse_display_name("a\u{7}", "ines").is_err());
        assert!(parse_display_name(&"é".repeat(65), "ines").is_err());
    }

    #[test]
    fn passwords_have_a_length_and_are_typed_twice() {
        assert!(check_password("short", "short").is_err());
        assert!(check_password("long enough", "long enough!").is_err());
        assert!(check_password("long enough", "long enough").is_ok());
        assert!(check_password(&"x".repeat(257), &"x".repeat(257)).is_err());
    }
}
