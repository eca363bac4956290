//! A connection to PostgreSQL, plain or replication: startup,
//! authentication, simple queries and COPY out, on `postgres-protocol`'s
//! codec. The replication commands are the Postgres source's
//! (`source::postgres::commands`).
//!
//! Released `tokio-postgres` cannot open a walsender session (no
//! `replication=database` startup key, no CopyBoth), so this module speaks
//! the protocol itself: it builds the startup message, runs trust,
//! cleartext, md5 or SCRAM-SHA-256 authentication, frames messages (CopyData
//! `d` and CopyBothResponse `W` by hand, everything else through
//! `backend::Message::parse`), and runs simple queries.
//!
//! Invariants:
//! - Reads and writes are cancel-safe: bytes read stay in `read_buf` until
//!   a whole message is there, and queued writes stay in `write_buf` until
//!   the socket took them, so a caller may drop a future of this type in a
//!   `select!` without losing or tearing a message.
//! - The session's text formats are fixed at startup (ISO dates, UTC,
//!   hex bytea, shortest exact floats, UTF-8), which `change::value` relies on.

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::conninfo::ConnInfo;
use super::error::{ServerError, SourceError};
use super::receive_side::ReceiveSide;
use super::transport::Transport;
pub(crate) use super::wire::{Inbox, Incoming, Outbox};

/// Run-time parameters sent at startup; `change::value` depends on them.
const SESSION_PARAMETERS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "3"),
    // money's text form follows lc_monetary: the C locale's is the same on every server.
    ("lc_monetary", "C"),
];

/// The rows of a simple query, as text.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(index)?.as_deref()
    }
}

pub struct Connection {
    pub(crate) inbox: Inbox,
    pub(crate) outbox: Outbox,
    /// e.g. 150018 for 15.18.
    pub(crate) server_version_num: u32,
    pub(super) user: String,
    /// The socket's receive side (TCP and TLS).
    pub(crate) receive_side: Option<ReceiveSide>,
}

/// The most a drain of the socket leaves buffered: bounds walpipe's memory
/// whatever the server has queued (a walsender's send buffer holds up to
/// 4 MiB under Linux's default `tcp_wmem`).
pub(crate) const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

impl Connection {
    /// Opens a logical replication session (`replication=database`).
    pub async fn connect(info: &ConnInfo) -> Result<Connection, SourceError> {
        Self::open(info, true).await
    }

    /// Opens an ordinary session, for bulk reads ([`Connection::copy_out`])
    /// where this client's large reads beat a general-purpose driver.
    pub async fn connect_plain(info: &ConnInfo) -> Result<Connection, SourceError> {
        Self::open(info, false).await
    }

    async fn open(info: &ConnInfo, replication: bool) -> Result<Connection, SourceError> {
        // A replication socket's receive buffer is fixed before it connects,
        // so the window never grows past it.
        let transport = Transport::connect(info, replication).await?;
        let receive_side = transport.receive_side();
        let (reader, writer) = tokio::io::split(transport);
        let mut conn = Connection {
            inbox: Inbox { reader, buf: BytesMut::with_capacity(256 * 1024) },
            outbox: Outbox { writer, buf: BytesMut::with_capacity(1024) },
            server_version_num: 0,
            user: info.user.clone(),
            receive_side,
        };
        let mut parameters = vec![
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("application_name", info.application_name.as_str()),
        ];
        if replication {
            parameters.push(("replication", "database"));
        }
        parameters.extend_from_slice(SESSION_PARAMETERS);
        frontend::startup_message(parameters.iter().copied(), &mut conn.outbox.buf)
            .map_err(|error| SourceError::Protocol(format!("startup message: {error}")))?;
        conn.outbox.flush().await?;
        tokio::time::timeout(info.connect_timeout, conn.authenticate(info)).await.map_err(|_| {
            SourceError::ConnectTimeout { target: info.target(), seconds: info.connect_timeout.as_secs() }
        })??;
        Ok(conn)
    }

    /// The server's version as a number, e.g. 150018 for 15.18.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// Moves what the socket holds now into the inbox without waiting, up
    /// to [`DRAIN_LIMIT`] buffered: see [`ReceiveSide::drain_into`].
    /// Returns the bytes moved.
    pub(crate) fn drain_socket(&mut self) -> usize {
        self.receive_side.as_ref().map_or(0, |side| side.drain_into(&mut self.inbox.buf, DRAIN_LIMIT))
    }

    pub(crate) async fn recv(&mut self) -> Result<Incoming, SourceError> {
        loop {
            if let Some(incoming) = self.inbox.try_incoming()? {
                return Ok(incoming);
            }
            self.inbox.read_more().await?;
        }
    }

    /// Runs one statement with the simple query protocol.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, SourceError> {
        frontend::query(sql, &mut self.outbox.buf)?;
        self.outbox.flush().await?;
        let mut result = QueryResult::default();
        let mut failure = None;
        loop {
            match self.recv().await? {
                Incoming::Other(Message::RowDescription(body)) => {
                    let mut fields = body.fields();
                    result.columns.clear();
                    while let Some(field) = fields.next()? {
                        result.columns.push(field.name().to_string());
                    }
                }
                Incoming::Other(Message::DataRow(body)) => {
                    let buffer = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::with_capacity(result.columns.len());
                    while let Some(range) = ranges.next()? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
                    }
                    result.rows.push(row);
                }
                Incoming::Other(Message::ErrorResponse(body)) => {
                    failure = Some(ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::NoticeResponse(body)) => {
                    log_notice(&ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::ReadyForQuery(_)) => {
                    return match failure {
                        Some(error) => Err(SourceError::Server { error }),
                        None => Ok(result),
                    };
                }
                Incoming::CopyData(_) | Incoming::CopyBothResponse => {
                    return Err(SourceError::Protocol(format!("copy data in answer to {sql:?}")));
                }
                Incoming::Other(_) => {}
            }
        }
    }

    /// Runs `COPY ... TO STDOUT` and hands the rows to `each` in chunks of
    /// about `chunk_bytes` (whole rows). Returns the rows copied.
    pub async fn copy_out<F, Fut>(
        &mut self,
        sql: &str,
        chunk_bytes: usize,
        mut each: F,
    ) -> Result<u64, SourceError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), SourceError>>,
    {
        frontend::query(sql, &mut self.outbox.buf)?;
        self.outbox.flush().await?;
        let mut chunk = BytesMut::with_capacity(chunk_bytes);
        let mut rows = 0;
        let mut failure = None;
        loop {
            match self.recv().await? {
                Incoming::CopyData(row) => {
                    chunk.extend_from_slice(&row);
                    rows += 1;
                    if chunk.len() >= chunk_bytes {
                        each(chunk.split().freeze()).await?;
                    }
                }
                Incoming::Other(Message::CopyDone) if !chunk.is_empty() => {
                    each(chunk.split().freeze()).await?
                }
                Incoming::Other(Message::ErrorResponse(body)) => {
                    failure = Some(ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::ReadyForQuery(_)) => {
                    return match failure {
                        Some(error) => Err(SourceError::Server { error }),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    pub(crate) async fn terminate(mut self) {
        frontend::terminate(&mut self.outbox.buf);
        let _ = self.outbox.flush().await;
        let _ = self.outbox.writer.shutdown().await;
    }
}

pub(crate) fn log_notice(notice: &ServerError) {
    tracing::info!(severity = %notice.severity, code = %notice.code, "source: {}", notice.message);
}

/// `15.18 (Debian ...)` to 150018, `9.6.24` to 90624.
pub(super) fn parse_server_version(text: &str) -> u32 {
    let numbers: Vec<u32> = text
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect();
    match numbers.as_slice() {
        [major, minor, patch, ..] if *major < 10 => major * 10000 + minor * 100 + patch,
        [major, minor, ..] => major * 10000 + minor,
        [major] => major * 10000,
        [] => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(parse_server_version("15.18 (Debian 15.18-0+deb12u1)"), 150018);
        assert_eq!(parse_server_version("18.6"), 180006);
        assert_eq!(parse_server_version("18beta1"), 180000);
        assert_eq!(parse_server_version("9.6.24"), 90624);
    }
}
