//! The PostgreSQL client walpipe shares between the source and the sinks:
//! connection strings, transports (TCP, Unix, TLS), authentication, and a
//! protocol client of its own for what `tokio-postgres` cannot do (a
//! replication session, large COPY reads); `sql` connects `tokio-postgres`
//! with the same settings for everything else.
//!
//! ```text
//!  conninfo (URL) ──> transport (TCP | Unix | TLS) ──> connection (startup, auth, queries, COPY out)
//!                └──> sql (tokio-postgres: connect, describe errors, transient or not)
//! ```
//!
//! Nothing here knows replication: the replication commands and the stream
//! are the Postgres source's (`source::postgres`).

mod auth;
pub mod binary_values;
pub mod connection;
pub mod conninfo;
pub mod copy_binary;
pub mod error;
pub mod receive_side;
pub mod sql;
pub mod text_param;
pub(crate) mod tls;
mod transport;
pub(crate) mod wire;

pub use connection::Connection;
pub use conninfo::ConnInfo;
pub use error::SourceError;
