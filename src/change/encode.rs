//! The change as one JSON line (docs/src/reference/change-format.md).
//!
//! A line is written in two parts: the header, which depends on where the
//! change lands in its transaction (`id`, `lsn`, `commit_lsn`, `xid`,
//! `commit_time`), and the body (`op`, `table`, rows). Streamed transactions
//! learn their commit LSN only at the end, so their bodies are written as
//! they arrive and the headers at commit; both halves are plain bytes, so
//! the end of a large transaction costs a copy, not a re-encode.
//!
//! `id` is `<commit_lsn>:<ordinal>`, with the ordinal counting the changes
//! of the transaction that reach the output (from 0), so the same change
//! always gets the same id, whether the server streamed the transaction or
//! not.

use super::json::{write_plain_str, write_str, write_u64};
use super::relation::Table;
use super::row::{AppMessage, Column, OldTuple, Tuple};
use super::time::format_rfc3339;
use super::value::{write_binary_value, write_text_value};
use crate::position::Position;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A row as a chunk of a copy read it (upserted by a mirror).
    Snapshot,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Snapshot => "snapshot",
        }
    }
}

/// A row that does not match its table's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a row of {table} has {got} columns but its Relation message describes {expected}")]
pub struct ShapeError {
    pub table: String,
    pub got: usize,
    pub expected: usize,
}

/// What every change of one transaction shares, pre-rendered.
#[derive(Debug, Clone)]
pub struct TxnFields {
    pub commit_lsn: Position,
    /// `,"commit_lsn":"..","xid":..,"commit_time":"..",`
    shared: Vec<u8>,
}

impl TxnFields {
    pub fn new(commit_lsn: Position, xid: Option<u64>, commit_time: Option<i64>) -> TxnFields {
        let mut shared = Vec::with_capacity(96);
        shared.extend_from_slice(b",\"commit_lsn\":");
        write_plain_str(&mut shared, &commit_lsn.to_string());
        shared.extend_from_slice(b",\"xid\":");
        match xid {
            Some(xid) => shared.extend_from_slice(xid.to_string().as_bytes()),
            None => shared.extend_from_slice(b"null"),
        }
        shared.extend_from_slice(b",\"commit_time\":");
        match commit_time {
            Some(time) => write_plain_str(&mut shared, &format_rfc3339(time)),
            None => shared.extend_from_slice(b"null"),
        }
        shared.push(b',');
        TxnFields { commit_lsn, shared }
    }

    /// `{"id":..,"lsn":..,"commit_lsn":..,"xid":..,"commit_time":..,`
    pub fn write_header(&self, out: &mut Vec<u8>, ordinal: u64, lsn: Position) {
        self.write_id_and_lsn(out, ordinal, "", lsn);
        out.extend_from_slice(&self.shared);
    }

    /// `{"id":"<commit_lsn>:<ordinal><suffix>","lsn":"<lsn>"`, by hand: two
    /// per change, and the formatting machinery cost more than the rest.
    fn write_id_and_lsn(&self, out: &mut Vec<u8>, ordinal: u64, suffix: &str, lsn: Position) {
        out.extend_from_slice(b"{\"id\":\"");
        self.commit_lsn.write_text(out);
        out.push(b':');
        write_u64(out, ordinal);
        out.extend_from_slice(suffix.as_bytes());
        out.extend_from_slice(b"\",\"lsn\":\"");
        lsn.write_text(out);
        out.push(b'"');
    }

    /// As [`TxnFields::write_header`], with the id `write_id` writes (JSON text).
    pub fn write_header_with_id(
        &self,
        out: &mut Vec<u8>,
        lsn: Position,
        write_id: impl FnOnce(&mut Vec<u8>),
    ) {
        out.extend_from_slice(b"{\"id\":");
        write_id(out);
        out.extend_from_slice(b",\"lsn\":\"");
        lsn.write_text(out);
        out.push(b'"');
        out.extend_from_slice(&self.shared);
    }

    /// As [`TxnFields::write_header`], with the id `<commit_lsn>:<ordinal>:schema`.
    pub fn write_schema_header(&self, out: &mut Vec<u8>, ordinal: u64, lsn: Position) {
        self.write_id_and_lsn(out, ordinal, ":schema", lsn);
        out.extend_from_slice(&self.shared);
    }
}

/// The change JSON (docs/src/reference/change-format.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl super::Encoding for JsonLines {
    type Txn = TxnFields;

    fn txn(&self, commit_lsn: Position, xid: Option<u64>, commit_time: Option<i64>) -> TxnFields {
        TxnFields::new(commit_lsn, xid, commit_time)
    }

    fn write_header(&self, txn: &TxnFields, out: &mut Vec<u8>, ordinal: u64, lsn: Position) {
        txn.write_header(out, ordinal, lsn);
    }

    fn write_schema_header(&self, txn: &TxnFields, out: &mut Vec<u8>, ordinal: u64, lsn: Position) {
        txn.write_schema_header(out, ordinal, lsn);
    }

    fn write_copied_header(
        &self,
        txn: &TxnFields,
        out: &mut Vec<u8>,
        lsn: Position,
        _positioned: bool,
        write_id: impl FnOnce(&mut Vec<u8>),
    ) {
        txn.write_header_with_id(out, lsn, write_id);
    }

    fn write_schema(&self, out: &mut Vec<u8>, table: &Table) {
        write_schema_body(out, table);
    }

    fn write_row(
        &self,
        out: &mut Vec<u8>,
        table: &Table,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
    ) -> Result<(), ShapeError> {
        write_row_body(out, table, op, old, new)
    }

    fn write_truncate(&self, out: &mut Vec<u8>, table: &Table) {
        write_truncate_body(out, table);
    }

    fn write_message(&self, out: &mut Vec<u8>, message: &AppMessage<'_>) {
        write_message_body(out, message);
    }
}

/// Fails unless every row sent has as many columns as the table.
pub fn check_shape(table: &Table, old: Option<&OldTuple>, new: Option<&Tuple>) -> Result<(), ShapeError> {
    for tuple in old.map(OldTuple::tuple).into_iter().chain(new) {
        if tuple.0.len() != table.columns.len() {
            return Err(ShapeError {
                table: table.qualified_name(),
                got: tuple.0.len(),
                expected: table.columns.len(),
            });
        }
    }
    Ok(())
}

/// The body of an insert, update or delete, ending the line.
pub fn write_row_body(
    out: &mut Vec<u8>,
    table: &Table,
    op: Op,
    old: Option<&OldTuple>,
    new: Option<&Tuple>,
) -> Result<(), ShapeError> {
    check_shape(table, old, new)?;
    out.extend_from_slice(b"\"op\":\"");
    out.extend_from_slice(op.as_str().as_bytes());
    out.extend_from_slice(b"\",\"table\":");
    out.extend_from_slice(&table.qualified_json);

    // The key names the row the change applies to: the old key when the
    // server sent one (a key change, or a delete), else the new row's key.
    out.extend_from_slice(b",\"key\":");
    match old.map(OldTuple::tuple).or(new) {
        Some(tuple) if table.columns.iter().any(|c| c.is_key) => write_row(out, table, tuple, true),
        _ => out.extend_from_slice(b"null"),
    }

    // With only the old key (`K`), the other old columns are nulls standing
    // for "not sent": print the key alone rather than invent them.
    out.extend_from_slice(b",\"old\":");
    match old {
        Some(OldTuple::Key(tuple)) => write_row(out, table, tuple, true),
        Some(OldTuple::Full(tuple)) => write_row(out, table, tuple, false),
        None => out.extend_from_slice(b"null"),
    }

    out.extend_from_slice(b",\"new\":");
    match new {
        Some(tuple) => write_row(out, table, tuple, false),
        None => out.extend_from_slice(b"null"),
    }

    out.extend_from_slice(b",\"unchanged_toast\":[");
    if let Some(tuple) = new {
        let mut first = true;
        for (column, value) in table.columns.iter().zip(&tuple.0) {
            if matches!(value, Column::Unchanged) {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_str(out, &column.name);
            }
        }
    }
    out.extend_from_slice(b"]}\n");
    Ok(())
}

/// The body of a schema line, ending it:
/// `"op":"schema","table":..,"columns":[{"name":..,"type":..,"key":..},...]}`.
pub fn write_schema_body(out: &mut Vec<u8>, table: &Table) {
    out.extend_from_slice(b"\"op\":\"schema\",\"table\":");
    out.extend_from_slice(&table.qualified_json);
    out.extend_from_slice(b",\"columns\":[");
    for (i, column) in table.columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_str(out, &column.name);
        out.extend_from_slice(b",\"type\":");
        write_str(out, &column.ty.name);
        out.extend_from_slice(if column.is_key { b",\"key\":true}" } else { b",\"key\":false}" });
    }
    out.push(b']');
    if let Some(before) = &table.renamed_from {
        out.extend_from_slice(b",\"renamed_from\":");
        write_str(out, before);
    }
    out.extend_from_slice(b"}\n");
}

/// The body of a TRUNCATE of one table, ending the line.
pub fn write_truncate_body(out: &mut Vec<u8>, table: &Table) {
    out.extend_from_slice(b"\"op\":\"truncate\",\"table\":");
    out.extend_from_slice(&table.qualified_json);
    out.extend_from_slice(b",\"key\":null,\"old\":null,\"new\":null,\"unchanged_toast\":[]}\n");
}

/// The body of a logical decoding message, ending the line. The content is
/// written as text when it is UTF-8, else as PostgreSQL prints bytea.
pub fn write_message_body(out: &mut Vec<u8>, message: &AppMessage<'_>) {
    out.extend_from_slice(b"\"op\":\"message\",\"table\":null,\"prefix\":");
    write_str(out, message.prefix);
    out.extend_from_slice(b",\"content\":");
    match std::str::from_utf8(message.content) {
        Ok(text) => write_str(out, text),
        Err(_) => write_binary_value(out, message.content),
    }
    out.extend_from_slice(b",\"transactional\":");
    out.extend_from_slice(if message.transactional { b"true" } else { b"false" });
    out.extend_from_slice(b"}\n");
}

/// `{"col":value,...}`: all sent columns, or only the key columns.
fn write_row(out: &mut Vec<u8>, table: &Table, tuple: &Tuple, key_only: bool) {
    out.push(b'{');
    let mut first = true;
    for (column, value) in table.columns.iter().zip(&tuple.0) {
        if key_only && !column.is_key {
            continue;
        }
        if matches!(value, Column::Unchanged) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&column.json_key);
        match value {
            Column::Null => out.extend_from_slice(b"null"),
            Column::Text(text) => write_text_value(out, column.ty.kind, text),
            Column::Binary(bytes) => write_binary_value(out, bytes),
            Column::Unchanged => {}
        }
    }
    out.push(b'}');
}

/// Rows read by the initial copy (COPY text) written as `snapshot` changes.
/// Their `commit_lsn` is the slot's consistent point and their id
/// `<consistent point>:<schema.table>:<ordinal>`, the ordinal counting rows
/// in key order, so the same snapshot always gives the same ids.
#[derive(Debug)]
pub struct SnapshotRows {
    qualified: String,
    table_json: Vec<u8>,
    /// Per column: `"name":`, how its values are written, whether it is in the key.
    columns: Vec<(Vec<u8>, super::value::ValueKind, bool)>,
}

impl SnapshotRows {
    /// `columns`: (name, how its values are written, in the key), in the order of the copied rows.
    pub fn new(
        schema: &str,
        name: &str,
        columns: &[(String, super::value::ValueKind, bool)],
    ) -> SnapshotRows {
        let qualified = format!("{schema}.{name}");
        let mut table_json = Vec::new();
        write_str(&mut table_json, &qualified);
        let columns = columns
            .iter()
            .map(|(name, kind, is_key)| {
                let mut key = Vec::new();
                write_str(&mut key, name);
                key.push(b':');
                (key, *kind, *is_key)
            })
            .collect();
        SnapshotRows { qualified, table_json, columns }
    }

    /// Writes one COPY text row as a change line.
    pub fn write_line(
        &self,
        out: &mut Vec<u8>,
        row: &[u8],
        commit_lsn: Position,
        ordinal: u64,
    ) -> Result<(), ShapeError> {
        let fields: Vec<&[u8]> = row.split(|b| *b == b'\t').collect();
        if fields.len() != self.columns.len() {
            return Err(ShapeError {
                table: self.qualified.clone(),
                got: fields.len(),
                expected: self.columns.len(),
            });
        }
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &format!("{commit_lsn}:{}:{ordinal}", self.qualified));
        let lsn = commit_lsn.to_string();
        out.extend_from_slice(b",\"lsn\":");
        write_plain_str(out, &lsn);
        out.extend_from_slice(b",\"commit_lsn\":");
        write_plain_str(out, &lsn);
        out.extend_from_slice(b",\"xid\":null,\"commit_time\":null,\"op\":\"snapshot\",\"table\":");
        out.extend_from_slice(&self.table_json);
        for (label, key_only) in [(&b",\"key\":"[..], true), (&b",\"old\":null,\"new\":"[..], false)] {
            out.extend_from_slice(label);
            out.push(b'{');
            let mut first = true;
            for ((json_key, kind, is_key), field) in self.columns.iter().zip(&fields) {
                if key_only && !is_key {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(json_key);
                match super::mirror_records::unescape(field) {
                    None => out.extend_from_slice(b"null"),
                    Some(text) => super::value::write_text_value(out, *kind, &text),
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"unchanged_toast\":[]}\n");
        Ok(())
    }
}
