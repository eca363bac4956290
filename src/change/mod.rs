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
pub mod relation;
pub mod value;
