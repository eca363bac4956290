//! The Postgres source: a logical replication session on PostgreSQL, on
//! the client in `crate::pg`.
//!
//! ```text
//!  pg::Connection (replication=database) ──> commands (IDENTIFY_SYSTEM, slots, START_REPLICATION)
//!                                        └──> stream (CopyBoth: messages in, status out;
//!                                                     feedback decides what and when)
//!  protocol/   pure bytes: walsender messages, the pgoutput decoder
//!  assembler   pgoutput messages to change lines, a transaction at a time
//!              (streamed ones held, and spilled, until their commit)
//!  catalog     the captured tables as the catalog describes them
//!  preflight   checks with a clear fix before streaming
//!  publication the job's publication (tables, partitions through their root)
//! ```

pub mod assembler;
pub mod catalog;
pub mod changes;
pub mod chunks;
pub mod column_history;
pub mod commands;
pub mod feedback;
pub mod heartbeat;
pub mod lsn;
pub mod outbox_delete;
pub mod partition_watch;
pub mod preflight;
pub mod protocol;
pub mod publication;
pub mod read_pacing;
pub mod relations;
pub mod setup;
mod setup_error;
pub mod slot_monitor;
pub mod snapshot;
pub mod spill;
mod spill_io;
pub mod stream;
pub mod types;

pub use stream::{ReplicationStream, StreamEvent};
