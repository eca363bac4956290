//! Jobs: a source, a sink, tables and settings, run to completion or failure.

mod copies;
pub mod error;
mod fresh_start;
pub mod notify;
pub mod preflight;
pub mod runner;
pub mod spec;
pub mod store;
pub mod supervisor;

pub use error::JobError;
