//! The loop between a source's change stream and a sink.
//!
//! ```text
//!  ChangeStream ──> lines ──(Chunk, bounded channel)──> sink (stdout, Postgres, ...)
//!       ^                                                    │
//!       └── confirm(end of the chunks' last commit) <── receipt ┘ (once durable)
//! ```
//!
//! Invariants:
//! - A position is confirmed only when the sink acknowledges the chunk that
//!   completed that transaction (the contract of `crate::contract`: in order,
//!   once durable).
//! - A keepalive's position is confirmed only when nothing received is
//!   unacknowledged (no open transaction, nothing pending, no chunk in
//!   flight), so a quiet database does not pin WAL written elsewhere. At
//!   least every 30 s such a position goes to the sink as an empty chunk,
//!   so that the sink's checkpoint advances with the slot while idle.
//! - Lines go to the sink in chunks of [`CHUNK_BYTES`]; a partial chunk
//!   goes when the source says it caught up ([`ChangeStream::caught_up`],
//!   marked so: the sink may cut a partial batch), or after [`HOLD_LIMIT`]
//!   (marked not caught up). Never on what happens to be buffered at an
//!   instant, so a backlog goes out in full batches from one run to the next.
//! - The loop never blocks on the sink: while the channel is full it keeps
//!   the replication session alive (status updates) and waits, for at most
//!   [`STALL_LIMIT`]. Waiting means not reading the socket, and a walsender
//!   whose socket is full cannot even send its last error: terminated (by a
//!   checkpoint invalidating its slot, or a server shutdown) it cannot exit,
//!   and the checkpoint that would free the WAL waits on it while the disk
//!   fills (seen in drills/stalled-slot.sh). So a sink stalled that long
//!   ends the session (a transient error; the stream resumes from the
//!   confirmed position), and a failed session is closed at once.
//! - Tentative lines (a large transaction applied while it is decoded)
//!   go in chunks of their own: what was pending goes out before the
//!   section begins, the chunk that completes the transaction goes out at
//!   once, and a void section is one empty [`Tentative::Void`] chunk. No
//!   keepalive is confirmed inside a section.
//! - On stop (signal, end position, server end), what is pending is handed
//!   over, and the loop waits for the sink to acknowledge everything before
//!   returning the stream, so the final status reports all that is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;

use crate::chunked::progress::CopyProgress;
use crate::contract::{DriverEnds, Settled, Tentative};
use crate::metrics::{JobMetrics, unix_seconds};
use crate::position::Position;
use crate::source::{ChangeStream, Event, StreamError};

/// Lines are handed to the sink in chunks of about this size.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// A chunk's buffer: a chunk is cut once past [`CHUNK_BYTES`], so there is
/// room for the line that crosses it, and the buffer need not double.
pub const CHUNK_CAPACITY: usize = CHUNK_BYTES + 16 * 1024;
/// The longest the replication socket is left unread while the sink is
/// stalled (see the invariants above).
pub const STALL_LIMIT: Duration = Duration::from_secs(60);
/// A partial chunk is handed to the sink after this long even when the
/// source has not said it caught up (an old server that sends no keepalive
/// then, or data that never pauses), marked as not caught up: the sink then
/// cuts it by its own flush interval. A backlog fills a chunk far sooner.
const HOLD_LIMIT: Duration = Duration::from_millis(100);
/// While the source is quiet, hand the sink the confirmed position this
/// often, so its checkpoint keeps up with the slot.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Source(#[from] StreamError),
    #[error("the sink stopped")]
    SinkStopped,
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
}

struct Driver<S> {
    stream: S,
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
    /// When the sink was last handed a chunk.
    last_chunk: tokio::time::Instant,
    /// Since when something is pending (lines or a position to confirm).
    held_since: Option<tokio::time::Instant>,
    /// Fires [`HOLD_LIMIT`] after `held_since` (one timer, reset, rather
    /// than a new one per message).
    hold: Pin<Box<tokio::time::Sleep>>,
    /// Inside a section of tentative lines.
    tentative: bool,
}

/// Streams until `shutdown` completes, the end position is reached, the
/// server ends the stream, or an error; then drains the sink. Returns the
/// stream (to report the final position and close it; `None` when it was
/// closed: after an error, or a sink stalled past [`STALL_LIMIT`]) and the
/// outcome.
pub async fn drive<S: ChangeStream>(
    stream: S,
    ends: DriverEnds,
    metrics: Arc<JobMetrics>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> (Option<S>, Result<Ended, DriveError>) {
    let Options { end_at, confirm_keepalives } = options;
    let mut driver = Driver {
        stream,
        metrics,
        confirm_keepalives,
        ends,
        pending: Vec::with_capacity(CHUNK_CAPACITY),
        pending_confirm: None,
        pending_commits: Vec::new(),
        pending_copied: CopyProgress::new(),
        chunk_copied: CopyProgress::new(),
        last_chunk: tokio::time::Instant::now(),
        held_since: None,
        hold: Box::pin(tokio::time::sleep(HOLD_LIMIT)),
        tentative: false,
    };
    let mut outcome = driver.pump(end_at, shutdown).await;
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
        if let (Some(position), Some(open)) = (confirm, stream.as_mut()) {
            open.confirm(position);
        }
    }
    // Chunks a failed sink never acknowledged are gone with it.
    metrics.sink_queue.set(0);
    (stream, outcome)
}

impl<S: ChangeStream> Driver<S> {
    async fn pump(
        &mut self,
        end_at: Option<Position>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Ended, DriveError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let caught_up = self.stream.caught_up();
            let holding = !self.pending.is_empty() || self.pending_confirm.is_some();
            let held_long = self.held_since.is_some_and(|since| since.elapsed() >= HOLD_LIMIT);
            if self.pending.len() >= CHUNK_BYTES || (holding && (caught_up || held_long)) {
                self.send_pending(caught_up).await?;
            } else if caught_up {
                self.count();
            }
            // What the stream already received is written out to the end,
            // as the sink takes it: `next` is not raced then.
            // Nor when a message is already here: it is tried first (it
            // cannot be lost, `next` being cancel-safe when not busy), and
            // raced only if it does not complete an event by itself.
            let ready = if self.stream.is_busy() {
                Some(self.stream.next(&mut self.pending).await)
            } else if self.stream.has_ready() {
                self.stream.next(&mut self.pending).now_or_never()
            } else {
                None
            };
            let event = if let Some(event) = ready {
                event?
            } else {
                tokio::select! {
                    biased;
                    settled = self.ends.acknowledged() => {
                        match settled {
                            Some(settled) => self.acknowledged(settled),
                            None => return Err(DriveError::SinkStopped),
                        }
                        continue;
                    }
                    () = &mut shutdown => return Ok(Ended::Signal),
                    () = &mut self.hold, if self.held_since.is_some() => continue,
                    event = self.stream.next(&mut self.pending) => event?,
                }
            };
            if self.held_since.is_none() && !self.pending.is_empty() {
                self.hold_from(tokio::time::Instant::now());
            }
            match event {
                Event::Data => {}
                Event::Heartbeat => self.metrics.heartbeat_received.set(unix_seconds(SystemTime::now())),
                Event::Committed { end, commit_time } => {
                    if self.held_since.is_none() {
                        self.hold_from(tokio::time::Instant::now());
                    }
                    self.pending_confirm = Some(end);
                    self.pending_commits.push(commit_time);
                    self.pending_copied.append(&mut self.chunk_copied);
                    if self.tentative {
                        // The section ends with this chunk; what follows is not tentative.
                        self.send_pending(self.stream.caught_up()).await?;
                        self.tentative = false;
                    }
                }
                Event::TentativeBegin => {
                    if !self.pending.is_empty() || self.pending_confirm.is_some() {
                        self.send_pending(false).await?;
                    }
                    self.tentative = true;
                }
                Event::TentativeVoid => {
                    self.pending.clear();
                    self.held_since = None;
                    self.send_chunk(false, Tentative::Void).await?;
                    self.tentative = false;
                }
                Event::ChunkPlaced { table, progress } => {
                    if progress.done {
                        self.metrics.status.recopied_table(&table);
                        tracing::info!(table = %table, "snapshot {table}: its last chunk took its place in the stream");
                    }
                    self.chunk_copied.insert(table, progress);
                }
                Event::PastEnd => return Ok(Ended::EndPosition),
                Event::Ended => return Ok(Ended::ServerEnded),
                Event::Idle { position } => {
                    let settled = !self.stream.in_transaction()
                        && !self.tentative
                        && self.pending.is_empty()
                        && self.pending_confirm.is_none()
                        && self.ends.unacknowledged() == 0;
                    if settled && self.confirm_keepalives {
                        let position = end_at.map_or(position, |end| end.min(position));
                        if self.last_chunk.elapsed() >= CHECKPOINT_EVERY {
                            // Let the sink record the position too (its checkpoint), then confirm it.
                            self.pending_confirm = Some(position);
                            self.send_pending(true).await?;
                        } else {
                            self.stream.confirm(position);
                        }
                    }
                    if !self.stream.in_transaction() && end_at.is_some_and(|end| position >= end) {
                        tracing::debug!(%position, "a keepalive reached the end position");
                        return Ok(Ended::EndPosition);
                    }
                }
            }
        }
    }

    fn hold_from(&mut self, since: tokio::time::Instant) {
        self.held_since = Some(since);
        self.hold.as_mut().reset(since + HOLD_LIMIT);
    }

    /// Tells the metrics what arrived since the last time.
    fn count(&mut self) {
        let metrics = &self.metrics;
        let received = self.stream.take_received(|table, op, count| metrics.source_events(table, op, count));
        if received.bytes == 0 {
            return;
        }
        metrics.source_bytes.inc_by(received.bytes);
        if received.data {
            metrics.data_received();
        }
        metrics.source_transactions.inc_by(received.transactions);
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
        let tentative = if self.tentative { Tentative::Lines } else { Tentative::No };
        self.send_chunk(caught_up, tentative).await
    }

    /// As [`Driver::send_pending`], marked `tentative`.
    async fn send_chunk(&mut self, caught_up: bool, tentative: Tentative) -> Result<(), DriveError> {
        self.count();
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
        let lines = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_CAPACITY));
        let commit_times = std::mem::take(&mut self.pending_commits);
        let copied = std::mem::take(&mut self.pending_copied);
        permit.send(lines, self.pending_confirm.take(), commit_times, copied, caught_up, tentative);
        self.last_chunk = tokio::time::Instant::now();
        self.held_since = None;
        self.metrics.sink_queue.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
