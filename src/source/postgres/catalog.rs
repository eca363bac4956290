//! What the source's catalog says about the tables a job replicates:
//! columns with sink-compatible types, the key, the replica identity.

use tokio_postgres::Client;

use super::types::value_kind;
use crate::names::{TableName, quote_ident};
pub use crate::source::table::{GeneratedColumn, OfferedTable, SourceColumn, SourceTable};

/// Every ordinary or partitioned table outside the system schemas (and
/// walpipe's own), not a partition, with `reltuples` as its estimate.
pub async fn offered(client: &Client) -> Result<Vec<OfferedTable>, CatalogError> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'walpipe') AND n.nspname NOT LIKE 'pg\\_%' \
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let name = TableName { schema: row.try_get(0)?, name: row.try_get(1)? };
            Ok(OfferedTable { table: name.qualified(), estimated_rows: row.try_get(2)? })
        })
        .collect()
}

/// Refuses the first table without a key, for a sink that writes by key.
pub fn require_keys(tables: &[SourceTable]) -> Result<(), CatalogError> {
    match tables.iter().find(|t| t.is_keyless()) {
        Some(table) => Err(CatalogError::NoKey { table: table.qualified(), quoted: table.quoted() }),
        None => Ok(()),
    }
}

/// The catalog did not hold what the job needs; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "table {0} does not exist on the source: fix WALPIPE_TABLES (write schema.table, comma-separated; quote names as in \"Sales\".\"Order Items\")"
    )]
    Missing(String),
    #[error(
        "the source has no tables in schema public to replicate: create them, or name tables with WALPIPE_TABLES"
    )]
    NoTables,
    #[error(
        "table {table} has no primary key and no replica identity, so its updates and deletes cannot be replicated: run ALTER TABLE {quoted} REPLICA IDENTITY FULL on the source, or add a primary key"
    )]
    NoIdentity { table: String, quoted: String },
    #[error(
        "table {table} has REPLICA IDENTITY FULL but no primary key, which a Postgres mirror and StarRocks need to write rows by key: add a primary key (or a unique index and ALTER TABLE {quoted} REPLICA IDENTITY USING INDEX ...), or use WALPIPE_SINK_MODE=changelog, a webhook or stdout:"
    )]
    NoKey { table: String, quoted: String },
    #[error("reading the source catalog failed: {}", crate::pg::sql::describe(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// The tables named in `selection`, or every table of schema `public`,
/// each with its columns and key.
pub async fn tables(client: &Client, selection: &[TableName]) -> Result<Vec<SourceTable>, CatalogError> {
    let mut tables = Vec::new();
    for table_name in table_names(client, selection).await? {
        tables.push(table(client, &table_name.schema, &table_name.name).await?);
    }
    Ok(tables)
}

/// The tables named in `selection`, or every table of schema `public`
/// (partitioned tables through their root, never their partitions).
pub async fn table_names(client: &Client, selection: &[TableName]) -> Result<Vec<TableName>, CatalogError> {
    let names: Vec<TableName> = if selection.is_empty() {
        client
            .query(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
                &[],
            )
            .await?
            .iter()
            .map(|row| TableName { schema: row.get(0), name: row.get(1) })
            .collect()
    } else {
        selection.to_vec()
    };
    if names.is_empty() {
        return Err(CatalogError::NoTables);
    }
    Ok(names)
}

/// One table with its columns and key; an error when it cannot be replicated.
pub async fn table(client: &Client, schema: &str, name: &str) -> Result<SourceTable, CatalogError> {
    let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let found = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await?;
    let Some(found) = found else {
        return Err(CatalogError::Missing(format!("{schema}.{name}")));
    };
    let oid: u32 = found.get(0);
    let replica_identity: String = found.get(1);
    let partitioned: bool = found.get(2);
    // Generated columns are published from PostgreSQL 18 on (publish_generated_columns).
    let published_generated: bool =
        client.query_one("SELECT current_setting('server_version_num')::int >= 180000", &[]).await?.get(0);
    let rows = client
        .query(
            "SELECT a.attname::text, \
                    CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN format_type(a.atttypid, a.atttypmod) \
                         WHEN t.typtype = 'd' AND b.typnamespace = 'pg_catalog'::regnamespace \
                         THEN format_type(t.typbasetype, t.typtypmod) ELSE 'text' END, \
                    a.attnotnull, a.atttypid, a.attnum, a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type b ON b.oid = t.typbasetype \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await?;
    let (mut columns, mut generated) = (Vec::new(), Vec::new());
    for row in &rows {
        let is_generated: bool = row.get(5);
        if is_generated && !published_generated {
            generated.push(GeneratedColumn {
                name: row.get(0),
                sql_type: row.get(1),
                expression: row.get(6),
            });
        } else {
            columns.push(SourceColumn {
                name: row.get(0),
                sql_type: row.get(1),
                not_null: row.get(2),
                type_oid: row.get(3),
                kind: value_kind(row.get(3), None),
                attnum: row.get(4),
            });
        }
    }
    // The primary key first; else the replica identity index.
    let key: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = $1 AND i.indexrelid = ( \
                 SELECT indexrelid FROM pg_index WHERE indrelid = $1 AND (indisprimary OR indisreplident) \
                 ORDER BY indisprimary DESC LIMIT 1) \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let replica_identity = replica_identity.chars().next().unwrap_or('d');
    // REPLICA IDENTITY FULL without a key: every change carries the whole
    // old row, which is enough for every sink that does not write by key.
    if key.is_empty() && replica_identity != 'f' {
        return Err(CatalogError::NoIdentity { table: format!("{schema}.{name}"), quoted });
    }
    Ok(SourceTable {
        schema: schema.to_string(),
        name: name.to_string(),
        relid: oid,
        columns,
        pages_by_key: !key.is_empty(),
        key,
        replica_identity,
        partitioned,
        generated,
    })
}
