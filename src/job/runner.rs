//! Runs one job: set up, copy, stream into the sink; retry transient
//! failures with backoff and jitter; stop gracefully on request.
//!
//! ```text
//!  source catalog ──> destination tables + walpipe.checkpoints in the sink
//!  publication (before the slot) ──> checkpoint?
//!       yes, and its slot exists ──> stream from the applied position
//!       no ──> (drop a leftover slot) fresh_start: create slot ──> chunked: checkpoint at the slot's start, every table to copy
//!                                                             └─> exported: copy tables under its snapshot ──> checkpoint
//!       lost (when_needed) ──> record the gap ──> fresh_start, keeping the destinations (the copies reconcile them)
//!  copies::plan_session: requests, marks, added tables ──> copies to run beside the stream
//!  source.start ──> driver ──> the sink (makes rows + checkpoint durable, then acknowledges)
//!       └─ tables still to copy: the source's chunks, placed in the stream (crate::chunked)
//!  a stop, an edit, a copy request or a new mark ends the session gracefully; the next one plans again
//! ```
//!
//! Invariants: the publication exists before the slot; a slot without a
//! checkpoint is never streamed from (an exported copy may be incomplete),
//! so a crash during an exported copy restarts it with a new slot, while a
//! chunked copy resumes from its last recorded chunk with the same slot;
//! the source learns a position only after the sink committed it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::JobError;
use super::copies::{self, SessionEnd, SessionEnds};
use super::fresh_start::{Destinations, start_fresh};
use super::spec::{JobSpec, SnapshotMode};
use crate::backoff;
use crate::change::Encoding;
use crate::checkpoint::positions as checkpoint;
use crate::chunked::progress::TableCopy;
use crate::contract::{self, SinkEnds};
use crate::lifecycle::{Phase, State};
use crate::metrics::JobMetrics;
use crate::pg::sql;
use crate::pipeline::driver::{self};
use crate::position::Position;
use crate::sink::{AnySink, Driving, Opening, SinkError};
use crate::source::outbox_cleanup::OutboxCleanup;
use crate::source::setup::{SetupError, Source, Started, StreamState};
use crate::source::table::SourceTable;
use crate::source::{self, ChangeStream, WithSource};

/// Transient failures in a row before the job gives up. "In a row": a
/// session that committed a new checkpoint was healthy, and the count and
/// the backoff start over after it.
const MAX_RETRIES: u32 = 10;
/// The first and the longest wait before a retry.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop: everything received is committed and confirmed.
    Stopped,
    /// `initial_only`: the copy is done.
    Copied,
}

/// Runs the job until `stop` turns true or a permanent failure; its state,
/// phase, errors and retries go to `metrics`. A new revision of the job in
/// `edits` (tables edited, a copy requested) ends the session gracefully
/// and the next one runs it.
pub async fn run(
    spec: &JobSpec,
    metrics: &Arc<JobMetrics>,
    stop: watch::Receiver<bool>,
    mut edits: watch::Receiver<JobSpec>,
) -> Result<Ended, JobError> {
    let mut failures = 0;
    let mut delays = backoff::delays(RETRY_FIRST, RETRY_CAP);
    let mut spec = spec.clone();
    loop {
        metrics.status.set_state(State::Starting, None);
        if edits.has_changed().unwrap_or(false) {
            spec = edits.borrow_and_update().clone();
        }
        let ends = Session { stop: stop.clone(), edits: edits.clone() };
        let checkpoint_before = metrics.status.checkpoint();
        let outcome = attempt(&spec, metrics, ends).await;
        metrics.source_connected.set(0);
        if failures > 0 && metrics.status.checkpoint() > checkpoint_before {
            tracing::info!(job = %spec.name, after = failures,
                "the job committed a new position after its retries: it was healthy, so its retry budget and backoff start over");
            failures = 0;
            delays = backoff::delays(RETRY_FIRST, RETRY_CAP);
        }
        let error = match outcome {
            Ok(Attempted::Copied) => {
                metrics.status.set_state(State::Succeeded, None);
                return Ok(Ended::Copied);
            }
            Ok(Attempted::Ended(SessionEnd::Revised)) if !*stop.borrow() => {
                tracing::info!(job = %spec.name, "the job was edited or a copy requested: starting the session again");
                continue;
            }
            Ok(Attempted::Ended(SessionEnd::Marked)) if !*stop.borrow() => {
                tracing::info!(job = %spec.name, "a table needs a re-copy: starting the session again to copy it");
                continue;
            }
            Ok(Attempted::Ended(_)) => {
                metrics.status.set_state(State::Stopped, None);
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
            let wait = delays.next().unwrap_or(RETRY_CAP);
            tracing::warn!(job = %spec.name, attempt = failures, "transient failure, retrying in {:.1} s: {error}", wait.as_secs_f64());
            let mut stop = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stopped| *stopped) => {
                    metrics.status.set_state(State::Stopped, None);
                    return Ok(Ended::Stopped);
                }
            }
        } else {
            metrics.status.set_state(State::Failed, None);
            return Err(error);
        }
    }
}

/// Forgets the job's progress (a restart): without a checkpoint the next
/// run drops the old slot and starts over with a new slot and a new copy.
pub async fn reset(spec: &JobSpec) -> Result<(), JobError> {
    let sink = sql::connect(&spec.checkpoint_db, checkpoint_db_role(spec)).await?;
    crate::checkpoint::tables::ensure_state(&sink).await.map_err(JobError::SinkSetup)?;
    checkpoint::forget_checkpoint(&sink, &spec.name).await.map_err(JobError::SinkSetup)
}

/// Drops the job's slot and publication on the source (stop with cleanup, delete).
pub async fn drop_slot_and_publication(spec: &JobSpec) -> Result<(), JobError> {
    Ok(spec.source.remove(&spec.source_settings()).await?)
}

/// Where streaming starts, or that there is nothing to stream.
pub(super) enum Start {
    At(Position),
    /// `initial_only`: the copy is done.
    Finished,
}

/// How an attempt that did not fail ended.
enum Attempted {
    /// `initial_only`: the copy is done.
    Copied,
    /// The session ended gracefully, for this reason.
    Ended(SessionEnd),
}

/// What can end a session: a stop, a new revision of the job.
struct Session {
    stop: watch::Receiver<bool>,
    edits: watch::Receiver<JobSpec>,
}

/// One try at the job: set up, copy if needed, stream until the session ends.
async fn attempt(spec: &JobSpec, metrics: &Arc<JobMetrics>, session: Session) -> Result<Attempted, JobError> {
    spec.source.open(&spec.source_settings(), Attempt { spec, metrics, session }).await
}

/// An attempt, run with the job's source once it is open.
struct Attempt<'a> {
    spec: &'a JobSpec,
    metrics: &'a Arc<JobMetrics>,
    session: Session,
}

impl WithSource for Attempt<'_> {
    type Output = Result<Attempted, JobError>;

    async fn with<S: Source>(self, mut source: S) -> Result<Attempted, JobError> {
        let Attempt { spec, metrics, session } = self;
        // The Postgres sink, or the state store for the other sinks: where
        // the checkpoint is. It is opened while the source reads its tables;
        // the source's error is told first.
        let checkpoint_db = async {
            let sink = sql::connect(&spec.checkpoint_db, checkpoint_db_role(spec)).await?;
            crate::checkpoint::tables::ensure_state(&sink).await.map_err(JobError::SinkSetup)?;
            Ok::<_, JobError>(sink)
        };
        let (tables, sink) = tokio::join!(source.tables(spec.needs_keys()), checkpoint_db);
        let (tables, sink) = (tables?, sink?);
        let settings = spec.sink_settings();
        let history = source.history();
        let opening = Opening {
            settings: &settings,
            metrics,
            checkpoint_db: &sink,
            tables: &tables,
            history: &history,
        };
        let mut out = AnySink::open(&spec.sink, &opening).await?;
        source.prepare(&tables).await?;

        let outbox = outbox_cleanup(spec, &source);
        let setup = SetUp { spec, metrics, sink: &sink, tables: &tables, outbox: outbox.as_ref() };
        let start = match decide_start(&setup, &mut source, &mut out).await? {
            Start::At(position) => position,
            Start::Finished => {
                tracing::info!(job = %spec.name, "initial_only: the copy is done; not streaming");
                return Ok(Attempted::Copied);
            }
        };
        let copies = copies::plan_session(spec, metrics, &sink, &tables, start, S::CHUNKED_COPY).await?;
        let _catalog_watch = source.watch_catalog(metrics, &tables);
        let started = source.start(start, metrics).await?;
        tracing::info!(job = %spec.name, from = %start, "streaming");
        let phase = if copies.is_empty() { Phase::Streaming } else { Phase::Snapshot };
        metrics.status.set_state(State::Running, Some(phase));
        metrics.source_connected.set(1);
        drop(sink);
        let ends = SessionEnds::watch(session.stop, session.edits, metrics);
        let stop = ends.stop.clone();
        out.stream(Streaming { spec, metrics, stop, started, copies, outbox }).await?;
        Ok(Attempted::Ended(ends.why()))
    }

    fn fail(self, error: SetupError) -> Result<Attempted, JobError> {
        Err(error.into())
    }
}

/// What a start has open: the job, its metrics, the connection holding
/// the checkpoint, the captured tables, and the outbox stage.
#[derive(Clone, Copy)]
pub(super) struct SetUp<'a> {
    pub spec: &'a JobSpec,
    pub metrics: &'a Arc<JobMetrics>,
    pub sink: &'a tokio_postgres::Client,
    pub tables: &'a [SourceTable],
    pub outbox: Option<&'a OutboxCleanup>,
}

/// Where streaming starts: the checkpoint when its slot is there, else a
/// new slot and a copy (after recording the data gap of a lost slot).
async fn decide_start<S: Source>(
    setup: &SetUp<'_>,
    source: &mut S,
    out: &mut AnySink,
) -> Result<Start, JobError> {
    let SetUp { spec, metrics, sink, .. } = *setup;
    let checkpoint = checkpoint::read_checkpoint(sink, &spec.name).await.map_err(JobError::SinkSetup)?;
    let applied = checkpoint.as_ref().filter(|(slot, _)| slot == &spec.slot).map(|(_, position)| *position);
    let state = source.stream_state(applied).await?;
    Ok(match (state, applied) {
        (StreamState::Lost { why, start_over }, gap_from) => {
            if spec.snapshot_mode != SnapshotMode::WhenNeeded {
                return Err(JobError::StreamLost { why, start_over });
            }
            let from = gap_from.map_or("an unknown position".to_string(), |position| position.to_string());
            tracing::warn!(job = %spec.name, slot = %spec.slot, gap_from = %from,
                "{why}: changes after the gap start are lost; starting a new stream and copying the tables again");
            checkpoint::record_data_gap(sink, &spec.name, &spec.slot, gap_from)
                .await
                .map_err(JobError::SinkSetup)?;
            metrics.data_gap(gap_from.map(|position| position.value()));
            source.forget_stream().await?;
            // The destinations keep their rows while the tables are copied
            // again; each copy then removes what the gap deleted.
            start_fresh(setup, source, out, Destinations::Keep).await?
        }
        (StreamState::Ready { confirmed }, Some(applied)) => {
            // Outbox rows are deleted after the ledger moved and before the
            // slot's position does: resume from the slot's, so the rows of
            // changes delivered just before a crash are deleted too
            // (`source::outbox_cleanup`); the delivery skips those changes itself.
            let from = match confirmed {
                Some(confirmed) if spec.outbox_delete => confirmed.min(applied),
                _ => applied,
            };
            tracing::info!(job = %spec.name, slot = %spec.slot, %applied, from = %from, "resuming from the checkpoint");
            Start::At(from)
        }
        (state, _) => {
            if state != StreamState::Missing {
                tracing::info!(slot = %spec.slot, "dropping a slot without a checkpoint (an unfinished start)");
                if !spec.sink.holds_checkpoint() {
                    tracing::warn!(job = %spec.name, sink = %spec.sink,
                        "an earlier copy was interrupted: the sink may hold rows of it that are deleted on the source by now (the new copy's snapshot rows are complete; see the delivery path in the docs, docs/src/sinks/README.md)");
                }
                source.forget_stream().await?;
            }
            start_fresh(setup, source, out, Destinations::StartOver).await?
        }
    })
}

/// Streaming, once the sink is ready: the driver between the stream and the sink.
struct Streaming<'a, T> {
    spec: &'a JobSpec,
    metrics: &'a Arc<JobMetrics>,
    stop: watch::Receiver<bool>,
    started: T,
    /// The tables still to copy in chunks, beside the stream.
    copies: Vec<(SourceTable, TableCopy)>,
    outbox: Option<OutboxCleanup>,
}

impl<T: Started> Driving for Streaming<'_, T> {
    type Outcome = Result<(), JobError>;

    /// Streams into the sink task `take_chunks` makes, until stopped or a failure.
    async fn drive<E, S, F>(self, encoding: E, take_chunks: S) -> Result<(), JobError>
    where
        E: Encoding,
        S: FnOnce(SinkEnds) -> F + Send,
        F: std::future::Future<Output = Result<(), SinkError>> + Send + 'static,
    {
        let Streaming { spec, metrics, mut stop, started, copies, outbox } = self;
        let (ends, sink_ends) = contract::channel();
        // With outbox deletion, the job's stage sits between the driver and the sink.
        let (sink_ends, cleanup_task) = match outbox {
            Some(cleanup) => {
                let (stage_ends, stage_sink_ends) = contract::channel();
                (stage_sink_ends, Some(tokio::spawn(cleanup.run(sink_ends, stage_ends))))
            }
            None => (sink_ends, None),
        };
        let sink_task = tokio::spawn(take_chunks(sink_ends));
        let source::setup::Streaming { changes, mut copying, chores } = started.changes(encoding, copies);
        let copy_failed = copying.as_mut().map(|task| task.failed());
        let stopped = async move {
            let copy_failed = async move {
                match copy_failed {
                    Some(failed) => failed.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                () = copy_failed => {}
            }
        };
        let options = driver::Options { end_at: None, confirm_keepalives: spec.confirm_keepalives };
        let (stream, outcome) = driver::drive(changes, ends, metrics.clone(), options, stopped).await;
        drop(chores);
        let copied = match copying {
            Some(task) => task.finish().await,
            None => Ok(()),
        };
        let sink_result = sink_task.await.map_err(|join| JobError::SinkTask(join.to_string()))?;
        sink_result?;
        if let Some(task) = cleanup_task {
            task.await.map_err(|join| JobError::SinkTask(join.to_string()))??;
        }
        copied?;
        outcome?;
        if let Some(stream) = stream {
            stream.finish().await?;
        }
        Ok(())
    }

    fn fail(self, error: SinkError) -> Result<(), JobError> {
        Err(error.into())
    }
}

/// What the connection holding the checkpoint is called in messages.
fn checkpoint_db_role(spec: &JobSpec) -> &'static str {
    if spec.sink.holds_checkpoint() { "the sink" } else { "the state store" }
}

/// The deletion of delivered outbox rows, when the job asks for it.
fn outbox_cleanup<S: Source>(spec: &JobSpec, source: &S) -> Option<OutboxCleanup> {
    spec.outbox_delete.then(|| OutboxCleanup::new(spec.outbox.clone(), source.row_deleters()))
}
