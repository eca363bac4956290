//! Why a job's run failed, and whether trying again can help.
//!
//! Invariant: every failure of a run is one of these variants, and
//! [`JobError::is_transient`] decides from the variant (and the SQLSTATE
//! inside it), never from the text of a message.

use crate::pg::sql::{self, ConnectError};
use crate::pipeline::driver::DriveError;
use crate::sink::SinkError;
use crate::source::StreamError;
use crate::source::copy as snapshot;

pub use crate::lifecycle::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Connecting to where the checkpoint is (the sink, or the state store).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// The source failed, setting up or streaming, as it classified the failure.
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("the sink's SQL failed during set-up: {}", crate::pg::sql::describe(.0))]
    SinkSetup(tokio_postgres::Error),
    #[error("the sink task failed: {0}; this is a bug, please report it")]
    SinkTask(String),
    #[error(
        "{why}: the changes it held are gone; set WALPIPE_SNAPSHOT_MODE=when_needed to start over with a new stream and copy the tables again automatically, or {start_over} and restart"
    )]
    StreamLost { why: String, start_over: String },
}

impl JobError {
    /// The source gave up on the job's stream (an invalidated slot).
    pub fn is_slot_lost(&self) -> bool {
        match self {
            JobError::StreamLost { .. } => true,
            JobError::Stream(error) | JobError::Drive(DriveError::Source(error)) => {
                error.kind == ErrorKind::SlotInvalidated
            }
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
            JobError::SinkSetup(error)
            | JobError::Sink(
                SinkError::Postgres(error) | SinkError::State(error) | SinkError::Write { error, .. },
            ) => sql::is_timeout(error),
            JobError::Stream(error) | JobError::Drive(DriveError::Source(error)) => {
                error.kind == ErrorKind::Timeout
            }
            JobError::Sink(SinkError::Unavailable { timed_out, .. }) => *timed_out,
            _ => false,
        };
        if timed_out { ErrorKind::Timeout } else { ErrorKind::Other }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Connect(error) => error.is_transient(),
            JobError::Sink(error) => error.is_transient(),
            JobError::Drive(DriveError::Source(error)) | JobError::Stream(error) => error.transient,
            // The sink task reports its own error; the driver only saw it stop.
            JobError::Drive(DriveError::SinkStopped | DriveError::SinkStalled) => true,
            JobError::SinkSetup(error) => sql::is_transient(error),
            JobError::Snapshot(error) => error.is_transient(),
            JobError::SinkTask(_) | JobError::StreamLost { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let lost = JobError::StreamLost { why: "w".into(), start_over: "s".into() };
        assert_eq!(lost.kind(), ErrorKind::SlotInvalidated);
        let set_up = |kind| JobError::Stream(StreamError::new(true, kind, std::io::Error::other("x")));
        assert_eq!(set_up(ErrorKind::Timeout).kind(), ErrorKind::Timeout);
        assert!(set_up(ErrorKind::SlotInvalidated).is_slot_lost());
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
