//! What `information_schema` says about the captured tables: columns in
//! their order, with walpipe's [`Format`] of each, and the primary key.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::chunks::reader::pages;
use super::chunks::signal::SIGNAL_TABLE;
use super::types::Format;
use crate::names::TableName;
use crate::source::table::{OfferedTable, SourceColumn, SourceTable};

/// Why the catalog could not be read or a table cannot be captured.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the source's catalog failed: {0}")]
    Query(#[from] mysql_async::Error),
    #[error(
        "{table}.{column} has type {column_type}, which walpipe does not read: leave the table out of WALPIPE_TABLES"
    )]
    Unsupported { table: String, column: String, column_type: String },
    #[error("no captured table was found: check WALPIPE_TABLES and the database in WALPIPE_SOURCE_URL")]
    Nothing,
}

/// The table's id (`SourceTable::relid`, and the id in its shapes). A binlog table id is not one: the server
/// hands out a new one whenever it opens the table again (after `FLUSH
/// TABLES`, a restart, an eviction from the table cache), and a sink takes
/// a new id for a table dropped and created again. So the id is the
/// table's name, hashed (FNV-1a): the same in every session, and a table
/// dropped and created again under its name is not told apart.
pub fn stable_id(schema: &str, name: &str) -> u32 {
    fnv1a(&format!("{schema}.{name}")).max(1)
}

/// What a binlog connection of a job's is for: each has its own replica id,
/// since the server drops a connection when another registers with its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaRole {
    /// The job's change stream.
    Stream,
    /// The monitor reading a binlog file's start time.
    Monitor,
}

/// A replica id for a job's binlog connection, stable per job and role and
/// unlikely to be a real replica's (those are small numbers).
pub fn replica_id(job: &str, role: ReplicaRole) -> u32 {
    let base = 1_000_000 + fnv1a(job) % 1_000_000_000;
    match role {
        ReplicaRole::Stream => base,
        ReplicaRole::Monitor => base + 2_000_000_000,
    }
}

/// The 32-bit FNV-1a hash of `text`: stable across builds and machines.
pub fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619))
}

/// A column as `information_schema.columns` lists it: schema, table, column,
/// data type, column type, nullable, ordinal, charset.
type CatalogRow = (String, String, String, String, String, String, u32, String);

/// The tables of `selection` (or every base table of `database` when it is
/// empty), as the catalog describes them now.
pub async fn tables(
    conn: &mut Conn,
    database: &str,
    selection: &[TableName],
) -> Result<Vec<SourceTable>, CatalogError> {
    let rows: Vec<CatalogRow> = conn
        .exec(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.column_type, c.is_nullable, \
                    c.ordinal_position, coalesce(c.character_set_name, '') \
             FROM information_schema.columns c JOIN information_schema.tables t \
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' \
             WHERE c.table_schema = ? ORDER BY c.table_schema, c.table_name, c.ordinal_position",
            (database,),
        )
        .await?;
    let keys: Vec<(String, String, String)> = conn
        .exec(
            "SELECT table_schema, table_name, column_name FROM information_schema.key_column_usage \
             WHERE constraint_name = 'PRIMARY' AND table_schema = ? ORDER BY table_name, ordinal_position",
            (database,),
        )
        .await?;
    // The chunked copy's signal table is walpipe's own, never captured.
    let wanted = |schema: &str, name: &str| {
        (selection.is_empty() && name != SIGNAL_TABLE)
            || selection.iter().any(|t| t.schema == schema && t.name == name)
    };
    let mut tables: Vec<SourceTable> = Vec::new();
    for (schema, name, column, data_type, column_type, nullable, ordinal, charset) in rows {
        if !wanted(&schema, &name) {
            continue;
        }
        let format = Format::of_catalog(&data_type, &column_type, charset == "binary").ok_or_else(|| {
            CatalogError::Unsupported {
                table: format!("{schema}.{name}"),
                column: column.clone(),
                column_type: column_type.clone(),
            }
        })?;
        if tables.last().is_none_or(|t| t.schema != schema || t.name != name) {
            let key: Vec<String> = keys
                .iter()
                .filter(|(s, n, _)| *s == schema && *n == name)
                .map(|(_, _, c)| c.clone())
                .collect();
            tables.push(SourceTable {
                schema: schema.clone(),
                name: name.clone(),
                relid: stable_id(&schema, &name),
                columns: Vec::new(),
                // binlog_row_image=FULL: an update or delete carries the whole old row.
                replica_identity: 'f',
                partitioned: false,
                generated: Vec::new(),
                pages_by_key: !key.is_empty(),
                key,
            });
        }
        if let Some(table) = tables.last_mut() {
            if table.key.contains(&column) {
                table.pages_by_key &= pages(&format);
            }
            table.columns.push(SourceColumn {
                name: column,
                sql_type: format.sql_type(),
                not_null: nullable == "NO",
                type_oid: format.postgres_type().oid,
                kind: format.kind(),
                attnum: i16::try_from(ordinal).unwrap_or(i16::MAX),
            });
        }
    }
    if tables.is_empty() {
        return Err(CatalogError::Nothing);
    }
    Ok(tables)
}

/// The formats of `schema.name`'s columns, by name.
pub async fn formats(
    conn: &mut Conn,
    schema: &str,
    name: &str,
) -> Result<Vec<(String, Format)>, CatalogError> {
    let rows: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT column_name, data_type, column_type, coalesce(character_set_name, '') FROM information_schema.columns \
             WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (schema, name),
        )
        .await?;
    rows.into_iter()
        .map(|(column, data_type, column_type, charset)| {
            Format::of_catalog(&data_type, &column_type, charset == "binary")
                .map(|format| (column.clone(), format))
                .ok_or(CatalogError::Unsupported { table: format!("{schema}.{name}"), column, column_type })
        })
        .collect()
}

/// Every base table of `schema` but walpipe's signal table, with InnoDB's
/// row estimate.
pub async fn offered(conn: &mut Conn, schema: &str) -> Result<Vec<OfferedTable>, mysql_async::Error> {
    let rows: Vec<(String, Option<u64>)> = conn
        .exec(
            "SELECT table_name, table_rows FROM information_schema.tables \
             WHERE table_schema = ? AND table_type = 'BASE TABLE' AND table_name <> ? ORDER BY table_name",
            (schema, SIGNAL_TABLE),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, rows)| OfferedTable {
            table: TableName { schema: schema.to_string(), name }.qualified(),
            estimated_rows: rows.and_then(|rows| i64::try_from(rows).ok()),
        })
        .collect())
}

/// The server's row estimate for `schema.name` (InnoDB's, rough).
pub async fn estimate(conn: &mut Conn, schema: &str, name: &str) -> Result<i64, mysql_async::Error> {
    let rows: Option<u64> = conn
        .exec_first(
            "SELECT coalesce(table_rows, 0) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            (schema, name),
        )
        .await?;
    Ok(rows.unwrap_or(0) as i64)
}
