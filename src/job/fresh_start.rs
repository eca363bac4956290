//! A fresh start: a new slot, then the copy its snapshot mode and strategy
//! ask for, and the checkpoint that marks the start as complete.
//!
//! Invariants:
//! - The checkpoint is written last: a crash before it leaves a slot
//!   without a checkpoint, which the next start drops (an exported copy may
//!   be incomplete).
//! - A chunked start records every table as to copy in the same write, so
//!   the copies resume after a crash; a table whose key cannot be paged
//!   through (none, or of a type the source cannot page) is copied under
//!   the slot's exported snapshot first. A chunked start of tables that all
//!   page asks the source for no snapshot (MySQL then takes no lock).
//! - The exported snapshot is used while the connection that created the
//!   slot is idle, as the server requires.

use super::JobError;
use super::runner::{SetUp, Start};
use super::spec::{SnapshotMode, SnapshotStrategy};
use crate::checkpoint::{marks as recopy_marks, positions as checkpoint};
use crate::chunked::plan;
use crate::chunked::progress::CopyProgress;
use crate::lifecycle::{Phase, State};
use crate::position::Position;
use crate::sink::AnySink;
use crate::source::copy::Snapshot;
use crate::source::setup::Source;
use crate::source::table::SourceTable;

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
pub(super) async fn start_fresh<S: Source>(
    setup: &SetUp<'_>,
    source: &mut S,
    out: &mut AnySink,
    destinations: Destinations,
) -> Result<Start, JobError> {
    let SetUp { spec, metrics, sink, tables, .. } = *setup;
    checkpoint::forget_checkpoint(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
    source.record_catalog(sink).await?;
    // initial_only needs the slot only for its snapshot: a temporary one goes away with the connection.
    let only_copy = spec.snapshot_mode == SnapshotMode::InitialOnly;
    // initial_only has no stream for chunks to join.
    let chunked = matches!(spec.snapshot_mode, SnapshotMode::Initial | SnapshotMode::WhenNeeded)
        && spec.snapshot_strategy == SnapshotStrategy::Chunked
        && S::CHUNKED_COPY;
    // A table whose key cannot be paged through is copied now, under the
    // new stream's snapshot, the others beside the stream.
    let unpaged: Vec<SourceTable> = tables.iter().filter(|t| !t.pages_by_key).cloned().collect();
    let wants_snapshot = spec.snapshot_mode != SnapshotMode::Never && (!chunked || !unpaged.is_empty());
    let created = source.new_stream(only_copy, wants_snapshot).await?;
    let mut to_copy = CopyProgress::new();
    let start = match (spec.snapshot_mode, &created.snapshot) {
        (SnapshotMode::Never, _) => {
            spec.start_position.unwrap_or(created.consistent_point).max(created.consistent_point)
        }
        (_, snapshot) if chunked => {
            let reconcile = destinations == Destinations::Keep;
            if !reconcile {
                out.start_over().await?;
            }
            if let (false, Some(snapshot)) = (unpaged.is_empty(), snapshot) {
                for table in &unpaged {
                    tracing::info!(job = %spec.name, table = %table.qualified(),
                        "snapshot {}: {}, so it is copied under the new stream's snapshot before streaming", table.qualified(), why_unpaged(table));
                }
                exported_copy(setup, &*source, out, &unpaged, snapshot, created.consistent_point).await?;
            }
            let order: Vec<String> = tables.iter().map(SourceTable::qualified).collect();
            let wanted = plan::Wanted { requests: &spec.copy_requests, ..plan::Wanted::default() };
            to_copy = plan::fresh(&order, wanted, created.consistent_point);
            for (table, copy) in &mut to_copy {
                copy.reconcile = reconcile;
                copy.done = unpaged.iter().any(|t| &t.qualified() == table);
            }
            tracing::info!(job = %spec.name, tables = to_copy.len() - unpaged.len(), "the tables will be copied in chunks while the slot streams");
            recopy_marks::clear_recopy(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
            metrics.status.recopied();
            created.consistent_point
        }
        (_, None) => spec.start_position.unwrap_or(created.consistent_point).max(created.consistent_point),
        (_, Some(snapshot)) => {
            if spec.snapshot_strategy == SnapshotStrategy::Chunked && !S::CHUNKED_COPY {
                tracing::info!(job = %spec.name,
                    "the source places no chunked copies in its stream: the tables are copied under the new stream's snapshot instead");
            }
            exported_copy(setup, &*source, out, tables, snapshot, created.consistent_point).await?;
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
async fn exported_copy<S: Source>(
    setup: &SetUp<'_>,
    source: &S,
    out: &mut AnySink,
    tables: &[SourceTable],
    name: &str,
    consistent_point: Position,
) -> Result<(), JobError> {
    let SetUp { spec, metrics, outbox, .. } = *setup;
    metrics.status.set_state(State::Running, Some(Phase::Snapshot));
    metrics.source_connected.set(1);
    let reader = source.snapshot_reader(name);
    let copy = Snapshot {
        parallel_tables: spec.parallel_tables,
        metrics,
        tables,
        consistent_point,
        reader: reader.as_ref(),
        outbox_cleanup: outbox,
    };
    let rows = out.copy(&copy).await?;
    tracing::info!(job = %spec.name, rows, "snapshot done");
    Ok(())
}

/// Why a table is not copied in chunks, for the log.
pub(super) fn why_unpaged(table: &SourceTable) -> &'static str {
    if table.is_keyless() {
        "it has no primary key (REPLICA IDENTITY FULL)"
    } else {
        "its key is of a type the chunked copy does not page through"
    }
}
