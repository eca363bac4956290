//! Errors of the source connection, split into transient (retry) and
//! permanent (a person must fix something), each saying what to do.

use std::fmt;
use std::io;

use postgres_protocol::message::backend::ErrorFields;

use super::conninfo::ConnInfoError;

/// An error the server reported (`ErrorResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    /// From the fields of an ErrorResponse or NoticeResponse.
    pub fn from_fields(mut fields: ErrorFields<'_>) -> ServerError {
        use fallible_iterator::FallibleIterator;
        let mut error = ServerError::default();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Config(#[from] ConnInfoError),
    #[error(
        "could not connect to the source at {target} ({source}): check the host and port in the source URL and that the server is running"
    )]
    Connect { target: String, source: io::Error },
    #[error(
        "the source at {target} did not answer within {seconds} s: check the host and port in the source URL, or raise connect_timeout"
    )]
    ConnectTimeout { target: String, seconds: u64 },
    #[error(
        "the source at {target} does not accept TLS, but sslmode={mode} requires it: enable ssl on the server or use sslmode=prefer"
    )]
    TlsRefused { target: String, mode: &'static str },
    #[error(
        "TLS with the source at {target} failed ({message}): for a self-signed certificate set sslrootcert=/path/to/root.crt, or use sslmode=require to encrypt without verifying"
    )]
    Tls { target: String, message: String },
    #[error("{0}")]
    TlsConfig(String),
    #[error(
        "the source asks for a password for user {user:?}, but the source URL has none: add it as postgres://{user}:PASSWORD@host/db"
    )]
    PasswordMissing { user: String },
    #[error(
        "password authentication failed for user {user:?} on the source: check the user and password in the source URL"
    )]
    AuthFailed { user: String },
    #[error(
        "the source asks for an authentication method walpipe does not support ({method}): use scram-sha-256, md5, password or trust for this user in pg_hba.conf"
    )]
    AuthUnsupported { method: String },
    #[error("the source refused the connection: {error}{}", hint_suffix(.error))]
    Refused { error: ServerError },
    #[error("the source reported an error: {error}{}", hint_suffix(.error))]
    Server { error: ServerError },
    #[error(
        "the source sent something walpipe did not expect ({0}); this is a bug or an unsupported server, please report it"
    )]
    Protocol(String),
    #[error("the connection to the source was lost: {0}")]
    ConnectionLost(io::Error),
    #[error("{0}")]
    Unusable(String),
}

fn hint_suffix(error: &ServerError) -> String {
    match &error.hint {
        Some(hint) => format!(" (hint: {hint})"),
        None => String::new(),
    }
}

impl SourceError {
    /// Whether the source did not answer in time (connecting or on an open connection).
    pub fn is_timeout(&self) -> bool {
        match self {
            SourceError::ConnectTimeout { .. } => true,
            SourceError::Connect { source: error, .. } | SourceError::ConnectionLost(error) => {
                error.kind() == io::ErrorKind::TimedOut
            }
            SourceError::Server { error } | SourceError::Refused { error } => error.code == "57014",
            _ => false,
        }
    }

    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect { .. }
            | SourceError::ConnectTimeout { .. }
            | SourceError::ConnectionLost(_) => true,
            SourceError::Server { error } | SourceError::Refused { error } => {
                crate::pg::sql::is_transient_sqlstate(&error.code)
            }
            _ => false,
        }
    }

    /// The SQLSTATE, when the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            SourceError::Server { error } | SourceError::Refused { error } => Some(&error.code),
            _ => None,
        }
    }
}

impl From<io::Error> for SourceError {
    fn from(error: io::Error) -> Self {
        SourceError::ConnectionLost(error)
    }
}
