//! Incremental copies: tables read in key-ordered chunks while the binlog
//! streams, each chunk between two watermarks written into a signal table,
//! and placed in the stream at its high watermark. No lock is taken and no
//! transaction is held across chunks (the DBLog method, as Debezium's
//! incremental snapshots use it).
//!
//! ```text
//!  copier.rs  per table: L = low watermark; SELECT chunk; H = high watermark ──ChunkRead──> (channel)
//!  binlog:    ... txn ... [L] ... txn ... txn ... [H] ... txn ...
//!                          └─ window.rs: keys these changed ─┘└─ the chunk's rows, minus those keys
//!  progress   with the checkpoint of H's transaction (crate::chunked::progress)
//! ```
//!
//! # The merge rule, and why it is exact
//!
//! L and H are transactions of their own on the copier's session: L
//! commits, then the chunk's query runs (one statement, a consistent read
//! taken when it starts), then H commits. The chunk's rows are written at
//! H, except the rows whose key a transaction committed between L and H
//! changed. For any key k of the chunk's range, take the transactions that
//! changed it:
//!
//! 1. Those before L in the binlog. The server commits transactions in
//!    the engine in their binlog order (MySQL's `binlog_order_commits`,
//!    on by default; MariaDB always), so each committed before L did, and
//!    L committed before the query started: the query saw them. The
//!    chunk's row has their effect and lands after them: same or newer.
//! 2. Those between L and H. The query may or may not have seen them; the
//!    stream delivered them before H either way, so the chunk's row for k
//!    is left out and the stream's version stays. If the last of them
//!    deleted k, nothing brings it back; if it inserted k, the stream did.
//! 3. Those after H. A transaction the query saw had committed in the
//!    engine before the query started, so its binlog write (which comes
//!    first) is before H. So the query saw none of these; the stream
//!    delivers them after the chunk's rows, and they land last.
//!
//! So for every key the sink ends at the source's latest state, no chunk
//! row overwrites a newer change, and no change is lost behind an older row.
//!
//! What makes the rule hold:
//! - The stream starts before the first chunk's L (a new stream's
//!   position is read before the copier starts; a resume starts at the
//!   checkpoint, which is before any chunk not yet recorded).
//! - A row's key is read the same from the binlog and from the query
//!   ([`window::canonical`]); a key of a type where that is not sure (a
//!   float, an enum, a bit) is not paged ([`reader::pages`]): such a table
//!   is copied under the blocking snapshot, at a new stream only.
//! - A DDL statement that names the table between L and H (an `ALTER`, a
//!   `TRUNCATE`, a `RENAME`) means the chunk may hold another shape than
//!   the stream: it is not written, and the copy resumes from its last
//!   recorded chunk. The chunk announces its own shape before its rows.
//! - Consecutive chunks cover the key space exactly: keyset pagination in
//!   the server's own key order and collation ([`reader::chunk_query`]).
//!
//! Resuming: a chunk's progress travels with the checkpoint of H's
//! transaction, in the sink's one write of rows and position, so a chunk
//! counts as copied exactly when its rows are durable. Watermarks of an
//! earlier run that the stream replays are ignored (their token names
//! another run). The copier's user needs `CREATE` and `INSERT` on the
//! signal table (`walpipe check` says so).

pub mod copier;
pub mod reader;
pub mod signal;
pub mod window;

use crate::source::mysql::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("could not connect to the source to copy tables in chunks: {0}")]
    Connect(mysql_async::Error),
    #[error(
        "could not create the signal table walpipe_signal ({0}): GRANT CREATE, INSERT, UPDATE ON the source database TO the walpipe user, or set WALPIPE_SNAPSHOT_STRATEGY=exported for the blocking snapshot"
    )]
    Signal(mysql_async::Error),
    #[error("reading a chunk of {table} failed: {source}")]
    Source { table: String, source: mysql_async::Error },
    #[error("reading the columns of {table} for a chunk failed: {error}")]
    Catalog { table: String, error: CatalogError },
    #[error(
        "a key column of {table} is gone on the source: the chunked copy cannot page through it; restart the job (walpipe jobs restart) to copy the table anew"
    )]
    KeyMissing { table: String },
    #[error("the chunked copy of {table} cannot page through its key: {what}")]
    Key { table: String, what: String },
}

impl ChunkError {
    pub fn is_transient(&self) -> bool {
        match self {
            ChunkError::Connect(_) | ChunkError::Signal(mysql_async::Error::Io(_)) => true,
            ChunkError::Source { source, .. } => !matches!(source, mysql_async::Error::Server(_)),
            ChunkError::Catalog { error: CatalogError::Query(error), .. } => {
                !matches!(error, mysql_async::Error::Server(_))
            }
            _ => false,
        }
    }
}

impl From<ChunkError> for crate::source::StreamError {
    fn from(error: ChunkError) -> Self {
        crate::source::StreamError::new(error.is_transient(), crate::lifecycle::ErrorKind::Other, error)
    }
}
