//! The pgoutput logical replication message format, protocol versions 1 to 4.
//!
//! Each XLogData carries exactly one message. Between Stream Start and
//! Stream Stop (protocol 2+, `streaming 'on'`), data messages carry the xid
//! of the (sub)transaction they belong to; the [`Decoder`] tracks whether it
//! is inside such a block, which is the only state decoding needs.
//!
//! Fields added by later versions are detected by what the server sends, not
//! by what was asked for: Stream Abort carries the abort LSN and time only
//! when the server streams in parallel mode (protocol 4), so they are read
//! when present.

use bytes::Bytes;

use super::DecodeError;
use super::reader::Reader;
pub use crate::change::row::{Column, OldTuple, Tuple};
use crate::source::postgres::lsn::Lsn;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeInfo),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    pub commit_time: i64,
    pub xid: u32,
}

impl Begin {
    /// A BEGIN's commit time, read from the message (the data of one
    /// XLogData) without decoding it; `None` for any other message.
    pub fn peek_commit_time(data: &[u8]) -> Option<i64> {
        if data.first() != Some(&b'B') {
            return None;
        }
        data.get(9..17)?.try_into().ok().map(i64::from_be_bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// The end of the commit record: where decoding resumes after this transaction.
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub xid: Option<u32>,
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<ColumnDef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Bit 1: the column is part of the replica identity.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

impl ColumnDef {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub old: OldTuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<u32>,
    /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub xid: Option<u32>,
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// The edges of a block of a streamed (in-progress) transaction's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockEdge {
    /// Stream Start: the changes that follow belong to an in-progress transaction.
    Start,
    /// Stream Stop: the block ends.
    Stop,
}

impl BlockEdge {
    /// Whether a message (the data of one XLogData) opens or closes a block,
    /// read from its first byte without decoding it.
    pub fn peek(data: &[u8]) -> Option<BlockEdge> {
        match data.first() {
            Some(b'S') => Some(BlockEdge::Start),
            Some(b'E') => Some(BlockEdge::Stop),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: u32,
    pub first_segment: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: u32,
    /// Equal to `xid` when the whole transaction aborted.
    pub subxid: u32,
    /// Abort LSN and time, sent with parallel streaming (protocol 4).
    pub abort: Option<(Lsn, i64)>,
}

/// Decodes pgoutput messages, tracking whether it is inside a stream block.
#[derive(Debug, Default)]
pub struct Decoder {
    in_stream: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one message (the data of one XLogData).
    pub fn decode(&mut self, data: Bytes) -> Result<Message, DecodeError> {
        let mut r = Reader::new(data);
        let tag = r.u8("pgoutput message tag")?;
        let message = match tag {
            b'B' => Message::Begin(Begin {
                final_lsn: Lsn(r.u64("Begin final LSN")?),
                commit_time: r.i64("Begin commit time")?,
                xid: r.u32("Begin xid")?,
            }),
            b'C' => Message::Commit(Commit {
                flags: r.u8("Commit flags")?,
                commit_lsn: Lsn(r.u64("Commit LSN")?),
                end_lsn: Lsn(r.u64("Commit end LSN")?),
                commit_time: r.i64("Commit time")?,
            }),
            b'O' => Message::Origin(Origin {
                commit_lsn: Lsn(r.u64("Origin commit LSN")?),
                name: r.cstr("Origin name")?,
            }),
            b'R' => {
                let xid = self.stream_xid(&mut r)?;
                let id = r.u32("Relation id")?;
                let namespace = r.cstr("Relation namespace")?;
                let name = r.cstr("Relation name")?;
                let replica_identity = r.u8("Relation replica identity")?;
                let count = count16(&mut r, "Relation column count")?;
                let mut columns = Vec::with_capacity(count.min(r.remaining()));
                for _ in 0..count {
                    columns.push(ColumnDef {
                        flags: r.u8("column flags")?,
                        name: r.cstr("column name")?,
                        type_oid: r.u32("column type")?,
                        type_modifier: r.i32("column type modifier")?,
                    });
                }
                Message::Relation(Relation { xid, id, namespace, name, replica_identity, columns })
            }
            b'Y' => Message::Type(TypeInfo {
                xid: self.stream_xid(&mut r)?,
                oid: r.u32("Type oid")?,
                namespace: r.cstr("Type namespace")?,
                name: r.cstr("Type name")?,
            }),
            b'I' => {
                let xid = self.stream_xid(&mut r)?;
                let relation_id = r.u32("Insert relation id")?;
                expect_tag(&mut r, b'N', "Insert new-tuple marker")?;
                Message::Insert(Insert { xid, relation_id, new: tuple(&mut r)? })
            }
            b'U' => {
                let xid = self.stream_xid(&mut r)?;
                let relation_id = r.u32("Update relation id")?;
                let (old, marker) = match r.u8("Update tuple marker")? {
                    b'K' => (Some(OldTuple::Key(tuple(&mut r)?)), r.u8("Update new-tuple marker")?),
                    b'O' => (Some(OldTuple::Full(tuple(&mut r)?)), r.u8("Update new-tuple marker")?),
                    other => (None, other),
                };
                if marker != b'N' {
                    return Err(r.invalid("Update new-tuple marker"));
                }
                Message::Update(Update { xid, relation_id, old, new: tuple(&mut r)? })
            }
            b'D' => {
                let xid = self.stream_xid(&mut r)?;
                let relation_id = r.u32("Delete relation id")?;
                let old = match r.u8("Delete tuple marker")? {
                    b'K' => OldTuple::Key(tuple(&mut r)?),
                    b'O' => OldTuple::Full(tuple(&mut r)?),
                    _ => return Err(r.invalid("Delete tuple marker")),
                };
                Message::Delete(Delete { xid, relation_id, old })
            }
            b'T' => {
                let xid = self.stream_xid(&mut r)?;
                let count = r.u32("Truncate relation count")? as usize;
                let options = r.u8("Truncate options")?;
                if count > r.remaining() / 4 {
                    return Err(r.truncated("Truncate relation ids"));
                }
                let relation_ids =
                    (0..count).map(|_| r.u32("Truncate relation id")).collect::<Result<_, _>>()?;
                Message::Truncate(Truncate { xid, options, relation_ids })
            }
            b'M' => {
                let xid = self.stream_xid(&mut r)?;
                let transactional = r.u8("Message flags")? & 1 != 0;
                let lsn = Lsn(r.u64("Message LSN")?);
                let prefix = r.cstr("Message prefix")?;
                let len = length32(&mut r, "Message content length")?;
                let content = r.bytes(len, "Message content")?;
                Message::Message(LogicalMessage { xid, transactional, lsn, prefix, content })
            }
            b'S' => {
                let start = StreamStart {
                    xid: r.u32("Stream Start xid")?,
                    first_segment: r.u8("Stream Start first-segment flag")? == 1,
                };
                self.in_stream = true;
                Message::StreamStart(start)
            }
            b'E' => {
                self.in_stream = false;
                Message::StreamStop
            }
            b'c' => Message::StreamCommit(StreamCommit {
                xid: r.u32("Stream Commit xid")?,
                flags: r.u8("Stream Commit flags")?,
                commit_lsn: Lsn(r.u64("Stream Commit LSN")?),
                end_lsn: Lsn(r.u64("Stream Commit end LSN")?),
                commit_time: r.i64("Stream Commit time")?,
            }),
            b'A' => {
                let xid = r.u32("Stream Abort xid")?;
                let subxid = r.u32("Stream Abort subxid")?;
                let abort = if r.remaining() > 0 {
                    Some((Lsn(r.u64("Stream Abort LSN")?), r.i64("Stream Abort time")?))
                } else {
                    None
                };
                Message::StreamAbort(StreamAbort { xid, subxid, abort })
            }
            _ => return Err(r.invalid("pgoutput message tag")),
        };
        r.finish("pgoutput message")?;
        Ok(message)
    }

    fn stream_xid(&self, r: &mut Reader) -> Result<Option<u32>, DecodeError> {
        if self.in_stream { Ok(Some(r.u32("streamed transaction xid")?)) } else { Ok(None) }
    }
}

fn expect_tag(r: &mut Reader, tag: u8, what: &'static str) -> Result<(), DecodeError> {
    if r.u8(what)? == tag { Ok(()) } else { Err(r.invalid(what)) }
}

/// A count sent as Int16, which must not be negative.
fn count16(r: &mut Reader, what: &'static str) -> Result<usize, DecodeError> {
    let count = r.i16(what)?;
    usize::try_from(count).map_err(|_| r.invalid(what))
}

/// A length sent as Int32, which must not be negative.
fn length32(r: &mut Reader, what: &'static str) -> Result<usize, DecodeError> {
    let len = r.i32(what)?;
    usize::try_from(len).map_err(|_| r.invalid(what))
}

fn tuple(r: &mut Reader) -> Result<Tuple, DecodeError> {
    let count = count16(r, "tuple column count")?;
    // Each column takes at least one byte: never reserve more than the message holds.
    let mut columns = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        columns.push(match r.u8("tuple column kind")? {
            b'n' => Column::Null,
            b'u' => Column::Unchanged,
            b't' => {
                let len = length32(r, "text value length")?;
                Column::Text(r.bytes(len, "text value")?)
            }
            b'b' => {
                let len = length32(r, "binary value length")?;
                Column::Binary(r.bytes(len, "binary value")?)
            }
            _ => return Err(r.invalid("tuple column kind")),
        });
    }
    Ok(Tuple(columns))
}

#[cfg(test)]
pub(crate) mod encode;

#[cfg(test)]
mod tests;
