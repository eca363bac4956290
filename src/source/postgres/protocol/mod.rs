//! The replication wire formats, as pure functions over bytes.
//!
//! ```text
//!  CopyData payload ──> walsender::parse ──> XLogData { wal_start, data } ──> pgoutput::Decoder
//!                                      └──> Keepalive { wal_end, reply_requested }
//!  StandbyStatus ──> walsender::StandbyStatus::encode ──> CopyData payload
//! ```
//!
//! Invariants this layer keeps:
//! - No I/O, no clocks, no global state: every function maps bytes to a value
//!   (or a value to bytes), so every path is testable on byte fixtures.
//! - Malformed input is a [`DecodeError`], never a panic: every read goes
//!   through the bounds-checked [`reader::Reader`], and a message with bytes
//!   left over after decoding is rejected too (the decoder and the server
//!   would disagree about the format). The property tests in `pgoutput`
//!   feed random and truncated messages to prove it.
//! - Column values stay as slices of the received buffer (`Bytes`), so
//!   decoding a row allocates one vector and copies no value.

pub mod pgoutput;
mod reader;
pub mod time;
pub mod walsender;

use std::fmt;

/// Why a message could not be decoded. The caller adds the LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {what} at byte {offset}")]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    /// The field or message being read.
    pub what: &'static str,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The message ended in the middle of a field.
    Truncated,
    /// A field held a value the format does not allow.
    Invalid,
    /// Bytes were left after the last field.
    Trailing,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeErrorKind::Truncated => "message ended while reading",
            DecodeErrorKind::Invalid => "invalid",
            DecodeErrorKind::Trailing => "unexpected bytes after",
        })
    }
}

impl DecodeError {
    pub(crate) fn truncated(what: &'static str, offset: usize) -> Self {
        DecodeError { kind: DecodeErrorKind::Truncated, what, offset }
    }

    pub(crate) fn invalid(what: &'static str, offset: usize) -> Self {
        DecodeError { kind: DecodeErrorKind::Invalid, what, offset }
    }

    pub(crate) fn trailing(what: &'static str, offset: usize) -> Self {
        DecodeError { kind: DecodeErrorKind::Trailing, what, offset }
    }
}
