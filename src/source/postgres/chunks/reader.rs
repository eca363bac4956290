//! One chunk, read in its own short transaction on the source.
//!
//! ```text
//!  BEGIN REPEATABLE READ
//!  SELECT pg_current_snapshot(), the table's columns     (S: what the chunk's query sees)
//!  COPY (SELECT ... WHERE key > after ORDER BY key LIMIT n) TO STDOUT
//!  SELECT pg_logical_emit_message(true, 'walpipe_chunk', token); COMMIT
//! ```
//!
//! Invariants: the query reads exactly what S sees (REPEATABLE READ keeps
//! the snapshot of the transaction's first statement); the marker is a
//! message inside the same transaction, so it reaches the stream at this
//! transaction's commit, after every transaction S saw (they committed
//! before S was taken); the transaction lasts one chunk, so walpipe never
//! holds the source's xmin longer than that.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ChunkError;
use super::keyset::chunk_query;
use super::visibility::XidSnapshot;
use crate::chunked::keys::row_key_text;
use crate::chunked::progress::TableCopy;
use crate::names::{quote_ident, quote_literal};
use crate::pg::Connection;
use crate::source::postgres::catalog::SourceTable;
use crate::source::postgres::protocol::pgoutput::{ColumnDef, Relation};

/// The prefix of the messages that mark a chunk's place in the stream.
pub const CHUNK_PREFIX: &str = "walpipe_chunk";

/// COPY text is handed over in pieces of about this size.
const PIECE_BYTES: usize = 256 * 1024;

/// A chunk as read, until the stream reaches its marker.
#[derive(Debug)]
pub struct ChunkRead {
    /// The marker's content.
    pub token: String,
    /// `schema.name`.
    pub table: String,
    /// The table's columns, as the rows have them.
    pub shape: Relation,
    /// Names of the types outside the built-in ones, by OID.
    pub types: HashMap<u32, String>,
    /// Where the key columns are among the shape's, in key order.
    pub key_positions: Vec<usize>,
    pub snapshot: XidSnapshot,
    /// COPY text, whole rows per piece.
    pub rows: Vec<Bytes>,
    pub row_count: usize,
    pub bytes: usize,
    /// Where the table's copy stands once this chunk is in the sink.
    pub progress: TableCopy,
    /// How long the transaction took.
    pub took: Duration,
}

/// Reads the first `limit` rows of `table` after `start.after` and marks the chunk with `token`.
pub async fn read_chunk(
    source: &mut Connection,
    table: &SourceTable,
    start: &TableCopy,
    limit: usize,
    token: &str,
) -> Result<ChunkRead, ChunkError> {
    let after = start.after.as_deref();
    let started = Instant::now();
    let name = table.qualified();
    let failed = |source| ChunkError::Source { table: name.clone(), source };
    source.simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ").await.map_err(failed)?;
    let described = source
        .simple_query(&format!(
            "SELECT pg_current_snapshot()::text, a.attname::text, a.atttypid::int8, a.atttypmod, \
                    CASE WHEN t.oid >= 16384 THEN n.nspname || '.' || t.typname END \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped \
               AND (a.attgenerated = '' OR current_setting('server_version_num')::int >= 180000) \
             ORDER BY a.attnum",
            quote_literal(&table.quoted())
        ))
        .await
        .map_err(failed)?;
    let shape = shape_of(table, &described.rows);
    let snapshot_text =
        described.rows.first().and_then(|row| row.first().cloned().flatten()).unwrap_or_default();
    let snapshot = XidSnapshot::parse(&snapshot_text)?;
    let types = described
        .rows
        .iter()
        .filter_map(|row| Some((row.get(2)?.as_deref()?.parse().ok()?, row.get(4)?.clone()?)))
        .collect();
    let key_positions = table
        .key
        .iter()
        .map(|k| shape.columns.iter().position(|c| &c.name == k))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ChunkError::KeyMissing { table: name.clone() })?;
    let columns = shape.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let query = chunk_query(&table.quoted(), &columns, &table.key, after, limit);
    let mut rows = Vec::new();
    let row_count = source
        .copy_out(&query, PIECE_BYTES, |piece| {
            rows.push(piece);
            std::future::ready(Ok(()))
        })
        .await
        .map_err(failed)? as usize;
    source
        .simple_query(&format!(
            "SELECT pg_logical_emit_message(true, {}, {}); COMMIT",
            quote_literal(CHUNK_PREFIX),
            quote_literal(token)
        ))
        .await
        .map_err(failed)?;
    let last_key =
        rows.last().and_then(|piece| last_row(piece)).and_then(|row| row_key_text(row, &key_positions));
    let progress = TableCopy {
        after: last_key.or_else(|| after.map(<[String]>::to_vec)),
        done: row_count < limit,
        ..start.clone()
    };
    let bytes = rows.iter().map(Bytes::len).sum();
    Ok(ChunkRead {
        token: token.to_string(),
        table: name,
        shape,
        types,
        key_positions,
        snapshot,
        rows,
        row_count,
        bytes,
        progress,
        took: started.elapsed(),
    })
}

/// The table's columns as a Relation message would describe them.
fn shape_of(table: &SourceTable, rows: &[Vec<Option<String>>]) -> Relation {
    let columns = rows
        .iter()
        .filter_map(|row| {
            let name = row.get(1)?.clone()?;
            Some(ColumnDef {
                flags: u8::from(table.key.contains(&name)),
                type_oid: row.get(2)?.as_deref()?.parse().ok()?,
                type_modifier: row.get(3)?.as_deref()?.parse().ok()?,
                name,
            })
        })
        .collect();
    Relation {
        xid: None,
        id: 0,
        namespace: table.schema.clone(),
        name: table.name.clone(),
        replica_identity: b'd',
        columns,
    }
}

/// The last row of a piece of COPY text.
fn last_row(piece: &[u8]) -> Option<&[u8]> {
    let body = piece.strip_suffix(b"\n")?;
    Some(body.rsplit(|b| *b == b'\n').next().unwrap_or(body))
}
