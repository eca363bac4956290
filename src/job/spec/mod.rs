//! A job's definition, from the environment (docs/src/reference/configuration.md), checked once
//! so that every later step can trust it.

use std::collections::HashMap;
use std::time::Duration;

use crate::change::outbox::OutboxRules;
use crate::config::Config;
use crate::names::{self, TableName};
use crate::pg::conninfo::ConnInfo;
use crate::position::Position;
use crate::secret::Secret;
use crate::sink::SinkTarget;
use crate::sink::postgres::evolve::DropPolicy;
use crate::sink::postgres::isolation::OnTableError;
use crate::sink::settings::SinkSettings;
use crate::source::SourceTarget;
use crate::source::setup::SourceSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Copy the tables when the job has no checkpoint, then stream.
    Initial,
    /// Only stream, from where the new slot starts.
    Never,
    /// As `Initial`, and when the slot was invalidated, start over with a
    /// new slot and a new copy (recording where the data gap began).
    WhenNeeded,
    /// Copy the tables once, then stop: no stream, no slot left behind.
    InitialOnly,
}

/// How tables are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStrategy {
    /// In key-ordered chunks, each in a short transaction, while the slot
    /// streams; resumable (`crate::chunked`).
    Chunked,
    /// Each table in one transaction under the new slot's exported snapshot,
    /// before streaming starts.
    Exported,
}

pub use crate::sink::settings::SinkMode;

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub source: SourceTarget,
    pub sink: SinkTarget,
    /// Where the checkpoint lives: the sink when it is Postgres (committed
    /// with the rows), else the state store (see `sink::delivery`).
    pub checkpoint_db: ConnInfo,
    /// Signs webhook requests.
    pub signing_secret: Option<Secret>,
    /// Which changes are outbox events (webhook and stdout sinks).
    pub outbox: OutboxRules,
    /// Delete outbox rows on the source once their events are delivered.
    pub outbox_delete: bool,
    /// `schema.table`; empty: every table of schema public.
    pub tables: Vec<TableName>,
    pub slot: String,
    pub publication: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Tables copied at once by the snapshot.
    pub parallel_tables: usize,
    pub snapshot_mode: SnapshotMode,
    pub snapshot_strategy: SnapshotStrategy,
    pub sink_mode: SinkMode,
    /// Where a new slot's stream starts when there is no checkpoint.
    pub start_position: Option<Position>,
    /// Source `schema.table` to destination (schema, table).
    pub table_mappings: HashMap<String, (String, String)>,
    /// What a column dropped on the source does to a Postgres destination.
    pub schema_drop: DropPolicy,
    /// What a change the sink cannot apply to one table does.
    pub on_table_error: OnTableError,
    /// How often to emit a heartbeat into the source's WAL; `None`: never.
    pub heartbeat_interval: Option<Duration>,
    /// Confirm keepalive positions while nothing is in flight, so that a
    /// quiet database does not pin WAL written by others.
    pub confirm_keepalives: bool,
    /// The newest copy request per table (`schema.table`), from the state store.
    pub copy_requests: std::collections::BTreeMap<String, i64>,
    /// The state store's revision of the definition and requests this spec
    /// was made from: a newer one makes a running job start its session again.
    pub revision: i64,
}

impl JobSpec {
    /// Whether every table needs a key: a Postgres mirror and StarRocks
    /// write by key; a changelog, a webhook and `stdout:` take a table with
    /// REPLICA IDENTITY FULL and no key.
    pub fn needs_keys(&self) -> bool {
        self.sink.needs_keys() && self.sink_mode == SinkMode::Mirror
    }
}

/// The slot (and publication) of a job that names none: `walpipe_<job>`,
/// lower case, `-` as `_`.
pub fn default_slot_name(job: &str) -> String {
    format!("walpipe_{}", job.replace('-', "_").to_lowercase())
}

/// The job cannot run as configured; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

/// A job as a user defines it: the job variables of the configuration reference (docs/src/reference/configuration.md), from
/// the environment (`WALPIPE_SOURCE_URL`, ...) or from the API (`source_url`, ...).
/// Stored as is in the state store; [`JobSpec::from_definition`] checks it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDefinition {
    pub name: String,
    pub source_url: String,
    pub sink_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication_name: Option<String>,
    #[serde(default = "crate::config::default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "crate::config::default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "crate::config::default_snapshot_mode")]
    pub snapshot_mode: String,
    #[serde(default = "crate::config::default_snapshot_strategy")]
    pub snapshot_strategy: String,
    #[serde(default = "crate::config::default_start_position")]
    pub start_position: String,
    #[serde(default = "crate::config::default_parallel_tables")]
    pub parallel_tables: usize,
    #[serde(default = "crate::config::default_sink_mode")]
    pub sink_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_mappings: Option<String>,
    #[serde(default = "crate::config::default_schema_drop")]
    pub schema_drop: String,
    #[serde(default = "crate::config::default_on_table_error")]
    pub on_table_error: String,
    #[serde(default = "crate::config::default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "crate::config::default_keepalive_confirm")]
    pub keepalive_confirm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_signing_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_tables: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_prefix: Option<String>,
    #[serde(default)]
    pub outbox_delete: bool,
}

/// How a definition's fields are named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `WALPIPE_SOURCE_URL`
    Environment,
    /// `source_url`
    Api,
}

impl Naming {
    fn name(self, field: &str) -> String {
        match self {
            Naming::Environment => format!("WALPIPE_{}", field.to_uppercase()),
            Naming::Api => field.to_string(),
        }
    }
}

impl JobDefinition {
    /// The job the environment defines, if `WALPIPE_SOURCE_URL` is set.
    pub fn from_config(config: &Config) -> Result<Option<JobDefinition>, SpecError> {
        let Some(source_url) = &config.source_url else { return Ok(None) };
        let sink_url = config.sink_url.clone().ok_or_else(|| {
            SpecError(
                "WALPIPE_SINK_URL is not set: point it at the sink, e.g. postgres://user:password@sink:5432/db".into(),
            )
        })?;
        Ok(Some(JobDefinition {
            name: config.job_name.clone(),
            source_url: source_url.clone(),
            sink_url,
            tables: config.tables.clone(),
            slot_name: config.slot_name.clone(),
            publication_name: config.publication_name.clone(),
            batch_size: config.batch_size,
            flush_interval_ms: config.flush_interval_ms,
            snapshot_mode: config.snapshot_mode.clone(),
            snapshot_strategy: config.snapshot_strategy.clone(),
            start_position: config.start_position.clone(),
            parallel_tables: config.parallel_tables,
            sink_mode: config.sink_mode.clone(),
            table_mappings: config.table_mappings.clone(),
            schema_drop: config.schema_drop.clone(),
            on_table_error: config.on_table_error.clone(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            keepalive_confirm: config.keepalive_confirm,
            sink_signing_secret: config.sink_signing_secret.clone(),
            outbox_tables: config.outbox_tables.clone(),
            outbox_prefix: config.outbox_prefix.clone(),
            outbox_delete: config.outbox_delete,
        }))
    }

    /// The definition with the passwords of its URLs replaced, for showing.
    pub fn redacted(&self) -> JobDefinition {
        let mut shown = self.clone();
        for url in [&mut shown.source_url, &mut shown.sink_url] {
            *url = crate::secret::redact_url(url);
        }
        if shown.sink_signing_secret.is_some() {
            shown.sink_signing_secret = Some(crate::secret::REDACTED.into());
        }
        shown
    }
}

impl JobSpec {
    /// The job the environment defines, if `WALPIPE_SOURCE_URL` is set.
    pub fn from_config(config: &Config) -> Result<Option<JobSpec>, SpecError> {
        match JobDefinition::from_config(config)? {
            Some(definition) => JobSpec::from_definition(&definition, Naming::Environment).map(Some),
            None => Ok(None),
        }
    }

    /// Checks a definition; messages name its fields as `naming` does.
    pub fn from_definition(def: &JobDefinition, naming: Naming) -> Result<JobSpec, SpecError> {
        let bad = |text: String| SpecError(text);
        let var = |field: &str| naming.name(field);
        let name = def.name.clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad(format!(
                "{}={name:?} is not a job name: use letters, digits, '_' and '-'",
                var(if naming == Naming::Api { "name" } else { "job_name" })
            )));
        }
        let source =
            SourceTarget::parse(&def.source_url).map_err(|e| bad(format!("{}: {e}", var("source_url"))))?;
        let sink = SinkTarget::parse(&def.sink_url).map_err(|e| bad(format!("{}: {e}", var("sink_url"))))?;
        let checkpoint_db = match &sink {
            SinkTarget::Postgres(info) => info.clone(),
            // The supervisor points it at the state store (the source unless WALPIPE_STATE_URL says otherwise).
            _ => source.state_store().unwrap_or_else(state_store_not_yet_known),
        };
        let signing_secret = def.sink_signing_secret.clone().filter(|s| !s.is_empty()).map(Secret::new);
        if signing_secret.is_some() && !matches!(sink, SinkTarget::Webhook(_)) {
            return Err(bad(format!(
                "{} signs webhook requests, but the sink is {sink}: unset it, or use an http(s):// sink",
                var("sink_signing_secret")
            )));
        }
        let tables = table_list(def.tables.as_deref(), &var("tables"))?;
        let outbox = outbox_rules(def, &sink, &tables, &var)?;
        let default_name = default_slot_name(&name);
        let slot = def.slot_name.clone().unwrap_or_else(|| default_name.clone());
        if slot.is_empty()
            || slot.len() > 63
            || !slot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(bad(format!(
                "{}={slot:?} is not a slot name: use at most 63 lower-case letters, digits and '_'",
                var("slot_name")
            )));
        }
        let (snapshot_mode, sink_mode, schema_drop) = choices(def, &var)?;
        let on_table_error = match def.on_table_error.as_str() {
            "isolate" => OnTableError::Isolate,
            "fail" => OnTableError::Fail,
            other => {
                return Err(bad(format!(
                    "{}={other} is not a choice: use isolate (the other tables stream on while the table is rebuilt) or fail (the job stops)",
                    var("on_table_error")
                )));
            }
        };
        let snapshot_strategy = match def.snapshot_strategy.as_str() {
            "chunked" => SnapshotStrategy::Chunked,
            "exported" => SnapshotStrategy::Exported,
            other => {
                return Err(bad(format!(
                    "{}={other} is not a snapshot strategy: use chunked (while streaming, resumable) or exported (one transaction per table)",
                    var("snapshot_strategy")
                )));
            }
        };
        let start_position = match def.start_position.as_str() {
            "latest" => None,
            lsn => Some(lsn.parse().map_err(|e| bad(format!("{}: {e}, or latest", var("start_position"))))?),
        };
        if def.batch_size == 0 {
            return Err(bad(format!(
                "{}=0: use a positive number of changes, e.g. 10000",
                var("batch_size")
            )));
        }
        Ok(JobSpec {
            tables,
            table_mappings: names::parse_mappings(def.table_mappings.as_deref().unwrap_or(""))
                .map_err(|e| bad(format!("{}: {e}", var("table_mappings"))))?
                .into_iter()
                .map(|(from, to)| (from.qualified(), (to.schema, to.name)))
                .collect(),
            schema_drop,
            on_table_error,
            publication: def.publication_name.clone().unwrap_or(default_name),
            name,
            source,
            sink,
            checkpoint_db,
            signing_secret,
            outbox,
            outbox_delete: def.outbox_delete,
            slot,
            batch_size: def.batch_size,
            parallel_tables: def.parallel_tables.max(1),
            flush_interval: Duration::from_millis(def.flush_interval_ms.max(1)),
            snapshot_mode,
            snapshot_strategy,
            sink_mode,
            start_position,
            heartbeat_interval: (def.heartbeat_interval_ms > 0)
                .then(|| Duration::from_millis(def.heartbeat_interval_ms)),
            confirm_keepalives: def.keepalive_confirm,
            copy_requests: std::collections::BTreeMap::new(),
            revision: 0,
        })
    }
}

/// The outbox settings, checked against the sink and the table selection.
fn outbox_rules(
    def: &JobDefinition,
    sink: &SinkTarget,
    tables: &[TableName],
    var: &impl Fn(&str) -> String,
) -> Result<OutboxRules, SpecError> {
    let outbox = OutboxRules {
        tables: table_list(def.outbox_tables.as_deref(), &var("outbox_tables"))?
            .iter()
            .map(TableName::qualified)
            .collect(),
        prefix: def.outbox_prefix.clone().filter(|p| !p.is_empty()),
    };
    if !outbox.is_empty() && !matches!(sink, SinkTarget::Webhook(_) | SinkTarget::Stdout(_)) {
        return Err(SpecError(format!(
            "{} / {} emit events to a webhook or stdout:, but the sink is {sink}: unset them, or change the sink",
            var("outbox_tables"),
            var("outbox_prefix")
        )));
    }
    let selected: Vec<String> = tables.iter().map(TableName::qualified).collect();
    if let Some(missing) = outbox.tables.iter().find(|t| !selected.is_empty() && !selected.contains(t)) {
        return Err(SpecError(format!(
            "{} names {missing}, which {} leaves out: add it to {}",
            var("outbox_tables"),
            var("tables"),
            var("tables")
        )));
    }
    if def.outbox_delete && outbox.tables.is_empty() {
        return Err(SpecError(format!(
            "{} deletes delivered outbox rows, but {} names no table: set it, or unset {}",
            var("outbox_delete"),
            var("outbox_tables"),
            var("outbox_delete")
        )));
    }
    Ok(outbox)
}

/// The snapshot mode, the sink mode and the drop policy, from their names.
fn choices(
    def: &JobDefinition,
    var: &impl Fn(&str) -> String,
) -> Result<(SnapshotMode, SinkMode, DropPolicy), SpecError> {
    let bad = |text: String| SpecError(text);
    let snapshot_mode = match def.snapshot_mode.as_str() {
        "initial" => SnapshotMode::Initial,
        "never" => SnapshotMode::Never,
        "when_needed" => SnapshotMode::WhenNeeded,
        "initial_only" => SnapshotMode::InitialOnly,
        other => {
            return Err(bad(format!(
                "{}={other} is not a snapshot mode: use initial, never, when_needed or initial_only",
                var("snapshot_mode")
            )));
        }
    };
    let sink_mode = match def.sink_mode.as_str() {
        "mirror" => SinkMode::Mirror,
        "changelog" => SinkMode::Changelog,
        other => {
            return Err(bad(format!(
                "{}={other} is not a sink mode: use mirror or changelog",
                var("sink_mode")
            )));
        }
    };
    let schema_drop = match def.schema_drop.as_str() {
        "drop" => DropPolicy::Drop,
        "keep" => DropPolicy::Keep,
        other => {
            return Err(bad(format!(
                "{}={other} is not a choice: use drop (the destination column goes too) or keep (it stays, NULL in new rows)",
                var("schema_drop")
            )));
        }
    };
    Ok((snapshot_mode, sink_mode, schema_drop))
}

impl JobSpec {
    /// What the source is told of the job.
    pub fn source_settings(&self) -> SourceSettings {
        SourceSettings {
            job: self.name.clone(),
            tables: self.tables.clone(),
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            checkpoint_db: self.checkpoint_db.clone(),
            heartbeat: self.heartbeat_interval,
        }
    }

    /// What the sink is told of the job.
    pub fn sink_settings(&self) -> SinkSettings {
        SinkSettings {
            name: self.name.clone(),
            slot: self.slot.clone(),
            checkpoint_db: self.checkpoint_db.clone(),
            signing_secret: self.signing_secret.clone(),
            outbox: self.outbox.clone(),
            captures_all_tables: self.tables.is_empty(),
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            sink_mode: self.sink_mode,
            table_mappings: self.table_mappings.clone(),
            schema_drop: self.schema_drop,
            on_table_error: self.on_table_error,
        }
    }
}

/// Where the checkpoint of a job whose sink keeps none and whose source
/// cannot hold the state store (MySQL) is, until the supervisor points it
/// at the state store (`WALPIPE_STATE_URL`, which `walpipe run` requires for
/// such a job): a name that resolves nowhere, never a database by accident.
pub fn state_store_not_yet_known() -> ConnInfo {
    ConnInfo::parse("postgres://walpipe@state-store.invalid/walpipe")
        .unwrap_or_else(|_| unreachable!("a valid URL"))
}

/// A comma-separated list of table names (see [`crate::names`]).
fn table_list(text: Option<&str>, variable: &str) -> Result<Vec<TableName>, SpecError> {
    names::parse_list(text.unwrap_or("")).map_err(|e| SpecError(format!("{variable}: {e}")))
}

#[cfg(test)]
mod tests;
