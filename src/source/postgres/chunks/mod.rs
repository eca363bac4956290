//! Chunked copies: tables read in key-ordered chunks, each in its own
//! short transaction, while the slot streams; every chunk takes its place
//! in the stream at a marker, so the sink sees one ordered sequence.
//!
//! ```text
//!  copier.rs  per table: read_chunk ──ChunkRead──> (channel) ──> the driver
//!  reader.rs  BEGIN RR; S = pg_current_snapshot(); COPY chunk; emit marker; COMMIT
//!  stream:    ... txn ... txn ... [marker txn] ... txn ...
//!                                     └─ the chunk's rows, minus those stale (watch.rs), as its changes
//!  progress   with the checkpoint of the marker's transaction (crate::chunked::progress)
//! ```
//!
//! # The merge rule, and why it is exact
//!
//! Let S be a chunk's snapshot and M its marker (a message in the chunk's
//! own transaction, so M reaches the stream at that transaction's commit).
//! The chunk's rows are written at M, except the rows whose key was changed
//! by a transaction that committed before M in the stream and that S did
//! not see (its xid is at or past S's xmax, or among S's running xids).
//! For any key k of the chunk's range, take the transactions that changed k:
//!
//! 1. Those S saw had committed before S was taken, so before the chunk's
//!    transaction committed: the stream delivers them before M. The chunk's
//!    row has their effect, and lands after them: same or newer, never older.
//! 2. Those S did not see and that commit before M: the stream delivered
//!    their version before M, and it is newer than what the chunk read.
//!    The chunk's row for k is left out, so the newer version stays. If the
//!    last of them deleted k, nothing brings it back; if it inserted k, the
//!    chunk never had it.
//! 3. Those that commit after M: the stream delivers them after the chunk's
//!    rows, so they land last, as they should.
//!
//! So for every key the sink ends at the source's latest state, no chunk
//! row overwrites a newer change, and no change is lost behind an older
//! row. Positions alone cannot decide case 2: a transaction can write its
//! commit record before a position read around the query and still be
//! running for S (it leaves the running set after its commit record, and
//! waits there for a synchronous standby); S's xid list is what the query
//! actually saw.
//!
//! What makes the rule hold:
//! - The stream starts before the first chunk's snapshot (the slot exists
//!   first, and a resume starts from the checkpoint, which is before any
//!   chunk not yet recorded), and every key change of a table being copied
//!   is noted from the start ([`watch::KeyWatch`]), only once its
//!   transaction committed.
//! - xids: pgoutput sends 32-bit top-level xids; S has 64-bit ones; they are
//!   compared within the epoch around S ([`visibility`]).
//! - A table truncated by a transaction S did not see leaves out the whole
//!   chunk: every row it read is older than the truncate.
//! - The chunk announces its own shape (read with it) before its rows; if
//!   the stream described the table differently, the chunk is not written
//!   and the copy resumes from its last recorded chunk.
//! - Case 2 needs the stream's version to be whole. An update that left a
//!   TOASTed value unchanged does not send it; if such an update (by a
//!   transaction S did not see) hit a row of the chunk, neither side has
//!   that row's new version, so the chunk is not written (this is found
//!   before any of its rows is) and the copy resumes from its last chunk.
//! - Positions (a mirror's `_walpipe_lsn`): a copy that reconciles writes
//!   its rows with their marker's commit LSN, because reconciling removes
//!   what is older than the copy's start. A copy into destinations emptied
//!   at the slot's creation (a fresh start) writes them with none (NULL, as
//!   the exported copy does), which spares the sink parsing a position per
//!   row. Nothing older is ever written over such a row for good: a stream
//!   change after M is newer; one before M that S did not see left the row
//!   out; a replay from a checkpoint before M (a crash) means the chunk was
//!   not recorded, so it is read again and lands again after the replay.
//!   And when such a row meets a key the stream wrote first, it is not
//!   written (the guard keeps any row with a position): every transaction
//!   that changed that key since the slot's creation came before M, and S
//!   saw them all (or the row would be left out), so the sink holds the
//!   chunk's version already.
//! - A copied row's id names the copy, the table and the key, so a chunk
//!   read again after a crash repeats its ids: a changelog that already
//!   has some of its rows skips them.
//! - Consecutive chunks cover the key space exactly (keyset pagination on
//!   the key, in the source's own order; see [`keyset`]).
//!
//! Resuming: a chunk's progress travels with the confirm position of its
//! marker's transaction, and each sink records both in one write (the
//! Postgres sink in the transaction of the rows, the others in the state
//! store after delivery). A chunk counts as copied exactly when its rows
//! are durable, so a restart from the checkpoint re-reads only what was not
//! recorded, with the same slot; markers of an earlier run that the stream
//! replays are ignored (their token names another run).
//!
//! Limits: a key value TOASTed out of line and unchanged by an update is
//! not sent by the server, so such an update cannot be matched to a chunk
//! row (keys over about 2 kB).

pub mod copier;
pub mod keyset;
pub mod reader;
pub mod visibility;
pub mod watch;

use crate::pg::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("could not connect to the source to copy tables in chunks: {0}")]
    Connect(SourceError),
    #[error("reading a chunk of {table} failed: {source}")]
    Source { table: String, source: SourceError },
    #[error(transparent)]
    Snapshot(#[from] visibility::ParseError),
    #[error(
        "a key column of {table} is gone on the source: the chunked copy cannot page through it; restart the job (walpipe jobs restart) to copy the table anew"
    )]
    KeyMissing { table: String },
}

impl ChunkError {
    pub fn is_transient(&self) -> bool {
        match self {
            ChunkError::Connect(source) | ChunkError::Source { source, .. } => source.is_transient(),
            ChunkError::Snapshot(_) | ChunkError::KeyMissing { .. } => false,
        }
    }
}

impl From<ChunkError> for crate::source::StreamError {
    fn from(error: ChunkError) -> Self {
        crate::source::StreamError::new(error.is_transient(), crate::lifecycle::ErrorKind::Other, error)
    }
}
