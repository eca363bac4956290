//! Sources: where changes come from.
//!
//! Each source lives in its own folder and is the only code that knows its
//! database's replication protocol, positions and snapshots. Above it,
//! changes are change lines ([`crate::change`]), places in the stream are
//! [`Position`]s, and a running stream is a [`ChangeStream`].
//!
//! ```text
//!  postgres/   a logical replication slot (pgoutput) on PostgreSQL
//!  mysql/      the binlog of MySQL or MariaDB, read as a replica reads it
//! ```
//!
//! What a source's change stream must guarantee (the driver, the sinks and
//! the checkpoints rely on it):
//! - **Only committed work, in commit order.** A transaction's lines are
//!   complete when [`Event::Committed`] names its end; nothing of a
//!   transaction that did not commit is ever written, and transactions
//!   follow each other in the order they committed.
//! - **Positions only grow.** The `end` of each committed transaction is
//!   greater than the one before, and a keepalive's position
//!   ([`Event::Idle`]) is never behind a committed end already given.
//! - **Replay from a position.** Started again from a position it was
//!   told durable ([`ChangeStream::confirm`]), the source gives every
//!   transaction that commits after it, the same lines with the same ids:
//!   a sink that stored a transaction skips it by its ids or its position.
//! - **Transaction boundaries.** A position confirmed is always the end of
//!   a whole transaction (or a keepalive's, between transactions); a source
//!   never asks for a position inside a transaction to be confirmed.
//! - **Tentative lines only when asked.** Lines of a transaction that has
//!   not committed are written only for an encoding that takes them, between
//!   [`Event::TentativeBegin`] and the transaction's commit (or
//!   [`Event::TentativeVoid`]), and nothing else is written in between.
//! - **Shapes before rows.** A table's shape (a schema line) comes before
//!   its first change of that shape, in the same transaction, and again
//!   after every reconnect; the sinks treat a known shape as nothing new.

pub mod chunk_copier;
pub mod copy;
pub mod mysql;
pub mod outbox_cleanup;
pub mod postgres;
mod registry;
pub mod setup;
pub mod table;

pub use registry::{SourceTarget, WithSource};

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::chunked::progress::TableCopy;
use crate::lifecycle::ErrorKind;
use crate::position::Position;

/// A boxed future, for the seam's object-safe traits (set-up calls, not per change).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a change stream did with one call of [`ChangeStream::next`]; any
/// lines it wrote are in the caller's buffer.
#[derive(Debug)]
pub enum Event {
    /// Data arrived (lines may have been written); nothing more can be confirmed yet.
    Data,
    /// A transaction's lines are complete: once they are durable, `end` may be confirmed.
    Committed { end: Position, commit_time: SystemTime },
    /// A chunk of a table's copy took its place in the stream (its rows are
    /// written, in the transaction of its marker); its progress is recorded
    /// with that transaction's end.
    ChunkPlaced { table: String, progress: TableCopy },
    /// The lines that follow belong to a large transaction the source is
    /// still decoding (only for an encoding that is
    /// [`crate::change::Encoding::TENTATIVE`]): they are tentative until its
    /// [`Event::Committed`], or void at an [`Event::TentativeVoid`]. Comes
    /// between transactions, with no lines of its own.
    TentativeBegin,
    /// The tentative lines since [`Event::TentativeBegin`] are void: the
    /// transaction aborted, or something came between its pieces (its lines
    /// come again, whole, when it commits). Comes with no lines of its own.
    TentativeVoid,
    /// walpipe's own heartbeat came back (it is not written as a line).
    Heartbeat,
    /// The stream passed the end position it was started with.
    PastEnd,
    /// The source is quiet at `position`: nothing of it is in flight on the
    /// source's side, so once everything before is durable it may be confirmed.
    Idle { position: Position },
    /// The source ended the stream.
    Ended,
}

/// What a stream received since it was last asked ([`ChangeStream::take_received`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub bytes: u64,
    pub transactions: u64,
    /// Data arrived (not only heartbeats and keepalives).
    pub data: bool,
}

/// A running change stream; see the module for what it guarantees.
pub trait ChangeStream: Send {
    /// The next event, writing its lines (if any) into `out`. Cancel-safe
    /// unless [`ChangeStream::is_busy`]: dropping it loses nothing.
    fn next(&mut self, out: &mut Vec<u8>) -> impl Future<Output = Result<Event, StreamError>> + Send;
    /// Whether the source has shown that everything it has was handed out,
    /// so a partial batch may go out now rather than wait to grow. Decided
    /// by what the source said, not by what happens to be buffered, so that
    /// a backlog goes out in full batches however the bytes arrive:
    /// Postgres, a walsender's keepalive after the last data (it sends one
    /// before it sleeps for WAL while the client has not confirmed what it
    /// sent); MySQL, no further event already received (the binlog protocol
    /// says nothing sooner than its heartbeat period).
    fn caught_up(&self) -> bool;
    /// Whether the stream is writing out something it already received
    /// (a large transaction read back, a chunk's rows): `next` must then be
    /// called to completion, not raced.
    fn is_busy(&self) -> bool;
    /// Whether a message is already received and waiting to be handled, so
    /// that `next` most likely returns without waiting: the driver then tries
    /// it before racing it against acknowledgements, the hold timer and
    /// shutdown, whose polling would otherwise cost more than the change.
    fn has_ready(&self) -> bool;
    /// Whether a transaction is partly received: no position may be
    /// confirmed until it ends.
    fn in_transaction(&self) -> bool;
    /// Everything up to `position` is durable in the sink.
    fn confirm(&mut self, position: Position);
    /// Keeps the session alive for `wait` without reading data (the sink is behind).
    fn keep_alive(&mut self, wait: Duration) -> impl Future<Output = Result<(), StreamError>> + Send;
    /// What arrived since the last call; `visit` gets each table's
    /// `schema.name`, operation and count.
    fn take_received(&mut self, visit: impl FnMut(&str, &str, u64)) -> Received;
    /// Ends the session cleanly, reporting the confirmed position.
    fn finish(self) -> impl Future<Output = Result<(), StreamError>> + Send;
}

/// Why a change stream failed, as the source classified it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct StreamError {
    /// Whether starting the stream again can help.
    pub transient: bool,
    /// What the metrics count it as.
    pub kind: ErrorKind,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl StreamError {
    pub fn new(
        transient: bool,
        kind: ErrorKind,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StreamError { transient, kind, error: Box::new(error) }
    }

    /// The source's own error, for a caller that knows the source.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
}
