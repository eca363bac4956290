//! The Postgres sink commits asynchronously (a change is visible without a
//! disk flush) and acknowledges a commit only once the sink server's flush
//! position has passed it (src/sink/postgres/durability.rs). A sink server
//! that crashes loses the commits still in its WAL buffers; the source must
//! not have confirmed them, so after the restart the job replays them and
//! the sink equals the source.
//!
//! The crash is made where the difference shows: the sink's WAL writer and
//! background writer are stopped (SIGSTOP; the background writer flushes
//! WAL before it writes a page, which would make the commits durable
//! behind the test's back), so asynchronous commits stay in the WAL
//! buffers; the load runs until the sink's visible checkpoint has moved
//! well past where it was at the stop; then both are killed (-9), and the
//! postmaster resets the whole server as after any crash, dropping the
//! buffers. Had walpipe acknowledged a commit as it returned, the slot
//! would have moved past rows that are gone, and the sink would never
//! equal the source again. Three such crashes.

mod common;

use std::time::Duration;

use common::{
    Cluster, Workload, fingerprint, query_lsn, run_log, signal, stop_run, stop_while_waiting, wait_for,
    wait_for_showing,
};

const LOAD: &str = "\\set id random(1, 5000)\n\
    INSERT INTO items VALUES (:id, 1, 'new') ON CONFLICT (id) DO UPDATE SET n = items.n + 1, v = 'updated';\n\
    DELETE FROM items WHERE id = :id + 1;\n\
    INSERT INTO log (v) VALUES ('appended');\n";

#[test]
fn a_sink_that_crashes_loses_nothing_the_source_confirmed() {
    let source = common::pg15_with(&common::options());
    let sink = Cluster::start(&common::pg15_bindir(), &common::options());
    let db = source.fresh_db("sink_crash");
    // A row of `log` is never written again: one lost is lost for good.
    source.psql(
        &db,
        "CREATE TABLE items (id int PRIMARY KEY, n int, v text); \
         CREATE TABLE log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
    );
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
    let applied = || query_lsn(&sink, "postgres", "SELECT applied_lsn FROM walpipe.checkpoints").unwrap_or(0);
    let writers = || {
        sink.try_psql(
            "postgres",
            "SELECT string_agg(pid::text, ' ' ORDER BY backend_type) FROM pg_stat_activity \
             WHERE backend_type IN ('walwriter', 'background writer')",
        )
        .unwrap_or_default()
    };
    for crash in 1..=3 {
        let stopped = writers();
        let pids: Vec<&str> = stopped.split_whitespace().collect();
        assert_eq!(pids.len(), 2, "{stopped}");
        for pid in &pids {
            wait_for(Duration::from_secs(60), &format!("{pid} stopped while it waits"), || {
                stop_while_waiting(pid)
            });
        }
        let before = applied();
        wait_for(
            Duration::from_secs(60),
            &format!("sink commits past the stop before crash {crash}"),
            || applied() > before + 64 * 1024,
        );
        // Give the acknowledgements time to reach the source: the slot
        // confirms what walpipe takes for durable (the server's flush
        // position moves with other sessions' synchronous commits, such
        // as walpipe's own lease), so a commit acknowledged too early is
        // now confirmed.
        let visible = applied();
        wait_for(Duration::from_secs(60), &format!("the slot confirming more before crash {crash}"), || {
            confirmed() >= visible
        });
        pids.iter().for_each(|pid| signal(pid, "-KILL"));
        wait_for(Duration::from_secs(60), "the sink back after the crash", || {
            let now = writers();
            now.split_whitespace().count() == 2 && now.split_whitespace().all(|pid| !pids.contains(&pid))
        });
    }
    load.stop();

    let same = || {
        [("items", "id, n, v"), ("log", "id, v")].iter().all(|(table, columns)| {
            let at_source = fingerprint(source, &db, table, columns, "id");
            at_source.is_some() && at_source == fingerprint(&sink, "postgres", table, columns, "id")
        })
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
