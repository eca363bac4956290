//! The tables that need a re-copy, and why (`walpipe.recopy_needed`, where
//! the checkpoint is: the sink, or the state store).
//!
//! Invariants: a mark is written in the same transaction as what made it
//! (the schema step, the partition set, the isolation), so a crash never
//! loses one; each mark has a number, and a copy clears only the marks it
//! answered, so a mark made while it ran is answered by the next copy. An
//! isolated table's mark is cleared only after its rebuild was swapped in
//! (`crate::sink::postgres::isolation`).

use tokio_postgres::Client;

use crate::names::TableName;

/// Records, in the sink transaction, that `table` needs a re-copy and why.
pub async fn mark_recopy(
    sink: &Client,
    job: &str,
    table: &TableName,
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    sink.execute(
        "INSERT INTO walpipe.recopy_needed (job_name, source_table, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (job_name, source_table) DO UPDATE SET reason = EXCLUDED.reason, since = now(), \
             mark = nextval('walpipe.recopy_marks')",
        &[&job, &table.qualified(), &reason],
    )
    .await
    .map(drop)
}

/// Records, in the sink transaction, that `table` is isolated: its changes
/// are no longer applied to its destination until a rebuild is swapped in.
/// `waits`: the rebuild waits for a copy request (a person's decision).
pub async fn mark_isolated(
    sink: &Client,
    job: &str,
    table: &TableName,
    reason: &str,
    waits: bool,
) -> Result<(), tokio_postgres::Error> {
    sink.execute(
        "INSERT INTO walpipe.recopy_needed (job_name, source_table, reason, isolated, waits_for_request) \
         VALUES ($1, $2, $3, true, $4) \
         ON CONFLICT (job_name, source_table) DO UPDATE SET reason = EXCLUDED.reason, since = now(), \
             isolated = true, waits_for_request = EXCLUDED.waits_for_request, \
             mark = nextval('walpipe.recopy_marks')",
        &[&job, &table.qualified(), &reason, &waits],
    )
    .await
    .map(drop)
}

/// The isolated `table`'s rebuild was swapped in: its mark is an ordinary
/// one now, cleared when the next session start finds its copy finished.
pub async fn end_isolation(sink: &Client, job: &str, table: &TableName) -> Result<(), tokio_postgres::Error> {
    sink.execute(
        "UPDATE walpipe.recopy_needed SET isolated = false, waits_for_request = false \
         WHERE job_name = $1 AND source_table = $2",
        &[&job, &table.qualified()],
    )
    .await
    .map(drop)
}

/// A table marked as needing a re-copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecopyMark {
    pub table: String,
    pub reason: String,
    /// Newer marks have larger numbers: a copy answers the marks up to the one it started after.
    pub mark: i64,
    /// Its changes are not applied until its rebuild is swapped in.
    pub isolated: bool,
    /// The rebuild waits for a copy request.
    pub waits_for_request: bool,
}

/// The tables of `job` marked as needing a re-copy.
pub async fn recopy_needed(sink: &Client, job: &str) -> Result<Vec<RecopyMark>, tokio_postgres::Error> {
    let rows = sink
        .query(
            "SELECT source_table, reason, mark, isolated, waits_for_request FROM walpipe.recopy_needed WHERE job_name = $1",
            &[&job],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| RecopyMark {
            table: row.get(0),
            reason: row.get(1),
            mark: row.get(2),
            isolated: row.get(3),
            waits_for_request: row.get(4),
        })
        .collect())
}

/// A finished copy of each of `tables` answered its mark.
pub async fn clear_recopy_of(
    sink: &Client,
    job: &str,
    tables: &[String],
) -> Result<(), tokio_postgres::Error> {
    sink.execute(
        "DELETE FROM walpipe.recopy_needed WHERE job_name = $1 AND source_table = ANY($2) AND NOT isolated",
        &[&job, &tables],
    )
    .await
    .map(drop)
}

/// After a copy of every table: none needs a re-copy.
pub async fn clear_recopy(sink: &Client, job: &str) -> Result<(), tokio_postgres::Error> {
    sink.execute("DELETE FROM walpipe.recopy_needed WHERE job_name = $1", &[&job]).await.map(drop)
}
