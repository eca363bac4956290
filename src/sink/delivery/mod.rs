//! Delivery to the sinks outside Postgres (webhook, StarRocks Stream Load,
//! stdout): change lines are cut into batches with a stable identity
//! ([`batch`]), optionally routed through the outbox, and handed to a
//! [`Transport`]; the job's checkpoint lives in the state store.
//!
//! ```text
//!  chunks ──> Batcher (skip what was delivered, re-form the batch in flight)
//!     ──> outbox routing? ──> ledger: in_flight = batch ──> transport (retries inside)
//!     ──> ledger: applied_lsn, delivered_through, in_flight = NULL
//!     ──> acknowledge the chunks whose lines are all delivered
//! ```
//!
//! Invariants:
//! - A chunk is acknowledged (so the source may confirm its position) only
//!   after every line in it was delivered and the ledger recorded that.
//! - The applied position is the end of a transaction whose every change
//!   was delivered; changes after it that were delivered too are named by
//!   `delivered_through`, so a restart skips them instead of sending them
//!   under a new key.
//! - The batch being sent is recorded before it is sent, so after a crash
//!   the same batch goes out again, with the same key (labels for StarRocks).
//! - Snapshot rows are batched the same way but leave no trace in the
//!   ledger: an interrupted copy starts over with a new slot.

pub mod batch;
mod batch_sink;
mod settle;

pub use batch_sink::BatchSink;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use self::batch::{Batch, Batcher, InFlight, Pushed, Shapes};
use self::settle::{Finished, OpenChunks};
use super::{Opening, SinkError};
use crate::change::outbox::{OutboxRules, Routed};
use crate::chunked::progress::{self, CopyProgress};
use crate::contract::{Chunk, SinkEnds};
use crate::metrics::JobMetrics;
use crate::position::Position;
use crate::source::copy::SnapshotLines;

/// A sink that takes batches: how its URL reads, how it is made ready,
/// and how one batch is sent.
pub trait Transport: Sized + Send + 'static {
    /// As [`Sink::Target`](crate::sink::Sink::Target).
    type Target: Clone + std::fmt::Display + Send + Sync + 'static;
    const SCHEMES: &'static [&'static str];
    const URL_FORM: &'static str;
    /// As [`Sink::NEEDS_KEYS`](crate::sink::Sink::NEEDS_KEYS).
    const NEEDS_KEYS: bool = false;
    fn parse(url: &str) -> Result<Self::Target, String>;
    /// The transport for a run (no I/O: a receiver that is down fails the first send).
    fn connect(target: &Self::Target, opening: &Opening<'_>) -> Result<Self, SinkError>;
    /// Sends `batch` under `key`; returns the bytes sent. Retries inside,
    /// so an error means the batch did not go.
    fn send(&mut self, key: &str, batch: &Batch) -> impl Future<Output = Result<u64, SinkError>> + Send;
}

/// Where the delivery of a job is recorded: its row of `walpipe.checkpoints`
/// in the state store.
struct Ledger {
    client: Client,
    job: String,
    sending: Statement,
    delivered: Statement,
}

impl Ledger {
    async fn open(client: Client, job: &str) -> Result<Ledger, SinkError> {
        let sending = client
            .prepare("UPDATE walpipe.checkpoints SET in_flight = $2::text::jsonb WHERE job_name = $1")
            .await
            .map_err(SinkError::State)?;
        let delivered = client
            .prepare(
                "UPDATE walpipe.checkpoints SET \
                     applied_lsn = CASE WHEN $2::text IS NULL THEN applied_lsn ELSE greatest(applied_lsn, $2::text::pg_lsn) END, \
                     delivered_through = coalesce($3, delivered_through), in_flight = NULL, \
                     shapes = coalesce($4::text::jsonb, shapes), \
                     copy_progress = CASE WHEN $5::text IS NULL THEN copy_progress \
                         ELSE coalesce(copy_progress, '{}') || $5::text::jsonb END, updated_at = now() \
                 WHERE job_name = $1",
            )
            .await
            .map_err(SinkError::State)?;
        Ok(Ledger { client, job: job.to_string(), sending, delivered })
    }

    /// What was delivered (changes, shapes) and what was being sent when the job last stopped.
    async fn recall(&self) -> Result<(Option<String>, Option<InFlight>, Shapes), SinkError> {
        let row = self
            .client
            .query_opt(
                "SELECT delivered_through, in_flight::text, shapes::text FROM walpipe.checkpoints WHERE job_name = $1",
                &[&self.job],
            )
            .await
            .map_err(SinkError::State)?;
        let Some(row) = row else { return Ok((None, None, Shapes::new())) };
        let in_flight: Option<String> = row.get(1);
        let shapes: Option<String> = row.get(2);
        let unreadable = |what, column| {
            move |e: serde_json::Error| SinkError::Ledger {
                job: self.job.clone(),
                what,
                column,
                detail: e.to_string(),
            }
        };
        let in_flight = match in_flight {
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(unreadable("batch in flight", "in_flight"))?)
            }
            None => None,
        };
        let shapes = match shapes {
            Some(text) => serde_json::from_str(&text).map_err(unreadable("shapes delivered", "shapes"))?,
            None => Shapes::new(),
        };
        Ok((row.get(0), in_flight, shapes))
    }

    async fn sending(&self, in_flight: &InFlight) -> Result<(), SinkError> {
        let text = serde_json::to_string(in_flight).map_err(|e| SinkError::Record(e.to_string()))?;
        self.client.execute(&self.sending, &[&self.job, &text]).await.map_err(SinkError::State).map(drop)
    }

    async fn delivered(
        &self,
        applied: Option<Position>,
        through: Option<&str>,
        shapes: Option<&Shapes>,
        copied: &CopyProgress,
    ) -> Result<(), SinkError> {
        let applied = applied.map(|lsn| lsn.to_string());
        let shapes =
            shapes.map(serde_json::to_string).transpose().map_err(|e| SinkError::Record(e.to_string()))?;
        let copied = progress::to_json(copied);
        self.client
            .execute(&self.delivered, &[&self.job, &applied, &through, &shapes, &copied])
            .await
            .map_err(SinkError::State)
            .map(drop)
    }
}

/// What one sent batch delivered.
#[derive(Debug, Default)]
struct Delivered {
    lines: usize,
    /// Of those lines, the changes (not shapes).
    changes: usize,
    /// Its last change id, for a streamed batch.
    through: Option<String>,
    /// Every table's shape after it, when it announced one.
    shapes: Option<Shapes>,
}

pub struct Delivery<T: Transport> {
    job: String,
    transport: T,
    batcher: Batcher,
    ledger: Ledger,
    /// Empty rules: no outbox routing.
    outbox: OutboxRules,
    metrics: Arc<JobMetrics>,
    flush_interval: Duration,
    /// When the last batch was cut: the batch being filled waits at most
    /// `flush_interval` from here.
    last_cut: Instant,
    open: OpenChunks,
}

impl<T: Transport> Delivery<T> {
    /// Opens the job's ledger (`state`: the state store, with
    /// `walpipe.checkpoints`) and remembers what was delivered before.
    pub async fn open(
        job: &str,
        transport: T,
        state: Client,
        batch_size: usize,
        flush_interval: Duration,
        metrics: Arc<JobMetrics>,
        outbox: OutboxRules,
    ) -> Result<Delivery<T>, SinkError> {
        let ledger = Ledger::open(state, job).await?;
        let (delivered_through, in_flight, shapes) = ledger.recall().await?;
        if let Some(in_flight) = &in_flight {
            tracing::info!(job, first = %in_flight.first, last = %in_flight.last,
                "a batch was being sent when the job stopped: sending the same batch again, with the same key");
        }
        Ok(Delivery {
            job: job.to_string(),
            transport,
            batcher: Batcher::new(batch_size, delivered_through.as_deref(), in_flight, shapes),
            ledger,
            outbox,
            metrics,
            flush_interval,
            last_cut: Instant::now(),
            open: OpenChunks::default(),
        })
    }

    /// The transport back, once the copy is done.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Delivers chunks until the driver closes the channel, then what can be cut.
    pub async fn run(mut self, mut ends: SinkEnds) -> Result<(), SinkError> {
        loop {
            let due = self.last_cut + self.flush_interval;
            let chunk = tokio::select! {
                chunk = ends.next() => chunk,
                () = tokio::time::sleep_until(due), if self.batcher.can_cut() => {
                    self.flush_and_settle(&ends).await?;
                    continue;
                }
            };
            let Some(chunk) = chunk else { break };
            // Its encodings take no tentative lines (`Encoding::TENTATIVE`).
            let Chunk { lines, confirm, commit_times, caught_up, copied, receipt, tentative: _ } = chunk;
            let count = crate::lines::line_ranges(&lines).count();
            self.open.push(count, confirm, commit_times, copied, receipt);
            let bytes = Bytes::from(lines);
            for line in crate::lines::line_ranges(&bytes) {
                self.push_streamed(bytes.slice(line), &ends).await?;
            }
            if self.batcher.is_full() || (caught_up || Instant::now() >= due) && self.batcher.can_cut() {
                self.flush_and_settle(&ends).await?;
            } else {
                self.settle(Delivered::default(), &ends).await?;
            }
        }
        self.flush_and_settle(&ends).await
    }

    async fn push_streamed(&mut self, line: Bytes, ends: &SinkEnds) -> Result<(), SinkError> {
        match self.batcher.push(line).map_err(|e| SinkError::Record(e.to_string()))? {
            Pushed::Skipped => self.open.skip(),
            Pushed::Added if self.batcher.is_full() => self.flush_and_settle(ends).await?,
            Pushed::Added => {}
        }
        Ok(())
    }

    async fn push(&mut self, line: Bytes) -> Result<(), SinkError> {
        self.batcher.push(line).map_err(|e| SinkError::Record(e.to_string()))?;
        if self.batcher.is_full() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the batch, if one can be cut; returns what it delivered.
    async fn flush(&mut self) -> Result<Option<Delivered>, SinkError> {
        let Some(batch) = self.batcher.cut() else { return Ok(None) };
        self.last_cut = Instant::now();
        let consumed = batch.lines.len();
        let streamed = batch.last_position.is_some();
        let rendered = self.route(batch);
        if streamed && !rendered.lines.is_empty() {
            self.ledger.sending(&rendered.in_flight()).await?;
        }
        let key = rendered.key(&self.job);
        let sent = if rendered.lines.is_empty() { Ok(0) } else { self.transport.send(&key, &rendered).await };
        let bytes = match sent {
            Ok(bytes) => bytes,
            Err(error) => {
                self.metrics.sink_events_error.inc_by(consumed as u64);
                return Err(error);
            }
        };
        self.metrics.sink_bytes.inc_by(bytes);
        tracing::debug!(job = %self.job, %key, first = %rendered.first_id, last = %rendered.last_id, changes = consumed, bytes, "delivered a batch");
        Ok(Some(Delivered {
            lines: consumed,
            changes: consumed - rendered.shape_lines,
            through: streamed.then_some(rendered.last_id),
            shapes: rendered.shapes,
        }))
    }

    async fn flush_and_settle(&mut self, ends: &SinkEnds) -> Result<(), SinkError> {
        let delivered = self.flush().await?.unwrap_or_default();
        self.settle(delivered, ends).await
    }

    /// Counts `delivered` lines more (after any skipped ones) as delivered,
    /// records what is now complete in the ledger, and acknowledges it.
    async fn settle(&mut self, delivered: Delivered, ends: &SinkEnds) -> Result<(), SinkError> {
        let Delivered { lines: delivered, changes, through, shapes } = delivered;
        let Finished { applied, commit_times, copied, receipt } = self.open.settle(delivered);
        if applied.is_some() || through.is_some() || shapes.is_some() {
            self.ledger.delivered(applied, through.as_deref(), shapes.as_ref(), &copied).await?;
        }
        if let Some(lsn) = applied {
            self.metrics.status.checkpointed(lsn);
        }
        self.metrics.emitted(&commit_times, changes as u64, 0);
        if let Some(receipt) = receipt {
            ends.acknowledge(receipt);
        }
        Ok(())
    }

    /// The batch as the transport sends it: outbox traffic turned into
    /// events (or dropped).
    fn route(&self, batch: Batch) -> Batch {
        if self.outbox.is_empty() {
            return batch;
        }
        let mut lines = Vec::with_capacity(batch.lines.len());
        for line in &batch.lines {
            match self.outbox.route(line) {
                Routed::Change => lines.push(line.clone()),
                Routed::Event { line, .. } => lines.push(Bytes::from(line)),
                Routed::Dropped => {}
                Routed::Rejected(reason) => {
                    let id = batch::change_id(line).unwrap_or("?");
                    tracing::error!(job = %self.job, change = %id, "an outbox event was left out: {reason}");
                    self.metrics.outbox_rejected.inc();
                }
            }
        }
        Batch { lines, ..batch }
    }
}

/// The copy's rows go out in batches, like streamed changes, but leave no
/// trace in the ledger.
impl<T: Transport> SnapshotLines for Delivery<T> {
    async fn begin_table(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn line(&mut self, line: Bytes) -> Result<(), SinkError> {
        self.push(line).await
    }

    async fn end_table(&mut self) -> Result<(), SinkError> {
        self.flush().await.map(drop)
    }
}
