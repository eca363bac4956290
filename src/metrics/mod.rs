//! Every metric walpipe exports (listed in docs/src/reference/metrics.md, generated from `families.rs`), in one place.
//!
//! ```text
//!  driver / sink / snapshot / runner ──> JobMetrics (pre-labelled handles) ──┐
//!  monitor (its own SQL connection)  ──> JobMetrics::record_slot(SlotSample) ─┼─> REGISTRY ──> GET /metrics
//!  scrape time                       ──> refresh(): idle time from the last data ┘
//! ```
//!
//! Invariants:
//! - Names use base units (`_seconds`, `_bytes`); counters end in `_total`;
//!   `job_name` labels everything job-related (never `job`, which
//!   Prometheus sets itself), `slot` labels slot metrics.
//! - States are state-sets: every value of a set is exported, exactly one
//!   is 1.
//! - Idle Time is computed at scrape time from the moment of the last data
//!   received, so it keeps rising while nothing arrives, whatever the rest
//!   of the job does; Emit Event Time is set only when the sink emits, so it
//!   stays frozen while nothing is emitted.
//! - Nothing here holds a secret: labels are job, slot, table and state names.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod copy_progress;
pub mod families;

pub use families::Family;
mod job;

pub use job::JobMetrics;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `pg_replication_slots.wal_status`, plus `unknown` when the slot is missing.
pub const WAL_STATUSES: [&str; 5] = ["reserved", "extended", "unreserved", "lost", "unknown"];
/// `pg_replication_slots.invalidation_reason` (PG17+; on older servers a
/// lost slot reads as `wal_removed`), plus `none`.
pub const INVALIDATION_REASONS: [&str; 5] =
    ["none", "wal_removed", "rows_removed", "wal_level_insufficient", "idle_timeout"];
/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    /// Every family, in the order registered (the metrics reference).
    families: Vec<&'static Family>,
    jobs: Mutex<HashMap<String, Arc<JobMetrics>>>,

    source_events: IntCounterVec,
    source_transactions: IntCounterVec,
    source_bytes: IntCounterVec,
    source_idle: GaugeVec,
    source_connected: IntGaugeVec,
    sink_events: IntCounterVec,
    sink_bytes: IntCounterVec,
    sink_queue: IntGaugeVec,
    sink_backpressure: prometheus::CounterVec,
    outbox_rejected: IntCounterVec,
    emit_lag: GaugeVec,
    commit_to_sink: HistogramVec,
    job_state: IntGaugeVec,
    job_phase: IntGaugeVec,
    job_errors: IntCounterVec,
    job_retries: IntCounterVec,
    snapshot_rows: IntCounterVec,
    snapshot_table_rows: IntGaugeVec,
    snapshot_table_rows_estimated: IntGaugeVec,
    table_needs_recopy: IntGaugeVec,
    sink_columns_missing: IntGaugeVec,
    heartbeat_received: GaugeVec,
    heartbeat_sent: GaugeVec,
    data_gaps: IntCounterVec,
    data_gap_start: GaugeVec,
    sink_checkpoint_lsn: IntGaugeVec,

    slot_retained: IntGaugeVec,
    slot_confirmed_lag: IntGaugeVec,
    slot_safe_wal_size: IntGaugeVec,
    slot_wal_status: IntGaugeVec,
    slot_active: IntGaugeVec,
    slot_invalidated: IntGaugeVec,
    slot_invalidation_reason: IntGaugeVec,
    slot_restart_lsn: IntGaugeVec,
    slot_confirmed_flush_lsn: IntGaugeVec,
    slot_catalog_xmin_age: IntGaugeVec,
    slot_inactive_since: GaugeVec,
    slot_reply_age: GaugeVec,
    slot_expires_in: GaugeVec,
    slot_stats: IntCounterVec,
    server_wal_lsn: IntGaugeVec,
    server_keep_size: IntGaugeVec,
    server_max_wal_size: IntGaugeVec,
    server_wal_directory: IntGaugeVec,
    server_wal_volume: IntGaugeVec,
    server_checkpoints: IntCounterVec,
    server_oldest_transaction: GaugeVec,
    server_oldest_retained: IntGaugeVec,
    monitor_up: IntGaugeVec,
    monitor_polls: IntCounterVec,
    monitor_poll_duration: HistogramVec,
    monitor_last_poll: GaugeVec,
}

static REGISTRY: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &REGISTRY
}

/// A vector of metrics that can be made from its [`families::Family`].
trait FromFamily: prometheus::core::Collector + Clone + Sized + 'static {
    fn from_family(family: &families::Family) -> prometheus::Result<Self>;
}

macro_rules! from_opts {
    ($($kind:ty),*) => {$(
        impl FromFamily for $kind {
            fn from_family(family: &families::Family) -> prometheus::Result<Self> {
                <$kind>::new(Opts::new(family.name, family.help), family.labels)
            }
        }
    )*};
}
from_opts!(IntCounterVec, IntGaugeVec, GaugeVec, prometheus::CounterVec);

impl FromFamily for HistogramVec {
    fn from_family(family: &families::Family) -> prometheus::Result<Self> {
        let mut opts = HistogramOpts::new(family.name, family.help);
        if let Some(buckets) = family.buckets {
            opts = opts.buckets(buckets.to_vec());
        }
        HistogramVec::new(opts, family.labels)
    }
}

/// Makes and registers one family. The names are static and distinct, so
/// creating or registering cannot fail; a failure is a bug caught by every
/// test that touches metrics.
#[allow(clippy::expect_used)]
fn register<V: FromFamily>(
    registry: &Registry,
    listed: &mut Vec<&'static Family>,
    family: &'static Family,
) -> V {
    listed.push(family);
    let metric = V::from_family(family).expect("a valid metric definition");
    registry.register(Box::new(metric.clone())).expect("a metric name registered once");
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let mut listed = Vec::new();
        let build: IntGaugeVec = register(r, &mut listed, &families::BUILD_INFO);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            source_events: register(r, &mut listed, &families::SOURCE_EVENTS),
            source_transactions: register(r, &mut listed, &families::SOURCE_TRANSACTIONS),
            source_bytes: register(r, &mut listed, &families::SOURCE_BYTES),
            source_idle: register(r, &mut listed, &families::SOURCE_IDLE),
            source_connected: register(r, &mut listed, &families::SOURCE_CONNECTED),
            sink_events: register(r, &mut listed, &families::SINK_EVENTS),
            sink_bytes: register(r, &mut listed, &families::SINK_BYTES),
            sink_queue: register(r, &mut listed, &families::SINK_QUEUE),
            sink_backpressure: register(r, &mut listed, &families::SINK_BACKPRESSURE),
            outbox_rejected: register(r, &mut listed, &families::OUTBOX_REJECTED),
            emit_lag: register(r, &mut listed, &families::EMIT_LAG),
            commit_to_sink: register(r, &mut listed, &families::COMMIT_TO_SINK),
            job_state: register(r, &mut listed, &families::JOB_STATE),
            job_phase: register(r, &mut listed, &families::JOB_PHASE),
            job_errors: register(r, &mut listed, &families::JOB_ERRORS),
            job_retries: register(r, &mut listed, &families::JOB_RETRIES),
            snapshot_rows: register(r, &mut listed, &families::SNAPSHOT_ROWS),
            table_needs_recopy: register(r, &mut listed, &families::TABLE_NEEDS_RECOPY),
            sink_columns_missing: register(r, &mut listed, &families::SINK_COLUMNS_MISSING),
            snapshot_table_rows: register(r, &mut listed, &families::SNAPSHOT_TABLE_ROWS),
            snapshot_table_rows_estimated: register(r, &mut listed, &families::SNAPSHOT_TABLE_ROWS_ESTIMATED),
            heartbeat_received: register(r, &mut listed, &families::HEARTBEAT_RECEIVED),
            heartbeat_sent: register(r, &mut listed, &families::HEARTBEAT_SENT),
            data_gaps: register(r, &mut listed, &families::DATA_GAPS),
            sink_checkpoint_lsn: register(r, &mut listed, &families::SINK_CHECKPOINT_LSN),
            data_gap_start: register(r, &mut listed, &families::DATA_GAP_START),
            slot_retained: register(r, &mut listed, &families::SLOT_RETAINED),
            slot_confirmed_lag: register(r, &mut listed, &families::SLOT_CONFIRMED_LAG),
            slot_safe_wal_size: register(r, &mut listed, &families::SLOT_SAFE_WAL_SIZE),
            slot_wal_status: register(r, &mut listed, &families::SLOT_WAL_STATUS),
            slot_active: register(r, &mut listed, &families::SLOT_ACTIVE),
            slot_invalidated: register(r, &mut listed, &families::SLOT_INVALIDATED),
            slot_invalidation_reason: register(r, &mut listed, &families::SLOT_INVALIDATION_REASON),
            slot_restart_lsn: register(r, &mut listed, &families::SLOT_RESTART_LSN),
            slot_confirmed_flush_lsn: register(r, &mut listed, &families::SLOT_CONFIRMED_FLUSH_LSN),
            slot_catalog_xmin_age: register(r, &mut listed, &families::SLOT_CATALOG_XMIN_AGE),
            slot_inactive_since: register(r, &mut listed, &families::SLOT_INACTIVE_SINCE),
            slot_reply_age: register(r, &mut listed, &families::SLOT_REPLY_AGE),
            slot_expires_in: register(r, &mut listed, &families::SLOT_EXPIRES_IN),
            slot_stats: register(r, &mut listed, &families::SLOT_STATS),
            server_wal_lsn: register(r, &mut listed, &families::SERVER_WAL_LSN),
            server_keep_size: register(r, &mut listed, &families::SERVER_KEEP_SIZE),
            server_max_wal_size: register(r, &mut listed, &families::SERVER_MAX_WAL_SIZE),
            server_wal_directory: register(r, &mut listed, &families::SERVER_WAL_DIRECTORY),
            server_wal_volume: register(r, &mut listed, &families::SERVER_WAL_VOLUME),
            server_checkpoints: register(r, &mut listed, &families::SERVER_CHECKPOINTS),
            server_oldest_transaction: register(r, &mut listed, &families::SERVER_OLDEST_TRANSACTION),
            server_oldest_retained: register(r, &mut listed, &families::SERVER_OLDEST_RETAINED),
            monitor_up: register(r, &mut listed, &families::MONITOR_UP),
            monitor_polls: register(r, &mut listed, &families::MONITOR_POLLS),
            monitor_poll_duration: register(r, &mut listed, &families::MONITOR_POLL_DURATION),
            monitor_last_poll: register(r, &mut listed, &families::MONITOR_LAST_POLL),
            jobs: Mutex::new(HashMap::new()),
            registry,
            families: listed,
        }
    }

    /// Every metric family walpipe exports.
    pub fn families(&self) -> &[&'static Family] {
        &self.families
    }

    /// The handles of one job, created (with every state-set and zero
    /// counters exported) on first use.
    pub fn job(&'static self, name: &str, slot: &str) -> Arc<JobMetrics> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.entry(name.to_string()).or_insert_with(|| Arc::new(JobMetrics::new(self, name, slot))).clone()
    }

    /// The jobs this process reports on.
    pub fn jobs(&self) -> Vec<Arc<JobMetrics>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// The text exposition format, with the time-derived gauges brought up to date.
    pub fn render(&self) -> String {
        for job in self.jobs() {
            job.refresh();
        }
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a metric family without metrics, which the registry never has.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("could not encode the metrics: {error}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unix time in seconds, as Prometheus timestamps are.
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn unix_ms_now() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0)
}

/// A state-set: the value `current` is 1, every other is 0.
fn set_state(vec: &IntGaugeVec, labels: &[&str], values: &[&str], current: Option<&str>) {
    for value in values {
        let mut all = labels.to_vec();
        all.push(value);
        vec.with_label_values(&all).set(i64::from(Some(*value) == current));
    }
}

/// What one poll of the source found (see `monitor`). Byte offsets and
/// sizes are bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotSample {
    pub wal_lsn: i64,
    pub max_slot_wal_keep_size: i64,
    pub max_wal_size: i64,
    /// `None` without the right to list the WAL directory.
    pub wal_directory: Option<i64>,
    pub checkpoints_timed: i64,
    pub checkpoints_requested: i64,
    pub oldest_transaction_seconds: f64,
    /// The oldest position the source keeps, where a slot does not say it
    /// (MySQL/MariaDB: the oldest binlog file's start).
    pub oldest_retained: Option<i64>,
    /// `None`: the slot does not exist.
    pub slot: Option<SlotState>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotState {
    pub wal_status: String,
    pub active: bool,
    pub retained_bytes: Option<i64>,
    pub confirmed_lag_bytes: Option<i64>,
    pub safe_wal_size: Option<i64>,
    pub restart_lsn: Option<i64>,
    pub confirmed_flush_lsn: Option<i64>,
    pub catalog_xmin_age: Option<i64>,
    pub invalidation_reason: Option<String>,
    pub inactive_since: Option<f64>,
    pub reply_age_seconds: Option<f64>,
    /// Seconds until the source may discard the job's position by age
    /// (MySQL/MariaDB: binlog expiry); `None`: nothing expires by age.
    pub expires_in_seconds: Option<f64>,
    /// pg_stat_replication_slots counters by column name.
    pub decoding_stats: Vec<(String, i64)>,
}
