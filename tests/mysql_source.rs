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

/// A source database with an `orders` table (filled by `insert`), a sink
/// database, and a job name: what most tests here start from.
fn orders_job(
    source: &str,
    sink: &str,
    insert: &str,
) -> (&'static mariadb::Mariadb, &'static common::Cluster, String, String, String) {
    let server = mariadb::server();
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db(source);
    let sink_db = cluster.fresh_db(sink);
    let job = format!("{sink}_{}", common::unique());
    server.sql(
        &source_db,
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, qty int unsigned, price decimal(10,2), note varchar(50)); {insert}"
        ),
    );
    (server, cluster, source_db, sink_db, job)
}

/// The position (`X/Y`) in the last line of `SHOW MASTER STATUS` output.
fn binlog_position(status: &str) -> String {
    let mut fields = status.lines().last().unwrap_or_default().split('\t');
    let (file, offset) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
    let number: u64 = file.rsplit('.').next().and_then(|n| n.parse().ok()).expect("a binlog file");
    format!("{number:X}/{:X}", offset.parse::<u64>().expect("an offset"))
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
    run_job(cluster, source_db, sink_db, job, "orders", append, &[])
}

/// A job that mirrors `source_db.table` into `public.table` of `sink_db`.
fn start_on(cluster: &common::Cluster, source_db: &str, sink_db: &str, job: &str, table: &str) -> Running {
    run_job(cluster, source_db, sink_db, job, table, false, &[])
}

fn run_job(
    cluster: &common::Cluster,
    source_db: &str,
    sink_db: &str,
    job: &str,
    table: &str,
    append: bool,
    extra: &[(&str, &str)],
) -> Running {
    let vars = [
        ("WALPIPE_SOURCE_URL", mariadb::server().url(source_db)),
        ("WALPIPE_SINK_URL", cluster.url(sink_db)),
        ("WALPIPE_JOB_NAME", job.to_string()),
        ("WALPIPE_TABLES", format!("{source_db}.{table}")),
        ("WALPIPE_TABLE_MAPPINGS", format!("{source_db}.{table}=public.{table}")),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    Running(common::spawn_run(job, append, &vars, extra))
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
    // The binlog monitor reports under the slot metrics' names.
    common::wait_for_showing(
        Duration::from_secs(30),
        "the binlog monitor's wal_status",
        || {
            let Some(addr) = common::http_addr(&job) else { return false };
            let scrape = common::http_get(&addr, "/metrics").1;
            common::metric(&scrape, "walpipe_slot_wal_status", &[("job_name", &job), ("status", "reserved")])
                == Some(1.0)
                && common::metric(&scrape, "walpipe_slot_retained_wal_bytes", &[("job_name", &job)]).is_some()
        },
        || {
            let scrape =
                common::http_addr(&job).map(|addr| common::http_get(&addr, "/metrics").1).unwrap_or_default();
            scrape
                .lines()
                .filter(|l| l.contains("slot_wal_status") || l.contains("monitor"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
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

/// Every column type of the table in docs/src/guide/mysql.md, one row copied by the snapshot
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

/// MySQL's failure mode: the binlog expires under a stopped job. With
/// `when_needed` the next start finds its position purged, records the gap,
/// and copies every table again under a new snapshot, deletes made during
/// the gap included.
#[test]
fn a_purged_binlog_position_is_a_recorded_gap_and_a_new_copy() {
    let server = mariadb::Mariadb::start(&[]);
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("purged");
    let sink_db = cluster.fresh_db("mysql_purged");
    let job = format!("mysql_purged_{}", common::unique());
    server.sql(
        &source_db,
        "CREATE TABLE orders (id int PRIMARY KEY, qty int unsigned, price decimal(10,2), note varchar(50)); \
         INSERT INTO orders SELECT seq, seq, 1.25, 'first' FROM seq_1_to_50",
    );
    let url = server.url(&source_db);
    let start = |append| {
        let vars = [
            ("WALPIPE_SOURCE_URL", url.clone()),
            ("WALPIPE_SINK_URL", cluster.url(&sink_db)),
            ("WALPIPE_JOB_NAME", job.clone()),
            ("WALPIPE_TABLES", format!("{source_db}.orders")),
            ("WALPIPE_TABLE_MAPPINGS", format!("{source_db}.orders=public.orders")),
            ("WALPIPE_SNAPSHOT_MODE", "when_needed".to_string()),
            ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
        ];
        Running(common::spawn_run(&job, append, &vars, &[]))
    };
    let same = || {
        cluster
            .try_psql(&sink_db, &format!("SELECT {COLUMNS} FROM public.orders ORDER BY id"))
            .map(|t| t.replace('|', "\t"))
            == Some(server.sql(&source_db, &format!("SELECT {COLUMNS} FROM orders ORDER BY id")))
    };
    let run = start(false);
    common::wait_for_showing(Duration::from_secs(90), "the first copy", same, || common::run_log(&job));
    server.sql(&source_db, "INSERT INTO orders VALUES (51, 51, 1.25, 'streamed')");
    common::wait_for_showing(Duration::from_secs(60), "the streamed row", same, || common::run_log(&job));
    // The countdown: with an expiry set and the checkpoint's file rotated
    // away, the file expires an hour after the next one was created.
    server.sql("", "SET GLOBAL binlog_expire_logs_seconds = 3600; FLUSH BINARY LOGS");
    let expires_in = || {
        let addr = common::http_addr(&job)?;
        common::metric(
            &common::http_get(&addr, "/metrics").1,
            "walpipe_slot_expires_in_seconds",
            &[("job_name", &job)],
        )
    };
    common::wait_for_showing(
        Duration::from_secs(30),
        "the expiry countdown of the checkpoint's binlog file",
        || expires_in().is_some_and(|seconds| seconds > 3000.0 && seconds < 3600.0),
        || format!("walpipe_slot_expires_in_seconds = {:?}", expires_in()),
    );
    let mut run = run;
    let _ = std::process::Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status();
    assert!(run.0.wait().expect("exit").success(), "{}", common::run_log(&job));
    // The gap: changes the stopped job never reads, then the binlog they are in is purged.
    server.sql(&source_db, "DELETE FROM orders WHERE id <= 10; UPDATE orders SET note = 'in the gap' WHERE id = 20; INSERT INTO orders VALUES (60, 60, 9.99, 'in the gap')");
    // MariaDB purges a file only once its transactions are durable in InnoDB
    // (its binlog checkpoint): purge until the first file is gone.
    common::wait_for(Duration::from_secs(60), "the first binlog file to be purged", || {
        let current = server.sql("", "FLUSH BINARY LOGS; SHOW MASTER STATUS");
        let file =
            current.lines().last().and_then(|line| line.split('\t').next()).unwrap_or_default().to_string();
        server.sql("", &format!("PURGE BINARY LOGS TO '{file}'"));
        !server.sql("", "SHOW BINARY LOGS").contains("binlog.000001")
    });
    let run = start(true);
    common::wait_for_showing(
        Duration::from_secs(90),
        "the sink to equal the source after the gap",
        same,
        || common::run_log(&job),
    );
    let log = common::run_log(&job);
    assert!(log.contains("was purged (binlog_expire_logs_seconds, or PURGE BINARY LOGS): changes after the gap start are lost"), "{log}");
    let gaps =
        cluster.psql(&sink_db, &format!("SELECT count(*) FROM walpipe.data_gaps WHERE job_name = '{job}'"));
    assert_eq!(gaps, "1", "the gap is recorded");
    drop(run);
}

/// A server that logs statements, not rows, is refused with the fix, by
/// `walpipe check` and by the job.
#[test]
fn a_statement_based_binlog_and_missing_privileges_are_refused_with_the_fix() {
    let server = mariadb::Mariadb::start(&["--binlog-format=STATEMENT"]);
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("statement");
    let sink_db = cluster.fresh_db("mysql_statement");
    server.sql(&source_db, "CREATE TABLE orders (id int PRIMARY KEY)");
    let output = common::walpipe()
        .arg("check")
        .env("WALPIPE_SOURCE_URL", server.url(&source_db))
        .env("WALPIPE_SINK_URL", cluster.url(&sink_db))
        .output()
        .expect("walpipe check");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{printed}");
    assert!(
        printed.contains("binlog_format = STATEMENT, but walpipe needs ROW: set binlog_format=ROW in the server's configuration"),
        "{printed}"
    );
    assert!(
        printed.contains("binlog_row_metadata = FULL"),
        "the settings that hold are listed too: {printed}"
    );
    // A user with SELECT only: each missing privilege is one finding with its GRANT.
    server.sql(
        "",
        &format!("CREATE USER reader@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON `{source_db}`.* TO reader@'%'"),
    );
    let host = server.url(&source_db).rsplit_once('@').map(|(_, host)| host.to_string()).unwrap_or_default();
    let reader_url = format!("mysql://reader:pw@{host}");
    let output = common::walpipe()
        .arg("check")
        .env("WALPIPE_SOURCE_URL", &reader_url)
        .env("WALPIPE_SINK_URL", cluster.url(&sink_db))
        .output()
        .expect("walpipe check");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{printed}");
    for fix in [
        "the user lacks REPLICATION SLAVE: run GRANT REPLICATION SLAVE ON *.* TO the walpipe user",
        "the user lacks REPLICATION CLIENT: run GRANT REPLICATION CLIENT ON *.* TO the walpipe user",
        "which the chunked copy needs for its signal table walpipe_signal: run GRANT CREATE, INSERT, UPDATE ON",
    ] {
        assert!(printed.contains(fix), "{fix:?} in {printed}");
    }
}

/// `ALTER TABLE` arrives as a query event; the next rows' TABLE_MAP names
/// the new columns, and the mirror follows them by name: an added column
/// fills, a dropped one goes, and a dropped and re-added one starts empty.
#[test]
fn the_mirror_follows_columns_added_and_dropped_on_mariadb() {
    let server = mariadb::server();
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("alter");
    let sink_db = cluster.fresh_db("mysql_alter");
    let job = format!("mysql_alter_{}", common::unique());
    server.sql(
        &source_db,
        "CREATE TABLE orders (id int PRIMARY KEY, qty int unsigned, price decimal(10,2), note varchar(50), extra int); \
         INSERT INTO orders VALUES (1, 1, 1.00, 'one', 7)",
    );
    let run = start(cluster, &source_db, &sink_db, &job, false);
    let sink = |sql: &str| cluster.try_psql(&sink_db, sql).unwrap_or_default();
    common::wait_for_showing(
        Duration::from_secs(90),
        "the copied row",
        || sink("SELECT count(*) FROM public.orders") == "1",
        || common::run_log(&job),
    );
    server.sql(
        &source_db,
        "ALTER TABLE orders ADD COLUMN colour varchar(10); INSERT INTO orders VALUES (2, 2, 2.00, 'two', 8, 'red'); \
         ALTER TABLE orders DROP COLUMN extra; INSERT INTO orders VALUES (3, 3, 3.00, 'three', 'blue'); \
         ALTER TABLE orders DROP COLUMN note; ALTER TABLE orders ADD COLUMN note varchar(50); \
         INSERT INTO orders (id, qty, price, colour, note) VALUES (4, 4, 4.00, 'green', 'four again')",
    );
    common::wait_for_showing(
        Duration::from_secs(60),
        "the rows after the ALTERs",
        || sink("SELECT count(*) FROM public.orders") == "4",
        || common::run_log(&job),
    );
    let columns = sink(
        "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'orders' AND column_name NOT LIKE '\\_walpipe%'",
    );
    assert_eq!(columns, "colour,id,note,price,qty", "extra is dropped, colour added");
    assert_eq!(
        sink(
            "SELECT id || ':' || coalesce(colour, '-') || ':' || coalesce(note, '-') FROM public.orders ORDER BY id"
        ),
        "1:-:-\n2:red:-\n3:blue:-\n4:green:four again",
        "rows keep their values by column name; the re-added note starts empty"
    );
    drop(run);
}

/// kill -9 five times while a mixed workload writes; after the last start
/// the sink equals the source.
#[test]
fn five_kills_during_a_mixed_workload_lose_and_double_nothing() {
    let (_, cluster, source_db, sink_db, job) = orders_job(
        "kills",
        "mysql_kills",
        "INSERT INTO orders SELECT seq, seq, 1.00, 'start' FROM seq_1_to_1000",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workload = {
        let (stop, db) = (stop.clone(), source_db.clone());
        std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                round += 1;
                let id = 1000 + round;
                mariadb::server().sql(
                    &db,
                    &format!(
                        "START TRANSACTION; INSERT INTO orders VALUES ({id}, {round}, 2.00, 'new'); \
                         UPDATE orders SET qty = qty + 1, note = 'updated {round}' WHERE id = {}; \
                         DELETE FROM orders WHERE id = {}; COMMIT",
                        1 + round % 900,
                        (round * 7) % 1000 + 1
                    ),
                );
            }
        })
    };
    // Progress: the position the sink committed with its rows.
    let applied = || {
        cluster
            .try_psql(
                &sink_db,
                &format!("SELECT applied_lsn::text FROM walpipe.checkpoints WHERE job_name = '{job}'"),
            )
            .filter(|text| !text.is_empty())
    };
    let mut run = start(cluster, &source_db, &sink_db, &job, false);
    for kill in 0..5 {
        // Each run must have applied something before it is killed.
        let before = applied();
        common::wait_for_showing(
            Duration::from_secs(90),
            &format!("progress before kill {kill}"),
            || applied().is_some_and(|now| Some(&now) != before.as_ref()),
            || common::run_log(&job),
        );
        drop(run); // SIGKILL
        run = start(cluster, &source_db, &sink_db, &job, true);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    workload.join().expect("the workload ends");
    converge(cluster, &source_db, &sink_db, &job, "the sink to equal the source after five kills");
    drop(run);
}

/// The checkpoint rewound to the snapshot's position: the restart replays
/// every streamed change again, and the per-row guard keeps the sink equal
/// to the source.
#[test]
fn a_replay_from_a_rewound_checkpoint_leaves_the_sink_identical() {
    let (server, cluster, source_db, sink_db, job) = orders_job(
        "rewind",
        "mysql_rewind",
        "INSERT INTO orders SELECT seq, seq, 1.00, 'start' FROM seq_1_to_100",
    );
    let checkpoint = || {
        cluster
            .try_psql(
                &sink_db,
                &format!("SELECT applied_lsn::text FROM walpipe.checkpoints WHERE job_name = '{job}'"),
            )
            .filter(|text| !text.is_empty())
    };
    let run = start(cluster, &source_db, &sink_db, &job, false);
    converge(cluster, &source_db, &sink_db, &job, "the copy");
    let snapshot_position = checkpoint().expect("the snapshot's checkpoint");
    server.sql(
        &source_db,
        "UPDATE orders SET qty = qty * 10, note = 'ten times' WHERE id <= 50; DELETE FROM orders WHERE id > 90; \
         INSERT INTO orders SELECT seq, seq, 3.00, 'late' FROM seq_101_to_150; UPDATE orders SET note = 'last' WHERE id = 101",
    );
    converge(cluster, &source_db, &sink_db, &job, "the streamed changes");
    let mut run = run;
    let _ = std::process::Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status();
    assert!(run.0.wait().expect("exit").success(), "{}", common::run_log(&job));
    let before = sink_rows(cluster, &sink_db);
    cluster.psql(
        &sink_db,
        &format!(
            "UPDATE walpipe.checkpoints SET applied_lsn = '{snapshot_position}' WHERE job_name = '{job}'"
        ),
    );
    let run = start(cluster, &source_db, &sink_db, &job, true);
    common::wait_for_showing(
        Duration::from_secs(90),
        "the replay to pass the old checkpoint",
        || checkpoint().is_some_and(|now| common::lsn(&now) > common::lsn(&snapshot_position)),
        || common::run_log(&job),
    );
    server.sql(&source_db, "INSERT INTO orders VALUES (200, 1, 1.00, 'after the replay')");
    converge(cluster, &source_db, &sink_db, &job, "the sink after the replay");
    let after = sink_rows(cluster, &sink_db)
        .map(|rows| rows.lines().filter(|l| !l.starts_with("200\t")).collect::<Vec<_>>().join("\n"));
    assert_eq!(after, before, "the replayed changes changed nothing");
    drop(run);
}

/// `walpipe tail` on a MariaDB source: the change JSON of every type, from
/// a position to an end position.
#[test]
fn tail_prints_the_change_json_of_every_type() {
    let server = mariadb::server();
    let source_db = server.fresh_db("tail");
    server.sql(
        &source_db,
        "CREATE TABLE kinds (id int PRIMARY KEY, bu bigint unsigned, de decimal(12,3), d double, bi bit(5), \
           dt datetime(6), ts timestamp(6) NULL, v varchar(20) CHARACTER SET utf8mb4, bl blob, j json, e enum('s','l'), s set('x','y','z'))",
    );
    let position = |sql: &str| binlog_position(&server.sql(&source_db, sql));
    let from = position("SHOW MASTER STATUS");
    let to = position(
        "INSERT INTO kinds VALUES (1, 18446744073709551615, -1234.567, 2.5, b'10101', '2024-02-29 13:14:15.123456', \
           '2024-02-29 13:14:15.5', 'zwölf 🦀', x'00ff', '{\"a\": [1, 2]}', 'l', 'x,z'); \
         UPDATE kinds SET v = 'changed' WHERE id = 1; DELETE FROM kinds WHERE id = 1; SHOW MASTER STATUS",
    );
    let output = common::run_with_timeout(
        common::walpipe().args([
            "tail",
            "--source",
            &server.url(&source_db),
            "--from",
            &from,
            "--endpos",
            &to,
        ]),
        Duration::from_secs(60),
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        printed.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    let ops: Vec<&str> = lines.iter().filter_map(|l| l["op"].as_str()).collect();
    assert_eq!(ops, ["schema", "insert", "update", "delete"], "{printed}");
    let new = &lines[1]["new"];
    assert_eq!(new["bu"], serde_json::json!(18446744073709551615u64));
    assert_eq!(new["de"], "-1234.567");
    assert_eq!(new["d"], 2.5);
    assert_eq!(new["bi"], "10101");
    assert_eq!(new["dt"], "2024-02-29T13:14:15.123456");
    assert_eq!(new["ts"], "2024-02-29T13:14:15.500000Z");
    assert_eq!(new["v"], "zwölf 🦀");
    assert_eq!(new["bl"], "\\x00ff");
    assert_eq!(new["e"], "l");
    assert_eq!(new["s"], "x,z");
    assert_eq!(lines[2]["old"]["v"], "zwölf 🦀", "the full old row (binlog_row_image=FULL)");
    assert_eq!(lines[3]["old"]["id"], 1);
}

/// A sink outside Postgres (stdout, with its state store in Postgres): the
/// blocking snapshot's rows as `snapshot` change lines, then the job ends
/// (`initial_only`).
#[test]
fn a_mariadb_table_is_copied_as_snapshot_lines_to_stdout() {
    let server = mariadb::server();
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("stdout");
    let state_db = cluster.fresh_db("mysql_state");
    let job = format!("mysql_stdout_{}", common::unique());
    server.sql(
        &source_db,
        "CREATE TABLE orders (id int PRIMARY KEY, note varchar(20)); INSERT INTO orders SELECT seq, concat('n', seq) FROM seq_1_to_30",
    );
    let output = common::run_with_timeout(
        common::walpipe()
            .arg("run")
            .env("WALPIPE_SOURCE_URL", server.url(&source_db))
            .env("WALPIPE_SINK_URL", "stdout://")
            .env("WALPIPE_STATE_URL", cluster.url(&state_db))
            .env("WALPIPE_JOB_NAME", &job)
            .env("WALPIPE_SNAPSHOT_MODE", "initial_only")
            .env("WALPIPE_HTTP_ADDR", "127.0.0.1:0"),
        Duration::from_secs(90),
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        printed.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(lines.len(), 30, "{printed}");
    assert!(lines.iter().all(|l| l["op"] == "snapshot"), "{printed}");
    assert_eq!(lines[29]["new"], serde_json::json!({"id": 30, "note": "n30"}));
}

/// A copy by each strategy while a workload updates, deletes and inserts
/// rows all over the copied key range: the sink ends equal to the source.
/// The incremental copy's chunks leave out what changed between their
/// watermarks; the blocking one reads one consistent snapshot.
fn a_copy_under_a_concurrent_workload_ends_equal(strategy: &str) {
    let (_, cluster, source_db, sink_db, job) = orders_job(
        &format!("during_{strategy}"),
        &format!("mysql_during_{strategy}"),
        "INSERT INTO orders SELECT seq, seq, 1.00, 'start' FROM seq_1_to_60000",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let workload = {
        let (stop, rounds, db) = (stop.clone(), rounds.clone(), source_db.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let round = rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                // Keys spread over the whole range, so that chunks meet them before and after they are read.
                let (updated, deleted) = ((round * 7919) % 60000 + 1, (round * 104729) % 60000 + 1);
                mariadb::server().sql(
                    &db,
                    &format!(
                        "START TRANSACTION; UPDATE orders SET qty = qty + 1, note = 'updated {round}' WHERE id BETWEEN {updated} AND {updated} + 20; \
                         DELETE FROM orders WHERE id = {deleted}; INSERT INTO orders VALUES ({}, {round}, 2.00, 'new') ON DUPLICATE KEY UPDATE note = 'back'; COMMIT",
                        (round * 31) % 60000 + 1
                    ),
                );
            }
        })
    };
    common::wait_for(Duration::from_secs(30), "the workload to write", || {
        rounds.load(std::sync::atomic::Ordering::SeqCst) > 5
    });
    let run = run_job(
        cluster,
        &source_db,
        &sink_db,
        &job,
        "orders",
        false,
        &[("WALPIPE_SNAPSHOT_STRATEGY", strategy)],
    );
    let copied = if strategy == "chunked" { "every chunk is read" } else { "snapshot done" };
    common::wait_for_showing(
        Duration::from_secs(120),
        "the copy to end",
        || common::run_log(&job).contains(copied),
        || common::run_log(&job),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    workload.join().expect("the workload ends");
    converge(cluster, &source_db, &sink_db, &job, "the sink to equal the source after a copy under writes");
    let log = common::run_log(&job);
    let (incremental, blocking) =
        (log.contains("no lock taken"), log.contains("FLUSH TABLES WITH READ LOCK"));
    assert_eq!((incremental, blocking), (strategy == "chunked", strategy != "chunked"), "{log}");
    drop(run);
}

#[test]
fn an_incremental_copy_under_a_concurrent_workload_ends_equal() {
    a_copy_under_a_concurrent_workload_ends_equal("chunked");
}

#[test]
fn a_blocking_copy_under_a_concurrent_workload_ends_equal() {
    a_copy_under_a_concurrent_workload_ends_equal("exported");
}

/// `RENAME TABLE` of a captured table while the job streams: the table
/// keeps its id under the new name, so the mirror follows it (a mapped
/// destination keeps its name and its rows), and the new name's changes
/// keep arriving.
#[test]
fn a_renamed_table_keeps_streaming_into_its_destination() {
    let (server, cluster, source_db, sink_db, job) = orders_job(
        "renamed",
        "mysql_renamed",
        "INSERT INTO orders SELECT seq, seq, 1.50, 'before' FROM seq_1_to_20",
    );
    let run = start(cluster, &source_db, &sink_db, &job, false);
    converge(cluster, &source_db, &sink_db, &job, "the copy");
    server.sql(
        &source_db,
        "RENAME TABLE orders TO orders_renamed; INSERT INTO orders_renamed VALUES (21, 21, 2.50, 'after'); \
         UPDATE orders_renamed SET note = 'after the rename' WHERE id = 1; DELETE FROM orders_renamed WHERE id = 2",
    );
    let renamed = || server.sql(&source_db, &format!("SELECT {COLUMNS} FROM orders_renamed ORDER BY id"));
    common::wait_for_showing(
        Duration::from_secs(60),
        "the renamed table's changes in the mapped destination",
        || sink_rows(cluster, &sink_db).as_deref() == Some(renamed().as_str()),
        || {
            let tables = cluster.try_psql(
                &sink_db,
                "SELECT string_agg(schemaname || '.' || tablename, ', ') FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'walpipe')",
            );
            format!("sink tables: {tables:?}\n{}", common::run_log(&job))
        },
    );
    assert!(common::run_log(&job).contains("a captured table was renamed"), "{}", common::run_log(&job));
    drop(run);
}

/// The outbox on MariaDB into a webhook: each outbox row becomes one event,
/// and `WALPIPE_OUTBOX_DELETE` deletes the rows once their events were
/// delivered (through a receiver that refuses one request in five).
#[test]
fn delivered_outbox_rows_become_events_and_are_deleted_on_mariadb() {
    use common::fakes::{Delivery, Mode, WebhookReceiver};
    let server = mariadb::server();
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("outbox");
    let state_db = cluster.fresh_db("mysql_outbox_state");
    let job = format!("mysql_outbox_{}", common::unique());
    server.sql(
        &source_db,
        "CREATE TABLE outbox (id bigint AUTO_INCREMENT PRIMARY KEY, aggregate_type varchar(50) NOT NULL, \
             aggregate_id varchar(50) NOT NULL, event_type varchar(50) NOT NULL, payload json NOT NULL)",
    );
    let receiver = WebhookReceiver::start(Mode::Flaky(0.2));
    let outbox = format!("{source_db}.outbox");
    let vars = [
        ("WALPIPE_SOURCE_URL", server.url(&source_db)),
        ("WALPIPE_SINK_URL", receiver.url.clone()),
        ("WALPIPE_STATE_URL", cluster.url(&state_db)),
        ("WALPIPE_JOB_NAME", job.clone()),
        ("WALPIPE_TABLES", outbox.clone()),
        ("WALPIPE_OUTBOX_TABLES", outbox),
        ("WALPIPE_OUTBOX_DELETE", "true".to_string()),
        ("WALPIPE_BATCH_SIZE", "10".to_string()),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    let run = Running(common::spawn_run(&job, false, &vars, &[]));
    common::wait_for_showing(
        Duration::from_secs(60),
        "the job streaming",
        || common::http_addr(&job).is_some(),
        || common::run_log(&job),
    );
    server.sql(
        &source_db,
        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) \
         SELECT 'order', seq, 'order.placed', json_object('n', seq) FROM seq_1_to_50",
    );
    let events = || -> std::collections::HashSet<String> {
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.accepted())
            .flat_map(Delivery::changes)
            .filter_map(|event| event["aggregate_id"].as_str().map(str::to_string))
            .collect()
    };
    let left = || server.sql(&source_db, "SELECT count(*) FROM outbox");
    common::wait_for_showing(
        Duration::from_secs(90),
        "every event delivered and every outbox row deleted",
        || events().len() == 50 && left() == "0",
        || format!("events: {}, rows left: {}\n{}", events().len(), left(), common::run_log(&job)),
    );
    let expected: std::collections::HashSet<String> = (1..=50).map(|n: i32| n.to_string()).collect();
    assert_eq!(events(), expected, "an event was lost or made up");
    drop(run);
}

/// TLS to the source: a server that refuses plain connections
/// (`require_secure_transport`) is checked and tailed, binlog included,
/// with `?require_ssl=true`; without it the connection is refused.
#[test]
fn a_source_that_requires_tls_is_read_over_tls() {
    let certs =
        std::env::temp_dir().join(format!("walpipe-mysql-tls-{}-{}", std::process::id(), common::unique()));
    std::fs::create_dir_all(&certs).expect("a directory for the certificate");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // mariadbd runs as mysql: it must read them.
    let readable = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&certs).status();
    assert!(readable.is_ok_and(|status| status.success()), "chmod the certificate");
    let (cert_arg, key_arg) =
        (format!("--ssl-cert={}", cert.display()), format!("--ssl-key={}", key.display()));
    let server = mariadb::Mariadb::start(&[&cert_arg, &key_arg, "--require-secure-transport=ON"]);
    let cluster = common::pg15_with(&common::options());
    let source_db = server.fresh_db("tls");
    let sink_db = cluster.fresh_db("mysql_tls");
    server.sql(&source_db, "CREATE TABLE t (id int PRIMARY KEY, note varchar(20))");
    let check = |url: &str| {
        let output = common::walpipe()
            .arg("check")
            .env("WALPIPE_SOURCE_URL", url)
            .env("WALPIPE_SINK_URL", cluster.url(&sink_db))
            .output()
            .expect("walpipe check");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let plain = check(&server.url(&source_db));
    assert!(
        plain.contains("could not connect to mysql://") && plain.contains("check WALPIPE_SOURCE_URL"),
        "{plain}"
    );
    let tls_url = format!("{}?require_ssl=true&verify_ca=false", server.url(&source_db));
    let checked = check(&tls_url);
    assert!(checked.contains("is reachable") && checked.contains("binlog_format = ROW"), "{checked}");
    let position = |sql: &str| binlog_position(&server.sql(&source_db, sql));
    let from = position("SHOW MASTER STATUS");
    let to = position("INSERT INTO t VALUES (1, 'over tls'); SHOW MASTER STATUS");
    let output = common::run_with_timeout(
        common::walpipe().args(["tail", "--source", &tls_url, "--from", &from, "--endpos", &to]),
        Duration::from_secs(60),
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains(r#""new":{"id":1,"note":"over tls"}"#), "{printed}");
    let _ = std::fs::remove_dir_all(&certs);
}
