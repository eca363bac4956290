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
//! | `walpipe_server_oldest_retained_position_bytes` | the oldest binlog file's start |
//! | `walpipe_slot_expires_in_seconds` | until the checkpoint's binlog file reaches `binlog_expire_logs_seconds` (once a newer file is written) |
//!
//! So `WalpipeSlotLost` fires when the binlog under the checkpoint was
//! purged, `WalpipeBinlogExpiresSoon` before it is, and the alerts about a
//! Postgres slot's cap stay quiet.
//!
//! When a file expires: the server purges a file, at a rotation, once its
//! last write is older than `binlog_expire_logs_seconds`. Its last write
//! is when the next file was created, which that file's first event
//! (its format description) records: read once per file, on a binlog
//! connection of the monitor's own, and kept.
//!
//! Invariant: a failed poll never stops it; it marks the monitor down,
//! drops the session and tries again at the next tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};

use super::catalog::{ReplicaRole, replica_id};
use super::position::BinlogPosition;
use super::target::MysqlTarget;
use crate::metrics::{JobMetrics, SlotSample, SlotState};
use crate::position::Position;

pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long reading a binlog file's first event may take.
const FIRST_EVENT_WITHIN: Duration = Duration::from_secs(5);

/// Polls until the task is aborted.
pub async fn run(target: MysqlTarget, metrics: Arc<JobMetrics>) {
    let mut session: Option<Conn> = None;
    let mut created = FileTimes::default();
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
        match poll(conn, &target, &metrics.name, &mut created, metrics.status.checkpoint()).await {
            Ok(sample) => metrics.record_slot(&sample, started.elapsed()),
            Err(error) => {
                tracing::warn!(job = %metrics.name, "the binlog monitor's poll failed: {error}");
                metrics.monitor_failed();
                session = None;
            }
        }
    }
}

/// When each binlog file was created (Unix seconds), by name.
#[derive(Default)]
struct FileTimes {
    created: HashMap<String, i64>,
    /// A failed read was logged (once).
    warned: bool,
}

impl FileTimes {
    /// The creation time of `file`: its first event's, read once.
    async fn of(&mut self, target: &MysqlTarget, job: &str, file: &str) -> Result<i64, mysql_async::Error> {
        if let Some(seconds) = self.created.get(file) {
            return Ok(*seconds);
        }
        let seconds = first_event_time(target, job, file).await?;
        self.created.retain(|name, _| name.as_str() >= file); // older files are gone or no longer asked for
        self.created.insert(file.to_string(), seconds);
        Ok(seconds)
    }
}

/// The time of the first event of `file` with one (the server's rotate
/// event that opens a dump carries none; the format description does).
async fn first_event_time(target: &MysqlTarget, job: &str, file: &str) -> Result<i64, mysql_async::Error> {
    let conn = Conn::new(target.opts.clone()).await?;
    let request = BinlogStreamRequest::new(replica_id(job, ReplicaRole::Monitor))
        .with_filename(file.as_bytes())
        .with_pos(4u64);
    let mut binlog = conn.get_binlog_stream(request).await?;
    let read = tokio::time::timeout(FIRST_EVENT_WITHIN, async {
        while let Some(event) = binlog.next().await {
            let timestamp = event?.header().timestamp();
            if timestamp != 0 {
                return Ok(Some(i64::from(timestamp)));
            }
        }
        Ok::<_, mysql_async::Error>(None)
    })
    .await;
    let _ = binlog.close().await;
    let found = read.unwrap_or(Ok(None))?;
    found.ok_or_else(|| mysql_async::Error::Other(format!("binlog file {file} has no timed event").into()))
}

async fn poll(
    conn: &mut Conn,
    target: &MysqlTarget,
    job: &str,
    created: &mut FileTimes,
    checkpoint: Option<Position>,
) -> Result<SlotSample, mysql_async::Error> {
    let files: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    let files: Vec<(String, u64)> =
        files.iter().filter_map(|row| Some((row.get::<String, _>(0)?, row.get::<u64, _>(1)?))).collect();
    let now: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let now = now
        .and_then(|row| BinlogPosition::in_file(&row.get::<String, _>(0)?, row.get::<u64, _>(1)?))
        .unwrap_or(BinlogPosition { file: 0, offset: 0 });
    let checkpoint = checkpoint.map(BinlogPosition::from);
    let expire = expire_seconds(conn).await?;
    // The file after the checkpoint's: its creation is the checkpoint file's last write.
    let next_created = match (expire, checkpoint) {
        (Some(_), Some(at)) => match next_file(&files, at) {
            // Without it only the countdown is missing: the poll's other figures stand.
            Some(next) => match created.of(target, job, next).await {
                Ok(seconds) => Some(seconds),
                Err(error) => {
                    if !std::mem::replace(&mut created.warned, true) {
                        tracing::warn!(
                            job,
                            "the binlog monitor could not read when {next} was created, so walpipe_slot_expires_in_seconds is not reported: {error}"
                        );
                    }
                    None
                }
            },
            None => None,
        },
        _ => None,
    };
    let unix_now =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let mut sample = sample(&files, now, checkpoint);
    if let (Some(slot), Some(expire)) = (sample.slot.as_mut(), expire) {
        slot.expires_in_seconds = expires_in(expire, slot.wal_status == "lost", next_created, unix_now);
    }
    Ok(sample)
}

/// `binlog_expire_logs_seconds` (or `expire_logs_days`, before it
/// existed); `None` when the server never expires binlog files.
async fn expire_seconds(conn: &mut Conn) -> Result<Option<i64>, mysql_async::Error> {
    let seconds: Option<i64> = match conn.query_first("SELECT @@global.binlog_expire_logs_seconds").await {
        Ok(seconds) => seconds,
        Err(mysql_async::Error::Server(_)) => {
            let days: Option<f64> = conn.query_first("SELECT @@global.expire_logs_days").await?;
            days.map(|days| (days * 86_400.0) as i64)
        }
        Err(error) => return Err(error),
    };
    Ok(seconds.filter(|seconds| *seconds > 0))
}

/// The name of the binlog file after the one `at` is in, if there is one.
fn next_file(files: &[(String, u64)], at: BinlogPosition) -> Option<&str> {
    files
        .iter()
        .find(|(name, _)| BinlogPosition::in_file(name, 0).is_some_and(|file| file.file > at.file))
        .map(|(name, _)| name.as_str())
}

/// Seconds until the checkpoint's file may be purged: its last write
/// (`next_created`) plus the expiry, from `now`; 0 once it is gone; `None`
/// while it is still written (no next file): it cannot expire before it
/// is closed, and a job that keeps up never leaves it. Pure.
fn expires_in(expire: i64, lost: bool, next_created: Option<i64>, now: i64) -> Option<f64> {
    match (lost, next_created) {
        (true, _) => Some(0.0),
        (false, Some(created)) => Some((created + expire - now) as f64),
        (false, None) => None,
    }
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
    let oldest = numbered.iter().map(|(file, _)| file.file).min();
    SlotSample {
        wal_lsn: Position::from(now).value() as i64,
        oldest_retained: oldest.map(|file| Position::from(BinlogPosition { file, offset: 0 }).value() as i64),
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

    #[test]
    fn a_file_expires_its_expiry_after_the_next_one_was_created() {
        let files = [("binlog.000002".to_string(), 1000), ("binlog.000003".to_string(), 500)];
        let at = |file| BinlogPosition { file, offset: 400 };
        assert_eq!(next_file(&files, at(2)), Some("binlog.000003"));
        assert_eq!(next_file(&files, at(3)), None, "still written");
        assert_eq!(expires_in(3600, false, Some(1_000), 1_600), Some(3000.0));
        let overdue = expires_in(3600, false, Some(1_000), 5_000);
        assert_eq!(overdue, Some(-400.0), "overdue: purged at the next rotation");
        assert_eq!(expires_in(3600, false, None, 5_000), None, "still written: it cannot expire yet");
        assert_eq!(expires_in(3600, true, Some(1_000), 1_600), Some(0.0));
        let sample = sample(&files, at(3), Some(at(2)));
        assert_eq!(
            sample.oldest_retained,
            Some(Position::from(BinlogPosition { file: 2, offset: 0 }).value() as i64)
        );
    }

    fn sample_of(files: &[(String, u64)], now: BinlogPosition, at: BinlogPosition) -> SlotState {
        sample(files, now, Some(at)).slot.expect("a checkpoint")
    }
}
