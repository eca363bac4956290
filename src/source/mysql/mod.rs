//! The MySQL/MariaDB source: the binlog, read as a replica reads it.
//!
//! ```text
//!  target     WALPIPE_SOURCE_URL=mysql://... (or mariadb://)
//!  setup      Source: requirements, catalog, the blocking snapshot, the binlog request
//!  catalog    information_schema: columns, formats, the primary key
//!  ddl        the columns an ALTER TABLE removes (pure)
//!  monitor    the binlog files behind the job's checkpoint, as the slot metrics
//!  stream     binlog events to change lines (ChangeStream)
//!  transaction  a transaction's rows, held until its end, as lines
//!  types      MySQL types and values as neutral shapes and text (pure)
//!  position   binlog file and offset as a Position (pure)
//!  snapshot   the blocking snapshot's read side (COPY text)
//!  chunks     the incremental copy: chunks between watermarks, merged into the stream
//! ```
//!
//! Positions are binlog file and offset ([`position`]): what a restarted
//! stream resumes from, stored with the rows like an LSN. In the change
//! JSON, `lsn` and `commit_lsn` hold that position (`file/offset` in hex)
//! and `xid` the transaction's XID.

pub mod catalog;
pub mod chunks;
pub mod ddl;
pub mod monitor;
pub mod outbox_delete;
pub mod position;
pub mod setup;
pub mod snapshot;
pub mod stream;
pub mod target;
pub mod transaction;
pub mod types;
