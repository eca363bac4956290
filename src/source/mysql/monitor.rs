//! The binlog monitor: its own session polls the server's binlog files
//! every [`POLL_EVERY`] and reports them under the metric names the slot
//! monitor uses where the meaning is the same.
//!
//! | metric | a MySQL/MariaDB source |
//! |---|---|
//! | `walpipe_server_wal_lsn_bytes` | the binlog position being written |
//! | `walpipe_server_wal_directory_bytes` | every binlog file's size, summed |
//! | `walpipe_slot_retained_wal_bytes`, `walpipe_slot_confirmed_lag_bytes` | the binlog bytes from the job's checkpoint to the end |
//! | `walpipe_slot_confirmed_flush_lsn_bytes` | the job's checkpoint |
//! | `walpipe_slot_wal_status` | `reserved`, or `lost` once the checkpoint's file was purged |
//! | `walpipe_slot_restart_lsn_bytes` | the checkpoint too: nothing holds a binlog reader further back |
//! | `walpipe_server_max_slot_wal_keep_size_bytes` | 0: no size cap applies |
//!
//! So `WalpipeSlotLost` fires when the binlog under the checkpoint was
//! purged, and the alerts about a Postgres slot's cap stay quiet.
//!
//! Invariant: a failed poll never stops it; it marks the monitor down,
//! drops the session and tries again at the next tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::position::BinlogPosition;
use super::target::MysqlTarget;
use crate::metrics::{JobMetrics, SlotSample, SlotState};
use crate::position::Position;

pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Polls until the task is aborted.
pub async fn run(target: MysqlTarget, metrics: Arc<JobMetrics>) {
    let mut session: Option<Conn> = None;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if session.is_none() {
            match Conn::new(target.opts.clone()).await {
                Ok(conn) => session = Some(conn),
                Err(error) => {
                    tracing::debug!(job = %metrics.name, "the binlog monitor could not connect: {error}");
                    metrics.monitor_failed();
                    continue;
                }
            }
        }
        let Some(conn) = session.as_mut() else { continue };
        let started = Instant::now();
        match poll(conn, metrics.status.checkpoint()).await {
            Ok(sample) => metrics.record_slot(&sample, started.elapsed()),
            Err(error) => {
                tracing::warn!(job = %metrics.name, "the binlog monitor's poll failed: {error}");
                metrics.monitor_failed();
                session = None;
            }
        }
    }
}

async fn poll(conn: &mut Conn, checkpoint: Option<Position>) -> Result<SlotSample, mysql_async::Error> {
    let files: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    let files: Vec<(String, u64)> =
        files.iter().filter_map(|row| Some((row.get::<String, _>(0)?, row.get::<u64, _>(1)?))).collect();
    let now: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let now = now
        .and_then(|row| BinlogPosition::in_file(&row.get::<String, _>(0)?, row.get::<u64, _>(1)?))
        .unwrap_or(BinlogPosition { file: 0, offset: 0 });
    Ok(sample(&files, now, checkpoint.map(BinlogPosition::from)))
}

/// What the binlog files (name, size), the position being written and the
/// job's checkpoint say, as a sample. Pure.
fn sample(files: &[(String, u64)], now: BinlogPosition, checkpoint: Option<BinlogPosition>) -> SlotSample {
    let numbered: Vec<(BinlogPosition, u64)> =
        files.iter().filter_map(|(name, size)| Some((BinlogPosition::in_file(name, 0)?, *size))).collect();
    let slot = checkpoint.map(|at| {
        let kept = numbered.iter().any(|(file, _)| file.file == at.file);
        let behind: u64 = numbered
            .iter()
            .filter(|(file, _)| file.file >= at.file)
            .map(
                |(file, size)| {
                    if file.file == at.file { size.saturating_sub(u64::from(at.offset)) } else { *size }
                },
            )
            .sum();
        let behind = i64::try_from(behind).unwrap_or(i64::MAX);
        SlotState {
            wal_status: if kept { "reserved" } else { "lost" }.into(),
            active: kept,
            retained_bytes: kept.then_some(behind),
            confirmed_lag_bytes: kept.then_some(behind),
            confirmed_flush_lsn: Some(Position::from(at).value() as i64),
            // A binlog reader restarts where it confirmed: nothing pins it further back.
            restart_lsn: Some(Position::from(at).value() as i64),
            ..SlotState::default()
        }
    });
    SlotSample {
        wal_lsn: Position::from(now).value() as i64,
        // No cap applies (binlog_expire_logs_seconds is a time, not a size): 0
        // keeps the retention alerts, which want a positive cap, quiet.
        max_slot_wal_keep_size: 0,
        wal_directory: Some(files.iter().map(|(_, size)| *size as i64).sum()),
        slot,
        ..SlotSample::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_behind_a_checkpoint_count_to_the_end_and_a_purged_file_is_lost() {
        let files = [("binlog.000002".to_string(), 1000), ("binlog.000003".to_string(), 500)];
        let now = BinlogPosition { file: 3, offset: 500 };
        let at = BinlogPosition { file: 2, offset: 400 };
        let sample = sample(&files, now, Some(at));
        let slot = sample.slot.expect("a checkpoint");
        assert_eq!((slot.wal_status.as_str(), slot.retained_bytes), ("reserved", Some(600 + 500)));
        assert_eq!(sample.wal_directory, Some(1500));
        let purged = sample_of(&files, now, BinlogPosition { file: 1, offset: 4 });
        assert_eq!(purged.wal_status, "lost");
    }

    fn sample_of(files: &[(String, u64)], now: BinlogPosition, at: BinlogPosition) -> SlotState {
        sample(files, now, Some(at)).slot.expect("a checkpoint")
    }
}
