//! The history of a job's runs in the state store: one row per run
//! (`walpipe.job_instances`), with the worker, the final status and the
//! records and bytes it applied.

use super::{Store, StoreError};

/// How one run ended, as its history row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Paused,
    Stopped,
    /// Handed over: a restart, a lost lease, a shutdown.
    LetGo,
    Failed,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Succeeded => "succeeded",
            RunEnd::Paused => "paused",
            RunEnd::Stopped => "stopped",
            RunEnd::LetGo => "let go",
            RunEnd::Failed => "failed",
        }
    }
}

/// One run of a job (a row of its history).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instance {
    pub id: i64,
    pub worker: String,
    pub started_at: String,
    pub duration_seconds: f64,
    pub status: String,
    pub records: i64,
    pub bytes: i64,
    pub error: Option<String>,
}

impl Store {
    /// A run of `job` begins; returns its instance id.
    pub async fn instance_started(&self, job: &str, worker: &str) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "INSERT INTO walpipe.job_instances (job_name, worker_id) VALUES ($1, $2) RETURNING id",
                &[&job, &worker],
            )
            .await?
            .try_get(0)?)
    }

    pub async fn instance_ended(
        &self,
        id: i64,
        end: RunEnd,
        records: i64,
        bytes: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE walpipe.job_instances SET ended_at = now(), status = $2, records = $3, bytes = $4, error = $5 WHERE id = $1",
                &[&id, &end.as_str(), &records, &bytes, &error],
            )
            .await?;
        Ok(())
    }

    /// A job's runs, newest first.
    pub async fn history(&self, job: &str) -> Result<Vec<Instance>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, worker_id, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        extract(epoch FROM coalesce(ended_at, now()) - started_at)::float8, status, records, bytes, error
                   FROM walpipe.job_instances WHERE job_name = $1 ORDER BY id DESC",
                &[&job],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Instance {
                    id: row.try_get(0)?,
                    worker: row.try_get(1)?,
                    started_at: row.try_get(2)?,
                    duration_seconds: row.try_get(3)?,
                    status: row.try_get(4)?,
                    records: row.try_get(5)?,
                    bytes: row.try_get(6)?,
                    error: row.try_get(7)?,
                })
            })
            .collect()
    }
}
