//! A binlog transaction as change lines. The binlog gives a transaction's
//! end only at its last event (the XID), while every line carries its
//! commit position: so the rows are held, already read into neutral
//! tuples, and written when the transaction commits.
//!
//! Invariants: a table's shape is announced (a schema line) before its
//! first row in each session and again whenever its columns change; rows
//! are matched to columns by the names the TABLE_MAP event gives
//! (`binlog_row_metadata=FULL`), never by position. Pure: no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::Encoding;
use crate::change::encode::Op;
use crate::change::relation::{Table, TableColumn};
use crate::change::row::{Column, OldTuple, Tuple};
use crate::position::Position;

use super::types::Format;

/// A table's shape as the binlog last described it.
#[derive(Debug)]
pub struct Shape {
    pub table: Table,
    pub formats: Vec<Format>,
}

impl Shape {
    /// This shape without the columns named in `removed`.
    pub fn without(&self, removed: &[String]) -> Shape {
        let kept: Vec<(String, Format, bool)> = self
            .table
            .columns
            .iter()
            .zip(&self.formats)
            .filter(|(c, _)| !removed.contains(&c.name))
            .map(|(c, f)| (c.name.clone(), f.clone(), c.is_key))
            .collect();
        Shape::new(self.table.id, &self.table.schema, &self.table.name, kept)
    }

    pub fn new(id: u32, schema: &str, name: &str, columns: Vec<(String, Format, bool)>) -> Shape {
        let formats = columns.iter().map(|(_, format, _)| format.clone()).collect();
        let columns = columns
            .into_iter()
            .map(|(name, format, is_key)| TableColumn::new(&name, is_key, format.column_type()))
            .collect();
        Shape { table: Table::new(id, schema, name, columns), formats }
    }

    /// Whether `other` is the same shape: the same name (a renamed table's
    /// shape is new) and the same columns (names, types, key).
    fn same_shape(&self, other: &Shape) -> bool {
        let column = |c: &TableColumn| (c.name.clone(), c.ty.name.clone(), c.is_key);
        self.table.schema == other.table.schema
            && self.table.name == other.table.name
            && self.table.columns.iter().map(column).eq(other.table.columns.iter().map(column))
    }
}

/// One row change of a transaction.
#[derive(Debug)]
pub struct RowChange {
    pub shape: Arc<Shape>,
    pub op: Op,
    /// The whole old row (`binlog_row_image=FULL`).
    pub old: Option<OldTuple>,
    pub new: Option<Tuple>,
}

/// A neutral tuple of text values (`None`: NULL).
pub fn tuple(values: Vec<Option<String>>) -> Tuple {
    Tuple(values.into_iter().map(|v| v.map_or(Column::Null, |text| Column::Text(text.into()))).collect())
}

/// The rows of the transaction being read, and the shapes announced so far.
#[derive(Default)]
pub struct Transactions {
    open: Option<Vec<RowChange>>,
    /// Shapes to announce at the next commit, rows or not (a DDL's).
    shapes: Vec<Arc<Shape>>,
    /// By table id: the shape last announced in this session.
    announced: HashMap<u32, Arc<Shape>>,
}

impl Transactions {
    pub fn begin(&mut self) {
        self.open = Some(Vec::new());
    }

    /// Announces `shape` at the next commit, before its rows if any.
    pub fn announce(&mut self, shape: Arc<Shape>) {
        self.shapes.push(shape);
    }

    /// The rows of the transaction being read.
    pub fn rows(&self) -> &[RowChange] {
        self.open.as_deref().unwrap_or_default()
    }

    /// Writes `shape`'s schema line now, in `txn`, unless it is the one last
    /// announced (a chunk's shape, before its rows).
    pub fn announce_now<E: Encoding>(
        &mut self,
        encoding: &E,
        txn: &E::Txn,
        shape: &Arc<Shape>,
        end: Position,
        out: &mut Vec<u8>,
    ) {
        self.announce_once(encoding, txn, shape, 0, end, out);
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Adds a row; a row outside BEGIN (a non-transactional table's
    /// statement) opens a transaction of its own.
    pub fn add(&mut self, change: RowChange) {
        self.open.get_or_insert_with(Vec::new).push(change);
    }

    /// Ends the transaction at `end`, writing its lines into `out`; returns
    /// how many changes it held.
    pub fn commit<E: Encoding>(
        &mut self,
        encoding: &E,
        end: Position,
        xid: Option<u64>,
        commit_micros: i64,
        out: &mut Vec<u8>,
    ) -> Result<usize, String> {
        let rows = self.open.take().unwrap_or_default();
        let txn = encoding.txn(end, xid, Some(commit_micros));
        for shape in std::mem::take(&mut self.shapes) {
            self.announce_once(encoding, &txn, &shape, 0, end, out);
        }
        for (ordinal, row) in rows.iter().enumerate() {
            let ordinal = ordinal as u64;
            let table = &row.shape.table;
            self.announce_once(encoding, &txn, &row.shape, ordinal, end, out);
            encoding.write_header(&txn, out, ordinal, end);
            encoding
                .write_row(out, table, row.op, row.old.as_ref(), row.new.as_ref())
                .map_err(|e| e.to_string())?;
        }
        Ok(rows.len())
    }

    /// Writes `shape`'s schema line unless it is the one last announced.
    /// Rows of one table id share one `Arc`, so the usual check is a pointer's.
    fn announce_once<E: Encoding>(
        &mut self,
        encoding: &E,
        txn: &E::Txn,
        shape: &Arc<Shape>,
        ordinal: u64,
        end: Position,
        out: &mut Vec<u8>,
    ) {
        let known = self
            .announced
            .get(&shape.table.id)
            .is_some_and(|last| Arc::ptr_eq(last, shape) || last.same_shape(shape));
        if !known {
            encoding.write_schema_header(txn, out, ordinal, end);
            encoding.write_schema(out, &shape.table);
        }
        self.announced.insert(shape.table.id, shape.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::encode::JsonLines;

    fn shape(columns: &[(&str, Format, bool)]) -> Arc<Shape> {
        Arc::new(Shape::new(
            7,
            "shop",
            "orders",
            columns.iter().map(|(n, f, k)| (n.to_string(), f.clone(), *k)).collect(),
        ))
    }

    #[test]
    fn a_shape_is_announced_once_per_session_and_again_when_it_changes() {
        let v1 = shape(&[("id", Format::Integer { bits: 32 }, true), ("note", Format::Text, false)]);
        let v2 = shape(&[("id", Format::Integer { bits: 32 }, true)]);
        let mut transactions = Transactions::default();
        let mut out = Vec::new();
        let insert = |shape: &Arc<Shape>, values: Vec<Option<String>>| RowChange {
            shape: shape.clone(),
            op: Op::Insert,
            old: None,
            new: Some(tuple(values)),
        };
        transactions.begin();
        transactions.add(insert(&v1, vec![Some("1".into()), Some("a".into())]));
        transactions.add(insert(&v1, vec![Some("2".into()), None]));
        transactions.add(insert(&v2, vec![Some("3".into())]));
        let end = Position::new(0x1_0000_0200);
        assert_eq!(transactions.commit(&JsonLines, end, None, 0, &mut out), Ok(3));
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "two schema lines and three changes: {text}");
        assert!(lines[0].contains(r#""op":"schema""#) && lines[3].contains(r#""op":"schema""#));
        assert!(lines[1].contains(r#""note":"a""#) && lines[2].contains(r#""note":null"#));
        assert!(lines[4].contains(r#""id":3"#) && !lines[4].contains("note"));
        assert!(!transactions.is_open());
    }
}
