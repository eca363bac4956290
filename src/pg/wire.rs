//! The replication connection's two halves on the wire: whole messages
//! taken from the bytes read, and messages queued for the socket.
//!
//! Invariant: both are cancel-safe. Bytes read stay in the inbox's buffer
//! until a whole message is there, and queued writes stay in the outbox's
//! buffer until the socket took them, so a caller may drop a future of
//! either in a `select!` without losing or tearing a message.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::error::SourceError;
use super::transport::Transport;

/// One message from the server.
pub(crate) enum Incoming {
    CopyData(Bytes),
    CopyBothResponse,
    Other(Message),
}

/// The receiving half: bytes read but not yet taken as messages.
pub(crate) struct Inbox {
    pub(crate) reader: ReadHalf<Transport>,
    pub(crate) buf: BytesMut,
}

/// The sending half: messages queued but not yet taken by the socket.
pub(crate) struct Outbox {
    pub(crate) writer: WriteHalf<Transport>,
    pub(crate) buf: BytesMut,
}

impl Outbox {
    /// Queued writes go out; cancel-safe.
    pub(crate) async fn flush(&mut self) -> Result<(), SourceError> {
        while !self.buf.is_empty() {
            self.writer.write_buf(&mut self.buf).await?;
        }
        self.writer.flush().await?;
        Ok(())
    }

    pub(crate) fn has_pending_writes(&self) -> bool {
        !self.buf.is_empty()
    }

    pub(crate) fn queue_copy_data(&mut self, payload: &[u8]) -> Result<(), SourceError> {
        let data =
            frontend::CopyData::new(payload).map_err(|error| SourceError::Protocol(error.to_string()))?;
        data.write(&mut self.buf);
        Ok(())
    }

    pub(crate) fn queue_copy_done(&mut self) {
        frontend::copy_done(&mut self.buf);
    }
}

impl Inbox {
    /// Reads more bytes; cancel-safe. End of stream is a lost connection.
    pub(crate) async fn read_more(&mut self) -> Result<(), SourceError> {
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
    pub(crate) fn try_incoming(&mut self) -> Result<Option<Incoming>, SourceError> {
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
