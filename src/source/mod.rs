//! The source: a logical replication session on PostgreSQL, on the
//! client in `crate::pg`.
//!
//! ```text
//!  pg::Connection (replication=database) ──> commands (IDENTIFY_SYSTEM, slots, START_REPLICATION)
//!                                        └──> stream (CopyBoth: messages in, status out;
//!                                                     feedback decides what and when)
//!  preflight: checks with a clear fix before streaming
//!  publication: the job's publication (tables, partitions through their root)
//! ```

pub mod catalog;
pub mod commands;
pub mod feedback;
pub mod lsn;
pub mod preflight;
pub mod publication;
pub mod stream;

pub use stream::{ReplicationStream, StreamEvent};
