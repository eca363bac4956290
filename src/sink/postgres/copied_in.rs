//! A chunk's copied rows streaming into their destination: one `COPY`
//! per run of `C` records, fed while the records arrive, so that walpipe
//! reads the next rows while the sink writes the last ones.
//!
//! ```text
//!  first C record ──> SAVEPOINT ──> COPY destination (columns, _walpipe_lsn) FROM STDIN
//!      (binary where the destination's columns allow: `new_rows`)
//!  each C record ──> its COPY data (sent every 256 KiB) + the line, kept
//!  any other record, an apply, a commit ──> finish: RELEASE, or on a key that
//!      exists (the stream wrote it first), a value that did not convert to
//!      binary, or a column whose type changed meanwhile, ROLLBACK TO
//!      SAVEPOINT and hand the lines back
//!  lines handed back ──> stage_upserts: one COPY into the staging table, for
//!      the destination's guarded upsert
//! ```
//!
//! Invariants:
//! - Nothing else runs on the connection while a copy is open: the writer
//!   finishes it before any other statement.
//! - The lines are kept until the copy is finished, so a copy that meets an
//!   existing key loses nothing: its rows are staged as guarded upserts
//!   instead. A chunk starts with its shape line, which finishes the copy,
//!   so at most one chunk's lines are kept.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, CopyInSink, Statement};

use super::SinkError;
use super::copied::{CopiedRecord, CopiedRows};
use super::new_rows::types_held;
use super::schema::{BinaryNewRows, Destination};

/// COPY data is sent in pieces of about this size.
const SEND_BYTES: usize = 256 * 1024;

/// What a copy needs of its destination: its `COPY` of new rows in text,
/// and in binary where the destination's columns allow.
#[derive(Clone)]
pub struct CopyInto {
    text: Statement,
    binary: Option<BinaryNewRows>,
}

impl CopyInto {
    pub fn of(destination: &Destination) -> CopyInto {
        CopyInto { text: destination.copy_new_rows.clone(), binary: destination.binary_new_rows.clone() }
    }
}

/// An open `COPY` of one table's copied rows.
pub struct CopyIn {
    /// The table, as escaped in mirror records.
    pub table: Vec<u8>,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    rows: CopiedRows,
    /// For binary data: whether the destination's columns have its types still.
    types_held: Option<Statement>,
    /// The server refused a piece: the rest is only kept, and `finish` tells why.
    refused: bool,
}

/// How a copy ended.
pub enum Finished {
    /// Every row is in.
    Written,
    /// Nothing went in: a row's key exists already, or a value could not
    /// go in binary. Here are the lines, in order, to stage as guarded upserts.
    Redo(Vec<Bytes>),
    /// Nothing went in: the destination's columns changed type since its
    /// statements were prepared (by hand), so its binary data was wrong.
    /// The lines, to stage as guarded upserts.
    TypesChanged(Vec<Bytes>),
}

impl CopyIn {
    /// Opens a copy into the destination `into` describes.
    pub async fn start(client: &Client, table: &[u8], into: CopyInto) -> Result<CopyIn, SinkError> {
        client.batch_execute("SAVEPOINT walpipe_copied_rows").await?;
        let (statement, rows, types_held) = match into.binary {
            Some(binary) => (binary.copy, CopiedRows::binary(binary.types), Some(binary.types_held)),
            None => (into.text, CopiedRows::default(), None),
        };
        let sink = Box::pin(client.copy_in::<_, Bytes>(&statement).await?);
        Ok(CopyIn { table: table.to_vec(), sink, rows, types_held, refused: false })
    }

    /// Adds a row; sends what has gathered once it is large enough.
    pub async fn push(&mut self, line: &Bytes, record: &CopiedRecord<'_>) {
        self.rows.push(line, record);
        if self.rows.data_len() >= SEND_BYTES && !self.refused && self.rows.converted() {
            let piece = Bytes::from(self.rows.take_data());
            // The error comes back again, whole, from `finish`.
            self.refused = self.sink.send(piece).await.is_err();
        }
    }

    /// Ends the copy: released, or rolled back with its lines handed back.
    pub async fn finish(mut self, client: &Client) -> Result<Finished, SinkError> {
        const UNDO: &str = "ROLLBACK TO SAVEPOINT walpipe_copied_rows";
        if !self.rows.converted() {
            // Dropped unfinished, the copy fails (CopyFail), and so the transaction.
            drop(self.sink);
            client.batch_execute(UNDO).await?;
            return Ok(Finished::Redo(self.rows.take_lines()));
        }
        let mut result = Ok(0);
        if !self.refused {
            let rest = Bytes::from(self.rows.take_rest());
            if !rest.is_empty() {
                result = self.sink.send(rest).await.map(|()| 0);
            }
        }
        if result.is_ok() || self.refused {
            result = self.sink.as_mut().finish().await;
        }
        match result {
            Ok(_) if !types_held(client, self.types_held.as_ref()).await? => {
                client.batch_execute(UNDO).await?;
                Ok(Finished::TypesChanged(self.rows.take_lines()))
            }
            Ok(_) => {
                client.batch_execute("RELEASE SAVEPOINT walpipe_copied_rows").await?;
                Ok(Finished::Written)
            }
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                client.batch_execute(UNDO).await?;
                Ok(Finished::Redo(self.rows.take_lines()))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Copied rows whose `COPY` met an existing key, into the staging table
/// with one `COPY` (`copy_upserts`), sent in pieces as they are written.
pub async fn stage_upserts(
    client: &Client,
    copy_upserts: &Statement,
    lines: &[Bytes],
) -> Result<(), SinkError> {
    let sink = client.copy_in::<_, Bytes>(copy_upserts).await?;
    futures_util::pin_mut!(sink);
    let mut text = Vec::with_capacity(SEND_BYTES + 4096);
    for line in lines {
        let record = CopiedRecord::parse(line)
            .ok_or_else(|| SinkError::Record("a line kept for a copy is not a copied row".into()))?;
        record.write_upsert(&mut text);
        if text.len() >= SEND_BYTES {
            sink.send(Bytes::from(std::mem::take(&mut text))).await?;
        }
    }
    if !text.is_empty() {
        sink.send(Bytes::from(text)).await?;
    }
    sink.finish().await?;
    Ok(())
}
