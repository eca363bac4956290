//! Change lines to a mirror batch: the final state of each row, per table.
//!
//! A sink that mirrors tables needs, per batch, only the last state of each
//! key: upsert the final row, or delete it. Compaction keeps that, so a
//! batch costs one statement per table and kind, however often a row changed.
//!
//! Invariants:
//! - The final state of every key equals applying the batch's changes in
//!   order: a later change replaces an earlier one of the same key; an
//!   update that changes the key deletes the old key and upserts the new.
//! - An update with unchanged TOAST columns must keep the sink's values; if
//!   the same key already has a pending change in the batch, that change
//!   would be lost by replacing it, so [`MirrorBatch::add`] asks the caller
//!   to apply the batch first ([`Admit::ApplyFirst`]). When such an update
//!   also changes the key, the kept values live in the row under the old
//!   key: the upsert names it (`moved_from`), and the sink copies them over
//!   before deleting the old row.
//! - A TRUNCATE is a barrier: the caller applies the batch, then truncates.
//! - Rows stay raw JSON (no value tree), handed to the database as is.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::lsn::Lsn;

/// One row operation, after compaction.
#[derive(Debug)]
pub enum RowOp {
    Upsert {
        lsn: Lsn,
        row: Box<RawValue>,
        unchanged_toast: Vec<String>,
        /// With unchanged TOAST and a key change: the old key, whose sink row holds the kept values.
        moved_from: Option<Box<RawValue>>,
    },
    Delete {
        lsn: Lsn,
        key: Box<RawValue>,
    },
}

/// What a change line means for a mirror.
#[derive(Debug)]
pub enum MirrorChange {
    Row {
        table: String,
        ops: Vec<(String, RowOp)>,
    },
    Truncate {
        table: String,
    },
    /// Messages: nothing to mirror.
    Ignored,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Added,
    /// Apply the batch, then add the change again.
    ApplyFirst,
}

/// A line that is not a change line walpipe wrote.
#[derive(Debug, thiserror::Error)]
#[error("a change line could not be read ({reason}): {line}")]
pub struct LineError {
    reason: String,
    line: String,
}

#[derive(Deserialize)]
struct Line<'a> {
    commit_lsn: String,
    op: &'a str,
    table: Option<String>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    old: Option<&'a RawValue>,
    #[serde(borrow)]
    new: Option<&'a RawValue>,
    #[serde(default)]
    unchanged_toast: Vec<String>,
}

/// Reads one change line (SPEC section 2) as mirror operations, each with
/// its canonical key.
pub fn parse(line: &[u8]) -> Result<MirrorChange, LineError> {
    let error = |reason: String| LineError {
        reason,
        line: String::from_utf8_lossy(line).chars().take(200).collect(),
    };
    let parsed: Line<'_> = serde_json::from_slice(line).map_err(|e| error(e.to_string()))?;
    let lsn: Lsn = parsed.commit_lsn.parse().map_err(|e: crate::lsn::ParseLsnError| error(e.to_string()))?;
    let table = || parsed.table.clone().ok_or_else(|| error("no table".into()));
    let key = || parsed.key.ok_or_else(|| error("no key".into()));
    let owned =
        |raw: &RawValue| RawValue::from_string(raw.get().to_owned()).map_err(|e| error(e.to_string()));
    match parsed.op {
        "message" => Ok(MirrorChange::Ignored),
        "truncate" => Ok(MirrorChange::Truncate { table: table()? }),
        "delete" => {
            let key = key()?;
            let op = RowOp::Delete { lsn, key: owned(key)? };
            Ok(MirrorChange::Row { table: table()?, ops: vec![(canonical(key).map_err(error)?, op)] })
        }
        "insert" | "update" => {
            let key = key()?;
            let new = parsed.new.ok_or_else(|| error("no new row".into()))?;
            let old_key = canonical(key).map_err(error)?;
            // With an old row sent, the key may have changed: the new key comes from the new row.
            let new_key = match parsed.old {
                Some(_) => key_of(key, new).map_err(error)?,
                None => old_key.clone(),
            };
            let moved = new_key != old_key;
            let moved_from =
                if moved && !parsed.unchanged_toast.is_empty() { Some(owned(key)?) } else { None };
            let upsert = RowOp::Upsert {
                lsn,
                row: owned(new)?,
                unchanged_toast: parsed.unchanged_toast.clone(),
                moved_from,
            };
            let ops = if moved {
                vec![(old_key, RowOp::Delete { lsn, key: owned(key)? }), (new_key, upsert)]
            } else {
                vec![(new_key, upsert)]
            };
            Ok(MirrorChange::Row { table: table()?, ops })
        }
        other => Err(error(format!("unknown op {other:?}"))),
    }
}

/// The key as sorted, compact JSON, so equal keys compare equal.
fn canonical(key: &RawValue) -> Result<String, String> {
    serde_json::from_str::<serde_json::Value>(key.get()).map(|v| v.to_string()).map_err(|e| e.to_string())
}

/// The canonical key of `row`, taking the fields that `key` names.
fn key_of(key: &RawValue, row: &RawValue) -> Result<String, String> {
    let key: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(key.get()).map_err(|e| e.to_string())?;
    let mut row: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(row.get()).map_err(|e| e.to_string())?;
    let picked: serde_json::Map<String, serde_json::Value> =
        key.keys().map(|name| (name.clone(), row.remove(name).unwrap_or(serde_json::Value::Null))).collect();
    Ok(serde_json::Value::Object(picked).to_string())
}

/// Pending row operations by table and key.
#[derive(Debug, Default)]
pub struct MirrorBatch {
    tables: HashMap<String, HashMap<String, RowOp>>,
    rows: usize,
}

impl MirrorBatch {
    /// Changes added (before compaction): what `batch_size` counts.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds the operations of one change, unless it must wait for the
    /// batch to be applied first (see the module invariants).
    pub fn add(&mut self, table: &str, ops: Vec<(String, RowOp)>) -> (Admit, Option<Vec<(String, RowOp)>>) {
        let pending = self.tables.entry(table.to_string()).or_default();
        // Kept TOAST values come from the sink: under the new key, or the old one when it moved.
        let keeps_toast = ops
            .iter()
            .any(|(_, op)| matches!(op, RowOp::Upsert { unchanged_toast, .. } if !unchanged_toast.is_empty()));
        let conflicts = keeps_toast && ops.iter().any(|(key, _)| pending.contains_key(key));
        if conflicts {
            return (Admit::ApplyFirst, Some(ops));
        }
        for (key, op) in ops {
            pending.insert(key, op);
        }
        self.rows += 1;
        (Admit::Added, None)
    }

    /// Takes everything pending, table by table.
    pub fn take(&mut self) -> Vec<(String, Vec<RowOp>)> {
        self.rows = 0;
        self.tables
            .drain()
            .filter(|(_, ops)| !ops.is_empty())
            .map(|(table, ops)| (table, ops.into_values().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_ops(line: &str) -> (String, Vec<(String, RowOp)>) {
        match parse(line.as_bytes()).expect("a change line") {
            MirrorChange::Row { table, ops } => (table, ops),
            other => panic!("not a row change: {other:?}"),
        }
    }

    fn line(op: &str, key: &str, old: &str, new: &str, toast: &str) -> String {
        format!(
            r#"{{"id":"0/10:0","lsn":"0/8","commit_lsn":"0/10","xid":1,"commit_time":null,"op":"{op}","table":"public.t","key":{key},"old":{old},"new":{new},"unchanged_toast":{toast}}}"#
        )
    }

    fn final_state(batch: &mut MirrorBatch) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = batch
            .take()
            .into_iter()
            .flat_map(|(_, ops)| ops)
            .map(|op| match op {
                RowOp::Upsert { row, .. } => ("upsert".into(), row.get().to_string()),
                RowOp::Delete { key, .. } => ("delete".into(), key.get().to_string()),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn later_changes_of_a_key_replace_earlier_ones() {
        let mut batch = MirrorBatch::default();
        for l in [
            line("insert", r#"{"id":1}"#, "null", r#"{"id":1,"v":"a"}"#, "[]"),
            line("update", r#"{"id":1}"#, "null", r#"{"id":1,"v":"b"}"#, "[]"),
            line("insert", r#"{"id":2}"#, "null", r#"{"id":2,"v":"x"}"#, "[]"),
            line("delete", r#"{"id":2}"#, r#"{"id":2}"#, "null", "[]"),
            line("insert", r#"{"id":2}"#, "null", r#"{"id":2,"v":"again"}"#, "[]"),
        ] {
            let (table, ops) = row_ops(&l);
            assert_eq!(batch.add(&table, ops).0, Admit::Added);
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(
            final_state(&mut batch),
            vec![
                ("upsert".into(), r#"{"id":1,"v":"b"}"#.into()),
                ("upsert".into(), r#"{"id":2,"v":"again"}"#.into())
            ]
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn a_key_change_deletes_the_old_key() {
        let mut batch = MirrorBatch::default();
        let (table, ops) =
            row_ops(&line("update", r#"{"a":1,"b":2}"#, r#"{"a":1,"b":2}"#, r#"{"b":2,"a":9,"v":0}"#, "[]"));
        batch.add(&table, ops);
        assert_eq!(
            final_state(&mut batch),
            vec![
                ("delete".into(), r#"{"a":1,"b":2}"#.into()),
                ("upsert".into(), r#"{"b":2,"a":9,"v":0}"#.into())
            ]
        );
        // A full old row with the same key is not a key change.
        let (_, ops) =
            row_ops(&line("update", r#"{"id":1}"#, r#"{"id":1,"v":"a"}"#, r#"{"id":1,"v":"b"}"#, "[]"));
        assert_eq!(ops.len(), 1);
    }

    #[test]
    fn unchanged_toast_after_a_pending_change_applies_first() {
        let mut batch = MirrorBatch::default();
        let (table, ops) = row_ops(&line("insert", r#"{"id":1}"#, "null", r#"{"id":1,"doc":"big"}"#, "[]"));
        batch.add(&table, ops);
        let (table, ops) = row_ops(&line("update", r#"{"id":1}"#, "null", r#"{"id":1}"#, r#"["doc"]"#));
        let (admit, back) = batch.add(&table, ops);
        assert_eq!(admit, Admit::ApplyFirst);
        batch.take();
        assert_eq!(batch.add(&table, back.expect("ops handed back")).0, Admit::Added);
    }

    #[test]
    fn a_key_change_with_unchanged_toast_names_the_old_key() {
        let mut batch = MirrorBatch::default();
        let (table, ops) =
            row_ops(&line("update", r#"{"id":1}"#, r#"{"id":1}"#, r#"{"id":2,"v":0}"#, r#"["doc"]"#));
        let moved_from = ops.iter().find_map(|(_, op)| match op {
            RowOp::Upsert { moved_from, .. } => moved_from.as_ref().map(|k| k.get().to_string()),
            RowOp::Delete { .. } => None,
        });
        assert_eq!(moved_from.as_deref(), Some(r#"{"id":1}"#));
        // A pending change of the old key must be applied before the move.
        let (_, first) = row_ops(&line("update", r#"{"id":1}"#, "null", r#"{"id":1,"v":5,"doc":"d"}"#, "[]"));
        batch.add(&table, first);
        assert_eq!(batch.add(&table, ops).0, Admit::ApplyFirst);
    }

    #[test]
    fn truncates_and_messages() {
        assert!(matches!(
            parse(line("truncate", "null", "null", "null", "[]").as_bytes()),
            Ok(MirrorChange::Truncate { .. })
        ));
        let message = r#"{"id":"0/1:0","lsn":"0/1","commit_lsn":"0/1","xid":null,"commit_time":null,"op":"message","table":null,"prefix":"p","content":"c","transactional":false}"#;
        assert!(matches!(parse(message.as_bytes()), Ok(MirrorChange::Ignored)));
        assert!(parse(b"not json").is_err());
        assert!(parse(line("upsert", "null", "null", "null", "[]").as_bytes()).is_err());
    }
}
