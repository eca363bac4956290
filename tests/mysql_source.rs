//! The MySQL/MariaDB source against a real MariaDB 10.11 (Debian's), into
//! a real Postgres mirror: the blocking snapshot, streamed inserts,
//! updates and deletes, the types, and kill -9.

mod common;

use std::time::Duration;

use common::mariadb;

/// The columns compared, printed alike by both servers (a NULL as `(null)`).
const COLUMNS: &str = "id, qty, price, coalesce(note, '(null)')";

/// [`COLUMNS`] of every row, as the source prints them.
fn source_rows(db: &str) -> String {
    mariadb::server().sql(db, &format!("SELECT {COLUMNS} FROM orders ORDER BY id"))
}

fn sink_rows(cluster: &common::Cluster, db: &str) -> Option<String> {
    cluster
        .try_psql(db, &format!("SELECT {COLUMNS} FROM {db_schema}.orders ORDER BY id", db_schema = "public"))
        .map(|text| text.replace('|', "\t"))
}

/// Waits until the sink's rows equal the source's.
fn converge(cluster: &common::Cluster, source_db: &str, sink_db: &str, job: &str, what: &str) {
    common::wait_for_showing(
        Duration::from_secs(90),
        what,
        || sink_rows(cluster, sink_db).as_deref() == Some(source_rows(source_db).as_str()),
        || {
            let sink = sink_rows(cluster, sink_db).unwrap_or_default();
            format!(
                "sink rows: {}\nsource rows: {}\n{}",
                sink.lines().count(),
                source_rows(source_db).lines().count(),
                common::run_log(job)
            )
        },
    );
}

/// A `walpipe run` killed when dropped, so that a failed test leaves none behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cluster: &common::Cluster, source_db: &str, sink_db: &str, job: &str, append: bool) -> Running {
    run_job(cluster, source_db, sink_db, job, "orders", append)
}

/// A job that mirrors `source_db.table` into `public.table` of `sink_db`.
fn start_on(cluster: &common::Cluster, source_db: &str, sink_db: &str, job: &str, table: &str) -> Running {
    run_job(cluster, source_db, sink_db, job, table, false)
}

fn run_job(
    cluster: &common::Cluster,
    source_db: &str,
    sink_db: &str,
    job: &str,
    table: &str,
    append: bool,
) -> Running {
    let vars = [
        ("WALPIPE_SOURCE_URL", mariadb::server().url(source_db)),
        ("WALPIPE_SINK_URL", cluster.url(sink_db)),
        ("WALPIPE_JOB_NAME", job.to_string()),
        ("WALPIPE_TABLES", format!("{source_db}.{table}")),
        ("WALPIPE_TABLE_MAPPINGS", format!("{source_db}.{table}=public.{table}")),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    Running(common::spawn_run(job, append, &vars, &[]))
}

#[test]
fn a_mariadb_table_is_copied_then_streamed_into_a_postgres_mirror_and_survives_kill_9() {
    let server = mariadb::server();
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("mirror");
    let sink_db = cluster.fresh_db("mysql_mirror");
    let job = format!("mysql_mirror_{}", common::unique());
    server.sql(
        &source_db,
        "CREATE TABLE orders (id int PRIMARY KEY, qty int unsigned, price decimal(10,2), note varchar(50)) ENGINE=InnoDB; \
         INSERT INTO orders SELECT seq, seq * 2, seq / 4, concat('before ', seq) FROM seq_1_to_100",
    );
    let run = start(cluster, &source_db, &sink_db, &job, false);
    converge(cluster, &source_db, &sink_db, &job, "the snapshot's 100 rows in the sink");
    server.sql(
        &source_db,
        "INSERT INTO orders VALUES (101, 4294967295, 12345678.91, 'max unsigned'); \
         UPDATE orders SET note = 'it''s\\ttabbed' WHERE id = 5; \
         DELETE FROM orders WHERE id BETWEEN 10 AND 19; \
         START TRANSACTION; INSERT INTO orders SELECT seq, seq, 1.5, NULL FROM seq_200_to_299; UPDATE orders SET qty = qty + 1 WHERE id > 250; COMMIT",
    );
    converge(cluster, &source_db, &sink_db, &job, "the streamed changes in the sink");
    // kill -9 while writes go on; the restart resumes from the checkpoint and converges.
    server.sql(&source_db, "INSERT INTO orders SELECT seq, seq, 2.5, 'during' FROM seq_300_to_399");
    drop(run); // SIGKILL
    server.sql(
        &source_db,
        "UPDATE orders SET note = 'after the kill' WHERE id BETWEEN 300 AND 320; DELETE FROM orders WHERE id > 390",
    );
    let run = start(cluster, &source_db, &sink_db, &job, true);
    converge(cluster, &source_db, &sink_db, &job, "the sink to equal the source after kill -9");
    let mut run = run;
    let _ = std::process::Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status();
    assert!(run.0.wait().expect("exit").success(), "{}", common::run_log(&job));
}

/// Every column type of the README's table, one row copied by the snapshot
/// and the same values streamed from the binlog: both arrive alike, as
/// Postgres reads them.
#[test]
fn every_type_arrives_the_same_from_the_snapshot_and_from_the_binlog() {
    let server = mariadb::server();
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("types");
    let sink_db = cluster.fresh_db("mysql_types");
    let job = format!("mysql_types_{}", common::unique());
    let values = "-8, 65535, -8388608, 2147483647, 18446744073709551615, 1234.567, 1.5, 2.25, b'10101', 2024, \
                  '2024-02-29', '-26:03:04.125', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5', 'ab', \
                  'zwölf 🦀', 'long\\ntext\\twith\\\\escapes', x'00ff', x'0102', x'deadbeef', '{\"a\": [1, 2]}', 'large', \
                  'x,z', ST_GeomFromText('POINT(1 2)'), '0000-00-00 00:00:00', NULL";
    server.sql(
        &source_db,
        &format!(
            "SET SESSION sql_mode = ''; \
             CREATE TABLE orders (id int PRIMARY KEY, ti tinyint, su smallint unsigned, mi mediumint, i int, bu bigint unsigned, \
               de decimal(12,3), f float, d double, bi bit(5), y year, da date, t time(3), dt datetime(6), ts timestamp(6) NULL, \
               c char(3), v varchar(20) CHARACTER SET utf8mb4, tx text, bn binary(2), vb varbinary(4), bl blob, j json, \
               e enum('small','large'), s set('x','y','z'), g geometry, zero datetime, nothing int) ENGINE=InnoDB; \
             INSERT INTO orders VALUES (1, {values})"
        ),
    );
    let run = start_on(cluster, &source_db, &sink_db, &job, "orders");
    let row = |id: i32| {
        cluster.try_psql(&sink_db, &format!("SELECT row(ti, su, mi, i, bu, de, f, d, bi, y, da, t, dt, ts, c, v, tx, bn, vb, bl, j, e, s, g, zero, nothing)::text FROM public.orders WHERE id = {id}"))
            .filter(|text| !text.is_empty())
    };
    common::wait_for_showing(
        Duration::from_secs(90),
        "the copied row",
        || row(1).is_some(),
        || common::run_log(&job),
    );
    server.sql(&source_db, &format!("SET SESSION sql_mode = ''; INSERT INTO orders VALUES (2, {values})"));
    common::wait_for_showing(
        Duration::from_secs(60),
        "the streamed row",
        || row(2).is_some(),
        || common::run_log(&job),
    );
    let (copied, streamed) = (row(1).unwrap_or_default(), row(2).unwrap_or_default());
    assert_eq!(copied, streamed, "the snapshot and the binlog disagree");
    for expected in [
        "-8,65535,-8388608,2147483647,18446744073709551615,1234.567,1.5,2.25,10101,2024,2024-02-29,-26:03:04.125",
        "\"2024-02-29 13:14:15.123456\",\"2024-02-29 13:14:15.5+00\",ab,\"zwölf 🦀\"",
        "\"\\\\x00ff\",\"\\\\x0102\",\"\\\\xdeadbeef\"",
        "large,\"x,z\"",
    ] {
        assert!(
            copied.contains(expected),
            "{expected} is not in {copied}; the source holds {}",
            server.sql(&source_db, "SELECT v, hex(v) FROM orders")
        );
    }
    assert!(copied.ends_with(",,)"), "a zero datetime and a NULL are NULL: {copied}");
    drop(run);
}
