//! The initial copy: every table, read under the slot's exported snapshot,
//! streamed from `COPY ... TO STDOUT` on the source into `COPY ... FROM
//! STDIN` on the sink.
//!
//! ```text
//!  per worker (parallel_tables of them), a table at a time:
//!  source (plain session, SET TRANSACTION SNAPSHOT) ──COPY rows──> 256 KiB chunks ──(channel)──> sink COPY
//! ```
//!
//! Invariants: the snapshot is the slot's, so the copy holds exactly the
//! transactions committed before the slot's consistent point, and the
//! stream starts with the first one after it: nothing lost, nothing
//! doubled. Each table is truncated and copied in one sink transaction, so
//! a copy interrupted half-way leaves nothing half-copied. The read side
//! uses walpipe's own protocol client: the source sends one message per
//! row, and reading them in large buffers keeps the copy as fast as a
//! `psql | psql` pipe.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::change::encode::SnapshotRows;
use crate::lsn::Lsn;
use crate::metrics::JobMetrics;
use crate::names::{TableName, quote_ident, quote_literal};
use crate::sink::SinkError;
use crate::sink::delivery::{Delivery, Transport};
use crate::sink::postgres::Writer;
use crate::sink::postgres::changelog::ChangelogWriter;
use crate::sink::postgres::follow::Place;
use crate::source::catalog::SourceTable;
use crate::source::conninfo::ConnInfo;
use crate::source::{Connection, SourceError};

const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const CHUNK_BYTES: usize = 256 * 1024;
/// Snapshot rows per changelog insert.
const CHANGELOG_BATCH: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Connect(String),
    #[error("reading the snapshot from the source failed: {0}")]
    Source(#[from] SourceError),
    #[error("writing the snapshot into the sink failed: {}", crate::sql_client::describe(.0))]
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
            SnapshotError::Sink(error) => crate::sql_client::is_transient(error),
            SnapshotError::Writer(error) => error.is_transient(),
        }
    }
}

/// Where the copy reads and writes, and how many tables at once.
pub struct CopyPlan<'a> {
    pub source: &'a ConnInfo,
    /// The Postgres sink (mirror mode copies into it directly).
    pub sink: &'a ConnInfo,
    /// For the row-count estimates of the progress lines.
    pub catalog: &'a Client,
    pub parallel_tables: usize,
    pub metrics: &'a JobMetrics,
}

/// Copies `tables` as of `snapshot` (an exported snapshot name), up to
/// `parallel_tables` at a time, each worker with its own source session
/// (all importing the one snapshot) and sink session. Returns the rows copied.
pub async fn copy_tables(
    plan: &CopyPlan<'_>,
    tables: &[SourceTable],
    places: &HashMap<String, Place>,
    snapshot: &str,
) -> Result<u64, SnapshotError> {
    let queue = std::sync::Mutex::new(
        tables
            .iter()
            .filter_map(|table| places.get(&table.qualified()).map(|place| (table, place)))
            .collect::<std::collections::VecDeque<_>>(),
    );
    let workers = plan.parallel_tables.clamp(1, tables.len().max(1));
    let worker = || async {
        let mut reader = snapshot_session(plan.source, snapshot).await?;
        let sink = crate::sql_client::connect(plan.sink, "the sink")
            .await
            .map_err(|error| SnapshotError::Connect(error.to_string()))?;
        let mut rows = 0;
        loop {
            // Taken in its own statement, so the lock is released before awaiting.
            let next = queue.lock().map_or(None, |mut queue| queue.pop_front());
            let Some((table, place)) = next else { break };
            rows += copy_table(&mut reader, plan, &sink, table, &place.destination).await?;
        }
        reader.simple_query("COMMIT").await?;
        Ok::<u64, SnapshotError>(rows)
    };
    let copied = futures_util::future::try_join_all((0..workers).map(|_| worker())).await?;
    Ok(copied.into_iter().sum())
}

/// Receives the copy as `snapshot` change lines, a table at a time: the
/// changelog (a sink transaction per table) or a delivery (batches).
pub trait SnapshotLines: Send {
    fn begin_table(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn line(&mut self, line: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn end_table(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Changelog mode: each table's rows in one sink transaction.
pub struct ChangelogLines<'a> {
    pub sink: &'a Client,
    pub writer: &'a mut ChangelogWriter,
}

impl SnapshotLines for ChangelogLines<'_> {
    async fn begin_table(&mut self) -> Result<(), SinkError> {
        Ok(self.sink.batch_execute("BEGIN").await?)
    }

    async fn line(&mut self, line: Bytes) -> Result<(), SinkError> {
        self.writer.add(self.sink, line).await?;
        if self.writer.pending() >= CHANGELOG_BATCH {
            self.writer.apply(self.sink).await?;
        }
        Ok(())
    }

    async fn end_table(&mut self) -> Result<(), SinkError> {
        self.writer.apply(self.sink).await?;
        Ok(self.sink.batch_execute("COMMIT").await?)
    }
}

impl<T: Transport> SnapshotLines for Delivery<T> {
    async fn begin_table(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn line(&mut self, line: Bytes) -> Result<(), SinkError> {
        self.snapshot_line(line).await
    }

    async fn end_table(&mut self) -> Result<(), SinkError> {
        self.finish_snapshot().await
    }
}

/// Copies `tables` as of `snapshot` as `snapshot` change lines (changelog
/// mode, and the sinks outside Postgres) into `into`. Returns the rows copied.
pub async fn copy_tables_as_changes(
    plan: &CopyPlan<'_>,
    tables: &[SourceTable],
    into: &mut impl SnapshotLines,
    consistent_point: Lsn,
    snapshot: &str,
) -> Result<u64, SnapshotError> {
    let mut reader = snapshot_session(plan.source, snapshot).await?;
    let mut total = 0;
    for table in tables {
        let shape = SnapshotRows::new(
            &table.schema,
            &table.name,
            &table
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.type_oid, table.key.contains(&c.name)))
                .collect::<Vec<_>>(),
        );
        let columns = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let order = table.key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
        let sql = format!("COPY (SELECT {columns} FROM {} ORDER BY {order}) TO STDOUT", table.quoted());
        let mut progress = TableProgress::start(plan, table).await?;
        into.begin_table().await?;
        let (chunks, mut incoming) = mpsc::channel::<Bytes>(4);
        let read = read_copy(&mut reader, &sql, &mut progress, chunks);
        let write = async {
            let mut rows: u64 = 0;
            let mut line = Vec::with_capacity(512);
            while let Some(chunk) = incoming.recv().await {
                for row in chunk.split(|b| *b == b'\n').filter(|row| !row.is_empty()) {
                    line.clear();
                    shape
                        .write_line(&mut line, row, consistent_point, rows)
                        .map_err(|e| SinkError::Record(e.to_string()))?;
                    line.pop();
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
        progress.finish();
        total += rows;
    }
    reader.simple_query("COMMIT").await?;
    Ok(total)
}

async fn copy_table(
    reader: &mut Connection,
    plan: &CopyPlan<'_>,
    sink: &Client,
    table: &SourceTable,
    destination: &TableName,
) -> Result<u64, SnapshotError> {
    let columns = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let mut progress = TableProgress::start(plan, table).await?;
    let quoted = destination.quoted();
    sink.batch_execute(&format!("BEGIN; TRUNCATE {quoted}")).await?;
    let writer = sink.copy_in::<_, Bytes>(&format!("COPY {quoted} ({columns}) FROM STDIN")).await?;

    let (chunks, mut incoming) = mpsc::channel::<Bytes>(4);
    let write = async move {
        futures_util::pin_mut!(writer);
        while let Some(chunk) = incoming.recv().await {
            writer.send(chunk).await?;
        }
        writer.finish().await
    };
    let sql = format!("COPY (SELECT {columns} FROM {}) TO STDOUT", table.quoted());
    let read = read_copy(reader, &sql, &mut progress, chunks);
    let (read, written) = tokio::join!(read, write);
    // A sink failure also stops the read: report the sink's error first.
    written?;
    read?;
    sink.batch_execute("COMMIT").await?;
    Ok(progress.finish())
}

/// A source session reading as of the exported `snapshot`.
async fn snapshot_session(source: &ConnInfo, snapshot: &str) -> Result<Connection, SnapshotError> {
    let mut reader = Connection::connect_plain(source).await?;
    reader
        .simple_query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        ))
        .await?;
    Ok(reader)
}

/// Reads `sql`'s COPY output in chunks of [`CHUNK_BYTES`], counting them in
/// `progress` and handing them to the side writing the sink; the channel
/// closes when the read ends, which ends the write.
async fn read_copy(
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

/// One table's copy as the user sees it: a progress line every
/// [`PROGRESS_EVERY`] and at the end, and the snapshot metrics.
struct TableProgress<'a> {
    name: String,
    metrics: &'a JobMetrics,
    estimate: i64,
    rows: u64,
    started: Instant,
    last_report: Instant,
}

impl<'a> TableProgress<'a> {
    async fn start(plan: &CopyPlan<'a>, table: &SourceTable) -> Result<TableProgress<'a>, SnapshotError> {
        let estimate: i64 = plan
            .catalog
            .query_one(
                "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
                &[&table.quoted()],
            )
            .await?
            .try_get(0)?;
        let name = table.qualified();
        plan.metrics.snapshot_started(&name, estimate);
        let now = Instant::now();
        Ok(TableProgress { name, metrics: plan.metrics, estimate, rows: 0, started: now, last_report: now })
    }

    /// A chunk of COPY text (a line per row) was read.
    fn advance(&mut self, chunk: &[u8]) {
        let rows = chunk.iter().filter(|b| **b == b'\n').count() as u64;
        self.rows += rows;
        self.metrics.snapshot_rows(&self.name, rows);
        if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            self.log();
        }
    }

    /// The table is committed in the sink: the last line. Returns the rows copied.
    fn finish(mut self) -> u64 {
        self.estimate = self.rows as i64;
        self.log();
        self.rows
    }

    /// `snapshot public.orders: 120000/1000000 rows (12%), 60000 rows/s, ETA 15 s`
    fn log(&self) {
        let rows = self.rows;
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let total = (self.estimate.max(0) as u64).max(rows);
        let percent = if total == 0 { 100.0 } else { rows as f64 * 100.0 / total as f64 };
        let eta = if rate > 0.0 { (total - rows) as f64 / rate } else { 0.0 };
        tracing::info!(
            "snapshot {}: {rows}/{total} rows ({percent:.0}%), {rate:.0} rows/s, ETA {eta:.0} s",
            self.name
        );
    }
}
