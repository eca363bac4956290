//! Sources: where changes come from.
//!
//! Each source lives in its own folder and is the only code that knows its
//! database's replication protocol, positions and snapshots. Above it,
//! changes are change lines ([`crate::change`]) and places in the stream
//! are [`crate::position::Position`]s.
//!
//! ```text
//!  postgres/   a logical replication slot (pgoutput) on PostgreSQL
//! ```

pub mod postgres;
