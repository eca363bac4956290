//! The slot monitor: a separate SQL connection to the source that polls the
//! job's slot and the server's WAL state every [`POLL_EVERY`].
//!
//! ```text
//!  source ──(own connection, prepared statements)──> SlotSample ──> JobMetrics::record_slot
//! ```
//!
//! Invariants:
//! - It shares nothing with the job's replication session or the sink, so it
//!   keeps reporting while the sink is stalled, the job is paused or the
//!   replication connection is down: those are exactly the moments an
//!   on-call engineer needs the slot's numbers.
//! - A failed poll never stops it: it marks `walpipe_monitor_up` 0, drops the
//!   connection and tries again at the next tick.
//! - One poll is two round trips of prepared statements (the WAL directory
//!   listing is skipped after the server refuses it once, for lack of
//!   pg_monitor).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Statement};

use crate::metrics::{JobMetrics, SlotSample, SlotState};
use crate::pg::ConnInfo;
use crate::pg::sql;

/// How often the source is polled.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Polls until the task is aborted. The connection introduces itself as
/// `<application_name>-monitor`, so a DBA can tell it from the job's sessions.
pub async fn run(mut source: ConnInfo, metrics: Arc<JobMetrics>) {
    source.application_name.push_str("-monitor");
    let mut session: Option<Session> = None;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if session.is_none() {
            match Session::open(&source).await {
                Ok(opened) => session = Some(opened),
                Err(error) => {
                    tracing::debug!(job = %metrics.name, "the slot monitor could not connect: {error}");
                    metrics.monitor_failed();
                    continue;
                }
            }
        }
        let Some(open) = session.as_mut() else { continue };
        let started = Instant::now();
        match open.poll(&metrics.slot).await {
            Ok(sample) => metrics.record_slot(&sample, started.elapsed()),
            Err(error) => {
                tracing::warn!(job = %metrics.name, "the slot monitor's poll failed: {error}");
                metrics.monitor_failed();
                session = None;
            }
        }
    }
}

struct Session {
    client: Client,
    state: Statement,
    /// `None` once the server refused `pg_ls_waldir()`.
    wal_directory: Option<Statement>,
}

/// The slot and server in one statement. `{slot_columns}` differ by
/// version: PostgreSQL 17 added `inactive_since` and `invalidation_reason`,
/// and moved the checkpoint counters to `pg_stat_checkpointer`.
fn state_query(version: i32) -> String {
    let (since, reason) = if version >= 170_000 {
        ("extract(epoch FROM s.inactive_since)::float8", "s.invalidation_reason::text")
    } else {
        ("NULL::float8", "NULL::text")
    };
    let checkpoints = if version >= 170_000 {
        "(SELECT num_timed FROM pg_stat_checkpointer), (SELECT num_requested FROM pg_stat_checkpointer)"
    } else {
        "(SELECT checkpoints_timed FROM pg_stat_bgwriter), (SELECT checkpoints_req FROM pg_stat_bgwriter)"
    };
    format!(
        "WITH now AS (SELECT pg_current_wal_lsn() AS lsn)
         SELECT (now.lsn - '0/0')::int8,
                pg_size_bytes(current_setting('max_slot_wal_keep_size'))::int8,
                pg_size_bytes(current_setting('max_wal_size'))::int8,
                {checkpoints},
                coalesce((SELECT extract(epoch FROM max(clock_timestamp() - xact_start))
                            FROM pg_stat_activity WHERE backend_xid IS NOT NULL), 0)::float8,
                s.slot_name IS NOT NULL,
                coalesce(s.wal_status, 'unknown'),
                coalesce(s.active, false),
                (now.lsn - s.restart_lsn)::int8,
                (now.lsn - s.confirmed_flush_lsn)::int8,
                s.safe_wal_size::int8,
                (s.restart_lsn - '0/0')::int8,
                (s.confirmed_flush_lsn - '0/0')::int8,
                age(s.catalog_xmin)::int8,
                {reason},
                {since},
                (SELECT extract(epoch FROM clock_timestamp() - r.reply_time)::float8
                   FROM pg_stat_replication r WHERE r.pid = s.active_pid),
                st.spill_txns, st.spill_count, st.spill_bytes, st.stream_txns, st.stream_count,
                st.stream_bytes, st.total_txns, st.total_bytes
           FROM now
           LEFT JOIN pg_replication_slots s ON s.slot_name = $1
           LEFT JOIN pg_stat_replication_slots st ON st.slot_name = s.slot_name"
    )
}

const WAL_DIRECTORY: &str = "SELECT coalesce(sum(size), 0)::int8 FROM pg_ls_waldir()";

const DECODING_STATS: [&str; 8] = [
    "spill_txns",
    "spill_count",
    "spill_bytes",
    "stream_txns",
    "stream_count",
    "stream_bytes",
    "total_txns",
    "total_bytes",
];

impl Session {
    async fn open(source: &ConnInfo) -> Result<Session, PollError> {
        let client = sql::connect(source, "the source").await.map_err(|e| PollError(e.to_string()))?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(PollError::sql)?
            .get(0);
        let state = client.prepare(&state_query(version)).await.map_err(PollError::sql)?;
        let wal_directory = client.prepare(WAL_DIRECTORY).await.ok();
        Ok(Session { client, state, wal_directory })
    }

    async fn poll(&mut self, slot: &str) -> Result<SlotSample, PollError> {
        let row = self.client.query_one(&self.state, &[&slot]).await.map_err(PollError::sql)?;
        let wal_directory = match &self.wal_directory {
            Some(statement) => match self.client.query_one(statement, &[]).await {
                Ok(row) => Some(Columns(&row).at::<i64>(0)?),
                Err(error)
                    if error.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    tracing::warn!(
                        "the slot monitor may not list the source's WAL directory: GRANT pg_monitor TO the source user to export walpipe_server_wal_directory_bytes"
                    );
                    self.wal_directory = None;
                    None
                }
                Err(error) => return Err(PollError::sql(error)),
            },
            None => None,
        };
        let get = Columns(&row);
        let slot = if get.at::<bool>(6)? {
            let mut decoding_stats = Vec::new();
            for (i, name) in DECODING_STATS.iter().enumerate() {
                if let Some(value) = get.at::<Option<i64>>(18 + i)? {
                    decoding_stats.push((name.to_string(), value));
                }
            }
            Some(SlotState {
                wal_status: get.at(7)?,
                active: get.at(8)?,
                retained_bytes: get.at(9)?,
                confirmed_lag_bytes: get.at(10)?,
                safe_wal_size: get.at(11)?,
                restart_lsn: get.at(12)?,
                confirmed_flush_lsn: get.at(13)?,
                catalog_xmin_age: get.at(14)?,
                invalidation_reason: get.at(15)?,
                inactive_since: get.at(16)?,
                reply_age_seconds: get.at(17)?,
                // max_slot_wal_keep_size bounds a slot by size, never by age.
                expires_in_seconds: None,
                decoding_stats,
            })
        } else {
            None
        };
        Ok(SlotSample {
            wal_lsn: get.at(0)?,
            max_slot_wal_keep_size: get.at(1)?,
            max_wal_size: get.at(2)?,
            wal_directory,
            checkpoints_timed: get.at(3)?,
            checkpoints_requested: get.at(4)?,
            oldest_transaction_seconds: get.at(5)?,
            oldest_retained: None,
            slot,
        })
    }
}

/// Typed columns of a row, as errors rather than panics.
struct Columns<'a>(&'a tokio_postgres::Row);

impl<'a> Columns<'a> {
    fn at<T: tokio_postgres::types::FromSql<'a>>(&self, index: usize) -> Result<T, PollError> {
        self.0.try_get(index).map_err(PollError::sql)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PollError(String);

impl PollError {
    fn sql(error: tokio_postgres::Error) -> PollError {
        PollError(sql::describe(&error))
    }
}
