//! The Postgres source's change stream: the replication stream read
//! through the [`Assembler`], with the chunks of a copy placed at their
//! markers, behind [`ChangeStream`].
//!
//! Invariants, beyond the trait's:
//! - A large transaction read back from its spill file, and a chunk's
//!   rows, are written a piece of about [`PIECE_BYTES`] per call, so the
//!   driver hands them to the sink as they come; meanwhile the stream is
//!   busy ([`ChangeStream::is_busy`]) and reads nothing from the server.
//! - A call that is not busy awaits nothing but the server's next message
//!   (cancel-safe): what follows a message (a chunk to take from the
//!   copier, a transaction to read back) waits for the next, busy, call,
//!   which the driver does not race. A chunk taken in a raced call would
//!   be lost with its dropped future, and its marker with it.
//! - A chunk is written only at this run's marker; an earlier run's marker,
//!   replayed after a restart, stands for nothing.

use std::future::Future;
use std::time::Duration;

use super::assembler::{AssembleError, Assembler, ChunkPlace, ChunkWritten, CommittedStream, Deferred, Step};
use super::lsn::Lsn;
use super::{ReplicationStream, StreamEvent};
use crate::change::Encoding;
use crate::lifecycle::ErrorKind;
use crate::pg::SourceError;
use crate::position::Position;
use crate::source::postgres::chunks::copier::ChunkFeed;
use crate::source::postgres::chunks::reader::ChunkRead;
use crate::source::{ChangeStream, Event, Received, StreamError};

/// Lines written per call while the stream is busy.
pub const PIECE_BYTES: usize = 256 * 1024;

/// What the change stream reads from: the replication stream (a fake one
/// in the driver's unit tests).
pub trait Replication: Send {
    /// The next message; `None` when the server ended the stream.
    fn next(&mut self) -> impl Future<Output = Result<Option<StreamEvent>, SourceError>> + Send;
    /// Whether a whole message is already buffered (more is waiting).
    fn has_buffered_message(&self) -> bool;
    /// Tells the server that everything up to `position` is durable.
    fn confirm(&mut self, position: Position);
    /// Keeps the session alive (status updates) for `wait` without reading data.
    fn keep_alive(&mut self, wait: Duration) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Ends the session cleanly.
    fn finish(self) -> impl Future<Output = Result<(), SourceError>> + Send;
}

impl Replication for ReplicationStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
        ReplicationStream::next(self).await
    }

    fn has_buffered_message(&self) -> bool {
        ReplicationStream::has_buffered_message(self)
    }

    fn confirm(&mut self, position: Position) {
        ReplicationStream::confirm(self, position);
    }

    async fn keep_alive(&mut self, wait: Duration) -> Result<(), SourceError> {
        ReplicationStream::keep_alive(self, wait).await
    }

    async fn finish(self) -> Result<(), SourceError> {
        ReplicationStream::finish(self).await
    }
}

/// Why the Postgres change stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(
        "could not read back a streamed transaction from its temporary file ({0}): check the space in TMPDIR"
    )]
    Replay(std::io::Error),
    #[error("the chunked copy stopped before the stream reached its chunk")]
    CopyStopped,
    #[error(
        "the stream reached chunk {got} while chunk {expected} was next; this is a bug, please report it"
    )]
    ChunkOrder { expected: String, got: String },
}

impl ChangesError {
    pub fn is_transient(&self) -> bool {
        match self {
            ChangesError::Source(error) => error.is_transient(),
            // The copier reports its own error; else the copy resumes from its last chunk.
            ChangesError::CopyStopped
            | ChangesError::Assemble(
                AssembleError::ChunkShape { .. } | AssembleError::ChunkUnmergeable { .. },
            ) => true,
            ChangesError::Assemble(_) | ChangesError::Replay(_) | ChangesError::ChunkOrder { .. } => false,
        }
    }

    /// The kind the metrics count it as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ChangesError::Source(error) if error.sqlstate() == Some("55000") => ErrorKind::SlotInvalidated,
            ChangesError::Source(error) if error.is_timeout() => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        }
    }
}

impl From<ChangesError> for StreamError {
    fn from(error: ChangesError) -> StreamError {
        StreamError::new(error.is_transient(), error.kind(), error)
    }
}

/// What the stream is writing out of what it already received.
enum Busy<E: Encoding> {
    Idle,
    /// A chunk's marker arrived: its chunk is taken from the copier next
    /// (not in the call that read the marker, whose future may be dropped).
    AwaitingChunk {
        lsn: Lsn,
        token: String,
    },
    /// A large transaction, read back from its spill file.
    Replaying(Box<CommittedStream<E>>),
    /// A chunk's rows, at its marker.
    Placing(Box<Placing>),
    /// The message that voided a section of tentative lines, handled after the void.
    Deferred(Box<Deferred>),
}

struct Placing {
    lsn: Lsn,
    chunk: ChunkRead,
    place: ChunkPlace,
    next_piece: usize,
    written: ChunkWritten,
}

/// The Postgres change stream; see the module.
pub struct Changes<R: Replication, E: Encoding> {
    stream: R,
    assembler: Assembler<E>,
    chunks: Option<ChunkFeed>,
    busy: Busy<E>,
    received: Received,
    /// The last message was a keepalive: the walsender had sent everything
    /// and was about to wait for WAL (see [`ChangeStream::caught_up`]).
    keepalive_last: bool,
}

impl<R: Replication, E: Encoding> Changes<R, E> {
    /// `chunks`: the chunks of a copy running beside the stream, written at their markers.
    pub fn new(stream: R, assembler: Assembler<E>, chunks: Option<ChunkFeed>) -> Self {
        Changes {
            stream,
            assembler,
            chunks,
            busy: Busy::Idle,
            received: Received::default(),
            keepalive_last: false,
        }
    }

    async fn read(&mut self, out: &mut Vec<u8>) -> Result<Event, ChangesError> {
        match std::mem::replace(&mut self.busy, Busy::Idle) {
            Busy::Idle => {}
            Busy::Replaying(mut committed) => {
                if committed.replay_into(out, PIECE_BYTES).await.map_err(ChangesError::Replay)? {
                    self.busy = Busy::Replaying(committed);
                    return Ok(Event::Data);
                }
                return Ok(Event::Committed { end: committed.end, commit_time: committed.commit_time });
            }
            Busy::AwaitingChunk { lsn, token } => {
                self.begin_chunk(lsn, &token, out).await?;
                return Ok(Event::Data);
            }
            Busy::Placing(placing) => return Ok(self.place(placing, out)?),
            Busy::Deferred(deferred) => {
                let lsn = deferred.lsn();
                let step = self.assembler.handle_deferred(*deferred, out)?;
                return Ok(self.event(lsn, step));
            }
        }
        let Some(event) = self.stream.next().await? else { return Ok(Event::Ended) };
        let (lsn, data) = match event {
            StreamEvent::Data { lsn, data } => (lsn, data),
            StreamEvent::Keepalive(keepalive) => {
                tracing::debug!(wal_end = %keepalive.wal_end, reply = keepalive.reply_requested, "keepalive");
                self.keepalive_last = true;
                return Ok(Event::Idle { position: keepalive.wal_end.into() });
            }
        };
        self.keepalive_last = false;
        self.received.bytes += data.len() as u64;
        let step = self.assembler.handle(lsn, data, out)?;
        Ok(self.event(lsn, step))
    }

    /// What a step of the assembler is to the driver.
    fn event(&mut self, lsn: Lsn, step: Step<E>) -> Event {
        match step {
            Step::Continue => {
                self.received.data = true;
                Event::Data
            }
            Step::Committed { end, commit_time } => {
                self.received.data = true;
                Event::Committed { end, commit_time }
            }
            Step::Replay(committed) => {
                self.received.data = true;
                self.busy = Busy::Replaying(committed);
                Event::Data
            }
            Step::Chunk { token } => {
                self.received.data = true;
                self.busy = Busy::AwaitingChunk { lsn, token };
                Event::Data
            }
            Step::Heartbeat => {
                tracing::debug!(%lsn, "heartbeat returned");
                Event::Heartbeat
            }
            Step::PastEnd => {
                tracing::debug!(%lsn, "reached the end position");
                Event::PastEnd
            }
            Step::TentativeBegin => Event::TentativeBegin,
            Step::TentativeVoid(deferred) => {
                if let Some(deferred) = deferred {
                    self.busy = Busy::Deferred(deferred);
                }
                Event::TentativeVoid
            }
        }
    }

    /// Takes this run's chunk for the marker at `lsn` and starts writing it.
    async fn begin_chunk(&mut self, lsn: Lsn, token: &str, out: &mut Vec<u8>) -> Result<(), ChangesError> {
        let Some(feed) = self.chunks.as_mut().filter(|feed| feed.is_ours(token)) else {
            tracing::debug!(%lsn, token, "skipped the chunk marker of an earlier run");
            return Ok(());
        };
        let chunk = feed.next().await.ok_or(ChangesError::CopyStopped)?;
        if chunk.token != token {
            return Err(ChangesError::ChunkOrder { expected: chunk.token, got: token.to_string() });
        }
        tracing::debug!(%lsn, table = %chunk.table, rows = chunk.row_count, "placing a chunk at its marker");
        let place = self.assembler.begin_chunk(lsn, &chunk, out)?;
        let placing = Placing { lsn, chunk, place, next_piece: 0, written: ChunkWritten::default() };
        self.busy = Busy::Placing(Box::new(placing));
        Ok(())
    }

    /// Writes the chunk's rows until `out` holds about [`PIECE_BYTES`], then its end.
    fn place(&mut self, mut placing: Box<Placing>, out: &mut Vec<u8>) -> Result<Event, AssembleError> {
        while let Some(piece) = placing.chunk.rows.get(placing.next_piece) {
            placing.written += self.assembler.write_chunk_rows(placing.lsn, &placing.place, piece, out)?;
            placing.next_piece += 1;
            if out.len() >= PIECE_BYTES {
                self.busy = Busy::Placing(placing);
                return Ok(Event::Data);
            }
        }
        let Placing { lsn, chunk, place, written, .. } = *placing;
        if chunk.progress.done && chunk.progress.reconcile {
            self.assembler.end_copy(&place, out);
        }
        self.assembler.end_chunk(&chunk);
        let after = chunk.progress.after.as_deref().unwrap_or_default().join(", ");
        if written.stale > 0 {
            tracing::info!(%lsn, table = %chunk.table, rows = written.rows, %after,
                "a chunk left out {} rows: newer in the stream", written.stale);
        } else {
            tracing::debug!(%lsn, table = %chunk.table, rows = written.rows, %after, "a chunk took its place in the stream");
        }
        Ok(Event::ChunkPlaced { table: chunk.table, progress: chunk.progress })
    }
}

impl<R: Replication, E: Encoding> ChangeStream for Changes<R, E> {
    async fn next(&mut self, out: &mut Vec<u8>) -> Result<Event, StreamError> {
        Ok(self.read(out).await?)
    }

    fn caught_up(&self) -> bool {
        self.keepalive_last && !self.is_busy() && !self.stream.has_buffered_message()
    }

    fn is_busy(&self) -> bool {
        !matches!(self.busy, Busy::Idle)
    }

    fn has_ready(&self) -> bool {
        self.stream.has_buffered_message()
    }

    fn in_transaction(&self) -> bool {
        self.assembler.in_transaction()
    }

    fn confirm(&mut self, position: Position) {
        self.stream.confirm(position);
    }

    async fn keep_alive(&mut self, wait: Duration) -> Result<(), StreamError> {
        Ok(self.stream.keep_alive(wait).await.map_err(ChangesError::Source)?)
    }

    fn take_received(&mut self, visit: impl FnMut(&str, &str, u64)) -> Received {
        let tally = self.assembler.take_tally(visit);
        Received { transactions: tally.transactions, ..std::mem::take(&mut self.received) }
    }

    async fn finish(self) -> Result<(), StreamError> {
        Ok(self.stream.finish().await.map_err(ChangesError::Source)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;

    use super::*;
    use crate::change::encode::JsonLines;
    use crate::pg::error::ServerError;
    use crate::position::Position;
    use crate::source::postgres::chunks::reader::CHUNK_PREFIX;
    use crate::source::postgres::protocol::pgoutput::encode::encode;
    use crate::source::postgres::protocol::pgoutput::{Begin, LogicalMessage, Message};

    /// Messages to hand out, then a source that stays quiet.
    struct Messages(VecDeque<StreamEvent>);

    impl Replication for Messages {
        async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
            match self.0.pop_front() {
                Some(event) => Ok(Some(event)),
                None => std::future::pending().await,
            }
        }

        fn has_buffered_message(&self) -> bool {
            !self.0.is_empty()
        }

        fn confirm(&mut self, _position: Position) {}

        async fn keep_alive(&mut self, _wait: Duration) -> Result<(), SourceError> {
            Ok(())
        }

        async fn finish(self) -> Result<(), SourceError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_call_that_reads_a_marker_does_not_wait_for_its_chunk() {
        let data = |lsn: u64, message: Message| StreamEvent::Data { lsn: Lsn(lsn), data: encode(&message) };
        let marker = LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x31),
            prefix: CHUNK_PREFIX.into(),
            content: Bytes::from_static(b"run/1"),
        };
        let messages = Messages(VecDeque::from([
            data(0x30, Message::Begin(Begin { final_lsn: Lsn(0x90), commit_time: 0, xid: 900 })),
            data(0x31, Message::Message(marker)),
        ]));
        // The copier has not handed the chunk over yet.
        let (_copier, chunks) = tokio::sync::mpsc::channel(1);
        let assembler = Assembler::new(JsonLines, 1 << 20, None, Default::default());
        let mut changes = Changes::new(messages, assembler, Some(ChunkFeed::of("run", chunks)));
        let mut out = Vec::new();
        let now = |changes: &mut Changes<Messages, JsonLines>, out: &mut Vec<u8>| {
            let mut next = std::pin::pin!(changes.next(out));
            let waker = std::task::Waker::noop();
            match next.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
                std::task::Poll::Ready(event) => {
                    Some(event.map(|e| format!("{e:?}")).map_err(|e| e.to_string()))
                }
                std::task::Poll::Pending => None,
            }
        };
        assert_eq!(now(&mut changes, &mut out), Some(Ok("Data".into())), "the Begin");
        assert!(!changes.is_busy());
        // Were this call to wait for the chunk, a driver racing it against the
        // sink's receipts would drop it, and the marker with it.
        assert_eq!(now(&mut changes, &mut out), Some(Ok("Data".into())), "the marker");
        assert!(changes.is_busy(), "the chunk is taken by the next call, which is not raced");
        assert_eq!(now(&mut changes, &mut out), None, "that call waits for the copier");
    }

    #[test]
    fn a_chunk_that_cannot_be_written_is_read_again_after_a_retry() {
        let lsn = Lsn::from(Position::new(1));
        for error in [
            AssembleError::ChunkShape { lsn, table: "public.t".into() },
            AssembleError::ChunkUnmergeable { lsn, table: "public.t".into() },
        ] {
            assert!(StreamError::from(ChangesError::Assemble(error)).transient);
        }
        assert!(StreamError::from(ChangesError::CopyStopped).transient);
        let malformed = AssembleError::Sequence { lsn, what: "x".into() };
        assert!(!StreamError::from(ChangesError::Assemble(malformed)).transient);
    }

    #[test]
    fn an_invalidated_slot_and_a_timeout_are_told_apart_by_sqlstate() {
        let server = |code: &str| SourceError::Server {
            error: ServerError { code: code.into(), ..ServerError::default() },
        };
        assert_eq!(StreamError::from(ChangesError::Source(server("55000"))).kind, ErrorKind::SlotInvalidated);
        assert_eq!(StreamError::from(ChangesError::Source(server("57014"))).kind, ErrorKind::Timeout);
        assert_eq!(StreamError::from(ChangesError::Source(server("42P01"))).kind, ErrorKind::Other);
    }
}
