//! Why setting the Postgres source up failed, classified for the job
//! ([`SetupError`]): whether trying again can help, and what the metrics
//! count it as, from the error's type and SQLSTATE, never its text.

use crate::lifecycle::ErrorKind;
use crate::pg::SourceError;
use crate::pg::sql::{self, ConnectError};
use crate::source::postgres::catalog::CatalogError;
use crate::source::setup::SetupError;

#[derive(Debug, thiserror::Error)]
pub enum SetupFailure {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Replication(#[from] SourceError),
    #[error("the source's SQL failed during set-up: {}", crate::pg::sql::describe(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error(
        "permission denied: the source user may not read {tables} (walpipe needs SELECT to copy them): run GRANT SELECT ON {tables} TO {user} on the source"
    )]
    NoSelect { tables: String, user: String },
}

impl SetupFailure {
    fn is_transient(&self) -> bool {
        match self {
            SetupFailure::Connect(error) => error.is_transient(),
            SetupFailure::Catalog(CatalogError::Query(error)) | SetupFailure::Sql(error) => {
                sql::is_transient(error)
            }
            SetupFailure::Catalog(_) | SetupFailure::NoSelect { .. } => false,
            SetupFailure::Replication(error) => error.is_transient(),
        }
    }

    fn kind(&self) -> ErrorKind {
        let timed_out = match self {
            // The server refused the slot because it was invalidated.
            SetupFailure::Replication(error) if error.sqlstate() == Some("55000") => {
                return ErrorKind::SlotInvalidated;
            }
            SetupFailure::Replication(error) => error.is_timeout(),
            SetupFailure::Connect(ConnectError::Postgres { source, .. }) => sql::is_timeout(source),
            SetupFailure::Catalog(CatalogError::Query(error)) | SetupFailure::Sql(error) => {
                sql::is_timeout(error)
            }
            _ => false,
        };
        if timed_out { ErrorKind::Timeout } else { ErrorKind::Other }
    }
}

impl From<SetupFailure> for SetupError {
    fn from(failure: SetupFailure) -> SetupError {
        SetupError::new(failure.is_transient(), failure.kind(), failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::error::ServerError;

    #[test]
    fn the_kind_comes_from_the_error_type_and_its_sqlstate_not_its_text() {
        let server = |code: &str| SourceError::Server {
            error: ServerError { code: code.into(), ..ServerError::default() },
        };
        let lost = SetupError::from(SetupFailure::Replication(server("55000")));
        assert_eq!((lost.kind, lost.transient), (ErrorKind::SlotInvalidated, false));
        let cancelled = SetupError::from(SetupFailure::Replication(server("57014")));
        assert_eq!(cancelled.kind, ErrorKind::Timeout);
        let timed_out = SetupError::from(SetupFailure::Replication(SourceError::ConnectTimeout {
            target: "h:5432".into(),
            seconds: 5,
        }));
        assert_eq!(timed_out.kind, ErrorKind::Timeout);
        let refused = SetupError::from(SetupFailure::NoSelect { tables: "t".into(), user: "u".into() });
        assert_eq!((refused.kind, refused.transient), (ErrorKind::Other, false));
    }
}
