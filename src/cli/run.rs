//! `walpipe run`: the sidecar. Runs the job the environment defines until
//! SIGINT or SIGTERM, then stops gracefully: pending changes are applied,
//! committed with their checkpoint, and confirmed to the source.

use anyhow::bail;
use tokio::sync::watch;

use crate::config::Config;
use crate::job::runner;
use crate::job::spec::JobSpec;
use crate::{http, metrics, monitor};

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let Some(spec) = JobSpec::from_config(config)? else {
        bail!(
            "there is no job to run: set WALPIPE_SOURCE_URL and WALPIPE_SINK_URL (jobs from a state store come in a later version)"
        );
    };
    let server = http::Server::bind(&config.http_addr).await?;
    if let Some(addr) = server.local_addr() {
        tracing::info!("serving http://{addr}/metrics, /healthz and /readyz");
    }
    tokio::spawn(server.serve());
    let metrics = metrics::global().job(&spec.name, &spec.slot);
    metrics
        .wal_volume
        .set(config.wal_volume_bytes.map_or(0, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX)));
    let monitor = tokio::spawn(monitor::run(spec.source.clone(), metrics.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("stopping: applying and committing what is pending");
        let _ = stop_tx.send(true);
    });
    tracing::info!(job = %spec.name, source = %spec.source, sink = %spec.sink, "starting");
    let outcome = runner::run(&spec, &metrics, stop_rx).await;
    monitor.abort();
    outcome?;
    tracing::info!(job = %spec.name, "stopped");
    Ok(())
}
