//! Checks before streaming, each failing with the fix in one sentence.
//!
//! The server would refuse most of these too, but later and less clearly
//! (a missing publication only shows when the first change is decoded,
//! and PostgreSQL 18 merely warns), so walpipe asks first.

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

/// The tables of a publication (`pt`), with their namespace (`n`) and class (`c`).
const PUBLISHED_TABLES: &str = "FROM pg_publication_tables pt \
     JOIN pg_namespace n ON n.nspname = pt.schemaname \
     JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename";

/// The primary keys of the publication's tables, in key order.
pub async fn primary_keys(conn: &mut Connection, publication: &str) -> Result<PrimaryKeys, SourceError> {
    // Column names are joined with the unit separator, which no sane name holds.
    let result = conn
        .simple_query(&format!(
            "SELECT pt.schemaname, pt.tablename, \
                    string_agg(a.attname, chr(31) ORDER BY array_position(i.indkey::int2[], a.attnum)) AS key \
             {PUBLISHED_TABLES} \
             JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey) \
             WHERE pt.pubname = {} GROUP BY 1, 2",
            quote_literal(publication)
        ))
        .await?;
    Ok(result
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(schema), Some(table), Some(key)] => {
                Some(((schema.clone(), table.clone()), key.split('\u{1f}').map(str::to_string).collect()))
            }
            _ => None,
        })
        .collect())
}

/// The published columns of each published table, as the catalog has them
/// now (a column list, PostgreSQL 15 and later, leaves some out; generated
/// columns are not sent).
pub async fn signatures(conn: &mut Connection, publication: &str) -> Result<Signatures, SourceError> {
    let result = conn
        .simple_query(&format!(
            "SELECT c.oid::text, pt.schemaname, pt.tablename, \
                    string_agg(a.attname || chr(30) || a.atttypid::text || chr(30) || a.atttypmod::text, chr(31) ORDER BY a.attnum) \
             {PUBLISHED_TABLES} \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             WHERE pt.pubname = {} \
               AND (NOT to_jsonb(pt) ? 'attnames' \
                    OR a.attname IN (SELECT jsonb_array_elements_text(to_jsonb(pt) -> 'attnames'))) \
             GROUP BY 1, 2, 3",
            quote_literal(publication)
        ))
        .await?;
    Ok(result
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(relid), Some(schema), Some(table), Some(columns)] => {
                let columns = columns.split('\u{1f}').map(column).collect::<Option<Vec<_>>>()?;
                Some((relid.parse().ok()?, Signature::new(schema, table, columns)))
            }
            _ => None,
        })
        .collect())
}

/// `name<RS>type oid<RS>modifier`.
fn column(text: &str) -> Option<(String, u32, i32)> {
    let mut parts = text.split('\u{1e}');
    Some((parts.next()?.to_string(), parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
