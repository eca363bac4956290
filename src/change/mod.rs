//! Decoded pgoutput rows to the change JSON of SPEC section 2. Pure: no I/O.
//!
//! ```text
//!  Relation ──> relation::RelationCache (column names, keys, value kinds)
//!  Insert/Update/Delete + Table ──> encode::write_row_body ──> "op":..,"key":..,"old":..,"new":..}
//!  Begin/Commit ──> encode::TxnFields ──> {"id":..,"lsn":..,"commit_lsn":..,"xid":..,"commit_time":..,
//!  column text ──> value::write_text_value ──> typed JSON
//! ```

pub mod encode;
pub mod json;
pub mod mirror;
pub mod outbox;
pub mod relation;
pub mod value;

use crate::lsn::Lsn;
use crate::protocol::pgoutput::{LogicalMessage, OldTuple, Tuple};
use encode::{Op, ShapeError};
use relation::Table;

/// How changes are written as lines: the change JSON ([`encode::JsonLines`])
/// for people, webhooks and changelogs, or COPY-text records
/// ([`mirror::MirrorRecords`]) for a Postgres mirror. A line is a header
/// (written when the change's place in its committed transaction is known)
/// followed by a body (written when the change arrives), ending in `\n`.
pub trait Encoding: Clone + Send + Sync + 'static {
    /// What every change of one transaction shares, rendered once.
    type Txn: Send + std::fmt::Debug;

    fn txn(&self, commit_lsn: Lsn, xid: Option<u32>, commit_time: Option<i64>) -> Self::Txn;
    fn write_header(&self, txn: &Self::Txn, out: &mut Vec<u8>, ordinal: u64, lsn: Lsn);
    fn write_row(
        &self,
        out: &mut Vec<u8>,
        table: &Table,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) -> Result<(), ShapeError>;
    fn write_truncate(&self, out: &mut Vec<u8>, table: &Table);
    fn write_message(&self, out: &mut Vec<u8>, message: &LogicalMessage);
}
