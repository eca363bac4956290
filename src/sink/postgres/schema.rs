//! Destination tables in the sink, their staging tables, and the SQL that
//! applies a batch.
//!
//! A destination has the source's columns (same names, the source's types
//! when they are built in, else text), the same key, and one metadata
//! column, `_walpipe_lsn`: the commit LSN of the change that last wrote the
//! row (NULL for rows copied by the snapshot, older than any streamed
//! change). Every write is guarded by it, so a replayed older change never
//! overwrites a newer one.
//!
//! A batch is copied (COPY text) into a temporary staging table with the
//! destination's columns plus what the apply needs: the change's LSN, its
//! kind (`u` upsert, `t` update keeping unchanged TOAST, `m` key change
//! keeping unchanged TOAST, `d` delete), the positions of the kept columns,
//! and the old key for `m`. Then one statement per kind applies it.
//!
//! The staging table and its statements are made at a batch's first need
//! of them ([`Destination::staging`]), not with the destination: new rows
//! and a few whole rows go in without them, and making them cost a start's
//! first sink transaction about 8 ms (a session's first temporary table).
//! Invariant: a [`Destination`] says its staging is made only if it was
//! made on this session in a transaction that has not been rolled back
//! since; a clone taken before then (the writer's saved state) says it is
//! not, so a rollback that restores it makes it again.

use std::sync::Arc;

use tokio_postgres::{Client, Statement};

use crate::names::{TableName, quote_ident, quote_literal};
use crate::pg::binary_values::BinaryType;
use crate::source::table::SourceTable;

pub const LSN_COLUMN: &str = "_walpipe_lsn";
/// `pg_lsn`, the type of [`LSN_COLUMN`].
const PG_LSN_OID: u32 = 3220;

/// A destination table with its prepared statements, and its staging table
/// once a batch needed it.
#[derive(Clone)]
pub struct Destination {
    /// `"schema"."name"`.
    pub quoted: String,
    /// How many source columns (the width of a row in mirror records).
    pub width: usize,
    /// Positions of the key columns among them.
    pub key_positions: Vec<usize>,
    /// `COPY <destination> (columns, _walpipe_lsn) FROM STDIN`: new rows only.
    pub copy_new_rows: Statement,
    /// The upsert of one row given as parameters (`$1`...: the columns,
    /// then `_walpipe_lsn`, typed by the destination's columns), guarded as
    /// `upserts` is: a few rows go in this way, without staging.
    pub upsert_row: Statement,
    /// `COPY ... FROM STDIN (FORMAT binary)` of new rows, with each
    /// column's binary type, when every destination column has the source
    /// column's type and that type converts (`new_rows`).
    pub binary_new_rows: Option<BinaryNewRows>,
    /// How to make the staging table and its statements.
    staging_sql: Arc<StagingSql>,
    /// Made on this session: see the module's invariant.
    staging: Option<Staging>,
}

/// A destination's `COPY` of new rows in binary.
#[derive(Clone)]
pub struct BinaryNewRows {
    pub copy: Statement,
    pub types: Arc<[BinaryType]>,
    /// Whether the destination's columns have those types still (one
    /// boolean): checked after each binary `COPY` (`new_rows`).
    pub types_held: Statement,
}

/// The staging table's SQL, kept until a batch needs it.
struct StagingSql {
    stage: String,
    /// `DROP` (a shape change replaces it) and `CREATE TEMP TABLE`.
    create: String,
    copy_in: String,
    copy_upserts: String,
    moves: String,
    deletes: String,
    upserts: String,
    updates_keeping_toast: String,
}

/// A destination's staging table (`stage`) and the statements that use it.
#[derive(Clone)]
pub struct Staging {
    pub stage: String,
    /// `COPY <staging> FROM STDIN`.
    pub copy_in: Statement,
    /// `COPY <staging> (columns, _walpipe_lsn, _walpipe_op) FROM STDIN`:
    /// copied rows to upsert (op `u`), when some of their keys exist.
    pub copy_upserts: Statement,
    pub moves: Statement,
    pub deletes: Statement,
    pub upserts: Statement,
    pub updates_keeping_toast: Statement,
}

impl Destination {
    /// The staging table and its statements, made on `client` at the first call.
    pub async fn staging(&mut self, client: &Client) -> Result<&Staging, tokio_postgres::Error> {
        let staging = match self.staging.take() {
            Some(staging) => staging,
            None => make_staging(client, &self.staging_sql).await?,
        };
        Ok(self.staging.insert(staging))
    }
}

async fn make_staging(client: &Client, sql: &StagingSql) -> Result<Staging, tokio_postgres::Error> {
    client.batch_execute(&sql.create).await?;
    // Pipelined: the server answers them in order, in about one round trip.
    let (copy_in, copy_upserts, moves, deletes, upserts, updates_keeping_toast) = tokio::join!(
        client.prepare(&sql.copy_in),
        client.prepare(&sql.copy_upserts),
        client.prepare(&sql.moves),
        client.prepare(&sql.deletes),
        client.prepare(&sql.upserts),
        client.prepare(&sql.updates_keeping_toast),
    );
    Ok(Staging {
        stage: sql.stage.clone(),
        copy_in: copy_in?,
        copy_upserts: copy_upserts?,
        moves: moves?,
        deletes: deletes?,
        upserts: upserts?,
        updates_keeping_toast: updates_keeping_toast?,
    })
}

fn list<'a>(
    items: impl IntoIterator<Item = &'a String>,
    each: impl Fn(&String) -> String,
    separator: &str,
) -> String {
    items.into_iter().map(each).collect::<Vec<_>>().join(separator)
}

/// Creates the destination of `source` at `destination` unless it exists.
pub async fn create(
    client: &Client,
    source: &SourceTable,
    destination: &TableName,
) -> Result<(), tokio_postgres::Error> {
    let quoted = destination.quoted();
    let lsn = quote_ident(LSN_COLUMN);
    let definitions = source
        .columns
        .iter()
        .map(|c| {
            format!("{} {}{}", quote_ident(&c.name), c.sql_type, if c.not_null { " NOT NULL" } else { "" })
        })
        .chain(source.generated.iter().map(|g| {
            format!("{} {} GENERATED ALWAYS AS ({}) STORED", quote_ident(&g.name), g.sql_type, g.expression)
        }))
        .collect::<Vec<_>>()
        .join(", ");
    let key = list(&source.key, |k| quote_ident(k), ", ");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema_q}; \
             CREATE TABLE IF NOT EXISTS {quoted} ({definitions}, {lsn} pg_lsn, PRIMARY KEY ({key})); \
             ALTER TABLE {quoted} ADD COLUMN IF NOT EXISTS {lsn} pg_lsn;",
            schema_q = quote_ident(&destination.schema),
        ))
        .await
}

/// The statements of the destination `destination` for rows in the order
/// of `source`'s columns, and the SQL of its staging table (made anew at
/// its first need: a shape change changes it).
pub async fn prepare(
    client: &Client,
    source: &SourceTable,
    destination: &TableName,
    stage_index: usize,
) -> Result<Destination, tokio_postgres::Error> {
    let quoted = destination.quoted();
    let lsn = quote_ident(LSN_COLUMN);
    let key = list(&source.key, |k| quote_ident(k), ", ");
    // The staging table: no constraints (a delete stages only the key).
    let key_types: Vec<(String, String)> = source
        .key
        .iter()
        .map(|k| {
            let sql_type =
                source.columns.iter().find(|c| &c.name == k).map_or("text", |c| c.sql_type.as_str());
            (format!("_walpipe_old_{k}"), sql_type.to_string())
        })
        .collect();
    let stage = format!("pg_temp.{}", quote_ident(&format!("walpipe_stage_{stage_index}")));
    let stage_columns = source
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.sql_type))
        .chain([format!("{lsn} pg_lsn"), "_walpipe_op \"char\"".into(), "_walpipe_toast int[]".into()])
        .chain(key_types.iter().map(|(name, sql_type)| format!("{} {sql_type}", quote_ident(name))))
        .collect::<Vec<_>>()
        .join(", ");

    let names: Vec<&String> = source.columns.iter().map(|c| &c.name).collect();
    let non_key: Vec<&String> = names.iter().copied().filter(|n| !source.key.contains(n)).collect();
    let cols = list(names.iter().copied(), |c| quote_ident(c), ", ");
    let s_cols = list(names.iter().copied(), |c| format!("s.{}", quote_ident(c)), ", ");
    let key_match = list(&source.key, |k| format!("d.{0} = s.{0}", quote_ident(k)), " AND ");
    let guard = format!("(d.{lsn} IS NULL OR d.{lsn} <= s.{lsn})");
    let upsert_guard = format!("(d.{lsn} IS NULL OR d.{lsn} <= EXCLUDED.{lsn})");
    let mut set: Vec<String> =
        non_key.iter().map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c))).collect();
    set.push(format!("{lsn} = EXCLUDED.{lsn}"));
    let set = set.join(", ");
    let kept = |position: usize, column: &String, old: &str| {
        format!(
            "CASE WHEN {position} = ANY (s._walpipe_toast) THEN {old}.{0} ELSE s.{0} END",
            quote_ident(column)
        )
    };

    let upserts = format!(
        "INSERT INTO {quoted} AS d ({cols}, {lsn}) SELECT {s_cols}, s.{lsn} FROM {stage} s WHERE s._walpipe_op = 'u' \
         ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {upsert_guard}"
    );
    let parameters = (1..=names.len() + 1).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
    let upsert_row = format!(
        "INSERT INTO {quoted} AS d ({cols}, {lsn}) VALUES ({parameters}) \
         ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {upsert_guard}"
    );
    let moves = format!(
        "INSERT INTO {quoted} AS d ({cols}, {lsn}) SELECT {picked}, s.{lsn} FROM {stage} s JOIN {quoted} o ON {old_match} \
         WHERE s._walpipe_op = 'm' ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {upsert_guard}",
        picked = names.iter().enumerate().map(|(i, c)| kept(i, c, "o")).collect::<Vec<_>>().join(", "),
        old_match = list(
            &source.key,
            |k| format!("o.{} = s.{}", quote_ident(k), quote_ident(&format!("_walpipe_old_{k}"))),
            " AND "
        ),
    );
    let mut keep_set: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(_, c)| !source.key.contains(c))
        .map(|(i, c)| format!("{} = {}", quote_ident(c), kept(i, c, "d")))
        .collect();
    keep_set.push(format!("{lsn} = s.{lsn}"));
    let updates_keeping_toast = format!(
        "UPDATE {quoted} AS d SET {} FROM {stage} s WHERE s._walpipe_op = 't' AND {key_match} AND {guard}",
        keep_set.join(", ")
    );
    let deletes = format!(
        "DELETE FROM {quoted} AS d USING {stage} s WHERE s._walpipe_op = 'd' AND {key_match} AND {guard}"
    );

    let key_positions =
        source.key.iter().filter_map(|k| source.columns.iter().position(|c| &c.name == k)).collect();
    let staging_sql = StagingSql {
        create: format!("DROP TABLE IF EXISTS {stage}; CREATE TEMP TABLE {stage} ({stage_columns})"),
        copy_in: format!("COPY {stage} FROM STDIN"),
        copy_upserts: format!("COPY {stage} ({cols}, {lsn}, _walpipe_op) FROM STDIN"),
        moves,
        deletes,
        upserts,
        updates_keeping_toast,
        stage,
    };
    // Pipelined, as the staging's statements are.
    let copy_new_rows = format!("COPY {quoted} ({cols}, {lsn}) FROM STDIN");
    let types: Option<Arc<[BinaryType]>> =
        source.columns.iter().map(|c| BinaryType::of_oid(c.type_oid)).collect();
    let copy_binary = format!("{copy_new_rows} (FORMAT binary)");
    let types_held = format!(
        "SELECT count(*) = {} FROM pg_attribute WHERE attrelid = {}::regclass AND NOT attisdropped \
         AND (attname, atttypid) IN ({})",
        names.len() + 1,
        quote_literal(&quoted),
        source
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid))
            .chain([(LSN_COLUMN, PG_LSN_OID)])
            .map(|(name, oid)| format!("({}, {oid}::oid)", quote_literal(name)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let prepare_binary = async {
        match &types {
            Some(_) => {
                let (copy, types_held) =
                    tokio::join!(client.prepare(&copy_binary), client.prepare(&types_held));
                Ok::<_, tokio_postgres::Error>(Some((copy?, types_held?)))
            }
            None => Ok(None),
        }
    };
    let (copy_new_rows, upsert_row, copy_binary) =
        tokio::join!(client.prepare(&copy_new_rows), client.prepare(&upsert_row), prepare_binary);
    let upsert_row = upsert_row?;
    // The upsert's parameters are typed by the destination's columns.
    let destination_types = upsert_row.params().iter().map(|ty| ty.oid()).take(names.len());
    let same_types = source.columns.iter().map(|c| c.type_oid).eq(destination_types);
    let binary_new_rows = match (copy_binary?, types) {
        (Some((copy, types_held)), Some(types)) if same_types => {
            Some(BinaryNewRows { copy, types, types_held })
        }
        _ => None,
    };
    Ok(Destination {
        copy_new_rows: copy_new_rows?,
        upsert_row,
        binary_new_rows,
        quoted,
        width: source.columns.len(),
        key_positions,
        staging_sql: Arc::new(staging_sql),
        staging: None,
    })
}
