//! A batch of new rows as the data of one `COPY` into their destination:
//! binary where the destination allows it and every value converts, else
//! COPY text as the records have it.
//!
//! Why binary: the sink backend then reads each value with its type's
//! receive function instead of parsing its text; for the rows of the
//! mixed backlog (int8, int4, text, numeric, timestamptz) that cut the
//! sink backends' CPU by about a quarter (BENCHMARKS.md, "New rows go in
//! binary").
//!
//! Invariants:
//! - Binary only when [`Destination::binary_new_rows`] is set: every
//!   destination column has the source column's very type, one that
//!   `pg::binary_values` reads (`schema::prepare` checks both).
//! - One value that does not convert sends the whole batch as text: a row
//!   is never half one and half the other, and never guessed at.
//! - Either way the destination gets the same values: binary_values only
//!   converts a text its type's input function would read to that value.
//! - A binary COPY counts only if, after it, the destination's columns
//!   still have the types it was written in ([`BinaryNewRows::types_held`]).
//!   A person may change a mirror's column by hand while walpipe runs, and
//!   bytes of one type can read as a wrong value of another of the same
//!   width (an int4 as a real). The check runs right after the COPY (in
//!   the same round trip), when the transaction holds the table's lock, so
//!   no change can slip in between; if it fails, the COPY is rolled back
//!   and the rows go as text.

use std::ops::Range;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::SinkError;
use super::batch::TableBatch;
use super::schema::Destination;
use crate::change::mirror_records::unescape;
use crate::pg::binary_values::BinaryType;
use crate::pg::copy_binary::CopyWriter;
use crate::pg::sql::copy_rows;

/// How a `COPY` of new rows ended.
pub enum Copied {
    Written,
    /// A row exists already (a replay): rolled back, so the batch takes
    /// the guarded path.
    KeyExists,
}

/// Copies the new rows of `batch` into `destination` inside the open
/// transaction; `None` (nothing done) if the batch holds other changes.
/// `rollback`: how to undo the `COPY` (the table's savepoint, taken just
/// before); without one, the `COPY` runs under a savepoint of its own.
pub async fn copy(
    client: &Client,
    destination: &mut Destination,
    batch: &TableBatch,
    rollback: Option<&str>,
) -> Result<Option<Copied>, SinkError> {
    let undo = rollback.unwrap_or("ROLLBACK TO SAVEPOINT walpipe_new_rows");
    loop {
        let Some((statement, rows, binary)) = copy_of(destination, batch) else { return Ok(None) };
        let statement = statement.clone();
        // Pipelined: the savepoint is queued ahead of the COPY's statement,
        // and the check of a binary COPY behind its data (tokio-postgres
        // sends a COPY's messages before any request queued after it).
        let savepoint = async {
            match rollback {
                Some(_) => Ok(()),
                None => client.batch_execute("SAVEPOINT walpipe_new_rows").await,
            }
        };
        let check = destination.binary_new_rows.as_ref().filter(|_| binary).map(|b| &b.types_held);
        let held = types_held(client, check);
        let (savepoint, copied, held) = tokio::join!(savepoint, copy_rows(client, &statement, rows), held);
        savepoint?;
        match copied {
            Ok(()) if !held? => {
                client.batch_execute(undo).await?;
                binary_off(destination);
            }
            Ok(()) => {
                if rollback.is_none() {
                    client.batch_execute("RELEASE SAVEPOINT walpipe_new_rows").await?;
                }
                return Ok(Some(Copied::Written));
            }
            // The check, queued behind the failed COPY, failed too: its error says nothing.
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                client.batch_execute(undo).await?;
                return Ok(Some(Copied::KeyExists));
            }
            Err(error) => {
                let statement = format!("the COPY of new rows into {}", destination.quoted);
                return Err(SinkError::Write { statement, error });
            }
        }
    }
}

/// After a binary `COPY`, under the lock it took: whether the destination's
/// columns have the types of its data still (`check`: its `types_held`;
/// none for text data).
pub async fn types_held(client: &Client, check: Option<&Statement>) -> Result<bool, tokio_postgres::Error> {
    match check {
        Some(check) => Ok(client.query_one(check, &[]).await?.get(0)),
        None => Ok(true),
    }
}

/// After a binary `COPY` found the destination's columns of other types:
/// its rows go as text from now on (the statements are prepared again at
/// the next restart, with the types then).
pub fn binary_off(destination: &mut Destination) {
    tracing::warn!(destination = %destination.quoted,
        "the columns of {} changed type while walpipe wrote to it: its new rows go as text until the next restart",
        destination.quoted);
    destination.binary_new_rows = None;
}

/// The `COPY` statement and the data for the new rows of `batch` (and
/// whether they are binary), if the batch holds only new rows.
fn copy_of<'a>(destination: &'a Destination, batch: &TableBatch) -> Option<(&'a Statement, Vec<u8>, bool)> {
    let binary = destination.binary_new_rows.as_ref().and_then(|binary| {
        let rows = binary_rows(batch, &binary.types)?;
        Some((&binary.copy, rows, true))
    });
    binary.or_else(|| Some((&destination.copy_new_rows, text_rows(batch)?, false)))
}

/// The new rows as COPY text: the columns, then `_walpipe_lsn`.
pub fn text_rows(batch: &TableBatch) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.len() * 128);
    for (record, values) in batch.inserts()? {
        for field in values {
            out.extend_from_slice(record.field(field));
            out.push(b'\t');
        }
        out.extend_from_slice(record.commit_lsn());
        out.push(b'\n');
    }
    Some(out)
}

/// The new rows as binary COPY data, each value of its column's type in
/// `types`; `None` if a value does not convert.
fn binary_rows(batch: &TableBatch, types: &[BinaryType]) -> Option<Vec<u8>> {
    let fields = i16::try_from(types.len() + 1).ok()?;
    let mut copy = CopyWriter::with_capacity(batch.len() * 128);
    // A large transaction repeats values (its `now()`, a status, its commit
    // LSN): a value whose text is its column's in the row before is copied
    // from that row's bytes, not converted again. Text converts by copying
    // (a value that may be escaped is not compared), so it is not remembered.
    let mut previous: Vec<(&[u8], Range<usize>)> = vec![(&[], 0..0); types.len()];
    let mut lsn: (&[u8], Range<usize>) = (&[], 0..0);
    for (record, values) in batch.inserts()? {
        if values.len() != types.len() {
            return None;
        }
        copy.tuple(fields);
        for ((field, ty), previous) in values.zip(types).zip(&mut previous) {
            let text = record.field(field);
            if !ty.may_be_escaped() && text != b"\\N" && same_value(previous.0, text) {
                previous.1 = copy.repeat(previous.1.clone())?;
            } else if let Some(bytes) = write_value(&mut copy, *ty, text)? {
                *previous = (text, bytes);
            }
        }
        let commit_lsn = record.commit_lsn();
        lsn = match lsn.0 == commit_lsn {
            true => (commit_lsn, copy.repeat(lsn.1)?),
            false => (commit_lsn, copy.field(|out| BinaryType::PgLsn.write(commit_lsn, out))?),
        };
    }
    Some(copy.finish())
}

/// Whether two values' texts are the same. Values of a column that differ
/// (keys, amounts) mostly differ in their last byte, which is compared
/// first: a whole comparison of two texts of the same length is a call to
/// `memcmp`.
fn same_value(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.last() == b.last() && a == b
}

/// One value, given as COPY text, in binary: its bytes, `None` for a NULL;
/// `None` outside when it does not convert.
#[inline(always)]
pub fn write_value(copy: &mut CopyWriter, ty: BinaryType, text: &[u8]) -> Option<Option<Range<usize>>> {
    if text == b"\\N" {
        copy.null();
        return Some(None);
    }
    // Only text and its kin (`BinaryType::may_be_escaped`) can hold an
    // escaped byte; in another type's text a backslash is an error, and
    // the rows go as text.
    let bytes = match ty {
        // Its binary form is its text: the length is known up front.
        BinaryType::Text => copy.bytes(&unescape(text)?)?,
        _ if ty.may_be_escaped() => copy.field(|out| ty.write(&unescape(text)?, out))?,
        _ => copy.field(|out| ty.write(text, out))?,
    };
    Some(Some(bytes))
}
