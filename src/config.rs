//! The environment configuration: every `WALPIPE_*` variable, typed.
//!
//! Every `WALPIPE_*` variable must be one of the known ones ([`VARIABLES`]):
//! a typo must not be silently ignored. Each value is parsed by its kind
//! first, so an error names the variable and what it takes; the typed
//! values then fill [`Config`]. Defaults live here and nowhere else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a variable's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Bool,
}

/// One variable: its name without the `WALPIPE_` prefix, lower case (a
/// field of [`Config`]), what its value must be, and what it does (the
/// configuration reference is generated from this table).
pub struct Variable {
    pub name: &'static str,
    kind: Kind,
    pub about: &'static str,
}

/// Every variable.
pub const VARIABLES: [Variable; 29] = [
    Variable {
        name: "source_url",
        kind: Kind::Text,
        about: "The job's source: `postgres://user:password@host:5432/db?sslmode=prefer` or `mysql://user:password@host:3306/db` (also `mariadb://`). Without it there is no environment job, and `walpipe run` runs the jobs of the state store.",
    },
    Variable {
        name: "sink_url",
        kind: Kind::Text,
        about: "The job's sink: `postgres://...` (a Postgres mirror or changelog), `http(s)://...` (webhook), `starrocks://user:password@fe-host:8030/db` (Stream Load) or `stdout:`.",
    },
    Variable { name: "job_name", kind: Kind::Text, about: "The name of the job the environment defines." },
    Variable {
        name: "tables",
        kind: Kind::Text,
        about: "The captured tables, `schema.table` comma-separated (quote names as in `\"Sales\".\"Order Items\"`). Unset: every table of schema `public` (PostgreSQL) or of the URL's database (MySQL).",
    },
    Variable { name: "slot_name", kind: Kind::Text, about: "The replication slot. Unset: `walpipe_<job>`." },
    Variable {
        name: "publication_name",
        kind: Kind::Text,
        about: "The publication. Unset: `walpipe_<job>`.",
    },
    Variable { name: "batch_size", kind: Kind::Number, about: "At most this many changes per sink batch." },
    Variable {
        name: "flush_interval_ms",
        kind: Kind::Number,
        about: "At most this many milliseconds between a change's arrival and its batch's flush.",
    },
    Variable {
        name: "snapshot_mode",
        kind: Kind::Text,
        about: "When tables are copied: `initial` (at the first start), `initial_only` (copy, then succeed), `when_needed` (also after a lost slot or purged binlog), `never`.",
    },
    Variable {
        name: "snapshot_strategy",
        kind: Kind::Text,
        about: "How tables are copied: `chunked` (in chunks while the stream runs, no long transaction) or `exported` (under the new slot's snapshot; MySQL: the blocking snapshot).",
    },
    Variable {
        name: "start_position",
        kind: Kind::Text,
        about: "Where a new stream starts without a copy: `latest` or a position such as `0/1A3E5F8`.",
    },
    Variable { name: "parallel_tables", kind: Kind::Number, about: "Tables copied at the same time." },
    Variable {
        name: "sink_mode",
        kind: Kind::Text,
        about: "What a Postgres sink keeps: `mirror` (each row's current state) or `changelog` (one row per change).",
    },
    Variable {
        name: "table_mappings",
        kind: Kind::Text,
        about: "Destination names: `public.orders=raw.orders,public.customers=raw.customers`.",
    },
    Variable {
        name: "schema_drop",
        kind: Kind::Text,
        about: "What a column dropped on the source does to a Postgres destination: `drop` or `keep`.",
    },
    Variable {
        name: "on_table_error",
        kind: Kind::Text,
        about: "What a change a Postgres mirror cannot apply to one table does: `isolate` (that table waits, marked for a re-copy) or `fail` (the job fails).",
    },
    Variable {
        name: "heartbeat_interval_ms",
        kind: Kind::Number,
        about: "How often walpipe writes a heartbeat message into the source's WAL, so a quiet database's slot keeps moving; `0` turns it off.",
    },
    Variable {
        name: "http_addr",
        kind: Kind::Text,
        about: "Where `/`, `/metrics`, `/healthz`, `/readyz` and `/api/v1` are served; in a container `0.0.0.0:9898`, with `WALPIPE_API_TOKEN`.",
    },
    Variable {
        name: "api_token",
        kind: Kind::Text,
        about: "When set, the API requires `Authorization: Bearer <token>` and the console asks for it.",
    },
    Variable {
        name: "state_url",
        kind: Kind::Text,
        about: "The PostgreSQL database holding jobs, their state and history (schema `walpipe`). Unset: the sink if it is PostgreSQL, else the source.",
    },
    Variable { name: "webhook_url", kind: Kind::Text, about: "Where job state changes are POSTed." },
    Variable { name: "log_format", kind: Kind::Text, about: "`text` or `json`." },
    Variable { name: "log", kind: Kind::Text, about: "The log filter, in tracing's `EnvFilter` syntax." },
    Variable {
        name: "wal_volume_bytes",
        kind: Kind::Number,
        about: "The size of the volume holding the source's `pg_wal`, when you know it (walpipe cannot see the source's disks); exported as `walpipe_server_wal_volume_size_bytes`.",
    },
    Variable {
        name: "keepalive_confirm",
        kind: Kind::Bool,
        about: "With nothing in flight, confirm the server's keepalive position, so a quiet database does not pin WAL written elsewhere; `false` only to show what it prevents (`drills/idle-database.sh`).",
    },
    Variable {
        name: "sink_signing_secret",
        kind: Kind::Text,
        about: "Signs webhook requests: an HMAC-SHA256 of the body in a header.",
    },
    Variable {
        name: "outbox_tables",
        kind: Kind::Text,
        about: "Tables whose inserts are emitted as events (webhook and stdout sinks).",
    },
    Variable {
        name: "outbox_prefix",
        kind: Kind::Text,
        about: "Logical decoding messages with this prefix are emitted as events.",
    },
    Variable {
        name: "outbox_delete",
        kind: Kind::Bool,
        about: "Delete outbox rows once their events are delivered.",
    },
];

/// Every variable is parsed now, so a typo or a bad value fails early;
/// the fields that only the sidecar reads are read by it (issue 3).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
        "unknown environment variable {variable}: check its spelling against the configuration reference (docs/src/reference/configuration.md), or unset it"
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

/// A variable as the configuration reference shows it.
pub struct VariableReference {
    /// `WALPIPE_BATCH_SIZE`.
    pub variable: String,
    /// What the value must be.
    pub takes: &'static str,
    /// The default, as the environment would spell it; `None`: unset.
    pub default: Option<String>,
    pub about: &'static str,
}

/// Every variable with its default, read from an empty environment, so
/// the reference cannot disagree with the code.
pub fn reference() -> Result<Vec<VariableReference>, ConfigError> {
    let defaults = serde_json::to_value(Config::from_vars(std::iter::empty())?)
        .map_err(|e| ConfigError::Table(e.to_string()))?;
    Ok(VARIABLES
        .iter()
        .map(|variable| VariableReference {
            variable: format!("WALPIPE_{}", variable.name.to_uppercase()),
            takes: match variable.kind {
                Kind::Text => "text",
                Kind::Number => "a whole number",
                Kind::Bool => "true or false",
            },
            default: match &defaults[variable.name] {
                Value::Null => None,
                Value::String(text) => Some(text.clone()),
                other => Some(other.to_string()),
            },
            about: variable.about,
        })
        .collect())
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
            let Some(Variable { kind, .. }) = VARIABLES.iter().find(|known| known.name == name) else {
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
            .map(|Variable { name, kind, .. }| {
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
