//! The Postgres sink in mirror mode: each destination table holds the
//! current state of each source row.
//!
//! ```text
//!  mirror records ──> TableBatch per table (final state per key)
//!      ──> COPY into the table's staging table ──> one statement per kind (move, delete, upsert, keep TOAST)
//!  at a transaction boundary, when batch_size changes arrived, flush_interval passed,
//!  or the source has nothing more waiting (caught up):
//!      checkpoint(applied_lsn = boundary) ──> COMMIT ──> acknowledge the chunks
//! ```
//!
//! Invariants:
//! - Rows and the applied position are committed in one sink transaction;
//!   chunks are acknowledged (so the source confirms) only after COMMIT.
//! - The applied position is always the end of a source transaction whose
//!   changes are all committed. Lines after it (part of a transaction still
//!   arriving) may be committed with it; replaying them later is harmless,
//!   because every write is guarded by the row's `_walpipe_lsn`.
//! - The applied position never goes backwards (`greatest` in SQL).

pub mod batch;
pub mod changelog;
pub mod evolve;
pub mod follow;
pub mod mirror_writer;
pub mod schema;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::lsn::Lsn;
use crate::metrics::JobMetrics;
use crate::pipeline::driver::SinkEnds;
pub use crate::sink::SinkError;

/// Where the job's applied position is kept (`walpipe.checkpoints`).
pub async fn read_checkpoint(
    client: &Client,
    job: &str,
) -> Result<Option<(String, Lsn)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT slot_name, applied_lsn::text FROM walpipe.checkpoints WHERE job_name = $1",
            &[&job],
        )
        .await?;
    Ok(row.and_then(|row| {
        let lsn: String = row.get(1);
        lsn.parse().ok().map(|lsn| (row.get(0), lsn))
    }))
}

pub async fn write_checkpoint(
    client: &Client,
    job: &str,
    slot: &str,
    lsn: Lsn,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO walpipe.checkpoints (job_name, slot_name, applied_lsn) VALUES ($1, $2, $3::text::pg_lsn) \
             ON CONFLICT (job_name) DO UPDATE SET slot_name = EXCLUDED.slot_name, \
                 applied_lsn = greatest(walpipe.checkpoints.applied_lsn, EXCLUDED.applied_lsn), updated_at = now()",
            &[&job, &slot, &lsn.to_string()],
        )
        .await
        .map(drop)
}

/// Records that changes after `gap_from` (unknown: None) were lost with an invalidated slot.
pub async fn record_data_gap(
    client: &Client,
    job: &str,
    slot: &str,
    gap_from: Option<Lsn>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO walpipe.data_gaps (job_name, slot_name, gap_from) VALUES ($1, $2, $3::text::pg_lsn)",
            &[&job, &slot, &gap_from.map(|lsn| lsn.to_string())],
        )
        .await
        .map(drop)
}

pub async fn forget_checkpoint(client: &Client, job: &str) -> Result<(), tokio_postgres::Error> {
    client.execute("DELETE FROM walpipe.checkpoints WHERE job_name = $1", &[&job]).await.map(drop)
}

/// How a sink mode turns lines into rows. The loop ([`PostgresSink`]) owns
/// the transaction: it has begun one before it calls `add` or `apply`, and
/// commits it with the checkpoint.
pub trait Writer: Send + 'static {
    /// Takes one line; may write to the sink (inside the open transaction).
    /// Returns whether the line was a change (a table's shape is not one).
    fn add(&mut self, client: &Client, line: Bytes) -> impl Future<Output = Result<bool, SinkError>> + Send;
    /// Writes everything pending (inside the open transaction).
    fn apply(&mut self, client: &Client) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Lines taken since the last apply.
    fn pending(&self) -> usize;
}

pub struct PostgresSink<W: Writer> {
    client: Client,
    job: String,
    slot: String,
    writer: W,
    batch_size: usize,
    flush_interval: Duration,
    changes_since_commit: usize,
    /// Source commit times and line bytes of the uncommitted chunks.
    commit_times_since_commit: Vec<SystemTime>,
    bytes_since_commit: u64,
    in_transaction: bool,
    metrics: Arc<JobMetrics>,
}

impl<W: Writer> PostgresSink<W> {
    pub fn new(
        client: Client,
        job: &str,
        slot: &str,
        writer: W,
        batch_size: usize,
        flush_interval: Duration,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        PostgresSink {
            metrics,
            commit_times_since_commit: Vec::new(),
            bytes_since_commit: 0,
            client,
            job: job.to_string(),
            slot: slot.to_string(),
            writer,
            batch_size: batch_size.max(1),
            flush_interval,
            changes_since_commit: 0,
            in_transaction: false,
        }
    }

    /// Applies chunks until the driver closes the channel, committing at
    /// transaction boundaries; then commits what is left.
    pub async fn run(mut self, ends: SinkEnds) -> Result<(), SinkError> {
        let result = self.apply_chunks(ends).await;
        if result.is_err() {
            self.metrics.sink_events_error.inc_by(self.changes_since_commit as u64);
        }
        result
    }

    async fn apply_chunks(&mut self, mut ends: SinkEnds) -> Result<(), SinkError> {
        // Chunks applied but not yet committed, with their positions.
        let mut uncommitted: VecDeque<Option<Lsn>> = VecDeque::new();
        let mut boundary: Option<Lsn> = None;
        let mut last_commit = Instant::now();
        loop {
            let due = last_commit + self.flush_interval;
            let chunk = tokio::select! {
                chunk = ends.chunks.recv() => chunk,
                () = tokio::time::sleep_until(due), if boundary.is_some() => {
                    self.commit(boundary.take(), &mut uncommitted, &ends).await?;
                    last_commit = Instant::now();
                    continue;
                }
            };
            let Some(chunk) = chunk else { break };
            self.begin().await?;
            self.bytes_since_commit += chunk.lines.len() as u64;
            self.commit_times_since_commit.extend_from_slice(&chunk.commit_times);
            let lines = Bytes::from(chunk.lines);
            let mut start = 0;
            while let Some(end) = lines[start..].iter().position(|b| *b == b'\n').map(|i| start + i) {
                if self.writer.add(&self.client, lines.slice(start..end)).await? {
                    self.changes_since_commit += 1;
                }
                start = end + 1;
            }
            uncommitted.push_back(chunk.confirm);
            if let Some(lsn) = chunk.confirm {
                boundary = Some(lsn);
            }
            if self.writer.pending() >= self.batch_size {
                self.writer.apply(&self.client).await?;
            }
            let full = self.changes_since_commit >= self.batch_size;
            if boundary.is_some() && (full || chunk.caught_up || Instant::now() >= due) {
                self.commit(boundary.take(), &mut uncommitted, &ends).await?;
                last_commit = Instant::now();
            }
        }
        self.commit(boundary, &mut uncommitted, &ends).await
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction {
            self.client.batch_execute("BEGIN").await?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Applies what is pending, records `boundary` as applied, commits, and
    /// acknowledges every chunk received so far.
    async fn commit(
        &mut self,
        boundary: Option<Lsn>,
        uncommitted: &mut VecDeque<Option<Lsn>>,
        ends: &SinkEnds,
    ) -> Result<(), SinkError> {
        if self.writer.pending() > 0 {
            self.begin().await?;
            self.writer.apply(&self.client).await?;
        }
        if let Some(lsn) = boundary {
            self.begin().await?;
            write_checkpoint(&self.client, &self.job, &self.slot, lsn).await?;
        }
        let committed_checkpoint = boundary.filter(|_| self.in_transaction);
        if self.in_transaction {
            self.client.batch_execute("COMMIT").await?;
            self.in_transaction = false;
            if let Some(lsn) = boundary {
                tracing::debug!(applied = %lsn, changes = self.changes_since_commit, "sink commit");
            }
        }
        if let Some(lsn) = committed_checkpoint {
            self.metrics.checkpointed(lsn.0);
        }
        self.metrics.emitted(
            &std::mem::take(&mut self.commit_times_since_commit),
            self.changes_since_commit as u64,
            std::mem::take(&mut self.bytes_since_commit),
        );
        self.changes_since_commit = 0;
        for confirm in uncommitted.drain(..) {
            // The driver is gone only when it stopped on an error: nothing more to tell it.
            let _ = ends.acks.send(confirm);
        }
        Ok(())
    }
}
