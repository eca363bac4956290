//! The assembler's side of a chunked copy: noting the keys that committed
//! transactions change in the tables being copied, and writing a chunk's
//! rows in place of its marker (the merge rule is in `super::super::chunks`).

use super::{AssembleError, Assembler, RecordKind};
use crate::change::Encoding;
use crate::change::relation::Table;
use crate::chunked::keys::{Key, push_key_value, row_key};
use crate::chunked::rows::{ChunkWritten, CopiedRows, RowsError, Verdict, write_copied_rows};
use crate::source::postgres::chunks::reader::ChunkRead;
use crate::source::postgres::chunks::watch::{Stale, Touch};
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::protocol::pgoutput::{Column, OldTuple, Tuple};
use crate::source::postgres::relations::{PrimaryKeys, table_of};

/// A chunk being written: its table's shape, its stale keys (`None`: none).
pub struct ChunkPlace {
    table: Table,
    stale: Option<Stale>,
    /// The key columns in column order (the watch's keys).
    key_positions: Vec<usize>,
    /// The key columns in key order (the ids).
    progress_key_positions: Vec<usize>,
    /// The copy's start, in the ids.
    since: String,
    /// Whether the rows keep the chunk's position (a copy that reconciles).
    positioned: bool,
}

impl<E: Encoding> Assembler<E> {
    /// Notes the keys a change touches, when its table is being copied
    /// (`old` and `new` both `None`: a truncate). `subxid`: the change's
    /// xid inside a streamed transaction.
    pub(super) fn note_change(
        &mut self,
        subxid: Option<u32>,
        table: &Table,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) {
        let Some(watch) = &mut self.watch else { return };
        let name = table.qualified_name();
        if !watch.watches(&name) {
            return;
        }
        let touches: Vec<Touch> = if old.is_none() && new.is_none() {
            vec![Touch::Truncate]
        } else {
            // An update sends no TOASTed value it left unchanged.
            let complete = !new.is_some_and(|tuple| tuple.0.iter().any(|c| matches!(c, Column::Unchanged)));
            old.map(OldTuple::tuple)
                .into_iter()
                .chain(new)
                .filter_map(|tuple| key_of(table, tuple))
                .map(|key| Touch::Row { key, complete })
                .collect()
        };
        match (self.stream_xid, subxid, &self.open) {
            (Some(top), Some(subxid), _) => {
                touches.into_iter().for_each(|touch| watch.streamed(top, subxid, &name, touch));
            }
            (None, _, Some(open)) => {
                touches.into_iter().for_each(|touch| watch.committed(open.xid, &name, touch))
            }
            // Out of sequence: `emit` reports it.
            _ => {}
        }
    }

    /// Starts writing a chunk in its marker's transaction: checks its shape
    /// against the stream's, announces it, and works out which of its rows
    /// are stale. Its rows follow with [`Assembler::write_chunk_rows`].
    pub fn begin_chunk(
        &mut self,
        lsn: Lsn,
        chunk: &ChunkRead,
        out: &mut Vec<u8>,
    ) -> Result<ChunkPlace, AssembleError> {
        let table = table_of(&chunk.shape, &PrimaryKeys::default(), &chunk.types);
        if let Some(streamed) = self.relations.by_name(&table.schema, &table.name) {
            if !same_columns(streamed, &table) {
                return Err(AssembleError::ChunkShape { lsn, table: chunk.table.clone() });
            }
        }
        let encoding = self.encoding.clone();
        self.emit(lsn, None, out, RecordKind::Schema, |body| encoding.write_schema(body, &table))?;
        let stale = self
            .watch
            .as_ref()
            .map(|watch| watch.stale(&chunk.table, &chunk.snapshot))
            .filter(|stale| !stale.is_empty());
        // The stream's keys are in column order.
        let mut key_positions = chunk.key_positions.clone();
        key_positions.sort_unstable();
        if let Some(Stale::Keys { incomplete, .. }) = &stale {
            // Found before any row is written, so no part of the chunk reaches the sink.
            let unmergeable = !incomplete.is_empty()
                && chunk
                    .rows
                    .iter()
                    .flat_map(|piece| crate::lines::lines(piece))
                    .any(|row| row_key(row, &key_positions).is_some_and(|key| incomplete.contains(&key)));
            if unmergeable {
                return Err(AssembleError::ChunkUnmergeable { lsn, table: chunk.table.clone() });
            }
        }
        Ok(ChunkPlace {
            table,
            stale,
            key_positions,
            progress_key_positions: chunk.key_positions.clone(),
            since: chunk.progress.since.clone(),
            positioned: chunk.progress.reconcile,
        })
    }

    /// Writes a piece of a chunk's COPY text as `snapshot` changes of the
    /// marker's transaction, leaving out the stale rows (a transaction the
    /// chunk's query did not see changed their key: the stream has the newer version).
    pub fn write_chunk_rows(
        &mut self,
        lsn: Lsn,
        place: &ChunkPlace,
        piece: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ChunkWritten, AssembleError> {
        let Some(txn) = &self.open else {
            return Err(AssembleError::Sequence {
                lsn,
                what: "a chunk outside its marker's transaction".into(),
            });
        };
        let chunk = CopiedRows {
            table: &place.table,
            since: &place.since,
            positioned: place.positioned,
            key_positions: &place.progress_key_positions,
        };
        // Only a chunk with stale keys needs each row's key.
        let verdict = |row: &[u8]| match &place.stale {
            Some(stale) => {
                row_key(row, &place.key_positions).map_or(Verdict::Write, |key| stale.verdict(&key))
            }
            None => Verdict::Write,
        };
        write_copied_rows(&self.encoding, &txn.fields, lsn.into(), &chunk, piece, verdict, out).map_err(
            |error| match error {
                RowsError::Unmergeable => {
                    AssembleError::ChunkUnmergeable { lsn, table: place.table.qualified_name() }
                }
                RowsError::Shape(error) => AssembleError::Sequence { lsn, what: error.to_string() },
            },
        )
    }

    /// After the last chunk of a copy that reconciles: the line that has
    /// the destination drop what the copy did not write ([`Encoding::write_copy_end`]).
    pub fn end_copy(&self, place: &ChunkPlace, out: &mut Vec<u8>) {
        if let Some(txn) = &self.open {
            self.encoding.write_copy_end(&txn.fields, out, &place.table, &place.since);
        }
    }

    /// The chunk is written: what its snapshot saw is no longer needed, nor
    /// the table's changes once its last chunk is in.
    pub fn end_chunk(&mut self, chunk: &ChunkRead) {
        if let Some(watch) = &mut self.watch {
            watch.forget_seen(&chunk.snapshot);
            if chunk.progress.done {
                watch.unwatch(&chunk.table);
            }
        }
    }
}

/// A row's key as the watch keeps it: its key columns' values, in column order.
fn key_of(table: &Table, tuple: &Tuple) -> Option<Key> {
    let mut key = Key::with_capacity(32);
    for (column, value) in table.columns.iter().zip(&tuple.0) {
        if column.is_key {
            match value {
                Column::Text(text) | Column::Binary(text) => push_key_value(&mut key, text),
                // A null or unsent key value names no row of a copy.
                Column::Null | Column::Unchanged => return None,
            }
        }
    }
    Some(key)
}

/// The same columns, in the same order, of the same types.
fn same_columns(a: &Table, b: &Table) -> bool {
    a.columns.len() == b.columns.len()
        && a.columns.iter().zip(&b.columns).all(|(a, b)| a.name == b.name && a.ty.postgres == b.ty.postgres)
}
