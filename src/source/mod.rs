//! The source: a logical replication session on PostgreSQL.
//!
//! ```text
//!  conninfo (URL) ──> transport (TCP | Unix | TLS) ──> connection (startup, auth, commands)
//!                                                        └──> stream (CopyBoth: messages in, status out;
//!                                                                     feedback decides what and when)
//!  preflight: checks with a clear fix before streaming
//!  publication: the job's publication (tables, partitions through their root)
//! ```

mod auth;
pub mod catalog;
pub mod connection;
pub mod conninfo;
pub mod error;
pub mod feedback;
pub mod preflight;
pub mod publication;
pub mod stream;
pub(crate) mod tls;
mod transport;
mod wire;

pub use connection::Connection;
pub use conninfo::ConnInfo;
pub use error::SourceError;
pub use stream::{ReplicationStream, StreamEvent};
