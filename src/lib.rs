//! Forecourt: an offline-first workshop appliance (in progress).
pub mod app;
pub mod clock;
pub mod config;
pub mod control;
pub mod domain;
pub mod ingest;
pub mod link;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod web;
