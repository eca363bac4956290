//! The StarRocks Stream Load sink (SPEC section 6): per batch and table, a
//! `PUT /api/{db}/{table}/_stream_load` to the FE, following its 307 to a
//! BE (with the credentials: the redirect is followed here, not by the
//! client, which would drop them on the new host), rows as a JSON array
//! (`format: json`, `strip_outer_array: true`) with `__op` 0 (upsert) or
//! 1 (delete), into a primary key table.
//!
//! Invariants:
//! - The `label` is derived from the job, the table and the batch's change
//!   range, so a batch sent again (a retry, or after a restart: see
//!   `sink::delivery`) carries the same labels, and StarRocks loads it once:
//!   `Label Already Exists` for a finished load counts as success.
//! - A table's loads go one after another, in the batch's order, so the
//!   changes to one key are applied in commit order. Different tables load
//!   concurrently: there is no order across tables.
//! - A row never loses a value: an update whose unchanged TOASTed columns
//!   were not sent is filled from the old row when the server sent it
//!   (REPLICA IDENTITY FULL), else loaded as a partial update of the
//!   columns it has (`partial_update: true`), in its own load.
//! - Deletes send the key (or the full old row); truncates and logical
//!   decoding messages cannot be expressed as a load and are skipped, with
//!   a warning.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::{Verdict, network_error, send_with_retries, verdict_for_status};
use crate::sink::SinkError;
use crate::sink::delivery::Transport;
use crate::sink::delivery::batch::{Batch, hex};
use crate::sink::target::StarRocksTarget;

/// StarRocks accepts labels of at most this many characters.
const LABEL_MAX: usize = 128;
/// Redirects followed per load (FE to BE is one).
const MAX_REDIRECTS: usize = 3;

pub struct StarRocks {
    client: reqwest::Client,
    target: StarRocksTarget,
    shown: String,
    job: String,
    /// Source `schema.table` to StarRocks (database, table).
    destinations: HashMap<String, (String, String)>,
}

/// Source tables with their loads, in the order the batch first names them.
pub type TableLoads = Vec<(String, Vec<Load>)>;

/// One load: rows of one table with the same columns.
#[derive(Debug, PartialEq)]
pub struct Load {
    pub columns: Vec<String>,
    pub partial: bool,
    pub rows: Vec<Map<String, Value>>,
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
}

/// The answer of a Stream Load.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoadResult {
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    existing_job_status: Option<String>,
    #[serde(default, rename = "ErrorURL")]
    error_url: Option<String>,
}

impl StarRocks {
    pub fn new(
        target: StarRocksTarget,
        job: &str,
        destinations: HashMap<String, (String, String)>,
    ) -> Result<StarRocks, SinkError> {
        Ok(StarRocks {
            client: super::client()?,
            shown: format!("StarRocks {target}"),
            target,
            job: job.to_string(),
            destinations,
        })
    }

    fn destination(&self, table: &str) -> (String, String) {
        self.destinations.get(table).cloned().unwrap_or_else(|| {
            let name = table.split_once('.').map_or(table, |(_, name)| name);
            (self.target.database.clone(), name.to_string())
        })
    }

    /// One load, tried until StarRocks took it (or the label was already taken).
    async fn load(&self, database: &str, table: &str, label: &str, load: &Load) -> Result<u64, SinkError> {
        let body = Bytes::from(serde_json::to_vec(&load.rows).map_err(|e| SinkError::Record(e.to_string()))?);
        let columns =
            load.columns.iter().map(|c| format!("`{}`", c.replace('`', "``"))).collect::<Vec<_>>().join(",");
        let start = self
            .target
            .frontend
            .join(&format!("/api/{database}/{table}/_stream_load"))
            .map_err(|e| SinkError::Record(e.to_string()))?;
        let shown = format!("{} table {database}.{table}", self.shown);
        send_with_retries(&shown, || self.put(start.clone(), label, &columns, load.partial, body.clone()))
            .await?;
        Ok(body.len() as u64)
    }

    async fn put(&self, mut url: Url, label: &str, columns: &str, partial: bool, body: Bytes) -> Verdict {
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .client
                .put(url.clone())
                .basic_auth(&self.target.user, Some(&self.target.password))
                .header("label", label)
                .header("format", "json")
                .header("strip_outer_array", "true")
                .header("columns", columns)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if partial {
                request = request.header("partial_update", "true");
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => return network_error(error),
            };
            let status = response.status();
            if status.is_redirection() {
                let location =
                    response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
                match location.and_then(|l| url.join(l).ok()) {
                    Some(next) => {
                        url = next;
                        continue;
                    }
                    None => {
                        return Verdict::Retry {
                            reason: format!("HTTP {status} without a Location"),
                            after: None,
                        };
                    }
                }
            }
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                return verdict_for_status(status, None, &text);
            }
            return verdict_for_result(&text);
        }
        Verdict::Refused {
            status: "too many redirects".into(),
            body: format!("more than {MAX_REDIRECTS} redirects from {}", self.target.frontend),
        }
    }
}

/// The verdict on a Stream Load's JSON answer.
fn verdict_for_result(text: &str) -> Verdict {
    let result: LoadResult = match serde_json::from_str(text) {
        Ok(result) => result,
        Err(_) => {
            return Verdict::Retry {
                reason: format!("an answer that is not a load result: {}", super::shorten(text)),
                after: None,
            };
        }
    };
    match result.status.as_str() {
        // Publish Timeout: committed, visible a little later.
        "Success" | "Publish Timeout" => Verdict::Accepted,
        "Label Already Exists" => match result.existing_job_status.as_deref() {
            Some("RUNNING" | "PREPARE" | "PREPARED") => {
                Verdict::Retry { reason: "the load with this label is still running".into(), after: None }
            }
            _ => Verdict::Accepted,
        },
        _ => {
            let detail = match &result.error_url {
                Some(url) => format!("{} (rows refused: {url})", result.message),
                None => result.message.clone(),
            };
            let message = result.message.to_lowercase();
            let hopeless = ["filtered rows", "does not exist", "unknown", "denied", "not a primary key"];
            if hopeless.iter().any(|word| message.contains(word)) {
                Verdict::Refused {
                    status: format!("Status {}", result.status),
                    body: super::shorten(&detail),
                }
            } else {
                Verdict::Retry {
                    reason: format!("Status {}: {}", result.status, super::shorten(&detail)),
                    after: None,
                }
            }
        }
    }
}

/// `walpipe_<job>_<table>_<first>_<last>[_<part>]`, in the characters a
/// label may hold; shortened with a hash when too long.
pub fn label(job: &str, table: &str, first_id: &str, last_id: &str, part: usize) -> String {
    let clean = |text: &str| -> String {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect()
    };
    let suffix = if part == 0 { String::new() } else { format!("_{part}") };
    let range = format!("{}_{}", clean(first_id), clean(last_id));
    let full = format!("walpipe_{}_{}_{range}{suffix}", clean(job), clean(table));
    if full.len() <= LABEL_MAX {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{job}\n{table}").as_bytes());
    let hashed = format!("walpipe_{}_{range}{suffix}", hex(&digest.as_ref()[..8]));
    if hashed.len() <= LABEL_MAX {
        return hashed;
    }
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{job}\n{table}\n{first_id}\n{last_id}").as_bytes(),
    );
    format!("walpipe_{}{suffix}", hex(&digest.as_ref()[..24]))
}

/// The batch's rows by source table, cut into loads. Also returns the
/// number of changes that have no load form (truncates, messages).
pub fn plan(lines: &[Bytes]) -> Result<(TableLoads, usize), SinkError> {
    let mut tables: TableLoads = Vec::new();
    let mut skipped = 0;
    for line in lines {
        let change: Change = serde_json::from_slice(line).map_err(|e| SinkError::Record(e.to_string()))?;
        if change.op == "schema" {
            // Loads name their columns: a new shape needs nothing here.
            continue;
        }
        let (Some(table), Some((row, op, partial))) = (change.table.clone(), row_of(&change)) else {
            skipped += 1;
            continue;
        };
        if let Some(old_key) = moved_key(&change) {
            add_row(&mut tables, &table, old_key, 1, false);
        }
        add_row(&mut tables, &table, row, op, partial);
    }
    Ok((tables, skipped))
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

impl Transport for StarRocks {
    async fn send(&mut self, _key: &str, batch: &Batch) -> Result<u64, SinkError> {
        let (tables, skipped) = plan(&batch.lines)?;
        if skipped > 0 {
            tracing::warn!(job = %self.job, skipped, first = %batch.first_id,
                "StarRocks has no load form for truncates and messages: skipped them");
        }
        let this = &*self;
        let loads = tables.iter().map(|(table, loads)| async move {
            let (database, name) = this.destination(table);
            let mut bytes = 0;
            for (part, load) in loads.iter().enumerate() {
                let label = label(&this.job, table, &batch.first_id, &batch.last_id, part);
                bytes += this.load(&database, &name, &label, load).await?;
            }
            Ok::<u64, SinkError>(bytes)
        });
        let sent = futures_util::future::try_join_all(loads).await?;
        Ok(sent.into_iter().sum())
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
        let (tables, skipped) = plan(&lines(&[
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
        let (tables, _) = plan(&lines(&[
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
        let (tables, _) = plan(&lines(&[
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
    fn labels_name_job_table_and_range_and_fit_the_limit() {
        assert_eq!(
            label("orders-sync", "public.orders", "0/1A3E700:3", "0/1A3E9F0:0", 0),
            "walpipe_orders-sync_public-orders_0-1A3E700-3_0-1A3E9F0-0"
        );
        assert!(label("j", "public.t", "0/1:0", "0/2:0", 1).ends_with("_1"));
        let long = label(&"j".repeat(100), &"t".repeat(100), "0/1A3E700:3", "0/1A3E9F0:0", 2);
        assert!(long.len() <= LABEL_MAX && long.contains("0-1A3E700-3") && long.ends_with("_2"), "{long}");
        assert_ne!(long, label(&"j".repeat(100), &"u".repeat(100), "0/1A3E700:3", "0/1A3E9F0:0", 2));
    }

    #[test]
    fn load_results_are_read_as_the_documentation_describes() {
        assert_eq!(
            verdict_for_result(r#"{"TxnId":1,"Label":"l","Status":"Success","Message":"OK"}"#),
            Verdict::Accepted
        );
        assert_eq!(verdict_for_result(r#"{"Status":"Publish Timeout","Message":""}"#), Verdict::Accepted);
        assert_eq!(
            verdict_for_result(
                r#"{"Status":"Label Already Exists","ExistingJobStatus":"FINISHED","Message":"l"}"#
            ),
            Verdict::Accepted
        );
        assert!(matches!(
            verdict_for_result(r#"{"Status":"Label Already Exists","ExistingJobStatus":"RUNNING"}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict_for_result(r#"{"Status":"Fail","Message":"tablet writer busy"}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict_for_result(r#"{"Status":"Fail","Message":"too many filtered rows","ErrorURL":"http://be/err"}"#),
            Verdict::Refused { body, .. } if body.contains("http://be/err")
        ));
        assert!(matches!(verdict_for_result("<html>"), Verdict::Retry { .. }));
    }
}
