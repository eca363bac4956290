//! One job's metrics, with its labels bound: the handles the driver, the
//! sinks, the snapshot, the runner and the slot monitor update.
//!
//! Invariants: every state-set value and every counter of the job is
//! exported from the moment the job's handles exist (zero until used), so
//! dashboards and alerts can rely on the series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus::{Gauge, Histogram, IntCounter, IntGauge, IntGaugeVec};

use crate::lifecycle::{ALL_PHASES, ALL_STATES, Phase, State};
use crate::status::{Change, JobStatus};

use super::{
    INVALIDATION_REASONS, Metrics, SlotSample, WAL_STATUSES, lock, set_state, unix_ms_now, unix_seconds,
};

/// One job's metrics, with its labels bound.
pub struct JobMetrics {
    pub name: String,
    pub slot: String,
    family: &'static Metrics,
    /// Unix ms of the last data received (job start until then).
    last_data_unix_ms: AtomicU64,
    /// The job's status, which these metrics observe (see `crate::status`).
    pub status: Arc<JobStatus>,

    pub source_transactions: IntCounter,
    pub source_bytes: IntCounter,
    pub source_connected: IntGauge,
    pub sink_events_ok: IntCounter,
    pub sink_events_error: IntCounter,
    pub sink_bytes: IntCounter,
    pub sink_queue: IntGauge,
    pub sink_backpressure: prometheus::Counter,
    pub outbox_rejected: IntCounter,
    pub emit_lag: Gauge,
    pub commit_to_sink: Histogram,
    pub heartbeat_received: Gauge,
    pub heartbeat_sent: Gauge,
    pub wal_volume: IntGauge,
    idle: Gauge,
    /// Last raw values of the server's counters, to count their increase.
    server_counters: Mutex<HashMap<String, i64>>,
    /// The monitor's last sample, for the job's status.
    last_sample: Mutex<Option<SlotSample>>,
    /// Per table: rows copied, estimated total, when its copy started.
    snapshot_tables: Mutex<HashMap<String, (u64, i64, std::time::Instant)>>,
    /// Changes received, and their count at the last status (for events/s).
    received_events: AtomicU64,
    last_rate: Mutex<Option<(std::time::Instant, u64)>>,
}

impl JobMetrics {
    pub(super) fn new(family: &'static Metrics, name: &str, slot: &str) -> JobMetrics {
        let job = &[name];
        let metrics = JobMetrics {
            name: name.to_string(),
            slot: slot.to_string(),
            family,
            last_data_unix_ms: AtomicU64::new(unix_ms_now()),
            status: Arc::new(JobStatus::default()),
            source_transactions: family.source_transactions.with_label_values(job),
            source_bytes: family.source_bytes.with_label_values(job),
            source_connected: family.source_connected.with_label_values(job),
            sink_events_ok: family.sink_events.with_label_values(&[name, "ok"]),
            sink_events_error: family.sink_events.with_label_values(&[name, "error"]),
            sink_bytes: family.sink_bytes.with_label_values(job),
            sink_queue: family.sink_queue.with_label_values(job),
            sink_backpressure: family.sink_backpressure.with_label_values(job),
            outbox_rejected: family.outbox_rejected.with_label_values(job),
            emit_lag: family.emit_lag.with_label_values(job),
            commit_to_sink: family.commit_to_sink.with_label_values(job),
            heartbeat_received: family.heartbeat_received.with_label_values(job),
            heartbeat_sent: family.heartbeat_sent.with_label_values(job),
            wal_volume: family.server_wal_volume.with_label_values(job),
            idle: family.source_idle.with_label_values(job),
            server_counters: Mutex::new(HashMap::new()),
            last_sample: Mutex::new(None),
            snapshot_tables: Mutex::new(HashMap::new()),
            received_events: AtomicU64::new(0),
            last_rate: Mutex::new(None),
        };
        for kind in crate::lifecycle::ErrorKind::ALL {
            family.job_errors.with_label_values(&[name, kind.as_str()]);
            family.job_retries.with_label_values(&[name, kind.as_str()]);
        }
        family.monitor_up.with_label_values(job);
        for result in ["ok", "error"] {
            family.monitor_polls.with_label_values(&[name, result]);
        }
        family.data_gaps.with_label_values(&[name, slot]);
        // 0 until a gap: dashboards and alerts can rely on the series.
        family.data_gap_start.with_label_values(&[name, slot]).set(0.0);
        metrics.status.observe(observer(family, name));
        metrics
    }

    /// Data arrived from the source: Idle Time restarts.
    pub fn data_received(&self) {
        self.last_data_unix_ms.store(unix_ms_now(), Ordering::Relaxed);
    }

    pub fn source_events(&self, table: &str, op: &str, count: u64) {
        self.received_events.fetch_add(count, Ordering::Relaxed);
        self.family.source_events.with_label_values(&[&self.name, table, op]).inc_by(count);
    }

    /// Transactions made durable in the sink: their commit-to-sink times
    /// and the Emit Event Time of the newest.
    pub fn emitted(&self, commit_times: &[SystemTime], events: u64, bytes: u64) {
        let now = SystemTime::now();
        for commit in commit_times {
            self.commit_to_sink.observe(now.duration_since(*commit).unwrap_or_default().as_secs_f64());
        }
        if let Some(newest) = commit_times.iter().max() {
            self.emit_lag.set(now.duration_since(*newest).unwrap_or_default().as_secs_f64());
        }
        self.sink_events_ok.inc_by(events);
        self.sink_bytes.inc_by(bytes);
    }

    pub fn failed(&self, kind: crate::lifecycle::ErrorKind) {
        let kind = kind.as_str();
        self.family.job_errors.with_label_values(&[&self.name, kind]).inc();
    }

    pub fn retried(&self, kind: crate::lifecycle::ErrorKind) {
        let kind = kind.as_str();
        self.family.job_retries.with_label_values(&[&self.name, kind]).inc();
    }

    /// A snapshot of `table` starts, with an estimated `total` of rows.
    pub fn snapshot_started(&self, table: &str, total: i64) {
        lock(&self.snapshot_tables).insert(table.to_string(), (0, total, std::time::Instant::now()));
        self.family.snapshot_table_rows.with_label_values(&[&self.name, table]).set(0);
        self.family.snapshot_table_rows_estimated.with_label_values(&[&self.name, table]).set(total);
    }

    pub fn snapshot_rows(&self, table: &str, rows: u64) {
        if let Some(progress) = lock(&self.snapshot_tables).get_mut(table) {
            progress.0 += rows;
        }
        self.family.snapshot_rows.with_label_values(&[&self.name, table]).inc_by(rows);
        self.family
            .snapshot_table_rows
            .with_label_values(&[&self.name, table])
            .add(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// `count` source columns of `table` had no destination column in the last load.
    pub fn columns_missing(&self, table: &str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.family.sink_columns_missing.with_label_values(&[&self.name, table]).set(count);
    }

    /// The slot was lost and re-created; changes after `from` were lost.
    pub fn data_gap(&self, from: Option<u64>) {
        let labels = &[self.name.as_str(), self.slot.as_str()];
        self.family.data_gaps.with_label_values(labels).inc();
        #[allow(clippy::cast_precision_loss)] // LSNs below 2^53 bytes are exact
        self.family.data_gap_start.with_label_values(labels).set(from.unwrap_or(0) as f64);
    }

    pub fn monitor_failed(&self) {
        self.family.monitor_up.with_label_values(&[&self.name]).set(0);
        self.family.monitor_polls.with_label_values(&[&self.name, "error"]).inc();
    }

    /// One poll's findings.
    pub fn record_slot(&self, sample: &SlotSample, took: Duration) {
        *lock(&self.last_sample) = Some(sample.clone());
        let f = self.family;
        let job = &[self.name.as_str()];
        let slot = &[self.name.as_str(), self.slot.as_str()];
        f.monitor_up.with_label_values(job).set(1);
        f.monitor_polls.with_label_values(&[&self.name, "ok"]).inc();
        f.monitor_poll_duration.with_label_values(job).observe(took.as_secs_f64());
        f.monitor_last_poll.with_label_values(job).set(unix_seconds(SystemTime::now()));
        f.server_wal_lsn.with_label_values(job).set(sample.wal_lsn);
        f.server_keep_size.with_label_values(job).set(sample.max_slot_wal_keep_size);
        f.server_max_wal_size.with_label_values(job).set(sample.max_wal_size);
        if let Some(bytes) = sample.wal_directory {
            f.server_wal_directory.with_label_values(job).set(bytes);
        }
        f.server_oldest_transaction.with_label_values(job).set(sample.oldest_transaction_seconds);
        if let Some(position) = sample.oldest_retained {
            f.server_oldest_retained.with_label_values(job).set(position);
        }
        for (kind, value) in
            [("timed", sample.checkpoints_timed), ("requested", sample.checkpoints_requested)]
        {
            let increase = self.counter_increase(&format!("checkpoints_{kind}"), value);
            f.server_checkpoints.with_label_values(&[&self.name, kind]).inc_by(increase);
        }
        let status = sample.slot.as_ref().map_or("unknown", |s| s.wal_status.as_str());
        set_state(&f.slot_wal_status, slot, &WAL_STATUSES, Some(status).filter(|s| WAL_STATUSES.contains(s)));
        let Some(s) = &sample.slot else {
            for gauge in [&f.slot_active, &f.slot_invalidated] {
                gauge.with_label_values(slot).set(0);
            }
            set_state(&f.slot_invalidation_reason, slot, &INVALIDATION_REASONS, None);
            return;
        };
        let set = |vec: &IntGaugeVec, value: Option<i64>| match value {
            Some(value) => vec.with_label_values(slot).set(value),
            // A lost slot has no restart_lsn: keep the series, at 0.
            None => vec.with_label_values(slot).set(0),
        };
        set(&f.slot_retained, s.retained_bytes);
        set(&f.slot_confirmed_lag, s.confirmed_lag_bytes);
        set(&f.slot_safe_wal_size, s.safe_wal_size);
        set(&f.slot_restart_lsn, s.restart_lsn);
        set(&f.slot_confirmed_flush_lsn, s.confirmed_flush_lsn);
        set(&f.slot_catalog_xmin_age, s.catalog_xmin_age);
        f.slot_active.with_label_values(slot).set(i64::from(s.active));
        let reason = s.invalidation_reason.as_deref().unwrap_or(if s.wal_status == "lost" {
            "wal_removed"
        } else {
            "none"
        });
        f.slot_invalidated.with_label_values(slot).set(i64::from(reason != "none"));
        set_state(&f.slot_invalidation_reason, slot, &INVALIDATION_REASONS, Some(reason));
        f.slot_inactive_since.with_label_values(slot).set(s.inactive_since.unwrap_or(0.0));
        f.slot_reply_age.with_label_values(slot).set(s.reply_age_seconds.unwrap_or(0.0));
        match s.expires_in_seconds {
            Some(seconds) => f.slot_expires_in.with_label_values(slot).set(seconds),
            // Nothing can expire now: the countdown goes, not stays at its last value.
            None => {
                let _ = f.slot_expires_in.remove_label_values(slot);
            }
        }
        for (stat, value) in &s.decoding_stats {
            let increase = self.counter_increase(stat, *value);
            f.slot_stats.with_label_values(&[&self.name, &self.slot, stat]).inc_by(increase);
        }
    }

    /// How much a server-side counter grew since the last poll (all of it
    /// on the first; after a reset on the server, its new value).
    fn counter_increase(&self, key: &str, value: i64) -> u64 {
        let mut last = self.server_counters.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = last.insert(key.to_string(), value);
        let grown = match previous {
            Some(previous) if value >= previous => value - previous,
            _ => value,
        };
        u64::try_from(grown).unwrap_or(0)
    }

    /// Brings the time-derived gauges up to now.
    pub(super) fn refresh(&self) {
        self.idle.set(self.idle_seconds());
    }

    /// Idle Time: seconds since the last data from the source.
    fn idle_seconds(&self) -> f64 {
        let last = self.last_data_unix_ms.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let idle = unix_ms_now().saturating_sub(last) as f64 / 1000.0;
        idle
    }

    /// What a user wants to see of the job: records and bytes applied,
    /// events/s since the last call, unconfirmed and retained WAL with the
    /// server's cap and the slot's safe size, Idle Time and Emit Event Time,
    /// and snapshot progress per table (rows, percent, rows/s, ETA).
    pub fn summary(&self) -> serde_json::Value {
        let received = self.received_events.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let events_per_second = match lock(&self.last_rate).replace((now, received)) {
            Some((then, before)) if now > then => {
                received.saturating_sub(before) as f64 / now.duration_since(then).as_secs_f64()
            }
            _ => 0.0,
        };
        let sample = lock(&self.last_sample).clone();
        let slot = sample.as_ref().and_then(|s| s.slot.as_ref());
        let snapshot: Vec<serde_json::Value> = lock(&self.snapshot_tables)
            .iter()
            .map(|(table, (rows, total, started))| {
                let total = (*total).max(i64::try_from(*rows).unwrap_or(i64::MAX)).max(0) as f64;
                let rows = *rows as f64;
                let rate = rows / started.elapsed().as_secs_f64().max(0.001);
                serde_json::json!({
                    "table": table,
                    "rows": rows as u64,
                    "total": total as u64,
                    "percent": if total > 0.0 { (rows * 100.0 / total).min(100.0) } else { 100.0 },
                    "rows_per_second": rate.round(),
                    "eta_seconds": if rate > 0.0 { ((total - rows).max(0.0) / rate).round() } else { 0.0 },
                })
            })
            .collect();
        serde_json::json!({
            "records": self.sink_events_ok.get(),
            "bytes": self.sink_bytes.get(),
            "events_per_second": (events_per_second * 10.0).round() / 10.0,
            "lag_bytes": slot.and_then(|s| s.confirmed_lag_bytes),
            "retained_wal_bytes": slot.and_then(|s| s.retained_bytes),
            "safe_wal_size_bytes": slot.and_then(|s| s.safe_wal_size),
            "max_slot_wal_keep_size_bytes": sample.as_ref().map(|s| s.max_slot_wal_keep_size),
            "wal_status": slot.map(|s| s.wal_status.clone()),
            "idle_seconds": (self.idle_seconds() * 10.0).round() / 10.0,
            "emit_lag_seconds": (self.emit_lag.get() * 1000.0).round() / 1000.0,
            "snapshot": snapshot,
            "needs_recopy": self.status.recopy()
                .iter()
                .map(|(table, reason)| serde_json::json!({"table": table, "reason": reason}))
                .collect::<Vec<_>>(),
        })
    }

    /// Ready: running and connected, or intentionally not running.
    pub fn ready(&self) -> bool {
        match self.status.state().0 {
            State::Running => self.source_connected.get() == 1,
            State::Paused | State::Stopped | State::Succeeded => true,
            State::Created
            | State::Pending
            | State::Starting
            | State::Pausing
            | State::Stopping
            | State::Failed => false,
        }
    }
}

/// How the metrics follow a job's status: its state-set gauges, its tables'
/// re-copy gauges and its checkpoint gauge.
fn observer(family: &'static Metrics, name: &str) -> impl Fn(Change<'_>) + Send + Sync + 'static {
    let name = name.to_string();
    move |change| match change {
        Change::State(state, phase) => {
            let states = ALL_STATES.map(State::as_str);
            set_state(&family.job_state, &[&name], &states, Some(state.as_str()));
            let phases = ALL_PHASES.map(Phase::as_str);
            set_state(&family.job_phase, &[&name], &phases, phase.map(Phase::as_str));
        }
        Change::NeedsRecopy { table } => family.table_needs_recopy.with_label_values(&[&name, table]).set(1),
        Change::Recopied { table } => family.table_needs_recopy.with_label_values(&[&name, table]).set(0),
        Change::Checkpoint(position) => family
            .sink_checkpoint_lsn
            .with_label_values(&[&name])
            .set(i64::try_from(position.value()).unwrap_or(i64::MAX)),
    }
}
