//! A fresh start: a new slot, then the copy its snapshot mode and strategy
//! ask for, and the checkpoint that marks the start as complete.
//!
//! Invariants:
//! - The checkpoint is written last: a crash before it leaves a slot
//!   without a checkpoint, which the next start drops (an exported copy may
//!   be incomplete).
//! - A chunked start records every table as to copy in the same write, so
//!   the copies resume after a crash; a table without a key is copied under
//!   the slot's exported snapshot first, since it has nothing to page through.
//! - The exported snapshot is used while the connection that created the
//!   slot is idle, as the server requires.

use super::JobError;
use super::catalog_watch;
use super::runner::{SetUp, Start, outbox_cleanup};
use super::spec::{SnapshotMode, SnapshotStrategy};
use crate::checkpoint::{marks as recopy_marks, positions as checkpoint};
use crate::chunked::plan;
use crate::chunked::progress::CopyProgress;
use crate::lifecycle::{Phase, State};
use crate::pg::Connection;
use crate::position::Position;
use crate::sink::AnySink;
use crate::source::postgres::catalog;
use crate::source::copy::Snapshot;
use crate::source::postgres::snapshot;

/// What a fresh start does with the destinations' rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destinations {
    /// A first start or a restart: a chunked copy empties them first.
    StartOver,
    /// After a lost slot: they keep serving while each table's chunked copy
    /// reconciles them (an exported copy replaces them table by table).
    Keep,
}

/// A new slot, the copy the mode asks for (exported: now, under the
/// slot's snapshot; chunked: recorded as to do, beside the stream), and the
/// checkpoint that marks the start as complete.
pub(super) async fn start_fresh(
    setup: &SetUp<'_>,
    repl: &mut Connection,
    out: &mut AnySink,
    destinations: Destinations,
) -> Result<Start, JobError> {
    let SetUp { spec, metrics, source_sql, sink, tables } = *setup;
    checkpoint::forget_checkpoint(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
    catalog_watch::record_current(spec, source_sql, sink).await.map_err(JobError::SinkSetup)?;
    // initial_only needs the slot only for its snapshot: a temporary one goes away with the connection.
    let only_copy = spec.snapshot_mode == SnapshotMode::InitialOnly;
    let created = repl.create_slot(&spec.slot, only_copy).await?;
    tracing::info!(slot = %spec.slot, consistent_point = %created.consistent_point, "created the slot");
    let mut to_copy = CopyProgress::new();
    let start = match (spec.snapshot_mode, &created.snapshot_name) {
        (SnapshotMode::Never, _) | (_, None) => {
            spec.start_position.unwrap_or(created.consistent_point).max(created.consistent_point)
        }
        // initial_only has no stream for chunks to join.
        (SnapshotMode::Initial | SnapshotMode::WhenNeeded, Some(snapshot))
            if spec.snapshot_strategy == SnapshotStrategy::Chunked =>
        {
            let reconcile = destinations == Destinations::Keep;
            if !reconcile {
                out.start_over().await?;
            }
            // A table without a key has nothing to page through: it is copied
            // now, under the slot's snapshot, the others beside the stream.
            let keyless: Vec<catalog::SourceTable> =
                tables.iter().filter(|t| t.is_keyless()).cloned().collect();
            if !keyless.is_empty() {
                for table in &keyless {
                    tracing::info!(job = %spec.name, table = %table.qualified(),
                        "snapshot {}: it has no primary key (REPLICA IDENTITY FULL), so it is copied under the slot's exported snapshot before streaming", table.qualified());
                }
                exported_copy(setup, out, &keyless, snapshot, created.consistent_point).await?;
            }
            let order: Vec<String> = tables.iter().map(catalog::SourceTable::qualified).collect();
            let wanted = plan::Wanted { requests: &spec.copy_requests, ..plan::Wanted::default() };
            to_copy = plan::fresh(&order, wanted, created.consistent_point);
            for (table, copy) in &mut to_copy {
                copy.reconcile = reconcile;
                copy.done = keyless.iter().any(|t| &t.qualified() == table);
            }
            tracing::info!(job = %spec.name, tables = to_copy.len() - keyless.len(), "the tables will be copied in chunks while the slot streams");
            recopy_marks::clear_recopy(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
            metrics.status.recopied();
            created.consistent_point
        }
        (_, Some(snapshot)) => {
            exported_copy(setup, out, tables, snapshot, created.consistent_point).await?;
            // Every table was copied again: none needs a re-copy any more.
            recopy_marks::clear_recopy(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
            metrics.status.recopied();
            created.consistent_point
        }
    };
    if only_copy {
        return Ok(Start::Finished);
    }
    checkpoint::write_checkpoint(sink, &spec.name, &spec.slot, start, &to_copy)
        .await
        .map_err(JobError::SinkSetup)?;
    Ok(Start::At(start))
}

/// Copies `tables` under the new slot's exported snapshot `name`, before streaming.
async fn exported_copy(
    setup: &SetUp<'_>,
    out: &mut AnySink,
    tables: &[catalog::SourceTable],
    name: &str,
    consistent_point: Position,
) -> Result<(), JobError> {
    let SetUp { spec, metrics, source_sql, .. } = *setup;
    metrics.status.set_state(State::Running, Some(Phase::Snapshot));
    metrics.source_connected.set(1);
    let cleanup = outbox_cleanup(spec);
    let reader = snapshot::ExportedSnapshot { source: &spec.source, catalog: source_sql, name };
    let copy = Snapshot {
        parallel_tables: spec.parallel_tables,
        metrics,
        tables,
        consistent_point,
        reader: &reader,
        outbox_cleanup: cleanup.as_ref(),
    };
    let rows = out.copy(&copy).await?;
    tracing::info!(job = %spec.name, rows, "snapshot done");
    Ok(())
}
