//! Decoded pgoutput rows to the change JSON. Pure: no I/O.
//!
//! ```text
//!  Relation ──> relation::RelationCache (column names, keys, value kinds)
//!           └─> a schema line before the table's next change (its shape, by name)
//!  Insert/Update/Delete + Table ──> encode::write_row_body ──> "op":..,"key":..,"old":..,"new":..}
//!  Begin/Commit ──> encode::TxnFields ──> {"id":..,"lsn":..,"commit_lsn":..,"xid":..,"commit_time":..,
//!  column text ──> value::write_text_value ──> typed JSON
//! ```

pub mod encode;
pub mod json;
pub mod mirror_records;
pub mod outbox;
pub mod relation;
pub mod row;
pub mod time;
pub mod value;

use crate::position::Position;
use encode::{Op, ShapeError};
use relation::Table;
use row::{AppMessage, Column, OldTuple, Tuple};

/// How changes are written as lines: the change JSON ([`encode::JsonLines`])
/// for people, webhooks and changelogs, or COPY-text records
/// ([`mirror_records::MirrorRecords`]) for a Postgres mirror. A line is a header
/// (written when the change's place in its committed transaction is known)
/// followed by a body (written when the change arrives), ending in `\n`.
pub trait Encoding: Clone + Send + Sync + 'static {
    /// What every change of one transaction shares, rendered once.
    type Txn: Send + Sync + std::fmt::Debug;
    /// Whether its sink takes the lines of a large transaction before the
    /// transaction commits, to apply them while the rest is decoded (the
    /// contract's tentative chunks). Such a line is headed with
    /// [`Encoding::txn`] of its own change's position, since the commit's
    /// is not known yet: a mirror keeps it as the row's position, which
    /// lies after every earlier commit that wrote the row (the row was
    /// locked until then) and before the transaction's own commit.
    const TENTATIVE: bool = false;

    /// `commit`: where the transaction commits in the stream; `xid`: the
    /// source's id for it, if it has one; `commit_time`: microseconds since
    /// the Unix epoch.
    fn txn(&self, commit: Position, xid: Option<u64>, commit_time: Option<i64>) -> Self::Txn;
    fn write_header(&self, txn: &Self::Txn, out: &mut Vec<u8>, ordinal: u64, lsn: Position);
    /// The header of a schema line. A schema line goes just before the
    /// change with `ordinal` (the first of its table's new shape) and takes
    /// no ordinal itself, so that announcing a shape, which the server does
    /// again after every reconnect, never moves a change's id.
    fn write_schema_header(&self, txn: &Self::Txn, out: &mut Vec<u8>, ordinal: u64, lsn: Position);
    /// A table's shape (columns by name, types, key), ending the line.
    fn write_schema(&self, out: &mut Vec<u8>, table: &Table);
    fn write_row(
        &self,
        out: &mut Vec<u8>,
        table: &Table,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) -> Result<(), ShapeError>;
    fn write_truncate(&self, out: &mut Vec<u8>, table: &Table);
    fn write_message(&self, out: &mut Vec<u8>, message: &AppMessage<'_>);
    /// The header of a copied row: its id is not a position in the
    /// transaction but the row's own, which `write_id` writes (as JSON text).
    /// `positioned`: whether the row keeps its chunk's position; a copy into
    /// an emptied destination does not need it (see `source::postgres::chunks`).
    fn write_copied_header(
        &self,
        txn: &Self::Txn,
        out: &mut Vec<u8>,
        lsn: Position,
        positioned: bool,
        write_id: impl FnOnce(&mut Vec<u8>),
    );
    /// The line that ends a reconciling copy of `table` (`TableCopy::reconcile`):
    /// the destination's rows older than `since` that the copy did not write
    /// are gone from the source. Only a mirror holds rows to remove; a
    /// change stream has nothing to say.
    fn write_copy_end(&self, _txn: &Self::Txn, _out: &mut Vec<u8>, _table: &Table, _since: &str) {}
    /// The body of a copied row (`snapshot`), from its COPY text (fields in
    /// the table's column order, escaped, no newline), ending the line.
    fn write_copied_row(&self, out: &mut Vec<u8>, table: &Table, row: &[u8]) -> Result<(), ShapeError> {
        let tuple = Tuple(
            row.split(|b| *b == b'\t')
                .map(|field| match mirror_records::unescape(field) {
                    None => Column::Null,
                    Some(value) => Column::Text(bytes::Bytes::copy_from_slice(&value)),
                })
                .collect(),
        );
        self.write_row(out, table, Op::Snapshot, None, Some(&tuple))
    }
}
