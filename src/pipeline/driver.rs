//! The protocol loop between the replication stream and a sink.
//!
//! ```text
//!  Replication ──> Assembler ──> lines ──(Chunk, bounded channel)──> sink (stdout, Postgres, ...)
//!       ^                                                                 │
//!       └──────── confirm(end LSN of the chunks' last commit) <── receipt ┘ (once durable)
//! ```
//!
//! Invariants:
//! - A position is confirmed only when the sink acknowledges the chunk that
//!   completed that transaction (the contract of `sink::contract`: in order,
//!   once durable).
//! - A keepalive's position is confirmed only when nothing received is
//!   unacknowledged (no open transaction, nothing pending, no chunk in
//!   flight), so a quiet database does not pin WAL written elsewhere. At
//!   least every 30 s such a position goes to the sink as an empty chunk,
//!   so that the sink's checkpoint advances with the slot while idle.
//! - The loop never blocks on the sink: while the channel is full it keeps
//!   the replication session alive (status updates) and waits, for at most
//!   [`STALL_LIMIT`]. Waiting means not reading the socket, and a walsender
//!   whose socket is full cannot even send its last error: terminated (by a
//!   checkpoint invalidating its slot, or a server shutdown) it cannot exit,
//!   and the checkpoint that would free the WAL waits on it while the disk
//!   fills (seen in drills/stalled-slot.sh). So a sink stalled that long
//!   ends the session (a transient error; the stream resumes from the
//!   confirmed position), and a failed session is closed at once.
//! - On stop (signal, end position, server end), what is pending is handed
//!   over, and the loop waits for the sink to acknowledge everything before
//!   returning the stream, so the final status reports all that is durable.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::change::Encoding;
use crate::chunked::copier::ChunkFeed;
use crate::chunked::progress::CopyProgress;
use crate::metrics::{JobMetrics, unix_seconds};
use crate::pg::SourceError;
use crate::position::Position;
use crate::sink::contract::{DriverEnds, Settled};
use crate::source::postgres::assembler::{AssembleError, Assembler, ChunkWritten, Step};
use crate::source::postgres::{ReplicationStream, StreamEvent};

/// Lines are handed to the sink in chunks of about this size.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The longest the replication socket is left unread while the sink is
/// stalled (see the invariants above).
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// While the source is quiet, hand the sink the confirmed position this
/// often, so its checkpoint keeps up with the slot.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// What the driver reads from: the replication stream (a fake one in the
/// unit tests below).
pub trait Replication: Send {
    /// The next message; `None` when the server ended the stream.
    fn next(&mut self) -> impl Future<Output = Result<Option<StreamEvent>, SourceError>> + Send;
    /// Whether a whole message is already buffered (more is waiting).
    fn has_buffered_message(&self) -> bool;
    /// Tells the server that everything up to `lsn` is durable.
    fn confirm(&mut self, lsn: Position);
    /// Keeps the session alive (status updates) for `wait` without reading data.
    fn keep_alive(&mut self, wait: Duration) -> impl Future<Output = Result<(), SourceError>> + Send;
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
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(
        "could not read back a streamed transaction from its temporary file ({0}): check the space in TMPDIR"
    )]
    Replay(std::io::Error),
    #[error("the sink stopped")]
    SinkStopped,
    #[error("the chunked copy stopped before the stream reached its chunk")]
    CopyStopped,
    #[error(
        "the stream reached chunk {got} while chunk {expected} was next; this is a bug, please report it"
    )]
    ChunkOrder { expected: String, got: String },
    #[error(
        "the sink took nothing for {} s: closed the replication session so the server is not held by it; it resumes from the confirmed position once the sink moves",
        STALL_LIMIT.as_secs()
    )]
    SinkStalled,
}

/// Why the loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Signal,
    EndPosition,
    ServerEnded,
}

/// How a drive runs, beyond its stream and sink.
#[derive(Default)]
pub struct Options {
    /// Stop after the last transaction that commits at or before it.
    pub end_at: Option<Position>,
    /// Confirm a keepalive's position when nothing is in flight (off only
    /// to show, in drills/idle-database.sh, what it prevents).
    pub confirm_keepalives: bool,
    /// The chunks of a copy running beside the stream, written at their markers.
    pub chunks: Option<ChunkFeed>,
}

struct Driver<R> {
    stream: R,
    metrics: Arc<JobMetrics>,
    /// Confirm a keepalive's position when nothing is in flight (off only
    /// to show, in drills/idle-database.sh, what it prevents).
    confirm_keepalives: bool,
    ends: DriverEnds,
    pending: Vec<u8>,
    pending_confirm: Option<Position>,
    pending_commits: Vec<SystemTime>,
    /// The progress of the chunks written: with the confirm of their markers' transactions.
    pending_copied: CopyProgress,
    /// The progress of a chunk written in a marker's transaction that has not ended yet.
    chunk_copied: CopyProgress,
    chunks: Option<ChunkFeed>,
    /// Payload bytes received and not yet counted in the metrics.
    uncounted_bytes: u64,
    /// Data (not a heartbeat) arrived since the metrics were last told.
    data_arrived: bool,
    /// When the sink was last handed a chunk.
    last_chunk: tokio::time::Instant,
}

/// Streams until `shutdown` completes, the end position is reached, the
/// server ends the stream, or an error; then drains the sink. Returns the
/// stream (to report the final position and close it; `None` when it was
/// closed: after an error, or a sink stalled past [`STALL_LIMIT`]) and the
/// outcome.
pub async fn drive<E: Encoding, R: Replication>(
    stream: R,
    assembler: Assembler<E>,
    ends: DriverEnds,
    metrics: Arc<JobMetrics>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> (Option<R>, Result<Ended, DriveError>) {
    let Options { end_at, confirm_keepalives, chunks } = options;
    let mut driver = Driver {
        stream,
        metrics,
        confirm_keepalives,
        ends,
        pending: Vec::with_capacity(CHUNK_BYTES),
        pending_confirm: None,
        pending_commits: Vec::new(),
        pending_copied: CopyProgress::new(),
        chunk_copied: CopyProgress::new(),
        chunks,
        uncounted_bytes: 0,
        data_arrived: false,
        last_chunk: tokio::time::Instant::now(),
    };
    let mut outcome = driver.pump(assembler, end_at, shutdown).await;
    if outcome.is_ok() && (!driver.pending.is_empty() || driver.pending_confirm.is_some()) {
        outcome = driver.send_pending(true).await.and(outcome);
    }
    let Driver { stream, mut ends, metrics, .. } = driver;
    ends.close();
    // A failed session is closed now, not after the sink has drained.
    let mut stream = outcome.is_ok().then_some(stream);
    loop {
        let settled = match stream.as_mut() {
            Some(open) => tokio::select! {
                settled = ends.acknowledged() => settled,
                kept = open.keep_alive(STALL_LIMIT) => {
                    if let Err(error) = kept {
                        tracing::debug!("the replication session ended while the sink drained: {error}");
                    } else {
                        tracing::warn!("the sink took nothing for {} s while draining: closing the replication session", STALL_LIMIT.as_secs());
                    }
                    stream = None;
                    continue;
                }
            },
            None => ends.acknowledged().await,
        };
        let Some(Settled { chunks, confirm }) = settled else { break };
        metrics.sink_queue.sub(chunks as i64);
        if let (Some(lsn), Some(open)) = (confirm, stream.as_mut()) {
            open.confirm(lsn);
        }
    }
    // Chunks a failed sink never acknowledged are gone with it.
    metrics.sink_queue.set(0);
    (stream, outcome)
}

impl<R: Replication> Driver<R> {
    async fn pump<E: Encoding>(
        &mut self,
        mut assembler: Assembler<E>,
        end_at: Option<Position>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Ended, DriveError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let idle = !self.stream.has_buffered_message();
            if idle {
                self.count(&mut assembler);
            }
            if self.pending.len() >= CHUNK_BYTES
                || (idle && (!self.pending.is_empty() || self.pending_confirm.is_some()))
            {
                self.send_pending(idle).await?;
            }
            tokio::select! {
                biased;
                settled = self.ends.acknowledged() => match settled {
                    Some(settled) => self.acknowledged(settled),
                    None => return Err(DriveError::SinkStopped),
                },
                () = &mut shutdown => return Ok(Ended::Signal),
                event = self.stream.next() => match event? {
                    None => return Ok(Ended::ServerEnded),
                    Some(StreamEvent::Data { lsn, data }) => {
                        self.uncounted_bytes += data.len() as u64;
                        match assembler.handle(lsn, data, &mut self.pending)? {
                        Step::Continue => self.data_arrived = true,
                        Step::Committed { end, commit_time } => {
                            self.data_arrived = true;
                            self.pending_confirm = Some(end);
                            self.pending_commits.push(commit_time);
                            self.pending_copied.append(&mut self.chunk_copied);
                        }
                        Step::Chunk { token } => {
                            self.data_arrived = true;
                            self.place_chunk(&mut assembler, lsn, &token).await?;
                        }
                        Step::Replay(mut committed) => {
                            self.data_arrived = true;
                            while committed.replay_into(&mut self.pending, CHUNK_BYTES).await.map_err(DriveError::Replay)? {
                                self.send_pending(false).await?;
                            }
                            self.pending_confirm = Some(committed.end);
                            self.pending_commits.push(committed.commit_time);
                        }
                        Step::Heartbeat => {
                            tracing::debug!(%lsn, "heartbeat returned");
                            self.metrics.heartbeat_received.set(unix_seconds(SystemTime::now()));
                        }
                        Step::PastEnd => {
                            tracing::debug!(%lsn, "reached the end position");
                            return Ok(Ended::EndPosition);
                        }
                    }},
                    Some(StreamEvent::Keepalive(keepalive)) => {
                        tracing::debug!(wal_end = %keepalive.wal_end, reply = keepalive.reply_requested, "keepalive");
                        let wal_end = Position::from(keepalive.wal_end);
                        let settled = !assembler.in_transaction()
                            && self.pending.is_empty()
                            && self.pending_confirm.is_none()
                            && self.ends.unacknowledged() == 0;
                        if settled && self.confirm_keepalives {
                            let position = end_at.map_or(wal_end, |end| end.min(wal_end));
                            if self.last_chunk.elapsed() >= CHECKPOINT_EVERY {
                                // Let the sink record the position too (its checkpoint), then confirm it.
                                self.pending_confirm = Some(position);
                                self.send_pending(true).await?;
                            } else {
                                self.stream.confirm(position);
                            }
                        }
                        if !assembler.in_transaction() && end_at.is_some_and(|end| wal_end >= end) {
                            tracing::debug!(wal_end = %keepalive.wal_end, "a keepalive reached the end position");
                            return Ok(Ended::EndPosition);
                        }
                    }
                }
            }
        }
    }

    /// Writes this run's chunk at its marker (an earlier run's marker,
    /// replayed after a restart, stands for nothing).
    async fn place_chunk<E: Encoding>(
        &mut self,
        assembler: &mut Assembler<E>,
        lsn: crate::source::postgres::lsn::Lsn,
        token: &str,
    ) -> Result<(), DriveError> {
        let Some(feed) = self.chunks.as_mut().filter(|feed| feed.is_ours(token)) else {
            tracing::debug!(%lsn, token, "skipped the chunk marker of an earlier run");
            return Ok(());
        };
        let chunk = feed.next().await.ok_or(DriveError::CopyStopped)?;
        if chunk.token != token {
            return Err(DriveError::ChunkOrder { expected: chunk.token, got: token.to_string() });
        }
        tracing::debug!(%lsn, table = %chunk.table, rows = chunk.row_count, "placing a chunk at its marker");
        let place = assembler.begin_chunk(lsn, &chunk, &mut self.pending)?;
        let mut written = ChunkWritten::default();
        for piece in &chunk.rows {
            written += assembler.write_chunk_rows(lsn, &place, piece, &mut self.pending)?;
            if self.pending.len() >= CHUNK_BYTES {
                self.send_pending(false).await?;
            }
        }
        if chunk.progress.done && chunk.progress.reconcile {
            assembler.end_copy(&place, &mut self.pending);
        }
        assembler.end_chunk(&chunk);
        let after = chunk.progress.after.as_deref().unwrap_or_default().join(", ");
        if written.stale > 0 {
            tracing::info!(%lsn, table = %chunk.table, rows = written.rows, %after,
                "a chunk left out {} rows: newer in the stream", written.stale);
        } else {
            tracing::debug!(%lsn, table = %chunk.table, rows = written.rows, %after, "a chunk took its place in the stream");
        }
        if chunk.progress.done {
            self.metrics.recopied_table(&chunk.table);
            tracing::info!(table = %chunk.table, "snapshot {}: its last chunk took its place in the stream", chunk.table);
        }
        self.chunk_copied.insert(chunk.table, chunk.progress);
        Ok(())
    }

    /// Tells the metrics what arrived since the last time.
    fn count<E: Encoding>(&mut self, assembler: &mut Assembler<E>) {
        if self.uncounted_bytes == 0 {
            return;
        }
        self.metrics.source_bytes.inc_by(std::mem::take(&mut self.uncounted_bytes));
        if std::mem::take(&mut self.data_arrived) {
            self.metrics.data_received();
        }
        let metrics = &self.metrics;
        let tally = assembler.take_tally(|table, op, count| metrics.source_events(table, op, count));
        metrics.source_transactions.inc_by(tally.transactions);
    }

    fn acknowledged(&mut self, Settled { chunks, confirm }: Settled) {
        self.metrics.sink_queue.sub(chunks as i64);
        if let Some(lsn) = confirm {
            self.stream.confirm(lsn);
        }
    }

    /// Hands the pending lines to the sink. While the sink is behind, keeps
    /// the replication session alive instead of blocking it.
    async fn send_pending(&mut self, caught_up: bool) -> Result<(), DriveError> {
        let waiting = std::time::Instant::now();
        let permit = loop {
            tokio::select! {
                slot = self.ends.reserve() => break slot.ok_or(DriveError::SinkStopped)?,
                kept = self.stream.keep_alive(Duration::from_millis(500)) => kept?,
            }
            if waiting.elapsed() >= STALL_LIMIT {
                self.metrics.sink_backpressure.inc_by(waiting.elapsed().as_secs_f64());
                return Err(DriveError::SinkStalled);
            }
        };
        let waited = waiting.elapsed();
        if waited > Duration::from_millis(1) {
            self.metrics.sink_backpressure.inc_by(waited.as_secs_f64());
        }
        let lines = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_BYTES));
        let commit_times = std::mem::take(&mut self.pending_commits);
        let copied = std::mem::take(&mut self.pending_copied);
        permit.send(lines, self.pending_confirm.take(), commit_times, copied, caught_up);
        self.last_chunk = tokio::time::Instant::now();
        self.metrics.sink_queue.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
