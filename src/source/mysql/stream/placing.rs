//! The stream's side of the incremental copy: watermarks read from the
//! signal table's rows, the keys changed between them noted, and each
//! chunk's rows written at its high watermark (the rule is in
//! `source::mysql::chunks`).
//!
//! ```text
//!  commit of [H]: its lines written ──> Busy::AwaitingChunk ──(next)──> the chunk from the copier
//!       ──> Busy::Placing: its shape, then its rows a piece per call ──> ChunkPlaced
//!       ──> Busy::Committing ──> Committed at H's end
//! ```
//!
//! Invariants: while busy, the stream is in a transaction (nothing is
//! confirmed before H's end) and `next` must be called to completion; a
//! chunk is taken from the copier only at this run's high watermark, and
//! must carry that watermark's token.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::{BinlogChanges, BinlogError};
use crate::change::Encoding;
use crate::change::mirror_records::unescape;
use crate::change::row::{Column, OldTuple, Tuple};
use crate::chunked::keys::{Key, fields, push_key_value};
use crate::chunked::rows::{ChunkWritten, CopiedRows, Verdict, write_copied_rows};
use crate::position::Position;
use crate::source::Event;
use crate::source::mysql::chunks::reader::ChunkRead;
use crate::source::mysql::chunks::signal::{Edge, Watermark};
use crate::source::mysql::chunks::window::{Closed, Window, canonical};
use crate::source::mysql::transaction::{RowChange, Shape};

/// About this much of a chunk's COPY text is written per call.
const PIECE_BYTES: usize = 256 * 1024;

/// The transaction a chunk is placed in: its high watermark's.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    pub end: Position,
    pub xid: Option<u64>,
    pub commit_time: u32,
}

/// What the stream is doing between calls.
pub(super) enum Busy {
    Idle,
    /// A high watermark of this run committed: its chunk is taken next.
    AwaitingChunk {
        at: At,
        token: String,
    },
    Placing(Box<Placing>),
    /// The chunk is written: the watermark's transaction ends next.
    Committing {
        at: At,
    },
}

pub(super) struct Placing {
    at: At,
    chunk: ChunkRead,
    shape: Arc<Shape>,
    stale: HashSet<Key>,
    /// The key columns in column order, as the binlog's keys are.
    key_columns: Vec<usize>,
    next_piece: usize,
    written: ChunkWritten,
}

impl<E: Encoding> BinlogChanges<E> {
    /// A watermark written to the signal table, from a row's new image.
    pub(super) fn note_watermark(&mut self, text: Option<&str>) {
        let Some(watermark) = text.and_then(Watermark::parse) else { return };
        if self.chunks.as_ref().is_some_and(|feed| feed.is_ours(&watermark.token)) {
            self.watermark = Some(watermark);
        } else {
            tracing::debug!(token = %watermark.token, "skipped the watermark of another run or job");
        }
    }

    /// After a transaction's lines are written: what its watermark (if any)
    /// starts. `Some(at)`: a high watermark of this run, whose chunk goes next.
    pub(super) fn after_commit(&mut self, at: At) -> bool {
        match self.watermark.take() {
            Some(Watermark { token, edge: Edge::Low }) => {
                self.window.low(&token);
                false
            }
            Some(Watermark { token, edge: Edge::High }) => {
                self.busy = Busy::AwaitingChunk { at, token };
                true
            }
            None => false,
        }
    }

    /// The next step of a chunk being placed.
    pub(super) async fn place(&mut self, out: &mut Vec<u8>) -> Result<Event, BinlogError> {
        match std::mem::replace(&mut self.busy, Busy::Idle) {
            Busy::Idle => unreachable!("place is called only while busy"),
            Busy::AwaitingChunk { at, token } => {
                let placing = self.begin_chunk(at, &token, out).await?;
                self.busy = Busy::Placing(placing);
                Ok(Event::Data)
            }
            Busy::Placing(mut placing) => {
                if self.write_piece(&mut placing, out)? {
                    return Ok(self.end_chunk(*placing, out));
                }
                self.busy = Busy::Placing(placing);
                Ok(Event::Data)
            }
            Busy::Committing { at } => Ok(self.committed_at(at)),
        }
    }

    async fn begin_chunk(
        &mut self,
        at: At,
        token: &str,
        out: &mut Vec<u8>,
    ) -> Result<Box<Placing>, BinlogError> {
        let feed = self.chunks.as_mut().ok_or(BinlogError::CopyStopped)?;
        let chunk = feed.next().await.ok_or(BinlogError::CopyStopped)?;
        if chunk.token != token {
            return Err(BinlogError::ChunkOrder { expected: chunk.token, got: token.to_string() });
        }
        let stale = match self.window.high(token, &chunk.table) {
            Some(Closed::Stale(keys)) => keys,
            Some(Closed::Altered) => return Err(BinlogError::ChunkAltered { table: chunk.table }),
            None => {
                return Err(BinlogError::ChunkOrder {
                    expected: token.to_string(),
                    got: "no low watermark".into(),
                });
            }
        };
        let shape = chunk.shape.clone();
        let txn = self.encoding.txn(at.end, at.xid, Some(micros(at.commit_time)));
        self.transactions.announce_now(&self.encoding, &txn, &shape, at.end, out);
        let mut key_columns = chunk.key_positions.clone();
        key_columns.sort_unstable();
        Ok(Box::new(Placing {
            at,
            chunk,
            shape,
            stale,
            key_columns,
            next_piece: 0,
            written: ChunkWritten::default(),
        }))
    }

    /// Writes pieces until `out` holds about [`PIECE_BYTES`]; `true` once every row is written.
    fn write_piece(&mut self, placing: &mut Placing, out: &mut Vec<u8>) -> Result<bool, BinlogError> {
        let txn = self.encoding.txn(placing.at.end, placing.at.xid, Some(micros(placing.at.commit_time)));
        let rows = CopiedRows {
            table: &placing.shape.table,
            since: &placing.chunk.progress.since,
            positioned: placing.chunk.progress.reconcile,
            key_positions: &placing.chunk.key_positions,
        };
        while let Some(piece) = placing.chunk.rows.get(placing.next_piece) {
            let verdict = |row: &[u8]| match chunk_key(row, &placing.key_columns, &placing.shape) {
                Some(key) if placing.stale.contains(&key) => Verdict::LeaveOut,
                _ => Verdict::Write,
            };
            placing.written +=
                write_copied_rows(&self.encoding, &txn, placing.at.end, &rows, piece, verdict, out).map_err(
                    |error| BinlogError::Event { at: placing.at.end.to_string(), what: error.to_string() },
                )?;
            placing.next_piece += 1;
            if out.len() >= PIECE_BYTES {
                return Ok(placing.next_piece >= placing.chunk.rows.len());
            }
        }
        Ok(true)
    }

    fn end_chunk(&mut self, placing: Placing, out: &mut Vec<u8>) -> Event {
        let Placing { at, chunk, shape, written, .. } = placing;
        if chunk.progress.done {
            if chunk.progress.reconcile {
                let txn = self.encoding.txn(at.end, at.xid, Some(micros(at.commit_time)));
                self.encoding.write_copy_end(&txn, out, &shape.table, &chunk.progress.since);
            }
            self.window.done(&chunk.table);
        }
        let after = chunk.progress.after.as_deref().unwrap_or_default().join(", ");
        if written.stale > 0 {
            tracing::info!(at = %at.end, table = %chunk.table, rows = written.rows, %after,
                "a chunk left out {} rows: newer in the stream", written.stale);
        } else {
            tracing::debug!(at = %at.end, table = %chunk.table, rows = written.rows, %after, "a chunk took its place in the stream");
        }
        self.busy = Busy::Committing { at };
        Event::ChunkPlaced { table: chunk.table, progress: chunk.progress }
    }

    /// The watermark's transaction ends.
    pub(super) fn committed_at(&mut self, at: At) -> Event {
        self.committed = at.end;
        self.received.transactions += 1;
        let commit_time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(at.commit_time));
        Event::Committed { end: at.end, commit_time }
    }
}

/// At a transaction's commit, before its rows go: notes the keys it
/// changed in the tables being copied, for an open window.
pub(super) fn note_keys(window: &mut Window, rows: &[RowChange]) {
    // Most transactions commit outside any window: no name is built for their rows.
    if !window.is_open() {
        return;
    }
    for row in rows {
        let table = row.shape.table.qualified_name();
        if !window.watches(&table) {
            continue;
        }
        let tuples = row.old.as_ref().map(OldTuple::tuple).into_iter().chain(row.new.as_ref());
        for key in tuples.filter_map(|tuple| binlog_key(&row.shape, tuple)) {
            window.changed(&table, key);
        }
    }
}

pub(super) fn micros(timestamp: u32) -> i64 {
    i64::from(timestamp) * 1_000_000
}

/// A binlog row's key, in column order; `None` when a key value is null.
fn binlog_key(shape: &Shape, tuple: &Tuple) -> Option<Key> {
    let mut key = Key::with_capacity(32);
    for ((column, format), value) in shape.table.columns.iter().zip(&shape.formats).zip(&tuple.0) {
        if column.is_key {
            match value {
                Column::Text(text) | Column::Binary(text) => {
                    push_key_value(&mut key, &canonical(format, text))
                }
                Column::Null | Column::Unchanged => return None,
            }
        }
    }
    Some(key)
}

/// A chunk row's key (COPY text), in the binlog's form.
fn chunk_key(row: &[u8], key_columns: &[usize], shape: &Shape) -> Option<Key> {
    let values: Vec<&[u8]> = fields(row).collect();
    let mut key = Key::with_capacity(32);
    for at in key_columns {
        let value = unescape(values.get(*at)?)?;
        push_key_value(&mut key, &canonical(shape.formats.get(*at)?, &value));
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::mysql::transaction::tuple;
    use crate::source::mysql::types::Format;

    #[test]
    fn a_binlog_row_and_a_chunk_row_give_the_same_key() {
        let shape = Shape::new(
            1,
            "shop",
            "orders",
            vec![
                ("note".into(), Format::Text, false),
                ("at".into(), Format::DateTime, true),
                ("id".into(), Format::Integer { bits: 32 }, true),
            ],
        );
        let binlog =
            tuple(vec![Some("a\tb".into()), Some("2024-01-02 03:04:05.000000".into()), Some("7".into())]);
        let chunk = b"a\\tb\t2024-01-02 03:04:05\t7";
        assert_eq!(binlog_key(&shape, &binlog), chunk_key(chunk, &[1, 2], &shape));
        assert!(binlog_key(&shape, &binlog).is_some());
        let other = b"a\\tb\t2024-01-02 03:04:06\t7";
        assert_ne!(binlog_key(&shape, &binlog), chunk_key(other, &[1, 2], &shape));
    }
}
