//! The CopyBoth phase: messages in, standby status updates out.
//!
//! ```text
//!   server ──d(w XLogData | k keepalive)──> next() ──> StreamEvent
//!   server <──d(r status: write, flush)──── on request, when the position moved, and on a timer
//! ```
//!
//! LSN rules kept here:
//! - The positions sent never go backwards, and are only what the caller
//!   confirmed: the end of a transaction it made durable, or a keepalive's
//!   walEnd when it had nothing in flight ([`Feedback`]).
//! - A keepalive that asks for a reply is answered before the event is
//!   handed on; besides, a status goes out when [`Feedback`] says it is due
//!   (a third of `wal_sender_timeout`, at most 10 s, and promptly after the
//!   position moved). Status is sent from inside [`next`], and from
//!   [`keep_alive`] while the caller waits on its output.
//!
//! [`confirm`]: ReplicationStream::confirm
//! [`next`]: ReplicationStream::next
//! [`keep_alive`]: ReplicationStream::keep_alive

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use tokio::time::Instant;

use super::feedback::Feedback;
use super::read_pacing::{GATHER, ReadPacing};
use crate::pg::connection::{Connection, Incoming, log_notice};
use crate::pg::error::{ServerError, SourceError};
use crate::position::Position;
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::protocol::pgoutput::{Begin, BlockEdge};
use crate::source::postgres::protocol::time::to_pg_micros;
use crate::source::postgres::protocol::walsender::{self, Keepalive, WalsenderMessage};

#[derive(Debug)]
pub enum StreamEvent {
    /// One pgoutput message, at `lsn`.
    Data {
        lsn: Lsn,
        data: Bytes,
    },
    Keepalive(Keepalive),
}

pub struct ReplicationStream {
    conn: Connection,
    feedback: Feedback,
    pacing: ReadPacing,
    /// When the current wait for bytes stops gathering: kept across
    /// cancelled waits (the driver races `next` with other work), so the
    /// bound holds however often it is cancelled.
    gather_until: Option<Instant>,
    /// Whether bytes came from the socket since the last spacing wait.
    read_since_spacing: bool,
    /// Whether this stream has said (once, at debug) that it gathers.
    said_gathering: bool,
}

impl ReplicationStream {
    pub(super) fn new(conn: Connection, start: Lsn, status_interval: Duration) -> Self {
        let pacing = ReadPacing::new(conn.receive_side.is_some());
        ReplicationStream {
            conn,
            feedback: Feedback::new(start, status_interval, Instant::now()),
            pacing,
            gather_until: None,
            read_since_spacing: false,
            said_gathering: false,
        }
    }

    /// The position the server may consider durable (never lowered).
    pub fn confirm(&mut self, position: Position) {
        self.feedback.confirm(position.into());
    }

    pub fn confirmed(&self) -> Position {
        self.feedback.confirmed().into()
    }

    /// Whether a whole message is buffered, so `next` returns without waiting.
    pub fn has_buffered_message(&self) -> bool {
        let buf = &self.conn.inbox.buf;
        buf.len() >= 5 && {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            usize::try_from(len).is_ok_and(|len| buf.len() > len)
        }
    }

    fn queue_status(&mut self) -> Result<(), SourceError> {
        let status = self.feedback.report(Instant::now(), to_pg_micros(SystemTime::now()));
        self.conn.outbox.queue_copy_data(&status.encode())
    }

    /// The next message from the server. `None` when the server ended the
    /// stream (CopyDone). Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
        loop {
            if let Some(incoming) = self.conn.inbox.try_incoming()? {
                match incoming {
                    Incoming::CopyData(payload) => {
                        let message = walsender::parse(payload).map_err(|error| {
                            SourceError::Protocol(format!(
                                "malformed walsender message after LSN {}: {error}",
                                self.confirmed()
                            ))
                        })?;
                        return Ok(Some(match message {
                            WalsenderMessage::XLogData(xlog) => {
                                let (mark, why) = match Begin::peek_commit_time(&xlog.data) {
                                    Some(committed) => (
                                        self.pacing.begin(xlog.send_time, committed),
                                        "the stream is a backlog",
                                    ),
                                    None => (
                                        self.pacing.message(BlockEdge::peek(&xlog.data)),
                                        "inside a block of a transaction still in progress",
                                    ),
                                };
                                if self.set_low_water(mark) == Some(GATHER) && !self.said_gathering {
                                    self.said_gathering = true;
                                    tracing::debug!("the socket gathers bytes before waking walpipe: {why}");
                                }
                                StreamEvent::Data { lsn: xlog.wal_start, data: xlog.data }
                            }
                            WalsenderMessage::Keepalive(keepalive) => {
                                if keepalive.reply_requested {
                                    self.queue_status()?;
                                    self.conn.outbox.flush().await?;
                                }
                                StreamEvent::Keepalive(keepalive)
                            }
                        }));
                    }
                    Incoming::Other(Message::CopyDone) => return Ok(None),
                    Incoming::Other(Message::ErrorResponse(body)) => {
                        return Err(SourceError::Server { error: ServerError::from_fields(body.fields()) });
                    }
                    Incoming::Other(Message::NoticeResponse(body)) => {
                        log_notice(&ServerError::from_fields(body.fields()))
                    }
                    _ => return Err(SourceError::Protocol("unexpected message while streaming".into())),
                }
                continue;
            }
            self.keep_alive_once().await?;
        }
    }

    /// One round of waiting: reads more bytes, sends due status, flushes
    /// queued writes, or ends a wait that gathered long enough
    /// ([`ReadPacing`]), whichever comes first.
    async fn keep_alive_once(&mut self) -> Result<(), SourceError> {
        if let (Some(spacing), true) = (self.pacing.read_spacing(), self.read_since_spacing) {
            // Cancel-safe: a cancelled wait is waited again next time.
            tokio::time::sleep(spacing).await;
            self.read_since_spacing = false;
        }
        if Instant::now() >= self.feedback.deadline() {
            self.queue_status()?;
        }
        let gather_until = match self.pacing.gather_wait() {
            Some(wait) => Some(*self.gather_until.get_or_insert_with(|| Instant::now() + wait)),
            None => None,
        };
        let wake = gather_until.map_or(self.feedback.deadline(), |until| until.min(self.feedback.deadline()));
        let flushing = self.conn.outbox.has_pending_writes();
        tokio::select! {
            result = self.conn.outbox.flush(), if flushing => result,
            result = self.conn.inbox.read_more() => {
                self.gather_until = None;
                self.read_since_spacing = true;
                if result.is_ok() && self.pacing.read_spacing().is_some() {
                    // While gathering, take all the walsender has queued now:
                    // the next read waits READ_SPACING.
                    self.conn.drain_socket();
                }
                result
            }
            () = tokio::time::sleep_until(wake), if !flushing || gather_until.is_some() => {
                if gather_until.is_some_and(|until| Instant::now() >= until) {
                    self.gather_until = None;
                    let mark = self.pacing.end();
                    self.set_low_water(mark);
                }
                Ok(())
            }
        }
    }

    /// Sets the socket's receive low-water mark to what the pacing asked,
    /// and returns it; if that fails, the stream reads each byte as it comes
    /// from then on.
    fn set_low_water(&mut self, mark: Option<usize>) -> Option<usize> {
        let (Some(bytes), Some(side)) = (mark, &self.conn.receive_side) else { return None };
        if let Err(error) = side.set_low_water(bytes) {
            tracing::debug!(%error, "the replication socket's receive low-water mark could not be set: reading each message as it comes");
            self.pacing.unavailable();
            return None;
        }
        Some(bytes)
    }

    /// Keeps the session alive (status updates, replies) without handing
    /// out messages, for `wait` long: for a caller blocked on its sink.
    /// Messages that arrive stay buffered for `next`.
    pub async fn keep_alive(&mut self, wait: Duration) -> Result<(), SourceError> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if Instant::now() >= self.feedback.deadline() {
                self.queue_status()?;
            }
            let deadline = self.feedback.deadline().min(until);
            tokio::select! {
                result = self.conn.outbox.flush(), if self.conn.outbox.has_pending_writes() => result?,
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        Ok(())
    }

    /// Reports the final position, ends the stream and closes the connection.
    pub async fn finish(mut self) -> Result<(), SourceError> {
        let mark = self.pacing.end();
        self.set_low_water(mark);
        self.queue_status()?;
        self.conn.outbox.queue_copy_done();
        self.conn.outbox.flush().await?;
        // Drain until the server has ended its side and the command completed.
        let drain = async {
            loop {
                match self.conn.recv().await? {
                    Incoming::Other(Message::ReadyForQuery(_)) => return Ok::<_, SourceError>(()),
                    Incoming::Other(Message::ErrorResponse(body)) => {
                        return Err(SourceError::Server { error: ServerError::from_fields(body.fields()) });
                    }
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), drain).await {
            Ok(ended) => ended?,
            Err(_) => tracing::warn!(
                "the server did not end the replication stream within 10 s; closing the connection"
            ),
        }
        self.conn.terminate().await;
        Ok(())
    }
}

impl Connection {
    /// How often to send status: a third of the server's
    /// `wal_sender_timeout` (at most 10 s), so one always arrives in time.
    pub async fn status_interval(&mut self) -> Result<Duration, SourceError> {
        let timeout = self
            .simple_query("SELECT setting::bigint AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'")
            .await?;
        let ms: u64 = timeout.first("ms").and_then(|ms| ms.parse().ok()).unwrap_or(60_000);
        let third = if ms == 0 { 10_000 } else { ms / 3 };
        Ok(Duration::from_millis(third.clamp(100, 10_000)))
    }

    /// Enters streaming from `start` (`0/0`: where the slot stands).
    pub async fn start_stream(
        mut self,
        slot: &str,
        publication: &str,
        start: Position,
        status_interval: Duration,
    ) -> Result<ReplicationStream, SourceError> {
        self.start_replication(slot, publication, start.into()).await?;
        Ok(ReplicationStream::new(self, start.into(), status_interval))
    }
}
