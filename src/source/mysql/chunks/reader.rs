//! One chunk, read between its two watermarks.
//!
//! ```text
//!  write low watermark (autocommit)
//!  read the table's columns; SELECT <columns> FROM t WHERE key > after ORDER BY key LIMIT n
//!  write high watermark (autocommit)
//! ```
//!
//! Invariants: the query runs after the low watermark committed and before
//! the high one is written, so every transaction it saw committed before
//! the high watermark, and every transaction that committed before the low
//! watermark is in what it saw (see the module above). The query is one
//! statement, a consistent read; no transaction is held open between chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::ChunkError;
use super::signal::{Edge, Signal, Watermark};
use crate::chunked::keys::row_key_text;
use crate::chunked::progress::TableCopy;
use crate::source::mysql::catalog::{self, stable_id};
use crate::source::mysql::snapshot::copy_line;
use crate::source::mysql::transaction::Shape;
use crate::source::mysql::types::Format;
use crate::source::table::SourceTable;

/// COPY text is handed over in pieces of about this size.
const PIECE_BYTES: usize = 256 * 1024;

/// A chunk as read, until the stream reaches its high watermark.
#[derive(Debug)]
pub struct ChunkRead {
    /// `<run>/<sequence>`, as its watermarks carry it.
    pub token: String,
    /// `schema.name`.
    pub table: String,
    /// The table's columns as the query read them.
    pub shape: Arc<Shape>,
    /// Where the key columns are among the shape's, in key order.
    pub key_positions: Vec<usize>,
    /// COPY text, whole rows per piece.
    pub rows: Vec<Bytes>,
    pub row_count: usize,
    pub bytes: usize,
    /// Where the table's copy stands once this chunk is in the sink.
    pub progress: TableCopy,
    pub took: Duration,
}

/// Whether the chunked copy pages through a key column of this format: its
/// order in `ORDER BY` is the order of `>` against a literal, and the
/// binlog and a query write its values alike (up to [`super::window::canonical`]).
pub fn pages(format: &Format) -> bool {
    matches!(
        format,
        Format::Integer { .. }
            | Format::Unsigned { .. }
            | Format::Year
            | Format::Decimal { .. }
            | Format::Date
            | Format::DateTime
            | Format::Timestamp
            | Format::Time
            | Format::Text
            | Format::Binary
    )
}

/// Reads the first `limit` rows of `table` after `start.after`, between the
/// watermarks of `token`.
pub async fn read_chunk(
    conn: &mut Conn,
    signal: &Signal,
    table: &SourceTable,
    start: &TableCopy,
    limit: usize,
    token: &str,
) -> Result<ChunkRead, ChunkError> {
    let started = Instant::now();
    let name = table.qualified();
    let failed = |source| ChunkError::Source { table: name.clone(), source };
    signal.write(conn, &Watermark::new(token, Edge::Low)).await.map_err(failed)?;
    let columns = catalog::formats(conn, &table.schema, &table.name)
        .await
        .map_err(|error| ChunkError::Catalog { table: name.clone(), error })?;
    let key_positions = table
        .key
        .iter()
        .map(|k| columns.iter().position(|(column, _)| column == k))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ChunkError::KeyMissing { table: name.clone() })?;
    let key: Vec<(&str, &Format)> =
        key_positions.iter().map(|at| (columns[*at].0.as_str(), &columns[*at].1)).collect();
    let names: Vec<&str> = columns.iter().map(|(column, _)| column.as_str()).collect();
    let query = chunk_query(&table.schema, &table.name, &names, &key, start.after.as_deref(), limit)
        .map_err(|what| ChunkError::Key { table: name.clone(), what })?;
    let formats: Vec<Format> = columns.iter().map(|(_, format)| format.clone()).collect();
    let mut rows = Vec::new();
    let mut row_count = 0;
    let mut piece = BytesMut::with_capacity(PIECE_BYTES);
    let mut result = conn.query_iter(query).await.map_err(failed)?;
    if let Some(mut stream) = result.stream::<mysql_async::Row>().await.map_err(failed)? {
        while let Some(row) = stream.next().await {
            copy_line(&mut piece, &formats, row.map_err(failed)?.unwrap());
            row_count += 1;
            if piece.len() >= PIECE_BYTES {
                rows.push(piece.split().freeze());
            }
        }
    }
    drop(result);
    if !piece.is_empty() {
        rows.push(piece.freeze());
    }
    signal.write(conn, &Watermark::new(token, Edge::High)).await.map_err(failed)?;
    let last_key =
        rows.last().and_then(|piece| last_row(piece)).and_then(|row| row_key_text(row, &key_positions));
    let progress = TableCopy {
        after: last_key.or_else(|| start.after.clone()),
        done: row_count < limit,
        ..start.clone()
    };
    let shape = Arc::new(Shape::new(
        stable_id(&table.schema, &table.name),
        &table.schema,
        &table.name,
        columns
            .into_iter()
            .map(|(column, format)| (column.clone(), format, table.key.contains(&column)))
            .collect(),
    ));
    Ok(ChunkRead {
        token: token.to_string(),
        table: name,
        shape,
        key_positions,
        bytes: rows.iter().map(Bytes::len).sum(),
        rows,
        row_count,
        progress,
        took: started.elapsed(),
    })
}

/// `SELECT <columns> FROM <table> WHERE <key> > <after> ORDER BY <key> LIMIT <limit>`,
/// the composite comparison spelled out (`k1 > a OR (k1 = a AND k2 > b)`),
/// which every MySQL and MariaDB version turns into index ranges.
pub fn chunk_query(
    schema: &str,
    table: &str,
    columns: &[&str],
    key: &[(&str, &Format)],
    after: Option<&[String]>,
    limit: usize,
) -> Result<String, String> {
    let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
    let list = |names: &mut dyn Iterator<Item = &str>| names.map(quote).collect::<Vec<_>>().join(", ");
    let mut sql =
        format!("SELECT {} FROM {}.{}", list(&mut columns.iter().copied()), quote(schema), quote(table));
    if let Some(after) = after {
        let literals = key
            .iter()
            .zip(after)
            .map(|((_, format), value)| literal(format, value))
            .collect::<Result<Vec<_>, _>>()?;
        let branches: Vec<String> = (0..key.len())
            .map(|last| {
                let mut terms: Vec<String> =
                    (0..last).map(|i| format!("{} = {}", quote(key[i].0), literals[i])).collect();
                terms.push(format!("{} > {}", quote(key[last].0), literals[last]));
                format!("({})", terms.join(" AND "))
            })
            .collect();
        sql.push_str(&format!(" WHERE {}", branches.join(" OR ")));
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", list(&mut key.iter().map(|(name, _)| *name))));
    Ok(sql)
}

/// A key value (its text as the copy recorded it) as an SQL literal of its column's type.
fn literal(format: &Format, text: &str) -> Result<String, String> {
    let numeric = |allowed: &dyn Fn(char) -> bool| {
        if !text.is_empty() && text.chars().all(allowed) {
            Ok(text.to_string())
        } else {
            Err(format!("the key value {text:?} is not a number"))
        }
    };
    match format {
        Format::Integer { .. } | Format::Unsigned { .. } | Format::Year => {
            numeric(&|c: char| c.is_ascii_digit() || c == '-')
        }
        Format::Decimal { .. } => numeric(&|c: char| c.is_ascii_digit() || c == '-' || c == '.'),
        Format::Binary => {
            let hex = text.strip_prefix("\\x").unwrap_or(text);
            if hex.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(format!("X'{hex}'"))
            } else {
                Err(format!("the key value {text:?} is not hex"))
            }
        }
        Format::Timestamp => Ok(quoted(text.strip_suffix("+00").unwrap_or(text))),
        format if pages(format) => Ok(quoted(text)),
        other => Err(format!("walpipe does not page through a key of type {}", other.column_type().name)),
    }
}

/// A string literal, escaped for a session with backslash escapes (every walpipe session).
fn quoted(text: &str) -> String {
    mysql_async::Value::from(text).as_sql(false)
}

/// The last row of a piece of COPY text.
fn last_row(piece: &[u8]) -> Option<&[u8]> {
    let body = piece.strip_suffix(b"\n")?;
    Some(body.rsplit(|b| *b == b'\n').next().unwrap_or(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_chunk_has_no_bound_and_later_ones_start_after_the_last_key() {
        let id = Format::Integer { bits: 64 };
        let key = [("id", &id)];
        assert_eq!(
            chunk_query("shop", "orders", &["id", "note"], &key, None, 10),
            Ok("SELECT `id`, `note` FROM `shop`.`orders` ORDER BY `id` LIMIT 10".into())
        );
        assert_eq!(
            chunk_query("shop", "orders", &["id"], &key, Some(&["-7".into()]), 10),
            Ok("SELECT `id` FROM `shop`.`orders` WHERE (`id` > -7) ORDER BY `id` LIMIT 10".into())
        );
    }

    #[test]
    fn a_composite_key_is_compared_column_by_column() {
        let (text, binary) = (Format::Text, Format::Binary);
        let key = [("a`b", &text), ("c", &binary)];
        let sql = chunk_query("s", "t", &["c"], &key, Some(&["it's \\ x".into(), "\\x00ff".into()]), 5);
        assert_eq!(
            sql,
            Ok("SELECT `c` FROM `s`.`t` WHERE (`a``b` > 'it\\'s \\\\ x') OR (`a``b` = 'it\\'s \\\\ x' AND `c` > X'00ff') ORDER BY `a``b`, `c` LIMIT 5".into())
        );
    }

    #[test]
    fn a_key_value_that_is_not_of_its_type_is_refused_not_inlined() {
        let id = Format::Integer { bits: 32 };
        let key = [("id", &id)];
        assert!(chunk_query("s", "t", &["id"], &key, Some(&["1 OR 1=1".into()]), 5).is_err());
        let bits = Format::Bit { bits: 3 };
        assert!(chunk_query("s", "t", &["b"], &[("b", &bits)], Some(&["101".into()]), 5).is_err());
        assert_eq!(literal(&Format::Timestamp, "2024-01-02 03:04:05+00"), Ok("'2024-01-02 03:04:05'".into()));
    }
}
