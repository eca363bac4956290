//! Destination tables in the sink, and the SQL that applies a batch to them.
//!
//! A destination has the source's columns (same names, the source's types
//! when they are built in, else text), the same key, and one metadata
//! column, `_walpipe_lsn`: the commit LSN of the change that last wrote the
//! row (NULL for rows copied by the snapshot, which are older than any
//! streamed change). Every write is guarded by it, so a replayed older
//! change never overwrites a newer one.
//!
//! Batches reach the database as one JSON array per table and kind, turned
//! into rows by `jsonb_populate_record`, whose input rules accept the change
//! JSON's values (numbers, strings for numeric and timestamps, `\x..` for
//! bytea, JSON arrays for arrays) for the column types.

use tokio_postgres::{Client, Statement};

use crate::source::catalog::SourceTable;
use crate::source::connection::{quote_ident, quote_literal};

pub const LSN_COLUMN: &str = "_walpipe_lsn";

/// A destination table with its prepared statements.
pub struct Destination {
    /// `"schema"."name"`.
    pub quoted: String,
    /// `[{"l": lsn, "r": row}]`: insert or update.
    pub upsert: Statement,
    /// `[{"l": lsn, "r": row, "t": [unchanged TOAST columns]}]`: update keeping those columns.
    pub update_keeping_toast: Statement,
    /// `[{"l": lsn, "r": row, "t": [unchanged TOAST columns], "k": old key}]`: a
    /// key change keeping those columns from the row under the old key.
    pub move_keeping_toast: Statement,
    /// `[{"l": lsn, "k": key}]`.
    pub delete: Statement,
}

/// Creates the destination of `source` as `schema.name` unless it exists,
/// and prepares its statements.
pub async fn ensure(
    client: &Client,
    source: &SourceTable,
    schema: &str,
    name: &str,
) -> Result<Destination, tokio_postgres::Error> {
    let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let columns: Vec<String> = source
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.not_null { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote_ident(&c.name), c.sql_type)
        })
        .collect();
    let key = list(&source.key, |k| quote_ident(k));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema_q}; \
             CREATE TABLE IF NOT EXISTS {quoted} ({columns}, {lsn} pg_lsn, PRIMARY KEY ({key})); \
             ALTER TABLE {quoted} ADD COLUMN IF NOT EXISTS {lsn} pg_lsn;",
            schema_q = quote_ident(schema),
            columns = columns.join(", "),
            lsn = quote_ident(LSN_COLUMN),
        ))
        .await?;

    let names: Vec<String> = source.columns.iter().map(|c| c.name.clone()).collect();
    let non_key: Vec<&String> = names.iter().filter(|n| !source.key.contains(n)).collect();
    let lsn = quote_ident(LSN_COLUMN);
    let guard = |incoming: &str| format!("(d.{lsn} IS NULL OR d.{lsn} <= {incoming})");
    let rows = |field: &str| {
        format!(
            "jsonb_array_elements($1::text::jsonb) AS b, jsonb_populate_record(NULL::{quoted}, b->'{field}') AS r"
        )
    };
    let key_match =
        source.key.iter().map(|k| format!("d.{0} = r.{0}", quote_ident(k))).collect::<Vec<_>>().join(" AND ");

    let mut set: Vec<String> =
        non_key.iter().map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c))).collect();
    set.push(format!("{lsn} = EXCLUDED.{lsn}"));
    let upsert = format!(
        "INSERT INTO {quoted} AS d ({cols}, {lsn}) SELECT {r_cols}, (b->>'l')::pg_lsn FROM {rows} \
         ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {guard}",
        cols = list(&names, |c| quote_ident(c)),
        r_cols = list(&names, |c| format!("r.{}", quote_ident(c))),
        rows = rows("r"),
        set = set.join(", "),
        guard = guard(&format!("EXCLUDED.{lsn}")),
    );

    let mut keep: Vec<String> = non_key
        .iter()
        .map(|c| {
            format!(
                "{0} = CASE WHEN (b->'t') ? {1} THEN d.{0} ELSE r.{0} END",
                quote_ident(c),
                quote_literal(c)
            )
        })
        .collect();
    keep.push(format!("{lsn} = (b->>'l')::pg_lsn"));
    let update_keeping_toast = format!(
        "UPDATE {quoted} AS d SET {keep} FROM {rows} WHERE {key_match} AND {guard}",
        keep = keep.join(", "),
        rows = rows("r"),
        guard = guard("(b->>'l')::pg_lsn"),
    );

    let move_keeping_toast = format!(
        "INSERT INTO {quoted} AS d ({cols}, {lsn}) SELECT {picked}, (b->>'l')::pg_lsn \
         FROM jsonb_array_elements($1::text::jsonb) AS b \
         CROSS JOIN LATERAL jsonb_populate_record(NULL::{quoted}, b->'r') AS r \
         CROSS JOIN LATERAL jsonb_populate_record(NULL::{quoted}, b->'k') AS k \
         JOIN {quoted} AS o ON {old_match} \
         ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {guard}",
        cols = list(&names, |c| quote_ident(c)),
        picked = list(&names, |c| format!(
            "CASE WHEN (b->'t') ? {1} THEN o.{0} ELSE r.{0} END",
            quote_ident(c),
            quote_literal(c)
        )),
        old_match = source
            .key
            .iter()
            .map(|k| format!("o.{0} = k.{0}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" AND "),
        set = set.join(", "),
        guard = guard(&format!("EXCLUDED.{lsn}")),
    );

    let delete = format!(
        "DELETE FROM {quoted} AS d USING {rows} WHERE {key_match} AND {guard}",
        rows = rows("k"),
        guard = guard("(b->>'l')::pg_lsn"),
    );

    Ok(Destination {
        upsert: client.prepare(&upsert).await?,
        update_keeping_toast: client.prepare(&update_keeping_toast).await?,
        move_keeping_toast: client.prepare(&move_keeping_toast).await?,
        delete: client.prepare(&delete).await?,
        quoted,
    })
}

fn list(items: &[String], each: impl Fn(&String) -> String) -> String {
    items.iter().map(each).collect::<Vec<_>>().join(", ")
}

/// The job state kept in the sink, next to the rows it describes.
pub async fn ensure_state(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS walpipe; \
             CREATE TABLE IF NOT EXISTS walpipe.checkpoints ( \
                 job_name text PRIMARY KEY, \
                 slot_name text NOT NULL, \
                 applied_lsn pg_lsn NOT NULL, \
                 updated_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
}
