//! The initial copy as a sink sees it ([`Snapshot`]): the tables, and a
//! source's reader of them as of one snapshot ([`SnapshotReader`]), in
//! COPY text (PostgreSQL's text format: tab-separated, `\N` for NULL,
//! backslash escapes), whatever the source; a Postgres source also reads
//! PostgreSQL's binary COPY format ([`CopyFormat::Binary`]).
//!
//! ```text
//!  source session (as of the snapshot) ──COPY text or binary, 256 KiB chunks──> the sink's writer
//!       mirror: the bytes as they are (COPY FROM STDIN)
//!       others: `snapshot` change lines through SnapshotLines (copy_as_lines, text only)
//! ```
//!
//! Invariants: every session of one copy reads as of the same snapshot,
//! whose position is `consistent_point`: the copy holds exactly what was
//! committed before it, and the stream starts with what commits after it.
//! Rows come in the table's column order; in key order when asked, so that
//! the ids of `snapshot` lines count rows the same way every time.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::BoxFuture;
use super::outbox_cleanup::{OutboxCleanup, OutboxRows};
use super::table::SourceTable;
use crate::change::encode::SnapshotRows;
use crate::contract::SinkError;
use crate::metrics::JobMetrics;
pub use crate::metrics::copy_progress::TableProgress;
use crate::position::Position;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Connect(String),
    #[error("reading the snapshot from the source failed: {error}")]
    Source { transient: bool, error: Box<dyn std::error::Error + Send + Sync> },
    #[error("writing the snapshot into the sink failed: {}", crate::pg::sql::describe(.0))]
    Sink(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Writer(#[from] SinkError),
}

impl SnapshotError {
    /// A failure of the source's read, as the source classified it.
    pub fn source(transient: bool, error: impl std::error::Error + Send + Sync + 'static) -> SnapshotError {
        SnapshotError::Source { transient, error: Box::new(error) }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            // Connection failures: the sink was reachable a moment ago.
            SnapshotError::Connect(_) => true,
            SnapshotError::Source { transient, .. } => *transient,
            SnapshotError::Sink(error) => crate::pg::sql::is_transient(error),
            SnapshotError::Writer(error) => error.is_transient(),
        }
    }
}

/// In which order a table's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// As the source stores them: the fastest.
    Stored,
    /// By key (a table without one: as stored).
    Key,
}

/// How a session writes the rows it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// COPY text: every source reads it.
    Text,
    /// PostgreSQL's binary COPY format (header, tuples, trailer), read only
    /// from a source that [`SnapshotReader::reads_binary`]. A destination
    /// whose columns have the source's built-in types takes it without
    /// formatting and parsing every value as text.
    Binary,
}

impl CopyFormat {
    /// The rows in a chunk of whole rows.
    pub fn rows(self, chunk: &[u8]) -> u64 {
        match self {
            CopyFormat::Text => crate::lines::count(b'\n', chunk) as u64,
            CopyFormat::Binary => crate::pg::copy_binary::rows(chunk),
        }
    }
}

/// A source's read side of a copy: sessions that each read as of the snapshot.
pub trait SnapshotReader: Send + Sync {
    /// A new session reading as of the snapshot.
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn SnapshotSession>, SnapshotError>>;
    /// The source's estimate of `table`'s rows, for the progress lines.
    fn estimate<'a>(&'a self, table: &'a SourceTable) -> BoxFuture<'a, Result<i64, SnapshotError>>;
    /// Whether its sessions read [`CopyFormat::Binary`] (a PostgreSQL source's do).
    fn reads_binary(&self) -> bool {
        false
    }
}

/// One session reading tables as of the snapshot, one after another.
pub trait SnapshotSession: Send {
    /// Reads `table`'s rows in `format` (binary only when the reader
    /// [`SnapshotReader::reads_binary`]), in chunks of whole rows, into
    /// `chunks`; returns when the last is sent (the channel then closes).
    fn read<'a>(
        &'a mut self,
        table: &'a SourceTable,
        order: RowOrder,
        format: CopyFormat,
        chunks: mpsc::Sender<Bytes>,
    ) -> BoxFuture<'a, Result<(), SnapshotError>>;
    /// Ends the session's read.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<(), SnapshotError>>;
}

/// The initial copy as a sink sees it: the tables to copy, and the reader
/// of the snapshot to read them as of.
pub struct Snapshot<'a> {
    pub tables: &'a [SourceTable],
    pub parallel_tables: usize,
    pub metrics: &'a JobMetrics,
    /// The snapshot's position: the copied rows'.
    pub consistent_point: Position,
    pub reader: &'a dyn SnapshotReader,
    /// Deletes the outbox rows copied as events, once each table is delivered.
    pub outbox_cleanup: Option<&'a OutboxCleanup>,
}

/// Receives the copy as `snapshot` change lines, a table at a time: the
/// changelog (a sink transaction per table) or a delivery (batches).
pub trait SnapshotLines: Send {
    fn begin_table(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn line(&mut self, line: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn end_table(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl Snapshot<'_> {
    /// The progress of `table`'s copy, with the source's estimate of its rows.
    pub async fn progress(&self, table: &SourceTable) -> Result<TableProgress<'_>, SnapshotError> {
        let estimate = self.reader.estimate(table).await?;
        Ok(TableProgress::new(self.metrics, table.qualified(), estimate))
    }

    /// Copies the tables as `snapshot` change lines (changelog mode, and the
    /// sinks outside Postgres) into `into`, a table at a time. Returns the rows copied.
    pub async fn copy_as_lines(&self, into: &mut impl SnapshotLines) -> Result<u64, SnapshotError> {
        let consistent_point = self.consistent_point;
        let mut cleanup = self.outbox_cleanup.cloned();
        let mut session = self.reader.session().await?;
        let mut total = 0;
        for table in self.tables {
            let shape = SnapshotRows::new(
                &table.schema,
                &table.name,
                &table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.kind, table.key.contains(&c.name)))
                    .collect::<Vec<_>>(),
            );
            let mut progress = self.progress(table).await?;
            into.begin_table().await?;
            let (chunks, mut incoming) = mpsc::channel::<Bytes>(4);
            let read = session.read(table, RowOrder::Key, CopyFormat::Text, chunks);
            let mut outbox_rows = OutboxRows::new();
            let write = async {
                let mut rows: u64 = 0;
                let mut line = Vec::with_capacity(512);
                while let Some(chunk) = incoming.recv().await {
                    progress.advance(CopyFormat::Text.rows(&chunk));
                    for row in crate::lines::lines(&chunk).filter(|row| !row.is_empty()) {
                        line.clear();
                        shape
                            .write_line(&mut line, row, consistent_point, rows)
                            .map_err(|e| SinkError::Record(e.to_string()))?;
                        line.pop();
                        if let Some(cleanup) = &cleanup {
                            cleanup.note(&line, &mut outbox_rows);
                        }
                        into.line(Bytes::copy_from_slice(&line)).await?;
                        rows += 1;
                    }
                }
                into.end_table().await?;
                Ok::<u64, SinkError>(rows)
            };
            let (read, written) = tokio::join!(read, write);
            let rows = written?;
            read?;
            if let Some(cleanup) = &mut cleanup {
                cleanup.delete(outbox_rows).await?;
            }
            progress.finish();
            total += rows;
        }
        session.finish().await?;
        Ok(total)
    }
}
