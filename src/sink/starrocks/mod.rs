//! The StarRocks Stream Load sink (docs/src/sinks/starrocks.md): per batch and table, a
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
//! - A load names only columns the destination has (see `columns`); the
//!   destination's columns are read again after every new source shape, and
//!   before every batch while some are missing, so an `ALTER TABLE` by the
//!   user takes effect at the next batch.

mod columns;
mod plan;
mod target;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use url::Url;

use crate::metrics::JobMetrics;
use crate::sink::delivery::Transport;
use crate::sink::delivery::batch::{Batch, hex};
use crate::sink::http::{Verdict, network_error, send_with_retries, shorten, verdict_for_status};
use crate::sink::{Opening, SinkError};
use columns::DestinationColumns;
use plan::{Load, Plan, SourceColumn};
pub use target::StarRocksTarget;

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
    metrics: Arc<JobMetrics>,
    /// Per source table: the destination's columns as last read (`None`:
    /// they could not be read, loads name every column). Absent: read them.
    checked: HashMap<String, Option<DestinationColumns>>,
    /// Per source table: its last announced shape, to type the `ALTER TABLE`.
    shapes: HashMap<String, Vec<SourceColumn>>,
    /// Per source table: the missing columns last reported, so that the
    /// warning is logged when they change, not every batch.
    reported: HashMap<String, Vec<String>>,
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
        metrics: Arc<JobMetrics>,
    ) -> Result<StarRocks, SinkError> {
        Ok(StarRocks {
            client: crate::sink::http::client()?,
            shown: format!("StarRocks {target}"),
            target,
            job: job.to_string(),
            destinations,
            metrics,
            checked: HashMap::new(),
            shapes: HashMap::new(),
            reported: HashMap::new(),
        })
    }

    /// Leaves out of `loads` the columns `table`'s destination lacks, and
    /// reports them (log, metric) when they change.
    async fn fit_to_destination(&mut self, table: &str, loads: &mut [Load]) {
        let (database, name) = self.destination(table);
        if !self.checked.contains_key(table) {
            let columns = self.destination_columns(&database, &name).await;
            self.checked.insert(table.to_string(), columns);
        }
        let Some(Some(destination)) = self.checked.get(table) else { return };
        let missing = destination.missing(loads);
        if !missing.is_empty() {
            destination.trim(loads);
            // Read them again next batch: the user may have added them.
            self.checked.remove(table);
        }
        self.metrics.columns_missing(table, missing.len());
        if self.reported.get(table) == Some(&missing) {
            return;
        }
        if missing.is_empty() {
            tracing::info!(job = %self.job, table, "the StarRocks table {database}.{name} now has every source column");
        } else {
            let shape = self.shapes.get(table).map_or(&[][..], Vec::as_slice);
            let alter = columns::alter_statement(&database, &name, &missing, shape);
            tracing::warn!(job = %self.job, table, missing = %missing.join(", "),
                "the StarRocks table {database}.{name} lacks source columns: their values are left out of its loads \
                 (every other column still loads by name); run `{alter}`, and copy the table again to fill the rows loaded before");
        }
        self.reported.insert(table.to_string(), missing);
    }

    /// The destination's columns (`GET /api/{db}/{table}/_schema` on the
    /// FE), or `None`, with a warning, when they cannot be read.
    async fn destination_columns(&self, database: &str, table: &str) -> Option<DestinationColumns> {
        let url = self.target.frontend.join(&format!("/api/{database}/{table}/_schema")).ok()?;
        let answer = self
            .client
            .get(url)
            .basic_auth(&self.target.user, Some(&self.target.password))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let read = match answer {
            Ok(response) => {
                response.text().await.ok().and_then(|body| DestinationColumns::from_answer(&body))
            }
            Err(error) => {
                tracing::warn!(job = %self.job, "could not read the columns of the StarRocks table {database}.{table} ({}): loads name every source column", error.without_url());
                return None;
            }
        };
        if read.is_none() {
            tracing::warn!(job = %self.job, "the StarRocks table {database}.{table} answered its schema in an unknown form: loads name every source column");
        }
        read
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
                reason: format!("an answer that is not a load result: {}", shorten(text)),
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
                Verdict::Refused { status: format!("Status {}", result.status), body: shorten(&detail) }
            } else {
                Verdict::Retry {
                    reason: format!("Status {}: {}", result.status, shorten(&detail)),
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

impl Transport for StarRocks {
    type Target = StarRocksTarget;
    const SCHEMES: &'static [&'static str] = &["starrocks"];
    const URL_FORM: &'static str = "starrocks://user:password@fe-host:8030/db";
    /// Rows go into primary key tables.
    const NEEDS_KEYS: bool = true;

    fn parse(url: &str) -> Result<StarRocksTarget, String> {
        StarRocksTarget::parse(url)
    }

    /// Loads into the URL's database and the source table's name, unless mapped.
    fn connect(target: &StarRocksTarget, opening: &Opening<'_>) -> Result<StarRocks, SinkError> {
        let spec = opening.settings;
        let destinations = opening
            .tables
            .iter()
            .filter_map(|t| spec.table_mappings.get(&t.qualified()).map(|to| (t.qualified(), to.clone())))
            .collect();
        StarRocks::new(target.clone(), &spec.name, destinations, opening.metrics.clone())
    }

    async fn send(&mut self, _key: &str, batch: &Batch) -> Result<u64, SinkError> {
        let Plan { mut tables, skipped, shapes } = plan::plan(&batch.lines)?;
        for (table, columns) in shapes {
            self.checked.remove(&table);
            self.shapes.insert(table, columns);
        }
        for (table, loads) in &mut tables {
            self.fit_to_destination(table, loads).await;
        }
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
