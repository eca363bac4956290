//! What walpipe knows of a destination's columns: which source attribute
//! each came from (`walpipe.source_columns`), read with the destination's
//! catalog and written when a shape is followed.
//!
//! Invariant: an attribute number is recorded only where the source's
//! catalog told it (or a destination was made from that catalog), and a
//! shape older than the catalog never erases one.

use tokio_postgres::Client;

use super::Place;
use crate::sink::postgres::SinkError;
use crate::sink::postgres::evolve::{self, DestinationColumn, ShapeColumn, SourceAttribute};
use crate::source::table::SourceTable;

/// The destination's columns (walpipe's own left out), with the source
/// attribute numbers walpipe recorded for them.
pub(super) async fn destination_columns(
    sink: &Client,
    job: &str,
    place: &Place,
) -> Result<Vec<DestinationColumn>, SinkError> {
    let rows = sink
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), s.attnum \
             FROM pg_attribute a \
             LEFT JOIN walpipe.source_columns s ON s.job_name = $2 AND s.source_table = $3 AND s.column_name = a.attname \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
               AND a.attname NOT LIKE '\\_walpipe\\_%' ORDER BY a.attnum",
            &[&place.destination.quoted(), &job, &place.source.qualified()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| DestinationColumn { name: row.get(0), sql_type: row.get(1), attnum: row.get(2) })
        .collect())
}

/// The source attribute number of each shape column: where the catalog
/// tells it now, else what walpipe recorded for the destination column it
/// stays (a shape older than the catalog does not forget what was known).
pub(super) fn known_attnums(
    shape: &[ShapeColumn],
    origins: &[Option<&SourceAttribute>],
    destination: &[DestinationColumn],
    plan: &evolve::Plan,
) -> Vec<Option<i16>> {
    shape
        .iter()
        .zip(origins)
        .map(|(column, origin)| match origin {
            Some(attribute) => Some(attribute.attnum),
            None if plan.steps.iter().any(|step| step.adds_or_renames_to(&column.name)) => None,
            None => destination.iter().find(|d| d.name == column.name).and_then(|d| d.attnum),
        })
        .collect()
}

/// Records, for each column of the shape the destination now has, the
/// source attribute number it came from, where known.
pub(super) async fn remember_attnums(
    sink: &Client,
    job: &str,
    place: &Place,
    shape: &[ShapeColumn],
    attnums: &[Option<i16>],
) -> Result<(), SinkError> {
    let known: Vec<(&str, i16)> =
        shape.iter().zip(attnums).filter_map(|(c, a)| a.map(|a| (c.name.as_str(), a))).collect();
    let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
    let attnums: Vec<i16> = known.iter().map(|(_, attnum)| *attnum).collect();
    sink.execute(
        "DELETE FROM walpipe.source_columns WHERE job_name = $1 AND source_table = $2",
        &[&job, &place.source.qualified()],
    )
    .await?;
    sink.execute(
        "INSERT INTO walpipe.source_columns (job_name, source_table, column_name, attnum) \
         SELECT $1, $2, n, a FROM unnest($3::text[], $4::int2[]) AS u(n, a)",
        &[&job, &place.source.qualified(), &names, &attnums],
    )
    .await?;
    Ok(())
}

/// Records where the columns of a destination just created from the
/// source's catalog came from (nothing when walpipe knows it already).
pub async fn seed_attnums(
    sink: &Client,
    job: &str,
    place: &Place,
    table: &SourceTable,
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let attnums: Vec<i16> = table.columns.iter().map(|c| c.attnum).collect();
    sink.execute(
        "INSERT INTO walpipe.source_columns (job_name, source_table, column_name, attnum) \
         SELECT $1, $2, n, a FROM unnest($3::text[], $4::int2[]) AS u(n, a) \
         WHERE EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($5) AND attname = n AND NOT attisdropped) \
         ON CONFLICT DO NOTHING",
        &[&job, &place.source.qualified(), &names, &attnums, &place.destination.quoted()],
    )
    .await
    .map(drop)
}
