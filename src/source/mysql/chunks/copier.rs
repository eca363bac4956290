//! The copier: reads the unfinished tables in chunks, one table after
//! another, and hands each chunk to the stream, which places it at its
//! high watermark. The channel holds one chunk, so at most two wait in
//! memory for the stream to reach them.
//!
//! Invariant: a chunk is handed over only after its high watermark
//! committed, and in the order of the watermarks, so the stream finds, at
//! each of this run's high watermarks, exactly that chunk next in the channel.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Conn;
use tokio::sync::mpsc;

use super::ChunkError;
use super::reader::{ChunkRead, read_chunk};
use super::signal::Signal;
use crate::chunked::progress::TableCopy;
use crate::chunked::sizer::ChunkSizer;
use crate::chunked::{is_run, run_id};
use crate::lifecycle::{Phase, State};
use crate::metrics::JobMetrics;
use crate::metrics::copy_progress::TableProgress;
use crate::source::mysql::catalog;
use crate::source::mysql::target::MysqlTarget;
use crate::source::setup::Copying;
use crate::source::table::SourceTable;

/// The time a chunk's query aims at: writes are never held, so this only
/// bounds what one chunk holds in memory and how long its window is.
const CHUNK_BUDGET: Duration = Duration::from_secs(1);
/// Rows per chunk, at least and at most.
const CHUNK_ROWS: (usize, usize) = (1_000, 200_000);
/// The COPY text a chunk holds at most (about).
const CHUNK_MAX_BYTES: usize = 6 * 1024 * 1024;

/// The tables to copy, in order, with where each resumes.
pub struct Copier {
    pub target: MysqlTarget,
    pub job: String,
    pub metrics: Arc<JobMetrics>,
    pub tables: Vec<(SourceTable, TableCopy)>,
}

/// The stream's end: the chunks, and the run their watermarks must name.
pub struct ChunkFeed {
    run: String,
    chunks: mpsc::Receiver<ChunkRead>,
}

impl ChunkFeed {
    /// Whether a watermark's token is this run's (an earlier run's, replayed, is not).
    pub fn is_ours(&self, token: &str) -> bool {
        is_run(token, &self.run)
    }

    /// The next chunk; `None` once the copier stopped.
    pub async fn next(&mut self) -> Option<ChunkRead> {
        self.chunks.recv().await
    }
}

impl Copier {
    /// Starts copying; the stream takes the chunks from the feed.
    pub fn spawn(self) -> (ChunkFeed, Copying) {
        let run = run_id();
        let (sender, chunks) = mpsc::channel(1);
        let copy_run = run.clone();
        let task = Copying::spawn(async move { Ok(self.run(&copy_run, sender).await?) });
        (ChunkFeed { run, chunks }, task)
    }

    async fn run(self, run: &str, chunks: mpsc::Sender<ChunkRead>) -> Result<(), ChunkError> {
        let mut conn = self.target.connect().await.map_err(ChunkError::Connect)?;
        let signal = Signal::new(&self.target.database, &self.job);
        signal.ensure(&mut conn).await.map_err(ChunkError::Signal)?;
        let mut sequence = 0u64;
        for (table, start) in &self.tables {
            let name = table.qualified();
            let estimate = estimate(&mut conn, table).await?;
            match &start.after {
                Some(after) => tracing::info!(
                    "snapshot {name}: resuming the incremental copy after key ({})",
                    after.join(", ")
                ),
                None => {
                    tracing::info!("snapshot {name}: copying in chunks between watermarks, no lock taken")
                }
            }
            let mut progress = TableProgress::new(&self.metrics, name.clone(), estimate);
            let mut sizer = ChunkSizer::new(CHUNK_BUDGET, CHUNK_ROWS.0, CHUNK_ROWS.1, CHUNK_MAX_BYTES);
            let mut next = start.clone();
            loop {
                sequence += 1;
                let token = format!("{run}/{sequence}");
                let chunk = read_chunk(&mut conn, &signal, table, &next, sizer.rows(), &token).await?;
                sizer.observe(chunk.row_count, chunk.bytes, chunk.took);
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

async fn estimate(conn: &mut Conn, table: &SourceTable) -> Result<i64, ChunkError> {
    catalog::estimate(conn, &table.schema, &table.name)
        .await
        .map_err(|source| ChunkError::Source { table: table.qualified(), source })
}
