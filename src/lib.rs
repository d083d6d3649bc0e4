//! Forecourt: an offline-first workshop appliance. It hears CC-Link dongles
//! over serial and CAN, turns what they report into service leads, keeps
//! everything in an embedded store, and serves the workshop's staff on the
//! LAN. Data flows one way:
//!
//! ```text
//! dongle --(serial | CAN)--> link --> ingest --> rules --> store --> web / api
//!                                       ^                    |
//!                                     clock               outbox --> (sync)
//! ```
//!
//! Module map:
//! - [`link`]: bytes to payloads and back (PROTOCOL.md): [`link::frame`]
//!   COBS + CRC-32C, [`link::message`] typed messages, [`link::isotp`]
//!   ISO-TP, [`link::serial`] and [`link::can`] the transports.
//! - [`ingest`]: the one loop and the one writer: dedupes, applies messages
//!   and the lead rules, commits a batch in one transaction, ACKs after the
//!   commit; carries out staff and CLI actions; the hourly tick.
//! - [`domain`]: pure types and rules (no IO): [`domain::vehicle`] units,
//!   [`domain::lead`] the R-LEAD rules, [`domain::consent`] R-VEH-4,
//!   [`domain::catalog`] labour hours, DTC texts, brands and its CSV,
//!   [`domain::customer`] customers, registered vehicles, invitations and
//!   sources (R-VEH-1..3, R-SRC-1..3).
//! - [`customers`]: the DMS customer file (import with a dry run, export)
//!   and the staff's changes to customers, vehicles, sources, spend and
//!   invitations.
//! - [`leads`]: rule effects into lead records, counters, outbox and
//!   notifications; the lead actions.
//! - [`store`]: the only module that touches the database: the engine
//!   trait (redb, sled), typed tables, records, counters, schema version,
//!   leads, customers, tokens, users and sessions.
//! - [`web`]: `/healthz`, the JSON API ([`web::api`], [`web::auth`]
//!   tokens and roles), staff sessions and users ([`web::session`],
//!   [`web::users`]), and the staff's pages: [`web::dashboard`],
//!   [`web::leads`], [`web::vehicles`], [`web::lot`] (with the scan),
//!   [`web::settings`] and the status page; each page's HTML in its
//!   `views_*` module on the one layout of [`web::views`].
//! - [`control`]: the owner-only Unix socket through which commands reach
//!   a running appliance.
//! - [`app`]: starts and stops everything in order.
//! - [`config`]: the TOML file to validated settings.
//! - [`sim`]: the lot simulator used by the demo, tests and benchmarks.
//! - [`demo`]: `forecourt demo`: the appliance on a simulated lot.
//! - [`cli`]: the command line.
//! - [`clock`], [`shutdown`]: time as an input; stopping on purpose.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod customers;
pub mod demo;
pub mod domain;
pub mod ingest;
pub mod leads;
pub mod link;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod web;
