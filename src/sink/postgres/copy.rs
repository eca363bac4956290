//! The Postgres sink's side of the initial copy.
//!
//! ```text
//!  mirror:    per worker (parallel_tables of them), a table at a time:
//!             source COPY TO STDOUT ──256 KiB chunks──> TRUNCATE + COPY FROM STDIN, one sink transaction
//!             (binary when every column keeps its built-in type, else text; the
//!             primary key built after the rows where that restores all: deferred_key.rs)
//!  changelog: `snapshot` change lines, each table's rows in one sink transaction
//! ```
//!
//! Invariants: each table is truncated and copied in one sink transaction,
//! so a copy interrupted half-way leaves nothing half-copied; the mirror
//! copy passes the source's COPY bytes through untouched, which keeps it at
//! least as fast as a `psql | psql` pipe. Binary only where the bytes mean
//! the same to both servers: every column is of a built-in type (OIDs below
//! [`FIRST_USER_OID`], the same in every database; binary arrays and
//! records name their element types by OID) and its destination column has
//! that very type. Anything else (a domain, an enum, an extension's type, a
//! destination column of another type) goes as text, which the destination
//! parses as its own type's input.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::changelog::ChangelogWriter;
use super::commit_loop::Writer;
use super::deferred_key::DeferredKey;
use super::follow::Place;
use crate::names::quote_ident;
use crate::pg::conninfo::ConnInfo;
use crate::sink::SinkError;
use crate::source::copy::{CopyFormat, RowOrder, Snapshot, SnapshotError, SnapshotLines, SnapshotSession};
use crate::source::table::SourceTable;

/// The first OID a database gives its own objects (PostgreSQL's
/// `FirstNormalObjectId`): below it, built-in types, alike everywhere.
const FIRST_USER_OID: u32 = 16_384;

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
    let format = copy_format(sink, snapshot, table, place).await?;
    let options = match format {
        CopyFormat::Text => "",
        CopyFormat::Binary => " (FORMAT binary)",
    };
    sink.batch_execute(&format!("BEGIN; TRUNCATE {quoted}")).await?;
    let key = DeferredKey::drop_for_copy(sink, &place.destination).await?;
    let writer = sink.copy_in::<_, Bytes>(&format!("COPY {quoted} ({columns}) FROM STDIN{options}")).await?;

    let (chunks, mut incoming) = mpsc::channel::<Bytes>(4);
    let write = async {
        futures_util::pin_mut!(writer);
        while let Some(chunk) = incoming.recv().await {
            progress.advance(format.rows(&chunk));
            writer.send(chunk).await?;
        }
        writer.finish().await
    };
    let read = reader.read(table, RowOrder::Stored, format, chunks);
    let (read, written) = tokio::join!(read, write);
    // A sink failure also stops the read: report the sink's error first.
    written?;
    read?;
    if let Some(key) = key {
        key.restore(sink, &place.destination).await?;
    }
    sink.batch_execute("COMMIT").await?;
    Ok(progress.finish())
}

/// Binary when the source reads it and every column of `table` goes to a
/// destination column of its very built-in type (see the module); the
/// choice is logged with the column that ruled binary out.
async fn copy_format(
    sink: &Client,
    snapshot: &Snapshot<'_>,
    table: &SourceTable,
    place: &Place,
) -> Result<CopyFormat, tokio_postgres::Error> {
    let text_because = |why: String| {
        tracing::info!(table = %table.qualified(), "snapshot {}: COPY text, because {why}", table.qualified());
        Ok(CopyFormat::Text)
    };
    if !snapshot.reader.reads_binary() {
        return text_because("the source reads text only".into());
    }
    if let Some(column) = table.columns.iter().find(|c| c.type_oid >= FIRST_USER_OID) {
        return text_because(format!("column {} is not of a built-in type", column.name));
    }
    let destination: HashMap<String, u32> = sink
        .query(
            "SELECT attname::text, atttypid FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
            &[&place.destination.quoted()],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if let Some(column) = table.columns.iter().find(|c| destination.get(&c.name) != Some(&c.type_oid)) {
        return text_because(format!("its destination column {} is of another type", column.name));
    }
    tracing::info!(table = %table.qualified(), "snapshot {}: COPY binary (every column keeps its built-in type)", table.qualified());
    Ok(CopyFormat::Binary)
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
