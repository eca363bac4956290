//! A few whole rows to upsert, straight into their destination: one
//! guarded upsert statement per row, all sent at once.
//!
//! Why: a batch otherwise goes in with `COPY` (into the destination for new
//! rows, else into the staging table, then a statement per kind). A
//! `COPY`'s rows can go only after the server has answered its statement
//! (`tokio-postgres` waits for CopyInResponse), so it costs two round
//! trips, and a replayed row costs more. These statements, queued behind
//! the table's savepoint, go out together and are answered together: one
//! round trip. A stream that is caught up commits one or two rows at a
//! time; when they are one table's, the commit goes in that same round trip
//! (`mirror_writer::with_commit`), so the sink commit takes one round trip
//! instead of three. Many rows are cheaper through `COPY` than in a
//! statement each.
//!
//! Invariants:
//! - A row gets the value a `COPY` text of it would: each value goes as
//!   its text ([`TextParam`]), which the server reads with the column
//!   type's input function, as `COPY` does.
//! - The statement is the staged upserts' (`schema`): a row the sink has
//!   with a newer `_walpipe_lsn` stays, so a replay is harmless.
//! - After an error the transaction is aborted: a statement queued behind a
//!   failed one fails too, and writes nothing.

use tokio_postgres::{Client, Statement};

use crate::change::mirror_records::unescape;
use crate::pg::text_param::TextParam;

/// The most rows that go in this way; a larger batch goes through `COPY`.
/// Measured (BENCHMARKS.md, "how few is few"): with up to 4 rows a commit
/// the sink backend spent within 3% of what `COPY` cost it (14% less at one
/// row); at 8 rows, 15 to 62% more; at 16, 43% more.
pub const FEW_ROWS: usize = 4;

/// Upserts `rows` (each its fields as COPY text, the columns then
/// `_walpipe_lsn`) with `upsert_row`, inside the open transaction.
pub async fn upsert(
    client: &Client,
    upsert_row: &Statement,
    rows: &[Vec<&[u8]>],
) -> Result<(), tokio_postgres::Error> {
    let values: Vec<Vec<_>> =
        rows.iter().map(|row| row.iter().map(|field| unescape(field)).collect()).collect();
    let upserts = values
        .iter()
        .map(|row| client.execute_raw(upsert_row, row.iter().map(|value| TextParam(value.as_deref()))));
    // `join_all` polls each once, in order, before awaiting any: each
    // request is queued on the connection at its first poll.
    for upserted in futures_util::future::join_all(upserts).await {
        upserted?;
    }
    Ok(())
}
