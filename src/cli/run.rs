//! `walpipe run`: the sidecar. Runs the job the environment defines until
//! SIGINT or SIGTERM, then stops gracefully: pending changes are applied,
//! committed with their checkpoint, and confirmed to the source.

use anyhow::bail;
use tokio::sync::watch;

use crate::config::Config;
use crate::job::runner;
use crate::job::spec::JobSpec;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let Some(spec) = JobSpec::from_config(config)? else {
        bail!(
            "there is no job to run: set WALPIPE_SOURCE_URL and WALPIPE_SINK_URL (jobs from a state store come in a later version)"
        );
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("stopping: applying and committing what is pending");
        let _ = stop_tx.send(true);
    });
    tracing::info!(job = %spec.name, source = %spec.source, sink = %spec.sink, "starting");
    runner::run(&spec, stop_rx).await?;
    tracing::info!(job = %spec.name, "stopped");
    Ok(())
}
