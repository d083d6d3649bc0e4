//! Forecourt: an offline-first workshop appliance. It hears CC-Link dongles
//! over serial and CAN, keeps what they report in an embedded store, and
//! serves the workshop's staff on the LAN. Data flows one way:
//!
//! ```text
//! dongle --(serial | CAN)--> link --> ingest --> store --> web
//!                                       ^
//!                                     clock
//! ```
//!
//! Module map:
//! - [`link`]: bytes to payloads and back (PROTOCOL.md): [`link::frame`]
//!   COBS + CRC-32C, [`link::message`] typed messages, [`link::isotp`]
//!   ISO-TP, [`link::serial`] and [`link::can`] the transports.
//! - [`ingest`]: the one loop that dedupes, applies and commits batches, and
//!   ACKs only after the commit.
//! - [`domain`]: pure types and rules (no IO): units and how a message
//!   changes them.
//! - [`store`]: the only module that touches the database: the engine
//!   trait (redb, sled), typed tables, records, counters, schema version.
//! - [`web`]: `/healthz` and the status page (axum + maud).
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
pub mod demo;
pub mod domain;
pub mod ingest;
pub mod leads;
pub mod link;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod web;
