//! The Postgres sink in mirror mode: each destination table holds the
//! current state of each source row.
//!
//! ```text
//!  Chunk lines ──> batch::parse ──> MirrorBatch (final state per key) ──> per table: DELETE, UPSERT,
//!                                                                         UPDATE keeping TOAST (one statement each)
//!  at a transaction boundary, when batch_size changes or flush_interval passed:
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

pub mod schema;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use crate::lsn::Lsn;
use crate::pipeline::batch::{self, Admit, LineError, MirrorBatch, MirrorChange, RowOp};
use crate::pipeline::driver::SinkEnds;
use schema::Destination;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the sink failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Line(#[from] LineError),
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Postgres(error) => crate::pg::is_transient(error),
            SinkError::Line(_) => false,
        }
    }
}

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

pub async fn forget_checkpoint(client: &Client, job: &str) -> Result<(), tokio_postgres::Error> {
    client.execute("DELETE FROM walpipe.checkpoints WHERE job_name = $1", &[&job]).await.map(drop)
}

pub struct PostgresSink {
    client: Client,
    job: String,
    slot: String,
    /// By source table (`schema.name`).
    destinations: HashMap<String, Destination>,
    batch_size: usize,
    flush_interval: Duration,
    batch: MirrorBatch,
    in_transaction: bool,
    changes_since_commit: usize,
}

impl PostgresSink {
    pub fn new(
        client: Client,
        job: &str,
        slot: &str,
        destinations: HashMap<String, Destination>,
        batch_size: usize,
        flush_interval: Duration,
    ) -> Self {
        PostgresSink {
            client,
            job: job.to_string(),
            slot: slot.to_string(),
            destinations,
            batch_size: batch_size.max(1),
            flush_interval,
            batch: MirrorBatch::default(),
            in_transaction: false,
            changes_since_commit: 0,
        }
    }

    /// Applies chunks until the driver closes the channel, committing at
    /// transaction boundaries; then commits what is left.
    pub async fn run(mut self, mut ends: SinkEnds) -> Result<(), SinkError> {
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
            for line in chunk.lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                self.add(line).await?;
            }
            uncommitted.push_back(chunk.confirm);
            if let Some(lsn) = chunk.confirm {
                boundary = Some(lsn);
            }
            if self.batch.len() >= self.batch_size {
                self.apply().await?;
            }
            let full = self.changes_since_commit >= self.batch_size;
            if boundary.is_some() && (full || Instant::now() >= due) {
                self.commit(boundary.take(), &mut uncommitted, &ends).await?;
                last_commit = Instant::now();
            }
        }
        self.commit(boundary, &mut uncommitted, &ends).await
    }

    async fn add(&mut self, line: &[u8]) -> Result<(), SinkError> {
        match batch::parse(line)? {
            MirrorChange::Ignored => Ok(()),
            MirrorChange::Truncate { table } => {
                self.apply().await?;
                if let Some(quoted) = self.destinations.get(&table).map(|d| d.quoted.clone()) {
                    self.begin().await?;
                    self.client.batch_execute(&format!("TRUNCATE {quoted}")).await?;
                }
                Ok(())
            }
            MirrorChange::Row { table, ops } => {
                self.changes_since_commit += 1;
                if let (Admit::ApplyFirst, Some(ops)) = self.batch.add(&table, ops) {
                    self.apply().await?;
                    self.batch.add(&table, ops);
                }
                Ok(())
            }
        }
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction {
            self.client.batch_execute("BEGIN").await?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Writes the pending batch inside the open sink transaction.
    async fn apply(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        for (table, ops) in self.batch.take() {
            // A change for a table this job does not mirror (the publication has more): skip it.
            let Some(destination) = self.destinations.get(&table) else { continue };
            let mut upserts = JsonArray::default();
            let mut keeping_toast = JsonArray::default();
            let mut moves = JsonArray::default();
            let mut deletes = JsonArray::default();
            for op in ops {
                match op {
                    RowOp::Upsert { lsn, row, unchanged_toast, .. } if unchanged_toast.is_empty() => {
                        upserts.push(format_args!("{{\"l\":\"{lsn}\",\"r\":{}}}", row.get()));
                    }
                    RowOp::Upsert { lsn, row, unchanged_toast, moved_from } => {
                        let toast = serde_json::to_string(&unchanged_toast).unwrap_or_else(|_| "[]".into());
                        match moved_from {
                            Some(old) => moves.push(format_args!(
                                "{{\"l\":\"{lsn}\",\"r\":{},\"t\":{toast},\"k\":{}}}",
                                row.get(),
                                old.get()
                            )),
                            None => keeping_toast
                                .push(format_args!("{{\"l\":\"{lsn}\",\"r\":{},\"t\":{toast}}}", row.get())),
                        }
                    }
                    RowOp::Delete { lsn, key } => {
                        deletes.push(format_args!("{{\"l\":\"{lsn}\",\"k\":{}}}", key.get()))
                    }
                }
            }
            // Moves read the rows under their old keys, so they go before the deletes.
            for (statement, array) in [
                (&destination.move_keeping_toast, moves),
                (&destination.delete, deletes),
                (&destination.upsert, upserts),
                (&destination.update_keeping_toast, keeping_toast),
            ] {
                if let Some(json) = array.finish() {
                    self.client.execute(statement, &[&json]).await?;
                }
            }
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
        self.apply().await?;
        if let Some(lsn) = boundary {
            self.begin().await?;
            write_checkpoint(&self.client, &self.job, &self.slot, lsn).await?;
        }
        if self.in_transaction {
            self.client.batch_execute("COMMIT").await?;
            self.in_transaction = false;
            if let Some(lsn) = boundary {
                tracing::debug!(applied = %lsn, changes = self.changes_since_commit, "sink commit");
            }
        }
        self.changes_since_commit = 0;
        for confirm in uncommitted.drain(..) {
            // The driver is gone only when it stopped on an error: nothing more to tell it.
            let _ = ends.acks.send(confirm);
        }
        Ok(())
    }
}

/// A JSON array built by appending pre-rendered elements.
#[derive(Default)]
struct JsonArray(String);

impl JsonArray {
    fn push(&mut self, element: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        self.0.push(if self.0.is_empty() { '[' } else { ',' });
        let _ = self.0.write_fmt(element);
    }

    fn finish(mut self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        self.0.push(']');
        Some(self.0)
    }
}
