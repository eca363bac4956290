//! The MySQL/MariaDB change stream: binlog events into change lines, a
//! whole transaction at a time ([`ChangeStream`]).
//!
//! ```text
//!  ROTATE ──> the file the positions are in
//!  GTID (MariaDB 162, MySQL 33) | QUERY BEGIN ──> a transaction opens
//!  TABLE_MAP ──> the table id's table      ROWS ──> rows, matched to columns by name
//!  XID | QUERY COMMIT | a standalone DDL ──> lines written, Committed at the event's end
//! ```
//!
//! Invariants:
//! - A transaction's lines are written only at its end, whose position
//!   (the end of its last event) is where a restarted stream resumes: the
//!   next transaction, never half of one.
//! - An event that may carry rows and that walpipe cannot read (MariaDB's
//!   compressed or encrypted binlog, an unknown type) stops the stream with
//!   the fix; nothing is skipped silently.
//! - Only the captured tables' rows are written; the others' events still
//!   move the position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use mysql_async::BinlogStream;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;

use super::chunks::copier::ChunkFeed;
use super::chunks::signal::{SIGNAL_TABLE, WATERMARK_COLUMN};
use super::chunks::window::Window;
use super::position::BinlogPosition;
use super::transaction::{RowChange, Shape, Transactions, tuple};
use crate::change::Encoding;
use crate::change::encode::Op;
use crate::change::row::OldTuple;
use crate::lifecycle::ErrorKind;
use crate::position::Position;
use crate::source::mysql::chunks::signal::Watermark;
use crate::source::{ChangeStream, Event as StreamEvent, Received, StreamError};

mod follow;
mod placing;
use placing::{At, Busy};

/// MariaDB's own event types (MySQL's end at 40).
const MARIADB_ANNOTATE_ROWS: u8 = 160;
const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
const MARIADB_GTID: u8 = 162;
const MARIADB_GTID_LIST: u8 = 163;
const MARIADB_START_ENCRYPTION: u8 = 164;
/// A MariaDB GTID event's flag: a statement outside a transaction (DDL), which ends with its own QUERY event.
const MARIADB_STANDALONE: u8 = 1;

/// Why the stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("the binlog connection failed: {0}")]
    Connection(#[from] mysql_async::Error),
    #[error("reading a binlog event at {at} failed: {what}")]
    Event { at: String, what: String },
    #[error(
        "the binlog holds an event walpipe cannot read ({what}) at {at}: {fix}; walpipe stops rather than skip rows"
    )]
    Unreadable { at: String, what: String, fix: &'static str },
    #[error("the server ended the binlog stream")]
    Ended,
    #[error("the chunked copy stopped before the stream reached its chunk")]
    CopyStopped,
    #[error(
        "the stream reached chunk {got} while chunk {expected} was next; this is a bug, please report it"
    )]
    ChunkOrder { expected: String, got: String },
    #[error(
        "a DDL statement named {table} while a chunk of its copy was read: the copy resumes from its last chunk"
    )]
    ChunkAltered { table: String },
}

impl From<BinlogError> for StreamError {
    fn from(error: BinlogError) -> StreamError {
        let transient = matches!(
            error,
            BinlogError::Connection(_)
                | BinlogError::Ended
                | BinlogError::CopyStopped
                | BinlogError::ChunkAltered { .. }
        );
        StreamError::new(transient, ErrorKind::Other, error)
    }
}

/// The binlog of one session, as change lines.
pub struct BinlogChanges<E: Encoding> {
    binlog: Option<BinlogStream>,
    encoding: E,
    /// `schema.name` of the captured tables; empty: every table of `database`.
    captured: HashSet<String>,
    database: String,
    file: u32,
    /// The end of the last transaction given.
    committed: Position,
    shapes: HashMap<u64, Arc<Shape>>,
    /// By `schema.name`: the shape last read, which a DDL's removed columns are taken from.
    latest: HashMap<String, Arc<Shape>>,
    transactions: Transactions,
    xid: Option<u64>,
    received: Received,
    counts: HashMap<(String, &'static str), u64>,
    /// `walpipe tail --endpos`: transactions ending after it are not written.
    end_at: Option<Position>,
    /// The chunks of a copy running beside the stream.
    chunks: Option<ChunkFeed>,
    window: Window,
    /// This run's watermark written in the transaction being read.
    watermark: Option<Watermark>,
    busy: Busy,
    /// The ids of captured tables renamed in this session, by their new `schema.name`.
    renamed: HashMap<String, u32>,
    /// The next event, read ahead when it was already there (`None` inside: the stream ended).
    peeked: Option<Option<Result<Event, mysql_async::Error>>>,
}

impl<E: Encoding> BinlogChanges<E> {
    pub fn new(
        binlog: BinlogStream,
        encoding: E,
        captured: HashSet<String>,
        database: String,
        from: Position,
        catalog: Vec<Shape>,
    ) -> Self {
        BinlogChanges {
            binlog: Some(binlog),
            encoding,
            captured,
            database,
            file: BinlogPosition::from(from).file,
            committed: from,
            shapes: HashMap::new(),
            // A DDL replayed after a restart needs a shape to remove columns
            // from before any row told one: the catalog's at the start, which
            // may already hold later changes (a column announced early is
            // only added early).
            latest: catalog
                .into_iter()
                .map(|shape| (shape.table.qualified_name(), Arc::new(shape)))
                .collect(),
            transactions: Transactions::default(),
            xid: None,
            received: Received::default(),
            counts: HashMap::new(),
            end_at: None,
            chunks: None,
            window: Window::default(),
            watermark: None,
            busy: Busy::Idle,
            renamed: HashMap::new(),
            peeked: None,
        }
    }

    /// Places the chunks of `copying`'s copy (`feed`) in the stream.
    pub fn with_chunks(mut self, feed: ChunkFeed, copying: impl IntoIterator<Item = String>) -> Self {
        self.chunks = Some(feed);
        self.window = Window::new(copying);
        self
    }

    /// Stops at `end`: a transaction ending after it is not written, and
    /// the stream reports [`StreamEvent::PastEnd`] instead.
    pub fn ending_at(mut self, end: Option<Position>) -> Self {
        self.end_at = end;
        self
    }

    fn is_signal(&self, schema: &str, name: &str) -> bool {
        name == SIGNAL_TABLE && schema == self.database
    }

    fn at(&self, event: &Event) -> BinlogPosition {
        BinlogPosition { file: self.file, offset: event.header().log_pos() }
    }

    fn captures(&self, schema: &str, name: &str) -> bool {
        if self.is_signal(schema, name) {
            false
        } else if self.captured.is_empty() {
            schema == self.database
        } else {
            self.captured.contains(&format!("{schema}.{name}"))
        }
    }

    /// Handles one event; `Some` when it completes a step the caller reports.
    fn handle(&mut self, event: Event, out: &mut Vec<u8>) -> Result<Option<StreamEvent>, BinlogError> {
        let raw = event.header().event_type_raw();
        let at = self.at(&event);
        match raw {
            MARIADB_GTID => {
                let flags = event.data().get(12).copied().unwrap_or(0);
                if flags & MARIADB_STANDALONE == 0 {
                    self.transactions.begin();
                }
                return Ok(None);
            }
            MARIADB_ANNOTATE_ROWS | MARIADB_BINLOG_CHECKPOINT | MARIADB_GTID_LIST => return Ok(None),
            MARIADB_START_ENCRYPTION => {
                return Err(BinlogError::Unreadable {
                    at: Position::from(at).to_string(),
                    what: "an encrypted binlog".into(),
                    fix: "set encrypt_binlog=OFF on the source",
                });
            }
            165..=171 => {
                return Err(BinlogError::Unreadable {
                    at: Position::from(at).to_string(),
                    what: format!("MariaDB compressed event type {raw}"),
                    fix: "set log_bin_compress=OFF on the source",
                });
            }
            _ => {}
        }
        let data = event.read_data().map_err(|e| self.bad(at, e))?;
        let Some(data) = data else {
            return Err(BinlogError::Unreadable {
                at: Position::from(at).to_string(),
                what: format!("event type {raw}"),
                fix: "report the server version and its binlog settings",
            });
        };
        match data {
            EventData::RotateEvent(rotate) => {
                if let Some(position) = BinlogPosition::in_file(&rotate.name(), rotate.position()) {
                    self.file = position.file;
                }
            }
            EventData::GtidEvent(_) => self.transactions.begin(),
            EventData::QueryEvent(query) => {
                let text = query.query();
                let statement = text.trim_start().to_ascii_uppercase();
                if statement.starts_with("BEGIN") {
                    self.transactions.begin();
                } else if statement.starts_with("COMMIT") || !self.transactions.is_open() {
                    // COMMIT of a non-transactional table's statements, or a DDL statement:
                    // its end is a place to resume from.
                    self.follow_ddl(&text, &query.schema());
                    self.window.ddl(&text);
                    return self.commit(at, event.header().timestamp(), out).map(Some);
                }
            }
            EventData::XidEvent(xid) => {
                self.xid = Some(xid.xid);
                return self.commit(at, event.header().timestamp(), out).map(Some);
            }
            EventData::TableMapEvent(_) => {}
            EventData::RowsEvent(rows) => self.rows(&rows, at)?,
            EventData::TransactionPayloadEvent(payload) => {
                // The client reads the events inside after this one, but a payload
                // it cannot decompress it drops without a word: check it first.
                let readable = payload
                    .decompressed()
                    .and_then(|mut events| std::io::copy(&mut events, &mut std::io::sink()));
                if let Err(error) = readable {
                    return Err(BinlogError::Unreadable {
                        at: Position::from(at).to_string(),
                        what: format!("a compressed transaction payload that does not decompress ({error})"),
                        fix: "set binlog_transaction_compression=OFF on the source and report the server version",
                    });
                }
            }
            EventData::HeartbeatEvent if !self.transactions.is_open() => {
                return Ok(Some(StreamEvent::Idle { position: self.committed }));
            }
            _ => {}
        }
        Ok(None)
    }

    fn bad(&self, at: BinlogPosition, error: impl std::fmt::Display) -> BinlogError {
        BinlogError::Event { at: Position::from(at).to_string(), what: error.to_string() }
    }

    fn rows(&mut self, rows: &RowsEventData<'_>, at: BinlogPosition) -> Result<(), BinlogError> {
        let Some(binlog) = self.binlog.as_ref() else { return Ok(()) };
        let table_id = rows.table_id();
        let Some(map) = binlog.get_tme(table_id) else {
            return Err(self.bad(at, format!("rows of table id {table_id} before its TABLE_MAP event")));
        };
        if self.chunks.is_some() && self.is_signal(&map.database_name(), &map.table_name()) {
            let map = map.clone();
            return self.signal_rows(rows, &map, at);
        }
        if !self.captures(&map.database_name(), &map.table_name()) {
            return Ok(());
        }
        let map = map.clone();
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
            RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
        };
        for row in rows.rows(&map) {
            let (before, after) = row.map_err(|e| self.bad(at, e))?;
            let sample =
                after.as_ref().or(before.as_ref()).ok_or_else(|| self.bad(at, "a row without an image"))?;
            let shape = self.shape(table_id, &map, sample).map_err(|e| self.bad(at, e))?;
            let old = before.map(|row| values(&shape, row)).transpose().map_err(|e| self.bad(at, e))?;
            let new = after.map(|row| values(&shape, row)).transpose().map_err(|e| self.bad(at, e))?;
            let label = match op {
                Op::Insert => "insert",
                Op::Update => "update",
                _ => "delete",
            };
            *self.counts.entry((shape.table.qualified_name(), label)).or_default() += 1;
            let old = old.map(|values| OldTuple::Full(tuple(values)));
            self.transactions.add(RowChange { shape, op, old, new: new.map(tuple) });
        }
        Ok(())
    }

    /// Rows of the signal table: this run's watermarks.
    fn signal_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        map: &TableMapEvent<'_>,
        at: BinlogPosition,
    ) -> Result<(), BinlogError> {
        for row in rows.rows(map) {
            let (_, after) = row.map_err(|e| self.bad(at, e))?;
            let Some(after) = after else { continue };
            let column = after.columns_ref().iter().position(|c| c.name_str() == WATERMARK_COLUMN);
            let text = column.and_then(|at| match after.as_ref(at) {
                Some(mysql_async::binlog::value::BinlogValue::Value(mysql_async::Value::Bytes(bytes))) => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => None,
            });
            self.note_watermark(text.as_deref());
        }
        Ok(())
    }

    fn commit(
        &mut self,
        at: BinlogPosition,
        timestamp: u32,
        out: &mut Vec<u8>,
    ) -> Result<StreamEvent, BinlogError> {
        let end = Position::from(at);
        let xid = self.xid.take();
        if self.end_at.is_some_and(|last| end > last) {
            return Ok(StreamEvent::PastEnd);
        }
        placing::note_keys(&mut self.window, self.transactions.rows());
        self.transactions
            .commit(&self.encoding, end, xid, placing::micros(timestamp), out)
            .map_err(|e| self.bad(at, e))?;
        let at = At { end, xid, commit_time: timestamp };
        if self.after_commit(at) {
            return Ok(StreamEvent::Data);
        }
        Ok(self.committed_at(at))
    }
}

/// A row's values as text, in its shape's column order.
fn values(shape: &Shape, row: BinlogRow) -> Result<Vec<Option<String>>, String> {
    let mut values = row.unwrap();
    if values.len() != shape.formats.len() {
        return Err(format!("a row with {} values for {} columns", values.len(), shape.formats.len()));
    }
    shape.formats.iter().zip(values.iter_mut()).map(|(format, value)| format.text(value)).collect()
}

impl<E: Encoding> ChangeStream for BinlogChanges<E> {
    async fn next(&mut self, out: &mut Vec<u8>) -> Result<StreamEvent, StreamError> {
        if self.is_busy() {
            return Ok(self.place(out).await?);
        }
        loop {
            let Some(binlog) = self.binlog.as_mut() else { return Ok(StreamEvent::Ended) };
            let next = match self.peeked.take() {
                Some(peeked) => peeked,
                None => binlog.next().await,
            };
            let Some(event) = next else { return Err(BinlogError::Ended.into()) };
            let event = event.map_err(BinlogError::from)?;
            self.received.bytes += u64::from(event.header().event_size());
            let is_rows = matches!(
                event.header().event_type(),
                Ok(EventType::WRITE_ROWS_EVENT | EventType::UPDATE_ROWS_EVENT | EventType::DELETE_ROWS_EVENT)
            );
            self.received.data |= is_rows;
            if let Some(step) = self.handle(event, out)? {
                // Read ahead only what is already here, so that `caught_up`
                // tells the driver whether a batch can grow without waiting.
                if let Some(binlog) = self.binlog.as_mut() {
                    self.peeked = binlog.next().now_or_never();
                }
                return Ok(step);
            }
        }
    }

    fn caught_up(&self) -> bool {
        self.peeked.is_none() && !self.is_busy()
    }

    fn is_busy(&self) -> bool {
        !matches!(self.busy, Busy::Idle)
    }

    fn has_ready(&self) -> bool {
        self.peeked.is_some()
    }

    fn in_transaction(&self) -> bool {
        self.transactions.is_open() || self.is_busy()
    }

    /// The server keeps no position for a binlog reader: the checkpoint is the only record.
    fn confirm(&mut self, _position: Position) {}

    async fn keep_alive(&mut self, wait: Duration) -> Result<(), StreamError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn take_received(&mut self, mut visit: impl FnMut(&str, &str, u64)) -> Received {
        for ((table, op), count) in self.counts.drain() {
            visit(&table, op, count);
        }
        std::mem::take(&mut self.received)
    }

    async fn finish(mut self) -> Result<(), StreamError> {
        if let Some(binlog) = self.binlog.take() {
            binlog.close().await.map_err(BinlogError::from)?;
        }
        Ok(())
    }
}
