//! A slot invalidated by `max_slot_wal_keep_size` (SQLSTATE 55000,
//! `wal_status = lost`): without `when_needed` the job fails saying how to
//! recover; with it, the job records the data gap, re-creates the slot,
//! copies again and converges, rows deleted during the gap included.

mod common;

use common::{Cluster, ClusterOptions, fingerprint, run_log, start_run, stop_run, wait_for};
use std::time::Duration;

fn cluster() -> &'static Cluster {
    common::pg15_with(&ClusterOptions {
        settings: vec![("max_slot_wal_keep_size", "32MB".into()), ("max_wal_size", "64MB".into())],
        ..ClusterOptions::default()
    })
}

const COLUMNS: &str = "id, note";

fn same(cluster: &Cluster, source: &str, sink: &str) -> bool {
    let sink_print = fingerprint(cluster, sink, "t", COLUMNS, "id");
    sink_print.is_some() && sink_print == fingerprint(cluster, source, "t", COLUMNS, "id")
}

#[test]
fn a_lost_slot_fails_clearly_or_is_recovered_when_needed() {
    let cluster = cluster();
    let source = cluster.fresh_db("lost_src");
    let sink = cluster.fresh_db("lost_sink");
    cluster.psql(&source, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 1000) i");
    cluster.psql(&source, "CREATE TABLE filler (pad text)");
    let job = format!("lost_{}", std::process::id());
    let slot = format!("walpipe_{job}");

    let only_t = ("WALPIPE_TABLES", "public.t");
    let child = start_run(cluster, &source, &sink, &job, &[only_t]);
    wait_for(Duration::from_secs(60), "the first copy", || same(cluster, &source, &sink));
    assert!(stop_run(child).success());

    // While walpipe is down: changes it will never see, and WAL past the cap.
    cluster.psql(&source, "DELETE FROM t WHERE id <= 100; UPDATE t SET note = 'changed in the gap' WHERE id > 900; INSERT INTO t VALUES (5000, 'new in the gap')");
    for _ in 0..6 {
        cluster.psql(
            &source,
            "INSERT INTO filler SELECT repeat(md5(i::text), 30) FROM generate_series(1, 20000) i",
        );
    }
    cluster.psql(&source, "CHECKPOINT");
    let status = cluster
        .psql(&source, &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"));
    assert_eq!(status, "lost", "the cap invalidated the slot");

    // snapshot_mode=initial: a permanent failure naming the fix.
    let mut child = start_run(cluster, &source, &sink, &job, &[only_t]);
    assert!(!child.wait().expect("wait").success());
    let log = run_log(&job);
    assert!(
        log.contains("was invalidated (wal_status = lost)")
            && log.contains("WALPIPE_SNAPSHOT_MODE=when_needed"),
        "{log}"
    );

    // when_needed: the gap is recorded, the slot re-created, the tables copied again in chunks.
    let child = start_run(cluster, &source, &sink, &job, &[only_t, ("WALPIPE_SNAPSHOT_MODE", "when_needed")]);
    wait_for(Duration::from_secs(60), "the re-copy", || same(cluster, &source, &sink));
    cluster.psql(&source, "UPDATE t SET note = 'after recovery' WHERE id = 500");
    wait_for(Duration::from_secs(30), "streaming after recovery", || same(cluster, &source, &sink));
    assert!(stop_run(child).success());
    let gaps = cluster.psql(
        &sink,
        &format!(
            "SELECT count(*), bool_and(gap_from IS NOT NULL) FROM walpipe.data_gaps WHERE job_name = '{job}'"
        ),
    );
    assert_eq!(gaps, "1|t", "one gap recorded, with its start");
    assert!(run_log(&job).contains("the slot was invalidated"), "{}", run_log(&job));
    // The new slot streamed while the copy ran beside it, and the copy
    // removed the rows deleted during the gap.
    assert!(
        run_log(&job).contains("snapshot public.t: removed 100 rows the source no longer has"),
        "{}",
        run_log(&job)
    );
}

#[test]
fn initial_only_copies_and_leaves_no_slot() {
    let cluster = cluster();
    let source = cluster.fresh_db("once_src");
    let sink = cluster.fresh_db("once_sink");
    cluster.psql(&source, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT i, 'x' FROM generate_series(1, 500) i");
    let job = format!("once_{}", std::process::id());
    let mut child = start_run(cluster, &source, &sink, &job, &[("WALPIPE_SNAPSHOT_MODE", "initial_only")]);
    assert!(child.wait().expect("wait").success(), "{}", run_log(&job));
    assert!(same(cluster, &source, &sink));
    let slots = cluster.psql(
        &source,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walpipe_{job}'"),
    );
    assert_eq!(slots, "0");
}
