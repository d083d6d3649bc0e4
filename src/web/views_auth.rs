//! The views of logging in, first setup and the staff users pages, on the
//! shared [`layout`]. Every form that changes something carries the
//! session's CSRF token in a hidden `csrf` field (see `web::session`).

use maud::{html, Markup};

use crate::clock::rfc3339;
use crate::store::users::UserRecord;
use crate::web::auth::Role;
use crate::web::session::{SetupForm, Staff};
use crate::web::users::{AddUserForm, MIN_PASSWORD_CHARS};
use crate::web::views::{layout, staff_layout};

fn message_box(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { ul.problems role="alert" { li { (m) } } }
    }
}

fn csrf_field(staff: &Staff) -> Markup {
    html! { input type="hidden" name="csrf" value=(staff.csrf); }
}

/// Who is logged in, and the button to log out.
fn signed_in(staff: &Staff) -> Markup {
    html! {
        form.signed-in method="post" action="/logout" {
            (csrf_field(staff))
            span.muted { "Logged in as " (staff.display_name) " (" (staff.role.as_str()) ") " }
            button type="submit" { "Log out" }
        }
    }
}

fn role_options(selected: &str) -> Markup {
    html! {
        @for r in Role::ALL {
            option value=(r.as_str()) selected[r.as_str() == selected] { (r.as_str()) }
        }
    }
}

/// The login page of a browser that is logged in already: where anyone,
/// whatever their role, finds the button to log out.
pub fn logged_in(staff: &Staff) -> Markup {
    layout(
        "Logged in",
        html! {
            h1 { "Logged in" }
            (signed_in(staff))
            p { a href="/" { "To the status page" } }
        },
    )
}

pub fn login(message: Option<&str>, name: &str) -> Markup {
    layout(
        "Log in",
        html! {
            h1 { "Log in" }
            (message_box(message))
            form method="post" action="/login" {
                p { label { "Name " input type="text" name="name" value=(name) autocomplete="username" required autofocus; } }
                p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

pub fn setup(message: Option<&str>, form: &SetupForm) -> Markup {
    layout(
        "First setup",
        html! {
            h1 { "Create the first admin" }
            p {
                "Enter the one-time setup code from the appliance's log (or the file "
                code { "setup-code" } " in its data directory), then the first admin's name and password."
            }
            (message_box(message))
            form method="post" action="/setup" {
                p { label { "Setup code " input type="text" name="code" value=(form.code) autocomplete="off" required autofocus; } }
                p { label { "Name " input type="text" name="name" value=(form.name) autocomplete="username" required; } }
                p { label { "Display name " input type="text" name="display_name" value=(form.display_name); } }
                p { label { "Password (at least " (MIN_PASSWORD_CHARS) " characters) "
                    input type="password" name="password" autocomplete="new-password" required; } }
                p { label { "Password again " input type="password" name="password_again" autocomplete="new-password" required; } }
                p { button type="submit" { "Create admin and log in" } }
            }
        },
    )
}

pub fn users(
    staff: &Staff,
    users: &[UserRecord],
    message: Option<&str>,
    draft: &AddUserForm,
) -> Markup {
    let role = if draft.role.is_empty() {
        Role::Technician.as_str()
    } else {
        draft.role.as_str()
    };
    staff_layout(
        staff,
        "Users",
        html! {
            h1 { "Users" }
            table.users {
                thead { tr { th { "Name" } th { "Display name" } th { "Role" } th { "State" } th { "Changed" } } }
                tbody {
                    @for u in users {
                        tr {
                            td.mono { a href=(format!("/users/{}", u.name)) { (u.name) } }
                            td { (u.display_name) }
                            td { (u.role.as_str()) }
                            td { @if u.disabled { span.pill.bad { "disabled" } } @else { span.pill.ok { "active" } } }
                            td title=(rfc3339(u.updated_ms)) { (rfc3339(u.updated_ms)) }
                        }
                    }
                }
            }
            h2 { "Add a user" }
            (message_box(message))
            form method="post" action="/users" {
                (csrf_field(staff))
                p { label { "Name " input type="text" name="name" value=(draft.name) autocomplete="off" required; } }
                p { label { "Display name " input type="text" name="display_name" value=(draft.display_name); } }
                p { label { "Role " select name="role" { (role_options(role)) } } }
                p { label { "Password (at least " (MIN_PASSWORD_CHARS) " characters) "
                    input type="password" name="password" autocomplete="new-password" required; } }
                p { label { "Password again " input type="password" name="password_again" autocomplete="new-password" required; } }
                p { button type="submit" { "Add user" } }
            }
        },
    )
}

pub fn user(staff: &Staff, user: &UserRecord, message: Option<&str>) -> Markup {
    let path = format!("/users/{}", user.name);
    staff_layout(
        staff,
        &user.display_name,
        html! {
            p { a href="/users" { "All users" } }
            h1 { (user.display_name) " " span.muted.mono { "(" (user.name) ")" } }
            (message_box(message))
            p {
                @if user.disabled { span.pill.bad { "disabled" } " This user cannot log in." }
                @else { span.pill.ok { "active" } }
            }
            h2 { "Name and role" }
            form method="post" action=(path) {
                (csrf_field(staff))
                p { label { "Display name " input type="text" name="display_name" value=(user.display_name) required; } }
                p { label { "Role " select name="role" { (role_options(user.role.as_str())) } } }
                p { button type="submit" { "Save" } }
            }
            h2 { "Reset the password" }
            p.muted { "The user is logged out everywhere." }
            form method="post" action=(format!("{path}/password")) {
                (csrf_field(staff))
                p { label { "New password (at least " (MIN_PASSWORD_CHARS) " characters) "
                    input type="password" name="password" autocomplete="new-password" required; } }
                p { label { "Again " input type="password" name="password_again" autocomplete="new-password" required; } }
                p { button type="submit" { "Reset password" } }
            }
            h2 { @if user.disabled { "Enable" } @else { "Disable" } }
            @if user.disabled {
                form method="post" action=(format!("{path}/enable")) {
                    (csrf_field(staff))
                    button type="submit" { "Enable " (user.name) }
                }
            } @else {
                form method="post" action=(format!("{path}/disable")) {
                    (csrf_field(staff))
                    p.muted { "A disabled user cannot log in and is logged out at once." }
                    button type="submit" { "Disable " (user.name) }
                }
            }
            p.muted { "Created " (rfc3339(user.created_ms)) ", changed " (rfc3339(user.updated_ms)) "." }
        },
    )
}
