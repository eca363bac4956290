//! The copier: reads the unfinished tables in chunks, one table after
//! another, and hands each chunk to the driver, which writes it at its
//! marker. Chunks follow each other without pause; the channel holds one,
//! so at most two chunks wait in memory for the stream to reach them.
//!
//! Invariant: a chunk is handed over only after its transaction committed,
//! and in the order of the markers, so the driver finds, at each of this
//! run's markers, exactly that chunk next in the channel.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ChunkError;
use super::reader::{ChunkRead, read_chunk};
use crate::chunked::progress::TableCopy;
use crate::chunked::sizer::ChunkSizer;
use crate::chunked::{is_run, run_id};
use crate::lifecycle::{Phase, State};
use crate::metrics::JobMetrics;
use crate::metrics::copy_progress::TableProgress;
use crate::names::quote_literal;
use crate::pg::Connection;
use crate::pg::conninfo::ConnInfo;
use crate::source::postgres::catalog::SourceTable;
use crate::source::setup::Copying;

/// The time a chunk's transaction aims at.
const CHUNK_BUDGET: Duration = Duration::from_secs(1);
/// Rows per chunk, at least and at most.
const CHUNK_ROWS: (usize, usize) = (1_000, 500_000);
/// The COPY text a chunk holds at most (about). Up to three chunks are in
/// memory at once (one read ahead, one waiting for its marker, one being
/// written, whose lines a mirror keeps until its `COPY` ends), and the
/// allocator keeps some of what they free. A 5M-row copy peaked at 108 to
/// 143 MB with 8 MiB (over the 128 MiB goal) and at 69 to 72 MB with 4 MiB,
/// but ran about 5% slower (more chunks, each with its own transactions).
const CHUNK_MAX_BYTES: usize = 6 * 1024 * 1024;

/// The tables to copy, in order, with where each resumes.
pub struct Copier {
    pub source: ConnInfo,
    pub metrics: Arc<JobMetrics>,
    pub tables: Vec<(SourceTable, TableCopy)>,
}

/// The driver's end: the chunks, and the run their markers must name.
pub struct ChunkFeed {
    run: String,
    chunks: mpsc::Receiver<ChunkRead>,
}

impl ChunkFeed {
    /// A feed of `chunks` for run `run`, for the unit tests of the stream.
    #[cfg(test)]
    pub(crate) fn of(run: &str, chunks: mpsc::Receiver<ChunkRead>) -> ChunkFeed {
        ChunkFeed { run: run.to_string(), chunks }
    }

    /// Whether a marker's token is this run's (an earlier run's replayed marker is not).
    pub fn is_ours(&self, token: &str) -> bool {
        is_run(token, &self.run)
    }

    /// The next chunk; `None` once the copier stopped.
    pub async fn next(&mut self) -> Option<ChunkRead> {
        self.chunks.recv().await
    }
}

impl Copier {
    /// Starts copying; the driver takes the chunks from the feed.
    pub fn spawn(self) -> (ChunkFeed, Copying) {
        let run = run_id();
        let (sender, chunks) = mpsc::channel(1);
        let copy_run = run.clone();
        let task = Copying::spawn(async move { Ok(self.run(&copy_run, sender).await?) });
        (ChunkFeed { run, chunks }, task)
    }

    async fn run(self, run: &str, chunks: mpsc::Sender<ChunkRead>) -> Result<(), ChunkError> {
        // Named apart in pg_stat_activity: the session whose transactions last one chunk each.
        let mut info = self.source.clone();
        info.application_name.push_str("-copy");
        let mut source = Connection::connect_plain(&info).await.map_err(ChunkError::Connect)?;
        let mut sequence = 0u64;
        for (table, start) in &self.tables {
            let name = table.qualified();
            let estimate = estimate(&mut source, table).await?;
            match &start.after {
                Some(after) => tracing::info!(
                    "snapshot {name}: resuming the chunked copy after key ({})",
                    after.join(", ")
                ),
                None => {
                    tracing::info!("snapshot {name}: copying in chunks of about {} s", CHUNK_BUDGET.as_secs())
                }
            }
            let mut progress = TableProgress::new(&self.metrics, name.clone(), estimate);
            let mut sizer = ChunkSizer::new(CHUNK_BUDGET, CHUNK_ROWS.0, CHUNK_ROWS.1, CHUNK_MAX_BYTES);
            let mut next = start.clone();
            loop {
                sequence += 1;
                let token = format!("{run}/{sequence}");
                let chunk = read_chunk(&mut source, table, &next, sizer.rows(), &token).await?;
                sizer.observe(chunk.row_count, chunk.bytes, chunk.took);
                tracing::debug!(table = %name, rows = chunk.row_count, bytes = chunk.bytes,
                    took_ms = chunk.took.as_millis() as u64, "read a chunk");
                chunk.rows.iter().for_each(|piece| progress.advance(piece));
                next = chunk.progress.clone();
                let done = chunk.progress.done;
                if chunks.send(chunk).await.is_err() {
                    return Ok(()); // the stream stopped
                }
                if done {
                    break;
                }
            }
            progress.finish();
        }
        tracing::info!("snapshot: every chunk is read; the last ones reach the sink with the stream");
        self.metrics.status.set_state(State::Running, Some(Phase::Streaming));
        Ok(())
    }
}

/// The planner's row estimate, for the progress lines.
async fn estimate(source: &mut Connection, table: &SourceTable) -> Result<i64, ChunkError> {
    let answer = source
        .simple_query(&format!(
            "SELECT greatest(reltuples, 0)::bigint AS estimate FROM pg_class WHERE oid = {}::regclass",
            quote_literal(&table.quoted())
        ))
        .await
        .map_err(|source| ChunkError::Source { table: table.qualified(), source })?;
    Ok(answer.first("estimate").and_then(|n| n.parse().ok()).unwrap_or(0))
}
