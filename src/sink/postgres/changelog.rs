//! Changelog mode: one row per change (the change JSON of `walpipe tail`,
//! snapshot rows included), never updated afterwards.
//!
//! Table layout: `_walpipe_id` (the change id, primary key), `_walpipe_op`,
//! `_walpipe_lsn`, `_walpipe_commit_lsn`, `_walpipe_xid`,
//! `_walpipe_commit_time`, and the change's `key`, `old` and `new` rows as
//! jsonb, with `unchanged_toast`. With REPLICA IDENTITY FULL, `old` is the
//! full row before an update or delete.
//!
//! A table's shape is a row too: `_walpipe_op = 'schema'`, its column list
//! (name, type, key) in `new` as `{"columns": [...]}`, written when the
//! shape differs from the last one the table recorded (the server announces
//! a shape again after every reconnect).
//!
//! Invariant: a replayed change has the same id, and `ON CONFLICT
//! (_walpipe_id) DO NOTHING` keeps it from being inserted twice.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use tokio_postgres::{Client, Statement};

use super::mirror_writer::Discovery;
use super::{SinkError, Writer};
use crate::names::{TableName, quote_ident};

/// A changelog table and the changes pending for it.
#[derive(Clone)]
pub struct ChangelogTarget {
    pub quoted: String,
    insert: Statement,
    /// A JSON array of change lines, being built.
    pending: String,
    /// The columns of the last shape recorded, once read or written.
    shape: Option<serde_json::Value>,
}

/// Creates the changelog table for `source` as `schema.name` unless it exists.
pub async fn ensure(
    client: &Client,
    schema: &str,
    name: &str,
) -> Result<ChangelogTarget, tokio_postgres::Error> {
    let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}; \
             CREATE TABLE IF NOT EXISTS {quoted} ( \
                 _walpipe_id text PRIMARY KEY, _walpipe_op text NOT NULL, _walpipe_lsn pg_lsn, \
                 _walpipe_commit_lsn pg_lsn NOT NULL, _walpipe_xid bigint, _walpipe_commit_time timestamptz, \
                 key jsonb, old jsonb, new jsonb, unchanged_toast text[]); \
             CREATE INDEX IF NOT EXISTS {shapes} ON {quoted} (_walpipe_commit_lsn, _walpipe_lsn) \
                 WHERE _walpipe_op = 'schema';",
            quote_ident(schema),
            shapes = quote_ident(&format!("{name}_walpipe_shapes")),
        ))
        .await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {quoted} (_walpipe_id, _walpipe_op, _walpipe_lsn, _walpipe_commit_lsn, _walpipe_xid, \
                 _walpipe_commit_time, key, old, new, unchanged_toast) \
             SELECT x.id, x.op, x.lsn::pg_lsn, x.commit_lsn::pg_lsn, x.xid, x.commit_time, x.key, x.old, \
                 coalesce(x.new, CASE WHEN x.op = 'schema' THEN jsonb_build_object('columns', x.columns) \
                     || CASE WHEN x.renamed_from IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object('renamed_from', x.renamed_from) END END), \
                 x.unchanged_toast \
             FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, op text, lsn text, commit_lsn text, xid bigint, \
                 commit_time timestamptz, key jsonb, old jsonb, new jsonb, unchanged_toast text[], columns jsonb, renamed_from text) \
             ON CONFLICT (_walpipe_id) DO NOTHING"
        ))
        .await?;
    Ok(ChangelogTarget { quoted, insert, pending: String::new(), shape: None })
}

#[derive(Deserialize)]
struct Route<'a> {
    #[serde(borrow)]
    table: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    op: std::borrow::Cow<'a, str>,
    columns: Option<serde_json::Value>,
}

pub struct ChangelogWriter {
    /// By source table `schema.name`.
    targets: HashMap<String, ChangelogTarget>,
    /// Where a table first seen in the stream is logged, when the job takes
    /// every table of its schema.
    discovery: Option<Discovery>,
    pending: usize,
}

impl ChangelogWriter {
    pub fn new(targets: HashMap<String, ChangelogTarget>, discovery: Option<Discovery>) -> Self {
        ChangelogWriter { targets, discovery, pending: 0 }
    }

    /// The changelog table of `table`, created when the job discovers it.
    async fn target(
        &mut self,
        client: &Client,
        table: &str,
    ) -> Result<Option<&mut ChangelogTarget>, SinkError> {
        if !self.targets.contains_key(table) {
            let (Some(discovery), Some((schema, name))) = (&self.discovery, table.split_once('.')) else {
                return Ok(None);
            };
            let destination = discovery(&TableName::new(schema, name));
            let target = ensure(client, &destination.schema, &destination.name).await?;
            tracing::info!(%table, destination = %destination, "a table created on the source is logged from its first change");
            self.targets.insert(table.to_string(), target);
        }
        Ok(self.targets.get_mut(table))
    }
}

impl Writer for ChangelogWriter {
    async fn add(&mut self, client: &Client, line: Bytes) -> Result<bool, SinkError> {
        let route: Route<'_> = serde_json::from_slice(&line).map_err(|e| SinkError::Record(e.to_string()))?;
        let is_change = route.op != "schema";
        // Messages belong to no table; tables the job does not log are skipped.
        let Some(table) = route.table else { return Ok(is_change) };
        let Some(target) = self.target(client, table.as_ref()).await? else { return Ok(is_change) };
        if !is_change {
            if target.shape.is_none() {
                target.shape = last_shape(client, &target.quoted).await?;
            }
            if target.shape == route.columns {
                return Ok(false);
            }
            target.shape = route.columns;
        }
        let text = std::str::from_utf8(&line).map_err(|e| SinkError::Record(e.to_string()))?;
        target.pending.push(if target.pending.is_empty() { '[' } else { ',' });
        target.pending.push_str(text);
        self.pending += 1;
        Ok(is_change)
    }

    async fn apply(&mut self, client: &Client) -> Result<(), SinkError> {
        self.pending = 0;
        for target in self.targets.values_mut() {
            if target.pending.is_empty() {
                continue;
            }
            target.pending.push(']');
            let rows = std::mem::take(&mut target.pending);
            client.execute(&target.insert, &[&rows]).await?;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.pending
    }

    /// The tables and the shapes recorded in them (`pending` is empty then).
    type Saved = HashMap<String, ChangelogTarget>;

    fn save(&self) -> Self::Saved {
        self.targets.clone()
    }

    fn restore(&mut self, targets: Self::Saved) {
        self.targets = targets;
        self.pending = 0;
    }
}

/// The columns of the last shape recorded in a changelog table.
async fn last_shape(client: &Client, quoted: &str) -> Result<Option<serde_json::Value>, SinkError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT new -> 'columns' FROM {quoted} WHERE _walpipe_op = 'schema' \
                 ORDER BY _walpipe_commit_lsn DESC, _walpipe_lsn DESC LIMIT 1"
            ),
            &[],
        )
        .await?;
    Ok(row.and_then(|row| row.get(0)))
}
