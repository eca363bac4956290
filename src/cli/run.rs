//! `walpipe run`: the sidecar, a worker. Serves HTTP, opens the state store,
//! puts the environment's job (if any) into it, and supervises the store's
//! jobs until SIGINT or SIGTERM; then stops each gracefully: pending
//! changes are applied, committed with their checkpoint, and confirmed.
//!
//! The environment's job ends the process when it ends for good: exit 1
//! with its error when it fails (fix the environment and start again), exit
//! 0 when `initial_only` has copied everything. Jobs created through the
//! API fail without ending the process; `retry` resumes them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::sync::watch;

use crate::config::Config;
use crate::job::notify::Notifier;
use crate::job::spec::{JobDefinition, JobSpec, Naming};
use crate::job::store::Store;
use crate::job::supervisor::Supervisor;
use crate::lifecycle::State;
use crate::pg::ConnInfo;
use crate::sink::SinkTarget;
use crate::{backoff, http, metrics};

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let environment_job = JobDefinition::from_config(config)?;
    if let Some(definition) = &environment_job {
        JobSpec::from_definition(definition, Naming::Environment)?;
    }
    let state_url = config
        .state_url
        .clone()
        .or_else(|| {
            environment_job.as_ref().map(|job| {
                // The checkpoint lives in a Postgres sink; else in the source, unless told otherwise.
                let sink_holds_it = SinkTarget::parse(&job.sink_url).is_ok_and(|sink| sink.holds_checkpoint());
                if sink_holds_it { job.sink_url.clone() } else { job.source_url.clone() }
            })
        })
        .ok_or_else(|| {
            anyhow!(
                "there is no job to run: set WALPIPE_SOURCE_URL and WALPIPE_SINK_URL for a job, or WALPIPE_STATE_URL to run the jobs of a state store"
            )
        })?;
    let state_info = ConnInfo::parse(&state_url).map_err(|e| {
        if config.state_url.is_none() {
            anyhow!("this job's sink keeps its checkpoint in a state store, and its source is not PostgreSQL: set WALPIPE_STATE_URL to a PostgreSQL database")
        } else {
            anyhow!("WALPIPE_STATE_URL: {e}")
        }
    })?;

    let server = http::Server::bind(&config.http_addr).await?;
    if let Some(addr) = server.local_addr() {
        tracing::info!("serving http://{addr}/metrics, /healthz, /readyz and /api/v1/jobs");
    }
    let app = Arc::new(http::App::new(config.api_token.clone(), Some(super::check::preflight())));
    tokio::spawn(server.serve(app.clone()));
    if let Some(job) = &environment_job {
        let slot = JobSpec::from_definition(job, Naming::Environment)?.slot;
        metrics::global().job(&job.name, &slot).status.set_state(State::Pending, None);
    }

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("stopping: applying and committing what is pending");
        let _ = stop_tx.send(true);
    });
    let Some(store) = open_store(state_info, Notifier::new(config.webhook_url.clone()), stop.clone()).await?
    else {
        return Ok(());
    };
    if let Some(job) = &environment_job {
        store.upsert_environment_job(job).await?;
        tracing::info!(job = %job.name, "starting the environment's job");
    }
    let _ = app.store.set(store.clone());
    let wal_volume = config.wal_volume_bytes.map_or(0, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    let ended = Supervisor::new(store, wal_volume).run(stop).await;
    match ended {
        Some(finished) if finished.state == Some(State::Failed) => {
            bail!("{}", finished.error.unwrap_or_else(|| format!("job {} failed", finished.job)))
        }
        Some(finished) => tracing::info!(job = %finished.job, "the environment's job is done"),
        None => tracing::info!("stopped"),
    }
    Ok(())
}

/// Opens the state store, retrying while it is unreachable; `None` when
/// asked to stop first.
async fn open_store(
    info: ConnInfo,
    notifier: Notifier,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<Store>>> {
    let mut delays = backoff::delays(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match Store::open(info.clone(), notifier.clone()).await {
            Ok(store) => return Ok(Some(Arc::new(store))),
            Err(error) if error.is_transient() => {
                let wait = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(
                    "the state store is unreachable, retrying in {:.1} s: {error}",
                    wait.as_secs_f64()
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return Ok(None),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}
