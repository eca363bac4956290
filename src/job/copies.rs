//! The copies a session runs beside its stream, and what ends a session
//! early so that new ones can start.
//!
//! ```text
//!  session start: copy progress + "needs a re-copy" marks + the spec's copy requests
//!       ──> chunked::plan ──> written with the checkpoint ──> every unfinished table, to the source's chunked copy
//!  while streaming: a stop, a new revision of the job (tables edited, copy requested),
//!       or a new mark ──> the session ends gracefully; the next one plans again
//! ```
//!
//! Invariants:
//! - A copy starts only at a session start, so the source places its
//!   chunks in a stream that began before the first one, as its merge rule needs.
//! - The plan is durable before the stream starts: a crash right after it
//!   resumes the same copies, and requests and marks are answered once.
//! - A table whose key cannot be paged through (REPLICA IDENTITY FULL
//!   without a key, or a key of a type the source does not page) is never
//!   copied beside the stream. Its mark stays until a restart copies every table.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::JobError;
use super::fresh_start::why_unpaged;
use super::spec::{JobSpec, SnapshotMode};
use crate::checkpoint::{marks as recopy_marks, positions as checkpoint};
use crate::chunked::plan::{self, Wanted};
use crate::chunked::progress::{self, TableCopy};
use crate::metrics::JobMetrics;
use crate::position::Position;
use crate::source::table::SourceTable;

/// Plans the session's copies, records the plan, and returns the tables
/// whose copy is unfinished, with where each resumes (none: nothing to copy).
pub async fn plan_session(
    spec: &JobSpec,
    metrics: &Arc<JobMetrics>,
    sink: &tokio_postgres::Client,
    tables: &[SourceTable],
    start: Position,
    chunked: bool,
) -> Result<Vec<(SourceTable, TableCopy)>, JobError> {
    let setup = JobError::SinkSetup;
    let mut recorded = checkpoint::read_copy_progress(sink, &spec.name).await.map_err(setup)?;
    let marks = recopy_marks::recopy_needed(sink, &spec.name).await.map_err(setup)?;
    // An isolated table whose rebuild would drop columns waits for a copy request.
    let marked: BTreeMap<String, i64> =
        marks.iter().filter(|m| !m.waits_for_request).map(|m| (m.table.clone(), m.mark)).collect();
    let order: Vec<String> = tables.iter().map(SourceTable::qualified).collect();
    let wanted = Wanted {
        requests: &spec.copy_requests,
        marks: &marked,
        copy_added: spec.snapshot_mode != SnapshotMode::Never,
    };
    let mut plan = plan::plan(&recorded, &order, wanted, start);
    // A table without a key cannot be copied beside the stream, nor any
    // table of a source that places no chunks in its stream (`chunked`): a
    // request is answered with a warning, once; a mark stays (and alerts)
    // until a restart copies every table.
    plan.started.retain(|(table, cause)| {
        let unpaged = tables.iter().find(|t| &t.qualified() == table && !t.pages_by_key);
        if !chunked || unpaged.is_some() {
            let why = unpaged.map_or("the source copies only under a new stream's snapshot", why_unpaged);
            tracing::warn!(job = %spec.name, %table, "{table} cannot be copied while streaming ({}): {why}; `walpipe jobs restart` copies every table under a new slot", cause.as_str());
            if let Some(copy) = plan.write.get_mut(table) {
                (copy.done, copy.reconcile) = (true, false);
                copy.mark = recorded.get(table).and_then(|answered| answered.mark);
            }
        }
        chunked && unpaged.is_none()
    });
    if !plan.forget.is_empty() {
        checkpoint::forget_copies(sink, &spec.name, &plan.forget).await.map_err(setup)?;
        tracing::info!(job = %spec.name, tables = ?plan.forget, "no longer captured: their destinations are kept as they are");
    }
    if !plan.write.is_empty() {
        checkpoint::write_checkpoint(sink, &spec.name, &spec.slot, start, &plan.write)
            .await
            .map_err(setup)?;
    }
    if !plan.answered_marks.is_empty() {
        recopy_marks::clear_recopy_of(sink, &spec.name, &plan.answered_marks).await.map_err(setup)?;
    }
    for (table, cause) in &plan.started {
        tracing::info!(job = %spec.name, %table, "snapshot {table}: copying it in chunks while streaming, because {}", cause.as_str());
    }
    for mark in marks.iter().filter(|m| !plan.answered_marks.contains(&m.table)) {
        metrics.status.needs_recopy(&mark.table, &mark.reason);
    }
    recorded.retain(|table, _| !plan.forget.contains(table));
    recorded.extend(plan.write);
    let unfinished: Vec<(SourceTable, TableCopy)> = progress::unfinished(&recorded, &order)
        .into_iter()
        .filter_map(|(name, copy)| {
            let table = tables.iter().find(|t| t.qualified() == name)?;
            Some((table.clone(), copy.clone()))
        })
        .collect();
    Ok(unfinished)
}

/// Why a session ended without a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Still running (the receiver's initial value).
    Running,
    /// The job is to stop.
    Stop,
    /// A newer revision of the job (tables edited, a copy requested).
    Revised,
    /// A table was marked as needing a re-copy.
    Marked,
}

/// Watches what ends a session: `stop`, a new revision in `edits`, a new
/// mark in `metrics`. Dropping it stops watching.
pub struct SessionEnds {
    /// Turns true when the session is to end.
    pub stop: watch::Receiver<bool>,
    why: watch::Receiver<SessionEnd>,
    task: JoinHandle<()>,
}

impl Drop for SessionEnds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SessionEnds {
    /// Starts watching; call it once the session has loaded its marks, so
    /// that loading them does not end it.
    pub fn watch(
        mut stop: watch::Receiver<bool>,
        mut edits: watch::Receiver<JobSpec>,
        metrics: &JobMetrics,
    ) -> SessionEnds {
        let (tell_stop, session_stop) = watch::channel(false);
        let (tell_why, why) = watch::channel(SessionEnd::Running);
        // Subscribed now: a mark from here on is seen, however late the task runs.
        let mut marks = metrics.status.watch_marks();
        let task = tokio::spawn(async move {
            // A closed channel (the worker let go of the job) ends nothing.
            let revised = async {
                if edits.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let marked = async {
                if marks.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let end = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => SessionEnd::Stop,
                () = revised => SessionEnd::Revised,
                () = marked => SessionEnd::Marked,
            };
            let _ = tell_why.send(end);
            let _ = tell_stop.send(true);
        });
        SessionEnds { stop: session_stop, why, task }
    }

    /// Why the session ended (`Running`: it has not, or it failed).
    pub fn why(&self) -> SessionEnd {
        *self.why.borrow()
    }
}
