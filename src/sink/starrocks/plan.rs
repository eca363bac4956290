//! A batch of change lines as StarRocks loads: pure, no I/O.
//!
//! Invariants:
//! - Rows keep their batch order within a table, so the changes to one key
//!   load in commit order; each load holds rows with the same columns.
//! - An update that changed its row's key also deletes the old key.
//! - A row never loses a value: unchanged TOASTed columns are filled from
//!   the old row when the server sent it, else the row goes into a partial
//!   update of the columns it has.
//! - Schema lines make no load; they are returned so the sink can check the
//!   destination's columns.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::sink::SinkError;

/// Source tables with their loads, in the order the batch first names them.
pub type TableLoads = Vec<(String, Vec<Load>)>;

/// One load: rows of one table with the same columns.
#[derive(Debug, PartialEq)]
pub struct Load {
    pub columns: Vec<String>,
    pub partial: bool,
    pub rows: Vec<Map<String, Value>>,
}

/// A column of a schema line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SourceColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// What a batch becomes.
#[derive(Debug, Default)]
pub struct Plan {
    pub tables: TableLoads,
    /// Changes with no load form (truncates, messages).
    pub skipped: usize,
    /// The shapes the batch announced, by source table, in order.
    pub shapes: Vec<(String, Vec<SourceColumn>)>,
}

#[derive(Deserialize)]
struct Change {
    op: String,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    key: Option<Map<String, Value>>,
    #[serde(default)]
    old: Option<Map<String, Value>>,
    #[serde(default)]
    new: Option<Map<String, Value>>,
    #[serde(default)]
    unchanged_toast: Vec<String>,
    /// Only in schema lines.
    #[serde(default)]
    columns: Vec<SourceColumn>,
}

/// The batch's rows by source table, cut into loads.
pub fn plan(lines: &[Bytes]) -> Result<Plan, SinkError> {
    let mut plan = Plan::default();
    for line in lines {
        let change: Change = serde_json::from_slice(line).map_err(|e| SinkError::Record(e.to_string()))?;
        if change.op == "schema" {
            // Loads name their columns, so a new shape changes no load; the
            // sink only checks the destination has the columns.
            if let Some(table) = change.table {
                plan.shapes.push((table, change.columns));
            }
            continue;
        }
        let (Some(table), Some((row, op, partial))) = (change.table.clone(), row_of(&change)) else {
            plan.skipped += 1;
            continue;
        };
        if let Some(old_key) = moved_key(&change) {
            add_row(&mut plan.tables, &table, old_key, 1, false);
        }
        add_row(&mut plan.tables, &table, row, op, partial);
    }
    Ok(plan)
}

/// Adds `row` with `__op` = `op` to the last load of `table` it fits, or a new one.
fn add_row(tables: &mut TableLoads, table: &str, mut row: Map<String, Value>, op: u8, partial: bool) {
    row.insert("__op".into(), Value::from(op));
    let index = match tables.iter().position(|(name, _)| name == table) {
        Some(index) => index,
        None => {
            tables.push((table.to_string(), Vec::new()));
            tables.len() - 1
        }
    };
    let loads = &mut tables[index].1;
    let columns: BTreeSet<&String> = row.keys().collect();
    let fits = loads.last().is_some_and(|load| {
        // Deletes go with any load of the table: only their key matters.
        op == 1 || (load.partial == partial && load.columns.iter().collect::<BTreeSet<_>>() == columns)
    });
    if !fits {
        let columns = row.keys().cloned().collect();
        loads.push(Load { columns, partial, rows: Vec::new() });
    }
    if let Some(load) = loads.last_mut() {
        load.rows.push(row);
    }
}

/// The old key of an update that changed its row's key: it must be deleted,
/// or StarRocks would keep the row under both keys.
fn moved_key(change: &Change) -> Option<Map<String, Value>> {
    let (key, new) = (change.key.as_ref()?, change.new.as_ref()?);
    if change.op != "update" || change.old.is_none() {
        return None;
    }
    key.iter().any(|(column, value)| new.get(column) != Some(value)).then(|| key.clone())
}

/// The row to load, its `__op`, and whether it lacks columns (a partial
/// update); `None` when the change has no row form.
fn row_of(change: &Change) -> Option<(Map<String, Value>, u8, bool)> {
    match change.op.as_str() {
        "insert" | "update" | "snapshot" => {
            let mut row = change.new.clone()?;
            if let Some(old) = &change.old {
                for column in &change.unchanged_toast {
                    if let Some(value) = old.get(column) {
                        row.insert(column.clone(), value.clone());
                    }
                }
            }
            let partial = change.unchanged_toast.iter().any(|c| !row.contains_key(c));
            Some((row, 0, partial))
        }
        "delete" => Some((change.old.clone().or_else(|| change.key.clone())?, 1, false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<Bytes> {
        texts.iter().map(|t| Bytes::from(t.to_string())).collect()
    }

    #[test]
    fn changes_become_upserts_and_deletes_in_order_per_table() {
        let Plan { tables, skipped, .. } = plan(&lines(&[
            r#"{"id":"0/1:0","op":"insert","table":"public.a","key":{"id":1},"old":null,"new":{"id":1,"v":"x"},"unchanged_toast":[]}"#,
            r#"{"id":"0/1:1","op":"insert","table":"public.b","key":{"id":7},"old":null,"new":{"id":7},"unchanged_toast":[]}"#,
            r#"{"id":"0/1:2","op":"delete","table":"public.a","key":{"id":1},"old":{"id":1},"new":null,"unchanged_toast":[]}"#,
            r#"{"id":"0/1:3","op":"update","table":"public.a","key":{"id":2},"old":null,"new":{"id":2,"v":"y"},"unchanged_toast":[]}"#,
            r#"{"id":"0/1:4","op":"truncate","table":"public.a","key":null,"old":null,"new":null,"unchanged_toast":[]}"#,
            r#"{"id":"0/1:5","op":"message","table":null,"prefix":"p","content":"c"}"#,
        ]))
        .expect("plan");
        assert_eq!(skipped, 2);
        assert_eq!(tables.len(), 2);
        let (name, loads) = &tables[0];
        assert_eq!(name, "public.a");
        assert_eq!(loads.len(), 1, "deletes share the load: {loads:?}");
        let ops: Vec<_> = loads[0].rows.iter().map(|r| (r["id"].clone(), r["__op"].clone())).collect();
        assert_eq!(ops, [(1.into(), 0.into()), (1.into(), 1.into()), (2.into(), 0.into())]);
        assert_eq!(loads[0].columns, ["__op", "id", "v"]);
    }

    #[test]
    fn an_update_that_changes_the_key_deletes_the_old_key() {
        let Plan { tables, .. } = plan(&lines(&[
            r#"{"id":"0/1:0","op":"update","table":"public.a","key":{"id":1},"old":{"id":1},"new":{"id":5,"v":"x"},"unchanged_toast":[]}"#,
            r#"{"id":"0/1:1","op":"update","table":"public.a","key":{"id":2},"old":{"id":2,"v":"full"},"new":{"id":2,"v":"y"},"unchanged_toast":[]}"#,
        ]))
        .expect("plan");
        let rows: Vec<_> =
            tables[0].1.iter().flat_map(|l| &l.rows).map(|r| (r["id"].clone(), r["__op"].clone())).collect();
        assert_eq!(rows, [(1.into(), 1.into()), (5.into(), 0.into()), (2.into(), 0.into())]);
    }

    #[test]
    fn unchanged_toast_is_filled_from_the_old_row_or_loaded_as_a_partial_update() {
        let Plan { tables, .. } = plan(&lines(&[
            r#"{"id":"0/1:0","op":"update","table":"public.a","key":{"id":1},"old":{"id":1,"doc":"big","v":1},"new":{"id":1,"v":2},"unchanged_toast":["doc"]}"#,
            r#"{"id":"0/1:1","op":"update","table":"public.a","key":{"id":2},"old":null,"new":{"id":2,"v":3},"unchanged_toast":["doc"]}"#,
            r#"{"id":"0/1:2","op":"insert","table":"public.a","key":{"id":3},"old":null,"new":{"id":3,"doc":"d","v":4},"unchanged_toast":[]}"#,
        ]))
        .expect("plan");
        let loads = &tables[0].1;
        assert_eq!(loads.len(), 3, "{loads:?}");
        assert_eq!((loads[0].partial, loads[0].rows[0]["doc"].clone()), (false, Value::from("big")));
        assert_eq!(
            (loads[1].partial, loads[1].columns.clone()),
            (true, vec!["__op".to_string(), "id".into(), "v".into()])
        );
        assert!(!loads[2].partial);
    }

    #[test]
    fn schema_lines_make_no_load_and_are_returned() {
        let plan = plan(&lines(&[
            r#"{"id":"0/1:0:schema","lsn":"0/1","op":"schema","table":"public.a","columns":[{"name":"id","type":"integer","key":true},{"name":"b","type":"text","key":false}]}"#,
            r#"{"id":"0/1:0","op":"insert","table":"public.a","key":{"id":1},"old":null,"new":{"id":1,"b":"x"},"unchanged_toast":[]}"#,
        ]))
        .expect("plan");
        assert_eq!((plan.tables.len(), plan.skipped), (1, 0));
        assert_eq!(plan.shapes[0].0, "public.a");
        assert_eq!(plan.shapes[0].1[1], SourceColumn { name: "b".into(), type_name: "text".into() });
    }
}
