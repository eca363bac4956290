//! pgoutput messages to change lines, one transaction at a time.
//!
//! ```text
//!  XLogData ──> Decoder ──> Begin ... changes ... Commit ──────────────> lines in `out`, Step::Committed
//!                       └─> Stream Start/Stop chunks ──> StreamedTxns ──> Stream Commit: Step::Replay
//!                                                                    └──> Stream Abort: dropped
//! ```
//!
//! Invariants:
//! - A line is written only for a change the server says committed: a
//!   plain transaction's changes arrive after its commit (the server sends
//!   nothing of an aborted one), a streamed one is held in [`StreamedTxns`]
//!   until Stream Commit.
//! - [`Step::Committed`] and the end of a [`Step::Replay`] carry the
//!   transaction's end LSN: the position that may be confirmed once its
//!   lines are durable. Nothing else moves the position forward.
//! - With an end position, a transaction that commits after it is neither
//!   written nor started: the step is [`Step::PastEnd`].
//! - Every Relation message is announced: a schema line (the table's
//!   columns by name) is written just before the table's next change, in
//!   the same transaction, so a sink learns each shape before the first row
//!   of it. The server sends a Relation before the first change of a table
//!   in a session and after its shape changed, so a shape is announced
//!   again after a reconnect; sinks treat a known shape as nothing new.
//!   A schema line takes no ordinal: change ids do not move.
//! - walpipe's heartbeats (non-transactional messages with prefix
//!   [`HEARTBEAT_PREFIX`]) are reported as [`Step::Heartbeat`], never written.
//! - While tables are copied in chunks, the keys committed transactions
//!   change in them are noted ([`KeyWatch`]); a chunk's marker (a
//!   transactional message with prefix [`CHUNK_PREFIX`]) is reported as
//!   [`Step::Chunk`], and the chunk's rows are written in its place, in the
//!   marker's transaction, by [`Assembler::begin_chunk`] and [`Assembler::write_chunk_rows`] (`chunks.rs`).
//! - A message that does not fit the sequence (a change outside a
//!   transaction, a row for an unknown relation, a row of the wrong width)
//!   is an error naming its LSN, never a panic.

use std::time::SystemTime;

use bytes::Bytes;

use std::collections::HashSet;

use super::spill::{RecordKind, StreamedTxns};
use crate::change::Encoding;
use crate::change::encode::Op;
use crate::change::relation::Table;
use crate::change::row::AppMessage;
use crate::position::Position;
use crate::source::postgres::chunks::reader::CHUNK_PREFIX;
use crate::source::postgres::chunks::watch::KeyWatch;
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::protocol::DecodeError;
use crate::source::postgres::protocol::pgoutput::{Decoder, LogicalMessage, Message, OldTuple, Tuple};
use crate::source::postgres::protocol::time::{pg_micros_to_unix_micros, to_system_time};
use crate::source::postgres::relations::{PrimaryKeys, RelationCache};

/// What handling one message produced.
#[derive(Debug)]
pub enum Step<E: Encoding> {
    /// Nothing that can be confirmed yet (lines may have been written).
    Continue,
    /// A transaction's lines are complete in `out`.
    Committed { end: Position, commit_time: SystemTime },
    /// A streamed transaction committed: write its lines with
    /// [`CommittedStream::replay_into`], then confirm `end`.
    Replay(Box<CommittedStream<E>>),
    /// The stream has passed the end position.
    PastEnd,
    /// walpipe's own heartbeat came back (it is not written as a line).
    Heartbeat,
    /// A chunk's marker, inside its transaction: the chunk's rows go here.
    Chunk { token: String },
    /// A large transaction's lines follow as it is decoded (`tentative`).
    TentativeBegin,
    /// The tentative lines since [`Step::TentativeBegin`] are void; the
    /// message that voided them, if any, is handled next.
    TentativeVoid(Option<Box<Deferred>>),
}

/// The prefix of the logical decoding messages walpipe emits as heartbeats.
pub const HEARTBEAT_PREFIX: &str = "walpipe_heartbeat";

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("malformed replication message at LSN {lsn}: {source}")]
    Decode { lsn: Lsn, source: DecodeError },
    #[error("unexpected replication message at LSN {lsn}: {what}")]
    Sequence { lsn: Lsn, what: String },
    #[error("could not hold a streamed transaction in a temporary file at LSN {lsn}: {source}")]
    Spill { lsn: Lsn, source: std::io::Error },
    #[error(
        "the columns of {table} changed while a chunk of its copy was read (at LSN {lsn}): the copy resumes from its last chunk"
    )]
    ChunkShape { lsn: Lsn, table: String },
    #[error(
        "a transaction updated a row of {table} while a chunk of its copy was read, without sending a TOASTed value it left unchanged, so the chunk cannot be merged (at LSN {lsn}): the copy resumes from its last chunk"
    )]
    ChunkUnmergeable { lsn: Lsn, table: String },
}

/// What the assembler received since it was last asked ([`Assembler::take_tally`]).
#[derive(Debug, Default)]
pub struct Tally {
    /// By relation id: inserts, updates, deletes, truncates.
    events: foldhash::HashMap<u32, [u64; 4]>,
    pub transactions: u64,
}

/// The operations counted per table, in the order of [`Tally`]'s arrays.
pub const TALLIED_OPS: [&str; 4] = ["insert", "update", "delete", "truncate"];

impl Tally {
    fn count(&mut self, relation_id: u32, op: usize) {
        self.events.entry(relation_id).or_default()[op] += 1;
    }
}

/// The plain (non-streamed) transaction being received.
#[derive(Debug)]
struct OpenTxn<T> {
    fields: T,
    xid: u32,
    next_ordinal: u64,
    /// A chunk marker's transaction: walpipe's own, not counted as the source's.
    marker: bool,
}

pub struct Assembler<E: Encoding> {
    encoding: E,
    decoder: Decoder,
    relations: RelationCache,
    /// Relations described since their last change: announced before the next.
    unannounced: HashSet<u32>,
    open: Option<OpenTxn<E::Txn>>,
    streamed: StreamedTxns,
    /// The top-level xid of the current stream block.
    stream_xid: Option<u32>,
    end_at: Option<Position>,
    tally: Tally,
    /// The keys changed in tables being copied in chunks.
    watch: Option<KeyWatch>,
    /// Large transactions written while they are decoded (`tentative`).
    sections: Sections,
}

impl<E: Encoding> Assembler<E> {
    /// `spill_cap`: bytes of streamed transactions held in memory before
    /// spilling to disk. `end_at`: stop after the last transaction that
    /// commits at or before this position. `primary_keys`: the key of
    /// tables with REPLICA IDENTITY FULL.
    pub fn new(
        encoding: E,
        spill_cap: usize,
        end_at: Option<Position>,
        primary_keys: PrimaryKeys,
    ) -> Assembler<E> {
        Assembler {
            encoding,
            decoder: Decoder::new(),
            relations: RelationCache::new(primary_keys),
            unannounced: HashSet::new(),
            open: None,
            streamed: StreamedTxns::new(spill_cap),
            stream_xid: None,
            end_at,
            tally: Tally::default(),
            watch: None,
            sections: Sections::default(),
        }
    }

    /// Notes the keys changed in the tables `watch` names, for the chunks of their copy.
    pub fn watching(mut self, watch: KeyWatch) -> Assembler<E> {
        self.watch = Some(watch);
        self
    }

    /// What was received since the last call; `visit` gets each table's
    /// `schema.name`, operation and count.
    pub fn take_tally(&mut self, mut visit: impl FnMut(&str, &str, u64)) -> Tally {
        let tally = std::mem::take(&mut self.tally);
        for (id, counts) in &tally.events {
            let name =
                self.relations.get(*id).map_or_else(|| format!("relation {id}"), |t| t.qualified_name());
            for (op, count) in TALLIED_OPS.iter().zip(counts) {
                if *count > 0 {
                    visit(&name, op, *count);
                }
            }
        }
        tally
    }

    /// Whether a plain transaction is partly received: its position must
    /// not be confirmed, and neither may any later one.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    fn past_end(&self, lsn: Lsn) -> bool {
        self.end_at.is_some_and(|end| Position::from(lsn) > end)
    }

    /// Handles one XLogData. Lines go to `out`.
    pub fn handle(&mut self, lsn: Lsn, data: Bytes, out: &mut Vec<u8>) -> Result<Step<E>, AssembleError> {
        let message = self.decoder.decode(data).map_err(|source| AssembleError::Decode { lsn, source })?;
        match self.voided_by(lsn, message) {
            Ok(message) => self.handle_message(lsn, message, out),
            Err(void) => Ok(void),
        }
    }

    /// Handles one decoded message. Lines go to `out`.
    fn handle_message(
        &mut self,
        lsn: Lsn,
        message: Message,
        out: &mut Vec<u8>,
    ) -> Result<Step<E>, AssembleError> {
        let sequence = |what: String| AssembleError::Sequence { lsn, what };
        match message {
            Message::Begin(begin) => {
                if self.open.is_some() {
                    return Err(sequence("Begin inside a transaction".into()));
                }
                if self.past_end(begin.final_lsn) {
                    return Ok(Step::PastEnd);
                }
                self.open = Some(OpenTxn {
                    fields: self.encoding.txn(
                        begin.final_lsn.into(),
                        Some(u64::from(begin.xid)),
                        Some(pg_micros_to_unix_micros(begin.commit_time)),
                    ),
                    xid: begin.xid,
                    next_ordinal: 0,
                    marker: false,
                });
                Ok(Step::Continue)
            }
            Message::Commit(commit) => match self.open.take() {
                Some(open) => {
                    self.tally.transactions += u64::from(!open.marker);
                    Ok(Step::Committed {
                        end: commit.end_lsn.into(),
                        commit_time: to_system_time(commit.commit_time),
                    })
                }
                None => Err(sequence("Commit outside a transaction".into())),
            },
            Message::Origin(_) => Ok(Step::Continue),
            Message::Type(info) => {
                self.relations.apply_type(&info);
                Ok(Step::Continue)
            }
            Message::Relation(relation) => {
                self.note_shape(&relation);
                self.relations.apply(&relation);
                self.unannounced.insert(relation.id);
                Ok(Step::Continue)
            }
            Message::Insert(m) => self.row(lsn, m.xid, m.relation_id, Op::Insert, None, Some(&m.new), out),
            Message::Update(m) => {
                self.row(lsn, m.xid, m.relation_id, Op::Update, m.old.as_ref(), Some(&m.new), out)
            }
            Message::Delete(m) => self.row(lsn, m.xid, m.relation_id, Op::Delete, Some(&m.old), None, out),
            Message::Truncate(m) => {
                for id in &m.relation_ids {
                    let table = self.table(lsn, *id)?;
                    self.tally.count(*id, 3);
                    self.note_change(m.xid, &table, None, None);
                    self.announce(lsn, m.xid, &table, out)?;
                    let encoding = self.encoding.clone();
                    self.emit(lsn, m.xid, out, RecordKind::Change, |body| {
                        encoding.write_truncate(body, &table)
                    })?;
                }
                Ok(Step::Continue)
            }
            Message::Message(m) if m.transactional && m.prefix == CHUNK_PREFIX => {
                if let Some(open) = &mut self.open {
                    open.marker = true;
                }
                Ok(Step::Chunk { token: String::from_utf8_lossy(&m.content).into_owned() })
            }
            Message::Message(m) if m.transactional => {
                let encoding = self.encoding.clone();
                self.emit(lsn, m.xid, out, RecordKind::Change, |body| {
                    encoding.write_message(body, &app_message(&m))
                })?;
                Ok(Step::Continue)
            }
            Message::Message(m) if m.prefix == HEARTBEAT_PREFIX => Ok(Step::Heartbeat),
            Message::Message(m) => {
                // Outside any transaction: its own LSN stands for the commit.
                if self.past_end(m.lsn) {
                    return Ok(Step::PastEnd);
                }
                let fields = self.encoding.txn(m.lsn.into(), None, None);
                self.encoding.write_header(&fields, out, 0, lsn.into());
                self.encoding.write_message(out, &app_message(&m));
                Ok(Step::Continue)
            }
            Message::StreamStart(start) => {
                if self.open.is_some() || self.stream_xid.is_some() {
                    return Err(sequence("Stream Start inside a transaction".into()));
                }
                self.stream_xid = Some(start.xid);
                if self.opens_section(start.xid, start.first_segment) {
                    tracing::info!(xid = start.xid, %lsn, "transaction {}: applying a streamed transaction while it is decoded", start.xid);
                    return Ok(Step::TentativeBegin);
                }
                Ok(Step::Continue)
            }
            Message::StreamStop => {
                if self.stream_xid.take().is_none() {
                    return Err(sequence("Stream Stop outside a stream".into()));
                }
                Ok(Step::Continue)
            }
            Message::StreamAbort(abort) => {
                self.streamed.abort(abort.xid, abort.subxid);
                if let Some(watch) = &mut self.watch {
                    watch.stream_aborted(abort.xid, abort.subxid);
                }
                if self.section() == Some(abort.xid) {
                    self.close_section();
                    return Ok(Step::TentativeVoid(None));
                }
                Ok(Step::Continue)
            }
            Message::StreamCommit(commit) => {
                if self.past_end(commit.commit_lsn) {
                    self.streamed.abort(commit.xid, commit.xid);
                    // An open section is rolled back by the sink at the end of the stream.
                    self.close_section();
                    return Ok(Step::PastEnd);
                }
                if self.section() == Some(commit.xid) {
                    // Its lines are out already: the spill is not needed.
                    self.close_section();
                    self.streamed.abort(commit.xid, commit.xid);
                    self.tally.transactions += 1;
                    return Ok(Step::Committed {
                        end: commit.end_lsn.into(),
                        commit_time: to_system_time(commit.commit_time),
                    });
                }
                if let Some(watch) = &mut self.watch {
                    watch.stream_committed(commit.xid);
                }
                let replay = self
                    .streamed
                    .commit(commit.xid)
                    .map_err(|source| AssembleError::Spill { lsn, source })?;
                self.tally.transactions += 1;
                Ok(Step::Replay(Box::new(CommittedStream::new(&self.encoding, &commit, replay))))
            }
        }
    }

    fn table(&self, lsn: Lsn, id: u32) -> Result<std::sync::Arc<Table>, AssembleError> {
        self.relations.get(id).cloned().ok_or_else(|| AssembleError::Sequence {
            lsn,
            what: format!("a change for relation {id}, which no Relation message described"),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        lsn: Lsn,
        xid: Option<u32>,
        relation_id: u32,
        op: Op,
        old: Option<&OldTuple>,
        new: Option<&Tuple>,
        out: &mut Vec<u8>,
    ) -> Result<Step<E>, AssembleError> {
        let table = self.table(lsn, relation_id)?;
        let op_index = match op {
            Op::Insert | Op::Snapshot => 0,
            Op::Update => 1,
            Op::Delete => 2,
        };
        self.tally.count(relation_id, op_index);
        self.note_change(xid, &table, old, new);
        self.announce(lsn, xid, &table, out)?;
        let mut shape = Ok(());
        let encoding = self.encoding.clone();
        self.emit(lsn, xid, out, RecordKind::Change, |body| {
            shape = encoding.write_row(body, &table, op, old, new)
        })?;
        shape.map_err(|error| AssembleError::Sequence { lsn, what: error.to_string() })?;
        Ok(Step::Continue)
    }

    /// Writes the schema line of `table` if its shape was not announced yet.
    fn announce(
        &mut self,
        lsn: Lsn,
        xid: Option<u32>,
        table: &Table,
        out: &mut Vec<u8>,
    ) -> Result<(), AssembleError> {
        if !self.unannounced.contains(&table.id) {
            return Ok(());
        }
        // In a streamed transaction the shape belongs to the top-level one, so
        // that a rolled-back subtransaction cannot take it away from the
        // changes after it.
        let owner = match (self.stream_xid, xid) {
            (Some(top), Some(_)) => Some(top),
            _ => xid,
        };
        let encoding = self.encoding.clone();
        self.emit(lsn, owner, out, RecordKind::Schema, |body| encoding.write_schema(body, table))?;
        self.unannounced.remove(&table.id);
        Ok(())
    }

    /// Writes one line: straight to `out` inside a plain transaction, to
    /// the streamed transaction's records inside a stream block. A change
    /// takes the next ordinal; a schema line shares the one of the change after it.
    fn emit(
        &mut self,
        lsn: Lsn,
        subxid: Option<u32>,
        out: &mut Vec<u8>,
        kind: RecordKind,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), AssembleError> {
        let tentative = self.stream_xid.filter(|xid| self.section() == Some(*xid));
        match (&mut self.open, self.stream_xid, subxid) {
            (Some(txn), None, None) => {
                match kind {
                    RecordKind::Change => {
                        self.encoding.write_header(&txn.fields, out, txn.next_ordinal, lsn.into());
                        txn.next_ordinal += 1;
                    }
                    RecordKind::Schema => {
                        self.encoding.write_schema_header(&txn.fields, out, txn.next_ordinal, lsn.into())
                    }
                }
                write_body(out);
                Ok(())
            }
            (None, Some(xid), Some(subxid)) if tentative.is_some() => {
                let start = write_tentative(&self.encoding, (lsn, xid, kind), out, write_body);
                let body = &out[start..];
                self.streamed
                    .append(xid, subxid, lsn, kind, |spill| spill.extend_from_slice(body))
                    .map_err(|source| AssembleError::Spill { lsn, source })
            }
            (None, Some(xid), Some(subxid)) => self
                .streamed
                .append(xid, subxid, lsn, kind, write_body)
                .map_err(|source| AssembleError::Spill { lsn, source }),
            _ => Err(AssembleError::Sequence { lsn, what: "a change outside a transaction".into() }),
        }
    }
}

mod chunks;
mod replay;
mod tentative;
pub use crate::chunked::rows::ChunkWritten;
pub use chunks::ChunkPlace;
pub use replay::CommittedStream;
pub use tentative::Deferred;
use tentative::{Sections, write_tentative};
#[cfg(test)]
mod tests;

/// A logical decoding message as the change lines know it.
fn app_message(message: &LogicalMessage) -> AppMessage<'_> {
    AppMessage { prefix: &message.prefix, content: &message.content, transactional: message.transactional }
}
