//! The chunked copy (WALPIPE_SNAPSHOT_STRATEGY=chunked, the default), end
//! to end on real servers: chunks merged with a heavy concurrent workload
//! in the very ranges being copied (PG15 and PG18), kill -9 during a copy,
//! which resumes from its last recorded chunk with the same slot, and the
//! slot's retained WAL staying bounded while a copy is held up.

mod common;

use common::{Cluster, fingerprint, run_log, spawn_run, stop_run, wait_for};
use std::process::Child;
use std::time::Duration;

const COLUMNS: &str = "region, id, balance, note";
const KEY: &str = "region, id";

/// A table with a composite key, and a function that moves a key (a
/// key change that gives up quietly when the new key is taken).
fn setup(cluster: &Cluster, test: &str, rows: u32) -> (String, String) {
    let source = cluster.fresh_db(&format!("{test}_src"));
    let sink = cluster.fresh_db(&format!("{test}_sink"));
    cluster.psql(
        &source,
        &format!(
            "CREATE TABLE accounts (region int, id int, balance int NOT NULL, note text, PRIMARY KEY (region, id)); \
             INSERT INTO accounts SELECT i % 3, i, i, 'row ' || i FROM generate_series(1, {rows}) i; \
             CREATE FUNCTION move_key(r int, i int) RETURNS void LANGUAGE plpgsql AS $$ \
             BEGIN UPDATE accounts SET id = -id WHERE region = r AND id = i; \
             EXCEPTION WHEN unique_violation THEN NULL; END $$;"
        ),
    );
    (source, sink)
}

/// Updates, deletes, re-inserts, key changes (both ways) and range updates
/// on random keys of every region, so some land on chunk boundaries.
const WORKLOAD: &str = r"\set r random(0, 2)
\set i random(1, :rows)
\set op random(1, 6)
\if :op = 1
UPDATE accounts SET balance = balance + 1 WHERE region = :r AND id = :i;
\elif :op = 2
DELETE FROM accounts WHERE region = :r AND id = :i;
\elif :op = 3
INSERT INTO accounts VALUES (:r, :i, 0, 'reinserted') ON CONFLICT (region, id) DO UPDATE SET note = 'upserted';
\elif :op = 4
SELECT move_key(:r, :i), move_key(:r, -:i);
\elif :op = 5
BEGIN;
DELETE FROM accounts WHERE region = :r AND id = :i;
INSERT INTO accounts VALUES (:r, :i, 7, 'again') ON CONFLICT (region, id) DO UPDATE SET balance = 8;
COMMIT;
\else
UPDATE accounts SET balance = balance - 1, note = md5(random()::text) WHERE region = :r AND id BETWEEN :i AND :i + 30;
\endif
";

fn run(
    cluster: &Cluster,
    source: &str,
    sink: &str,
    job: &str,
    append: bool,
    extra: &[(&str, &str)],
) -> Child {
    let vars = [
        ("WALPIPE_SOURCE_URL", cluster.url(source)),
        ("WALPIPE_SINK_URL", cluster.url(sink)),
        ("WALPIPE_JOB_NAME", job.to_string()),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    spawn_run(job, append, &vars, extra)
}

fn same(cluster: &Cluster, source: &str, sink: &str) -> bool {
    let sink_print = fingerprint(cluster, sink, "accounts", COLUMNS, KEY);
    sink_print.is_some() && sink_print == fingerprint(cluster, source, "accounts", COLUMNS, KEY)
}

fn wait_same(cluster: &Cluster, source: &str, sink: &str, job: &str) {
    let started = std::time::Instant::now();
    while !same(cluster, source, sink) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the sink did not converge; log:\n{}",
            run_log(job)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The copy's progress as the sink's checkpoint records it.
fn recorded(cluster: &Cluster, sink: &str, job: &str) -> String {
    cluster
        .try_psql(
            sink,
            &format!("SELECT copy_progress::text FROM walpipe.checkpoints WHERE job_name = '{job}'"),
        )
        .unwrap_or_default()
}

#[test]
fn chunks_and_a_heavy_workload_in_their_ranges_converge_exactly() {
    const ROWS: u32 = 150_000;
    for cluster in common::clusters() {
        let (source, sink) = setup(cluster, "chunk_merge", ROWS);
        let job = format!("chunk_merge_{}_{}", cluster.major, std::process::id());
        // The workload runs over the whole copy: it writes before the copy
        // starts and stops only after the copy's last chunk is in.
        let workload = common::Workload::start(cluster, &source, WORKLOAD, 4, ROWS, 600);
        workload.wait_writing(cluster, &source);
        let child = run(cluster, &source, &sink, &job, false, &[]);
        wait_for(Duration::from_secs(180), "the copy's last chunk", || {
            recorded(cluster, &sink, &job).contains("\"done\": true")
        });
        workload.stop();
        wait_same(cluster, &source, &sink, &job);
        assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
        let log = run_log(&job);
        assert!(
            log.contains("snapshot public.accounts: its last chunk took its place in the stream"),
            "{log}"
        );
        let merged = log.lines().filter(|l| l.contains("newer in the stream")).count();
        eprintln!("PG{}: {merged} chunks left out rows that the stream had newer", cluster.major);
    }
}

#[test]
fn kill_9_during_a_chunked_copy_resumes_from_the_last_chunk_and_copies_no_row_twice() {
    const ROWS: u32 = 300_000;
    let cluster = common::pg15_with(&common::options());
    for mode in ["mirror", "changelog"] {
        let (source, sink) = setup(cluster, &format!("chunk_kill_{mode}"), ROWS);
        let job = format!("chunk_kill_{mode}_{}", std::process::id());
        let extra = [("WALPIPE_SINK_MODE", mode)];
        let mut child = run(cluster, &source, &sink, &job, false, &extra);
        for kill in 1..=3 {
            // Kill once a chunk more than at the start of this run is recorded.
            let before = recorded(cluster, &sink, &job);
            wait_for(Duration::from_secs(120), "a chunk recorded", || {
                let now = recorded(cluster, &sink, &job);
                now.contains("\"after\": [") && now != before
            });
            let _ = child.kill();
            let _ = child.wait();
            let slots = "SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE database = current_database()";
            let slot = cluster.psql(&source, slots);
            child = run(cluster, &source, &sink, &job, true, &extra);
            wait_for(Duration::from_secs(60), "the resumed copy", || {
                run_log(&job).matches("resuming the chunked copy after key").count() >= kill
            });
            // The same slot: not a new one.
            assert_eq!(cluster.psql(&source, slots), slot);
        }
        wait_for(Duration::from_secs(180), "the copy", || {
            recorded(cluster, &sink, &job).contains("\"done\": true")
        });
        let log = run_log(&job);
        assert_eq!(
            log.matches("the tables will be copied in chunks").count(),
            1,
            "one fresh start only:\n{log}"
        );
        match mode {
            "mirror" => wait_same(cluster, &source, &sink, &job),
            _ => {
                let snapshot_rows = |what: &str| {
                    cluster.psql(
                        &sink,
                        &format!("SELECT {what} FROM (SELECT key, count(*) n FROM accounts WHERE _walpipe_op = 'snapshot' GROUP BY key) k"),
                    )
                };
                assert_eq!(snapshot_rows("count(*)"), ROWS.to_string(), "every row copied");
                assert_eq!(snapshot_rows("count(*) FILTER (WHERE n > 1)"), "0", "no row copied twice");
            }
        }
        assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
    }
}

#[test]
fn updates_that_leave_toasted_values_unsent_during_a_chunked_copy_converge() {
    const ROWS: u32 = 60_000;
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = setup(cluster, "chunk_toast", ROWS);
    // Every 20th row holds a value stored out of line: an update that leaves
    // it unchanged does not send it.
    cluster.psql(
        &source,
        "ALTER TABLE accounts ADD COLUMN blob text; ALTER TABLE accounts ALTER COLUMN blob SET STORAGE EXTERNAL; \
         UPDATE accounts SET blob = repeat(md5(id::text), 120) WHERE id % 20 = 0",
    );
    let job = format!("chunk_toast_{}", std::process::id());
    let writer = {
        let source = source.clone();
        std::thread::spawn(move || {
            for n in 0..400u32 {
                let id = 20 * (1 + n * 7919 % (ROWS / 20 - 1));
                cluster.psql(
                    &source,
                    &format!(
                        "UPDATE accounts SET balance = balance + 1 WHERE region = {} AND id = {id}",
                        id % 3
                    ),
                );
            }
        })
    };
    let child = run(cluster, &source, &sink, &job, false, &[]);
    writer.join().expect("writer");
    let columns = "region, id, balance, note, blob";
    wait_for(Duration::from_secs(180), "the sink equals the source", || {
        let sink_print = fingerprint(cluster, &sink, "accounts", columns, KEY);
        sink_print.is_some() && sink_print == fingerprint(cluster, &source, "accounts", columns, KEY)
    });
    assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
    let retried = run_log(&job).matches("cannot be merged").count();
    eprintln!("chunks read again because an update left a TOASTed value unsent: {retried}");
}

/// A frozen backend, continued when dropped (also when a test fails).
struct Frozen(String);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// Freezes the copy's session on the source (SIGSTOP of its backend) while
/// it is idle between statements, so that it holds no lock another session
/// could wait for.
fn freeze_the_copy(cluster: &Cluster, source: &str, sink: &str, job: &str) -> Frozen {
    let mut frozen = None;
    wait_for(Duration::from_secs(60), "the copy's session frozen while idle", || {
        assert!(
            !recorded(cluster, sink, job).contains("\"done\": true"),
            "the copy ended before it was frozen"
        );
        // This job's copy only: the other tests' jobs copy in the same cluster.
        let pid = cluster.psql(
            source,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'walpipe-copy' AND datname = current_database()",
        );
        if pid.is_empty() {
            return false;
        }
        if !common::stop_while_waiting(&pid) {
            return false;
        }
        let state = cluster.psql(source, &format!("SELECT state FROM pg_stat_activity WHERE pid = {pid}"));
        if state.starts_with("idle") {
            frozen = Some(pid);
            return true;
        }
        common::signal(&pid, "-CONT");
        false
    });
    Frozen(frozen.expect("frozen"))
}

#[test]
fn the_slot_retains_a_bounded_amount_of_wal_while_a_copy_is_held_up_however_much_is_written() {
    const BOUND: u64 = 16 * 1024 * 1024;
    let cluster = common::pg15_with(&common::options());
    // Three chunks can be in flight when the copy's session is frozen (one
    // read ahead, one waiting, one being written), up to 4 MiB each: about
    // 500,000 rows of this table. Three times that leaves the copy unfinished
    // however late the freeze lands.
    let (source, sink) = setup(cluster, "chunk_wal", 1_500_000);
    cluster.psql(&source, "CREATE TABLE filler (pad text)");
    let job = format!("chunk_wal_{}", std::process::id());
    let extra = [("WALPIPE_TABLES", "public.accounts"), ("WALPIPE_HEARTBEAT_INTERVAL_MS", "500")];
    let child = run(cluster, &source, &sink, &job, false, &extra);
    let copier = freeze_the_copy(cluster, &source, &sink, &job);

    let slot = format!("walpipe_{job}");
    let lsn = |sql: &str| common::lsn(&cluster.psql(&source, sql));
    let written_from = lsn("SELECT pg_current_wal_lsn()");
    cluster
        .psql(&source, "INSERT INTO filler SELECT repeat(md5(i::text), 30) FROM generate_series(1, 70000) i");
    cluster.psql(&source, "CHECKPOINT");
    let written = lsn("SELECT pg_current_wal_lsn()") - written_from;
    assert!(written > 4 * BOUND, "{written} bytes of WAL written while the copy is held up");
    // Observable, not sampled: the slot's restart position moves on (at a
    // running-transactions record) while the copy cannot finish.
    let retained = format!(
        "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    );
    wait_for(Duration::from_secs(120), "the retained WAL under the bound", || {
        cluster.psql(&source, &retained).parse::<u64>().is_ok_and(|bytes| bytes < BOUND)
    });
    assert!(!recorded(cluster, &sink, &job).contains("\"done\": true"), "the copy was held up");
    drop(copier);
    wait_same(cluster, &source, &sink, &job);
    assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
}

#[test]
fn a_table_without_a_key_is_copied_under_the_exported_snapshot_and_streams_into_a_changelog() {
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = setup(cluster, "chunk_keyless", 20_000);
    cluster.psql(
        &source,
        "CREATE TABLE audit (at int, what text); ALTER TABLE audit REPLICA IDENTITY FULL; \
         INSERT INTO audit SELECT i, 'event ' || i FROM generate_series(1, 500) i",
    );
    let job = format!("chunk_keyless_{}", std::process::id());
    let tables = ("WALPIPE_TABLES", "public.accounts, public.audit");

    // A mirror writes by key: refused at the start with the fix.
    let mirror = cluster.fresh_db("chunk_keyless_mirror");
    let mut refused = run(cluster, &source, &mirror, &format!("{job}_mirror"), false, &[tables]);
    assert!(!refused.wait().expect("wait").success());
    let log = run_log(&format!("{job}_mirror"));
    assert!(log.contains("table public.audit has REPLICA IDENTITY FULL but no primary key"), "{log}");
    assert!(log.contains("WALPIPE_SINK_MODE=changelog"), "{log}");

    // A changelog takes it: copied under the slot's snapshot, the keyed table in chunks.
    let child = run(cluster, &source, &sink, &job, false, &[tables, ("WALPIPE_SINK_MODE", "changelog")]);
    let count = |sql: &str| cluster.try_psql(&sink, sql).unwrap_or_default();
    wait_for(Duration::from_secs(90), "both copies", || {
        count("SELECT count(*) FROM audit WHERE _walpipe_op = 'snapshot'") == "500"
            && count("SELECT count(*) FROM accounts WHERE _walpipe_op = 'snapshot'") == "20000"
    });
    cluster.psql(&source, "UPDATE audit SET what = 'changed' WHERE at = 7; DELETE FROM audit WHERE at = 8");
    wait_for(Duration::from_secs(30), "the streamed changes", || {
        count("SELECT count(*) FROM audit WHERE _walpipe_op IN ('update', 'delete')") == "2"
    });
    // REPLICA IDENTITY FULL: the whole old row comes with each change.
    assert_eq!(count("SELECT old->>'what' FROM audit WHERE _walpipe_op = 'delete'"), "event 8");
    assert_eq!(
        count("SELECT old->>'what' || '>' || (new->>'what') FROM audit WHERE _walpipe_op = 'update'"),
        "event 7>changed"
    );
    assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
    let log = run_log(&job);
    assert!(
        log.contains("snapshot public.audit: it has no primary key (REPLICA IDENTITY FULL), so it is copied under the new stream's snapshot before streaming"),
        "{log}"
    );
    assert!(log.contains("snapshot public.accounts: copying in chunks"), "{log}");
}

#[test]
fn chunks_go_in_binary_where_the_columns_allow_and_one_with_a_value_that_does_not_convert_is_staged() {
    let cluster = common::pg15_with(&common::options());
    let source = cluster.fresh_db("chunk_binary_src");
    let sink = cluster.fresh_db("chunk_binary_sink");
    let typed = "id bigint PRIMARY KEY, amount numeric(12,2), at timestamptz, note text, u uuid, day date, ratio float8";
    let odd = "id int PRIMARY KEY, at timestamp";
    cluster.psql(
        &source,
        &format!(
            "CREATE TABLE typed ({typed}); CREATE TABLE odd ({odd}); \
             INSERT INTO typed SELECT i, i * 1.255, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1.5 second', \
                    E'row\\t' || i, md5(i::text)::uuid, '2000-02-28'::date + i, i / 3.0 FROM generate_series(1, 2000) i; \
             INSERT INTO typed VALUES (0, NULL, NULL, NULL, NULL, NULL, 'NaN'); \
             INSERT INTO odd SELECT i, CASE WHEN i = 50 THEN 'infinity' ELSE '2026-01-01'::timestamp + i * interval '1 day' END \
             FROM generate_series(1, 100) i;"
        ),
    );
    // The destinations made beforehand, as walpipe makes them, with a
    // trigger that tells which statement wrote each row.
    cluster.psql(
        &sink,
        &format!(
            "CREATE TABLE typed ({typed}, _walpipe_lsn pg_lsn); CREATE TABLE odd ({odd}, _walpipe_lsn pg_lsn)"
        ),
    );
    common::log_writes(cluster, &sink, &["typed", "odd"]);
    let job = format!("chunk_binary_{}", std::process::id());
    let child = run(cluster, &source, &sink, &job, false, &[]);
    let columns = [("typed", "id, amount, at, note, u, day, ratio"), ("odd", "id, at")];
    let converged = || {
        columns.iter().all(|(table, columns)| {
            let copied = fingerprint(cluster, &sink, table, columns, "id");
            copied.is_some() && copied == fingerprint(cluster, &source, table, columns, "id")
        })
    };
    wait_for(Duration::from_secs(120), "both tables copied", converged);
    assert_eq!(
        common::writes_by_format(cluster, &sink),
        "odd|staged|100\ntyped|binary|2001",
        "{}",
        run_log(&job)
    );
    assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
}

#[test]
fn a_destination_column_changed_by_hand_during_a_chunked_copy_takes_no_wrong_bytes() {
    // Chunks start at 1,000 rows and grow 4x at most, to about 200,000
    // here (4 MiB): once the first is in, several seconds of chunks remain.
    const ROWS: u32 = 1_000_000;
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = setup(cluster, "chunk_retyped", ROWS);
    let job = format!("chunk_retyped_{}", std::process::id());
    let child = run(cluster, &source, &sink, &job, false, &[]);
    wait_for(Duration::from_secs(120), "a chunk recorded", || {
        recorded(cluster, &sink, &job).contains("\"after\": [")
    });
    // An int4 read as a real is a wrong value, not an error. The ALTER
    // holds the table until its COMMIT, so the next chunk's COPY starts
    // after it, with the binary statement prepared for an int4; if the
    // copy ended first (not seen so far), there is nothing to check.
    let altered = cluster.psql(
        &sink,
        &format!(
            "BEGIN; ALTER TABLE accounts ALTER COLUMN balance TYPE real; \
             SELECT copy_progress::text NOT LIKE '%\"done\": true%' FROM walpipe.checkpoints WHERE job_name = '{job}'; COMMIT"
        ),
    );
    assert_eq!(altered, "t", "the copy ended before the ALTER; log:\n{}", run_log(&job));
    wait_for(Duration::from_secs(180), "the copy", || {
        recorded(cluster, &sink, &job).contains("\"done\": true")
    });
    // A real prints 1000000 as 1e+06: compared as the source's int.
    let columns = "region, id, balance::int AS balance, note";
    wait_for(Duration::from_secs(180), "the sink to equal the source", || {
        let copied = fingerprint(cluster, &sink, "accounts", columns, KEY);
        copied.is_some() && copied == fingerprint(cluster, &source, "accounts", columns, KEY)
    });
    assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
    assert!(
        run_log(&job)
            .contains("the columns of \"public\".\"accounts\" changed type while walpipe wrote to it"),
        "{}",
        run_log(&job)
    );
}
