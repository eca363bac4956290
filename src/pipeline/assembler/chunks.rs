//! The assembler's side of a chunked copy: noting the keys that committed
//! transactions change in the tables being copied, and writing a chunk's
//! rows in place of its marker (the merge rule is in `crate::chunked`).

use bytes::Bytes;

use super::{AssembleError, Assembler, RecordKind};
use crate::change::Encoding;
use crate::change::encode::Op;
use crate::change::mirror_records::unescape;
use crate::change::relation::{PrimaryKeys, Table};
use crate::chunked::keyset::{fields, row_key};
use crate::chunked::reader::ChunkRead;
use crate::chunked::watch::{Key, push_key_value};
use crate::lsn::Lsn;
use crate::protocol::pgoutput::{Column, OldTuple, Tuple};

/// What a chunk put in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkWritten {
    pub rows: usize,
    /// Rows left out: a transaction the chunk's query did not see changed their key.
    pub stale: usize,
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
        let keys: Vec<Option<Key>> = if old.is_none() && new.is_none() {
            vec![None]
        } else {
            old.map(OldTuple::tuple)
                .into_iter()
                .chain(new)
                .filter_map(|tuple| key_of(table, tuple))
                .map(Some)
                .collect()
        };
        match (self.stream_xid, subxid, &self.open) {
            (Some(top), Some(subxid), _) => {
                keys.into_iter().for_each(|key| watch.streamed(top, subxid, &name, key))
            }
            (None, _, Some(open)) => keys.into_iter().for_each(|key| watch.committed(open.xid, &name, key)),
            // Out of sequence: `emit` reports it.
            _ => {}
        }
    }

    /// Writes a chunk's rows, as `snapshot` changes of the marker's
    /// transaction, leaving out the rows whose key a transaction the
    /// chunk's query did not see has changed (the stream has the newer version).
    pub fn write_chunk(
        &mut self,
        lsn: Lsn,
        chunk: &ChunkRead,
        out: &mut Vec<u8>,
    ) -> Result<ChunkWritten, AssembleError> {
        let table = Table::from_message(&chunk.shape, &PrimaryKeys::default(), &chunk.types);
        if let Some(streamed) = self.relations.by_name(&table.schema, &table.name) {
            if !same_columns(streamed, &table) {
                return Err(AssembleError::ChunkShape { lsn, table: chunk.table.clone() });
            }
        }
        let encoding = self.encoding.clone();
        self.emit(lsn, None, out, RecordKind::Schema, |body| encoding.write_schema(body, &table))?;
        let stale = self.watch.as_ref().map(|watch| watch.stale(&chunk.table, &chunk.snapshot));
        // The stream's keys are in column order.
        let mut key_positions = chunk.key_positions.clone();
        key_positions.sort_unstable();
        let mut written = ChunkWritten { rows: 0, stale: 0 };
        for piece in &chunk.rows {
            for row in piece.split(|b| *b == b'\n').filter(|row| !row.is_empty()) {
                if let (Some(stale), Some(key)) = (&stale, row_key(row, &key_positions)) {
                    if stale.contains(&key) {
                        written.stale += 1;
                        continue;
                    }
                }
                let tuple = Tuple(
                    fields(row)
                        .map(|field| match unescape(field) {
                            None => Column::Null,
                            Some(value) => Column::Text(Bytes::copy_from_slice(&value)),
                        })
                        .collect(),
                );
                let mut shape = Ok(());
                self.emit(lsn, None, out, RecordKind::Change, |body| {
                    shape = encoding.write_row(body, &table, Op::Snapshot, None, Some(&tuple));
                })?;
                shape.map_err(|error| AssembleError::Sequence { lsn, what: error.to_string() })?;
                written.rows += 1;
            }
        }
        if let Some(watch) = &mut self.watch {
            watch.forget_seen(&chunk.snapshot);
            if chunk.progress.done {
                watch.unwatch(&chunk.table);
            }
        }
        Ok(written)
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
                Column::Null | Column::UnchangedToast => return None,
            }
        }
    }
    Some(key)
}

/// The same columns, in the same order, of the same types.
fn same_columns(a: &Table, b: &Table) -> bool {
    a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(a, b)| a.name == b.name && a.type_oid == b.type_oid && a.type_modifier == b.type_modifier)
}
