//! Sinks: where changes go. One folder or file per sink; each reads chunks
//! of change lines from the driver and acknowledges them once durable.
//!
//! ```text
//!  postgres/   rows and checkpoint in one sink transaction (mirror, changelog)
//!  delivery/   batches with a stable identity, checkpoint in the state store,
//!              handed to a transport: webhook, StarRocks Stream Load, stdout
//! ```

pub mod delivery;
pub mod http;
pub mod postgres;
pub mod target;

pub use target::SinkTarget;

use std::collections::HashMap;
use std::sync::Arc;

use delivery::Transport;
use delivery::batch::Batch;

use crate::metrics::JobMetrics;

/// The transports of the sinks outside Postgres, as one type.
pub enum Outlet {
    Webhook(http::webhook::Webhook),
    StarRocks(http::starrocks::StarRocks),
    Stdout(delivery::stdout::Stdout),
}

impl Outlet {
    /// The transport for `target`; `None` for Postgres, which is no delivery sink.
    /// `destinations`: source `schema.table` to (database, table), for StarRocks.
    pub fn for_target(
        target: &SinkTarget,
        job: &str,
        signing_secret: Option<&str>,
        destinations: HashMap<String, (String, String)>,
        metrics: &Arc<JobMetrics>,
    ) -> Result<Option<Outlet>, SinkError> {
        Ok(Some(match target {
            SinkTarget::Postgres(_) => return Ok(None),
            SinkTarget::Webhook(url) => {
                Outlet::Webhook(http::webhook::Webhook::new(url.clone(), job, signing_secret)?)
            }
            SinkTarget::StarRocks(target) => Outlet::StarRocks(http::starrocks::StarRocks::new(
                target.clone(),
                job,
                destinations,
                metrics.clone(),
            )?),
            SinkTarget::Stdout => Outlet::Stdout(delivery::stdout::Stdout::default()),
        }))
    }
}

impl Transport for Outlet {
    async fn send(&mut self, key: &str, batch: &Batch) -> Result<u64, SinkError> {
        match self {
            Outlet::Webhook(webhook) => webhook.send(key, batch).await,
            Outlet::StarRocks(starrocks) => starrocks.send(key, batch).await,
            Outlet::Stdout(stdout) => stdout.send(key, batch).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the sink failed: {}", crate::sql_client::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the sink received a change line it cannot read ({0}); this is a bug, please report it")]
    Record(String),
    #[error(
        "the destination of {table} could not follow the source's new shape: {statement} failed: {detail}; alter the destination by hand to match the source (or drop it and restart the job to copy it again), then retry the job (walpipe jobs retry)"
    )]
    Schema { table: String, statement: String, detail: String },
    #[error("could not read the source's catalog to follow a schema change: {0}")]
    SchemaSource(String),
    #[error("could not record the delivery in the state store: {}", crate::sql_client::describe(.0))]
    State(tokio_postgres::Error),
    #[error(
        "{target} did not take a batch after {attempts} attempts (last: {reason}); walpipe keeps retrying with backoff"
    )]
    Unavailable { target: String, attempts: u32, reason: String, timed_out: bool },
    #[error(
        "{target} rejected a batch with {status}: {body}; fix the receiver or what it refuses, then retry the job (walpipe jobs retry), which sends the same batch again"
    )]
    Rejected { target: String, status: String, body: String },
    #[error("could not write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("could not delete delivered outbox rows on the source: {}; grant DELETE on the outbox table to the source user, or set WALPIPE_OUTBOX_DELETE=false", crate::sql_client::describe(.0))]
    OutboxCleanup(tokio_postgres::Error),
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Postgres(error) | SinkError::State(error) | SinkError::OutboxCleanup(error) => {
                crate::sql_client::is_transient(error)
            }
            SinkError::Unavailable { .. } | SinkError::SchemaSource(_) => true,
            SinkError::Record(_)
            | SinkError::Rejected { .. }
            | SinkError::Stdout(_)
            | SinkError::Schema { .. } => false,
        }
    }
}
