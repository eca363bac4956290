//! The Postgres sink commits asynchronously (a change is visible without a
//! disk flush) and acknowledges a commit only after a later durable one
//! (src/sink/postgres/durability.rs). A sink server that crashes loses the
//! commits still in its WAL buffers; the source must not have confirmed
//! them, so after the restart the job replays them and the sink equals the
//! source.
//!
//! The crash is made where the difference shows: the sink's WAL writer is
//! stopped (SIGSTOP), so asynchronous commits stay in its WAL buffers; the
//! load runs until the source's slot has confirmed more; then the WAL
//! writer is killed (-9), and the postmaster resets the whole server as
//! after any crash, dropping the buffers. Had walpipe acknowledged a commit
//! as it returned, the slot would have moved past rows that are gone, and
//! the sink would never equal the source again. Three such crashes.

mod common;

use std::time::Duration;

use common::{Cluster, Workload, fingerprint, query_lsn, run_log, stop_run, wait_for, wait_for_showing};

const LOAD: &str = "\\set id random(1, 5000)\n\
    INSERT INTO items VALUES (:id, 1, 'new') ON CONFLICT (id) DO UPDATE SET n = items.n + 1, v = 'updated';\n\
    DELETE FROM items WHERE id = :id + 1;\n";

fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, pid]).status().expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_sink_that_crashes_loses_nothing_the_source_confirmed() {
    let source = common::pg15_with(&common::options());
    let sink = Cluster::start(&common::pg15_bindir(), &common::options());
    let db = source.fresh_db("sink_crash");
    source.psql(&db, "CREATE TABLE items (id int PRIMARY KEY, n int, v text)");
    let job = format!("sink_crash_{}", std::process::id());
    let vars = [
        ("WALPIPE_SOURCE_URL", source.url(&db)),
        ("WALPIPE_SINK_URL", sink.url("postgres")),
        ("WALPIPE_JOB_NAME", job.clone()),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    let walpipe = common::spawn_run(&job, false, &vars, &[]);
    common::wait_running(&job);

    let load = Workload::start(source, &db, LOAD, 2, 0, 600);
    load.wait_writing(source, &db);
    let confirmed = || {
        let sql = format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE database = '{db}'");
        query_lsn(source, "postgres", &sql).unwrap_or(0)
    };
    for crash in 1..=3 {
        let walwriter =
            sink.psql("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'");
        signal(&walwriter, "-STOP");
        let before = confirmed();
        wait_for(Duration::from_secs(60), &format!("the slot confirming more before crash {crash}"), || {
            confirmed() > before + 64 * 1024
        });
        signal(&walwriter, "-KILL");
        wait_for(Duration::from_secs(60), "the sink back after the crash", || {
            sink.try_psql("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
                .is_some_and(|pid| !pid.is_empty() && pid != walwriter)
        });
    }
    load.stop();

    let same = || {
        let columns = "id, n, v";
        let at_source = fingerprint(source, &db, "items", columns, "id");
        at_source.is_some() && at_source == fingerprint(&sink, "postgres", "items", columns, "id")
    };
    wait_for_showing(
        Duration::from_secs(120),
        "the sink equal to the source after three crashes",
        same,
        || run_log(&job),
    );
    stop_run(walpipe);
    let log = run_log(&job);
    assert!(!log.contains("the job failed"), "{log}");
}
