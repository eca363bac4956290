//! Sinks: where changes go. Each sink lives in one folder behind [`Sink`],
//! and is registered by one line in `registry.rs`.
//!
//! ```text
//!  contract.rs  chunks in order with receipts; a receipt back once durable
//!  registry.rs  the registered sinks: their URLs (SinkTarget) and dispatch (AnySink)
//!  postgres/    rows and checkpoint in one sink transaction (mirror, changelog)
//!  delivery/    what the sinks outside Postgres share: batches with a stable
//!               identity, the ledger in the state store, outbox routing
//!  webhook/ starrocks/ stdout/   the transports of those sinks
//!  http.rs      the HTTP client and retries the webhook and StarRocks share
//! ```
//!
//! Adding a sink: a folder with a type that implements [`Sink`] (or, for a
//! sink that takes batches, [`delivery::Transport`]), and its line in the
//! registry.

pub mod delivery;
pub mod http;
pub mod postgres;
mod registry;
pub mod settings;
pub mod starrocks;
pub mod stdout;
pub mod webhook;

pub use registry::{AnySink, SinkTarget};

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::change::Encoding;
use crate::contract::SinkEnds;
pub use crate::contract::SinkError;
use crate::metrics::JobMetrics;
use crate::sink::settings::SinkSettings;
use crate::source::copy::{Snapshot, SnapshotError};
use crate::source::table::{ColumnHistory, SourceTable};

/// What a sink is opened with, for one run of a job.
pub struct Opening<'a> {
    pub settings: &'a SinkSettings,
    pub metrics: &'a Arc<JobMetrics>,
    /// The database that holds the checkpoint: the Postgres sink itself, or the state store.
    pub checkpoint_db: &'a tokio_postgres::Client,
    /// The captured tables, as the source's catalog has them now.
    pub tables: &'a [SourceTable],
    /// The source's catalog, for a sink that follows shapes (the Postgres mirror).
    pub history: &'a Arc<dyn ColumnHistory>,
}

/// One kind of sink. The contract, beyond the signatures:
/// - `open` creates what is missing (destination tables) and never touches
///   rows already there, so a restart keeps them.
/// - `copy` writes the initial copy of every table, as of the snapshot
///   (the exported strategy); a chunked copy comes in the stream instead,
///   as `snapshot` changes where the source placed each chunk.
/// - `stream` takes chunks in order (with the tables' shapes announced in
///   them before their first change of each shape, and again after each
///   reconnect) and hands a chunk's receipt back only once its lines and
///   its `confirm` position are durable (see [`contract`]).
pub trait Sink: Sized + Send + 'static {
    /// What the sink's URL names, parsed. Its `Display` shows no password.
    type Target: Clone + fmt::Display + Send + Sync + 'static;
    /// The URL schemes that name this sink (lowercase).
    const SCHEMES: &'static [&'static str];
    /// How its URL is written, for the error when no sink matches.
    const URL_FORM: &'static str;
    /// Whether the checkpoint lives in the sink itself, with the rows
    /// (otherwise in the state store).
    const HOLDS_CHECKPOINT: bool;
    /// Whether every table needs a key (a primary key or a replica identity
    /// index) to be written; without one a table is refused at the start.
    const NEEDS_KEYS: bool;

    /// Reads a URL with one of [`Sink::SCHEMES`]; the error says what to write instead.
    fn parse(url: &str) -> Result<Self::Target, String>;
    /// Makes the sink ready for a run.
    fn open(
        target: &Self::Target,
        opening: &Opening<'_>,
    ) -> impl Future<Output = Result<Self, SinkError>> + Send;
    /// The initial copy. Returns the rows copied.
    fn copy(&mut self, snapshot: &Snapshot<'_>) -> impl Future<Output = Result<u64, SnapshotError>> + Send;
    /// A new start whose tables are copied in chunks while streaming: the
    /// rows of an earlier start must not outlive it. A mirror empties its
    /// destinations (before the stream, so no streamed change is lost);
    /// the other sinks keep what they delivered, as with an exported copy.
    fn start_over(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }
    /// Streams: hands `driving` the encoding of its lines and the task that takes them.
    fn stream<D: Driving>(self, driving: D) -> impl Future<Output = D::Outcome> + Send;
}

/// The job's side of streaming: runs the driver with a sink's encoding and
/// the task that takes the chunks.
pub trait Driving: Send {
    type Outcome;
    fn drive<E, S, F>(self, encoding: E, take_chunks: S) -> impl Future<Output = Self::Outcome> + Send
    where
        E: Encoding,
        S: FnOnce(SinkEnds) -> F + Send,
        F: Future<Output = Result<(), SinkError>> + Send + 'static;
    /// The outcome of a sink that could not start taking chunks.
    fn fail(self, error: SinkError) -> Self::Outcome;
}
