//! The protocol loop between the replication stream and a sink.
//!
//! ```text
//!  ReplicationStream ──> Assembler ──> lines ──(Chunk, bounded channel)──> sink (stdout, Postgres, ...)
//!         ^                                                                   │
//!         └──────── confirm(end LSN of the chunk's last commit) <── ack ──────┘ (once durable)
//! ```
//!
//! Invariants:
//! - A position is confirmed only when the sink acknowledges the chunk that
//!   completed that transaction; sinks acknowledge chunks in order, once
//!   what they hold is durable.
//! - A keepalive's position is confirmed only when nothing received is
//!   unacknowledged (no open transaction, nothing pending, no chunk in
//!   flight), so a quiet database does not pin WAL written elsewhere. At
//!   least every 30 s such a position goes to the sink as an empty chunk,
//!   so that the sink's checkpoint advances with the slot while idle.
//! - The loop never blocks on the sink: while the channel is full it keeps
//!   the replication session alive (status updates) and waits.
//! - On stop (signal, end position, server end), what is pending is handed
//!   over, and the loop waits for the sink to acknowledge everything before
//!   returning the stream, so the final status reports all that is durable.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use super::assembler::{AssembleError, Assembler, Step};
use crate::change::Encoding;
use crate::lsn::Lsn;
use crate::source::{ReplicationStream, SourceError, StreamEvent};

/// Lines are handed to the sink in chunks of about this size.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight between the loop and the sink.
const CHUNKS_IN_FLIGHT: usize = 8;
/// While the source is quiet, hand the sink the confirmed position this
/// often, so its checkpoint keeps up with the slot.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// Change lines for the sink.
#[derive(Debug)]
pub struct Chunk {
    pub lines: Vec<u8>,
    /// The end of the last transaction these lines complete, if any.
    pub confirm: Option<Lsn>,
    /// Nothing more was waiting from the source when this chunk was sent:
    /// a sink that batches should not wait for more before making it durable.
    pub caught_up: bool,
}

/// The sink's ends of the channel: read chunks, acknowledge each in order
/// with its `confirm`, once durable. Dropping `acks` says the sink stopped.
pub struct SinkEnds {
    pub chunks: mpsc::Receiver<Chunk>,
    pub acks: mpsc::UnboundedSender<Option<Lsn>>,
}

/// The loop's ends of the channel.
pub struct DriverEnds {
    chunks: mpsc::Sender<Chunk>,
    acks: mpsc::UnboundedReceiver<Option<Lsn>>,
}

pub fn channel() -> (DriverEnds, SinkEnds) {
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    (DriverEnds { chunks: chunk_tx, acks: ack_rx }, SinkEnds { chunks: chunk_rx, acks: ack_tx })
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
}

/// What the loop has seen, shared with whoever reports on the job.
#[derive(Debug, Default)]
pub struct Progress {
    /// When walpipe's last heartbeat came back in the stream (Unix ms; 0: never).
    pub last_heartbeat_unix_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn heartbeat_returned(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_heartbeat_unix_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why the loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Signal,
    EndPosition,
    ServerEnded,
}

struct Driver {
    stream: ReplicationStream,
    progress: std::sync::Arc<Progress>,
    ends: DriverEnds,
    unacked: usize,
    pending: Vec<u8>,
    pending_confirm: Option<Lsn>,
    /// When the sink was last handed a chunk.
    last_chunk: tokio::time::Instant,
}

/// Streams until `shutdown` completes, the end position is reached, the
/// server ends the stream, or an error; then drains the sink. Returns the
/// stream (to report the final position and close it) and the outcome.
pub async fn drive<E: Encoding>(
    stream: ReplicationStream,
    assembler: Assembler<E>,
    end_at: Option<Lsn>,
    ends: DriverEnds,
    progress: std::sync::Arc<Progress>,
    shutdown: impl Future<Output = ()>,
) -> (ReplicationStream, Result<Ended, DriveError>) {
    let mut driver = Driver {
        stream,
        progress,
        ends,
        unacked: 0,
        pending: Vec::with_capacity(CHUNK_BYTES),
        pending_confirm: None,
        last_chunk: tokio::time::Instant::now(),
    };
    let mut outcome = driver.pump(assembler, end_at, shutdown).await;
    if outcome.is_ok() && (!driver.pending.is_empty() || driver.pending_confirm.is_some()) {
        outcome = driver.send_pending(true).await.and(outcome);
    }
    let Driver { mut stream, ends: DriverEnds { chunks, mut acks }, .. } = driver;
    drop(chunks);
    while let Some(ack) = acks.recv().await {
        if let Some(lsn) = ack {
            stream.confirm(lsn);
        }
    }
    (stream, outcome)
}

impl Driver {
    async fn pump<E: Encoding>(
        &mut self,
        mut assembler: Assembler<E>,
        end_at: Option<Lsn>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Ended, DriveError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let idle = !self.stream.has_buffered_message();
            if self.pending.len() >= CHUNK_BYTES
                || (idle && (!self.pending.is_empty() || self.pending_confirm.is_some()))
            {
                self.send_pending(idle).await?;
            }
            tokio::select! {
                biased;
                ack = self.ends.acks.recv() => match ack {
                    Some(ack) => self.acked(ack),
                    None => return Err(DriveError::SinkStopped),
                },
                () = &mut shutdown => return Ok(Ended::Signal),
                event = self.stream.next() => match event? {
                    None => return Ok(Ended::ServerEnded),
                    Some(StreamEvent::Data { lsn, data }) => match assembler.handle(lsn, data, &mut self.pending)? {
                        Step::Continue => {}
                        Step::Committed { end_lsn } => self.pending_confirm = Some(end_lsn),
                        Step::Replay(mut committed) => {
                            while committed.replay_into(&mut self.pending, CHUNK_BYTES).map_err(DriveError::Replay)? {
                                self.send_pending(false).await?;
                            }
                            self.pending_confirm = Some(committed.end_lsn);
                        }
                        Step::Heartbeat => {
                            tracing::debug!(%lsn, "heartbeat returned");
                            self.progress.heartbeat_returned();
                        }
                        Step::PastEnd => {
                            tracing::debug!(%lsn, "reached the end position");
                            return Ok(Ended::EndPosition);
                        }
                    },
                    Some(StreamEvent::Keepalive(keepalive)) => {
                        tracing::debug!(wal_end = %keepalive.wal_end, reply = keepalive.reply_requested, "keepalive");
                        let settled = !assembler.in_transaction()
                            && self.pending.is_empty()
                            && self.pending_confirm.is_none()
                            && self.unacked == 0;
                        if settled {
                            let position = end_at.map_or(keepalive.wal_end, |end| end.min(keepalive.wal_end));
                            if self.last_chunk.elapsed() >= CHECKPOINT_EVERY {
                                // Let the sink record the position too (its checkpoint), then confirm it.
                                self.pending_confirm = Some(position);
                                self.send_pending(true).await?;
                            } else {
                                self.stream.confirm(position);
                            }
                        }
                        if !assembler.in_transaction() && end_at.is_some_and(|end| keepalive.wal_end >= end) {
                            tracing::debug!(wal_end = %keepalive.wal_end, "a keepalive reached the end position");
                            return Ok(Ended::EndPosition);
                        }
                    }
                }
            }
        }
    }

    fn acked(&mut self, ack: Option<Lsn>) {
        self.unacked -= 1;
        if let Some(lsn) = ack {
            self.stream.confirm(lsn);
        }
    }

    /// Hands the pending lines to the sink. While the sink is behind, keeps
    /// the replication session alive instead of blocking it.
    async fn send_pending(&mut self, caught_up: bool) -> Result<(), DriveError> {
        let permit = loop {
            tokio::select! {
                permit = self.ends.chunks.reserve() => break permit.map_err(|_| DriveError::SinkStopped)?,
                kept = self.stream.keep_alive(Duration::from_millis(500)) => kept?,
            }
        };
        let lines = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_BYTES));
        permit.send(Chunk { lines, confirm: self.pending_confirm.take(), caught_up });
        self.last_chunk = tokio::time::Instant::now();
        self.unacked += 1;
        Ok(())
    }
}
