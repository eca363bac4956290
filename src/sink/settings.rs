//! What the sinks are told of their job: the part of its spec they read,
//! so that a sink depends on nothing above it.

use std::collections::HashMap;
use std::time::Duration;

use super::postgres::evolve::DropPolicy;
use super::postgres::isolation::OnTableError;
use crate::change::outbox::OutboxRules;
use crate::pg::ConnInfo;
use crate::secret::Secret;

/// How the Postgres sink writes changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// The current state of each source row.
    Mirror,
    /// One row per change.
    Changelog,
}

/// A job's settings as its sink sees them.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The job's name: the key of its checkpoint and its records.
    pub name: String,
    pub slot: String,
    /// Where the checkpoint is kept: the Postgres sink, or the state store.
    pub checkpoint_db: ConnInfo,
    pub signing_secret: Option<Secret>,
    pub outbox: OutboxRules,
    /// The job captures every table of its schemas (no table list), so new tables are discovered.
    pub captures_all_tables: bool,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub sink_mode: SinkMode,
    /// Source `schema.table` to destination (schema, table).
    pub table_mappings: HashMap<String, (String, String)>,
    pub schema_drop: DropPolicy,
    pub on_table_error: OnTableError,
}

impl SinkSettings {
    /// Where the rows of source table `schema.table` go.
    pub fn destination(&self, schema: &str, table: &str) -> (String, String) {
        self.table_mappings
            .get(&format!("{schema}.{table}"))
            .cloned()
            .unwrap_or_else(|| (schema.to_string(), table.to_string()))
    }
}
