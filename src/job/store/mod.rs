//! The state store: job definitions, state, phase, last error, leases,
//! instances (history) and workers, in schema `walpipe` of a Postgres
//! database (`WALPIPE_STATE_URL`; by default the sink, else the source).
//!
//! ```text
//!  API ──act()──> a job nobody runs: jobs.state at once
//!                 a job a worker runs: jobs.requested + the transition state (pausing, stopping)
//!                 ──NOTIFY walpipe_jobs──> the owner acts at once (polling every few s is the fallback)
//!  worker ──claim()──> jobs.worker_id + lease_until ──renew()──> the observed state (on every change, and every few s)
//!         ──finish()──> final state, lease released        instances: one row per run
//! ```
//!
//! Invariants:
//! - Migrations are versioned (`walpipe.schema_migrations`) and applied
//!   under an advisory lock, so workers starting together apply each once.
//! - `state` is what the job was observed to be. A state changes only
//!   through [`Store::act`] (the transition table: at once for a job nobody
//!   runs, else as a request), [`Store::claim`] (pending or an expired
//!   lease: starting), the owner's [`Store::renew`] (the state it observed;
//!   a request is cleared when its state is reached) and [`Store::finish`]
//!   (the owner's final word). A worker writes only rows it holds the lease
//!   of, so a job runs in at most one worker.
//! - Every state change is announced to the notifier (the webhook).
//! - The authoritative checkpoint stays in the sink, committed with the
//!   rows; the store keeps a copy for display.

use std::time::Duration;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::Client;

mod datasources;
mod edits;
mod history;
mod migrations;

pub use datasources::{Datasource, Role};
pub use history::{Instance, RunEnd};

use super::notify::Notifier;
use super::spec::JobDefinition;
use crate::lifecycle::{self, Action, Refused, State};
use crate::pg::ConnInfo;
use crate::pg::sql;

/// How long a claim lasts without renewal: a dead worker's jobs are taken over after this.
pub const LEASE: Duration = Duration::from_secs(15);
/// A worker whose heartbeat is older than this is dead.
pub const WORKER_ALIVE: Duration = Duration::from_secs(30);

/// The channel on which every action is announced (its payload: the job's name).
pub const CHANNEL: &str = "walpipe_jobs";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store: {0}")]
    Connect(#[from] sql::ConnectError),
    #[error("the state store's SQL failed: {}", crate::pg::sql::describe(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("there is no job named {0:?}")]
    NotFound(String),
    #[error("there is no datasource named {0:?}: create it first (POST /api/v1/datasources)")]
    NoDatasource(String),
    #[error("a datasource named {0:?} exists already: pick another name or delete it first")]
    DatasourceExists(String),
    #[error("a job named {0:?} exists already: pick another name or delete it first")]
    Exists(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("the state store holds something this version cannot read: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect(error) => error.is_transient(),
            StoreError::Sql(error) => sql::is_transient(error),
            _ => false,
        }
    }
}

/// Whether an action on `job` takes effect at once or is a request to its owner.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    AtOnce,
    Request,
}

/// A request when a live worker runs the job and only it can carry the
/// action out (end its session, clean up); also a stop with cleanup of a
/// job nobody runs, which the next worker to claim it carries out.
fn placement(job: &JobRow, action: Action, cleanup: bool) -> Placement {
    let owned = job.leased
        && matches!(
            job.state,
            State::Starting | State::Running | State::Pausing | State::Paused | State::Stopping
        );
    let for_owner = matches!(action, Action::Pause | Action::Resume | Action::Stop | Action::Restart);
    let cleanup_elsewhere = cleanup
        && matches!(
            job.state,
            State::Pending | State::Starting | State::Running | State::Pausing | State::Paused
        );
    if (owned && for_owner) || cleanup_elsewhere { Placement::Request } else { Placement::AtOnce }
}

fn parse_requested(text: Option<String>) -> Result<Option<Action>, StoreError> {
    text.map(|t| Action::parse(&t).ok_or_else(|| StoreError::Corrupt(format!("requested action {t:?}"))))
        .transpose()
}

/// A job as the store holds it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub definition: JobDefinition,
    pub from_environment: bool,
    pub state: State,
    pub phase: Option<String>,
    pub error: Option<String>,
    pub worker_id: Option<String>,
    /// The lease is held by a worker whose lease has not expired.
    pub leased: bool,
    pub reset_requested: bool,
    pub cleanup_requested: bool,
    pub status: serde_json::Value,
    pub checkpoint_lsn: Option<String>,
    /// The action asked of the job's owner and not reached yet.
    pub requested: Option<Action>,
    /// Grows with every edit of the tables and every copy request.
    pub revision: i64,
    /// The newest copy request (a revision) per table (`schema.table`).
    pub copy_requests: std::collections::BTreeMap<String, i64>,
}

/// What the owner of a job learns when it renews its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    pub state: State,
    pub requested: Option<Action>,
    pub cleanup_requested: bool,
    pub revision: i64,
}

pub struct Store {
    info: ConnInfo,
    client: Mutex<Option<Client>>,
    notifier: Notifier,
}

const JOB_COLUMNS: &str = "definition, from_environment, state, phase, error, worker_id, \
     coalesce(lease_until > now(), false), reset_requested, cleanup_requested, status, checkpoint_lsn, requested, revision, copy_requests";

impl Store {
    /// Connects and applies the migrations this version has and the store lacks.
    /// Where the store is (the checkpoints of sinks outside Postgres live there too).
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    pub async fn open(info: ConnInfo, notifier: Notifier) -> Result<Store, StoreError> {
        let store = Store { info, client: Mutex::new(None), notifier };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection (one at a time: transactions need it to themselves),
    /// opened again if it was lost.
    async fn client(&self) -> Result<MappedMutexGuard<'_, Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(sql::connect(&self.info, "the state store").await?);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| StoreError::Corrupt("no connection".into()))
    }

    fn row(row: &tokio_postgres::Row) -> Result<JobRow, StoreError> {
        Store::row_at(row, 0)
    }

    fn announce(&self, job: &str, previous: Option<State>, new: State, error: Option<&str>) {
        if previous != Some(new) {
            self.notifier.state_changed(job, previous, new, error);
        }
    }

    /// A new job, `created`.
    pub async fn create(&self, definition: &JobDefinition) -> Result<JobRow, StoreError> {
        let client = self.client().await?;
        let json = serde_json::to_value(definition).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inserted = client
            .query_opt(
                &format!(
                    "INSERT INTO walpipe.jobs (name, definition) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING {JOB_COLUMNS}"
                ),
                &[&definition.name, &json],
            )
            .await?;
        let row = inserted.ok_or_else(|| StoreError::Exists(definition.name.clone()))?;
        self.announce(&definition.name, None, State::Created, None);
        Store::row(&row)
    }

    /// The environment's job: its definition is replaced, and unless a
    /// worker holds it or it is paused, it is started.
    pub async fn upsert_environment_job(&self, definition: &JobDefinition) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let json = serde_json::to_value(definition).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = client.transaction().await?;
        let previous: Option<String> = tx
            .query_opt("SELECT state FROM walpipe.jobs WHERE name = $1 FOR UPDATE", &[&definition.name])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let new: String = tx
            .query_one(
                "INSERT INTO walpipe.jobs (name, definition, from_environment, state) VALUES ($1, $2, true, 'pending')
                 ON CONFLICT (name) DO UPDATE SET definition = $2, from_environment = true, updated_at = now(),
                     error = CASE WHEN walpipe.jobs.state IN ('created', 'stopped', 'failed', 'succeeded') THEN NULL ELSE walpipe.jobs.error END,
                     state = CASE WHEN walpipe.jobs.state IN ('created', 'stopped', 'failed', 'succeeded') THEN 'pending' ELSE walpipe.jobs.state END
                 RETURNING state",
                &[&definition.name, &json],
            )
            .await?
            .try_get(0)?;
        tx.commit().await?;
        if let Some(new) = State::parse(&new) {
            self.announce(&definition.name, previous.as_deref().and_then(State::parse), new, None);
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<JobRow>, StoreError> {
        let client = self.client().await?;
        let rows =
            client.query(&format!("SELECT {JOB_COLUMNS} FROM walpipe.jobs ORDER BY name"), &[]).await?;
        rows.iter().map(Store::row).collect()
    }

    pub async fn get(&self, name: &str) -> Result<JobRow, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {JOB_COLUMNS} FROM walpipe.jobs WHERE name = $1"), &[&name])
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        Store::row(&row)
    }

    /// Applies a user's action through the transition table. `cleanup`
    /// (stop only): also drop the slot and the publication. Returns the job
    /// as it was before; for `delete` the caller drops the slot and the
    /// publication, then calls [`Store::remove`].
    pub async fn act(&self, name: &str, action: Action, cleanup: bool) -> Result<JobRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM walpipe.jobs WHERE name = $1 FOR UPDATE"),
                &[&name],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let before = Store::row(&row)?;
        let Some(target) = lifecycle::apply(before.state, action)? else {
            tx.commit().await?;
            return Ok(before);
        };
        let cleanup = action == Action::Stop && cleanup;
        let (state, requested) = match placement(&before, action, cleanup) {
            Placement::Request => (lifecycle::pending_state(action).unwrap_or(before.state), Some(action)),
            Placement::AtOnce => (target, None),
        };
        tx.execute(
            "UPDATE walpipe.jobs SET state = $2, requested = $5, updated_at = now(),
                 error = CASE WHEN $2 = 'pending' THEN NULL ELSE error END,
                 reset_requested = reset_requested OR $3,
                 cleanup_requested = $4
             WHERE name = $1",
            &[&name, &state.as_str(), &(action == Action::Restart), &cleanup, &requested.map(Action::as_str)],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &name]).await?;
        tx.commit().await?;
        self.announce(name, Some(before.state), state, None);
        Ok(before)
    }

    /// Removes a deleted job (its history goes with it).
    pub async fn remove(&self, name: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("DELETE FROM walpipe.jobs WHERE name = $1", &[&name]).await?;
        Ok(())
    }

    /// Registers or refreshes this worker.
    pub async fn worker_alive(&self, worker: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        client
            .execute(
                "INSERT INTO walpipe.workers (id, host, pid) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                &[&worker, &host, &pid],
            )
            .await?;
        Ok(())
    }

    /// Workers whose heartbeat is recent.
    pub async fn live_workers(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let alive = WORKER_ALIVE.as_secs_f64();
        Ok(client
            .query_one(
                "SELECT count(*) FROM walpipe.workers WHERE heartbeat_at > now() - make_interval(secs => $1)",
                &[&alive],
            )
            .await?
            .try_get(0)?)
    }

    /// Claims every job that is pending, or owned by a worker whose lease
    /// expired. Claimed jobs that were pending or running become `starting`.
    pub async fn claim(&self, worker: &str) -> Result<Vec<JobRow>, StoreError> {
        let client = self.client().await?;
        let lease = LEASE.as_secs_f64();
        let rows = client
            .query(
                &format!(
                    "WITH free AS (
                         SELECT name, state AS previous FROM walpipe.jobs
                          WHERE state IN ('pending', 'starting', 'running', 'pausing', 'paused', 'stopping')
                            AND (worker_id IS NULL OR lease_until IS NULL OR lease_until < now())
                          ORDER BY name FOR UPDATE SKIP LOCKED)
                     UPDATE walpipe.jobs j SET worker_id = $1, lease_until = now() + make_interval(secs => $2),
                            state = CASE WHEN j.state IN ('pausing', 'paused', 'stopping') THEN j.state ELSE 'starting' END,
                            phase = NULL, updated_at = now()
                       FROM free WHERE j.name = free.name
                     RETURNING free.previous, {}",
                    JOB_COLUMNS.replace("lease_until", "j.lease_until").replace("definition", "j.definition")
                ),
                &[&worker, &lease],
            )
            .await?;
        let mut claimed = Vec::new();
        for row in &rows {
            let previous: String = row.try_get(0)?;
            let job = Store::row_at(row, 1)?;
            self.announce(&job.definition.name, State::parse(&previous), job.state, None);
            claimed.push(job);
        }
        Ok(claimed)
    }

    /// [`Store::row`] for a row whose job columns start at `offset`.
    fn row_at(row: &tokio_postgres::Row, offset: usize) -> Result<JobRow, StoreError> {
        let definition: serde_json::Value = row.try_get(offset)?;
        let state: String = row.try_get(offset + 2)?;
        let requested: Option<String> = row.try_get(offset + 11)?;
        Ok(JobRow {
            definition: serde_json::from_value(definition).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            from_environment: row.try_get(offset + 1)?,
            state: State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
            phase: row.try_get(offset + 3)?,
            error: row.try_get(offset + 4)?,
            worker_id: row.try_get(offset + 5)?,
            leased: row.try_get(offset + 6)?,
            reset_requested: row.try_get(offset + 7)?,
            cleanup_requested: row.try_get(offset + 8)?,
            status: row.try_get(offset + 9)?,
            checkpoint_lsn: row.try_get(offset + 10)?,
            requested: parse_requested(requested)?,
            revision: row.try_get(offset + 12)?,
            copy_requests: serde_json::from_value(row.try_get(offset + 13)?)
                .map_err(|e| StoreError::Corrupt(format!("copy requests: {e}")))?,
        })
    }

    /// The owner's heartbeat for one job: extends the lease and records the
    /// observed state, phase and status. A pending request is cleared when
    /// the observed state is the one it asked for; until then the job keeps
    /// showing the transition state. `None`: the lease is lost (another
    /// worker holds the job, or it was deleted): stop at once.
    pub async fn renew(
        &self,
        name: &str,
        worker: &str,
        observed: State,
        phase: Option<&str>,
        status: &serde_json::Value,
        checkpoint_lsn: Option<String>,
    ) -> Result<Option<Renewed>, StoreError> {
        let client = self.client().await?;
        let lease = LEASE.as_secs_f64();
        let row = client
            .query_opt(
                "UPDATE walpipe.jobs j SET lease_until = now() + make_interval(secs => $3),
                        state = CASE
                            WHEN j.requested IS NULL AND j.state IN ('starting', 'running', 'paused')
                                 AND $4 IN ('starting', 'running', 'paused') THEN $4
                            WHEN (j.requested = 'pause' AND $4 = 'paused') OR (j.requested = 'resume' AND $4 = 'running') THEN $4
                            ELSE j.state END,
                        requested = CASE
                            WHEN (j.requested = 'pause' AND $4 = 'paused') OR (j.requested = 'resume' AND $4 = 'running') THEN NULL
                            ELSE j.requested END,
                        phase = $5, status = $6, checkpoint_lsn = coalesce($7, j.checkpoint_lsn), updated_at = now()
                   FROM (SELECT name, state FROM walpipe.jobs WHERE name = $1 AND worker_id = $2 FOR UPDATE) previous
                  WHERE j.name = previous.name
                 RETURNING previous.state, j.state, j.cleanup_requested, j.requested, j.revision",
                &[&name, &worker, &lease, &observed.as_str(), &phase, status, &checkpoint_lsn],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let previous: Option<String> = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let state =
            State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?;
        self.announce(name, previous.as_deref().and_then(State::parse), state, None);
        Ok(Some(Renewed {
            state,
            requested: parse_requested(row.try_get(3)?)?,
            cleanup_requested: row.try_get(2)?,
            revision: row.try_get(4)?,
        }))
    }

    /// The owner's last word on a job it lets go: `Some(state)` sets it
    /// (failed, succeeded, stopped) and ends any request; `None` keeps the
    /// store's, except that a requested restart becomes `pending` (a
    /// shutdown leaves the job, and its pending request, to the next worker).
    pub async fn finish(
        &self,
        name: &str,
        worker: &str,
        state: Option<State>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE walpipe.jobs j SET
                        state = coalesce($3, CASE WHEN j.requested = 'restart' THEN 'pending' ELSE j.state END),
                        requested = CASE WHEN $3 IS NOT NULL OR j.requested = 'restart' THEN NULL ELSE j.requested END,
                        cleanup_requested = CASE WHEN $3 IS NOT NULL THEN false ELSE j.cleanup_requested END,
                        error = coalesce($4, j.error),
                        worker_id = NULL, lease_until = NULL, phase = NULL, updated_at = now()
                   FROM (SELECT name, state FROM walpipe.jobs WHERE name = $1 AND worker_id = $2 FOR UPDATE) previous
                  WHERE j.name = previous.name
                 RETURNING previous.state, j.state",
                &[&name, &worker, &state.map(State::as_str), &error],
            )
            .await?;
        if let Some(row) = row {
            let previous: Option<String> = row.try_get(0)?;
            let new: String = row.try_get(1)?;
            if let Some(new) = State::parse(&new) {
                self.announce(name, previous.as_deref().and_then(State::parse), new, error);
            }
        }
        Ok(())
    }

    /// A restart's reset was done.
    pub async fn reset_done(&self, name: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("UPDATE walpipe.jobs SET reset_requested = false WHERE name = $1", &[&name]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
