//! The only module that touches the database.
pub mod engine;
pub mod redb;
#[cfg(feature = "sled")]
pub mod sled;
#[cfg(test)]
mod suite;
