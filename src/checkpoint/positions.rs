//! The job's checkpoint in the database that holds it (the Postgres sink,
//! or the state store): `walpipe.checkpoints`, and the data gaps of lost
//! slots in `walpipe.data_gaps`.
//!
//! Invariants: the applied position never goes backwards (`greatest` in
//! SQL); the chunked copy's progress (`copy_progress`) is written in the
//! same statement as the position its chunks complete.

use tokio_postgres::{Client, Statement};

use crate::chunked::progress::{self, CopyProgress};
use crate::position::Position;

/// Where the job's applied position is kept (`walpipe.checkpoints`).
pub async fn read_checkpoint(
    client: &Client,
    job: &str,
) -> Result<Option<(String, Position)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT slot_name, applied_lsn::text FROM walpipe.checkpoints WHERE job_name = $1",
            &[&job],
        )
        .await?;
    Ok(row.and_then(|row| {
        let lsn: String = row.get(1);
        lsn.parse().ok().map(|lsn| (row.get(0), lsn))
    }))
}

/// The statement that records the applied position (and merges the
/// copy's progress): `$1` job, `$2` slot, `$3` position, `$4` progress.
const WRITE_CHECKPOINT: &str = "INSERT INTO walpipe.checkpoints (job_name, slot_name, applied_lsn, copy_progress) \
     VALUES ($1, $2, $3::text::pg_lsn, $4::text::jsonb) \
     ON CONFLICT (job_name) DO UPDATE SET slot_name = EXCLUDED.slot_name, \
         applied_lsn = greatest(walpipe.checkpoints.applied_lsn, EXCLUDED.applied_lsn), \
         copy_progress = CASE WHEN EXCLUDED.copy_progress IS NULL THEN walpipe.checkpoints.copy_progress \
             ELSE coalesce(walpipe.checkpoints.copy_progress, '{}') || EXCLUDED.copy_progress END, \
         updated_at = now()";

/// Records `lsn` as applied, and merges `copied` into the copy's progress.
pub async fn write_checkpoint(
    client: &Client,
    job: &str,
    slot: &str,
    lsn: Position,
    copied: &CopyProgress,
) -> Result<(), tokio_postgres::Error> {
    CheckpointWriter::prepare(client).await?.write(client, job, slot, lsn, copied).await
}

/// [`write_checkpoint`] prepared once, for a session that writes one per
/// commit (a round trip less each time).
pub struct CheckpointWriter {
    statement: Statement,
}

impl CheckpointWriter {
    pub async fn prepare(client: &Client) -> Result<CheckpointWriter, tokio_postgres::Error> {
        Ok(CheckpointWriter { statement: client.prepare(WRITE_CHECKPOINT).await? })
    }

    pub async fn write(
        &self,
        client: &Client,
        job: &str,
        slot: &str,
        lsn: Position,
        copied: &CopyProgress,
    ) -> Result<(), tokio_postgres::Error> {
        client
            .execute(&self.statement, &[&job, &slot, &lsn.to_string(), &progress::to_json(copied)])
            .await
            .map(drop)
    }
}

/// Where the job's chunked copy stands (`walpipe.checkpoints.copy_progress`).
pub async fn read_copy_progress(client: &Client, job: &str) -> Result<CopyProgress, tokio_postgres::Error> {
    let row = client
        .query_opt("SELECT copy_progress::text FROM walpipe.checkpoints WHERE job_name = $1", &[&job])
        .await?;
    Ok(progress::parse(row.and_then(|row| row.get::<_, Option<String>>(0)).as_deref()))
}

/// Forgets the copy progress of `tables` (the job no longer captures them).
pub async fn forget_copies(
    client: &Client,
    job: &str,
    tables: &[String],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE walpipe.checkpoints SET copy_progress = copy_progress - $2::text[] WHERE job_name = $1",
            &[&job, &tables],
        )
        .await
        .map(drop)
}

/// Records that changes after `gap_from` (unknown: None) were lost with an invalidated slot.
pub async fn record_data_gap(
    client: &Client,
    job: &str,
    slot: &str,
    gap_from: Option<Position>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO walpipe.data_gaps (job_name, slot_name, gap_from) VALUES ($1, $2, $3::text::pg_lsn)",
            &[&job, &slot, &gap_from.map(|lsn| lsn.to_string())],
        )
        .await
        .map(drop)
}

pub async fn forget_checkpoint(client: &Client, job: &str) -> Result<(), tokio_postgres::Error> {
    client.execute("DELETE FROM walpipe.checkpoints WHERE job_name = $1", &[&job]).await.map(drop)
}
