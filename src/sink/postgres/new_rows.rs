//! New rows straight into their destination (a batch of only inserts): a
//! few rows as `INSERT`s all sent at once, more with one `COPY`.
//!
//! Why two ways: a `COPY`'s rows can go only after the server has answered
//! its statement (`tokio-postgres` waits for CopyInResponse), so it costs
//! two round trips. The `INSERT`s of a few rows, with the table's savepoint
//! queued ahead of them, go out together and are answered together: one
//! round trip. A stream that is caught up commits one or two rows at a
//! time, and its sink commit then takes two round trips instead of three.
//! Many rows are cheaper in one `COPY` than in a statement each.
//!
//! Invariants:
//! - Both ways write the values a `COPY` text of the rows would: each value
//!   goes as its text ([`TextParam`]), which the server reads with the
//!   column type's input function, as `COPY` does.
//! - Both fail on an existing key with a unique violation (the caller's cue
//!   to roll back and take the guarded path), and leave the transaction
//!   aborted after any error: an `INSERT` queued behind a failed one fails
//!   too, and writes nothing.

use tokio_postgres::Client;

use super::batch::NewRows;
use super::schema::Destination;
use crate::change::mirror_records::unescape;
use crate::pg::text_param::TextParam;

/// The most rows that go in as `INSERT`s; more go in with one `COPY`.
pub const FEW_ROWS: usize = 16;

/// Writes `rows` into `destination` (inside the open transaction).
pub async fn write(
    client: &Client,
    destination: &Destination,
    rows: &NewRows<'_>,
) -> Result<(), tokio_postgres::Error> {
    if rows.count() > FEW_ROWS {
        return crate::pg::sql::copy_rows(client, &destination.copy_new_rows, rows.copy_text()).await;
    }
    let values: Vec<Vec<_>> = rows.fields().map(|row| row.map(unescape).collect()).collect();
    let inserts = values.iter().map(|row| {
        client.execute_raw(&destination.insert_new_row, row.iter().map(|value| TextParam(value.as_deref())))
    });
    // `join_all` polls each once, in order, before awaiting any: each
    // request is queued on the connection at its first poll.
    for inserted in futures_util::future::join_all(inserts).await {
        inserted?;
    }
    Ok(())
}
