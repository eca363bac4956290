//! The blocking snapshot's read side ([`SnapshotReader`]): the tables read
//! in the transaction that `START TRANSACTION WITH CONSISTENT SNAPSHOT`
//! opened while `FLUSH TABLES WITH READ LOCK` held every write (`setup`),
//! as COPY text.
//!
//! Invariants: every row is read in that one transaction, so the copy
//! holds exactly what committed before the binlog position read under the
//! lock, and the stream starts at that position. MySQL cannot share a
//! snapshot between sessions, so the copy's sessions take the one
//! transaction in turn (a parallel copy runs one table at a time).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};

use super::catalog;
use super::types::{Format, bit_string, hex};
use crate::source::BoxFuture;
use crate::source::copy::{CopyFormat, RowOrder, SnapshotError, SnapshotReader, SnapshotSession};
use crate::source::table::SourceTable;

const CHUNK_BYTES: usize = 256 * 1024;

/// The connection holding the snapshot's transaction.
pub struct BlockingSnapshot {
    /// `None` when no snapshot was opened (a bug of the caller's).
    pub conn: Option<Arc<Mutex<Conn>>>,
    /// For the row estimates, on a session of their own: the snapshot's
    /// is held by the copy while it reads.
    pub opts: mysql_async::Opts,
}

impl BlockingSnapshot {
    fn conn(&self) -> Result<Arc<Mutex<Conn>>, SnapshotError> {
        self.conn
            .clone()
            .ok_or_else(|| SnapshotError::source(false, std::io::Error::other("no snapshot is open")))
    }
}

struct Session {
    conn: OwnedMutexGuard<Conn>,
}

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> SnapshotError {
    SnapshotError::source(true, error)
}

impl SnapshotReader for BlockingSnapshot {
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn SnapshotSession>, SnapshotError>> {
        Box::pin(async move {
            let conn = self.conn()?.lock_owned().await;
            Ok(Box::new(Session { conn }) as Box<dyn SnapshotSession>)
        })
    }

    fn estimate<'a>(&'a self, table: &'a SourceTable) -> BoxFuture<'a, Result<i64, SnapshotError>> {
        Box::pin(async move {
            let mut conn = Conn::new(self.opts.clone()).await.map_err(failed)?;
            let rows = catalog::estimate(&mut conn, &table.schema, &table.name).await.map_err(failed)?;
            conn.disconnect().await.map_err(failed)?;
            Ok(rows)
        })
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
        Box::pin(async move {
            if format == CopyFormat::Binary {
                let error = std::io::Error::other("a MySQL source reads COPY text only");
                return Err(SnapshotError::source(false, error));
            }
            let conn = &mut *self.conn;
            let known = catalog::formats(conn, &table.schema, &table.name).await.map_err(failed)?;
            let formats: Vec<Format> = table
                .columns
                .iter()
                .map(|c| {
                    known.iter().find(|(name, _)| *name == c.name).map_or(Format::Text, |(_, f)| f.clone())
                })
                .collect();
            let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
            let columns: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
            let order = match order {
                RowOrder::Key if !table.key.is_empty() => {
                    format!(" ORDER BY {}", table.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "))
                }
                _ => String::new(),
            };
            let sql = format!(
                "SELECT {} FROM {}.{}{order}",
                columns.join(", "),
                quote(&table.schema),
                quote(&table.name)
            );
            let mut result = conn.query_iter(sql).await.map_err(failed)?;
            let mut stream = result.stream::<mysql_async::Row>().await.map_err(failed)?;
            let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
            if let Some(rows) = stream.as_mut() {
                while let Some(row) = rows.next().await {
                    let row = row.map_err(failed)?;
                    copy_line(&mut chunk, &formats, row.unwrap());
                    if chunk.len() >= CHUNK_BYTES {
                        send(&chunks, chunk.split().freeze()).await?;
                    }
                }
            }
            drop(stream);
            if !chunk.is_empty() {
                send(&chunks, chunk.freeze()).await?;
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), SnapshotError>> {
        Box::pin(async move {
            self.conn.query_drop("COMMIT").await.map_err(failed)?;
            Ok(())
        })
    }
}

async fn send(chunks: &mpsc::Sender<Bytes>, chunk: Bytes) -> Result<(), SnapshotError> {
    chunks.send(chunk).await.map_err(|_| {
        SnapshotError::source(true, std::io::Error::other("the sink side of the snapshot copy stopped"))
    })
}

/// One row as a line of COPY text (tab-separated, `\N` for NULL).
pub fn copy_line(out: &mut BytesMut, formats: &[Format], values: Vec<Value>) {
    for (index, (format, value)) in formats.iter().zip(values).enumerate() {
        if index > 0 {
            out.put_u8(b'\t');
        }
        match text(format, value) {
            None => out.put_slice(b"\\N"),
            Some(text) => escape(out, text.as_bytes()),
        }
    }
    out.put_u8(b'\n');
}

/// A value of the text protocol as Postgres reads its column's type (the
/// session's time zone is UTC, see `setup`).
fn text(format: &Format, value: Value) -> Option<String> {
    let Value::Bytes(bytes) = value else {
        return match value {
            Value::NULL => None,
            Value::Int(n) => Some(n.to_string()),
            Value::UInt(n) => Some(n.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Double(f) => Some(f.to_string()),
            other => Some(format!("{other:?}")),
        };
    };
    let text = || String::from_utf8_lossy(&bytes).into_owned();
    Some(match format {
        Format::Binary => hex(&bytes),
        Format::Geometry => hex(bytes.get(4..).unwrap_or_default()),
        Format::Bit { bits } => bit_string(&bytes, *bits),
        Format::Date | Format::DateTime if bytes.starts_with(b"0000-00-00") => return None,
        Format::Timestamp if bytes.starts_with(b"0000-00-00") => return None,
        Format::Timestamp => format!("{}+00", text()),
        _ => text(),
    })
}

fn escape(out: &mut BytesMut, text: &[u8]) {
    for byte in text {
        match byte {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            other => out.put_u8(*other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_one_escaped_copy_line() {
        let mut out = BytesMut::new();
        let formats =
            [Format::Integer { bits: 32 }, Format::Text, Format::Binary, Format::Timestamp, Format::Date];
        let values = vec![
            Value::Bytes(b"7".to_vec()),
            Value::Bytes(b"a\tb\\c\nd".to_vec()),
            Value::Bytes(vec![0xff]),
            Value::Bytes(b"2024-01-02 03:04:05".to_vec()),
            Value::Bytes(b"0000-00-00".to_vec()),
        ];
        copy_line(&mut out, &formats, values);
        assert_eq!(&out[..], b"7\ta\\tb\\\\c\\nd\t\\\\xff\t2024-01-02 03:04:05+00\t\\N\n");
    }
}
