//! How a job sets a source up and starts its stream ([`Source`]).
//!
//! ```text
//!  open(target, settings) ──> tables (captured, checked readable and keyed)
//!       ──> prepare (the source sends their changes: PostgreSQL's publication)
//!       ──> stream_state: missing | ready(confirmed) | lost
//!       ──> (forget_stream) new_stream: a consistent point and, maybe, a snapshot to copy as of
//!       ──> start(from) ──> changes(encoding, copies): the change stream, the chunked copies beside it
//! ```
//!
//! What a source must guarantee, beyond its change stream's guarantees
//! (see the parent module):
//! - **`prepare` before `new_stream`.** A stream created before the source
//!   sends a table's changes would miss them.
//! - **A new stream and its snapshot agree.** The snapshot holds exactly
//!   what committed before the consistent point, and the stream started
//!   there gives exactly what commits after it. The snapshot can be read
//!   while the source is not yet streaming (until `start`).
//! - **A stream outlives the process.** A stream created by `new_stream`
//!   (not temporary) keeps the changes after the last position it was told
//!   durable until `forget_stream`, or until the source gives up on it, which
//!   `stream_state` then reports as [`StreamState::Lost`].
//! - **Chunked copies merge with the stream.** The chunks of the copies
//!   given to [`Started::changes`] take their place in the stream
//!   ([`crate::source::Event::ChunkPlaced`]) by the watermark rule the
//!   source documents, so a row is never older in the sink than on the source.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::copy::SnapshotReader;
use super::outbox_cleanup::RowDeleter;
use super::table::{ColumnHistory, OfferedTable, SourceTable};
use super::{ChangeStream, StreamError};
use crate::change::Encoding;
use crate::chunked::progress::TableCopy;
use crate::metrics::JobMetrics;
use crate::names::TableName;
use crate::pg::ConnInfo;
use crate::position::Position;

/// A failure while setting a source up, classified by the source as its
/// stream's failures are.
pub type SetupError = StreamError;

/// What a job tells its source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The job's name: heartbeats and records carry it.
    pub job: String,
    /// The captured tables; empty: every table of schema `public`.
    pub tables: Vec<TableName>,
    /// The name of the job's stream on the source (PostgreSQL: its slot).
    pub slot: String,
    /// The name of what makes the source send the tables' changes (PostgreSQL: its publication).
    pub publication: String,
    /// Where the checkpoint is: a source that records what its stream
    /// cannot say (partitions attached or detached) records it there.
    pub checkpoint_db: ConnInfo,
    /// How often to write a heartbeat into the stream; `None`: never.
    pub heartbeat: Option<Duration>,
}

/// Where the job's stream stands on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    /// There is none.
    Missing,
    /// It is there; `confirmed`: the last position it was told durable.
    Ready { confirmed: Option<Position> },
    /// The source gave up on it: the changes it held are gone. `why` says
    /// what happened, `start_over` how to start over by hand (a sentence each).
    Lost { why: String, start_over: String },
}

/// A stream just created: where it starts, and the snapshot it agrees with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStream {
    pub consistent_point: Position,
    /// The source's name for the snapshot (read it with
    /// [`Source::snapshot_reader`]); `None`: the source exported none.
    pub snapshot: Option<String>,
}

/// One kind of source; see the module for what it guarantees.
pub trait Source: Send + Sync + Sized {
    /// What the source's URL names, parsed. Its `Display` shows no password.
    type Target: Clone + std::fmt::Display + Send + Sync + 'static;
    /// The URL schemes that name this source (lowercase).
    const SCHEMES: &'static [&'static str];
    /// How its URL is written, for the error when no source matches.
    const URL_FORM: &'static str;
    /// Whether the source places chunked copies in its stream (the chunked
    /// strategy); without, every copy runs under a new stream's snapshot.
    const CHUNKED_COPY: bool;
    /// The stream, once started.
    type Started: Started;

    /// Reads a URL with one of [`Source::SCHEMES`]; the error says what to write instead.
    fn parse(url: &str) -> Result<Self::Target, String>;
    /// Connects, for one attempt at the job.
    fn open(
        target: &Self::Target,
        settings: &SourceSettings,
    ) -> impl Future<Output = Result<Self, SetupError>> + Send;
    /// Watches the job's stream on the source (PostgreSQL: the slot's lag,
    /// retained WAL and `wal_status`) into `metrics`, on its own session,
    /// whether the job runs or not.
    fn monitor(target: &Self::Target, metrics: &Arc<JobMetrics>) -> Background;
    /// A PostgreSQL database of the source's that can hold the state store
    /// when no `WALPIPE_STATE_URL` is given (`None`: one must be).
    fn state_store(target: &Self::Target) -> Option<ConnInfo>;
    /// Removes what the job made on the source (its stream and publication).
    fn remove(
        target: &Self::Target,
        settings: &SourceSettings,
    ) -> impl Future<Output = Result<(), SetupError>> + Send;

    /// Every table a job on `target` could capture, with the catalog's row
    /// estimate, for a person choosing tables (the console's create form).
    fn offered_tables(
        target: &Self::Target,
    ) -> impl Future<Output = Result<Vec<OfferedTable>, SetupError>> + Send;

    /// The captured tables as the catalog has them now; refused when one
    /// cannot be read, or has no key and `needs_keys`.
    fn tables(
        &mut self,
        needs_keys: bool,
    ) -> impl Future<Output = Result<Vec<SourceTable>, SetupError>> + Send;
    /// Makes the source send the changes of `tables` (before a new stream).
    fn prepare(&mut self, tables: &[SourceTable]) -> impl Future<Output = Result<(), SetupError>> + Send;
    /// Where the job's stream stands, given the position its checkpoint
    /// holds (`applied`), if any.
    fn stream_state(
        &mut self,
        applied: Option<Position>,
    ) -> impl Future<Output = Result<StreamState, SetupError>> + Send;
    /// Drops the job's stream (and what it kept).
    fn forget_stream(&mut self) -> impl Future<Output = Result<(), SetupError>> + Send;
    /// Creates the job's stream; a `temporary` one goes when this source
    /// does. With `snapshot`, the stream comes with a snapshot to copy as of
    /// ([`NewStream::snapshot`]); without, a source may skip making one
    /// (MySQL then takes no lock).
    fn new_stream(
        &mut self,
        temporary: bool,
        snapshot: bool,
    ) -> impl Future<Output = Result<NewStream, SetupError>> + Send;
    /// Reads the tables as of `snapshot` (a [`NewStream::snapshot`]), until `start`.
    fn snapshot_reader<'a>(&'a self, snapshot: &'a str) -> Box<dyn SnapshotReader + 'a>;
    /// Records in the checkpoint store (`store`) what the source's catalog
    /// says that its stream will not (PostgreSQL: the partitions of each
    /// root), before a full copy.
    fn record_catalog(
        &mut self,
        store: &tokio_postgres::Client,
    ) -> impl Future<Output = Result<(), SetupError>> + Send;
    /// Watches the catalog for what the stream does not say, marking the
    /// tables that need a copy in the checkpoint store and in `metrics`.
    fn watch_catalog(&self, metrics: &Arc<JobMetrics>, captured: &[SourceTable]) -> Background;
    /// The source's catalog, for a sink that follows shapes.
    fn history(&self) -> Arc<dyn ColumnHistory>;
    /// What deletes delivered outbox rows on the source.
    fn row_deleters(&self) -> Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync>;
    /// Starts streaming after `from` (a position the stream was told durable, or its consistent point).
    fn start(
        self,
        from: Position,
        metrics: &Arc<JobMetrics>,
    ) -> impl Future<Output = Result<Self::Started, SetupError>> + Send;
}

/// A started stream, before the sink's encoding is known.
pub trait Started: Send {
    /// The change stream writing lines with `encoding`, with the chunked
    /// `copies` (tables and where each resumes) placed in it.
    fn changes<E: Encoding>(
        self,
        encoding: E,
        copies: Vec<(SourceTable, TableCopy)>,
    ) -> Streaming<impl ChangeStream>;
}

/// A session's stream, and what runs beside it.
pub struct Streaming<C> {
    pub changes: C,
    /// The chunked copies' reader, when there are copies.
    pub copying: Option<Copying>,
    /// The source's own chores for the session (its heartbeat); stopped when dropped.
    pub chores: Vec<Background>,
}

/// A task that stops when dropped.
pub struct Background(JoinHandle<()>);

impl Background {
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Background {
        Background(tokio::spawn(task))
    }

    /// Stops it now, before it is dropped.
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running reader of chunked copies.
pub struct Copying {
    task: JoinHandle<Result<(), StreamError>>,
    failed: Option<oneshot::Receiver<()>>,
}

impl Copying {
    pub fn spawn(task: impl Future<Output = Result<(), StreamError>> + Send + 'static) -> Copying {
        let (failing, failed) = oneshot::channel();
        let task = tokio::spawn(async move {
            let result = task.await;
            if result.is_err() {
                let _ = failing.send(());
            }
            result
        });
        Copying { task, failed: Some(failed) }
    }

    /// Completes if the copy fails (never if it succeeds).
    pub fn failed(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let failed = self.failed.take();
        async move {
            let failed = match failed {
                Some(failed) => failed.await.is_ok(),
                None => false,
            };
            if !failed {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the copy; its error, if it failed.
    pub async fn finish(self) -> Result<(), StreamError> {
        if !self.task.is_finished() {
            self.task.abort();
        }
        match self.task.await {
            Ok(result) => result,
            Err(_) => Ok(()), // aborted: the stream stopped first
        }
    }
}
