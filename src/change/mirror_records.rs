//! Mirror records: changes as lines of COPY text, for the Postgres sink.
//!
//! A mirror needs the column values in a form the sink database reads
//! fastest, and pgoutput already sends each value in PostgreSQL's text
//! form: escaped for COPY, it goes into a staging table with `COPY ... FROM
//! STDIN` unchanged. No JSON is written or parsed on this path.
//!
//! A record, fields separated by tabs, values escaped as COPY text (`\N` null):
//!
//! ```text
//!  commit_lsn  op  schema.table  old  toast  [old values...]  [new values...]
//! ```
//!
//! - `op`: `I` insert, `U` update, `D` delete, `T` truncate, `M` message
//!   (ignored by mirrors), `C` a row of a chunked copy (its values are the
//!   source's COPY text as read; its commit LSN is `\N` when the copy keeps
//!   no positions, see `source::postgres::chunks`), `R` the end of a copy that reconciles
//!   (its one value: the copy's start LSN; rows older than it that the copy
//!   did not write are to be removed), `S` the table's shape: it comes before the first
//!   change of each shape, and the values of every later record of the
//!   table are in its column order.
//! - `old`: `-` none, `K` the old key (other old columns `\N`), `O` the full old row.
//! - `toast`: comma-separated 0-based positions of new columns whose TOASTed
//!   value did not change (their new value is `\N` and must be kept), or empty.
//! - Old values (when `old` is not `-`) and new values (for `I` and `U`) come
//!   in the order of the table's columns, as the Relation message gave them.
//! - An `S` record has the source's relation id in place of `old` (`0` when
//!   a copy announced the shape: only the stream's Relation messages tell
//!   a table's identity), then, after the empty toast field, four fields per
//!   column: name, type OID, type modifier, and `t` or `f` for a key column.

use super::Encoding;
use super::encode::{Op, ShapeError, check_shape};
use super::relation::{PostgresType, Table};
use super::row::{AppMessage, Column, OldTuple, Tuple};
use crate::position::Position;

#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorRecords;

impl Encoding for MirrorRecords {
    /// The commit LSN, as text (written without `format!`: a tentative
    /// line makes one per change).
    type Txn = Vec<u8>;
    const TENTATIVE: bool = true;

    fn txn(&self, commit_lsn: Position, _xid: Option<u64>, _commit_time: Option<i64>) -> Vec<u8> {
        let mut text = Vec::with_capacity(17);
        commit_lsn.write_text(&mut text);
        text
    }

    fn write_header(&self, txn: &Vec<u8>, out: &mut Vec<u8>, _ordinal: u64, _lsn: Position) {
        out.extend_from_slice(txn);
        out.push(b'\t');
    }

    fn write_schema_header(&self, txn: &Vec<u8>, out: &mut Vec<u8>, ordinal: u64, lsn: Position) {
        self.write_header(txn, out, ordinal, lsn);
    }

    /// A mirror needs no id: a row's key names it. A row that keeps no
    /// position has `\N` (NULL) for its commit LSN, which becomes its `_walpipe_lsn`.
    fn write_copied_header(
        &self,
        txn: &Vec<u8>,
        out: &mut Vec<u8>,
        lsn: Position,
        positioned: bool,
        _write_id: impl FnOnce(&mut Vec<u8>),
    ) {
        if positioned {
            self.write_header(txn, out, 0, lsn);
        } else {
            out.extend_from_slice(b"\\N\t");
        }
    }

    fn write_schema(&self, out: &mut Vec<u8>, table: &Table) {
        out.extend_from_slice(b"S\t");
        escape_table(out, table);
        out.extend_from_slice(format!("\t{}\t", table.id).as_bytes());
        for column in &table.columns {
            out.push(b'\t');
            escape(out, column.name.as_bytes());
            // A type a Postgres destination cannot declare exactly is text (OID 25).
            let postgres = column.ty.postgres.unwrap_or(PostgresType { oid: 25, modifier: -1 });
            let fields = format!(
                "\t{}\t{}\t{}",
                postgres.oid,
                postgres.modifier,
                if column.is_key { 't' } else { 'f' }
            );
            out.extend_from_slice(fields.as_bytes());
        }
        out.push(b'\n');
    }

    fn write_row(
        &self,
        out: &mut Vec<u8>,
        table: &Table,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) -> Result<(), ShapeError> {
        check_shape(table, old, new)?;
        out.push(match op {
            Op::Insert | Op::Snapshot => b'I',
            Op::Update => b'U',
            Op::Delete => b'D',
        });
        out.push(b'\t');
        escape_table(out, table);
        out.push(b'\t');
        out.push(match old {
            None => b'-',
            Some(OldTuple::Key(_)) => b'K',
            Some(OldTuple::Full(_)) => b'O',
        });
        out.push(b'\t');
        if let Some(tuple) = new {
            let mut first = true;
            for (position, column) in tuple.0.iter().enumerate() {
                if matches!(column, Column::Unchanged) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(position.to_string().as_bytes());
                }
            }
        }
        for tuple in old.map(OldTuple::tuple).into_iter().chain(new) {
            for column in &tuple.0 {
                out.push(b'\t');
                match column {
                    Column::Text(text) => escape(out, text),
                    // Values the server did not send (unchanged TOAST) or sent as binary
                    // (walpipe asks for text) carry no text form.
                    Column::Null | Column::Unchanged | Column::Binary(_) => out.extend_from_slice(b"\\N"),
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }

    fn write_truncate(&self, out: &mut Vec<u8>, table: &Table) {
        out.extend_from_slice(b"T\t");
        escape_table(out, table);
        out.extend_from_slice(b"\t-\t\n");
    }

    fn write_copy_end(&self, txn: &Vec<u8>, out: &mut Vec<u8>, table: &Table, since: &str) {
        self.write_header(txn, out, 0, Position::new(0));
        out.extend_from_slice(b"R\t");
        escape_table(out, table);
        out.extend_from_slice(b"\t-\t\t");
        out.extend_from_slice(since.as_bytes());
        out.push(b'\n');
    }

    fn write_message(&self, out: &mut Vec<u8>, _message: &AppMessage<'_>) {
        out.extend_from_slice(b"M\t\t-\t\n");
    }

    /// A `C` record whose values are the COPY text as read: the source's
    /// COPY escaping is the records' own, so nothing is decoded.
    fn write_copied_row(&self, out: &mut Vec<u8>, table: &Table, row: &[u8]) -> Result<(), ShapeError> {
        let got = crate::lines::count(b'\t', row) + 1;
        if got != table.columns.len() {
            return Err(ShapeError { table: table.qualified_name(), got, expected: table.columns.len() });
        }
        out.extend_from_slice(b"C\t");
        escape_table(out, table);
        out.extend_from_slice(b"\t-\t\t");
        out.extend_from_slice(row);
        out.push(b'\n');
        Ok(())
    }
}

/// The table as `schema.name`, escaped: [`Table`] keeps it, so no row
/// escapes it again.
fn escape_table(out: &mut Vec<u8>, table: &Table) {
    out.extend_from_slice(&table.qualified_copy);
}

/// False when `value` has no byte that COPY text escapes, checked eight
/// bytes at a time: most values have none, and are short (a byte-at-a-time
/// test cost more than the rest of a row's encoding). True also for the
/// other control bytes below 14, which the exact loop then passes through.
fn may_need_escaping(value: &[u8]) -> bool {
    any_word(value, word_may_need_escaping)
}

/// Whether `value` has a backslash, tested as [`may_need_escaping`] tests.
fn has_backslash(value: &[u8]) -> bool {
    any_word(value, word_has_backslash)
}

/// Whether `test` holds for a word of `value`'s bytes: eight at a time, a
/// short value in one word, and the last bytes of a long one in its last
/// eight bytes (without a loop over them).
#[inline(always)]
fn any_word(value: &[u8], test: impl Fn(u64) -> bool) -> bool {
    let len = value.len();
    if len < 8 {
        return test(short_word(value));
    }
    let mut words = value.chunks_exact(8);
    if words.by_ref().any(|word| test(word_at(word, 0))) {
        return true;
    }
    !words.remainder().is_empty() && test(word_at(value, len - 8))
}

/// The eight bytes of `bytes` from `at`, as one word.
fn word_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// The bytes of a value shorter than eight in one word, for a test of
/// whether any of them is special: a byte may appear twice, and the rest
/// are spaces, which are not.
fn short_word(value: &[u8]) -> u64 {
    let len = value.len();
    let half = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().unwrap_or_default());
    match len {
        0 => u64::from_le_bytes([b' '; 8]),
        1..=3 => u64::from_le_bytes([value[0], value[len / 2], value[len - 1], b' ', b' ', b' ', b' ', b' ']),
        _ => u64::from(half(0)) | u64::from(half(len - 4)) << 32,
    }
}

/// Whether a byte of `word` is below 14 (tab, newline and carriage return
/// are 9, 10, 13) or is a backslash: the high bit of such a byte's lane is
/// set in the masks below.
fn word_may_need_escaping(word: u64) -> bool {
    let control = word.wrapping_sub(14 * ONES) & !word & HIGH_BITS;
    control | backslashes(word) != 0
}

/// Whether a byte of `word` is a backslash.
fn word_has_backslash(word: u64) -> bool {
    backslashes(word) != 0
}

/// The high bit of each lane of `word` that holds a backslash (and maybe
/// of lanes above one that does).
fn backslashes(word: u64) -> u64 {
    let differences = word ^ (u64::from(b'\\') * ONES);
    differences.wrapping_sub(ONES) & !differences & HIGH_BITS
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH_BITS: u64 = ONES << 7;

/// COPY text escaping: backslash, newline, carriage return and tab.
#[inline]
pub fn escape(out: &mut Vec<u8>, value: &[u8]) {
    if may_need_escaping(value) {
        escape_bytes(out, value);
    } else {
        out.extend_from_slice(value);
    }
}

/// [`escape`] of a value that may have a byte to escape.
fn escape_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let mut start = 0;
    for (i, &byte) in value.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&value[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&value[start..]);
}

/// The inverse of [`escape`] for one COPY text field; `None` for `\N` (NULL).
#[inline(always)]
pub fn unescape(field: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if field == b"\\N" {
        return None;
    }
    // Nearly every value has no backslash, which this finds fastest (an
    // escaped value holds no tab, newline or carriage return).
    if !has_backslash(field) {
        return Some(std::borrow::Cow::Borrowed(field));
    }
    Some(std::borrow::Cow::Owned(unescape_bytes(field)))
}

/// [`unescape`] of a field that has a backslash.
fn unescape_bytes(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'v') => 0x0b,
            Some(&other) => other,
            None => b'\\',
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::relation::{ColumnType, TableColumn};
    use crate::change::value::{Scalar, ValueKind};
    use bytes::Bytes;

    fn table() -> Table {
        let column = |name: &str, is_key| {
            let postgres = Some(PostgresType { oid: 25, modifier: -1 });
            let ty = ColumnType { name: "text".into(), kind: ValueKind::Scalar(Scalar::Text), postgres };
            TableColumn::new(name, is_key, ty)
        };
        Table::new(1, "public", "t", vec![column("id", true), column("body", false), column("note", false)])
    }

    fn text(value: &str) -> Column {
        Column::Text(Bytes::from(value.to_string()))
    }

    #[test]
    fn records_escape_values_and_mark_unchanged_toast() {
        let mut out = Vec::new();
        let txn = MirrorRecords.txn(Position::new(0x10), Some(1), None);
        MirrorRecords.write_header(&txn, &mut out, 0, Position::new(8));
        let new = Tuple(vec![text("1"), Column::Unchanged, text("tab\there\nnew\\line")]);
        let old = OldTuple::Key(Tuple(vec![text("0"), Column::Null, Column::Null]));
        MirrorRecords.write_row(&mut out, &table(), Op::Update, Some(&old), Some(&new)).expect("shape");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "0/10\tU\tpublic.t\tK\t1\t0\t\\N\t\\N\t1\t\\N\ttab\\there\\nnew\\\\line\n"
        );
    }

    #[test]
    fn only_values_with_special_bytes_take_the_slow_path() {
        for special in [b'\\', b'\n', b'\r', b'\t'] {
            for len in 1..=24 {
                for at in 0..len {
                    let mut value = vec![b'a'; len];
                    value[at] = special;
                    assert!(may_need_escaping(&value), "{special} at {at} of {len}");
                    assert_eq!(has_backslash(&value), special == b'\\', "{special} at {at} of {len}");
                }
            }
        }
        // Bytes just above and below the ones that matter, and UTF-8.
        for value in [
            &b"order number 12345"[..],
            b"2026-12-05 21:00:00.123456+00",
            b"[]]]",
            "h\u{e9}llo w\u{f6}rld".as_bytes(),
            b"",
        ] {
            assert!(!may_need_escaping(value), "{value:?}");
        }
        let mut out = Vec::new();
        escape(&mut out, b"a\tb\\c\x01");
        assert_eq!(out, b"a\\tb\\\\c\x01");
    }

    #[test]
    fn unescape_inverts_escape() {
        for value in ["plain", "tab\there", "new\nline\r", "back\\slash", ""] {
            let mut escaped = Vec::new();
            escape(&mut escaped, value.as_bytes());
            assert_eq!(unescape(&escaped).as_deref(), Some(value.as_bytes()));
        }
        assert_eq!(unescape(b"\\N"), None);
    }

    #[test]
    fn a_copied_row_passes_through_as_a_record_of_the_same_values() {
        let values = [Some("7"), Some("tab\there\\"), None];
        let mut row = Vec::new();
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                row.push(b'\t');
            }
            match value {
                Some(text) => escape(&mut row, text.as_bytes()),
                None => row.extend_from_slice(b"\\N"),
            }
        }
        let tuple = Tuple(
            values
                .iter()
                .map(|v| v.map_or(Column::Null, |t| Column::Text(Bytes::from(t.to_string()))))
                .collect(),
        );
        let (mut copied, mut encoded) = (Vec::new(), Vec::new());
        MirrorRecords.write_copied_row(&mut copied, &table(), &row).expect("shape");
        MirrorRecords.write_row(&mut encoded, &table(), Op::Snapshot, None, Some(&tuple)).expect("shape");
        // The same record but for its op: C (a copied row) where the decoded row says I.
        assert_eq!(copied.first(), Some(&b'C'));
        assert_eq!(String::from_utf8_lossy(&copied[1..]), String::from_utf8_lossy(&encoded[1..]));
        assert!(MirrorRecords.write_copied_row(&mut copied, &table(), b"1\t2").is_err(), "too narrow");
    }

    #[test]
    fn a_copied_row_keeps_its_position_only_when_asked() {
        let (mut kept, mut none) = (Vec::new(), Vec::new());
        let txn = MirrorRecords.txn(Position::new(0x90), None, None);
        MirrorRecords.write_copied_header(&txn, &mut kept, Position::new(0x90), true, |_| {});
        MirrorRecords.write_copied_header(&txn, &mut none, Position::new(0x90), false, |_| {});
        assert_eq!(kept, b"0/90\t");
        assert_eq!(none, b"\\N\t", "NULL: the destination's _walpipe_lsn stays NULL");
    }

    #[test]
    fn the_end_of_a_reconciling_copy_names_its_table_and_start() {
        let mut out = Vec::new();
        MirrorRecords.write_copy_end(
            &MirrorRecords.txn(Position::new(0x90), None, None),
            &mut out,
            &table(),
            "0/5",
        );
        let line = String::from_utf8(out).expect("utf8");
        let name = table().qualified_name();
        assert_eq!(line, format!("0/90\tR\t{name}\t-\t\t0/5\n"));
        // A change stream has no rows to remove: nothing is written.
        let mut json = Vec::new();
        let txn = crate::change::encode::JsonLines.txn(Position::new(0x90), Some(1), None);
        crate::change::encode::JsonLines.write_copy_end(&txn, &mut json, &table(), "0/5");
        assert!(json.is_empty());
    }

    #[test]
    fn a_shape_names_its_relation_id_and_columns() {
        let mut out = Vec::new();
        MirrorRecords.write_schema(&mut out, &table());
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "S\tpublic.t\t1\t\tid\t25\t-1\tt\tbody\t25\t-1\tf\tnote\t25\t-1\tf\n"
        );
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error() {
        let mut out = Vec::new();
        let short = Tuple(vec![text("1")]);
        assert!(MirrorRecords.write_row(&mut out, &table(), Op::Insert, None, Some(&short)).is_err());
    }
}
