//! The view of the settings page: the labour rate form and the catalog
//! (what is in use, its download, and the import form). A refused form is
//! shown again with what was typed and what to fix.

use maud::{html, Markup};

use crate::domain::catalog::{Catalog, MAX_FILE_BYTES};
use crate::web::session::Staff;
use crate::web::settings::FILE_FIELD;
use crate::web::views::{money, staff_layout};

/// What the last change did, shown once after its redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    LabourRate,
    Catalog,
}

pub struct SettingsView<'a> {
    pub labour_rate_cents: u64,
    /// What the rate field holds: the rate in use, or what was typed.
    pub rate_draft: &'a str,
    pub rate_error: Option<&'a str>,
    pub catalog: &'a Catalog,
    /// Why the last upload was refused, one line each.
    pub catalog_errors: &'a [String],
    pub done: Option<Done>,
}

fn problems<S: AsRef<str>>(lines: &[S]) -> Markup {
    html! {
        @if !lines.is_empty() {
            ul.problems role="alert" { @for l in lines { li { (l.as_ref()) } } }
        }
    }
}

fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

pub fn settings(staff: &Staff, v: &SettingsView<'_>) -> Markup {
    staff_layout(
        staff,
        "Settings",
        html! {
            h1 { "Settings" }
            (labour_rate(staff, v))
            (catalog(staff, v))
        },
    )
}

fn labour_rate(staff: &Staff, v: &SettingsView<'_>) -> Markup {
    html! {
        section.setting id="labour-rate" {
            h2 { "Labour rate" }
            p {
                "The workshop's hourly rate: " strong { (money(v.labour_rate_cents)) " an hour" } ". "
                span.muted { "A lead's estimated revenue is the catalog's labour hours for its job times this rate, plus parts." }
            }
            @if v.done == Some(Done::LabourRate) { (notice("Labour rate saved. Leads opened from now on are estimated with it.")) }
            (problems(v.rate_error.as_slice()))
            form method="post" action="/settings/labour-rate" {
                input type="hidden" name="csrf" value=(staff.csrf);
                p { label { "Rate an hour (e.g. 95.00) "
                    input type="text" name="rate" value=(v.rate_draft) inputmode="decimal" autocomplete="off" required; } }
                p { button type="submit" { "Save rate" } }
            }
        }
    }
}

fn catalog(staff: &Staff, v: &SettingsView<'_>) -> Markup {
    let c = v.catalog;
    html! {
        section.setting id="catalog" {
            h2 { "Catalog" }
            p {
                "The catalog in use has " strong { (c.rows()) " rows" } ": "
                (c.services().count()) " service jobs, "
                (c.brand_names().len()) " brands. "
                a href="/settings/catalog.csv" download="forecourt-catalog.csv" { "Download it as CSV" }
            }
            @if v.done == Some(Done::Catalog) { (notice("Catalog imported.")) }
            (problems(v.catalog_errors))
            form method="post" action="/settings/catalog" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(staff.csrf);
                p { label { "Catalog file (CSV) "
                    input type="file" name=(FILE_FIELD) accept=".csv,text/csv" required; } }
                p.muted {
                    "UTF-8 CSV in the importer's format, at most " (MAX_FILE_BYTES / (1024 * 1024)) " MB. "
                    "Each row replaces the row with the same key or is added; nothing is deleted. "
                    "A file with any bad row changes nothing, and every bad row is listed."
                }
                p { button type="submit" { "Import catalog" } }
            }
        }
    }
}
