//! One table's trouble never stops the others (`WALPIPE_ON_TABLE_ERROR`,
//! default `isolate`), on a real PG15 source and sink under a pgbench load:
//! a change the sink cannot apply to one of three tables isolates that
//! table, the other two stay equal to the source, and the isolated one is
//! rebuilt beside its destination and swapped in, kill -9 during the
//! rebuild included; a rebuild that would drop a column a person added
//! waits for `walpipe jobs snapshot`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Cluster, fingerprint, http_addr, http_get, http_request, metric, run_log, start_run, stop_run, wait_for,
};

const TABLES: [&str; 3] = ["a", "b", "c"];

/// Updates and inserts on tables a and c (b is held by the test's lock).
const LOAD: &str = "\\set id random(1, :rows)\n\
UPDATE a SET v = v + 1 WHERE id = :id;\n\
UPDATE c SET v = v + 1 WHERE id = :id;\n\
INSERT INTO a VALUES (:rows + 1 + (random() * 1000000)::int, 0, '1') ON CONFLICT DO NOTHING;\n";

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

fn same(cluster: &Cluster, source: &str, sink: &str, table: &str) -> bool {
    let columns = "id, v, note";
    let theirs = fingerprint(cluster, source, table, columns, "id");
    theirs.is_some() && theirs == fingerprint(cluster, sink, table, columns, "id")
}

fn needs_recopy(job: &str, table: &str) -> Option<f64> {
    let addr = http_addr(job)?;
    metric(
        &http_get(&addr, "/metrics").1,
        "walpipe_table_needs_recopy",
        &[("job_name", job), ("table", table)],
    )
}

#[test]
fn one_tables_trouble_is_isolated_while_the_others_stream_and_it_is_rebuilt_and_swapped_in() {
    let cluster = cluster();
    let (source, sink) = (cluster.fresh_db("iso_src"), cluster.fresh_db("iso_sink"));
    const ROWS: u32 = 2000;
    for table in TABLES {
        cluster.psql(
            &source,
            &format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, v int, note text); \
                 INSERT INTO {table} SELECT i, i, i::text FROM generate_series(1, {ROWS}) i"
            ),
        );
    }
    let job = format!("iso_{}", std::process::id());
    let mut child = start_run(cluster, &source, &sink, &job, &[]);
    for table in TABLES {
        wait_for(Duration::from_secs(90), &format!("the copy of {table}"), || {
            same(cluster, &source, &sink, table)
        });
    }
    let load = common::Workload::start(cluster, &source, LOAD, 2, ROWS, 8);

    // Someone edits b in the sink; the source's cast then cannot apply there.
    // Right after the cast commits, a session takes b's lock and holds it, so
    // the rebuild cannot read b: b stays isolated as long as the test needs.
    cluster.psql(&sink, "UPDATE b SET note = 'not a number' WHERE id = 5");
    let mut holder = Command::new(common::pg15_bindir().join("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &cluster.port.to_string(),
            "-d",
            &source,
        ])
        .env("PGAPPNAME", "walpipe_test_lock_holder")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    holder
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(
            b"BEGIN; ALTER TABLE b ALTER COLUMN note TYPE int USING note::int; UPDATE b SET v = -1 WHERE id = 1; COMMIT;\n\
              BEGIN; LOCK TABLE b IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(300);\n",
        )
        .expect("send");
    wait_for(Duration::from_secs(60), "b isolated", || needs_recopy(&job, "public.b") == Some(1.0));
    load.finish();
    // The other tables stream on, and the job never failed.
    for table in ["a", "c"] {
        wait_for(Duration::from_secs(60), &format!("{table} equal while b is isolated"), || {
            same(cluster, &source, &sink, table)
        });
    }
    assert!(child.try_wait().expect("wait").is_none(), "walpipe still runs: {}", run_log(&job));
    let (_, body) = http_get(&http_addr(&job).expect("http"), &format!("/api/v1/jobs/{job}"));
    assert!(
        body.contains("isolated: ") && body.contains("not a number"),
        "the reason names the failure: {body}"
    );
    let marked = cluster.psql(&sink, &format!("SELECT isolated FROM walpipe.recopy_needed WHERE job_name = '{job}' AND source_table = 'public.b'"));
    assert_eq!(marked, "t");
    assert_eq!(
        cluster.psql(&sink, "SELECT note FROM b WHERE id = 5"),
        "not a number",
        "readers still see the old rows"
    );

    // kill -9 while the rebuild is under way (its shadow made, its copy held by the lock).
    wait_for(Duration::from_secs(60), "the rebuild's shadow", || {
        cluster.try_psql(&sink, "SELECT to_regclass('b_walpipe_rebuild') IS NOT NULL").as_deref() == Some("t")
    });
    let _ = Command::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
    // The holder's backend sleeps: it would not notice its client go away.
    cluster.psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'walpipe_test_lock_holder'");
    let _ = holder.kill();
    let _ = holder.wait();
    child = start_run(cluster, &source, &sink, &job, &[]);
    wait_for(Duration::from_secs(90), "b rebuilt and swapped in", || {
        cluster.psql(&sink, "SELECT to_regclass('b_walpipe_rebuild') IS NULL") == "t"
            && same(cluster, &source, &sink, "b")
    });
    assert_eq!(
        cluster.psql(&sink, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'b'::regclass AND attname = 'note'"),
        "integer"
    );
    wait_for(Duration::from_secs(60), "b's mark cleared", || needs_recopy(&job, "public.b") == Some(0.0));
    cluster.psql(&source, "UPDATE b SET v = 42 WHERE id = 2");
    wait_for(Duration::from_secs(60), "b's changes applied again", || same(cluster, &source, &sink, "b"));

    // A person adds a NOT NULL column to c in the sink: a rebuild would drop
    // it, so c waits for `walpipe jobs snapshot` while a streams on.
    cluster.psql(&sink, "ALTER TABLE c ADD COLUMN extra int NOT NULL DEFAULT 0; ALTER TABLE c ALTER COLUMN extra DROP DEFAULT");
    // Id 0 is outside both the copied rows (1..ROWS) and the load's inserts
    // (ROWS + 1 and up); 100001 was inside the load's and collided about
    // once in a hundred runs.
    cluster.psql(&source, "INSERT INTO c VALUES (0, 1, '1'); INSERT INTO a VALUES (0, 1, '1')");
    wait_for(Duration::from_secs(60), "c isolated", || needs_recopy(&job, "public.c") == Some(1.0));
    wait_for(Duration::from_secs(60), "a streams on", || same(cluster, &source, &sink, "a"));
    let (_, body) = http_get(&http_addr(&job).expect("http"), &format!("/api/v1/jobs/{job}"));
    assert!(
        body.contains(&format!("walpipe jobs snapshot {job} public.c")) && body.contains("extra"),
        "{body}"
    );
    let waits = cluster.psql(&sink, &format!("SELECT waits_for_request FROM walpipe.recopy_needed WHERE job_name = '{job}' AND source_table = 'public.c'"));
    assert_eq!(waits, "t");
    let (status, answer) = http_request(
        &http_addr(&job).expect("http"),
        "POST",
        &format!("/api/v1/jobs/{job}/snapshot"),
        Some(r#"{"tables": ["public.c"]}"#),
        None,
    );
    assert!(status == 202 || status == 200, "{status} {answer}");
    wait_for(Duration::from_secs(90), "c rebuilt without the person's column", || {
        same(cluster, &source, &sink, "c")
            && cluster.psql(
                &sink,
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'c'::regclass AND attname = 'extra'",
            ) == "0"
    });
    assert!(stop_run(child).success(), "{}", run_log(&job));
    assert!(!run_log(&job).contains("the job failed"), "{}", run_log(&job));
}

/// A row the sink refuses, written in the same round trip as its commit
/// (one table's few rows go out with the checkpoint and the COMMIT behind
/// them): nothing of that commit is kept. Under `isolate` the table is set
/// aside and the rest commits; under `fail` the job stops, and the row
/// comes again after the fix, so the checkpoint never passed it.
#[test]
fn a_refused_row_sent_with_its_commit_commits_nothing_of_it() {
    let cluster = cluster();
    for mode in ["isolate", "fail"] {
        let (source, sink) = (
            cluster.fresh_db(&format!("refused_{mode}_src")),
            cluster.fresh_db(&format!("refused_{mode}_sink")),
        );
        cluster.psql(&source, "CREATE TABLE guarded (id int PRIMARY KEY, v int); CREATE TABLE other (id int PRIMARY KEY, v int)");
        let job = format!("refused_{mode}_{}", std::process::id());
        let settings = [("WALPIPE_ON_TABLE_ERROR", mode)];
        let mut child = start_run(cluster, &source, &sink, &job, &settings);
        let row = |table: &str, id: i32| {
            cluster
                .try_psql(&sink, &format!("SELECT v FROM {table} WHERE id = {id}"))
                .filter(|v| !v.is_empty())
        };
        wait_for(Duration::from_secs(60), "the destinations", || {
            cluster.try_psql(&sink, "SELECT count(*) FROM guarded").is_some()
                && cluster.try_psql(&sink, "SELECT count(*) FROM other").is_some()
        });
        cluster.psql(&sink, "ALTER TABLE guarded ADD CONSTRAINT small CHECK (v < 100)");
        cluster.psql(&source, "INSERT INTO guarded VALUES (1, 5)");
        wait_for(Duration::from_secs(60), "a row the sink takes", || row("guarded", 1).is_some());
        cluster.psql(&source, "INSERT INTO guarded VALUES (2, 500)");
        if mode == "isolate" {
            cluster.psql(&source, "INSERT INTO other VALUES (1, 1)");
            wait_for(Duration::from_secs(60), "the other table's row", || row("other", 1).is_some());
            let log = run_log(&job);
            assert!(
                log.contains("the table is isolated")
                    && log.contains("the upserts into")
                    && log.contains("violates check constraint"),
                "{log}"
            );
            // The rebuild from the source (without the sink's constraint) brings the row.
            wait_for(Duration::from_secs(90), "the rebuilt table", || {
                row("guarded", 2).as_deref() == Some("500")
            });
            assert!(child.try_wait().expect("wait").is_none(), "walpipe still runs: {}", run_log(&job));
        } else {
            wait_for(Duration::from_secs(60), "the job fails", || child.try_wait().ok().flatten().is_some());
            assert_eq!(row("guarded", 2), None, "nothing of the refused commit is in the sink");
            cluster.psql(&sink, "ALTER TABLE guarded DROP CONSTRAINT small");
            child = start_run(cluster, &source, &sink, &job, &settings);
            wait_for(Duration::from_secs(60), "the row again, after the fix", || {
                row("guarded", 2).as_deref() == Some("500")
            });
        }
        assert!(stop_run(child).success(), "{}", run_log(&job));
    }
}
