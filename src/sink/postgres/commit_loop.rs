//! The Postgres sink's loop: chunks applied inside a sink transaction,
//! committed with the checkpoint at transaction boundaries.
//!
//! ```text
//!  chunk ──> BEGIN (once) ──> Writer::add each line ──> Writer::apply when a batch is pending
//!  at a boundary, when batch_size changes arrived, flush_interval passed,
//!  or the source has nothing more waiting (caught up):
//!      Writer::apply_then ──> checkpoint(applied_lsn = boundary, copy progress) ──> guarded COMMIT ──> receipt back
//!      (a writer may send its last writes with the commit: one round trip for a few rows)
//! ```
//!
//! Invariants:
//! - Rows and the applied position are committed in one sink transaction,
//!   and nothing of it commits after a failed write: the COMMIT is guarded
//!   (`durability::GUARDED_COMMIT`), even when sent before the writes' answers;
//!   chunks are acknowledged (so the source confirms) only once that
//!   COMMIT is durable: at once for a synchronous commit, else when the
//!   server's flush position passes it ([`Durability`]).
//! - A section of tentative chunks (a large transaction applied while the
//!   source decodes it; see [`Tentative`]) starts after a commit of what
//!   came before, in a sink transaction of its own that nothing else
//!   commits: only its last chunk, the one completing the transaction,
//!   does. A void chunk, or the end of the stream inside a section, rolls
//!   it back and puts back the writer's knowledge from before it.
//! - The applied position is always the end of a source transaction whose
//!   changes are all committed ([`Uncommitted`]). Lines after it (part of
//!   a transaction still arriving) may be committed with it; replaying them
//!   later is harmless, because every write is guarded by the row's
//!   `_walpipe_lsn`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::durability::{Durability, FLUSH_POLL};
use super::uncommitted::{Commit, Pressure, Uncommitted};
use crate::checkpoint::positions::CheckpointWriter;
use crate::contract::{Chunk, Receipt, SinkEnds, Tentative};
use crate::metrics::JobMetrics;
use crate::sink::SinkError;

/// How a sink mode turns lines into rows. The loop ([`CommitLoop`]) owns
/// the transaction: it has begun one before it calls `add` or `apply`, and
/// commits it with the checkpoint.
pub trait Writer: Send + 'static {
    /// Takes one line; may write to the sink (inside the open transaction).
    /// Returns whether the line was a change (a table's shape is not one).
    fn add(&mut self, client: &Client, line: Bytes) -> impl Future<Output = Result<bool, SinkError>> + Send;
    /// Writes everything pending (inside the open transaction).
    fn apply(&mut self, client: &Client) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Writes everything pending, then runs `commit`; a writer may send its
    /// last writes and `commit` together (`commit`'s requests queued behind
    /// them). `None`: a write failed and was dealt with (its table set
    /// aside), so `commit` met a failed transaction and must run again.
    fn apply_then<T: Send>(
        &mut self,
        client: &Client,
        commit: impl Future<Output = T> + Send,
    ) -> impl Future<Output = Result<Option<T>, SinkError>> + Send {
        async move {
            self.apply(client).await?;
            Ok(Some(commit.await))
        }
    }
    /// Lines taken since the last apply.
    fn pending(&self) -> usize;
    /// What the writer knows of the sink's tables, taken with nothing
    /// pending, to be put back if the sink transaction after it is rolled back.
    type Saved: Send;
    fn save(&self) -> Self::Saved;
    /// Puts back what [`Writer::save`] took: everything since was rolled back.
    fn restore(&mut self, saved: Self::Saved);
}

pub struct CommitLoop<W: Writer> {
    client: Client,
    job: String,
    slot: String,
    writer: W,
    batch_size: usize,
    flush_interval: Duration,
    uncommitted: Uncommitted,
    in_transaction: bool,
    /// Inside a section of tentative chunks: the writer as it was before.
    section: Option<W::Saved>,
    metrics: Arc<JobMetrics>,
}

impl<W: Writer> CommitLoop<W> {
    pub fn new(
        client: Client,
        job: &str,
        slot: &str,
        writer: W,
        batch_size: usize,
        flush_interval: Duration,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        CommitLoop {
            metrics,
            uncommitted: Uncommitted::default(),
            client,
            job: job.to_string(),
            slot: slot.to_string(),
            writer,
            batch_size: batch_size.max(1),
            flush_interval,
            in_transaction: false,
            section: None,
        }
    }

    /// Applies chunks until the driver closes the channel, committing at
    /// transaction boundaries; then commits what is left.
    pub async fn run(mut self, ends: SinkEnds) -> Result<(), SinkError> {
        let result = match self.prepare().await {
            Ok(mut commits) => self.apply_chunks(ends, &mut commits).await,
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.metrics.sink_events_error.inc_by(self.uncommitted.changes() as u64);
        }
        result
    }

    async fn apply_chunks(&mut self, mut ends: SinkEnds, commits: &mut Commits) -> Result<(), SinkError> {
        let mut last_commit = Instant::now();
        let mut last_poll = Instant::now();
        loop {
            let due = last_commit + self.flush_interval;
            let chunk = tokio::select! {
                chunk = ends.next() => chunk,
                () = tokio::time::sleep_until(due), if self.uncommitted.at_boundary() => {
                    self.commit(&ends, commits).await?;
                    last_commit = Instant::now();
                    continue;
                }
                // Between transactions only: inside one, the writer may hold
                // a COPY open on the session (each commit brings the flush
                // position anyway).
                () = tokio::time::sleep_until(last_poll + FLUSH_POLL), if commits.durability.holding() && !self.in_transaction => {
                    acknowledge(&ends, commits.durability.poll(&self.client).await?);
                    last_poll = Instant::now();
                    continue;
                }
            };
            let Some(Chunk { lines, confirm, commit_times, caught_up, copied, tentative, receipt }) = chunk
            else {
                break;
            };
            match (tentative, self.section.is_some()) {
                (Tentative::Lines, false) => {
                    self.commit(&ends, commits).await?;
                    last_commit = Instant::now();
                    self.section = Some(self.writer.save());
                }
                (Tentative::Void, true) => {
                    self.uncommitted.chunk(0, None, &[], receipt);
                    self.roll_back_section(&ends, commits).await?;
                    continue;
                }
                // Lines of committed transactions, of the open section, or
                // a void section none of whose lines came (an empty chunk).
                _ => {}
            }
            self.begin()?;
            self.uncommitted.chunk(lines.len(), confirm, &commit_times, receipt);
            self.uncommitted.copied(copied);
            let lines = Bytes::from(lines);
            for line in crate::lines::line_ranges(&lines) {
                if self.writer.add(&self.client, lines.slice(line)).await? {
                    self.uncommitted.change();
                }
            }
            if self.writer.pending() >= self.batch_size {
                self.writer.apply(&self.client).await?;
            }
            let pressure = Pressure { caught_up, due: Instant::now() >= due };
            let section_ends = self.section.is_some() && confirm.is_some();
            if section_ends
                || (self.section.is_none() && self.uncommitted.commit_due(self.batch_size, pressure))
            {
                self.section = None;
                self.commit(&ends, commits).await?;
                last_commit = Instant::now();
            }
        }
        if self.section.is_some() {
            self.roll_back_section(&ends, commits).await?;
        } else {
            self.commit(&ends, commits).await?;
        }
        acknowledge(&ends, commits.durability.flush(&self.client).await?);
        Ok(())
    }

    /// Rolls back the tentative lines of a section, and acknowledges their
    /// chunks: they complete no transaction, so nothing is confirmed by them.
    async fn roll_back_section(&mut self, ends: &SinkEnds, commits: &mut Commits) -> Result<(), SinkError> {
        if self.in_transaction {
            self.client.batch_execute("ROLLBACK").await?;
            self.in_transaction = false;
        }
        if let Some(saved) = self.section.take() {
            self.writer.restore(saved);
        }
        let Commit { changes, receipt, .. } = self.uncommitted.take();
        tracing::info!(
            changes,
            "rolled back a transaction applied while it was decoded: it aborted, or comes again whole at its commit"
        );
        acknowledge(ends, receipt.and_then(|receipt| commits.durability.without_commit(receipt)));
        Ok(())
    }

    /// Sets the session up for its commits.
    async fn prepare(&self) -> Result<Commits, SinkError> {
        Ok(Commits {
            durability: Durability::set_up(&self.client).await?,
            checkpoint: CheckpointWriter::prepare(&self.client).await?,
        })
    }

    /// Opens the sink transaction, pipelined with its first statement.
    fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction {
            crate::pg::sql::queue_begin(&self.client)?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Applies what is pending, records the boundary as applied, commits,
    /// and acknowledges every chunk received so far once that is durable.
    async fn commit(&mut self, ends: &SinkEnds, commits: &mut Commits) -> Result<(), SinkError> {
        if self.writer.pending() > 0 || self.uncommitted.at_boundary() {
            self.begin()?;
        }
        let committed = if self.in_transaction {
            let (boundary, copied) = self.uncommitted.checkpoint();
            let (client, job, slot, shared) = (&self.client, &self.job, &self.slot, &*commits);
            let commit = || {
                let checkpoint = async move {
                    match boundary {
                        Some(lsn) => shared.checkpoint.write(client, job, slot, lsn, copied).await,
                        None => Ok(()),
                    }
                };
                shared.durability.commit(client, checkpoint)
            };
            let committed = match self.writer.apply_then(client, commit()).await? {
                Some(committed) => committed?,
                // A write failed and its table was set aside: commit the rest.
                None => commit().await?,
            };
            self.in_transaction = false;
            Some(committed)
        } else {
            None
        };
        let Commit { boundary, receipt, changes, commit_times, bytes, .. } = self.uncommitted.take();
        let durable = match committed {
            Some(committed) => {
                if let Some(lsn) = boundary {
                    tracing::debug!(applied = %lsn, changes, "sink commit");
                    self.metrics.status.checkpointed(lsn);
                }
                commits.durability.settle(committed, receipt)
            }
            None => receipt.and_then(|receipt| commits.durability.without_commit(receipt)),
        };
        self.metrics.emitted(&commit_times, changes as u64, bytes);
        acknowledge(ends, durable);
        Ok(())
    }
}

/// How the session commits: its durability, and its checkpoint statement.
struct Commits {
    durability: Durability,
    checkpoint: CheckpointWriter,
}

fn acknowledge(ends: &SinkEnds, receipt: Option<Receipt>) {
    if let Some(receipt) = receipt {
        ends.acknowledge(receipt);
    }
}
