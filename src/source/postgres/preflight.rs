//! Checks before streaming, each failing with the fix in one sentence.
//!
//! The server would refuse most of these too, but later and less clearly
//! (a missing publication only shows when the first change is decoded,
//! and PostgreSQL 18 merely warns), so walpipe asks first.

use tokio_postgres::Client;

use crate::names::quote_literal;
use crate::pg::Connection;
use crate::pg::SourceError;
use crate::source::postgres::relations::{PrimaryKeys, Signature, Signatures};

/// Checks that `slot` and `publication` can be streamed on this connection's database.
pub async fn check_stream(conn: &mut Connection, slot: &str, publication: &str) -> Result<(), SourceError> {
    let wal_level = conn.simple_query("SHOW wal_level").await?;
    let wal_level = wal_level.first("wal_level").unwrap_or("unknown");
    if wal_level != "logical" {
        return Err(SourceError::Unusable(format!(
            "the source has wal_level = {wal_level}, but logical decoding needs wal_level = logical: run ALTER SYSTEM SET wal_level = logical on the source and restart it"
        )));
    }

    let slots = conn
        .simple_query(&format!(
            "SELECT plugin, database, slot_type, wal_status, active_pid::text AS active_pid, current_database() AS here \
             FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    if slots.rows.is_empty() {
        return Err(SourceError::Unusable(format!(
            "replication slot {slot:?} does not exist on the source: create it with SELECT pg_create_logical_replication_slot({}, 'pgoutput'), or pass an existing slot",
            quote_literal(slot)
        )));
    }
    if slots.first("slot_type") != Some("logical") || slots.first("plugin") != Some("pgoutput") {
        return Err(SourceError::Unusable(format!(
            "replication slot {slot:?} uses plugin {:?}, but walpipe needs a logical slot with pgoutput: create one with SELECT pg_create_logical_replication_slot('name', 'pgoutput')",
            slots.first("plugin").unwrap_or("none")
        )));
    }
    if slots.first("database") != slots.first("here") {
        return Err(SourceError::Unusable(format!(
            "replication slot {slot:?} belongs to database {:?}: put that database in the source URL",
            slots.first("database").unwrap_or("?")
        )));
    }
    if slots.first("wal_status") == Some("lost") {
        return Err(SourceError::Unusable(format!(
            "replication slot {slot:?} was invalidated (wal_status = lost) and its changes are gone: drop it and create a new one, then re-copy the tables"
        )));
    }
    if let Some(pid) = slots.first("active_pid") {
        return Err(SourceError::Unusable(format!(
            "replication slot {slot:?} is in use by server process {pid}: stop the other consumer, or use another slot"
        )));
    }

    let publications = conn
        .simple_query(&format!(
            "SELECT 1 AS found FROM pg_publication WHERE pubname = {}",
            quote_literal(publication)
        ))
        .await?;
    if publications.rows.is_empty() {
        return Err(SourceError::Unusable(format!(
            "publication {publication:?} does not exist in the source database: create it with CREATE PUBLICATION {} FOR ALL TABLES (or FOR TABLE ...), or pass an existing publication",
            crate::names::quote_ident(publication)
        )));
    }
    Ok(())
}

/// What the publication's tables are now: their primary keys, and the
/// columns they publish.
#[derive(Debug, Default)]
pub struct Published {
    pub primary_keys: PrimaryKeys,
    pub signatures: Signatures,
}

/// The primary keys of the publication's tables, in key order, and the
/// published columns of each (a column list, PostgreSQL 15 and later, leaves
/// some out; generated columns are not sent), as the catalog has them now.
/// One query, since planning one over `pg_publication_tables` costs a new
/// session about 5 ms (`benches/restart_to_first_row.sh`).
///
/// Asked on a SQL session, never on the replication one: reading
/// `pg_publication_tables` opens each table, and a PostgreSQL 18 walsender
/// keeps the descriptors it loaded then. Its first decoded changes would
/// carry today's shape: an insert made before a rename and an `ADD COLUMN
/// ... DEFAULT 7` came out under the new name, with `"extra": 7`.
pub async fn published(catalog: &Client, publication: &str) -> Result<Published, tokio_postgres::Error> {
    let rows = catalog
        .query(
            "SELECT c.oid, pt.schemaname::text, pt.tablename::text, array_agg(a.attname::text ORDER BY a.attnum), \
                    array_agg(a.atttypid ORDER BY a.attnum), array_agg(a.atttypmod ORDER BY a.attnum), \
                    (SELECT array_agg(k.attname::text ORDER BY array_position(i.indkey::int2[], k.attnum)) \
                     FROM pg_index i JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey) \
                     WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             WHERE pt.pubname = $1 \
               AND (NOT to_jsonb(pt) ? 'attnames' \
                    OR a.attname IN (SELECT jsonb_array_elements_text(to_jsonb(pt) -> 'attnames'))) \
             GROUP BY 1, 2, 3",
            &[&publication],
        )
        .await?;
    let mut published = Published::default();
    for row in &rows {
        let (schema, table): (String, String) = (row.try_get(1)?, row.try_get(2)?);
        let (names, types, modifiers): (Vec<String>, Vec<u32>, Vec<i32>) =
            (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
        let columns = names.into_iter().zip(types).zip(modifiers).map(|((n, t), m)| (n, t, m)).collect();
        published.signatures.insert(row.try_get(0)?, Signature::new(&schema, &table, columns));
        if let Some(key) = row.try_get::<_, Option<Vec<String>>>(6)? {
            published.primary_keys.insert((schema, table), key);
        }
    }
    Ok(published)
}
