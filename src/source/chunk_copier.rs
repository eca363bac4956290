//! The copier every source's chunked copy runs: the unfinished tables read
//! in chunks, one table after another, each chunk handed to the source's
//! stream, which places it at its marker (the source's watermark rule).
//! Chunks follow each other without pause; the channel holds one, so at
//! most two chunks wait in memory for the stream to reach them.
//!
//! Invariant: a chunk is handed over only after its marker was written,
//! and in the order of the markers, so the stream finds, at each of this
//! run's markers, exactly that chunk next in the channel. A marker's token
//! is `<run>/<sequence>`: a restarted stream tells this run's markers from
//! an earlier run's, which it replays.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::StreamError;
use super::copy::CopyFormat;
use super::setup::Copying;
use super::table::SourceTable;
use crate::chunked::progress::TableCopy;
use crate::chunked::sizer::ChunkSizer;
use crate::chunked::{is_run, run_id};
use crate::lifecycle::{Phase, State};
use crate::metrics::JobMetrics;
use crate::metrics::copy_progress::TableProgress;

/// A chunk as a source read it.
pub trait ReadChunk: Send + 'static {
    fn summary(&self) -> ChunkSummary<'_>;
}

/// Implements [`ReadChunk`] for a chunk type with the fields `rows`
/// (`Vec<Bytes>`), `row_count`, `bytes`, `took` and `progress`.
macro_rules! read_chunk_fields {
    ($chunk:ty) => {
        impl $crate::source::chunk_copier::ReadChunk for $chunk {
            fn summary(&self) -> $crate::source::chunk_copier::ChunkSummary<'_> {
                let (rows, row_count, bytes, took) = (&self.rows[..], self.row_count, self.bytes, self.took);
                $crate::source::chunk_copier::ChunkSummary {
                    rows,
                    row_count,
                    bytes,
                    took,
                    progress: &self.progress,
                }
            }
        }
    };
}
pub(crate) use read_chunk_fields;

/// What the copier needs of a chunk.
pub struct ChunkSummary<'a> {
    /// Its rows as COPY text, whole rows per piece.
    pub rows: &'a [Bytes],
    pub row_count: usize,
    pub bytes: usize,
    /// How long reading it took.
    pub took: Duration,
    /// Where the table's copy stands once this chunk is in the sink.
    pub progress: &'a TableCopy,
}

/// How a source reads chunks, on a session of its own.
pub trait ChunkReader: Send + 'static {
    type Chunk: ReadChunk;
    type Error: Into<StreamError> + Send;
    /// The source's row estimate of `table`, for the progress lines.
    fn estimate(&mut self, table: &SourceTable) -> impl Future<Output = Result<i64, Self::Error>> + Send;
    /// The first `limit` rows of `table` after `start.after`, marked with `token`.
    fn read(
        &mut self,
        table: &SourceTable,
        start: &TableCopy,
        limit: usize,
        token: &str,
    ) -> impl Future<Output = Result<Self::Chunk, Self::Error>> + Send;
}

/// How big a source's chunks are.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// The time a chunk's read aims at.
    pub budget: Duration,
    /// Rows per chunk, at least and at most.
    pub rows: (usize, usize),
    /// The COPY text a chunk holds at most (about).
    pub max_bytes: usize,
}

/// The tables to copy, in order, with where each resumes.
pub struct Copier {
    pub metrics: Arc<JobMetrics>,
    pub tables: Vec<(SourceTable, TableCopy)>,
    pub limits: ChunkLimits,
    /// What the log calls the copy ("copying in chunks of about 1 s").
    pub how: &'static str,
}

/// The stream's end: the chunks, and the run their markers must name.
pub struct ChunkFeed<C> {
    run: String,
    chunks: mpsc::Receiver<C>,
}

impl<C> ChunkFeed<C> {
    /// A feed of `chunks` for run `run`, for the unit tests of a stream.
    #[cfg(test)]
    pub(crate) fn of(run: &str, chunks: mpsc::Receiver<C>) -> ChunkFeed<C> {
        ChunkFeed { run: run.to_string(), chunks }
    }

    /// Whether a marker's token is this run's (an earlier run's, replayed, is not).
    pub fn is_ours(&self, token: &str) -> bool {
        is_run(token, &self.run)
    }

    /// The next chunk; `None` once the copier stopped.
    pub async fn next(&mut self) -> Option<C> {
        self.chunks.recv().await
    }
}

impl Copier {
    /// Starts copying with the reader `open` gives; the stream takes the chunks from the feed.
    pub fn spawn<R: ChunkReader>(
        self,
        open: impl Future<Output = Result<R, R::Error>> + Send + 'static,
    ) -> (ChunkFeed<R::Chunk>, Copying) {
        let run = run_id();
        let (sender, chunks) = mpsc::channel(1);
        let copy_run = run.clone();
        let task = Copying::spawn(async move {
            let reader = open.await.map_err(Into::into)?;
            self.run(reader, &copy_run, sender).await.map_err(Into::into)
        });
        (ChunkFeed { run, chunks }, task)
    }

    async fn run<R: ChunkReader>(
        self,
        mut reader: R,
        run: &str,
        chunks: mpsc::Sender<R::Chunk>,
    ) -> Result<(), R::Error> {
        let mut sequence = 0u64;
        for (table, start) in &self.tables {
            let name = table.qualified();
            let estimate = reader.estimate(table).await?;
            match &start.after {
                Some(after) => tracing::info!(
                    "snapshot {name}: resuming the chunked copy after key ({})",
                    after.join(", ")
                ),
                None => tracing::info!("snapshot {name}: {}", self.how),
            }
            let mut progress = TableProgress::new(&self.metrics, name.clone(), estimate);
            let ChunkLimits { budget, rows: (floor, ceiling), max_bytes } = self.limits;
            let mut sizer = ChunkSizer::new(budget, floor, ceiling, max_bytes);
            let mut next = start.clone();
            loop {
                sequence += 1;
                let token = format!("{run}/{sequence}");
                let chunk = reader.read(table, &next, sizer.rows(), &token).await?;
                let read = chunk.summary();
                sizer.observe(read.row_count, read.bytes, read.took);
                tracing::debug!(table = %name, rows = read.row_count, bytes = read.bytes,
                    took_ms = read.took.as_millis() as u64, "read a chunk");
                read.rows.iter().for_each(|piece| progress.advance(CopyFormat::Text.rows(piece)));
                next = read.progress.clone();
                let done = next.done;
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
