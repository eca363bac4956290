//! Runs one job: set up, copy, stream into the sink; retry transient
//! failures with backoff and jitter; stop gracefully on request.
//!
//! ```text
//!  source catalog ──> destination tables + walpipe.checkpoints in the sink
//!  publication (before the slot) ──> checkpoint?
//!       yes, and its slot exists ──> stream from the applied position
//!       no ──> (drop a leftover slot) create slot + exported snapshot ──> copy tables ──> checkpoint
//!  START_REPLICATION ──> driver ──> PostgresSink (commits rows + checkpoint, then acknowledges)
//! ```
//!
//! Invariants: the publication exists before the slot; a slot without a
//! checkpoint is never streamed from (its snapshot copy may be incomplete),
//! so a crash during the copy restarts the copy with a new slot; the
//! source learns a position only after the sink committed it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::heartbeat::heartbeat;
use super::lifecycle::{Phase, State};
use super::spec::{JobSpec, SnapshotMode};
use super::targets::{Targets, checkpoint_db_role, discovery, follower, open_delivery, outlet};
use super::{JobError, catalog_watch, snapshot};
use crate::backoff;
use crate::change::Encoding;
use crate::change::encode::JsonLines;
use crate::change::mirror_records::MirrorRecords;
use crate::lsn::Lsn;
use crate::metrics::JobMetrics;
use crate::names::TableName;
use crate::names::{quote_ident, quote_literal};
use crate::pipeline::assembler::Assembler;
use crate::pipeline::driver::{self};
use crate::sink::SinkError;
use crate::sink::postgres::follow::{self};
use crate::sink::postgres::mirror_writer::MirrorWriter;
use crate::sink::postgres::{self as pg_sink, PostgresSink, Writer, schema};
use crate::source::catalog::{self};
use crate::source::publication;
use crate::source::{Connection, preflight};
use crate::sql_client;

/// Streamed transactions kept in memory before spilling to disk.
const SPILL_MEMORY_CAP: usize = 16 * 1024 * 1024;
/// Transient failures in a row before the job gives up.
const MAX_RETRIES: u32 = 10;

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop: everything received is committed and confirmed.
    Stopped,
    /// `initial_only`: the copy is done.
    Copied,
}

/// Runs the job until `stop` turns true or a permanent failure; its state,
/// phase, errors and retries go to `metrics`.
pub async fn run(
    spec: &JobSpec,
    metrics: &Arc<JobMetrics>,
    stop: watch::Receiver<bool>,
) -> Result<Ended, JobError> {
    let mut failures = 0;
    let mut delays = backoff::delays(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        metrics.set_state(State::Starting, None);
        let outcome = attempt(spec, metrics, stop.clone()).await;
        metrics.source_connected.set(0);
        let error = match outcome {
            Ok(Start::Finished) => {
                metrics.set_state(State::Succeeded, None);
                return Ok(Ended::Copied);
            }
            Ok(Start::At(_)) => {
                metrics.set_state(State::Stopped, None);
                return Ok(Ended::Stopped);
            }
            Err(error) => error,
        };
        metrics.failed(error.kind());
        if error.is_slot_lost() && spec.snapshot_mode == SnapshotMode::WhenNeeded {
            // The next attempt finds the slot lost and starts over with a new one.
            tracing::warn!(job = %spec.name, "the slot was invalidated while streaming: {error}");
            metrics.retried(error.kind());
        } else if error.is_transient() && failures < MAX_RETRIES && !*stop.borrow() {
            failures += 1;
            metrics.retried(error.kind());
            let wait = delays.next().unwrap_or(Duration::from_secs(30));
            tracing::warn!(job = %spec.name, attempt = failures, "transient failure, retrying in {:.1} s: {error}", wait.as_secs_f64());
            let mut stop = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stopped| *stopped) => {
                    metrics.set_state(State::Stopped, None);
                    return Ok(Ended::Stopped);
                }
            }
        } else {
            metrics.set_state(State::Failed, None);
            return Err(error);
        }
    }
}

/// Forgets the job's progress (a restart): without a checkpoint the next
/// run drops the old slot and starts over with a new slot and a new copy.
pub async fn reset(spec: &JobSpec) -> Result<(), JobError> {
    let sink = sql_client::connect(&spec.checkpoint_db, checkpoint_db_role(spec)).await?;
    schema::ensure_state(&sink).await.map_err(JobError::SinkSetup)?;
    pg_sink::forget_checkpoint(&sink, &spec.name).await.map_err(JobError::SinkSetup)
}

/// Drops the job's slot and publication on the source (stop with cleanup, delete).
pub async fn drop_slot_and_publication(spec: &JobSpec) -> Result<(), JobError> {
    let mut repl = Connection::connect(&spec.source).await?;
    let exists = repl
        .simple_query(&format!(
            "SELECT 1 AS present FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(&spec.slot)
        ))
        .await?
        .first("present")
        .is_some();
    if exists {
        repl.drop_slot(&spec.slot).await?;
    }
    let source = sql_client::connect(&spec.source, "the source").await?;
    source
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&spec.publication)))
        .await
        .map_err(JobError::SourceSetup)?;
    tracing::info!(job = %spec.name, slot = %spec.slot, publication = %spec.publication, "dropped the slot and the publication");
    Ok(())
}

/// Where streaming starts, or that there is nothing to stream.
enum Start {
    At(Lsn),
    /// `initial_only`: the copy is done.
    Finished,
}

/// One try at the job: set up, copy if needed, stream until stopped.
/// `Start::Finished` when `initial_only` copied everything.
async fn attempt(
    spec: &JobSpec,
    metrics: &Arc<JobMetrics>,
    stop: watch::Receiver<bool>,
) -> Result<Start, JobError> {
    let source_sql = sql_client::connect(&spec.source, "the source").await?;
    let tables = catalog::tables(&source_sql, &spec.tables).await?;
    check_select(&source_sql, &tables).await?;
    // The Postgres sink, or the state store for the other sinks: where the checkpoint is.
    let sink = sql_client::connect(&spec.checkpoint_db, checkpoint_db_role(spec)).await?;
    schema::ensure_state(&sink).await.map_err(JobError::SinkSetup)?;
    for (table, reason) in follow::recopy_needed(&sink, &spec.name).await.map_err(JobError::SinkSetup)? {
        metrics.needs_recopy(&table, &reason);
    }
    let mut targets = Targets::ensure(spec, metrics, &sink, &tables).await?;
    publication::ensure(&source_sql, &spec.publication, &tables, spec.tables.is_empty())
        .await
        .map_err(JobError::SourceSetup)?;

    let mut repl = Connection::connect(&spec.source).await?;
    let start = match decide_start(
        &SetUp { spec, metrics, source_sql: &source_sql, sink: &sink, tables: &tables },
        &mut repl,
        &mut targets,
    )
    .await?
    {
        Start::At(lsn) => lsn,
        Start::Finished => {
            tracing::info!(job = %spec.name, "initial_only: the copy is done; not streaming");
            return Ok(Start::Finished);
        }
    };
    drop(source_sql);
    let captured = tables.iter().map(|t| TableName::new(&t.schema, &t.name)).collect();
    let _catalog_watch = catalog_watch::spawn(spec, metrics, captured);

    preflight::check_stream(&mut repl, &spec.slot, &spec.publication).await?;
    let primary_keys = preflight::primary_keys(&mut repl, &spec.publication).await?;
    let interval = repl.status_interval().await?;
    let stream = repl.start_stream(&spec.slot, &spec.publication, start, interval).await?;
    tracing::info!(job = %spec.name, from = %start, "streaming");
    metrics.set_state(State::Running, Some(Phase::Streaming));
    metrics.source_connected.set(1);
    Ready { spec, metrics, primary_keys, stop }.stream_to(targets, stream, sink).await?;
    Ok(Start::At(start))
}

/// What a start has open: the job, its metrics, a SQL session to the
/// source, the connection holding the checkpoint, and the captured tables.
#[derive(Clone, Copy)]
struct SetUp<'a> {
    spec: &'a JobSpec,
    metrics: &'a Arc<JobMetrics>,
    source_sql: &'a tokio_postgres::Client,
    sink: &'a tokio_postgres::Client,
    tables: &'a [catalog::SourceTable],
}

/// Where streaming starts: the checkpoint when its slot is there, else a
/// new slot and a copy (after recording the data gap of a lost slot).
async fn decide_start(
    setup: &SetUp<'_>,
    repl: &mut Connection,
    targets: &mut Targets,
) -> Result<Start, JobError> {
    let SetUp { spec, metrics, sink, .. } = *setup;
    let slot_status = repl
        .simple_query(&format!(
            "SELECT coalesce(wal_status, 'unknown') AS wal_status FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(&spec.slot)
        ))
        .await?
        .first("wal_status")
        .map(str::to_string);
    let checkpoint = pg_sink::read_checkpoint(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
    let applied = checkpoint.as_ref().filter(|(slot, _)| slot == &spec.slot).map(|(_, lsn)| *lsn);
    Ok(match (slot_status.as_deref(), applied) {
        (Some("lost"), gap_from) => {
            if spec.snapshot_mode != SnapshotMode::WhenNeeded {
                return Err(JobError::SlotLost { slot: spec.slot.clone() });
            }
            let from = gap_from.map_or("an unknown position".to_string(), |lsn| lsn.to_string());
            tracing::warn!(job = %spec.name, slot = %spec.slot, gap_from = %from,
                "the slot was invalidated: changes after the gap start are lost; re-creating the slot and copying the tables again");
            pg_sink::record_data_gap(sink, &spec.name, &spec.slot, gap_from)
                .await
                .map_err(JobError::SinkSetup)?;
            metrics.data_gap(gap_from.map(|lsn| lsn.0));
            repl.drop_slot(&spec.slot).await?;
            start_fresh(setup, repl, targets).await?
        }
        (Some(_), Some(applied)) => {
            tracing::info!(job = %spec.name, slot = %spec.slot, %applied, "resuming from the checkpoint");
            Start::At(applied)
        }
        (exists, _) => {
            if exists.is_some() {
                tracing::info!(slot = %spec.slot, "dropping a slot without a checkpoint (an unfinished start)");
                if !spec.sink.is_postgres() {
                    tracing::warn!(job = %spec.name, sink = %spec.sink,
                        "an earlier copy was interrupted: the sink may hold rows of it that are deleted on the source by now (the new copy's snapshot rows are complete; see README)");
                }
                repl.drop_slot(&spec.slot).await?;
            }
            start_fresh(setup, repl, targets).await?
        }
    })
}

/// Everything streaming needs besides the stream and the sink.
struct Ready<'a> {
    spec: &'a JobSpec,
    metrics: &'a Arc<JobMetrics>,
    primary_keys: crate::change::relation::PrimaryKeys,
    stop: watch::Receiver<bool>,
}

type SinkTask = tokio::task::JoinHandle<Result<(), SinkError>>;

impl Ready<'_> {
    /// Streams into the sink `targets` describe, until stopped or a failure.
    async fn stream_to(
        &self,
        targets: Targets,
        stream: crate::source::ReplicationStream,
        sink: tokio_postgres::Client,
    ) -> Result<(), JobError> {
        let (spec, metrics) = (self.spec, self.metrics);
        match targets {
            Targets::Mirror(places) => {
                let writer = MirrorWriter::new(places, follower(spec, metrics), discovery(spec));
                self.stream_into(stream, MirrorRecords, |ends| {
                    tokio::spawn(self.postgres_sink(sink, writer).run(ends))
                })
                .await
            }
            Targets::Changelog(writer) => {
                self.stream_into(stream, JsonLines, |ends| {
                    tokio::spawn(self.postgres_sink(sink, writer).run(ends))
                })
                .await
            }
            Targets::Delivery(outlet) => {
                let delivery = open_delivery(spec, metrics, *outlet, sink).await?;
                self.stream_into(stream, JsonLines, |ends| tokio::spawn(delivery.run(ends))).await
            }
        }
    }

    fn postgres_sink<W: Writer>(&self, sink: tokio_postgres::Client, writer: W) -> PostgresSink<W> {
        let spec = self.spec;
        PostgresSink::new(
            sink,
            &spec.name,
            &spec.slot,
            writer,
            spec.batch_size,
            spec.flush_interval,
            self.metrics.clone(),
        )
    }

    /// Streams from `stream` into the sink task `start_sink` spawns, until stopped or a failure.
    async fn stream_into<E: Encoding>(
        &self,
        stream: crate::source::ReplicationStream,
        encoding: E,
        start_sink: impl FnOnce(driver::SinkEnds) -> SinkTask,
    ) -> Result<(), JobError> {
        let Ready { spec, metrics, .. } = *self;
        let (ends, sink_ends) = driver::channel();
        let sink_task = start_sink(sink_ends);
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let assembler = Assembler::new(encoding, SPILL_MEMORY_CAP, None, self.primary_keys.clone());
        let heartbeat = spec
            .heartbeat_interval
            .map(|every| tokio::spawn(heartbeat(spec.clone(), every, metrics.clone())));
        let (stream, outcome) =
            driver::drive(stream, assembler, None, ends, metrics.clone(), spec.confirm_keepalives, stopped)
                .await;
        if let Some(task) = heartbeat {
            task.abort();
        }
        let sink_result = match sink_task.await {
            Ok(result) => result,
            Err(join) => return Err(JobError::SinkTask(join.to_string())),
        };
        sink_result?;
        outcome?;
        if let Some(stream) = stream {
            stream.finish().await?;
        }
        Ok(())
    }
}

/// A new slot (with an exported snapshot), the copy the mode asks for, and
/// the checkpoint that marks the start as complete.
async fn start_fresh(
    setup: &SetUp<'_>,
    repl: &mut Connection,
    targets: &mut Targets,
) -> Result<Start, JobError> {
    let SetUp { spec, metrics, source_sql, sink, tables } = *setup;
    pg_sink::forget_checkpoint(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
    catalog_watch::record_current(spec, source_sql, sink).await.map_err(JobError::SinkSetup)?;
    // initial_only needs the slot only for its snapshot: a temporary one goes away with the connection.
    let only_copy = spec.snapshot_mode == SnapshotMode::InitialOnly;
    let created = repl.create_slot(&spec.slot, only_copy).await?;
    tracing::info!(slot = %spec.slot, consistent_point = %created.consistent_point, "created the slot");
    let start = match (spec.snapshot_mode, &created.snapshot_name) {
        (SnapshotMode::Never, _) | (_, None) => {
            spec.start_position.unwrap_or(created.consistent_point).max(created.consistent_point)
        }
        (_, Some(snapshot)) => {
            metrics.set_state(State::Running, Some(Phase::Snapshot));
            metrics.source_connected.set(1);
            let plan = snapshot::CopyPlan {
                source: &spec.source,
                sink: &spec.checkpoint_db,
                catalog: source_sql,
                parallel_tables: spec.parallel_tables,
                metrics,
            };
            let rows = match targets {
                Targets::Mirror(places) => {
                    // A copy replaces every row: the destination takes the catalog's shape first.
                    let mut follower = follower(spec, metrics);
                    for table in tables {
                        if let Some(place) = places.get(&table.qualified()) {
                            follower.follow_catalog(sink, place, table).await?;
                        }
                    }
                    snapshot::copy_tables(&plan, tables, places, snapshot).await?
                }
                Targets::Changelog(writer) => {
                    let mut into = snapshot::ChangelogLines { sink, writer };
                    snapshot::copy_tables_as_changes(
                        &plan,
                        tables,
                        &mut into,
                        created.consistent_point,
                        snapshot,
                    )
                    .await?
                }
                Targets::Delivery(_) => {
                    // Its own transport: the targets' one streams afterwards.
                    let outlet = outlet(spec, metrics, tables)?
                        .ok_or_else(|| JobError::SinkTask("a Postgres sink has no delivery".into()))?;
                    // Its own connection too: the caller keeps `sink` for the checkpoint.
                    let state = sql_client::connect(&spec.checkpoint_db, checkpoint_db_role(spec)).await?;
                    let mut delivery = open_delivery(spec, metrics, outlet, state).await?;
                    snapshot::copy_tables_as_changes(
                        &plan,
                        tables,
                        &mut delivery,
                        created.consistent_point,
                        snapshot,
                    )
                    .await?
                }
            };
            tracing::info!(job = %spec.name, rows, "snapshot done");
            // Every table was copied again: none needs a re-copy any more.
            follow::clear_recopy(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
            metrics.recopied();
            created.consistent_point
        }
    };
    if only_copy {
        return Ok(Start::Finished);
    }
    pg_sink::write_checkpoint(sink, &spec.name, &spec.slot, start).await.map_err(JobError::SinkSetup)?;
    Ok(Start::At(start))
}

/// Every table must be readable: a copy (initial, or after a lost slot)
/// needs it, and failing at start is clearer than failing mid-incident.
async fn check_select(
    source: &tokio_postgres::Client,
    tables: &[catalog::SourceTable],
) -> Result<(), JobError> {
    let names: Vec<String> = tables.iter().map(catalog::SourceTable::quoted).collect();
    let row = source
        .query_one(
            "SELECT current_user::text, string_agg(t, ', ') FROM unnest($1::text[]) t WHERE NOT has_table_privilege(t, 'SELECT')",
            &[&names],
        )
        .await
        .map_err(JobError::SourceSetup)?;
    let user: String = row.try_get(0).map_err(JobError::SourceSetup)?;
    match row.try_get::<_, Option<String>>(1).map_err(JobError::SourceSetup)? {
        Some(tables) => Err(JobError::NoSelect { tables, user: quote_ident(&user) }),
        None => Ok(()),
    }
}
