//! The walsender's CopyBoth sub-protocol (the payloads of CopyData frames).
//!
//! Server to client: `w` XLogData (one pgoutput message each) and `k`
//! primary keepalive. Client to server: `r` standby status update.

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;
use super::reader::Reader;
use crate::source::postgres::lsn::Lsn;

/// One message from the walsender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalsenderMessage {
    XLogData(XLogData),
    Keepalive(Keepalive),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Where this message's WAL starts (for pgoutput: the change's LSN).
    pub wal_start: Lsn,
    /// The end of WAL on the server when it was sent.
    pub wal_end: Lsn,
    pub send_time: i64,
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// The last WAL position the server has sent.
    pub wal_end: Lsn,
    pub send_time: i64,
    /// The server wants a status update now (or it may drop us at
    /// `wal_sender_timeout`).
    pub reply_requested: bool,
}

/// Parses one CopyData payload received during START_REPLICATION.
pub fn parse(payload: Bytes) -> Result<WalsenderMessage, DecodeError> {
    let mut reader = Reader::new(payload);
    match reader.u8("walsender message tag")? {
        b'w' => {
            let wal_start = Lsn(reader.u64("XLogData walStart")?);
            let wal_end = Lsn(reader.u64("XLogData walEnd")?);
            let send_time = reader.i64("XLogData sendTime")?;
            Ok(WalsenderMessage::XLogData(XLogData { wal_start, wal_end, send_time, data: reader.rest() }))
        }
        b'k' => {
            let wal_end = Lsn(reader.u64("keepalive walEnd")?);
            let send_time = reader.i64("keepalive sendTime")?;
            let reply_requested = match reader.u8("keepalive replyRequested")? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::invalid("keepalive replyRequested", 17)),
            };
            reader.finish("keepalive")?;
            Ok(WalsenderMessage::Keepalive(Keepalive { wal_end, send_time, reply_requested }))
        }
        _ => Err(DecodeError::invalid("walsender message tag", 0)),
    }
}

/// A standby status update: what the client has written, flushed and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    pub client_time: i64,
    pub reply_requested: bool,
}

impl StandbyStatus {
    /// The CopyData payload (`r` and 33 bytes).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(34);
        out.put_u8(b'r');
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(self.client_time);
        out.put_u8(u8::from(self.reply_requested));
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata() {
        let mut raw = vec![b'w'];
        raw.extend_from_slice(&0x10u64.to_be_bytes());
        raw.extend_from_slice(&0x20u64.to_be_bytes());
        raw.extend_from_slice(&7i64.to_be_bytes());
        raw.extend_from_slice(b"B...");
        let parsed = parse(Bytes::from(raw)).expect("valid XLogData");
        assert_eq!(
            parsed,
            WalsenderMessage::XLogData(XLogData {
                wal_start: Lsn(0x10),
                wal_end: Lsn(0x20),
                send_time: 7,
                data: Bytes::from_static(b"B..."),
            })
        );
    }

    #[test]
    fn parses_keepalive() {
        let mut raw = vec![b'k'];
        raw.extend_from_slice(&0x30u64.to_be_bytes());
        raw.extend_from_slice(&9i64.to_be_bytes());
        raw.push(1);
        let parsed = parse(Bytes::from(raw)).expect("valid keepalive");
        assert_eq!(
            parsed,
            WalsenderMessage::Keepalive(Keepalive {
                wal_end: Lsn(0x30),
                send_time: 9,
                reply_requested: true
            })
        );
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        assert!(parse(Bytes::from_static(b"")).is_err());
        assert!(parse(Bytes::from_static(b"x")).is_err());
        assert!(parse(Bytes::from_static(b"k\0\0\0")).is_err());
        assert!(parse(Bytes::from_static(b"w\0\0\0\0\0\0\0\0\0\0")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse(Bytes::from(bytes));
        }
    }

    #[test]
    fn encodes_status_update() {
        let status = StandbyStatus {
            write: Lsn(1),
            flush: Lsn(2),
            apply: Lsn(3),
            client_time: 4,
            reply_requested: false,
        };
        let bytes = status.encode();
        assert_eq!(bytes.len(), 34);
        assert_eq!(bytes[0], b'r');
        assert_eq!(&bytes[1..9], &1u64.to_be_bytes());
        assert_eq!(&bytes[9..17], &2u64.to_be_bytes());
        assert_eq!(&bytes[17..25], &3u64.to_be_bytes());
        assert_eq!(&bytes[25..33], &4i64.to_be_bytes());
        assert_eq!(bytes[33], 0);
    }
}
