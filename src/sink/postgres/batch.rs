//! Mirror records to a batch: the final state of each row, per table, as
//! staging rows in COPY text.
//!
//! Invariants:
//! - The final state of every key equals applying the batch's changes in
//!   order: a later change replaces an earlier one of the same key; an
//!   update that changes the key deletes the old key and upserts the new.
//! - An update with unchanged TOAST columns keeps the sink's values: if a
//!   change of the same key (or, for a key change, of the old key) is
//!   already pending, replacing it would lose them, so [`TableBatch::add`]
//!   asks the caller to apply the batch first ([`Admit::ApplyFirst`]).
//! - Values are never unescaped: the record's COPY text goes to the staging
//!   table as is (new rows may go in binary: `new_rows`).
//! - Rows go out in the order their keys first came, never in hash order
//!   (see [`TableBatch`] for what the sink pays otherwise).

use std::ops::Range;

use bytes::Bytes;
use indexmap::IndexMap;

use super::record::Record;

/// What to do with one row.
#[derive(Debug)]
enum RowOp {
    /// `values`: the new row. `toast`: kept columns. `moved_from`: the old key's values, for a key change keeping TOAST.
    Upsert { record: Record, values: Range<usize>, moved_from: Option<Range<usize>> },
    /// `values`: the old row (at least its key).
    Delete { record: Record, values: Range<usize> },
}

impl RowOp {
    /// A whole row to upsert: its record and where its values are; `None`
    /// for a delete, or a row that keeps TOAST values from the sink.
    fn whole_row(&self) -> Option<(&Record, &Range<usize>)> {
        match self {
            RowOp::Upsert { record, values, .. } if record.toast().is_empty() => Some((record, values)),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum Admit {
    Added,
    /// Apply the batch, then add the record (given back) again.
    ApplyFirst(Record),
}

/// Pending rows of one table, by key, in the order their keys first came.
///
/// The order is kept because the sink pays for any other: a destination's
/// primary key takes rows in the source's order (usually ascending keys)
/// on its rightmost page, but rows in hash order land all over the index.
/// A COPY of 500,000 rows cost the sink backend 0.91 s of CPU in the
/// source's order and 1.37 s shuffled (BENCHMARKS.md, 2026-12-06 (night)).
#[derive(Debug)]
pub struct TableBatch {
    rows: IndexMap<Bytes, RowOp, foldhash::fast::RandomState>,
    /// Every record added since the batch was last emptied was an insert.
    only_inserts: bool,
}

impl Default for TableBatch {
    fn default() -> Self {
        TableBatch { rows: IndexMap::default(), only_inserts: true }
    }
}

impl TableBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows are pending.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Adds an `I`, `U` or `D` record of a table `width` columns wide
    /// (copied rows, `C`, go their own way: `copied_in`).
    pub fn add(&mut self, record: Record, width: usize, key_positions: &[usize]) -> Result<Admit, String> {
        let (old, new) = match (record.op(), record.has_old()) {
            (b'I', false) => (None, Some(record.values(0, width))),
            (b'U', false) => (None, Some(record.values(0, width))),
            (b'U', true) => (Some(record.values(0, width)), Some(record.values(1, width))),
            (b'D', true) => (Some(record.values(0, width)), None),
            (op, _) => {
                return Err(format!(
                    "a mirror record with op {:?} and old flag {:?}",
                    op as char,
                    record.field(3)
                ));
            }
        };
        let expected = usize::from(old.is_some()) + usize::from(new.is_some());
        if record.value_count() != expected * width {
            return Err(format!(
                "a row of {} has {} values where its shape has {}: a shape record should have come first",
                String::from_utf8_lossy(record.table()),
                record.value_count(),
                expected * width
            ));
        }
        self.only_inserts &= record.op() == b'I';
        let keeps_toast = !record.toast().is_empty();
        let old_key = old.clone().map(|values| record.key(values, key_positions));
        let new_key = new.clone().map(|values| record.key(values, key_positions));
        let touched = [&old_key, &new_key];
        if keeps_toast
            && touched.iter().any(|key| key.as_ref().is_some_and(|key| self.rows.contains_key(key)))
        {
            return Ok(Admit::ApplyFirst(record));
        }
        match (old, old_key, new, new_key) {
            (_, Some(old_key), Some(values), Some(new_key)) if old_key != new_key => {
                let moved_from = keeps_toast.then(|| record.values(0, width));
                let delete = RowOp::Delete { record: record.clone(), values: record.values(0, width) };
                self.rows.insert(old_key, delete);
                self.rows.insert(new_key, RowOp::Upsert { record, values, moved_from });
            }
            (_, _, Some(values), Some(new_key)) => {
                self.rows.insert(new_key, RowOp::Upsert { record, values, moved_from: None });
            }
            (Some(values), Some(old_key), None, _) => {
                self.rows.insert(old_key, RowOp::Delete { record, values });
            }
            _ => return Err("a mirror record without rows".into()),
        }
        Ok(Admit::Added)
    }

    /// When the batch holds only inserts: each new row's record and where
    /// its values are, in the batch's order. The fast path for new rows
    /// (`new_rows`); if one exists already (a replay), its COPY fails on
    /// the key and the caller takes [`TableBatch::take_staging`] instead.
    pub fn inserts(&self) -> Option<impl Iterator<Item = (&Record, Range<usize>)>> {
        if !self.only_inserts || self.rows.is_empty() {
            return None;
        }
        Some(self.rows.values().filter_map(|op| match op {
            RowOp::Upsert { record, values, .. } => Some((record, values.clone())),
            RowOp::Delete { .. } => None,
        }))
    }

    /// When the batch holds at most `most` rows, each a whole new row to
    /// upsert (an insert, or an update that keeps no TOAST value): each
    /// row's fields, COPY text as the record has them, the columns then
    /// `_walpipe_lsn`. Such rows need only the guarded upsert, no staging.
    pub fn few_upserts<'a>(&'a self, most: usize) -> Option<Vec<Vec<&'a [u8]>>> {
        if !self.fits_few_upserts(most) {
            return None;
        }
        let fields = |(record, values): (&'a Record, &Range<usize>)| {
            values.clone().map(|field| record.field(field)).chain([record.commit_lsn()]).collect()
        };
        self.rows.values().map(|op| op.whole_row().map(fields)).collect()
    }

    /// Whether [`TableBatch::few_upserts`] gives the rows (without gathering them).
    pub fn fits_few_upserts(&self, most: usize) -> bool {
        (1..=most).contains(&self.rows.len()) && self.rows.values().all(|op| op.whole_row().is_some())
    }

    /// Forgets every pending row (after they were written).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.only_inserts = true;
    }

    /// The staging rows (COPY text) and how many of each kind, leaving the batch empty.
    pub fn take_staging(&mut self, key_positions: &[usize]) -> (Vec<u8>, Kinds) {
        self.only_inserts = true;
        let mut out = Vec::with_capacity(self.rows.len() * 128);
        let mut kinds = Kinds::default();
        for (_, op) in self.rows.drain(..) {
            let (record, values, kind, old) = match &op {
                RowOp::Upsert { record, values, moved_from } => {
                    let kind = match (record.toast().is_empty(), moved_from) {
                        (true, _) => b'u',
                        (false, None) => b't',
                        (false, Some(_)) => b'm',
                    };
                    (record, values.clone(), kind, moved_from.clone())
                }
                RowOp::Delete { record, values } => (record, values.clone(), b'd', None),
            };
            match kind {
                b'u' => kinds.upserts += 1,
                b't' => kinds.keeping_toast += 1,
                b'm' => kinds.moves += 1,
                _ => kinds.deletes += 1,
            }
            for (i, field) in values.enumerate() {
                if i > 0 {
                    out.push(b'\t');
                }
                out.extend_from_slice(record.field(field));
            }
            out.push(b'\t');
            out.extend_from_slice(record.commit_lsn());
            out.push(b'\t');
            out.push(kind);
            out.push(b'\t');
            if kind == b't' || kind == b'm' {
                out.push(b'{');
                out.extend_from_slice(record.toast());
                out.push(b'}');
            } else {
                out.extend_from_slice(b"\\N");
            }
            for position in key_positions {
                out.push(b'\t');
                match &old {
                    Some(old) => out.extend_from_slice(record.field(old.start + position)),
                    None => out.extend_from_slice(b"\\N"),
                }
            }
            out.push(b'\n');
        }
        (out, kinds)
    }
}

/// How many staging rows of each kind a batch holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub upserts: usize,
    pub keeping_toast: usize,
    pub moves: usize,
    pub deletes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        Record::parse(Bytes::from(text.to_string())).expect("a record")
    }

    fn staged(batch: &mut TableBatch) -> Vec<String> {
        let (rows, _) = batch.take_staging(&[0]);
        let mut rows: Vec<String> =
            String::from_utf8(rows).expect("utf-8").lines().map(str::to_string).collect();
        rows.sort();
        rows
    }

    #[test]
    fn later_changes_replace_earlier_ones_and_key_changes_delete_the_old_key() {
        let mut batch = TableBatch::default();
        for line in [
            "0/10\tI\tpublic.t\t-\t\t1\ta\tx",
            "0/20\tU\tpublic.t\t-\t\t1\tb\tx",
            "0/30\tI\tpublic.t\t-\t\t2\tc\ty",
            "0/40\tD\tpublic.t\tK\t\t2\t\\N\t\\N",
            "0/50\tU\tpublic.t\tK\t\t1\t\\N\t\\N\t9\tb\tx",
        ] {
            assert!(matches!(batch.add(record(line), 3, &[0]), Ok(Admit::Added)));
        }
        assert_eq!(
            staged(&mut batch),
            vec![
                "1\t\\N\t\\N\t0/50\td\t\\N\t\\N",
                "2\t\\N\t\\N\t0/40\td\t\\N\t\\N",
                "9\tb\tx\t0/50\tu\t\\N\t\\N",
            ]
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn unchanged_toast_waits_for_pending_changes_and_moves_name_the_old_key() {
        let mut batch = TableBatch::default();
        batch.add(record("0/10\tI\tpublic.t\t-\t\t1\ta\tbig"), 3, &[0]).expect("insert");
        let keep = record("0/20\tU\tpublic.t\t-\t2\t1\tb\t\\N");
        let Ok(Admit::ApplyFirst(keep)) = batch.add(keep, 3, &[0]) else { panic!("not held back") };
        staged(&mut batch);
        assert!(matches!(batch.add(keep, 3, &[0]), Ok(Admit::Added)));
        assert_eq!(staged(&mut batch), vec!["1\tb\t\\N\t0/20\tt\t{2}\t\\N"]);

        let moved = record("0/30\tU\tpublic.t\tK\t2\t1\t\\N\t\\N\t5\tb\t\\N");
        assert!(matches!(batch.add(moved, 3, &[0]), Ok(Admit::Added)));
        assert_eq!(staged(&mut batch), vec!["1\t\\N\t\\N\t0/30\td\t\\N\t\\N", "5\tb\t\\N\t0/30\tm\t{2}\t1"]);
    }

    #[test]
    fn rows_go_out_in_the_order_their_keys_first_came() {
        // Eight keys: hash order would match theirs once in 40,320 runs.
        let keys = ["5", "3", "8", "1", "7", "2", "6", "4"];
        let mut batch = TableBatch::default();
        for key in keys {
            batch.add(record(&format!("0/{key}0\tI\tpublic.t\t-\t\t{key}\tv\tx")), 3, &[0]).expect("insert");
        }
        let first_fields = |text: &[u8]| -> Vec<String> {
            let text = std::str::from_utf8(text).expect("utf-8");
            text.lines().map(|line| line.split('\t').next().unwrap_or_default().to_string()).collect()
        };
        assert_eq!(
            first_fields(&crate::sink::postgres::new_rows::text_rows(&batch).expect("only inserts")),
            keys
        );
        batch.add(record("0/90\tU\tpublic.t\t-\t\t1\tw\tx"), 3, &[0]).expect("a later change of key 1");
        let (staging, _) = batch.take_staging(&[0]);
        assert_eq!(first_fields(&staging), keys, "a replaced row keeps its key's place");
    }

    #[test]
    fn only_inserts_can_take_the_fast_path() {
        let mut batch = TableBatch::default();
        batch.add(record("0/10\tI\tpublic.t\t-\t\t1\ta\tx"), 3, &[0]).expect("insert");
        assert_eq!(
            crate::sink::postgres::new_rows::text_rows(&batch).as_deref(),
            Some(&b"1\ta\tx\t0/10\n"[..])
        );
        batch.add(record("0/20\tU\tpublic.t\t-\t\t1\tb\tx"), 3, &[0]).expect("update");
        assert_eq!(
            crate::sink::postgres::new_rows::text_rows(&batch),
            None,
            "an update may meet an existing row"
        );
        batch.clear();
        assert!(batch.is_empty());
        batch.add(record("0/30\tI\tpublic.t\t-\t\t2\tc\ty"), 3, &[0]).expect("insert");
        assert!(crate::sink::postgres::new_rows::text_rows(&batch).is_some());
    }

    #[test]
    fn a_few_whole_rows_to_upsert_need_no_staging() {
        let mut batch = TableBatch::default();
        batch.add(record("0/10\tI\tpublic.t\t-\t\t1\ta\tx"), 3, &[0]).expect("insert");
        batch.add(record("0/20\tU\tpublic.t\t-\t\t2\tb\t\\N"), 3, &[0]).expect("update");
        let mut rows = batch.few_upserts(2).expect("two whole rows");
        rows.sort();
        assert_eq!(rows, vec![vec![&b"1"[..], b"a", b"x", b"0/10"], vec![&b"2"[..], b"b", b"\\N", b"0/20"]]);
        assert!(batch.few_upserts(1).is_none() && !batch.fits_few_upserts(1), "more than asked for");
        assert!(batch.fits_few_upserts(2));
        batch.add(record("0/30\tU\tpublic.t\t-\t2\t3\tc\t\\N"), 3, &[0]).expect("keeping TOAST");
        assert!(batch.few_upserts(3).is_none(), "a kept TOAST value needs the sink's row");
        batch.clear();
        batch.add(record("0/40\tD\tpublic.t\tK\t\t1\t\\N\t\\N"), 3, &[0]).expect("delete");
        assert!(batch.few_upserts(3).is_none(), "a delete is staged");
        batch.clear();
        assert!(batch.few_upserts(3).is_none(), "nothing to write");
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(Record::parse(Bytes::from_static(b"0/1\tI")).is_err());
        let mut batch = TableBatch::default();
        assert!(batch.add(record("0/10\tI\tpublic.t\t-\t\t1\ta"), 3, &[0]).is_err(), "too few values");
        assert!(batch.add(record("0/10\tX\tpublic.t\t-\t\t1\ta\tb"), 3, &[0]).is_err(), "unknown op");
    }
}
