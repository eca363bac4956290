//! The environment configuration (SPEC section 3), read with envy.
//!
//! Every `WALPIPE_*` variable must be one of the known ones: a typo must not
//! be silently ignored. Defaults live here and nowhere else.

use serde::Deserialize;

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
pub fn default_start_position() -> String {
    "latest".into()
}
pub fn default_schema_drop() -> String {
    "drop".into()
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
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let config: Config = envy::prefixed("WALPIPE_").from_iter(vars).map_err(|error| {
            let text = error.to_string();
            match text.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) {
                Some((name, _)) => ConfigError(format!(
                    "unknown environment variable WALPIPE_{}: check its spelling against the list in the README, or unset it",
                    name.to_uppercase()
                )),
                None => ConfigError(format!("invalid walpipe environment: {text}; fix the variable it names")),
            }
        })?;
        if !matches!(config.log_format.as_str(), "text" | "json") {
            return Err(ConfigError(format!(
                "WALPIPE_LOG_FORMAT={} is not a log format: use text or json",
                config.log_format
            )));
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
        assert!(error.to_string().to_lowercase().contains("batch_size"), "{error}");
    }
}
