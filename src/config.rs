//! The environment configuration: every `WALPIPE_*` variable, typed.
//!
//! Every `WALPIPE_*` variable must be one of the known ones ([`VARIABLES`]):
//! a typo must not be silently ignored. Each value is parsed by its kind
//! first, so an error names the variable and what it takes; the typed
//! values then fill [`Config`]. Defaults live here and nowhere else.

use serde::Deserialize;
use serde_json::{Map, Value};

/// What a variable's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Bool,
}

/// Every variable, without its `WALPIPE_` prefix, lower case: the fields of [`Config`].
const VARIABLES: [(&str, Kind); 29] = [
    ("source_url", Kind::Text),
    ("sink_url", Kind::Text),
    ("job_name", Kind::Text),
    ("tables", Kind::Text),
    ("slot_name", Kind::Text),
    ("publication_name", Kind::Text),
    ("batch_size", Kind::Number),
    ("flush_interval_ms", Kind::Number),
    ("snapshot_mode", Kind::Text),
    ("snapshot_strategy", Kind::Text),
    ("start_position", Kind::Text),
    ("parallel_tables", Kind::Number),
    ("sink_mode", Kind::Text),
    ("table_mappings", Kind::Text),
    ("schema_drop", Kind::Text),
    ("on_table_error", Kind::Text),
    ("heartbeat_interval_ms", Kind::Number),
    ("http_addr", Kind::Text),
    ("api_token", Kind::Text),
    ("state_url", Kind::Text),
    ("webhook_url", Kind::Text),
    ("log_format", Kind::Text),
    ("log", Kind::Text),
    ("wal_volume_bytes", Kind::Number),
    ("keepalive_confirm", Kind::Bool),
    ("sink_signing_secret", Kind::Text),
    ("outbox_tables", Kind::Text),
    ("outbox_prefix", Kind::Text),
    ("outbox_delete", Kind::Bool),
];

/// Every variable is parsed now, so a typo or a bad value fails early;
/// the fields that only the sidecar reads are read by it (issue 3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Config {
    pub source_url: Option<String>,
    pub sink_url: Option<String>,
    #[serde(default = "default_job_name")]
    pub job_name: String,
    pub tables: Option<String>,
    pub slot_name: Option<String>,
    pub publication_name: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_snapshot_mode")]
    pub snapshot_mode: String,
    /// How tables are copied: `chunked` (while streaming) or `exported`.
    #[serde(default = "default_snapshot_strategy")]
    pub snapshot_strategy: String,
    #[serde(default = "default_start_position")]
    pub start_position: String,
    #[serde(default = "default_parallel_tables")]
    pub parallel_tables: usize,
    #[serde(default = "default_sink_mode")]
    pub sink_mode: String,
    pub table_mappings: Option<String>,
    /// What a column dropped on the source does to a Postgres destination: `drop` or `keep`.
    #[serde(default = "default_schema_drop")]
    pub schema_drop: String,
    /// What a change the sink cannot apply to one table does: `isolate` or `fail`.
    #[serde(default = "default_on_table_error")]
    pub on_table_error: String,
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    pub api_token: Option<String>,
    pub state_url: Option<String>,
    pub webhook_url: Option<String>,
    #[serde(default = "default_log_format")]
    pub log_format: String,
    #[serde(default = "default_log")]
    pub log: String,
    /// Size of the volume holding the source's pg_wal, when the operator
    /// knows it: exported so that alerts can compare the retention cap with it.
    pub wal_volume_bytes: Option<u64>,
    /// Confirm keepalive positions while nothing is in flight (default
    /// true; false only to show what it prevents, drills/idle-database.sh).
    #[serde(default = "default_keepalive_confirm")]
    pub keepalive_confirm: bool,
    /// Signs webhook requests (HMAC-SHA256 of the body).
    pub sink_signing_secret: Option<String>,
    /// Tables whose inserts are emitted as events (webhook and stdout sinks).
    pub outbox_tables: Option<String>,
    /// Logical decoding messages with this prefix are emitted as events.
    pub outbox_prefix: Option<String>,
    /// Delete outbox rows once their events are delivered.
    #[serde(default)]
    pub outbox_delete: bool,
}

fn default_job_name() -> String {
    "default".into()
}
pub fn default_batch_size() -> usize {
    10_000
}
pub fn default_flush_interval_ms() -> u64 {
    5_000
}
pub fn default_snapshot_mode() -> String {
    "initial".into()
}
pub fn default_snapshot_strategy() -> String {
    "chunked".into()
}
pub fn default_start_position() -> String {
    "latest".into()
}
pub fn default_schema_drop() -> String {
    "drop".into()
}
pub fn default_on_table_error() -> String {
    "isolate".into()
}
pub fn default_parallel_tables() -> usize {
    1
}
pub fn default_sink_mode() -> String {
    "mirror".into()
}
pub fn default_keepalive_confirm() -> bool {
    true
}
pub fn default_heartbeat_interval_ms() -> u64 {
    10_000
}
fn default_http_addr() -> String {
    "127.0.0.1:9898".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_log() -> String {
    "info".into()
}

/// The environment could not be read; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "unknown environment variable {variable}: check its spelling against the list in the README, or unset it"
    )]
    Unknown { variable: String },
    #[error("{variable}={value:?} is not {expected}: fix or unset it")]
    Invalid { variable: String, value: String, expected: &'static str },
    #[error("WALPIPE_LOG_FORMAT={0} is not a log format: use text or json")]
    LogFormat(String),
    /// The table of variables and `Config` disagree: a bug.
    #[error(
        "walpipe's own list of variables does not match its configuration ({0}); this is a bug, please report it"
    )]
    Table(String),
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut fields = Map::new();
        for (variable, value) in vars {
            let Some(name) = variable.strip_prefix("WALPIPE_") else { continue };
            let name = name.to_lowercase();
            let Some((_, kind)) = VARIABLES.iter().find(|(known, _)| *known == name) else {
                return Err(ConfigError::Unknown { variable });
            };
            let typed = match kind {
                Kind::Text => Value::String(value),
                Kind::Number => match value.trim().parse::<u64>() {
                    Ok(number) => Value::from(number),
                    Err(_) => {
                        return Err(ConfigError::Invalid { variable, value, expected: "a whole number" });
                    }
                },
                Kind::Bool => match value.trim().to_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Value::Bool(true),
                    "false" | "0" | "no" | "off" => Value::Bool(false),
                    _ => return Err(ConfigError::Invalid { variable, value, expected: "true or false" }),
                },
            };
            fields.insert(name, typed);
        }
        let config: Config =
            serde_json::from_value(Value::Object(fields)).map_err(|e| ConfigError::Table(e.to_string()))?;
        if !matches!(config.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::LogFormat(config.log_format));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_apply() {
        let config = Config::from_vars(vars(&[("PATH", "/bin")])).expect("valid");
        assert_eq!(config.job_name, "default");
        assert_eq!(config.batch_size, 10_000);
        assert_eq!(config.http_addr, "127.0.0.1:9898");
    }

    #[test]
    fn unknown_variables_are_errors() {
        let error = Config::from_vars(vars(&[("WALPIPE_SOURCE_URLL", "x")])).expect_err("typo");
        assert!(error.to_string().contains("WALPIPE_SOURCE_URLL"), "{error}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = Config::from_vars(vars(&[("WALPIPE_BATCH_SIZE", "many")])).expect_err("not a number");
        assert_eq!(error.to_string(), "WALPIPE_BATCH_SIZE=\"many\" is not a whole number: fix or unset it");
        let error = Config::from_vars(vars(&[("WALPIPE_OUTBOX_DELETE", "maybe")])).expect_err("not a bool");
        assert!(matches!(error, ConfigError::Invalid { expected: "true or false", .. }), "{error}");
    }

    #[test]
    fn every_variable_of_the_table_fills_its_field() {
        let all: Vec<(String, String)> = VARIABLES
            .iter()
            .map(|(name, kind)| {
                let value = match kind {
                    Kind::Text if *name == "log_format" => "json",
                    Kind::Text => "x",
                    Kind::Number => "7",
                    Kind::Bool => "true",
                };
                (format!("WALPIPE_{}", name.to_uppercase()), value.to_string())
            })
            .collect();
        let config = Config::from_vars(all).expect("every variable is a field");
        assert_eq!((config.batch_size, config.wal_volume_bytes, config.outbox_delete), (7, Some(7), true));
    }
}
