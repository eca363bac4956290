//! Jobs: a source, a sink, tables and settings, run to completion or failure.

pub mod runner;
pub mod snapshot;
pub mod spec;
