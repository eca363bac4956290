//! `walpipe run` into a Postgres sink (mirror mode), end to end on real
//! servers: snapshot then stream, replay safety, kill -9 at random moments,
//! writes during the snapshot, and bad input. Source and sink are two
//! databases of the test binary's cluster.

mod common;

use common::{Cluster, fingerprint, query_lsn, run_log, start_run, stop_run, wait_for};
use std::process::Child;
use std::time::Duration;

const ORDERS_COLUMNS: &str = "region, id, status, amount, note, tags, doc, updated_at";
const ITEMS_COLUMNS: &str = "order_region, order_id, line, sku, qty";

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

fn setup(cluster: &Cluster, test: &str) -> (String, String) {
    let source = cluster.fresh_db(&format!("{test}_src"));
    let sink = cluster.fresh_db(&format!("{test}_sink"));
    cluster.psql(
        &source,
        "CREATE TABLE orders (region text, id int, status text NOT NULL, amount numeric(12,2), note text, \
                              tags text[], doc jsonb, updated_at timestamptz, PRIMARY KEY (region, id)); \
         ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL; \
         CREATE TABLE items (order_region text, order_id int, line int, sku text, qty int, \
                             PRIMARY KEY (order_region, order_id, line)); \
         INSERT INTO orders SELECT CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i, 'new', i * 1.25, \
                CASE WHEN i % 50 = 0 THEN repeat(md5(i::text), 100) ELSE 'short ' || i END, \
                ARRAY['t' || i, NULL], jsonb_build_object('n', i, 'tags', jsonb_build_array(i, 'x')), \
                '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute' \
         FROM generate_series(1, 2000) i; \
         INSERT INTO items SELECT CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i, l, 'sku-' || l, l \
         FROM generate_series(1, 2000) i, generate_series(1, 2) l;",
    );
    (source, sink)
}

fn converged(cluster: &Cluster, source: &str, sink: &str) -> bool {
    let same = |table: &str, columns: &str, key: &str| {
        let sink_print = fingerprint(cluster, sink, table, columns, key);
        sink_print.is_some() && sink_print == fingerprint(cluster, source, table, columns, key)
    };
    same("orders", ORDERS_COLUMNS, "region, id")
        && same("items", ITEMS_COLUMNS, "order_region, order_id, line")
}

fn wait_converged(cluster: &Cluster, source: &str, sink: &str, job: &str) {
    let started = std::time::Instant::now();
    while !converged(cluster, source, sink) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the sink did not converge; log:\n{}",
            run_log(job)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The job's retries so far, of every kind (`walpipe_job_retries_total`).
fn retries(job: &str) -> f64 {
    let scrape = common::http_get(&common::http_addr(job).expect("walpipe serves HTTP"), "/metrics").1;
    scrape
        .lines()
        .filter(|line| {
            line.starts_with("walpipe_job_retries_total{") && line.contains(&format!("job_name=\"{job}\""))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn kill9(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One transaction of the mixed workload, chosen by `n`.
fn workload_step(n: u64) -> String {
    let id = 1 + n * 7919 % 2000;
    let region = if id % 2 == 0 { "eu" } else { "us" };
    match n % 7 {
        0 => format!(
            "INSERT INTO orders VALUES ('{region}', {}, 'new', 1.50, repeat('n', 3000), ARRAY['x'], '{{\"new\": true}}', now()) ON CONFLICT DO NOTHING",
            10_000 + n
        ),
        1 => format!(
            "UPDATE orders SET status = 'paid', amount = amount + 1, updated_at = now() WHERE region = '{region}' AND id = {id}"
        ),
        2 => format!(
            "DELETE FROM items WHERE order_region = '{region}' AND order_id = {id}; DELETE FROM orders WHERE region = '{region}' AND id = {id}"
        ),
        // A primary-key change.
        3 => format!("UPDATE orders SET id = id + 100000 WHERE region = '{region}' AND id = {id}"),
        // Delete and re-insert one key in one transaction.
        4 => format!(
            "BEGIN; DELETE FROM orders WHERE region = '{region}' AND id = {id}; \
             INSERT INTO orders VALUES ('{region}', {id}, 'again', 9.99, 'reinserted', NULL, '[1,2]', now()) ON CONFLICT DO NOTHING; COMMIT"
        ),
        // Only a small column changes: the TOASTed note is unchanged.
        5 => format!(
            "UPDATE orders SET status = 'shipped' WHERE region = '{region}' AND id = {}",
            (id / 50).max(1) * 50
        ),
        _ => format!(
            "INSERT INTO items VALUES ('{region}', {id}, 3, 'extra', {n}) ON CONFLICT (order_region, order_id, line) DO UPDATE SET qty = EXCLUDED.qty"
        ),
    }
}

#[test]
fn snapshot_then_stream_mirrors_every_change() {
    let cluster = cluster();
    let (source, sink) = setup(cluster, "mirror");
    let job = format!("mirror_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_converged(cluster, &source, &sink, &job);
    for n in 0..140 {
        cluster.psql(&source, &workload_step(n));
    }
    cluster.psql(&source, "UPDATE orders SET status = 'toast kept' WHERE id % 50 = 0");
    // A key change of a row whose TOASTed note is unchanged: the note moves with it.
    cluster.psql(&source, "UPDATE orders SET id = id + 500000 WHERE region = 'eu' AND id = 100");
    cluster.psql(&source, "TRUNCATE items; INSERT INTO items VALUES ('eu', 2, 1, 'after truncate', 1)");
    wait_converged(cluster, &source, &sink, &job);
    // Unchanged TOAST kept its value, never null.
    let nulls = cluster.psql(&sink, "SELECT count(*) FROM orders WHERE note IS NULL");
    assert_eq!(nulls, "0");
    assert!(stop_run(child).success(), "graceful stop; log:\n{}", run_log(&job));
    let log = run_log(&job);
    assert!(log.contains("snapshot public.orders: 2000/2000 rows (100%)"), "{log}");
    // Only _walpipe_ metadata was added.
    let extra = cluster.psql(
        &sink,
        "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 'orders' \
         AND column_name NOT IN ('region','id','status','amount','note','tags','doc','updated_at')",
    );
    assert_eq!(extra, "_walpipe_lsn");
}

#[test]
fn kill_9_at_random_moments_never_loses_or_doubles_a_change() {
    let cluster = cluster();
    let (source, sink) = setup(cluster, "crash");
    let job = format!("crash_{}", std::process::id());
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut random = seed | 1;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };

    let writer = {
        let source = source.clone();
        std::thread::spawn(move || {
            for n in 0..400 {
                cluster.psql(&source, &workload_step(n));
            }
        })
    };
    for _ in 0..5 {
        let child = start_run(cluster, &source, &sink, &job, &[]);
        std::thread::sleep(Duration::from_millis(300 + next() % 1500));
        kill9(child);
    }
    writer.join().expect("workload");
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_converged(cluster, &source, &sink, &job);
    assert!(stop_run(child).success());
}

#[test]
fn replaying_changes_leaves_the_sink_identical() {
    let cluster = cluster();
    let (source, sink) = setup(cluster, "replay");
    let job = format!("replay_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_converged(cluster, &source, &sink, &job);
    // A copy of the slot, and of the checkpoint, as they stand now.
    let slot = format!("walpipe_{job}");
    cluster.psql(&source, &format!("SELECT pg_copy_logical_replication_slot('{slot}', '{slot}_copy')"));
    let rewound =
        cluster.psql(&sink, &format!("SELECT applied_lsn FROM walpipe.checkpoints WHERE job_name = '{job}'"));
    for n in 0..140 {
        cluster.psql(&source, &workload_step(n));
    }
    wait_converged(cluster, &source, &sink, &job);
    assert!(stop_run(child).success());
    let before = fingerprint(cluster, &sink, "orders", ORDERS_COLUMNS, "region, id");

    // Rewind: the same job resumes from the copied slot at the old checkpoint and applies everything again.
    cluster.psql(
        &sink,
        &format!("UPDATE walpipe.checkpoints SET slot_name = '{slot}_copy', applied_lsn = '{rewound}' WHERE job_name = '{job}'"),
    );
    let child = start_run(cluster, &source, &sink, &job, &[("WALPIPE_SLOT_NAME", &format!("{slot}_copy"))]);
    wait_for(Duration::from_secs(60), "the replay to catch up", || {
        let confirmed = cluster.psql(
            &source,
            &format!("SELECT confirmed_flush_lsn >= pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = '{slot}_copy'"),
        );
        confirmed == "t"
    });
    assert!(stop_run(child).success());
    assert!(run_log(&job).contains(&format!("applied={rewound}")), "resumed from the rewound checkpoint");
    assert_eq!(fingerprint(cluster, &sink, "orders", ORDERS_COLUMNS, "region, id"), before);
    assert!(converged(cluster, &source, &sink));
}

#[test]
fn writes_during_the_snapshot_are_neither_lost_nor_doubled() {
    let cluster = cluster();
    let (source, sink) = setup(cluster, "handoff");
    cluster
        .psql(&source, "INSERT INTO items SELECT 'big', i, 1, 'bulk', i FROM generate_series(1, 300000) i");
    let job = format!("handoff_{}", std::process::id());
    let writer = {
        let source = source.clone();
        std::thread::spawn(move || {
            for n in 0..150 {
                cluster.psql(&source, &workload_step(n));
                cluster.psql(
                    &source,
                    &format!(
                        "UPDATE items SET qty = qty + 1 WHERE order_region = 'big' AND order_id = {}",
                        1 + n * 1999 % 300000
                    ),
                );
            }
        })
    };
    // Two tables copied at once, each worker on the same exported snapshot.
    let child = start_run(cluster, &source, &sink, &job, &[("WALPIPE_PARALLEL_TABLES", "2")]);
    writer.join().expect("writer");
    wait_converged(cluster, &source, &sink, &job);
    assert!(stop_run(child).success());
}

#[test]
fn a_table_without_a_key_is_refused_with_the_fix() {
    let cluster = cluster();
    let source = cluster.fresh_db("nokey_src");
    let sink = cluster.fresh_db("nokey_sink");
    cluster.psql(&source, "CREATE TABLE events (at timestamptz, what text)");
    let job = format!("nokey_{}", std::process::id());
    let mut child = start_run(cluster, &source, &sink, &job, &[]);
    let status = child.wait().expect("wait");
    assert!(!status.success());
    let log = run_log(&job);
    assert!(
        log.contains("public.events")
            && log.contains("ALTER TABLE \"public\".\"events\" REPLICA IDENTITY FULL"),
        "{log}"
    );
}

#[test]
fn an_unreachable_sink_is_retried_and_nothing_is_confirmed() {
    let cluster = cluster();
    let source = cluster.fresh_db("nosink_src");
    cluster.psql(&source, "CREATE TABLE t (id int PRIMARY KEY)");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let job = format!("nosink_{}", std::process::id());
    let child = common::walpipe()
        .arg("run")
        .env("WALPIPE_SOURCE_URL", cluster.url(&source))
        .env("WALPIPE_SINK_URL", format!("postgres://postgres@127.0.0.1:{closed}/db"))
        .env("WALPIPE_JOB_NAME", &job)
        .env("WALPIPE_HTTP_ADDR", "127.0.0.1:0")
        .stderr(
            std::fs::File::create(std::env::temp_dir().join(format!("walpipe-run-{job}.log"))).expect("log"),
        )
        .spawn()
        .expect("start");
    wait_for(Duration::from_secs(20), "two retries", || run_log(&job).matches("retrying in").count() >= 2);
    // The sink holds the state store too: nothing starts, the job is pending and not ready.
    let addr = common::http_addr(&job).expect("walpipe serves HTTP");
    let (_, scrape) = common::http_get(&addr, "/metrics");
    let (status, body) = common::http_get(&addr, "/readyz");
    assert!(stop_run(child).success());
    let state = common::metric(&scrape, "walpipe_job_state", &[("job_name", &job), ("state", "pending")]);
    assert_eq!(state, Some(1.0), "{scrape}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&job), "{body}");
    let slots = cluster.psql(
        &source,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walpipe_{job}'"),
    );
    assert_eq!(slots, "0", "no slot was created before the sink was reachable");
    assert!(run_log(&job).contains(&format!("127.0.0.1:{closed}")));
}

#[test]
fn heartbeats_come_back_through_the_stream_and_move_the_slot() {
    let cluster = cluster();
    let source = cluster.fresh_db("heartbeat_src");
    let sink = cluster.fresh_db("heartbeat_sink");
    cluster.psql(&source, "CREATE TABLE quiet (id int PRIMARY KEY)");
    let job = format!("heartbeat_{}", std::process::id());
    let child = start_run(
        cluster,
        &source,
        &sink,
        &job,
        &[("WALPIPE_HEARTBEAT_INTERVAL_MS", "200"), ("WALPIPE_LOG", "walpipe=debug")],
    );
    let slot = format!("walpipe_{job}");
    let confirmed = || {
        query_lsn(
            cluster,
            &source,
            &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
    };
    wait_for(Duration::from_secs(30), "the slot", || confirmed().is_some());
    let first = confirmed().expect("slot");
    wait_for(Duration::from_secs(30), "heartbeats to return", || {
        run_log(&job).matches("heartbeat returned").count() >= 3
    });
    wait_for(Duration::from_secs(30), "the slot to move on heartbeats alone", || {
        confirmed().is_some_and(|now| now > first)
    });
    assert!(stop_run(child).success());
}

#[test]
fn changelog_mode_logs_every_change_once_with_full_old_rows() {
    let cluster = cluster();
    let source = cluster.fresh_db("changelog_src");
    let sink = cluster.fresh_db("changelog_sink");
    cluster.psql(
        &source,
        "CREATE TABLE people (id int PRIMARY KEY, name text, age int); ALTER TABLE people REPLICA IDENTITY FULL; \
         INSERT INTO people VALUES (1, 'ann', 30), (2, 'bob', 40), (3, 'cy', 50)",
    );
    let job = format!("changelog_{}", std::process::id());
    let mode = [("WALPIPE_SINK_MODE", "changelog")];
    let count = |filter: &str| {
        cluster.try_psql(&sink, &format!("SELECT count(*) FROM people WHERE {filter}")).unwrap_or_default()
    };
    let child = start_run(cluster, &source, &sink, &job, &mode);
    wait_for(Duration::from_secs(60), "the snapshot rows", || count("_walpipe_op = 'snapshot'") == "3");
    for n in 0..15 {
        cluster.psql(&source, &format!("UPDATE people SET age = age + 1 WHERE id = {}", 1 + n % 3));
    }
    kill9(child);
    let child = start_run(cluster, &source, &sink, &job, &mode);
    for n in 15..30 {
        cluster.psql(&source, &format!("UPDATE people SET age = age + 1 WHERE id = {}", 1 + n % 3));
    }
    cluster.psql(&source, "DELETE FROM people WHERE id = 3");
    wait_for(Duration::from_secs(60), "every change", || count("_walpipe_op <> 'schema'") == "34");
    assert!(stop_run(child).success());
    assert_eq!(count("_walpipe_op = 'update'"), "30", "each update once, despite the kill -9 and the replay");
    assert_eq!(
        count("_walpipe_op = 'schema'"),
        "1",
        "the shape once, though announced again after the kill -9"
    );
    let deleted = cluster.psql(&sink, "SELECT old::text FROM people WHERE _walpipe_op = 'delete'");
    assert_eq!(deleted, r#"{"id": 3, "age": 60, "name": "cy"}"#, "the full row before the delete");
    let snapshot = cluster
        .psql(&sink, "SELECT new::text FROM people WHERE _walpipe_op = 'snapshot' AND key->>'id' = '1'");
    assert_eq!(snapshot, r#"{"id": 1, "age": 30, "name": "ann"}"#);
}

#[test]
fn cut_connections_to_source_and_sink_are_retried_without_loss() {
    let cluster = cluster();
    let (source, sink) = setup(cluster, "cut");
    let job = format!("cut_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_converged(cluster, &source, &sink, &job);
    for round in 0..3u64 {
        for n in 0..20 {
            cluster.psql(&source, &workload_step(round * 20 + n));
        }
        // The walsender (source side) and every walpipe session in the sink database.
        cluster.psql(
            &source,
            &format!("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walpipe_{job}' AND active_pid IS NOT NULL"),
        );
        cluster.psql(
            "postgres",
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{sink}' AND application_name = 'walpipe'"),
        );
    }
    wait_converged(cluster, &source, &sink, &job);
    assert!(retries(&job) >= 1.0, "the cuts were retried: {}", run_log(&job));
    assert!(stop_run(child).success(), "{}", run_log(&job));
}

#[test]
fn a_job_outlives_more_transient_failures_than_its_retry_budget_when_it_is_healthy_between_them() {
    let cluster = cluster();
    let (source, sink) = setup(cluster, "budget");
    let job = format!("budget_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_converged(cluster, &source, &sink, &job);
    let slot = format!("walpipe_{job}");
    let walsender = || {
        cluster
            .try_psql(
                &source,
                &format!("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )
            .unwrap_or_default()
    };
    // Twelve cuts, two more than the budget of ten in a row. Before each
    // one the job is healthy: its new position is confirmed to the source.
    const CUTS: u64 = 12;
    for cut in 0..CUTS {
        cluster.psql(&source, &workload_step(cut));
        let written = common::lsn(&cluster.current_lsn(&source));
        wait_for(Duration::from_secs(60), "the change's position confirmed", || {
            query_lsn(
                cluster,
                &source,
                &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )
            .is_some_and(|confirmed| confirmed >= written)
        });
        let pid = walsender();
        cluster.psql(&source, &format!("SELECT pg_terminate_backend({pid})"));
        wait_for(Duration::from_secs(60), "the job to stream again after the cut", || {
            let now = walsender();
            !now.is_empty() && now != pid
        });
    }
    wait_converged(cluster, &source, &sink, &job);
    #[allow(clippy::cast_precision_loss)]
    let cuts = CUTS as f64;
    let retried = retries(&job);
    assert!(retried >= cuts, "every cut was retried ({retried} retries): {}", run_log(&job));
    let scrape = common::http_get(&common::http_addr(&job).expect("walpipe serves HTTP"), "/metrics").1;
    assert_eq!(
        common::metric(&scrape, "walpipe_job_state", &[("job_name", &job), ("state", "running")]),
        Some(1.0)
    );
    assert!(stop_run(child).success(), "{}", run_log(&job));
}

#[test]
fn the_checkpoint_follows_the_slot_while_the_source_is_quiet() {
    let cluster = cluster();
    let source = cluster.fresh_db("idle_ckpt_src");
    let sink = cluster.fresh_db("idle_ckpt_sink");
    let elsewhere = cluster.fresh_db("idle_ckpt_other");
    cluster.psql(&source, "CREATE TABLE t (id int PRIMARY KEY)");
    cluster.psql(&elsewhere, "CREATE TABLE churn (pad text)");
    let job = format!("idle_ckpt_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[("WALPIPE_HEARTBEAT_INTERVAL_MS", "0")]);
    let applied = || {
        query_lsn(
            cluster,
            &sink,
            &format!("SELECT applied_lsn FROM walpipe.checkpoints WHERE job_name = '{job}'"),
        )
    };
    wait_for(Duration::from_secs(60), "the first checkpoint", || applied().is_some());
    let first = applied().expect("checkpoint");
    // Only another database writes: nothing reaches the sink but the slot's position.
    cluster.psql(&elsewhere, "INSERT INTO churn SELECT repeat('x', 100) FROM generate_series(1, 20000)");
    let written = common::lsn(&cluster.current_lsn(&elsewhere));
    wait_for(Duration::from_secs(90), "the checkpoint to pass the other database's WAL", || {
        cluster.psql("postgres", "SELECT pg_logical_emit_message(false, 'other', 'tick')");
        applied().is_some_and(|lsn| lsn >= written)
    });
    assert!(applied().expect("checkpoint") > first);
    assert!(stop_run(child).success());
}

#[test]
fn the_initial_copy_goes_binary_where_every_type_is_built_in_and_text_elsewhere() {
    let cluster = cluster();
    let source = cluster.fresh_db("binary_copy_src");
    let sink = cluster.fresh_db("binary_copy_sink");
    let typed = "id, amount, at, day, span, doc, js, tags, grid, raw, ratio, small, u, flag, label";
    cluster.psql(
        &source,
        "CREATE TABLE typed (id bigint PRIMARY KEY, amount numeric(12,2), at timestamptz, day date, \
                             span interval, doc jsonb, js json, tags text[], grid int[], raw bytea, \
                             ratio float8, small real, u uuid, flag boolean, label varchar(20)); \
         INSERT INTO typed SELECT i, i * 1.25, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second', \
                '2026-01-01'::date + i, i * interval '1 minute', jsonb_build_object('n', i, 'a', jsonb_build_array(i, 'x')), \
                '{\"k\": 1}', ARRAY['t' || i, NULL, ''], ARRAY[[i, 2], [3, NULL]], decode(lpad(to_hex(i), 8, '0'), 'hex'), \
                i / 3.0, i / 7.0, md5(i::text)::uuid, i % 2 = 0, 'label ' || i \
         FROM generate_series(1, 3000) i; \
         INSERT INTO typed VALUES (0, 'NaN', 'infinity', '-infinity', '-1 day', 'null', '[]', '{}', '{}', '\\x00ff00', \
                'NaN', '-0', NULL, NULL, ''), \
                (-1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL); \
         CREATE TYPE mood AS ENUM ('calm', 'busy'); \
         CREATE DOMAIN positive AS int CHECK (VALUE > 0); \
         CREATE TABLE fallback (id int PRIMARY KEY, m mood, p positive, amount numeric); \
         INSERT INTO fallback SELECT i, CASE WHEN i % 2 = 0 THEN 'calm'::mood ELSE 'busy' END, i, i / 8.0 \
         FROM generate_series(1, 500) i;",
    );
    let job = format!("binary_copy_{}", std::process::id());
    let mut child = start_run(cluster, &source, &sink, &job, &[("WALPIPE_SNAPSHOT_MODE", "initial_only")]);
    let status = child.wait().expect("wait");
    let log = run_log(&job);
    assert!(status.success(), "{log}");
    assert!(log.contains("snapshot public.typed: COPY binary"), "{log}");
    assert!(
        log.contains("snapshot public.fallback: COPY text, because column m is not of a built-in type"),
        "{log}"
    );
    for (table, columns) in [("typed", typed), ("fallback", "id, m, p, amount")] {
        let copied = fingerprint(cluster, &sink, table, columns, "id");
        assert!(copied.is_some(), "{table} was not copied:\n{log}");
        assert_eq!(copied, fingerprint(cluster, &source, table, columns, "id"), "{table}");
    }
    assert!(fingerprint(cluster, &sink, "typed", "id", "id").is_some_and(|print| print.starts_with("3002:")));
}

#[test]
fn a_few_rows_go_in_as_upserts_and_more_with_copy_each_writing_what_copy_text_writes() {
    let cluster = cluster();
    let source = cluster.fresh_db("new_rows_src");
    let sink = cluster.fresh_db("new_rows_sink");
    let columns = "id, amount, at, span, doc, js, tags, grid, raw, ratio, small, u, flag, label, note, m, p";
    cluster.psql(
        &source,
        "CREATE TYPE mood AS ENUM ('calm', 'so so'); CREATE DOMAIN positive AS int CHECK (VALUE > 0); \
         CREATE TABLE typed (id bigint PRIMARY KEY, amount numeric(12,2), at timestamptz, span interval, \
                             doc jsonb, js json, tags text[], grid int[], raw bytea, ratio float8, small real, \
                             u uuid, flag boolean, label varchar(20), note text, m mood, p positive)",
    );
    let job = format!("new_rows_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_for(Duration::from_secs(60), "the destination", || {
        fingerprint(cluster, &sink, "typed", "id", "id").is_some()
    });
    // Which statement wrote each row (a few rows' upserts give their
    // values as parameters), and a row that exists already, as after a replay.
    cluster.psql(
        &sink,
        "CREATE TABLE writes (id bigint, statement text); \
         CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO writes VALUES (NEW.id, CASE WHEN current_query() LIKE 'COPY%' THEN 'COPY' \
                                                  WHEN current_query() LIKE '%VALUES ($1, $2%' THEN 'VALUES' \
                                                  ELSE 'staged' END); \
           RETURN NULL; END $$; \
         CREATE TRIGGER log_write AFTER INSERT OR UPDATE ON typed FOR EACH ROW EXECUTE FUNCTION log_write(); \
         INSERT INTO typed (id, note) VALUES (5, 'stale'); DELETE FROM writes;",
    );
    let rows = |range: &str| {
        format!(
            "INSERT INTO typed SELECT i, i * 1.255, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second', \
                    i * interval '1 minute', jsonb_build_object('n', i, 'a', jsonb_build_array(i, 'x')), '{{\"k\": [1, 2]}}', \
                    ARRAY['t' || i, NULL, '', 'a,b'], ARRAY[[i, 2], [3, NULL]], decode(lpad(to_hex(i), 8, '0'), 'hex'), \
                    i / 3.0, i / 7.0, md5(i::text)::uuid, i % 2 = 0, 'label ' || i, \
                    E'tab\\there, line\\nnext, back\\\\slash, ''quoted'', \\\\N ' || i, 'so so', i \
             FROM generate_series({range}) i"
        )
    };
    let sink_db = sink.as_str();
    let landed = |count: i64| {
        move || {
            cluster.try_psql(sink_db, "SELECT count(*) FROM writes").is_some_and(|n| n == count.to_string())
        }
    };
    cluster.psql(
        &source,
        "INSERT INTO typed VALUES (1, 'NaN', 'infinity', '-1 day', 'null', '[]', '{}', '{}', '\\x00ff00', 'NaN', '-0', \
                 NULL, NULL, '', '', 'calm', 1), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                 NULL, NULL, NULL, NULL, NULL)",
    );
    wait_for(Duration::from_secs(60), "two rows", landed(2));
    cluster.psql(&source, &rows("10, 12"));
    wait_for(Duration::from_secs(60), "three rows", landed(5));
    cluster.psql(&source, &rows("100, 139"));
    wait_for(Duration::from_secs(60), "forty rows", landed(45));
    assert_eq!(
        cluster.psql(&sink, "SELECT statement, count(*) FROM writes GROUP BY statement ORDER BY statement"),
        "COPY|40\nVALUES|5",
        "{}",
        run_log(&job)
    );
    // A replayed row and an update: upserts too.
    cluster.psql(&source, &format!("{}; UPDATE typed SET note = 'updated' WHERE id = 10", rows("5, 5")));
    wait_for(Duration::from_secs(60), "the existing row replaced, and the update", landed(47));
    assert_eq!(
        cluster.psql(
            &sink,
            "SELECT string_agg(id || ' ' || statement, ', ' ORDER BY id) FROM writes WHERE id IN (5, 10)"
        ),
        "5 VALUES, 10 VALUES, 10 VALUES"
    );
    assert_eq!(
        fingerprint(cluster, &sink, "typed", columns, "id"),
        fingerprint(cluster, &source, "typed", columns, "id")
    );
    assert!(stop_run(child).success());
}

#[test]
fn new_rows_go_in_binary_where_every_column_keeps_a_built_in_type_and_read_back_as_the_source_has_them() {
    let cluster = cluster();
    let source = cluster.fresh_db("binary_rows_src");
    let sink = cluster.fresh_db("binary_rows_sink");
    let columns = "id, i2, i4, f4, f8, amount, big, note, label, code, doc, u, flag, day, at, atz, bin, j, t";
    let definition = "id bigint PRIMARY KEY, i2 int2, i4 int4, f4 real, f8 float8, amount numeric(12,2), big numeric, \
                      note text, label varchar(20), code char(5), doc jsonb, u uuid, flag bool, day date, at timestamp, \
                      atz timestamptz, bin bytea, j json, t time";
    // `spans` has an interval (no binary here). `widened`'s destination,
    // made by the user, has a bigint where the source has an int: walpipe
    // gives it the source's type first (schema following), then binary.
    cluster.psql(
        &source,
        &format!(
            "CREATE TABLE typed ({definition}); CREATE TABLE spans (id int PRIMARY KEY, span interval); \
             CREATE TABLE widened (id int PRIMARY KEY, n int)"
        ),
    );
    cluster.psql(&sink, "CREATE TABLE widened (id int PRIMARY KEY, n bigint, _walpipe_lsn pg_lsn)");
    let job = format!("binary_rows_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    // The initial copy reads the tables as they are when it reaches them:
    // every one is read (empty) before a row is written, so each row
    // below comes by the stream.
    wait_for(Duration::from_secs(60), "the initial copy of the three tables", || {
        let log = run_log(&job);
        ["typed", "spans", "widened"].iter().all(|t| {
            log.contains(&format!("snapshot public.{t}: its last chunk took its place in the stream"))
        })
    });
    wait_for(Duration::from_secs(60), "the destinations", || {
        ["typed", "spans", "widened"].iter().all(|t| fingerprint(cluster, &sink, t, "id", "id").is_some())
    });
    common::log_writes(cluster, &sink, &["typed", "spans", "widened"]);
    let rows = |range: &str, at: &str| {
        format!(
            "INSERT INTO typed SELECT i, (i % 100)::int2 * -1, i * 1000, i / 7.0, i / 3.0, i * 1.255, i / 9.0, \
                    E'tab\\there, line\\nnext, back\\\\slash, é, ''q'' ' || i, 'label ' || i, 'c' || (i % 10), \
                    jsonb_build_object('n', i, 'a', jsonb_build_array(i / 4.0, 'x', NULL)), md5(i::text)::uuid, i % 2 = 0, \
                    '2000-02-28'::date + i, {at}, '1969-07-20 20:17:40.5+00'::timestamptz + i * interval '1.000001 second', \
                    E'\\\\x00095c0a'::bytea || int4send(i), json_build_object('n', i, 's', E'tab\\t\\\\ ' || i), \
                    '12:00:00'::time + i * interval '1.000001 second' \
             FROM generate_series({range}) i"
        )
    };
    // Nine rows, and one with the edges of each type's text; then ten
    // whose timestamp is infinite: that batch goes as text, whole; then rows of NULLs.
    cluster.psql(
        &source,
        &format!(
            "BEGIN; {}; INSERT INTO typed VALUES (10, -32768, 2147483647, '-0', 'NaN', 'NaN', '-0.000100', '', '', 'ab', \
                    '{{\"k\": [1e3, 2.50]}}', '00000000-0000-0000-0000-000000000000', false, '0001-01-01', \
                    '9999-12-31 23:59:59.999999', '2024-02-29 12:00:00+05:30', '\\x', ' [1 , 2] ', '23:59:59.999999'); \
             COMMIT",
            rows("1, 9", "'2026-12-06 23:00:00.5'::timestamp")
        ),
    );
    cluster.psql(&source, &rows("11, 20", "'infinity'::timestamp"));
    cluster.psql(
        &source,
        "INSERT INTO typed (id) SELECT i FROM generate_series(21, 30) i; \
         INSERT INTO spans SELECT i, i * interval '1 minute' FROM generate_series(1, 10) i; \
         INSERT INTO widened SELECT i, -i FROM generate_series(1, 10) i;",
    );
    let landed = || cluster.try_psql(&sink, "SELECT count(*) FROM writes").is_some_and(|n| n == "50");
    wait_for(Duration::from_secs(60), "fifty rows", landed);
    assert_eq!(
        common::writes_by_format(cluster, &sink),
        "spans|text|10\ntyped|binary|20\ntyped|text|10\nwidened|binary|10",
        "{}",
        run_log(&job)
    );
    assert_eq!(
        cluster.psql(
            &sink,
            "SELECT min(id) || '-' || max(id) FROM writes WHERE tbl = 'typed' AND format = 'text'"
        ),
        "11-20"
    );
    let widened =
        "SELECT atttypid::regtype FROM pg_attribute WHERE attrelid = 'widened'::regclass AND attname = 'n'";
    assert_eq!(cluster.psql(&sink, widened), "integer");
    // A person changes a column of the mirror to a type of the same width
    // while walpipe runs: an int4's bytes would read as a wrong real. The
    // binary COPY is checked, rolled back, and the rows go as text.
    cluster.psql(&sink, "ALTER TABLE widened ALTER COLUMN n TYPE real");
    cluster.psql(&source, "INSERT INTO widened SELECT i, -i FROM generate_series(11, 20) i");
    let landed = || cluster.try_psql(&sink, "SELECT count(*) FROM writes").is_some_and(|n| n == "60");
    wait_for(Duration::from_secs(60), "ten more rows", landed);
    assert_eq!(
        cluster
            .psql(&sink, "SELECT format, count(*) FROM writes WHERE tbl = 'widened' GROUP BY 1 ORDER BY 1"),
        "binary|10\ntext|10"
    );
    assert!(
        run_log(&job)
            .contains("the columns of \"public\".\"widened\" changed type while walpipe wrote to it")
    );
    for (table, columns) in [("typed", columns), ("spans", "id, span"), ("widened", "id, n")] {
        let copied = fingerprint(cluster, &sink, table, columns, "id");
        assert!(copied.is_some());
        assert_eq!(copied, fingerprint(cluster, &source, table, columns, "id"), "{table}");
    }
    assert!(stop_run(child).success());
}

/// The primary keys of `db`'s table `table`, with the other indexes: `name:definition` lines.
fn indexes(cluster: &Cluster, db: &str, table: &str) -> String {
    cluster.psql(
        db,
        &format!(
            "SELECT string_agg(indexrelid::regclass || ':' || pg_get_indexdef(indexrelid), E'\\n' ORDER BY 1) \
             FROM pg_index WHERE indrelid = '{table}'::regclass"
        ),
    )
}

#[test]
fn the_initial_copy_builds_the_key_after_the_rows_and_keeps_it_when_the_copy_fails() {
    let cluster = cluster();
    let source = cluster.fresh_db("deferred_key_src");
    let sink = cluster.fresh_db("deferred_key_sink");
    cluster.psql(
        &source,
        "CREATE TABLE plain (id bigint PRIMARY KEY, v text); \
         CREATE TABLE indexed (id bigint PRIMARY KEY, v text); \
         CREATE TABLE clash (id int PRIMARY KEY, grp int); \
         CREATE TABLE tuned (id bigint PRIMARY KEY, v text); \
         INSERT INTO tuned SELECT i, 'v' || i FROM generate_series(1, 100) i; \
         INSERT INTO plain SELECT i, 'v' || i FROM generate_series(1, 5000) i; \
         INSERT INTO indexed SELECT i, 'v' || i FROM generate_series(1, 5000) i; \
         INSERT INTO clash SELECT i, i % 3 FROM generate_series(1, 100) i;",
    );
    // A destination with an index of the user's keeps every index through
    // the copy, and a key with a storage option keeps it.
    cluster.psql(
        &sink,
        "CREATE TABLE indexed (id bigint, v text, _walpipe_lsn pg_lsn, CONSTRAINT indexed_key PRIMARY KEY (id)); \
         CREATE INDEX indexed_v ON indexed (v); \
         CREATE TABLE tuned (id bigint, v text, _walpipe_lsn pg_lsn, PRIMARY KEY (id) WITH (fillfactor = 70));",
    );
    let job = format!("deferred_key_{}", std::process::id());
    let only = [
        ("WALPIPE_SNAPSHOT_MODE", "initial_only"),
        ("WALPIPE_TABLES", "public.plain,public.indexed,public.tuned"),
    ];
    let mut child = start_run(cluster, &source, &sink, &job, &only);
    assert!(child.wait().expect("wait").success(), "{}", run_log(&job));
    for table in ["plain", "indexed", "tuned"] {
        assert_eq!(
            fingerprint(cluster, &sink, table, "id, v", "id"),
            fingerprint(cluster, &source, table, "id, v", "id")
        );
    }
    assert_eq!(
        indexes(cluster, &sink, "plain"),
        "plain_pkey:CREATE UNIQUE INDEX plain_pkey ON public.plain USING btree (id)"
    );
    assert_eq!(
        indexes(cluster, &sink, "indexed"),
        "indexed_key:CREATE UNIQUE INDEX indexed_key ON public.indexed USING btree (id)\n\
         indexed_v:CREATE INDEX indexed_v ON public.indexed USING btree (v)"
    );
    assert_eq!(
        indexes(cluster, &sink, "tuned"),
        "tuned_pkey:CREATE UNIQUE INDEX tuned_pkey ON public.tuned USING btree (id) WITH (fillfactor='70')"
    );

    // A destination keyed on a column the source repeats: the key's build
    // fails after the rows, and the copy's transaction rolls back whole.
    cluster.psql(
        &sink,
        "CREATE TABLE clash (id int, grp int PRIMARY KEY, _walpipe_lsn pg_lsn); INSERT INTO clash VALUES (7, 7, NULL);",
    );
    let job = format!("deferred_key_clash_{}", std::process::id());
    let only = [("WALPIPE_SNAPSHOT_MODE", "initial_only"), ("WALPIPE_TABLES", "public.clash")];
    let mut child = start_run(cluster, &source, &sink, &job, &only);
    let status = child.wait().expect("wait");
    let log = run_log(&job);
    assert!(!status.success(), "{log}");
    assert!(log.contains("clash_pkey"), "the failure names the key:\n{log}");
    assert!(!log.contains("lost the job's lease"), "a job that ended let go of its lease itself:\n{log}");
    assert_eq!(
        cluster.psql(&sink, "SELECT id || ',' || grp FROM clash"),
        "7,7",
        "the rows before the copy stay"
    );
    assert_eq!(
        indexes(cluster, &sink, "clash"),
        "clash_pkey:CREATE UNIQUE INDEX clash_pkey ON public.clash USING btree (grp)"
    );
}
