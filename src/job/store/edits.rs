//! Edits of a job that take effect while it runs: its table list, and
//! requests to copy tables again.
//!
//! Invariants:
//! - Every edit raises the job's `revision` in the same statement, and is
//!   announced on [`super::CHANNEL`]; the owner compares revisions when it
//!   renews its lease, so an edit reaches it even without the notification.
//! - A copy request is the revision it was made at, per table: the job's
//!   copy progress records the newest one each copy answered
//!   (`chunked::plan`), so a request is carried out once, whoever runs the job.

use super::{JOB_COLUMNS, JobRow, Store, StoreError};

impl Store {
    /// Asks for copies of `tables` (`schema.table`); returns the job as it is now.
    pub async fn request_copies(&self, name: &str, tables: &[String]) -> Result<JobRow, StoreError> {
        self.revise(
            name,
            "copy_requests = copy_requests || (SELECT jsonb_object_agg(t, revision + 1) FROM unnest($2::text[]) t)",
            &tables,
        )
        .await
    }

    /// Replaces the job's table list (`WALPIPE_TABLES` syntax); returns the job as it is now.
    pub async fn edit_tables(&self, name: &str, tables: &str) -> Result<JobRow, StoreError> {
        self.revise(name, "definition = jsonb_set(definition, '{tables}', to_jsonb($2::text))", &tables).await
    }

    async fn revise(
        &self,
        name: &str,
        set: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<JobRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE walpipe.jobs SET {set}, revision = revision + 1, updated_at = now() \
                     WHERE name = $1 RETURNING {JOB_COLUMNS}"
                ),
                &[&name, value],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        tx.execute("SELECT pg_notify($1, $2)", &[&super::CHANNEL, &name]).await?;
        tx.commit().await?;
        Store::row(&row)
    }
}
