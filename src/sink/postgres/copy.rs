//! The Postgres sink's side of the initial copy.
//!
//! ```text
//!  mirror:    per worker (parallel_tables of them), a table at a time:
//!             source COPY TO STDOUT ──256 KiB chunks──> TRUNCATE + COPY FROM STDIN, one sink transaction
//!  changelog: `snapshot` change lines, each table's rows in one sink transaction
//! ```
//!
//! Invariants: each table is truncated and copied in one sink transaction,
//! so a copy interrupted half-way leaves nothing half-copied; the mirror
//! copy passes the source's COPY text through untouched, which keeps it as
//! fast as a `psql | psql` pipe.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::changelog::ChangelogWriter;
use super::commit_loop::Writer;
use super::follow::Place;
use crate::names::quote_ident;
use crate::pg::conninfo::ConnInfo;
use crate::sink::SinkError;
use crate::source::copy::{RowOrder, Snapshot, SnapshotError, SnapshotLines, SnapshotSession};
use crate::source::table::SourceTable;

/// Snapshot rows per changelog insert.
const CHANGELOG_BATCH: usize = 5_000;

/// Copies the snapshot's tables into their mirror destinations (`places`,
/// by source table), up to `parallel_tables` at a time, each worker with
/// its own source session (all reading as of the one snapshot) and its own
/// session to the sink at `sink`. Returns the rows copied.
pub async fn copy_mirror(
    snapshot: &Snapshot<'_>,
    sink: &ConnInfo,
    places: &HashMap<String, Place>,
) -> Result<u64, SnapshotError> {
    let queue = std::sync::Mutex::new(
        snapshot
            .tables
            .iter()
            .filter_map(|table| places.get(&table.qualified()).map(|place| (table, place)))
            .collect::<VecDeque<_>>(),
    );
    let workers = snapshot.parallel_tables.clamp(1, snapshot.tables.len().max(1));
    let worker = || async {
        let mut reader = snapshot.reader.session().await?;
        let sink = crate::pg::sql::connect(sink, "the sink")
            .await
            .map_err(|error| SnapshotError::Connect(error.to_string()))?;
        let mut rows = 0;
        loop {
            // Taken in its own statement, so the lock is released before awaiting.
            let next = queue.lock().map_or(None, |mut queue| queue.pop_front());
            let Some((table, place)) = next else { break };
            rows += copy_table(reader.as_mut(), snapshot, &sink, table, place).await?;
        }
        reader.finish().await?;
        Ok::<u64, SnapshotError>(rows)
    };
    let copied = futures_util::future::try_join_all((0..workers).map(|_| worker())).await?;
    Ok(copied.into_iter().sum())
}

async fn copy_table(
    reader: &mut dyn SnapshotSession,
    snapshot: &Snapshot<'_>,
    sink: &Client,
    table: &SourceTable,
    place: &Place,
) -> Result<u64, SnapshotError> {
    let columns = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let mut progress = snapshot.progress(table).await?;
    let quoted = place.destination.quoted();
    sink.batch_execute(&format!("BEGIN; TRUNCATE {quoted}")).await?;
    let writer = sink.copy_in::<_, Bytes>(&format!("COPY {quoted} ({columns}) FROM STDIN")).await?;

    let (chunks, mut incoming) = mpsc::channel::<Bytes>(4);
    let write = async {
        futures_util::pin_mut!(writer);
        while let Some(chunk) = incoming.recv().await {
            progress.advance(&chunk);
            writer.send(chunk).await?;
        }
        writer.finish().await
    };
    let read = reader.read(table, RowOrder::Stored, chunks);
    let (read, written) = tokio::join!(read, write);
    // A sink failure also stops the read: report the sink's error first.
    written?;
    read?;
    sink.batch_execute("COMMIT").await?;
    Ok(progress.finish())
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
