//! The Postgres source's read side of the initial copy
//! ([`SnapshotReader`]): every table read under the slot's exported
//! snapshot with `COPY ... TO STDOUT` (text, or binary when asked), in
//! chunks of 256 KiB.
//!
//! ```text
//!  source (plain session, SET TRANSACTION SNAPSHOT) ──COPY rows──> 256 KiB chunks ──(channel)──> the sink's writer
//! ```
//!
//! Invariants: the snapshot is the slot's, so the copy holds exactly the
//! transactions committed before the slot's consistent point, and the
//! stream starts with the first one after it: nothing lost, nothing
//! doubled. Every session imports the one snapshot. The read uses
//! walpipe's own protocol client: the source sends one message per row,
//! and reading them in large buffers keeps the copy as fast as a
//! `psql | psql` pipe.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::names::{quote_ident, quote_literal};
use crate::pg::conninfo::ConnInfo;
use crate::pg::{Connection, SourceError};
use crate::source::BoxFuture;
use crate::source::copy::{CopyFormat, RowOrder, SnapshotError, SnapshotReader, SnapshotSession};
use crate::source::table::SourceTable;

const CHUNK_BYTES: usize = 256 * 1024;

/// A slot's exported snapshot, read by sessions that import it.
pub struct ExportedSnapshot<'a> {
    pub source: &'a ConnInfo,
    /// For the row-count estimates of the progress lines.
    pub catalog: &'a Client,
    /// The exported snapshot's name.
    pub name: &'a str,
}

/// A source session in a transaction that imported the snapshot.
struct Session {
    reader: Connection,
}

fn failed(error: SourceError) -> SnapshotError {
    SnapshotError::source(error.is_transient(), error)
}

impl SnapshotReader for ExportedSnapshot<'_> {
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn SnapshotSession>, SnapshotError>> {
        Box::pin(async move {
            let mut reader = Connection::connect_plain(self.source).await.map_err(failed)?;
            reader
                .simple_query(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                    quote_literal(self.name)
                ))
                .await
                .map_err(failed)?;
            Ok(Box::new(Session { reader }) as Box<dyn SnapshotSession>)
        })
    }

    fn estimate<'a>(&'a self, table: &'a SourceTable) -> BoxFuture<'a, Result<i64, SnapshotError>> {
        Box::pin(async move {
            let estimate = self
                .catalog
                .query_one(
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
                    &[&table.quoted()],
                )
                .await
                .map_err(|e| SnapshotError::source(crate::pg::sql::is_transient(&e), e))?;
            estimate.try_get(0).map_err(|e| SnapshotError::source(false, e))
        })
    }

    fn reads_binary(&self) -> bool {
        true
    }
}

impl SnapshotSession for Session {
    fn read<'a>(
        &'a mut self,
        table: &'a SourceTable,
        order: RowOrder,
        format: CopyFormat,
        chunks: mpsc::Sender<Bytes>,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        let columns = table.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let order = match order {
            RowOrder::Key if !table.key.is_empty() => {
                format!(
                    " ORDER BY {}",
                    table.key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
                )
            }
            _ => String::new(),
        };
        let options = match format {
            CopyFormat::Text => "",
            CopyFormat::Binary => " (FORMAT binary)",
        };
        let sql = format!("COPY (SELECT {columns} FROM {}{order}) TO STDOUT{options}", table.quoted());
        Box::pin(async move {
            self.reader
                .copy_out(&sql, CHUNK_BYTES, |chunk| forward(chunks.clone(), chunk))
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SnapshotError>> {
        Box::pin(async move {
            self.reader.simple_query("COMMIT").await.map_err(failed)?;
            Ok(())
        })
    }
}

/// Hands a chunk of copied rows to the side writing the sink.
async fn forward(chunks: mpsc::Sender<Bytes>, chunk: Bytes) -> Result<(), SourceError> {
    chunks
        .send(chunk)
        .await
        .map_err(|_| SourceError::Protocol("the sink side of the snapshot copy stopped".into()))
}
