//! Every metric walpipe exports (SPEC section 7), in one place.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Job states, as `walpipe_job_state` labels them.
pub const STATES: [&str; 10] = [
    "created",
    "pending",
    "starting",
    "running",
    "pausing",
    "paused",
    "stopping",
    "stopped",
    "failed",
    "succeeded",
];
/// Phases inside `running`.
pub const PHASES: [&str; 2] = ["snapshot", "streaming"];
/// `pg_replication_slots.wal_status`, plus `unknown` when the slot is missing.
pub const WAL_STATUSES: [&str; 5] = ["reserved", "extended", "unreserved", "lost", "unknown"];
/// `pg_replication_slots.invalidation_reason` (PG17+; on older servers a
/// lost slot reads as `wal_removed`), plus `none`.
pub const INVALIDATION_REASONS: [&str; 5] =
    ["none", "wal_removed", "rows_removed", "wal_level_insufficient", "idle_timeout"];
/// The process's metric families.
pub struct Metrics {
    registry: Registry,
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
    slot_stats: IntCounterVec,
    server_wal_lsn: IntGaugeVec,
    server_keep_size: IntGaugeVec,
    server_max_wal_size: IntGaugeVec,
    server_wal_directory: IntGaugeVec,
    server_wal_volume: IntGaugeVec,
    server_checkpoints: IntCounterVec,
    server_oldest_transaction: GaugeVec,
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

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

/// Registers a new collector. The names are static and distinct, so
/// creating or registering cannot fail; a failure is a bug caught by every
/// test that touches metrics.
macro_rules! register {
    ($registry:expr, $kind:ty, $opts:expr, $labels:expr) => {{
        #[allow(clippy::expect_used)]
        let metric = <$kind>::new($opts, $labels).expect("a valid metric definition");
        #[allow(clippy::expect_used)]
        $registry.register(Box::new(metric.clone())).expect("a metric name registered once");
        metric
    }};
}

const JOB: &[&str] = &["job_name"];
const SLOT: &[&str] = &["job_name", "slot"];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let metrics = Metrics {
            source_events: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_source_events_total",
                    "Changes received from the source, by table and operation."
                ),
                &["job_name", "table", "op"]
            ),
            source_transactions: register!(
                r,
                IntCounterVec,
                opts("walpipe_source_transactions_total", "Transactions received from the source (commits)."),
                JOB
            ),
            source_bytes: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_source_bytes_total",
                    "Replication payload bytes received from the source (pgoutput messages)."
                ),
                JOB
            ),
            source_idle: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_source_idle_seconds",
                    "Idle Time: now minus the last data received from the source (walpipe's heartbeats and keepalives are not data)."
                ),
                JOB
            ),
            source_connected: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_source_connected",
                    "1 while the job holds its replication (or snapshot) session to the source."
                ),
                JOB
            ),
            sink_events: register!(
                r,
                IntCounterVec,
                opts("walpipe_sink_events_total", "Changes applied to the sink, by result (ok, error)."),
                &["job_name", "result"]
            ),
            sink_bytes: register!(
                r,
                IntCounterVec,
                opts("walpipe_sink_bytes_total", "Bytes written to the sink."),
                JOB
            ),
            sink_queue: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_sink_queue_chunks",
                    "Chunks of changes handed to the sink and not yet durable (at most 8: then the stream waits)."
                ),
                JOB
            ),
            sink_backpressure: register!(
                r,
                prometheus::CounterVec,
                opts(
                    "walpipe_sink_backpressure_seconds_total",
                    "Time the stream spent waiting for the sink to take more changes."
                ),
                JOB
            ),
            outbox_rejected: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_outbox_rejected_total",
                    "Outbox rows or messages left out because they lack an event field (logged with the change id)."
                ),
                JOB
            ),
            emit_lag: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_emit_event_time_lag_seconds",
                    "Emit Event Time: at the last sink emit, the emit time minus the source commit time of that data."
                ),
                JOB
            ),
            commit_to_sink: register!(
                r,
                HistogramVec,
                HistogramOpts::new(
                    "walpipe_commit_to_sink_seconds",
                    "Source commit to durable in the sink, per transaction."
                )
                .buckets(latency_buckets.clone()),
                JOB
            ),
            job_state: register!(
                r,
                IntGaugeVec,
                opts("walpipe_job_state", "The job's state (state-set: the current state is 1)."),
                &["job_name", "state"]
            ),
            job_phase: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_job_phase",
                    "The job's phase while running (state-set: the current phase is 1)."
                ),
                &["job_name", "phase"]
            ),
            job_errors: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_job_errors_total",
                    "Failed job attempts, by kind (slot_invalidated, timeout, other)."
                ),
                &["job_name", "kind"]
            ),
            job_retries: register!(
                r,
                IntCounterVec,
                opts("walpipe_job_retries_total", "Job attempts retried after a failure, by kind."),
                &["job_name", "kind"]
            ),
            snapshot_rows: register!(
                r,
                IntCounterVec,
                opts("walpipe_snapshot_rows_total", "Rows copied by snapshots."),
                &["job_name", "table"]
            ),
            table_needs_recopy: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_table_needs_recopy",
                    "1 when a schema change left the destination's existing rows unknown: the table must be copied again."
                ),
                &["job_name", "table"]
            ),
            sink_columns_missing: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_sink_columns_missing",
                    "Source columns the destination table lacks, left out of its loads (StarRocks; the log has the ALTER TABLE to run)."
                ),
                &["job_name", "table"]
            ),
            snapshot_table_rows: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_snapshot_table_rows",
                    "Rows copied so far by the current (or last) snapshot of the table."
                ),
                &["job_name", "table"]
            ),
            snapshot_table_rows_estimated: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_snapshot_table_rows_estimated",
                    "The table's estimated row count (pg_class.reltuples) when its snapshot started."
                ),
                &["job_name", "table"]
            ),
            heartbeat_received: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_heartbeat_last_received_timestamp_seconds",
                    "When walpipe's last heartbeat came back in the stream (Unix time; 0: never)."
                ),
                JOB
            ),
            heartbeat_sent: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_heartbeat_last_sent_timestamp_seconds",
                    "When walpipe last emitted a heartbeat into the source's WAL (Unix time; 0: never)."
                ),
                JOB
            ),
            data_gaps: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_data_gaps_total",
                    "Slot losses recovered by re-creating the slot (changes after the gap start were lost and re-copied)."
                ),
                SLOT
            ),
            sink_checkpoint_lsn: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_sink_checkpoint_lsn_bytes",
                    "The position last committed to the sink with its rows (as a byte offset): where the job resumes."
                ),
                JOB
            ),
            data_gap_start: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_data_gap_start_lsn_bytes",
                    "The applied position (as a byte offset) where the last data gap started."
                ),
                SLOT
            ),

            slot_retained: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_retained_wal_bytes",
                    "Current WAL LSN minus the slot's restart_lsn: WAL the slot holds on the source."
                ),
                SLOT
            ),
            slot_confirmed_lag: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_confirmed_lag_bytes",
                    "Current WAL LSN minus the slot's confirmed_flush_lsn."
                ),
                SLOT
            ),
            slot_safe_wal_size: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_safe_wal_size_bytes",
                    "pg_replication_slots.safe_wal_size: WAL that can still be written before the slot is in danger (negative: past the cap)."
                ),
                SLOT
            ),
            slot_wal_status: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_wal_status",
                    "pg_replication_slots.wal_status (state-set; unknown: the slot does not exist)."
                ),
                &["job_name", "slot", "status"]
            ),
            slot_active: register!(
                r,
                IntGaugeVec,
                opts("walpipe_slot_active", "1 while a walsender uses the slot."),
                SLOT
            ),
            slot_invalidated: register!(
                r,
                IntGaugeVec,
                opts("walpipe_slot_invalidated", "1 when the slot is lost or has an invalidation_reason."),
                SLOT
            ),
            slot_invalidation_reason: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_invalidation_reason",
                    "pg_replication_slots.invalidation_reason (state-set; none: valid)."
                ),
                &["job_name", "slot", "reason"]
            ),
            slot_restart_lsn: register!(
                r,
                IntGaugeVec,
                opts("walpipe_slot_restart_lsn_bytes", "The slot's restart_lsn as a byte offset."),
                SLOT
            ),
            slot_confirmed_flush_lsn: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_confirmed_flush_lsn_bytes",
                    "The slot's confirmed_flush_lsn as a byte offset."
                ),
                SLOT
            ),
            slot_catalog_xmin_age: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_slot_catalog_xmin_age_transactions",
                    "age(catalog_xmin): transactions since the oldest catalog row the slot keeps from vacuum."
                ),
                SLOT
            ),
            slot_inactive_since: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_slot_inactive_since_timestamp_seconds",
                    "pg_replication_slots.inactive_since (PostgreSQL 17+; 0 while active or on older servers)."
                ),
                SLOT
            ),
            slot_reply_age: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_slot_walsender_reply_age_seconds",
                    "Now minus pg_stat_replication.reply_time of the slot's walsender: how long since the consumer last answered."
                ),
                SLOT
            ),
            slot_stats: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_slot_decoding_total",
                    "pg_stat_replication_slots counters (stat: spill_txns, spill_count, spill_bytes, stream_txns, stream_count, stream_bytes, total_txns, total_bytes); counted from when walpipe started."
                ),
                &["job_name", "slot", "stat"]
            ),
            server_wal_lsn: register!(
                r,
                IntGaugeVec,
                opts("walpipe_server_wal_lsn_bytes", "The source's current WAL LSN as a byte offset."),
                JOB
            ),
            server_keep_size: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_server_max_slot_wal_keep_size_bytes",
                    "The source's max_slot_wal_keep_size (-1: unlimited)."
                ),
                JOB
            ),
            server_max_wal_size: register!(
                r,
                IntGaugeVec,
                opts("walpipe_server_max_wal_size_bytes", "The source's max_wal_size."),
                JOB
            ),
            server_wal_directory: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_server_wal_directory_bytes",
                    "Size of the source's WAL directory (sum of pg_ls_waldir(); needs pg_monitor)."
                ),
                JOB
            ),
            server_wal_volume: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_server_wal_volume_size_bytes",
                    "Size of the volume holding the source's pg_wal, as configured in WALPIPE_WAL_VOLUME_BYTES (0: not configured)."
                ),
                JOB
            ),
            server_checkpoints: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_server_checkpoints_total",
                    "Checkpoints on the source (kind: timed, requested); counted from when walpipe started."
                ),
                &["job_name", "kind"]
            ),
            server_oldest_transaction: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_server_oldest_transaction_age_seconds",
                    "Age of the source's oldest open transaction that holds a transaction id (those pin a slot's restart_lsn)."
                ),
                JOB
            ),
            monitor_up: register!(
                r,
                IntGaugeVec,
                opts(
                    "walpipe_monitor_up",
                    "1 when the last poll of the source's slot and server state succeeded."
                ),
                JOB
            ),
            monitor_polls: register!(
                r,
                IntCounterVec,
                opts(
                    "walpipe_monitor_polls_total",
                    "Polls of the source's slot and server state, by result (ok, error)."
                ),
                &["job_name", "result"]
            ),
            monitor_poll_duration: register!(
                r,
                HistogramVec,
                HistogramOpts::new(
                    "walpipe_monitor_poll_duration_seconds",
                    "Time one poll's queries take on the source."
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]),
                JOB
            ),
            monitor_last_poll: register!(
                r,
                GaugeVec,
                opts(
                    "walpipe_monitor_last_poll_timestamp_seconds",
                    "When the last successful poll of the source finished (Unix time)."
                ),
                JOB
            ),

            jobs: Mutex::new(HashMap::new()),
            registry,
        };
        let build = register!(
            metrics.registry,
            IntGaugeVec,
            opts("walpipe_build_info", "walpipe's version (always 1)."),
            &["version"]
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics
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

/// One job's metrics, with its labels bound.
pub struct JobMetrics {
    pub name: String,
    pub slot: String,
    family: &'static Metrics,
    /// Unix ms of the last data received (job start until then).
    last_data_unix_ms: AtomicU64,
    state: Mutex<(&'static str, Option<&'static str>)>,
    /// Woken on every state change, so that the owner's worker can record
    /// the observed state in the store at once.
    pub state_changed: tokio::sync::Notify,

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
    checkpoint_lsn: IntGauge,
    /// Last raw values of the server's counters, to count their increase.
    server_counters: Mutex<HashMap<String, i64>>,
    /// The monitor's last sample, for the job's status.
    last_sample: Mutex<Option<SlotSample>>,
    /// Per table: rows copied, estimated total, when its copy started.
    snapshot_tables: Mutex<HashMap<String, (u64, i64, std::time::Instant)>>,
    /// Tables that need a re-copy, with the reason.
    recopy: Mutex<std::collections::BTreeMap<String, String>>,
    /// Changes received, and their count at the last status (for events/s).
    received_events: AtomicU64,
    last_rate: Mutex<Option<(std::time::Instant, u64)>>,
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

impl JobMetrics {
    fn new(family: &'static Metrics, name: &str, slot: &str) -> JobMetrics {
        let job = &[name];
        let metrics = JobMetrics {
            name: name.to_string(),
            slot: slot.to_string(),
            family,
            last_data_unix_ms: AtomicU64::new(unix_ms_now()),
            state: Mutex::new(("created", None)),
            state_changed: tokio::sync::Notify::new(),
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
            checkpoint_lsn: family.sink_checkpoint_lsn.with_label_values(job),
            server_counters: Mutex::new(HashMap::new()),
            last_sample: Mutex::new(None),
            snapshot_tables: Mutex::new(HashMap::new()),
            recopy: Mutex::new(std::collections::BTreeMap::new()),
            received_events: AtomicU64::new(0),
            last_rate: Mutex::new(None),
        };
        for kind in crate::job::error::ErrorKind::ALL {
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
        metrics.set_state("created", None);
        metrics
    }

    /// Moves the job to `state` (and `phase` while running).
    pub fn set_state(&self, state: &'static str, phase: Option<&'static str>) {
        let previous = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            (state, phase),
        );
        set_state(&self.family.job_state, &[&self.name], &STATES, Some(state));
        set_state(&self.family.job_phase, &[&self.name], &PHASES, phase);
        if previous.0 != state {
            self.state_changed.notify_one();
        }
    }

    /// The current state and phase.
    pub fn state(&self) -> (&'static str, Option<&'static str>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
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

    pub fn failed(&self, kind: crate::job::error::ErrorKind) {
        let kind = kind.as_str();
        self.family.job_errors.with_label_values(&[&self.name, kind]).inc();
    }

    pub fn retried(&self, kind: crate::job::error::ErrorKind) {
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

    /// A schema change left `table`'s destination rows unknown (see `sink::postgres::evolve`).
    pub fn needs_recopy(&self, table: &str, reason: &str) {
        lock(&self.recopy).insert(table.to_string(), reason.to_string());
        self.family.table_needs_recopy.with_label_values(&[&self.name, table]).set(1);
    }

    /// `count` source columns of `table` had no destination column in the last load.
    pub fn columns_missing(&self, table: &str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.family.sink_columns_missing.with_label_values(&[&self.name, table]).set(count);
    }

    /// Every table was copied again.
    pub fn recopied(&self) {
        for table in std::mem::take(&mut *lock(&self.recopy)).into_keys() {
            self.family.table_needs_recopy.with_label_values(&[&self.name, &table]).set(0);
        }
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
    fn refresh(&self) {
        let last = self.last_data_unix_ms.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let idle = unix_ms_now().saturating_sub(last) as f64 / 1000.0;
        self.idle.set(idle);
    }

    /// The sink committed rows up to `lsn` with its checkpoint.
    pub fn checkpointed(&self, lsn: u64) {
        self.checkpoint_lsn.set(i64::try_from(lsn).unwrap_or(i64::MAX));
    }

    /// The last checkpoint committed to the sink by this process (0: none yet).
    pub fn checkpoint(&self) -> u64 {
        u64::try_from(self.checkpoint_lsn.get()).unwrap_or(0)
    }

    /// What a user wants to see of the job: records and bytes applied,
    /// events/s since the last call, unconfirmed and retained WAL, and
    /// snapshot progress per table (rows, percent, rows/s, ETA).
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
            "wal_status": slot.map(|s| s.wal_status.clone()),
            "snapshot": snapshot,
            "needs_recopy": lock(&self.recopy)
                .iter()
                .map(|(table, reason)| serde_json::json!({"table": table, "reason": reason}))
                .collect::<Vec<_>>(),
        })
    }

    /// Ready: running and connected, or intentionally not running.
    pub fn ready(&self) -> bool {
        match self.state().0 {
            "running" => self.source_connected.get() == 1,
            "paused" | "stopped" | "succeeded" => true,
            _ => false,
        }
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
    /// pg_stat_replication_slots counters by column name.
    pub decoding_stats: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_state_labels_are_the_lifecycle_states() {
        let states: Vec<&str> = crate::job::lifecycle::ALL_STATES.iter().map(|s| s.as_str()).collect();
        assert_eq!(states, super::STATES);
    }
}
