//! The read side of the initial copy: every table, read under the slot's
//! exported snapshot with `COPY ... TO STDOUT`, in chunks of 256 KiB, with
//! progress lines and metrics. The sinks write it ([`Snapshot`] is what
//! they are given): the Postgres mirror takes the COPY text as it is
//! (`sink::postgres::copy`), every other sink takes `snapshot` change
//! lines through [`SnapshotLines`].
//!
//! ```text
//!  source (plain session, SET TRANSACTION SNAPSHOT) ──COPY rows──> 256 KiB chunks ──(channel)──> the sink's writer
//! ```
//!
//! Invariants: the snapshot is the slot's, so the copy holds exactly the
//! transactions committed before the slot's consistent point, and the
//! stream starts with the first one after it: nothing lost, nothing
//! doubled. The read uses walpipe's own protocol client: the source sends
//! one message per row, and reading them in large buffers keeps the copy
//! as fast as a `psql | psql` pipe.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::outbox_cleanup::{OutboxCleanup, OutboxRows};
use crate::change::encode::SnapshotRows;
use crate::contract::SinkError;
use crate::metrics::JobMetrics;
pub use crate::metrics::copy_progress::TableProgress;
use crate::names::{quote_ident, quote_literal};
use crate::pg::conninfo::ConnInfo;
use crate::pg::{Connection, SourceError};
use crate::position::Position;
use crate::source::postgres::catalog::SourceTable;
use crate::source::postgres::types::value_kind;

const CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Connect(String),
    #[error("reading the snapshot from the source failed: {0}")]
    Source(#[from] SourceError),
    #[error("writing the snapshot into the sink failed: {}", crate::pg::sql::describe(.0))]
    Sink(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Writer(#[from] SinkError),
}

impl SnapshotError {
    pub fn is_transient(&self) -> bool {
        match self {
            // Connection failures: the sink was reachable a moment ago.
            SnapshotError::Connect(_) => true,
            SnapshotError::Source(error) => error.is_transient(),
            SnapshotError::Sink(error) => crate::pg::sql::is_transient(error),
            SnapshotError::Writer(error) => error.is_transient(),
        }
    }
}

/// The initial copy as a sink sees it: the tables to copy, and the slot's
/// exported snapshot to read them as of.
pub struct Snapshot<'a> {
    pub source: &'a ConnInfo,
    /// For the row-count estimates of the progress lines.
    pub catalog: &'a Client,
    pub parallel_tables: usize,
    pub metrics: &'a JobMetrics,
    pub tables: &'a [SourceTable],
    /// The exported snapshot's name.
    pub name: &'a str,
    /// The slot's consistent point: the copied rows' position.
    pub consistent_point: Position,
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
    /// Copies the tables as `snapshot` change lines (changelog mode, and the
    /// sinks outside Postgres) into `into`, a table at a time. Returns the rows copied.
    pub async fn copy_as_lines(&self, into: &mut impl SnapshotLines) -> Result<u64, SnapshotError> {
        let (consistent_point, plan) = (self.consistent_point, self);
        let mut cleanup = self.outbox_cleanup.cloned();
        let mut reader = self.session().await?;
        let mut total = 0;
        for table in self.tables {
            let shape = SnapshotRows::new(
                &table.schema,
                &table.name,
                &table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), value_kind(c.type_oid, None), table.key.contains(&c.name)))
                    .collect::<Vec<_>>(),
            );
            let columns = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
            // In key order, so ids count rows the same way; a table without a key in the order it is stored.
            let order = table.key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
            let order = if order.is_empty() { String::new() } else { format!(" ORDER BY {order}") };
            let sql = format!("COPY (SELECT {columns} FROM {}{order}) TO STDOUT", table.quoted());
            let mut progress = table_progress(plan, table).await?;
            into.begin_table().await?;
            let (chunks, mut incoming) = mpsc::channel::<Bytes>(4);
            let read = read_copy(&mut reader, &sql, &mut progress, chunks);
            let mut outbox_rows = OutboxRows::new();
            let write = async {
                let mut rows: u64 = 0;
                let mut line = Vec::with_capacity(512);
                while let Some(chunk) = incoming.recv().await {
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
        reader.simple_query("COMMIT").await?;
        Ok(total)
    }

    /// A source session reading as of the exported snapshot; `COMMIT` ends it.
    pub async fn session(&self) -> Result<Connection, SnapshotError> {
        let mut reader = Connection::connect_plain(self.source).await?;
        reader
            .simple_query(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(self.name)
            ))
            .await?;
        Ok(reader)
    }
}

/// Reads `sql`'s COPY output in chunks of `CHUNK_BYTES`, counting them in
/// `progress` and handing them to the side writing the sink; the channel
/// closes when the read ends, which ends the write.
pub async fn read_copy(
    reader: &mut Connection,
    sql: &str,
    progress: &mut TableProgress<'_>,
    chunks: mpsc::Sender<Bytes>,
) -> Result<u64, SourceError> {
    reader
        .copy_out(sql, CHUNK_BYTES, |chunk| {
            progress.advance(&chunk);
            forward(chunks.clone(), chunk)
        })
        .await
}

/// Hands a chunk of copied rows to the side writing the sink.
async fn forward(chunks: mpsc::Sender<Bytes>, chunk: Bytes) -> Result<(), SourceError> {
    chunks
        .send(chunk)
        .await
        .map_err(|_| SourceError::Protocol("the sink side of the snapshot copy stopped".into()))
}

/// The progress of `table`'s copy, with the catalog's estimate of its rows.
pub async fn table_progress<'a>(
    plan: &Snapshot<'a>,
    table: &SourceTable,
) -> Result<TableProgress<'a>, SnapshotError> {
    let estimate: i64 = plan
        .catalog
        .query_one(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
            &[&table.quoted()],
        )
        .await?
        .try_get(0)?;
    Ok(TableProgress::new(plan.metrics, table.qualified(), estimate))
}
