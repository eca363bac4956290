//! The checkpoint store's tables (`walpipe.*`), created or brought up to
//! date before a job starts.

use tokio_postgres::Client;

/// The job state kept next to the rows it describes: in the Postgres sink,
/// or, for the sinks outside Postgres, in the state store, where
/// `delivered_through` and `in_flight` also name the batches delivered and
/// the one being sent (see `sink::delivery`).
///
/// Every start runs this: the columns added later are looked up in
/// `pg_attribute`, since `information_schema.columns` took about 10 ms of a
/// new session per look (`benches/restart_to_first_row.sh`).
pub async fn ensure_state(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS walpipe; \
             CREATE TABLE IF NOT EXISTS walpipe.checkpoints ( \
                 job_name text PRIMARY KEY, \
                 slot_name text NOT NULL, \
                 applied_lsn pg_lsn NOT NULL, \
                 updated_at timestamptz NOT NULL DEFAULT now()); \
             CREATE TABLE IF NOT EXISTS walpipe.data_gaps ( \
                 job_name text NOT NULL, \
                 slot_name text NOT NULL, \
                 gap_from pg_lsn, \
                 detected_at timestamptz NOT NULL DEFAULT now()); \
             CREATE TABLE IF NOT EXISTS walpipe.source_columns ( \
                 job_name text NOT NULL, \
                 source_table text NOT NULL, \
                 column_name text NOT NULL, \
                 attnum int2 NOT NULL, \
                 PRIMARY KEY (job_name, source_table, column_name)); \
             CREATE TABLE IF NOT EXISTS walpipe.source_tables ( \
                 job_name text NOT NULL, \
                 source_table text NOT NULL, \
                 relid oid NOT NULL, \
                 PRIMARY KEY (job_name, source_table)); \
             CREATE TABLE IF NOT EXISTS walpipe.recopy_needed ( \
                 job_name text NOT NULL, \
                 source_table text NOT NULL, \
                 reason text NOT NULL, \
                 since timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (job_name, source_table)); \
             CREATE TABLE IF NOT EXISTS walpipe.partition_leaves ( \
                 job_name text NOT NULL, \
                 root_schema text NOT NULL, \
                 root_name text NOT NULL, \
                 leaves text[] NOT NULL, \
                 PRIMARY KEY (job_name, root_schema, root_name)); \
             DO $$ BEGIN \
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'walpipe.checkpoints'::regclass \
                                AND attname = 'copy_progress' AND NOT attisdropped) THEN \
                     ALTER TABLE walpipe.checkpoints ADD COLUMN IF NOT EXISTS delivered_through text, \
                         ADD COLUMN IF NOT EXISTS in_flight jsonb, ADD COLUMN IF NOT EXISTS shapes jsonb, \
                         ADD COLUMN IF NOT EXISTS copy_progress jsonb; \
                 END IF; \
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'walpipe.recopy_needed'::regclass \
                                AND attname = 'mark' AND NOT attisdropped) THEN \
                     CREATE SEQUENCE IF NOT EXISTS walpipe.recopy_marks; \
                     ALTER TABLE walpipe.recopy_needed \
                         ADD COLUMN IF NOT EXISTS mark bigint NOT NULL DEFAULT nextval('walpipe.recopy_marks'); \
                 END IF; \
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'walpipe.recopy_needed'::regclass \
                                AND attname = 'isolated' AND NOT attisdropped) THEN \
                     ALTER TABLE walpipe.recopy_needed \
                         ADD COLUMN IF NOT EXISTS isolated boolean NOT NULL DEFAULT false, \
                         ADD COLUMN IF NOT EXISTS waits_for_request boolean NOT NULL DEFAULT false; \
                 END IF; \
             END $$;",
        )
        .await
}
