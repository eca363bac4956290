//! Changelog mode: one row per change (the change JSON of SPEC section 2,
//! snapshot rows included), never updated afterwards.
//!
//! Table layout: `_walpipe_id` (the change id, primary key), `_walpipe_op`,
//! `_walpipe_lsn`, `_walpipe_commit_lsn`, `_walpipe_xid`,
//! `_walpipe_commit_time`, and the change's `key`, `old` and `new` rows as
//! jsonb, with `unchanged_toast`. With REPLICA IDENTITY FULL, `old` is the
//! full row before an update or delete.
//!
//! Invariant: a replayed change has the same id, and `ON CONFLICT
//! (_walpipe_id) DO NOTHING` keeps it from being inserted twice.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use tokio_postgres::{Client, Statement};

use super::{SinkError, Writer};
use crate::source::connection::quote_ident;

/// A changelog table and the changes pending for it.
pub struct ChangelogTarget {
    pub quoted: String,
    insert: Statement,
    /// A JSON array of change lines, being built.
    pending: String,
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
                 key jsonb, old jsonb, new jsonb, unchanged_toast text[]);",
            quote_ident(schema)
        ))
        .await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {quoted} (_walpipe_id, _walpipe_op, _walpipe_lsn, _walpipe_commit_lsn, _walpipe_xid, \
                 _walpipe_commit_time, key, old, new, unchanged_toast) \
             SELECT x.id, x.op, x.lsn::pg_lsn, x.commit_lsn::pg_lsn, x.xid, x.commit_time, x.key, x.old, x.new, \
                 x.unchanged_toast \
             FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, op text, lsn text, commit_lsn text, xid bigint, \
                 commit_time timestamptz, key jsonb, old jsonb, new jsonb, unchanged_toast text[]) \
             ON CONFLICT (_walpipe_id) DO NOTHING"
        ))
        .await?;
    Ok(ChangelogTarget { quoted, insert, pending: String::new() })
}

#[derive(Deserialize)]
struct Route<'a> {
    #[serde(borrow)]
    table: Option<std::borrow::Cow<'a, str>>,
}

pub struct ChangelogWriter {
    /// By source table `schema.name`.
    targets: HashMap<String, ChangelogTarget>,
    pending: usize,
}

impl ChangelogWriter {
    pub fn new(targets: HashMap<String, ChangelogTarget>) -> Self {
        ChangelogWriter { targets, pending: 0 }
    }
}

impl Writer for ChangelogWriter {
    async fn add(&mut self, _client: &Client, line: Bytes) -> Result<(), SinkError> {
        let route: Route<'_> = serde_json::from_slice(&line).map_err(|e| SinkError::Record(e.to_string()))?;
        // Messages belong to no table; tables the job does not log are skipped.
        let Some(table) = route.table else { return Ok(()) };
        let Some(target) = self.targets.get_mut(table.as_ref()) else { return Ok(()) };
        let text = std::str::from_utf8(&line).map_err(|e| SinkError::Record(e.to_string()))?;
        target.pending.push(if target.pending.is_empty() { '[' } else { ',' });
        target.pending.push_str(text);
        self.pending += 1;
        Ok(())
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
}
