//! A job's definition, from the environment (SPEC section 3), checked once
//! so that every later step can trust it.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Config;
use crate::lsn::Lsn;
use crate::source::conninfo::ConnInfo;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// The current state of each source row.
    Mirror,
    /// One row per change.
    Changelog,
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub source: ConnInfo,
    pub sink: ConnInfo,
    /// `schema.table`; empty: every table of schema public.
    pub tables: Vec<String>,
    pub slot: String,
    pub publication: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Tables copied at once by the snapshot.
    pub parallel_tables: usize,
    pub snapshot_mode: SnapshotMode,
    pub sink_mode: SinkMode,
    /// Where a new slot's stream starts when there is no checkpoint.
    pub start_position: Option<Lsn>,
    /// Source `schema.table` to destination (schema, table).
    pub table_mappings: HashMap<String, (String, String)>,
    /// How often to emit a heartbeat into the source's WAL; `None`: never.
    pub heartbeat_interval: Option<Duration>,
}

/// The job cannot run as configured; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl JobSpec {
    /// The job the environment defines, if `WALPIPE_SOURCE_URL` is set.
    pub fn from_config(config: &Config) -> Result<Option<JobSpec>, SpecError> {
        let Some(source_url) = &config.source_url else { return Ok(None) };
        let bad = |text: String| SpecError(text);
        let name = config.job_name.clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad(format!(
                "WALPIPE_JOB_NAME={name:?} is not a job name: use letters, digits, '_' and '-'"
            )));
        }
        let source = ConnInfo::parse(source_url).map_err(|e| bad(format!("WALPIPE_SOURCE_URL: {e}")))?;
        let sink_url = config.sink_url.as_deref().ok_or_else(|| {
            bad("WALPIPE_SINK_URL is not set: point it at the sink, e.g. postgres://user:password@sink:5432/db".into())
        })?;
        if !sink_url.starts_with("postgres://") && !sink_url.starts_with("postgresql://") {
            return Err(bad(format!(
                "WALPIPE_SINK_URL has a sink this version cannot write yet ({}): use a postgres:// sink",
                sink_url.split(':').next().unwrap_or("?")
            )));
        }
        let sink = ConnInfo::parse(sink_url).map_err(|e| bad(format!("WALPIPE_SINK_URL: {e}")))?;

        let default_name = format!("walpipe_{}", name.replace('-', "_").to_lowercase());
        let slot = config.slot_name.clone().unwrap_or_else(|| default_name.clone());
        if slot.is_empty()
            || slot.len() > 63
            || !slot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(bad(format!(
                "WALPIPE_SLOT_NAME={slot:?} is not a slot name: use at most 63 lower-case letters, digits and '_'"
            )));
        }
        let snapshot_mode = match config.snapshot_mode.as_str() {
            "initial" => SnapshotMode::Initial,
            "never" => SnapshotMode::Never,
            "when_needed" => SnapshotMode::WhenNeeded,
            "initial_only" => SnapshotMode::InitialOnly,
            other => {
                return Err(bad(format!(
                    "WALPIPE_SNAPSHOT_MODE={other} is not a snapshot mode: use initial, never, when_needed or initial_only"
                )));
            }
        };
        let sink_mode = match config.sink_mode.as_str() {
            "mirror" => SinkMode::Mirror,
            "changelog" => SinkMode::Changelog,
            other => {
                return Err(bad(format!(
                    "WALPIPE_SINK_MODE={other} is not a sink mode: use mirror or changelog"
                )));
            }
        };
        let start_position = match config.start_position.as_str() {
            "latest" => None,
            lsn => Some(lsn.parse().map_err(|e| bad(format!("WALPIPE_START_POSITION: {e}, or latest")))?),
        };
        if config.batch_size == 0 {
            return Err(bad("WALPIPE_BATCH_SIZE=0: use a positive number of changes, e.g. 10000".into()));
        }
        Ok(Some(JobSpec {
            tables: split_list(config.tables.as_deref()),
            table_mappings: parse_mappings(config.table_mappings.as_deref()).map_err(bad)?,
            publication: config.publication_name.clone().unwrap_or(default_name),
            name,
            source,
            sink,
            slot,
            batch_size: config.batch_size,
            parallel_tables: config.parallel_tables.max(1),
            flush_interval: Duration::from_millis(config.flush_interval_ms.max(1)),
            snapshot_mode,
            sink_mode,
            start_position,
            heartbeat_interval: (config.heartbeat_interval_ms > 0)
                .then(|| Duration::from_millis(config.heartbeat_interval_ms)),
        }))
    }

    /// Where the rows of source table `schema.table` go.
    pub fn destination(&self, schema: &str, table: &str) -> (String, String) {
        self.table_mappings
            .get(&format!("{schema}.{table}"))
            .cloned()
            .unwrap_or_else(|| (schema.to_string(), table.to_string()))
    }
}

fn split_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn parse_mappings(text: Option<&str>) -> Result<HashMap<String, (String, String)>, String> {
    split_list(text)
        .into_iter()
        .map(|pair| {
            let wrong = || {
                format!("WALPIPE_TABLE_MAPPINGS has {pair:?}: write source=destination pairs, like public.orders=raw.orders")
            };
            let (from, to) = pair.split_once('=').ok_or_else(wrong)?;
            let (schema, table) = to.trim().split_once('.').ok_or_else(wrong)?;
            let from = if from.contains('.') { from.trim().to_string() } else { format!("public.{}", from.trim()) };
            Ok((from, (schema.to_string(), table.to_string())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(vars: &[(&str, &str)]) -> Result<Option<JobSpec>, SpecError> {
        let config =
            Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("config");
        JobSpec::from_config(&config)
    }

    #[test]
    fn defaults_and_names() {
        let job =
            spec(&[("WALPIPE_SOURCE_URL", "postgres://a@h/db"), ("WALPIPE_SINK_URL", "postgres://b@k/db")])
                .expect("valid")
                .expect("a job");
        assert_eq!(job.slot, "walpipe_default");
        assert_eq!(job.publication, "walpipe_default");
        assert_eq!(job.snapshot_mode, SnapshotMode::Initial);
        assert_eq!(job.destination("public", "t"), ("public".into(), "t".into()));
        assert!(spec(&[]).expect("valid").is_none(), "no source, no environment job");
    }

    #[test]
    fn mappings_and_tables() {
        let job = spec(&[
            ("WALPIPE_SOURCE_URL", "postgres://a@h/db"),
            ("WALPIPE_SINK_URL", "postgres://b@k/db"),
            ("WALPIPE_TABLES", "public.orders, public.customers"),
            ("WALPIPE_TABLE_MAPPINGS", "public.orders=raw.orders,customers=raw.people"),
        ])
        .expect("valid")
        .expect("a job");
        assert_eq!(job.tables, vec!["public.orders", "public.customers"]);
        assert_eq!(job.destination("public", "orders"), ("raw".into(), "orders".into()));
        assert_eq!(job.destination("public", "customers"), ("raw".into(), "people".into()));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let base = [("WALPIPE_SOURCE_URL", "postgres://a@h/db"), ("WALPIPE_SINK_URL", "postgres://b@k/db")];
        for (name, value) in [
            ("WALPIPE_SNAPSHOT_MODE", "sometimes"),
            ("WALPIPE_TABLE_MAPPINGS", "orders"),
            ("WALPIPE_SLOT_NAME", "Bad-Slot"),
            ("WALPIPE_START_POSITION", "yesterday"),
            ("WALPIPE_BATCH_SIZE", "0"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let error = spec(&vars).expect_err(name).to_string();
            assert!(error.contains(name), "{error}");
        }
        let error = spec(&[("WALPIPE_SOURCE_URL", "postgres://a@h/db")]).expect_err("no sink").to_string();
        assert!(error.contains("WALPIPE_SINK_URL"), "{error}");
    }
}
