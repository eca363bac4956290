//! Why a job's run failed, and whether trying again can help.
//!
//! Invariant: every failure of a run is one of these variants, and
//! [`JobError::is_transient`] decides from the variant (and the SQLSTATE
//! inside it), never from the text of a message.

use crate::pg::SourceError;
use crate::pg::sql::{self, ConnectError};
use crate::pipeline::driver::DriveError;
use crate::sink::SinkError;
use crate::source::StreamError;
use crate::source::postgres::catalog::CatalogError;
use crate::source::postgres::chunks::ChunkError;
use crate::source::copy as snapshot;

pub use crate::lifecycle::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Copy(#[from] ChunkError),
    #[error("the sink's SQL failed during set-up: {}", crate::pg::sql::describe(.0))]
    SinkSetup(tokio_postgres::Error),
    #[error("the source's SQL failed during set-up: {}", crate::pg::sql::describe(.0))]
    SourceSetup(tokio_postgres::Error),
    #[error("the sink task failed: {0}; this is a bug, please report it")]
    SinkTask(String),
    #[error(
        "replication slot {slot:?} was invalidated (wal_status = lost): the changes it held are gone; set WALPIPE_SNAPSHOT_MODE=when_needed to re-create it and copy the tables again automatically, or drop the slot and the job's checkpoint (DELETE FROM walpipe.checkpoints) and restart"
    )]
    SlotLost { slot: String },
    #[error(
        "permission denied: the source user may not read {tables} (walpipe needs SELECT to copy them): run GRANT SELECT ON {tables} TO {user} on the source"
    )]
    NoSelect { tables: String, user: String },
}

impl JobError {
    /// The server refused the slot because it was invalidated (SQLSTATE 55000).
    pub fn is_slot_lost(&self) -> bool {
        match self {
            JobError::SlotLost { .. } => true,
            JobError::Source(error) => error.sqlstate() == Some("55000"),
            JobError::Drive(DriveError::Source(error)) => error.kind == ErrorKind::SlotInvalidated,
            _ => false,
        }
    }

    /// The kind the metrics count it as.
    pub fn kind(&self) -> ErrorKind {
        if self.is_slot_lost() {
            return ErrorKind::SlotInvalidated;
        }
        let timed_out = match self {
            JobError::Connect(ConnectError::Postgres { source, .. }) => sql::is_timeout(source),
            JobError::Catalog(CatalogError::Query(error))
            | JobError::SinkSetup(error)
            | JobError::SourceSetup(error)
            | JobError::Sink(
                SinkError::Postgres(error) | SinkError::State(error) | SinkError::Write { error, .. },
            ) => sql::is_timeout(error),
            JobError::Source(error) => error.is_timeout(),
            JobError::Drive(DriveError::Source(error)) => error.kind == ErrorKind::Timeout,
            JobError::Sink(SinkError::Unavailable { timed_out, .. }) => *timed_out,
            _ => false,
        };
        if timed_out { ErrorKind::Timeout } else { ErrorKind::Other }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Connect(error) => error.is_transient(),
            JobError::Catalog(CatalogError::Query(error)) => sql::is_transient(error),
            JobError::Catalog(_) => false,
            JobError::Source(error) => error.is_transient(),
            JobError::Sink(error) => error.is_transient(),
            JobError::Drive(DriveError::Source(error)) | JobError::Stream(error) => error.transient,
            // The sink task reports its own error; the driver only saw it stop.
            JobError::Drive(DriveError::SinkStopped | DriveError::SinkStalled) => true,
            JobError::SinkSetup(error) | JobError::SourceSetup(error) => sql::is_transient(error),
            JobError::Snapshot(error) => error.is_transient(),
            JobError::Copy(error) => error.is_transient(),
            JobError::SinkTask(_) | JobError::SlotLost { .. } | JobError::NoSelect { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::error::ServerError;

    #[test]
    fn a_stream_error_is_retried_and_counted_as_its_source_classified_it() {
        let io = || std::io::Error::other("x");
        let lost = StreamError::new(false, ErrorKind::SlotInvalidated, io());
        let job = JobError::Drive(DriveError::Source(lost));
        assert!(job.is_slot_lost() && !job.is_transient());
        assert_eq!(job.kind(), ErrorKind::SlotInvalidated);
        let timeout = JobError::Drive(DriveError::Source(StreamError::new(true, ErrorKind::Timeout, io())));
        assert!(timeout.is_transient());
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn the_kind_comes_from_the_error_type_not_its_text() {
        let lost = JobError::SlotLost { slot: "s".into() };
        assert_eq!(lost.kind(), ErrorKind::SlotInvalidated);
        let timed_out = JobError::Source(SourceError::ConnectTimeout { target: "h:5432".into(), seconds: 5 });
        assert_eq!(timed_out.kind(), ErrorKind::Timeout);
        let cancelled =
            SourceError::Server { error: ServerError { code: "57014".into(), ..ServerError::default() } };
        assert_eq!(JobError::Source(cancelled).kind(), ErrorKind::Timeout);
        let http = SinkError::Unavailable {
            target: "hook".into(),
            attempts: 8,
            reason: "r".into(),
            timed_out: true,
        };
        assert_eq!(JobError::Sink(http).kind(), ErrorKind::Timeout);
        // A message that merely mentions a timeout is not one.
        let worded = JobError::SinkTask("the sink said: timeout settings ignored".into());
        assert_eq!(worded.kind(), ErrorKind::Other);
    }
}
