//! A replication connection: startup, authentication and the commands of
//! the replication protocol, on `postgres-protocol`'s codec.
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

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::conninfo::ConnInfo;
use super::error::{ServerError, SourceError};
use super::transport::Transport;
use crate::lsn::Lsn;
use crate::names::{quote_ident, quote_literal};

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

/// One message from the server.
pub(super) enum Incoming {
    CopyData(Bytes),
    CopyBothResponse,
    Other(Message),
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_position: Lsn,
    pub dbname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub name: String,
    pub consistent_point: Lsn,
    /// Usable with `SET TRANSACTION SNAPSHOT` while this connection stays idle.
    pub snapshot_name: Option<String>,
}

/// The receiving half: bytes read but not yet taken as messages.
pub(super) struct Inbox {
    reader: ReadHalf<Transport>,
    pub(super) buf: BytesMut,
}

/// The sending half: messages queued but not yet taken by the socket.
pub(super) struct Outbox {
    writer: WriteHalf<Transport>,
    buf: BytesMut,
}

pub struct Connection {
    pub(super) inbox: Inbox,
    pub(super) outbox: Outbox,
    /// e.g. 150018 for 15.18.
    server_version_num: u32,
    user: String,
}

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
        let transport = Transport::connect(info).await?;
        let (reader, writer) = tokio::io::split(transport);
        let mut conn = Connection {
            inbox: Inbox { reader, buf: BytesMut::with_capacity(256 * 1024) },
            outbox: Outbox { writer, buf: BytesMut::with_capacity(1024) },
            server_version_num: 0,
            user: info.user.clone(),
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

    async fn authenticate(&mut self, info: &ConnInfo) -> Result<(), SourceError> {
        let password = || {
            info.password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| SourceError::PasswordMissing { user: info.user.clone() })
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.recv().await? {
                Incoming::Other(Message::AuthenticationOk) => break,
                Incoming::Other(Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password()?, &mut self.outbox.buf)?;
                }
                Incoming::Other(Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(info.user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.outbox.buf)?;
                }
                Incoming::Other(Message::AuthenticationSasl(body)) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Some(mechanism) = mechanisms.next()? {
                        offered.push(mechanism.to_string());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(SourceError::AuthUnsupported { method: offered.join(", ") });
                    }
                    // Channel binding is not used ("n"): accepted by every
                    // server, also when it offers SCRAM-SHA-256-PLUS.
                    let state = sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        state.message(),
                        &mut self.outbox.buf,
                    )?;
                    scram = Some(state);
                }
                Incoming::Other(Message::AuthenticationSaslContinue(body)) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| SourceError::Protocol("SASL continue before start".into()))?;
                    state
                        .update(body.data())
                        .map_err(|_| SourceError::AuthFailed { user: info.user.clone() })?;
                    frontend::sasl_response(state.message(), &mut self.outbox.buf)?;
                }
                Incoming::Other(Message::AuthenticationSaslFinal(body)) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| SourceError::Protocol("SASL final before start".into()))?;
                    state
                        .finish(body.data())
                        .map_err(|_| SourceError::AuthFailed { user: info.user.clone() })?;
                }
                Incoming::Other(Message::ErrorResponse(body)) => {
                    return Err(self.refused(ServerError::from_fields(body.fields())));
                }
                Incoming::Other(Message::AuthenticationGss | Message::AuthenticationSspi) => {
                    return Err(SourceError::AuthUnsupported { method: "GSSAPI/SSPI".into() });
                }
                Incoming::Other(Message::AuthenticationKerberosV5 | Message::AuthenticationScmCredential) => {
                    return Err(SourceError::AuthUnsupported { method: "Kerberos/SCM".into() });
                }
                _ => return Err(SourceError::Protocol("unexpected message during authentication".into())),
            }
            self.outbox.flush().await?;
        }
        // After AuthenticationOk: parameters and key data until ReadyForQuery.
        loop {
            match self.recv().await? {
                Incoming::Other(Message::ReadyForQuery(_)) => return Ok(()),
                Incoming::Other(Message::ParameterStatus(body)) if body.name()? == "server_version" => {
                    self.server_version_num = parse_server_version(body.value()?);
                }
                Incoming::Other(Message::ErrorResponse(body)) => {
                    return Err(self.refused(ServerError::from_fields(body.fields())));
                }
                Incoming::Other(Message::NoticeResponse(body)) => {
                    log_notice(&ServerError::from_fields(body.fields()))
                }
                _ => {}
            }
        }
    }

    fn refused(&self, error: ServerError) -> SourceError {
        let user = &self.user;
        match error.code.as_str() {
            "28P01" => SourceError::AuthFailed { user: user.clone() },
            "42501" => SourceError::Unusable(format!(
                "user {user:?} lacks the REPLICATION privilege on the source: run ALTER ROLE {} REPLICATION, or connect as a role that has it",
                quote_ident(user)
            )),
            "3D000" => {
                SourceError::Unusable(format!("{}: fix the database name in the source URL", error.message))
            }
            "28000" => SourceError::Unusable(format!(
                "the source refused user {user:?}: {}; check the user name in the source URL, and that pg_hba.conf lets it connect to this database",
                error.message
            )),
            _ => SourceError::Refused { error },
        }
    }

    /// The server's version as a number, e.g. 150018 for 15.18.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    pub(super) async fn recv(&mut self) -> Result<Incoming, SourceError> {
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

    pub async fn identify_system(&mut self) -> Result<SystemIdentity, SourceError> {
        let result = self.simple_query("IDENTIFY_SYSTEM").await?;
        let field = |name: &str| {
            result.first(name).ok_or_else(|| SourceError::Protocol(format!("IDENTIFY_SYSTEM without {name}")))
        };
        Ok(SystemIdentity {
            system_id: field("systemid")?.to_string(),
            timeline: field("timeline")?
                .parse()
                .map_err(|_| SourceError::Protocol("IDENTIFY_SYSTEM timeline".into()))?,
            xlog_position: field("xlogpos")?
                .parse()
                .map_err(|_| SourceError::Protocol("IDENTIFY_SYSTEM xlogpos".into()))?,
            dbname: result.first("dbname").map(str::to_string),
        })
    }

    /// Creates a pgoutput slot with an exported snapshot. The snapshot stays
    /// valid until this connection runs its next command.
    pub async fn create_slot(&mut self, name: &str, temporary: bool) -> Result<CreatedSlot, SourceError> {
        let temporary = if temporary { " TEMPORARY" } else { "" };
        let snapshot =
            if self.server_version_num >= 150000 { "(SNAPSHOT 'export')" } else { "EXPORT_SNAPSHOT" };
        let sql =
            format!("CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput {snapshot}", quote_ident(name));
        let result = self.simple_query(&sql).await?;
        let consistent_point =
            result.first("consistent_point").and_then(|lsn| lsn.parse().ok()).ok_or_else(|| {
                SourceError::Protocol("CREATE_REPLICATION_SLOT without consistent_point".into())
            })?;
        Ok(CreatedSlot {
            name: name.to_string(),
            consistent_point,
            snapshot_name: result.first("snapshot_name").map(str::to_string),
        })
    }

    pub async fn drop_slot(&mut self, name: &str) -> Result<(), SourceError> {
        self.simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(name))).await.map(drop)
    }

    /// The highest pgoutput protocol version this server speaks.
    pub fn protocol_version(&self) -> u32 {
        match self.server_version_num {
            v if v >= 160000 => 4,
            v if v >= 150000 => 3,
            v if v >= 140000 => 2,
            _ => 1,
        }
    }

    /// Sends START_REPLICATION and waits for the server to enter CopyBoth.
    pub(super) async fn start_replication(
        &mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<(), SourceError> {
        let version = self.protocol_version();
        let mut options = format!(
            "proto_version '{version}', publication_names {}, messages 'true'",
            quote_literal(&quote_ident(publication))
        );
        if version >= 2 {
            options.push_str(", streaming 'on'");
        }
        let sql = format!("START_REPLICATION SLOT {} LOGICAL {start} ({options})", quote_ident(slot));
        frontend::query(&sql, &mut self.outbox.buf)?;
        self.outbox.flush().await?;
        let mut failure = None;
        loop {
            match self.recv().await? {
                Incoming::CopyBothResponse => return Ok(()),
                Incoming::Other(Message::ErrorResponse(body)) => {
                    failure = Some(ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::NoticeResponse(body)) => {
                    log_notice(&ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::ReadyForQuery(_)) => {
                    let error = failure.unwrap_or_else(|| ServerError {
                        message: "START_REPLICATION ended without streaming".into(),
                        ..ServerError::default()
                    });
                    return Err(SourceError::Server { error });
                }
                _ => {}
            }
        }
    }

    pub(super) async fn terminate(mut self) {
        frontend::terminate(&mut self.outbox.buf);
        let _ = self.outbox.flush().await;
        let _ = self.outbox.writer.shutdown().await;
    }
}

impl Outbox {
    /// Queued writes go out; cancel-safe.
    pub(super) async fn flush(&mut self) -> Result<(), SourceError> {
        while !self.buf.is_empty() {
            self.writer.write_buf(&mut self.buf).await?;
        }
        self.writer.flush().await?;
        Ok(())
    }

    pub(super) fn has_pending_writes(&self) -> bool {
        !self.buf.is_empty()
    }

    pub(super) fn queue_copy_data(&mut self, payload: &[u8]) -> Result<(), SourceError> {
        let data =
            frontend::CopyData::new(payload).map_err(|error| SourceError::Protocol(error.to_string()))?;
        data.write(&mut self.buf);
        Ok(())
    }

    pub(super) fn queue_copy_done(&mut self) {
        frontend::copy_done(&mut self.buf);
    }
}

impl Inbox {
    /// Reads more bytes; cancel-safe. End of stream is a lost connection.
    pub(super) async fn read_more(&mut self) -> Result<(), SourceError> {
        if self.buf.capacity() - self.buf.len() < 64 * 1024 {
            self.buf.reserve(256 * 1024);
        }
        let read = self.reader.read_buf(&mut self.buf).await?;
        if read == 0 {
            return Err(SourceError::ConnectionLost(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    /// A whole message from the buffer, if one is there.
    pub(super) fn try_incoming(&mut self) -> Result<Option<Incoming>, SourceError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        if tag == b'd' || tag == b'W' {
            let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len >= 4)
                .ok_or_else(|| SourceError::Protocol(format!("message length {len}")))?;
            if self.buf.len() < 1 + len {
                self.buf.reserve(1 + len - self.buf.len());
                return Ok(None);
            }
            let mut frame = self.buf.split_to(1 + len);
            frame.advance(5);
            return Ok(Some(if tag == b'd' {
                Incoming::CopyData(frame.freeze())
            } else {
                Incoming::CopyBothResponse
            }));
        }
        match Message::parse(&mut self.buf) {
            Ok(Some(message)) => Ok(Some(Incoming::Other(message))),
            Ok(None) => Ok(None),
            Err(error) => {
                Err(SourceError::Protocol(format!("undecodable message with tag {:?}: {error}", tag as char)))
            }
        }
    }
}

pub(super) fn log_notice(notice: &ServerError) {
    tracing::info!(severity = %notice.severity, code = %notice.code, "source: {}", notice.message);
}

/// `15.18 (Debian ...)` to 150018, `9.6.24` to 90624.
fn parse_server_version(text: &str) -> u32 {
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
