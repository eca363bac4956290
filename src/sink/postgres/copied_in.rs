//! A chunk's copied rows streaming into their destination: one `COPY`
//! per run of `C` records, fed while the records arrive, so that walpipe
//! reads the next rows while the sink writes the last ones.
//!
//! ```text
//!  first C record ──> SAVEPOINT ──> COPY destination (columns, _walpipe_lsn) FROM STDIN
//!  each C record ──> its COPY text (sent every 256 KiB) + the line, kept
//!  any other record, an apply, a commit ──> finish: RELEASE, or on a key that
//!      exists (the stream wrote it first) ROLLBACK TO SAVEPOINT and hand the lines back
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

/// COPY text is sent in pieces of about this size.
const SEND_BYTES: usize = 256 * 1024;

/// An open `COPY` of one table's copied rows.
pub struct CopyIn {
    /// The table, as escaped in mirror records.
    pub table: Vec<u8>,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    rows: CopiedRows,
    /// The server refused a piece: the rest is only kept, and `finish` tells why.
    refused: bool,
}

/// How a copy ended.
pub enum Finished {
    /// Every row is in.
    Written,
    /// A row's key exists already: nothing went in; here are the lines, in order.
    KeyExists(Vec<Bytes>),
}

impl CopyIn {
    /// Opens a copy into the destination (`copy_new_rows`: its `COPY ... FROM STDIN`).
    pub async fn start(
        client: &Client,
        table: &[u8],
        copy_new_rows: &Statement,
    ) -> Result<CopyIn, SinkError> {
        client.batch_execute("SAVEPOINT walpipe_copied_rows").await?;
        let sink = Box::pin(client.copy_in::<_, Bytes>(copy_new_rows).await?);
        Ok(CopyIn { table: table.to_vec(), sink, rows: CopiedRows::default(), refused: false })
    }

    /// Adds a row; sends what has gathered once it is large enough.
    pub async fn push(&mut self, line: &Bytes, record: &CopiedRecord<'_>) {
        self.rows.push(line, record);
        if self.rows.text_len() >= SEND_BYTES && !self.refused {
            let piece = Bytes::from(self.rows.take_text());
            // The error comes back again, whole, from `finish`.
            self.refused = self.sink.send(piece).await.is_err();
        }
    }

    /// Ends the copy: released, or rolled back with its lines handed back.
    pub async fn finish(mut self, client: &Client) -> Result<Finished, SinkError> {
        let mut result = Ok(0);
        if !self.refused {
            let rest = Bytes::from(self.rows.take_text());
            if !rest.is_empty() {
                result = self.sink.send(rest).await.map(|()| 0);
            }
        }
        if result.is_ok() || self.refused {
            result = self.sink.as_mut().finish().await;
        }
        match result {
            Ok(_) => {
                client.batch_execute("RELEASE SAVEPOINT walpipe_copied_rows").await?;
                Ok(Finished::Written)
            }
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                client.batch_execute("ROLLBACK TO SAVEPOINT walpipe_copied_rows").await?;
                Ok(Finished::KeyExists(self.rows.take_lines()))
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
