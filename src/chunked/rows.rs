//! A chunk's rows as `snapshot` change lines, in the transaction where the
//! source placed the chunk. Pure: no I/O.
//!
//! Invariants:
//! - A copied row's id names the copy, the table and the key
//!   (`<since>:<schema.table>:<key as JSON>`), so a chunk read again after
//!   a crash repeats its ids: a changelog that has some of them skips them.
//! - A row the source's merge rule leaves out is never written; a row it
//!   cannot merge stops the chunk before any later row is written (the
//!   source checks such rows before the first one, so none is).

use crate::change::Encoding;
use crate::change::encode::ShapeError;
use crate::change::json::write_str;
use crate::change::relation::Table;
use crate::position::Position;

use super::keys::row_key_text;

/// What becomes of one row of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Write,
    /// The stream has a newer version.
    LeaveOut,
    /// Neither the stream nor the chunk has the row's whole newest
    /// version: the chunk must be read again.
    Unmergeable,
}

/// What a chunk put in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkWritten {
    pub rows: usize,
    /// Rows left out: the stream has a newer version of their key.
    pub stale: usize,
}

impl std::ops::AddAssign for ChunkWritten {
    fn add_assign(&mut self, more: ChunkWritten) {
        self.rows += more.rows;
        self.stale += more.stale;
    }
}

/// Why a chunk's rows could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("a row of the chunk cannot be merged with the stream")]
    Unmergeable,
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// The chunk being written.
#[derive(Debug, Clone, Copy)]
pub struct CopiedRows<'a> {
    /// The shape its rows have (announced before them).
    pub table: &'a Table,
    /// The copy's start, in the ids (`TableCopy::since`).
    pub since: &'a str,
    /// Whether the rows keep the chunk's position (a copy that reconciles).
    pub positioned: bool,
    /// Where the key columns are among the row's fields, in key order.
    pub key_positions: &'a [usize],
}

/// Writes a piece of the chunk's COPY text (whole rows) as changes of
/// `txn` at `at`, asking `verdict` about each row.
pub fn write_copied_rows<E: Encoding>(
    encoding: &E,
    txn: &E::Txn,
    at: Position,
    chunk: &CopiedRows<'_>,
    piece: &[u8],
    mut verdict: impl FnMut(&[u8]) -> Verdict,
    out: &mut Vec<u8>,
) -> Result<ChunkWritten, RowsError> {
    let mut written = ChunkWritten::default();
    for row in crate::lines::lines(piece).filter(|row| !row.is_empty()) {
        match verdict(row) {
            Verdict::Write => {}
            Verdict::LeaveOut => {
                written.stale += 1;
                continue;
            }
            Verdict::Unmergeable => return Err(RowsError::Unmergeable),
        }
        encoding.write_copied_header(txn, out, at, chunk.positioned, |out| {
            let mut id = format!("{}:{}:", chunk.since, chunk.table.qualified_name());
            let key = row_key_text(row, chunk.key_positions).unwrap_or_default();
            id.push_str(&serde_json::to_string(&key).unwrap_or_default());
            write_str(out, &id);
        });
        encoding.write_copied_row(out, chunk.table, row)?;
        written.rows += 1;
    }
    Ok(written)
}
