//! The description of every metric family walpipe exports: name, help,
//! labels (and buckets for histograms), as a table.
//!
//! Invariants: names use base units (`_seconds`, `_bytes`); counters end in
//! `_total`; `job_name` labels everything job-related (never `job`, which
//! Prometheus sets itself), `slot` labels slot metrics.

/// One metric family.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// Histograms only.
    pub buckets: Option<&'static [f64]>,
}

const JOB: &[&str] = &["job_name"];
const SLOT: &[&str] = &["job_name", "slot"];
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

pub const SOURCE_EVENTS: Family = Family {
    name: "walpipe_source_events_total",
    help: "Changes received from the source, by table and operation.",
    labels: &["job_name", "table", "op"],
    buckets: None,
};

pub const SOURCE_TRANSACTIONS: Family = Family {
    name: "walpipe_source_transactions_total",
    help: "Transactions received from the source (commits).",
    labels: JOB,
    buckets: None,
};

pub const SOURCE_BYTES: Family = Family {
    name: "walpipe_source_bytes_total",
    help: "Replication payload bytes received from the source (pgoutput messages).",
    labels: JOB,
    buckets: None,
};

pub const SOURCE_IDLE: Family = Family {
    name: "walpipe_source_idle_seconds",
    help: "Idle Time: now minus the last data received from the source (walpipe's heartbeats and keepalives are not data).",
    labels: JOB,
    buckets: None,
};

pub const SOURCE_CONNECTED: Family = Family {
    name: "walpipe_source_connected",
    help: "1 while the job holds its replication (or snapshot) session to the source.",
    labels: JOB,
    buckets: None,
};

pub const SINK_EVENTS: Family = Family {
    name: "walpipe_sink_events_total",
    help: "Changes applied to the sink, by result (ok, error).",
    labels: &["job_name", "result"],
    buckets: None,
};

pub const SINK_BYTES: Family = Family {
    name: "walpipe_sink_bytes_total",
    help: "Bytes written to the sink.",
    labels: JOB,
    buckets: None,
};

pub const SINK_QUEUE: Family = Family {
    name: "walpipe_sink_queue_chunks",
    help: "Chunks of changes handed to the sink and not yet durable (at most 8: then the stream waits).",
    labels: JOB,
    buckets: None,
};

pub const SINK_BACKPRESSURE: Family = Family {
    name: "walpipe_sink_backpressure_seconds_total",
    help: "Time the stream spent waiting for the sink to take more changes.",
    labels: JOB,
    buckets: None,
};

pub const OUTBOX_REJECTED: Family = Family {
    name: "walpipe_outbox_rejected_total",
    help: "Outbox rows or messages left out because they lack an event field (logged with the change id).",
    labels: JOB,
    buckets: None,
};

pub const EMIT_LAG: Family = Family {
    name: "walpipe_emit_event_time_lag_seconds",
    help: "Emit Event Time: at the last sink emit, the emit time minus the source commit time of that data.",
    labels: JOB,
    buckets: None,
};

pub const COMMIT_TO_SINK: Family = Family {
    name: "walpipe_commit_to_sink_seconds",
    help: "Source commit to durable in the sink, per transaction.",
    labels: JOB,
    buckets: Some(LATENCY_BUCKETS),
};

pub const JOB_STATE: Family = Family {
    name: "walpipe_job_state",
    help: "The job's state (state-set: the current state is 1).",
    labels: &["job_name", "state"],
    buckets: None,
};

pub const JOB_PHASE: Family = Family {
    name: "walpipe_job_phase",
    help: "The job's phase while running (state-set: the current phase is 1).",
    labels: &["job_name", "phase"],
    buckets: None,
};

pub const JOB_ERRORS: Family = Family {
    name: "walpipe_job_errors_total",
    help: "Failed job attempts, by kind (slot_invalidated, timeout, other).",
    labels: &["job_name", "kind"],
    buckets: None,
};

pub const JOB_RETRIES: Family = Family {
    name: "walpipe_job_retries_total",
    help: "Job attempts retried after a failure, by kind.",
    labels: &["job_name", "kind"],
    buckets: None,
};

pub const SNAPSHOT_ROWS: Family = Family {
    name: "walpipe_snapshot_rows_total",
    help: "Rows copied by snapshots.",
    labels: &["job_name", "table"],
    buckets: None,
};

pub const TABLE_NEEDS_RECOPY: Family = Family {
    name: "walpipe_table_needs_recopy",
    help: "1 when a schema change left the destination's existing rows unknown: the table must be copied again.",
    labels: &["job_name", "table"],
    buckets: None,
};

pub const SINK_COLUMNS_MISSING: Family = Family {
    name: "walpipe_sink_columns_missing",
    help: "Source columns the destination table lacks, left out of its loads (StarRocks; the log has the ALTER TABLE to run).",
    labels: &["job_name", "table"],
    buckets: None,
};

pub const SNAPSHOT_TABLE_ROWS: Family = Family {
    name: "walpipe_snapshot_table_rows",
    help: "Rows copied so far by the current (or last) snapshot of the table.",
    labels: &["job_name", "table"],
    buckets: None,
};

pub const SNAPSHOT_TABLE_ROWS_ESTIMATED: Family = Family {
    name: "walpipe_snapshot_table_rows_estimated",
    help: "The table's estimated row count (pg_class.reltuples) when its snapshot started.",
    labels: &["job_name", "table"],
    buckets: None,
};

pub const HEARTBEAT_RECEIVED: Family = Family {
    name: "walpipe_heartbeat_last_received_timestamp_seconds",
    help: "When walpipe's last heartbeat came back in the stream (Unix time; 0: never).",
    labels: JOB,
    buckets: None,
};

pub const HEARTBEAT_SENT: Family = Family {
    name: "walpipe_heartbeat_last_sent_timestamp_seconds",
    help: "When walpipe last emitted a heartbeat into the source's WAL (Unix time; 0: never).",
    labels: JOB,
    buckets: None,
};

pub const DATA_GAPS: Family = Family {
    name: "walpipe_data_gaps_total",
    help: "Slot losses recovered by re-creating the slot (changes after the gap start were lost and re-copied).",
    labels: SLOT,
    buckets: None,
};

pub const SINK_CHECKPOINT_LSN: Family = Family {
    name: "walpipe_sink_checkpoint_lsn_bytes",
    help: "The position last committed to the sink with its rows (as a byte offset): where the job resumes.",
    labels: JOB,
    buckets: None,
};

pub const DATA_GAP_START: Family = Family {
    name: "walpipe_data_gap_start_lsn_bytes",
    help: "The applied position (as a byte offset) where the last data gap started.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_RETAINED: Family = Family {
    name: "walpipe_slot_retained_wal_bytes",
    help: "Current WAL LSN minus the slot's restart_lsn: WAL the slot holds on the source.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_CONFIRMED_LAG: Family = Family {
    name: "walpipe_slot_confirmed_lag_bytes",
    help: "Current WAL LSN minus the slot's confirmed_flush_lsn.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_SAFE_WAL_SIZE: Family = Family {
    name: "walpipe_slot_safe_wal_size_bytes",
    help: "pg_replication_slots.safe_wal_size: WAL that can still be written before the slot is in danger (negative: past the cap).",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_WAL_STATUS: Family = Family {
    name: "walpipe_slot_wal_status",
    help: "pg_replication_slots.wal_status (state-set; unknown: the slot does not exist).",
    labels: &["job_name", "slot", "status"],
    buckets: None,
};

pub const SLOT_ACTIVE: Family = Family {
    name: "walpipe_slot_active",
    help: "1 while a walsender uses the slot.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_INVALIDATED: Family = Family {
    name: "walpipe_slot_invalidated",
    help: "1 when the slot is lost or has an invalidation_reason.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_INVALIDATION_REASON: Family = Family {
    name: "walpipe_slot_invalidation_reason",
    help: "pg_replication_slots.invalidation_reason (state-set; none: valid).",
    labels: &["job_name", "slot", "reason"],
    buckets: None,
};

pub const SLOT_RESTART_LSN: Family = Family {
    name: "walpipe_slot_restart_lsn_bytes",
    help: "The slot's restart_lsn as a byte offset.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_CONFIRMED_FLUSH_LSN: Family = Family {
    name: "walpipe_slot_confirmed_flush_lsn_bytes",
    help: "The slot's confirmed_flush_lsn as a byte offset.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_CATALOG_XMIN_AGE: Family = Family {
    name: "walpipe_slot_catalog_xmin_age_transactions",
    help: "age(catalog_xmin): transactions since the oldest catalog row the slot keeps from vacuum.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_INACTIVE_SINCE: Family = Family {
    name: "walpipe_slot_inactive_since_timestamp_seconds",
    help: "pg_replication_slots.inactive_since (PostgreSQL 17+; 0 while active or on older servers).",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_REPLY_AGE: Family = Family {
    name: "walpipe_slot_walsender_reply_age_seconds",
    help: "Now minus pg_stat_replication.reply_time of the slot's walsender: how long since the consumer last answered.",
    labels: SLOT,
    buckets: None,
};

pub const SLOT_STATS: Family = Family {
    name: "walpipe_slot_decoding_total",
    help: "pg_stat_replication_slots counters (stat: spill_txns, spill_count, spill_bytes, stream_txns, stream_count, stream_bytes, total_txns, total_bytes); counted from when walpipe started.",
    labels: &["job_name", "slot", "stat"],
    buckets: None,
};

pub const SERVER_WAL_LSN: Family = Family {
    name: "walpipe_server_wal_lsn_bytes",
    help: "The source's current WAL LSN as a byte offset.",
    labels: JOB,
    buckets: None,
};

pub const SERVER_KEEP_SIZE: Family = Family {
    name: "walpipe_server_max_slot_wal_keep_size_bytes",
    help: "The source's max_slot_wal_keep_size (-1: unlimited).",
    labels: JOB,
    buckets: None,
};

pub const SERVER_MAX_WAL_SIZE: Family = Family {
    name: "walpipe_server_max_wal_size_bytes",
    help: "The source's max_wal_size.",
    labels: JOB,
    buckets: None,
};

pub const SERVER_WAL_DIRECTORY: Family = Family {
    name: "walpipe_server_wal_directory_bytes",
    help: "Size of the source's WAL directory (sum of pg_ls_waldir(); needs pg_monitor).",
    labels: JOB,
    buckets: None,
};

pub const SERVER_WAL_VOLUME: Family = Family {
    name: "walpipe_server_wal_volume_size_bytes",
    help: "Size of the volume holding the source's pg_wal, as configured in WALPIPE_WAL_VOLUME_BYTES (0: not configured).",
    labels: JOB,
    buckets: None,
};

pub const SERVER_CHECKPOINTS: Family = Family {
    name: "walpipe_server_checkpoints_total",
    help: "Checkpoints on the source (kind: timed, requested); counted from when walpipe started.",
    labels: &["job_name", "kind"],
    buckets: None,
};

pub const SERVER_OLDEST_RETAINED: Family = Family {
    name: "walpipe_server_oldest_retained_position_bytes",
    help: "The oldest position the source still keeps, as a byte position (MySQL/MariaDB: the start of the oldest binlog file); absent for PostgreSQL, whose slot's restart_lsn says it.",
    labels: JOB,
    buckets: None,
};

pub const SLOT_EXPIRES_IN: Family = Family {
    name: "walpipe_slot_expires_in_seconds",
    help: "Seconds until the source may discard the position the job resumes from (MySQL/MariaDB: the binlog file holding its checkpoint reaches binlog_expire_logs_seconds, counted from its last write); absent while nothing can expire by age (no expiry set, or the checkpoint's file is still the one written).",
    labels: SLOT,
    buckets: None,
};

pub const SERVER_OLDEST_TRANSACTION: Family = Family {
    name: "walpipe_server_oldest_transaction_age_seconds",
    help: "Age of the source's oldest open transaction that holds a transaction id (those pin a slot's restart_lsn).",
    labels: JOB,
    buckets: None,
};

pub const MONITOR_UP: Family = Family {
    name: "walpipe_monitor_up",
    help: "1 when the last poll of the source's slot and server state succeeded.",
    labels: JOB,
    buckets: None,
};

pub const MONITOR_POLLS: Family = Family {
    name: "walpipe_monitor_polls_total",
    help: "Polls of the source's slot and server state, by result (ok, error).",
    labels: &["job_name", "result"],
    buckets: None,
};

pub const MONITOR_POLL_DURATION: Family = Family {
    name: "walpipe_monitor_poll_duration_seconds",
    help: "Time one poll's queries take on the source.",
    labels: JOB,
    buckets: Some(&[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]),
};

pub const MONITOR_LAST_POLL: Family = Family {
    name: "walpipe_monitor_last_poll_timestamp_seconds",
    help: "When the last successful poll of the source finished (Unix time).",
    labels: JOB,
    buckets: None,
};

pub const BUILD_INFO: Family = Family {
    name: "walpipe_build_info",
    help: "walpipe's version (always 1).",
    labels: &["version"],
    buckets: None,
};
