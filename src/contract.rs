//! The contract between the driver and every sink, in types: chunks of
//! change lines go out in order, each with a [`Receipt`]; a sink hands a
//! receipt back once that chunk, and every chunk before it, is durable;
//! a sink that fails says why with a [`SinkError`].
//!
//! ```text
//!  driver ──Chunk{lines, confirm, receipt}──> sink   (bounded: the sink sets the pace)
//!  driver <──────────── receipt ───────────── sink   (once durable, with the checkpoint)
//!  driver: confirm(the last `confirm` of the chunks the receipt covers) ──> source
//! ```
//!
//! Invariants the types keep:
//! - A receipt cannot be made or copied by a sink: only the chunk it came
//!   with has it, so a sink cannot acknowledge what it never received, nor
//!   twice.
//! - Acknowledging a receipt acknowledges every earlier chunk too, so
//!   acknowledgements are in order by construction; a sink that commits
//!   many chunks at once hands back only the last receipt.
//! - The position confirmed to the source is the driver's own record of
//!   what the acknowledged chunks complete, never a value from the sink.
//! - A sink must have made the chunk's lines durable, and recorded its
//!   `confirm` as its checkpoint (in the same transaction as the rows, or
//!   in the state store after delivery), together with its `copied`
//!   progress, before it hands the receipt back.

use std::collections::VecDeque;
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::chunked::progress::CopyProgress;
use crate::position::Position;

/// Chunks in flight between the driver and the sink.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Change lines for the sink.
#[derive(Debug)]
pub struct Chunk {
    pub lines: Vec<u8>,
    /// The end of the last transaction these lines complete, if any: the
    /// checkpoint a sink records before acknowledging the chunk.
    pub confirm: Option<Position>,
    /// Source commit times of the transactions these lines complete.
    pub commit_times: Vec<SystemTime>,
    /// Nothing more was waiting from the source when this chunk was sent:
    /// a sink that batches should not wait for more before making it durable.
    pub caught_up: bool,
    /// How far the chunked copy of tables got once these lines are in the
    /// sink; it comes with the `confirm` of the chunk's marker transaction,
    /// and is recorded with it.
    pub copied: CopyProgress,
    /// Whether the lines belong to a transaction still being decoded.
    pub tentative: Tentative,
    /// Handed back through [`SinkEnds::acknowledge`] once durable.
    pub receipt: Receipt,
}

/// Where a chunk stands towards a large transaction applied while the
/// source still decodes it (sent only to a sink whose encoding says it
/// takes them, [`crate::change::Encoding::TENTATIVE`]).
///
/// A section of tentative chunks starts after a chunk that completed a
/// transaction, and ends with the tentative chunk that carries the
/// transaction's `confirm` (it committed) or with a [`Tentative::Void`]
/// chunk (it aborted, or something else came between its pieces and it
/// is sent again, whole, at its commit). A sink applies a section in a
/// sink transaction of its own and makes nothing of it durable before its
/// end; at the end of the stream, an unfinished section is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tentative {
    /// Lines of committed transactions.
    #[default]
    No,
    /// Lines of a transaction that has not committed yet.
    Lines,
    /// No lines: roll back the section's lines sent so far.
    Void,
}

/// Proof that a chunk was received; see the module's invariants.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a chunk is acknowledged by handing its receipt back"]
pub struct Receipt(u64);

/// How a sink (or a stage before it) fails: what the driver and the job
/// learn when a sink task ends.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Connect(#[from] crate::pg::sql::ConnectError),
    #[error("the sink failed: {}", crate::pg::sql::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the sink received a change line it cannot read ({0}); this is a bug, please report it")]
    Record(String),
    #[error(
        "the destination of {table} could not follow the source's new shape: {statement} failed: {detail}; alter the destination by hand to match the source (or drop it and restart the job to copy it again), then retry the job (walpipe jobs retry)"
    )]
    Schema { table: String, statement: String, detail: String },
    #[error("could not read the source's catalog to follow a schema change: {0}")]
    SchemaSource(String),
    #[error("could not record the delivery in the state store: {}", crate::pg::sql::describe(.0))]
    State(tokio_postgres::Error),
    #[error(
        "{target} did not take a batch after {attempts} attempts (last: {reason}); walpipe keeps retrying with backoff"
    )]
    Unavailable { target: String, attempts: u32, reason: String, timed_out: bool },
    #[error(
        "{target} rejected a batch with {status}: {body}; fix the receiver or what it refuses, then retry the job (walpipe jobs retry), which sends the same batch again"
    )]
    Rejected { target: String, status: String, body: String },
    #[error("the sink failed: {statement} failed: {}", crate::pg::sql::describe(.error))]
    Write { statement: String, error: tokio_postgres::Error },
    #[error("could not write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(
        "the state store's record of the {what} for job {job} cannot be read ({detail}), so the batch in flight cannot be sent again under its key; set walpipe.checkpoints.{column} to NULL for the job (the receiver may then see that batch twice, under a new key), then retry the job"
    )]
    Ledger { job: String, what: &'static str, column: &'static str, detail: String },
    #[error(
        "could not delete delivered outbox rows on the source: {reason}; grant DELETE on the outbox table to the source user, or set WALPIPE_OUTBOX_DELETE=false"
    )]
    OutboxCleanup { transient: bool, reason: String },
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Postgres(error) | SinkError::State(error) | SinkError::Write { error, .. } => {
                crate::pg::sql::is_transient(error)
            }
            SinkError::OutboxCleanup { transient, .. } => *transient,
            SinkError::Connect(error) => error.is_transient(),
            SinkError::Unavailable { .. } | SinkError::SchemaSource(_) => true,
            SinkError::Record(_)
            | SinkError::Rejected { .. }
            | SinkError::Stdout(_)
            | SinkError::Ledger { .. }
            | SinkError::Schema { .. } => false,
        }
    }
}

#[cfg(test)]
impl Receipt {
    /// The receipt of the `n`th chunk, for the unit tests of sinks.
    pub(crate) fn of_chunk(n: u64) -> Receipt {
        Receipt(n)
    }
}

/// The sink's ends: chunks in, receipts out. Dropping them says the sink stopped.
pub struct SinkEnds {
    chunks: mpsc::Receiver<Chunk>,
    receipts: mpsc::UnboundedSender<Receipt>,
}

impl SinkEnds {
    /// The next chunk; `None` once the driver has sent everything.
    pub async fn next(&mut self) -> Option<Chunk> {
        self.chunks.recv().await
    }

    /// As [`SinkEnds::next`], for a sink on its own thread.
    pub fn blocking_next(&mut self) -> Option<Chunk> {
        self.chunks.blocking_recv()
    }

    /// The chunk of `receipt`, and every chunk received before it, is durable.
    pub fn acknowledge(&self, receipt: Receipt) {
        // The driver is gone only when it stopped on an error: nothing more to tell it.
        let _ = self.receipts.send(receipt);
    }
}

/// The driver's ends: sends chunks, learns which are durable.
pub struct DriverEnds {
    chunks: mpsc::Sender<Chunk>,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    next_receipt: u64,
    /// The chunks sent and not acknowledged, oldest first: receipt, confirm.
    unacknowledged: VecDeque<(u64, Option<Position>)>,
}

/// What one acknowledgement settled.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled {
    /// Chunks it acknowledged.
    pub chunks: usize,
    /// The last position those chunks complete: now safe to confirm.
    pub confirm: Option<Position>,
}

/// A place in the channel, reserved: sending cannot wait any more.
pub struct Slot<'a> {
    permit: mpsc::Permit<'a, Chunk>,
    next_receipt: &'a mut u64,
    unacknowledged: &'a mut VecDeque<(u64, Option<Position>)>,
}

impl Slot<'_> {
    pub fn send(
        self,
        lines: Vec<u8>,
        confirm: Option<Position>,
        commit_times: Vec<SystemTime>,
        copied: CopyProgress,
        caught_up: bool,
        tentative: Tentative,
    ) {
        let receipt = *self.next_receipt;
        *self.next_receipt += 1;
        self.unacknowledged.push_back((receipt, confirm));
        self.permit.send(Chunk {
            lines,
            confirm,
            commit_times,
            caught_up,
            copied,
            tentative,
            receipt: Receipt(receipt),
        });
    }
}

impl DriverEnds {
    /// Waits for room in the channel; `None` when the sink stopped.
    pub async fn reserve(&mut self) -> Option<Slot<'_>> {
        let permit = self.chunks.reserve().await.ok()?;
        Some(Slot { permit, next_receipt: &mut self.next_receipt, unacknowledged: &mut self.unacknowledged })
    }

    /// The next acknowledgement; `None` when the sink stopped.
    pub async fn acknowledged(&mut self) -> Option<Settled> {
        let Receipt(through) = self.receipts.recv().await?;
        let mut settled = Settled { chunks: 0, confirm: None };
        while self.unacknowledged.front().is_some_and(|(receipt, _)| *receipt <= through) {
            if let Some((_, confirm)) = self.unacknowledged.pop_front() {
                settled.chunks += 1;
                settled.confirm = confirm.or(settled.confirm);
            }
        }
        Some(settled)
    }

    /// Chunks sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.unacknowledged.len()
    }

    /// No more chunks: the sink ends once it has taken what is queued.
    pub fn close(&mut self) {
        let (closed, _) = mpsc::channel(1);
        self.chunks = closed;
    }
}

pub fn channel() -> (DriverEnds, SinkEnds) {
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (receipt_tx, receipt_rx) = mpsc::unbounded_channel();
    (
        DriverEnds {
            chunks: chunk_tx,
            receipts: receipt_rx,
            next_receipt: 0,
            unacknowledged: VecDeque::new(),
        },
        SinkEnds { chunks: chunk_rx, receipts: receipt_tx },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(driver: &mut DriverEnds, confirm: Option<u64>) {
        driver.reserve().await.expect("open").send(
            Vec::new(),
            confirm.map(Position::new),
            Vec::new(),
            CopyProgress::new(),
            false,
            Tentative::No,
        );
    }

    #[tokio::test]
    async fn one_receipt_acknowledges_its_chunk_and_every_earlier_one_in_order() {
        let (mut driver, mut sink) = channel();
        send(&mut driver, Some(10)).await;
        send(&mut driver, None).await;
        send(&mut driver, Some(30)).await;
        send(&mut driver, None).await;
        let mut receipts = Vec::new();
        for _ in 0..4 {
            receipts.push(sink.next().await.expect("chunk").receipt);
        }
        let fourth = receipts.pop().expect("4");
        let third = receipts.pop().expect("3");
        sink.acknowledge(third);
        assert_eq!(
            driver.acknowledged().await,
            Some(Settled { chunks: 3, confirm: Some(Position::new(30)) })
        );
        assert_eq!(driver.unacknowledged(), 1);
        sink.acknowledge(fourth);
        // A chunk completing no transaction confirms nothing new.
        assert_eq!(driver.acknowledged().await, Some(Settled { chunks: 1, confirm: None }));
        assert_eq!(driver.unacknowledged(), 0);
    }

    #[tokio::test]
    async fn the_driver_learns_that_the_sink_stopped() {
        let (mut driver, sink) = channel();
        drop(sink);
        assert!(driver.reserve().await.is_none());
        assert_eq!(driver.acknowledged().await, None);
    }

    #[tokio::test]
    async fn closing_lets_the_sink_take_what_is_queued_then_ends_it() {
        let (mut driver, mut sink) = channel();
        send(&mut driver, Some(1)).await;
        driver.close();
        assert!(sink.next().await.is_some());
        assert!(sink.next().await.is_none());
    }
}
