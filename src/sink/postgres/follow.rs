//! Following a source table's new shape in its Postgres destination, inside
//! the sink transaction that applies the first change of that shape (so the
//! DDL, the rows and the checkpoint commit together, and a crash in between
//! replays the shape and converges).
//!
//! ```text
//!  S record ──> Shape (names, types, key) + source catalog now (attribute
//!     numbers, missing values, defaults) + the destination's columns with
//!     the attribute numbers recorded for them
//!     ──> evolve::plan ──> ALTER TABLE ... ──> walpipe.source_columns
//!  then: the destination's statements rebuilt for the shape's column order
//!  (a shape announced again unchanged by the stream keeps them when the plan is empty)
//! ```
//!
//! The catalog is read for every shape the stream announces, even one that
//! looks unchanged: `DROP COLUMN a; ADD COLUMN a` with the same type gives
//! the same Relation message, and only the attribute number tells that the
//! existing values are gone.
//!
//! Invariant: after [`Follower::follow`] the destination's statements take
//! rows in the order of the shape's columns, each value going to the
//! destination column of the same name.

use std::sync::Arc;

use tokio_postgres::Client;

use super::SinkError;
use super::evolve::{self, DestinationColumn, DropPolicy, Existing, ShapeColumn, SourceAttribute, Step};
use super::record::Record;
use super::schema::{self, Destination};
use crate::change::mirror_records::unescape;
use crate::change::value::{Scalar, ValueKind};
use crate::metrics::JobMetrics;
use crate::names::{TableName, quote_ident, quote_literal};
use crate::source::table::{ColumnHistory, SourceColumn, SourceTable};

mod columns;

pub use columns::seed_attnums;
use columns::{destination_columns, known_attnums, remember_attnums};

/// Type OIDs below this are built in and the same on every server.
const FIRST_NORMAL_OID: u32 = 16384;

/// Where a destination lives and which source table it mirrors.
#[derive(Debug, Clone)]
pub struct Place {
    pub source: TableName,
    pub destination: TableName,
    pub stage_index: usize,
    /// While an isolated table is rebuilt, `destination` is its shadow and
    /// this is the destination it replaces at the end of its copy.
    pub replaces: Option<TableName>,
}

pub struct Follower {
    job: String,
    /// The source's catalog, for what the shapes do not say (renames, defaults).
    history: Arc<dyn ColumnHistory>,
    drops: DropPolicy,
    metrics: Arc<JobMetrics>,
}

impl Follower {
    pub fn new(
        job: &str,
        history: Arc<dyn ColumnHistory>,
        drops: DropPolicy,
        metrics: Arc<JobMetrics>,
    ) -> Follower {
        Follower { job: job.to_string(), history, drops, metrics }
    }

    /// Makes the destination at `place` follow the shape in `record` (an
    /// `S` record) and returns its statements for that shape.
    pub async fn follow_record(
        &mut self,
        sink: &Client,
        place: &Place,
        record: &Record,
    ) -> Result<Destination, SinkError> {
        let shape = parse_shape(record).map_err(SinkError::Record)?;
        self.follow(sink, place, shape).await
    }

    /// Makes the destination at `place` follow the shape in `record`, which
    /// it had taken before: `true` when that changed the destination (its
    /// statements must be made again), for instance a column dropped and
    /// added again under its name.
    pub async fn refollow_record(
        &mut self,
        sink: &Client,
        place: &Place,
        record: &Record,
    ) -> Result<bool, SinkError> {
        let shape = parse_shape(record).map_err(SinkError::Record)?;
        self.evolve(sink, place, shape).await.map(|(changed, _)| changed)
    }

    /// The destination's columns that the source does not have (added by a
    /// person, or kept under `WALPIPE_SCHEMA_DROP=keep`): not in `record`'s
    /// shape, and not known to come from a source attribute.
    pub async fn columns_the_source_lacks(
        &self,
        sink: &Client,
        place: &Place,
        record: &Record,
    ) -> Result<Vec<String>, SinkError> {
        let shape = parse_shape(record).map_err(SinkError::Record)?;
        let destination = destination_columns(sink, &self.job, place).await?;
        Ok(destination
            .into_iter()
            .filter(|d| d.attnum.is_none() && !shape.iter().any(|c| c.name == d.name))
            .map(|d| d.name)
            .collect())
    }

    /// The job whose destinations these are.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// What a dropped source column (or table) does to its destination.
    pub fn drops(&self) -> DropPolicy {
        self.drops
    }

    /// Creates the destination of a table first seen in the stream (created
    /// on the source after the job started) from the shape in `record`, and
    /// returns its statements; `None` when the shape has no key, which a
    /// mirror needs.
    pub async fn create_from_record(
        &mut self,
        sink: &Client,
        place: &Place,
        record: &Record,
    ) -> Result<Option<Destination>, SinkError> {
        let mut shape = parse_shape(record).map_err(SinkError::Record)?;
        if !shape.iter().any(|c| c.is_key) {
            tracing::warn!(job = %self.job, table = %place.source,
                "a new table has no primary key: it is not mirrored (add one, then restart the job to copy it)");
            return Ok(None);
        }
        resolve_types(sink, &mut shape, &[]).await?;
        schema::create(sink, &source_table(place, &shape), &place.destination).await?;
        tracing::info!(job = %self.job, table = %place.source, destination = %place.destination,
            "a table created on the source is mirrored from its first change");
        self.follow(sink, place, shape).await.map(Some)
    }

    /// Makes the destination follow the source catalog's shape of `table`
    /// (before a copy, which replaces every row).
    pub async fn follow_catalog(
        &mut self,
        sink: &Client,
        place: &Place,
        table: &SourceTable,
    ) -> Result<Destination, SinkError> {
        let shape = table
            .columns
            .iter()
            .map(|c| ShapeColumn {
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_modifier: -1,
                is_key: table.key.contains(&c.name),
                sql_type: c.sql_type.clone(),
            })
            .collect();
        self.follow(sink, place, shape).await
    }

    async fn follow(
        &mut self,
        sink: &Client,
        place: &Place,
        shape: Vec<ShapeColumn>,
    ) -> Result<Destination, SinkError> {
        let (_, shape) = self.evolve(sink, place, shape).await?;
        let table = source_table(place, &shape);
        schema::prepare(sink, &table, &place.destination, place.stage_index).await.map_err(SinkError::from)
    }

    /// Alters the destination at `place` to take `shape`; `true` when it
    /// changed (or what walpipe knows of its columns did). Returns the shape
    /// with its destination types.
    async fn evolve(
        &mut self,
        sink: &Client,
        place: &Place,
        mut shape: Vec<ShapeColumn>,
    ) -> Result<(bool, Vec<ShapeColumn>), SinkError> {
        let quoted = place.destination.quoted();
        let destination = destination_columns(sink, &self.job, place).await?;
        resolve_types(sink, &mut shape, &destination).await?;
        // Always the catalog: a column dropped and added again under its
        // name and type looks the same in the shape, and only its attribute
        // number tells that its existing values are gone.
        let catalog = self.source_now(&place.source).await?;
        let origins = evolve::origins(&shape, &catalog);
        let pairs = cast_pairs(&destination, &shape);
        let plain = plain_casts(sink, &pairs).await?;
        let plan = evolve::plan(&destination, &shape, &origins, self.drops, |from, to| {
            plain.iter().any(|(f, t)| f == from && t == to)
        });
        for step in &plan.steps {
            let sql = step_sql(&quoted, step);
            sink.batch_execute(&sql).await.map_err(|error| SinkError::Schema {
                table: place.source.qualified(),
                statement: sql.clone(),
                detail: crate::pg::sql::describe(&error),
            })?;
            tracing::info!(job = %self.job, table = %place.source, destination = %place.destination, step = ?step, "followed a schema change");
        }
        let attnums = known_attnums(&shape, &origins, &destination, &plan);
        let recorded: Vec<Option<i16>> = shape
            .iter()
            .map(|c| destination.iter().find(|d| d.name == c.name).and_then(|d| d.attnum))
            .collect();
        let changed = !plan.steps.is_empty() || attnums != recorded;
        if changed {
            remember_attnums(sink, &self.job, place, &shape, &attnums).await?;
        }
        for reason in &plan.recopy_reasons {
            tracing::warn!(job = %self.job, table = %place.source, %reason,
                "existing rows of the destination may differ from the source: copy the table again");
            crate::checkpoint::marks::mark_recopy(sink, &self.job, &place.source, reason).await?;
            self.metrics.status.needs_recopy(&place.source.qualified(), reason);
        }
        Ok((changed, shape))
    }

    /// The source catalog's attributes of `table` now, dropped ones included.
    async fn source_now(&self, table: &TableName) -> Result<Vec<SourceAttribute>, SinkError> {
        self.history.columns_now(table).await.map_err(SinkError::SchemaSource)
    }
}

/// A shape as the description `schema` builds destinations from.
fn source_table(place: &Place, shape: &[ShapeColumn]) -> SourceTable {
    SourceTable {
        schema: place.source.schema.clone(),
        name: place.source.name.clone(),
        relid: 0,
        key: shape.iter().filter(|c| c.is_key).map(|c| c.name.clone()).collect(),
        columns: shape
            .iter()
            .map(|c| SourceColumn {
                name: c.name.clone(),
                sql_type: c.sql_type.clone(),
                not_null: c.is_key,
                type_oid: c.type_oid,
                // Destinations are declared by `sql_type`; no value is written from here.
                kind: ValueKind::Scalar(Scalar::Text),
                attnum: 0,
            })
            .collect(),
        replica_identity: 'd',
        partitioned: false,
        generated: Vec::new(),
        pages_by_key: false,
    }
}

/// The shape an `S` record carries (see `change::mirror_records`); types unresolved.
fn parse_shape(record: &Record) -> Result<Vec<ShapeColumn>, String> {
    let fields = record.values_from_start();
    if fields.len() % 4 != 0 {
        return Err(format!("a shape record has {} column fields", fields.len()));
    }
    fields
        .chunks(4)
        .map(|chunk| {
            let text = |field: &[u8]| {
                unescape(field)
                    .map(|value| String::from_utf8_lossy(&value).into_owned())
                    .ok_or_else(|| "a shape record has a null field".to_string())
            };
            Ok(ShapeColumn {
                name: text(chunk[0])?,
                type_oid: text(chunk[1])?.parse().map_err(|_| "a shape record has a bad type oid")?,
                type_modifier: text(chunk[2])?.parse().map_err(|_| "a shape record has a bad modifier")?,
                is_key: chunk[3] == b"t",
                sql_type: String::new(),
            })
        })
        .collect()
}

/// Fills in each shape column's destination type: the built-in type as the
/// sink prints it, else the type the destination already has for that
/// name, else text (a type the sink may not have).
async fn resolve_types(
    sink: &Client,
    shape: &mut [ShapeColumn],
    destination: &[DestinationColumn],
) -> Result<(), SinkError> {
    let oids: Vec<u32> = shape.iter().map(|c| c.type_oid).collect();
    let modifiers: Vec<i32> = shape.iter().map(|c| c.type_modifier).collect();
    let built_in = sink
        .query(
            "SELECT format_type(o, m) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(o, m, i) ORDER BY i",
            &[&oids, &modifiers],
        )
        .await?;
    for (column, row) in shape.iter_mut().zip(&built_in) {
        if !column.sql_type.is_empty() {
            continue;
        }
        column.sql_type = if column.type_oid < FIRST_NORMAL_OID {
            row.get(0)
        } else {
            destination
                .iter()
                .find(|d| d.name == column.name)
                .map_or_else(|| "text".to_string(), |d| d.sql_type.clone())
        };
    }
    Ok(())
}

/// The (destination type, shape type) pairs a plan may ask about: a column
/// kept by name, or a gone column against a new one (a rename), whose types differ.
fn cast_pairs(destination: &[DestinationColumn], shape: &[ShapeColumn]) -> Vec<(String, String)> {
    let in_shape = |name: &str| shape.iter().any(|c| c.name == name);
    let in_destination = |name: &str| destination.iter().any(|d| d.name == name);
    let mut pairs = Vec::new();
    for d in destination {
        for s in shape {
            let related = d.name == s.name || (!in_shape(&d.name) && !in_destination(&s.name));
            let pair = (d.sql_type.clone(), s.sql_type.clone());
            if related && pair.0 != pair.1 && !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    pairs
}

/// The pairs the source could change without `USING`: an implicit or
/// assignment cast, or the same type with another modifier.
async fn plain_casts(sink: &Client, pairs: &[(String, String)]) -> Result<Vec<(String, String)>, SinkError> {
    let mut plain = Vec::new();
    for (from, to) in pairs {
        let row = sink
            .query_one(
                "SELECT $1::text::regtype = $2::text::regtype OR EXISTS (SELECT 1 FROM pg_cast \
                 WHERE castsource = $1::text::regtype AND casttarget = $2::text::regtype AND castcontext IN ('i', 'a'))",
                &[from, to],
            )
            .await?;
        if row.get::<_, bool>(0) {
            plain.push((from.clone(), to.clone()));
        }
    }
    Ok(plain)
}

fn step_sql(table: &str, step: &Step) -> String {
    match step {
        Step::Rename { from, to } => {
            format!("ALTER TABLE {table} RENAME COLUMN {} TO {}", quote_ident(from), quote_ident(to))
        }
        Step::Add { name, sql_type, existing: Existing::Value(value) } => format!(
            // The source's missing value as the default of the ADD (PostgreSQL
            // then stores it as the missing value of existing rows, without a
            // rewrite), then no default: rows come with their values.
            "ALTER TABLE {table} ADD COLUMN {0} {sql_type} DEFAULT ({1}::{sql_type}[])[1]; \
             ALTER TABLE {table} ALTER COLUMN {0} DROP DEFAULT",
            quote_ident(name),
            quote_literal(value)
        ),
        Step::Add { name, sql_type, .. } => {
            format!("ALTER TABLE {table} ADD COLUMN {} {sql_type}", quote_ident(name))
        }
        Step::Retype { name, sql_type } => format!(
            "ALTER TABLE {table} ALTER COLUMN {0} TYPE {sql_type} USING {0}::{sql_type}",
            quote_ident(name)
        ),
        Step::Drop { name } => format!("ALTER TABLE {table} DROP COLUMN {}", quote_ident(name)),
        Step::Keep { name } => {
            format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote_ident(name))
        }
        Step::KeepAside { name, aside } => format!(
            "ALTER TABLE {table} RENAME COLUMN {0} TO {1}; ALTER TABLE {table} ALTER COLUMN {1} DROP NOT NULL",
            quote_ident(name),
            quote_ident(aside)
        ),
    }
}
