//! The checkpoint store: where a job keeps how far it got, in the database
//! that holds its checkpoint (the Postgres sink itself, with the rows, or
//! the state store for the other sinks), whichever that is.
//!
//! ```text
//!  positions  the applied position (walpipe.checkpoints), the chunked copy's progress
//!             written with it, the data gaps of lost slots
//!  marks      the tables that need a re-copy, and why (walpipe.recopy_needed)
//!  tables     the store's tables, created or brought up to date at start
//! ```
//!
//! The job plans its copies and decides where to start through these
//! functions; the sinks write the same records inside their own
//! transactions, with the rows they describe. The store is a PostgreSQL
//! database in every case, so the functions take its client.

pub mod marks;
pub mod positions;
pub mod tables;
