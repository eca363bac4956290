//! The state store's schema, as versioned migrations
//! (`walpipe.schema_migrations`), applied under an advisory lock so that
//! workers starting together apply each once.

use super::{Store, StoreError};

const MIGRATIONS: [&str; 4] = [
    "CREATE SCHEMA IF NOT EXISTS walpipe;
     CREATE TABLE walpipe.jobs (
         name text PRIMARY KEY,
         definition jsonb NOT NULL,
         from_environment boolean NOT NULL DEFAULT false,
         state text NOT NULL DEFAULT 'created',
         phase text,
         error text,
         worker_id text,
         lease_until timestamptz,
         reset_requested boolean NOT NULL DEFAULT false,
         cleanup_requested boolean NOT NULL DEFAULT false,
         status jsonb NOT NULL DEFAULT '{}',
         checkpoint_lsn text,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE walpipe.workers (
         id text PRIMARY KEY,
         host text NOT NULL,
         pid int NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now(),
         heartbeat_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE walpipe.job_instances (
         id bigserial PRIMARY KEY,
         job_name text NOT NULL REFERENCES walpipe.jobs ON DELETE CASCADE,
         worker_id text NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now(),
         ended_at timestamptz,
         status text NOT NULL DEFAULT 'running',
         records bigint NOT NULL DEFAULT 0,
         bytes bigint NOT NULL DEFAULT 0,
         error text);
     CREATE INDEX ON walpipe.job_instances (job_name, id)",
    // The action asked of a job a worker runs, until the worker reaches its state.
    "ALTER TABLE walpipe.jobs ADD COLUMN requested text",
    // Edits of a job's tables and copy requests, which its owner picks up by revision.
    "ALTER TABLE walpipe.jobs ADD COLUMN revision bigint NOT NULL DEFAULT 0,
         ADD COLUMN copy_requests jsonb NOT NULL DEFAULT '{}'",
    // Named sources and sinks, saved once and chosen by name (the console's create form).
    "CREATE TABLE walpipe.datasources (
         name text PRIMARY KEY,
         role text NOT NULL CHECK (role IN ('source', 'sink')),
         url text NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now())",
];

impl Store {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('walpipe.schema_migrations'));
             CREATE SCHEMA IF NOT EXISTS walpipe;
             CREATE TABLE IF NOT EXISTS walpipe.schema_migrations (
                 version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let applied: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM walpipe.schema_migrations", &[])
            .await?
            .try_get(0)?;
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            if version > applied {
                tx.batch_execute(migration).await?;
                tx.execute("INSERT INTO walpipe.schema_migrations (version) VALUES ($1)", &[&version])
                    .await?;
                tracing::info!(version, "applied a state store migration");
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
