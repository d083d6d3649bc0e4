//! The dashboard's view: sections of figures, each a link to its list with
//! its definition, the newest open leads, and when the figures were
//! computed. A few lines of script refresh the figures every 30 s; without
//! script the page is complete and a reload refreshes it.

use maud::{html, Markup, PreEscaped};

use crate::clock::rfc3339;
use crate::domain::lead::Lead;
use crate::leads::describe;
use crate::web::dashboard::{Dashboard, Tone};
use crate::web::session::Staff;
use crate::web::views::{ago, money, staff_layout};

/// Fetches `/dashboard/figures` and writes each value into the figure with
/// the same `data-figure`; stops quietly when the session has ended.
const LIVE: &str = r#"
(function () {
  function refresh() {
    fetch('/dashboard/figures', {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
      .then(function (r) { if (!r.ok) throw r; return r.json(); })
      .then(function (d) {
        document.querySelectorAll('[data-figure]').forEach(function (el) {
          var v = d.figures[el.getAttribute('data-figure')];
          if (v === undefined) return;
          el.querySelector('.value').textContent = v;
          el.classList.toggle('attention', el.classList.contains('watch') && v > 0);
        });
        var t = document.getElementById('computed-at');
        if (t) { t.textContent = d.computed_at; t.setAttribute('datetime', d.computed_at); }
        setTimeout(refresh, 30000);
      })
      .catch(function () {});
  }
  setTimeout(refresh, 30000);
})();
"#;

/// The dashboard in the staff's frame; `body` from [`body`].
pub fn page(staff: &Staff, body: &str) -> Markup {
    staff_layout(staff, "Dashboard", PreEscaped(body.to_owned()))
}

/// The page's content: the same for every member of staff.
pub fn body(d: &Dashboard, newest: &[Lead]) -> Markup {
    let computed = rfc3339(d.computed_ms);
    html! {
            div.pagehead {
                h1 { "Dashboard" }
                p.muted.computed {
                    "Figures computed " time #computed-at datetime=(computed) { (computed) }
                    " and kept current as the vehicles report."
                }
            }
            @for s in &d.sections {
                section.dash {
                    h2 { (s.title) }
                    div.figures {
                        @for f in &s.figures {
                            @let watch = f.tone == Tone::Attention;
                            a data-figure=(f.key) href=(f.href) title=(f.definition)
                                class=(match (watch, f.value > 0) { (true, true) => "figure watch attention", (true, false) => "figure watch", _ => "figure" }) {
                                span.value { (f.value) }
                                span.label { (f.label) }
                                span.definition { (f.definition) }
                            }
                        }
                    }
                }
            }
            section.dash {
                h2 { "Newest open leads" a.more href="/leads" { "All leads »" } }
                table.leads {
                    thead { tr { th { "Opened" } th { "Type" } th { "Vehicle" } th { "What" } th.num { "Est. revenue" } } }
                    tbody {
                        @for l in newest {
                            tr {
                                td.nowrap title=(rfc3339(l.opened_at_ms)) { (ago(d.computed_ms, l.opened_at_ms)) }
                                td { span class=(format!("pill type-{}", l.key.ty.as_str())) { (l.key.ty.title()) } }
                                td { a.mono href=(format!("/vehicles/{}", l.device_id)) { @if let Some(vin) = l.vin { (vin) } @else { "unit " (l.device_id) } } }
                                td { a.lead-link href=(format!("/leads/{}", l.id)) { (describe(l)) } }
                                td.num { @if let Some(c) = l.estimated_revenue_cents { (money(c)) } }
                            }
                        }
                        @if newest.is_empty() { tr { td colspan="5" .empty { "Nothing open: every vehicle heard is fine." } } }
                    }
                }
            }
            script { (PreEscaped(LIVE)) }
    }
}
