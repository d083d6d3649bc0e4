//! Pure types and rules: no IO, no tokio, no store. A rule is a function of
//! (state, event, now) that changes state and returns effects; time is
//! always an argument. Most of the tests live here.

pub mod catalog;
pub mod consent;
pub mod customer;
pub mod lead;
pub mod vehicle;
