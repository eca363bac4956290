//! Real production schemas against real servers (PG15, and PG18 when its
//! binaries are there): a running mirror follows ADD / DROP / RENAME /
//! ALTER TYPE without losing or shifting a value, marks a table whose
//! existing rows it cannot know as needing a re-copy, survives a kill -9
//! in the middle of schema changes, and restarts after a change made while
//! it was down; `tail` announces each shape; changelog mode records it;
//! partitioned tables are captured through their root; quoted names work.

mod common;

use std::time::Duration;

use common::{Cluster, fingerprint, http_addr, http_get, metric, run_log, start_run, stop_run, wait_for};

/// The columns a table has, in order, comma-separated (quoted for SQL).
fn columns(cluster: &Cluster, db: &str, table: &str) -> String {
    cluster.psql(
        db,
        &format!(
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_walpipe\\_%'"
        ),
    )
}

/// Waits until the sink's `table` holds the source's rows in every source column, by name.
fn converges(cluster: &Cluster, source: &str, sink: &str, table: &str, what: &str) {
    let mut last = (None, None);
    wait_for(Duration::from_secs(90), what, || {
        let cols = columns(cluster, source, table);
        last = (
            fingerprint(cluster, source, table, &cols, "id"),
            fingerprint(cluster, sink, table, &cols, "id"),
        );
        last.0.is_some() && last.0 == last.1
    });
}

#[test]
fn a_running_mirror_follows_schema_changes_by_name() {
    for cluster in common::clusters() {
        let tag = format!("evolve{}", cluster.major);
        let (source, sink) =
            (cluster.fresh_db(&format!("{tag}_src")), cluster.fresh_db(&format!("{tag}_sink")));
        cluster.psql(&source, "CREATE TABLE evolve (id int PRIMARY KEY, a text, b text)");
        cluster
            .psql(&source, "INSERT INTO evolve SELECT i, 'a' || i, 'b' || i FROM generate_series(1, 50) i");
        let job = format!("{tag}_{}", std::process::id());
        let child = start_run(cluster, &source, &sink, &job, &[]);
        converges(cluster, &source, &sink, "evolve", "the copy");

        // ADD COLUMN with a constant default: existing rows get it, as at the source.
        cluster.psql(&source, "ALTER TABLE evolve ADD COLUMN c int NOT NULL DEFAULT 7");
        cluster.psql(&source, "INSERT INTO evolve VALUES (51, 'a51', 'b51', 8)");
        converges(cluster, &source, &sink, "evolve", "ADD COLUMN ... DEFAULT 7");
        assert_eq!(cluster.psql(&sink, "SELECT c FROM evolve WHERE id = 1"), "7");

        // DROP one column and ADD another (the same width): b keeps its values.
        cluster.psql(&source, "ALTER TABLE evolve DROP COLUMN a");
        cluster.psql(&source, "ALTER TABLE evolve ADD COLUMN d text");
        cluster.psql(&source, "INSERT INTO evolve VALUES (52, 'b52', 9, 'd52')");
        converges(cluster, &source, &sink, "evolve", "DROP COLUMN a, ADD COLUMN d");
        assert_eq!(cluster.psql(&sink, "SELECT b FROM evolve WHERE id = 2"), "b2", "no value shifted");
        assert_eq!(columns(cluster, &sink, "evolve"), columns(cluster, &source, "evolve"));

        // RENAME: existing rows keep their values. ALTER TYPE follows.
        cluster.psql(&source, "ALTER TABLE evolve RENAME COLUMN b TO bee");
        cluster.psql(&source, "ALTER TABLE evolve ALTER COLUMN c TYPE bigint");
        cluster.psql(&source, "UPDATE evolve SET d = 'touched' WHERE id = 3");
        converges(cluster, &source, &sink, "evolve", "RENAME COLUMN b TO bee, ALTER COLUMN c TYPE bigint");
        assert_eq!(cluster.psql(&sink, "SELECT bee FROM evolve WHERE id = 4"), "b4");
        assert_eq!(cluster.psql(&sink, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'evolve'::regclass AND attname = 'c'"), "bigint");

        // DDL and DML in one transaction.
        cluster.psql(
            &source,
            "BEGIN; INSERT INTO evolve (id, bee, c) VALUES (60, 'x', 1); ALTER TABLE evolve ADD COLUMN e text; \
             INSERT INTO evolve (id, bee, c, e) VALUES (61, 'y', 2, 'e61'); UPDATE evolve SET e = 'e1' WHERE id = 1; COMMIT",
        );
        converges(cluster, &source, &sink, "evolve", "DDL and DML in one transaction");

        // A volatile default: existing rows cannot be known; the table is
        // marked, and the running job copies it again.
        cluster.psql(&source, "ALTER TABLE evolve ADD COLUMN r float8 DEFAULT random()");
        cluster.psql(&source, "INSERT INTO evolve (id, bee, c) VALUES (70, 'z', 3)");
        // The mark and its reason: the log is the durable trace (the API and
        // the metric show it only until the re-copy, which may take a moment).
        wait_for(Duration::from_secs(60), "the table marked", || {
            run_log(&job).lines().any(|l| l.contains("copy the table again") && l.contains("column r"))
        });
        let addr = http_addr(&job).expect("the job's HTTP address");
        converges(
            cluster,
            &source,
            &sink,
            "evolve",
            "the re-copy, with the random defaults of existing rows",
        );
        wait_for(Duration::from_secs(30), "the mark cleared", || {
            let scrape = http_get(&addr, "/metrics").1;
            metric(&scrape, "walpipe_table_needs_recopy", &[("table", "public.evolve")]) == Some(0.0)
        });
        assert_eq!(
            cluster.psql(&sink, "SELECT bee || ':' || c FROM evolve WHERE id = 70"),
            "z:3",
            "rows after the change still arrive"
        );
        assert!(stop_run(child).success());
        assert!(!run_log(&job).contains("please report"), "{}", run_log(&job));
    }
}

/// The relation id of `table` in `db`.
fn relid(cluster: &Cluster, db: &str, table: &str) -> String {
    cluster.psql(db, &format!("SELECT '{table}'::regclass::oid"))
}

#[test]
fn a_column_dropped_and_added_again_a_renamed_table_and_a_table_made_again_are_followed() {
    for cluster in common::clusters() {
        let tag = format!("ident{}", cluster.major);
        let (source, sink) =
            (cluster.fresh_db(&format!("{tag}_src")), cluster.fresh_db(&format!("{tag}_sink")));
        cluster.psql(
            &source,
            "CREATE TABLE da (id int PRIMARY KEY, a text); INSERT INTO da SELECT i, 'keep' FROM generate_series(1, 20) i; \
             CREATE TABLE same (id int PRIMARY KEY, b text); INSERT INTO same SELECT i, 'old b' FROM generate_series(1, 20) i; \
             CREATE TABLE oldname (id int PRIMARY KEY, v text); INSERT INTO oldname SELECT i, 'v' || i FROM generate_series(1, 20) i; \
             CREATE TABLE again (id int PRIMARY KEY, x text); INSERT INTO again SELECT i, 'dropped ' || i FROM generate_series(1, 20) i; \
             CREATE TABLE ren (id int PRIMARY KEY, a text); INSERT INTO ren SELECT i, 'was a' FROM generate_series(1, 20) i;",
        );
        let job = format!("{tag}_{}", std::process::id());
        let child = start_run(cluster, &source, &sink, &job, &[]);
        for table in ["da", "same", "oldname", "again", "ren"] {
            converges(cluster, &source, &sink, table, &format!("the copy of {table}"));
        }

        // Rails' change of a column's type: remove it, add it back. A new column, never a cast.
        cluster.psql(&source, "ALTER TABLE da DROP COLUMN a; ALTER TABLE da ADD COLUMN a int");
        cluster.psql(&source, "INSERT INTO da VALUES (21, 21); UPDATE da SET a = 2 WHERE id = 2");
        converges(cluster, &source, &sink, "da", "DROP COLUMN a; ADD COLUMN a int");
        assert_eq!(cluster.psql(&sink, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'da'::regclass AND attname = 'a'"), "integer");
        assert_eq!(
            cluster.psql(&sink, "SELECT count(*) FROM da WHERE a IS NULL"),
            "19",
            "the old values are gone, as at the source"
        );
        // The same name and type: the shape looks unchanged, the old values are gone all the same.
        cluster.psql(&source, "ALTER TABLE same DROP COLUMN b; ALTER TABLE same ADD COLUMN b text");
        cluster.psql(&source, "INSERT INTO same VALUES (21, 'new b')");
        converges(cluster, &source, &sink, "same", "DROP COLUMN b; ADD COLUMN b text");
        assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM same WHERE b = 'old b'"), "0");
        // A rename, then an add that takes the old name: the values go with the rename.
        cluster.psql(&source, "ALTER TABLE ren RENAME COLUMN a TO b; ALTER TABLE ren ADD COLUMN a int; INSERT INTO ren VALUES (21, 'new b', 21)");
        converges(cluster, &source, &sink, "ren", "RENAME COLUMN a TO b; ADD COLUMN a int");
        assert_eq!(
            cluster.psql(&sink, "SELECT b || ':' || coalesce(a::text, 'null') FROM ren WHERE id = 1"),
            "was a:null"
        );

        // A renamed table keeps its rows: its destination is renamed with it.
        cluster.psql(&source, "ALTER TABLE oldname RENAME TO newname");
        cluster.psql(
            &source,
            "INSERT INTO newname VALUES (21, 'after'); UPDATE newname SET v = 'moved' WHERE id = 1",
        );
        converges(cluster, &source, &sink, "newname", "the renamed table, old rows included");
        assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM newname"), "21");
        assert_eq!(
            cluster.psql(&sink, "SELECT to_regclass('public.oldname') IS NULL"),
            "t",
            "renamed, not copied"
        );

        // Dropped and made again under its name, with other columns: a new table.
        cluster.psql(&source, "DROP TABLE again; CREATE TABLE again (id int PRIMARY KEY, y int)");
        cluster.psql(&source, "INSERT INTO again VALUES (1, 10), (100, 1000)");
        converges(cluster, &source, &sink, "again", "the table made again");
        assert_eq!(columns(cluster, &sink, "again"), columns(cluster, &source, "again"));
        assert_eq!(
            cluster.psql(&sink, "SELECT count(*) FROM again"),
            "2",
            "no row of the dropped table survives"
        );

        // They hold after a restart, and later changes still arrive.
        assert!(stop_run(child).success(), "{}", run_log(&job));
        let child = start_run(cluster, &source, &sink, &job, &[]);
        cluster.psql(&source, "INSERT INTO da VALUES (22, 22); INSERT INTO newname VALUES (22, 'x'); INSERT INTO again VALUES (2, 20)");
        for table in ["da", "same", "newname", "again", "ren"] {
            converges(cluster, &source, &sink, table, &format!("{table} after a restart"));
        }
        assert!(stop_run(child).success());
        let log = run_log(&job);
        assert!(!log.contains("please report") && !log.contains("the job failed"), "{log}");
    }
}

#[test]
fn under_schema_drop_keep_the_dropped_column_and_table_are_kept_aside() {
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = (cluster.fresh_db("aside_src"), cluster.fresh_db("aside_sink"));
    cluster.psql(
        &source,
        "CREATE TABLE da (id int PRIMARY KEY, a text); INSERT INTO da VALUES (1, 'keep'); \
         CREATE TABLE again (id int PRIMARY KEY, x text); INSERT INTO again VALUES (1, 'dropped'); \
         CREATE TABLE mapped (id int PRIMARY KEY, v text); INSERT INTO mapped VALUES (1, 'one');",
    );
    let dropped = relid(cluster, &source, "again");
    let job = format!("aside_{}", std::process::id());
    let keep =
        [("WALPIPE_SCHEMA_DROP", "keep"), ("WALPIPE_TABLE_MAPPINGS", "public.mapped=public.mapped_copy")];
    let child = start_run(cluster, &source, &sink, &job, &keep);
    converges(cluster, &source, &sink, "da", "the copy of da");
    converges(cluster, &source, &sink, "again", "the copy of again");
    cluster.psql(
        &source,
        "ALTER TABLE da DROP COLUMN a; ALTER TABLE da ADD COLUMN a int; INSERT INTO da VALUES (2, 2)",
    );
    cluster.psql(
        &source,
        "DROP TABLE again; CREATE TABLE again (id int PRIMARY KEY, y int); INSERT INTO again VALUES (5, 50)",
    );
    converges(cluster, &source, &sink, "da", "the new column a");
    converges(cluster, &source, &sink, "again", "the table made again");
    assert_eq!(
        cluster.psql(&sink, "SELECT a_dropped_2 || ':' || coalesce(a::text, 'null') FROM da WHERE id = 1"),
        "keep:null"
    );
    assert_eq!(cluster.psql(&sink, &format!("SELECT x FROM again_dropped_{dropped}")), "dropped");
    assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM again"), "1");
    // A destination a mapping names keeps its name when its table is renamed.
    cluster.psql(&source, "ALTER TABLE mapped RENAME TO moved; INSERT INTO moved VALUES (2, 'two')");
    wait_for(Duration::from_secs(60), "the renamed table's row in the mapped destination", || {
        cluster.try_psql(&sink, "SELECT count(*) FROM mapped_copy").as_deref() == Some("2")
    });
    assert_eq!(cluster.psql(&sink, "SELECT to_regclass('public.moved') IS NULL"), "t");
    assert!(stop_run(child).success(), "{}", run_log(&job));
}

#[test]
fn a_change_made_while_walpipe_was_down_is_followed_at_restart_and_kill_9_mid_change_converges() {
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = (cluster.fresh_db("down_src"), cluster.fresh_db("down_sink"));
    cluster.psql(&source, "CREATE TABLE evolve (id int PRIMARY KEY, a text)");
    cluster.psql(&source, "INSERT INTO evolve SELECT i, 'a' || i FROM generate_series(1, 20) i");
    let job = format!("down_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    converges(cluster, &source, &sink, "evolve", "the copy");
    assert!(stop_run(child).success());

    // While walpipe is down: rows of the old shape, a rename, an added column, rows of the new shape.
    cluster.psql(&source, "INSERT INTO evolve VALUES (21, 'old shape')");
    cluster.psql(&source, "ALTER TABLE evolve RENAME COLUMN a TO alpha");
    cluster.psql(&source, "ALTER TABLE evolve ADD COLUMN n int DEFAULT 5");
    cluster.psql(&source, "INSERT INTO evolve VALUES (22, 'new shape', 6)");
    let child = start_run(cluster, &source, &sink, &job, &[]);
    converges(cluster, &source, &sink, "evolve", "the changes made while walpipe was down");
    assert_eq!(cluster.psql(&sink, "SELECT alpha FROM evolve WHERE id = 1"), "a1");

    // kill -9 while schema changes and rows stream; then restart.
    let mut child = child;
    for round in 0..3 {
        cluster.psql(&source, &format!("ALTER TABLE evolve ADD COLUMN k{round} int DEFAULT {round}"));
        cluster.psql(
            &source,
            &format!(
                "INSERT INTO evolve (id, alpha) SELECT 100 * {} + i, 'r' FROM generate_series(1, 50) i",
                round + 1
            ),
        );
        cluster.psql(&source, &format!("ALTER TABLE evolve RENAME COLUMN k{round} TO kk{round}"));
        cluster.psql(&source, &format!("UPDATE evolve SET kk{round} = id WHERE id % 3 = 0"));
        let _ = std::process::Command::new("kill").args(["-9", &child.id().to_string()]).status();
        let _ = child.wait();
        child = start_run(cluster, &source, &sink, &job, &[]);
        converges(cluster, &source, &sink, "evolve", &format!("round {round} after kill -9"));
    }
    assert!(stop_run(child).success());
    assert_eq!(columns(cluster, &sink, "evolve"), columns(cluster, &source, "evolve"));
}

#[test]
fn tail_and_changelog_announce_each_shape_before_its_first_change() {
    let cluster = common::pg15_with(&common::options());
    let db = cluster.fresh_db("shape_tail");
    cluster.psql(&db, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    common::publication_and_slot(cluster, &db, &db);
    cluster.psql(&db, "INSERT INTO t VALUES (1, 'one')");
    cluster.psql(&db, "ALTER TABLE t ADD COLUMN w numeric(5,2)");
    cluster.psql(&db, "INSERT INTO t VALUES (2, 'two', 2.5)");
    cluster.psql(&db, "ALTER TABLE t RENAME TO t2; INSERT INTO t2 VALUES (3, 'three', 3)");
    let end = cluster.current_lsn(&db);
    let lines = common::tail_to(cluster, &db, &db, &db, &end);
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().expect("op")).collect();
    assert_eq!(ops, ["schema", "insert", "schema", "insert", "schema", "insert"]);
    // A rename: the shape names the table's new name and its old one.
    assert_eq!((&lines[4]["table"], &lines[4]["renamed_from"]), (&"public.t2".into(), &"public.t".into()));
    assert!(lines[2].get("renamed_from").is_none(), "only a rename names an old name: {}", lines[2]);
    let names = |line: &serde_json::Value| -> Vec<String> {
        line["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(names(&lines[0]), ["id", "v"]);
    assert_eq!(names(&lines[2]), ["id", "v", "w"]);
    assert_eq!(lines[2]["columns"][2]["type"], "numeric");
    assert_eq!(lines[0]["columns"][0]["key"], true);
    assert_eq!(lines[3]["new"], serde_json::json!({"id": 2, "v": "two", "w": "2.50"}));
    assert!(lines[2]["id"].as_str().expect("id").ends_with(":schema"));

    // Changelog mode: one schema row per shape, even across a restart (which announces the shape again).
    let (source, sink) = (cluster.fresh_db("shape_log_src"), cluster.fresh_db("shape_log_sink"));
    cluster.psql(&source, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let job = format!("shape_log_{}", std::process::id());
    let extra = [("WALPIPE_SINK_MODE", "changelog")];
    let child = start_run(cluster, &source, &sink, &job, &extra);
    common::wait_running(&job);
    cluster.psql(&source, "INSERT INTO t VALUES (1, 'one')");
    cluster.psql(&source, "ALTER TABLE t ADD COLUMN w int");
    cluster.psql(&source, "INSERT INTO t VALUES (2, 'two', 2)");
    let count =
        |op: &str| cluster.try_psql(&sink, &format!("SELECT count(*) FROM t WHERE _walpipe_op = '{op}'"));
    wait_for(Duration::from_secs(60), "both inserts in the changelog", || {
        count("insert").as_deref() == Some("2")
    });
    assert!(stop_run(child).success());
    let child = start_run(cluster, &source, &sink, &job, &extra);
    // start_run begins a new log.
    common::wait_running(&job);
    cluster.psql(&source, "INSERT INTO t VALUES (3, 'three', 3)");
    wait_for(Duration::from_secs(60), "the third insert", || count("insert").as_deref() == Some("3"));
    // A rename: the new name's changelog starts with a schema row that names the old name.
    cluster.psql(&source, "ALTER TABLE t RENAME TO t2; INSERT INTO t2 VALUES (4, 'four', 4)");
    wait_for(Duration::from_secs(60), "the renamed table's insert", || {
        cluster.try_psql(&sink, "SELECT count(*) FROM t2 WHERE _walpipe_op = 'insert'").as_deref()
            == Some("1")
    });
    assert_eq!(
        cluster.psql(&sink, "SELECT new ->> 'renamed_from' FROM t2 WHERE _walpipe_op = 'schema'"),
        "public.t"
    );
    assert!(stop_run(child).success());
    assert_eq!(count("schema").as_deref(), Some("2"), "one row per shape");
    assert_eq!(
        cluster.psql(&sink, "SELECT new -> 'columns' -> 2 ->> 'name' FROM t WHERE _walpipe_op = 'schema' ORDER BY _walpipe_commit_lsn DESC LIMIT 1"),
        "w"
    );
}

#[test]
fn a_partitioned_table_is_captured_through_its_root_and_quoted_names_work() {
    for cluster in common::clusters() {
        let tag = format!("parts{}", cluster.major);
        let (source, sink) =
            (cluster.fresh_db(&format!("{tag}_src")), cluster.fresh_db(&format!("{tag}_sink")));
        cluster.psql(
            &source,
            "CREATE TABLE events (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
             CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu'); \
             CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us'); \
             INSERT INTO events VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'eu', 'c'); \
             CREATE SCHEMA \"Sales\"; CREATE TABLE \"Sales\".\"Order Items\" (id int PRIMARY KEY, \"Qty\" int); \
             INSERT INTO \"Sales\".\"Order Items\" VALUES (1, 10); \
             CREATE TABLE priced (id int PRIMARY KEY, price numeric, qty int, \
                 total numeric GENERATED ALWAYS AS (price * qty) STORED); \
             INSERT INTO priced VALUES (1, 2.5, 4)",
        );
        let job = format!("{tag}_{}", std::process::id());
        let tables = r#"public.events, "Sales"."Order Items", priced"#;
        let child = start_run(cluster, &source, &sink, &job, &[("WALPIPE_TABLES", tables)]);
        let root = |db: &str| fingerprint(cluster, db, "events", "id, region, v", "id, region");
        wait_for(Duration::from_secs(60), "the copy of the root", || {
            root(&sink).is_some() && root(&sink) == root(&source)
        });
        cluster.psql(
            &source,
            "INSERT INTO events VALUES (4, 'us', 'd'), (5, 'eu', 'e'), (6, 'us', 'f'); \
             UPDATE events SET v = 'moved', region = 'us' WHERE id = 1; DELETE FROM events WHERE id = 2; \
             UPDATE \"Sales\".\"Order Items\" SET \"Qty\" = 11; \
             INSERT INTO priced VALUES (2, 1.5, 2); UPDATE priced SET qty = 10 WHERE id = 1",
        );
        // Stored generated columns reach the sink with the source's values
        // (published from PG18; computed by the same expression before).
        let priced = |db: &str| fingerprint(cluster, db, "priced", "id, price, qty, total", "id");
        wait_for(Duration::from_secs(60), "the generated column", || priced(&sink) == priced(&source));
        wait_for(Duration::from_secs(60), "streamed changes through the root", || {
            root(&sink) == root(&source)
        });
        assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM events"), "5");
        assert!(cluster.try_psql(&sink, "SELECT 1 FROM events_eu").is_none(), "no table per partition");
        wait_for(Duration::from_secs(60), "the quoted table", || {
            cluster.try_psql(&sink, r#"SELECT "Qty" FROM "Sales"."Order Items""#).as_deref() == Some("11")
        });

        // ATTACH of a table holding rows, and DETACH, move rows without a
        // change in the WAL: the root is marked as needing a re-copy.
        let reason = || {
            cluster
                .try_psql(
                    &sink,
                    "SELECT reason FROM walpipe.recopy_needed WHERE source_table = 'public.events'",
                )
                .unwrap_or_default()
        };
        cluster.psql(
            &source,
            "CREATE TABLE events_ap (LIKE events INCLUDING ALL); INSERT INTO events_ap VALUES (7, 'ap', 'g');              ALTER TABLE events ATTACH PARTITION events_ap FOR VALUES IN ('ap')",
        );
        wait_for(Duration::from_secs(60), "the attach found", || {
            reason().contains("public.events_ap was attached")
        });
        cluster.psql(&source, "ALTER TABLE events DETACH PARTITION events_us");
        wait_for(Duration::from_secs(60), "the detach found", || {
            reason().contains("public.events_us was detached")
        });
        assert!(run_log(&job).contains("copying the table again"));
        // The job copies the root again while it streams, and the copy
        // removes the rows of the detached partition.
        wait_for(Duration::from_secs(90), "the root copied again", || root(&sink) == root(&source));
        assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM events WHERE region = 'us'"), "0");
        assert_eq!(cluster.psql(&sink, "SELECT v FROM events WHERE region = 'ap'"), "g");
        let log = run_log(&job);
        assert!(log.contains(
            "snapshot public.events: copying it in chunks while streaming, because it needs a re-copy"
        ));
        assert!(log.contains("snapshot public.events: removed"), "the copy reconciles the destination");
        let addr = http_addr(&job).expect("the job's HTTP address");
        wait_for(Duration::from_secs(30), "the mark cleared", || {
            let scrape = http_get(&addr, "/metrics").1;
            metric(&scrape, "walpipe_table_needs_recopy", &[("table", "public.events")]) == Some(0.0)
        });
        assert!(stop_run(child).success());
    }
}

#[test]
fn under_on_table_error_fail_a_schema_change_the_sink_cannot_apply_fails_the_job_with_the_fix_and_shifts_nothing()
 {
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = (cluster.fresh_db("cast_src"), cluster.fresh_db("cast_sink"));
    cluster.psql(
        &source,
        "CREATE TABLE counts (id int PRIMARY KEY, v text); INSERT INTO counts VALUES (1, '12'), (2, '34')",
    );
    let job = format!("cast_{}", std::process::id());
    let fail = [("WALPIPE_ON_TABLE_ERROR", "fail")];
    let mut child = start_run(cluster, &source, &sink, &job, &fail);
    converges(cluster, &source, &sink, "counts", "the copy");

    // The sink drifted (an edit by hand): the source's cast cannot apply there.
    cluster.psql(&sink, "UPDATE counts SET v = 'abc' WHERE id = 2");
    cluster.psql(&source, "ALTER TABLE counts ALTER COLUMN v TYPE int USING v::int");
    cluster.psql(&source, "INSERT INTO counts VALUES (3, 56)");
    wait_for(Duration::from_secs(60), "the job fails", || child.try_wait().ok().flatten().is_some());
    let log = run_log(&job);
    assert!(
        log.contains("the destination of public.counts could not follow the source's new shape")
            && log.contains("invalid input syntax for type integer")
            && log.contains("walpipe jobs retry"),
        "{log}"
    );
    assert_eq!(
        cluster.psql(&sink, "SELECT count(*) FROM counts WHERE id = 3"),
        "0",
        "no row of the new shape applied"
    );
    assert_eq!(
        cluster.psql(&sink, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'counts'::regclass AND attname = 'v'"),
        "text"
    );

    // The fix the error names: make the destination fit, start again.
    cluster.psql(&sink, "UPDATE counts SET v = '34' WHERE id = 2");
    child = start_run(cluster, &source, &sink, &job, &fail);
    converges(cluster, &source, &sink, "counts", "the change applied after the fix");
    assert!(stop_run(child).success());
}

#[test]
fn a_table_created_after_the_job_started_is_captured_from_its_first_change() {
    let cluster = common::pg15_with(&common::options());
    let (source, sink) = (cluster.fresh_db("newtab_src"), cluster.fresh_db("newtab_sink"));
    cluster
        .psql(&source, "CREATE TABLE first (id int PRIMARY KEY, v text); INSERT INTO first VALUES (1, 'a')");
    let job = format!("newtab_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    converges(cluster, &source, &sink, "first", "the copy");
    cluster.psql(
        &source,
        "CREATE TABLE later (id int PRIMARY KEY, \"Note\" text, tags text[]); \
         INSERT INTO later VALUES (1, 'x', '{a,b}'), (2, 'y', NULL); UPDATE later SET \"Note\" = 'z' WHERE id = 2",
    );
    converges(cluster, &source, &sink, "later", "the new table's rows");

    // A dropped source table leaves its destination in place, and is logged.
    cluster.psql(&source, "DROP TABLE first");
    wait_for(Duration::from_secs(60), "the drop logged", || {
        run_log(&job).contains("the source table public.first was dropped: its destination is kept")
    });
    assert_eq!(cluster.psql(&sink, "SELECT v FROM first"), "a");
    assert!(stop_run(child).success());
}

#[test]
fn arrays_of_user_types_box_arrays_money_and_domains_arrive_as_typed_values() {
    for cluster in common::clusters() {
        let tag = format!("types{}", cluster.major);
        let (source, sink) =
            (cluster.fresh_db(&format!("{tag}_src")), cluster.fresh_db(&format!("{tag}_sink")));
        cluster.psql(
            &source,
            "CREATE TYPE mood AS ENUM ('happy', 'so so'); CREATE DOMAIN positive AS int CHECK (VALUE > 0); \
             CREATE TABLE typed (id int PRIMARY KEY, moods mood[], boxes box[], price money, amount positive)",
        );
        common::publication_and_slot(cluster, &source, &source);
        cluster.psql(
            &source,
            "INSERT INTO typed VALUES (1, '{happy,\"so so\",NULL}', ARRAY[box '((1,1),(0,0))', box '((3,3),(2,2))'], 12.5, 7)",
        );
        let lines = common::tail_to(cluster, &source, &source, &source, &cluster.current_lsn(&source));
        let new = &lines.iter().find(|l| l["op"] == "insert").expect("the insert")["new"];
        assert_eq!(new["moods"], serde_json::json!(["happy", "so so", null]), "PG{}", cluster.major);
        assert_eq!(new["boxes"], serde_json::json!(["(1,1),(0,0)", "(3,3),(2,2)"]));
        assert_eq!(new["price"], "$12.50", "money in the C locale, whatever the server's lc_monetary");
        // A domain is a type walpipe does not know by its OID: its text form (docs/src/reference/change-format.md).
        assert_eq!(new["amount"], "7");

        // A mirror's destination takes the domain's base type (the sink has no such domain).
        cluster.psql(
            &source,
            &format!("SELECT pg_drop_replication_slot('{source}'); DROP PUBLICATION \"{source}\""),
        );
        let job = format!("{tag}_{}", std::process::id());
        let child = start_run(cluster, &source, &sink, &job, &[]);
        let typed = |db: &str| {
            fingerprint(cluster, db, "typed", "id, moods::text, boxes::text, price::text, amount", "id")
        };
        wait_for(Duration::from_secs(60), "the copy", || {
            typed(&sink).is_some() && typed(&sink) == typed(&source)
        });
        assert_eq!(
            cluster.psql(&sink, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'typed'::regclass AND attname = 'amount'"),
            "integer"
        );
        assert!(stop_run(child).success());
    }
}
