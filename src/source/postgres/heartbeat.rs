//! The job's heartbeat: a logical decoding message written into the
//! source's WAL at a fixed interval, so that a quiet database still moves
//! the slot, and a stalled consumer shows (its heartbeats stop coming back).

use std::sync::Arc;
use std::time::Duration;

use super::assembler::HEARTBEAT_PREFIX;
use crate::metrics::{JobMetrics, unix_seconds};
use crate::pg::ConnInfo;
use crate::pg::sql;

/// Emits a heartbeat into the source's WAL every `every`, and warns when
/// they stop coming back through the stream (the consumer is stalled).
/// Non-transactional, so each is decoded at once, also on a quiet database.
pub async fn heartbeat(source: ConnInfo, job: String, every: Duration, metrics: Arc<JobMetrics>) {
    let mut client = None;
    let mut ticker = tokio::time::interval(every);
    let started = std::time::SystemTime::now();
    loop {
        ticker.tick().await;
        if client.is_none() {
            client = sql::connect(&source, "the source").await.ok();
        }
        if let Some(source) = &client {
            let sent = source
                .execute(
                    "SELECT pg_logical_emit_message(false, $1::text, $2::text)",
                    &[&HEARTBEAT_PREFIX, &job],
                )
                .await;
            match sent {
                Ok(_) => metrics.heartbeat_sent.set(unix_seconds(std::time::SystemTime::now())),
                Err(error) => {
                    tracing::warn!(job = %job, "could not emit a heartbeat: {error}");
                    client = None;
                }
            }
        }
        let since =
            std::time::UNIX_EPOCH + Duration::from_secs_f64(metrics.heartbeat_received.get().max(0.0));
        let silent = std::time::SystemTime::now().duration_since(since.max(started)).unwrap_or_default();
        if silent > every * 3 {
            tracing::warn!(job = %job, "no heartbeat came back for {} s: the stream is stalled or far behind", silent.as_secs());
        }
    }
}
