//! `walpipe tail` against real PostgreSQL 15 and 18: every operation and
//! every typed value arrives exactly as written; old rows, unchanged TOAST,
//! truncates and messages are as docs/src/reference/change-format.md says; rolled-back work never
//! appears, streamed or not.

mod common;

use common::{Cluster, clusters, publication_and_slot, tail_logged, tail_to};
use serde_json::{Value, json};

/// The changes of `table`, its shape announcements left out.
fn changes_of(lines: &[Value], table: &str) -> Vec<Value> {
    lines.iter().filter(|l| l["table"] == table && l["op"] != "schema").cloned().collect()
}

fn setup(cluster: &Cluster, test: &str, ddl: &str) -> String {
    let db = cluster.fresh_db(test);
    cluster.psql(&db, ddl);
    publication_and_slot(cluster, &db, &db);
    db
}

#[test]
fn every_operation_and_type_arrives_as_written() {
    for cluster in clusters() {
        let db = setup(
            cluster,
            "types",
            "CREATE TABLE typed (id int8 PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, \
             num numeric, b bool, t text, vc varchar(20), j json, jb jsonb, ai int4[], at text[], ajb jsonb[], \
             af float8[], ts timestamp, tstz timestamptz, d date, tm time, u uuid, by bytea, iv interval)",
        );
        cluster.psql(
            &db,
            r#"INSERT INTO typed VALUES (1, -32768, 2147483647, 9223372036854775807, 1.5, 0.1,
                 12345678901234567890.123456789, true, E'line1\nline2 "q" \\ é', 'short',
                 '{"a": [1, 2],
                   "b": {"c": null}}', '{"k": "v", "n": 1.50}', '{1,NULL,3}', '{"a b","c,d",NULL}',
                 ARRAY['{"x": 1}'::jsonb], '{1.25,NaN,-Infinity}', '2026-11-21 10:30:00.123456',
                 '2026-11-21 10:30:00.123456+02', '2026-11-21', '10:30:00.5',
                 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x0a1bff', '1 day 02:00:00');
               INSERT INTO typed (id, f8) VALUES (2, 'NaN');
               UPDATE typed SET t = 'changed' WHERE id = 2;
               UPDATE typed SET id = 3 WHERE id = 2;
               DELETE FROM typed WHERE id = 3;"#,
        );
        let lines = tail_to(cluster, &db, &db, &db, &cluster.current_lsn(&db));
        let changes = changes_of(&lines, "public.typed");
        assert_eq!(changes.len(), 5, "PG{}: {lines:#?}", cluster.major);
        let first = lines.iter().find(|l| l["table"] == "public.typed").expect("a line of the table");
        assert_eq!(first["op"], "schema", "the table's shape comes before its first change");
        assert_eq!(first["columns"].as_array().map(Vec::len), Some(23));

        let expected_new = json!({
            "id": 1, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807_i64, "f4": 1.5, "f8": 0.1,
            "num": "12345678901234567890.123456789", "b": true, "t": "line1\nline2 \"q\" \\ é", "vc": "short",
            "j": {"a": [1, 2], "b": {"c": null}}, "jb": {"k": "v", "n": 1.5}, "ai": [1, null, 3],
            "at": ["a b", "c,d", null], "ajb": [{"x": 1}], "af": [1.25, "NaN", "-Infinity"],
            "ts": "2026-11-21T10:30:00.123456", "tstz": "2026-11-21T08:30:00.123456Z", "d": "2026-11-21",
            "tm": "10:30:00.5", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "by": "\\x0a1bff",
            "iv": "1 day 02:00:00"
        });
        let insert = &changes[0];
        assert_eq!(insert["op"], "insert");
        assert_eq!(insert["key"], json!({"id": 1}));
        assert_eq!(insert["old"], Value::Null);
        assert_eq!(insert["new"], expected_new, "PG{}", cluster.major);
        assert_eq!(insert["unchanged_toast"], json!([]));
        // numeric keeps every digit: compare the raw text too.
        assert!(insert["new"]["num"].as_str() == Some("12345678901234567890.123456789"));

        let nan = &changes[1];
        assert_eq!(nan["new"]["f8"], "NaN");
        assert_eq!(nan["new"]["t"], Value::Null);

        let update = &changes[2];
        assert_eq!(update["op"], "update");
        assert_eq!(update["key"], json!({"id": 2}));
        assert_eq!(update["old"], Value::Null);
        assert_eq!(update["new"]["t"], "changed");

        let key_change = &changes[3];
        assert_eq!(key_change["op"], "update");
        assert_eq!(key_change["key"], json!({"id": 2}), "the key names the row before the change");
        assert_eq!(key_change["old"], json!({"id": 2}));
        assert_eq!(key_change["new"]["id"], 3);

        let delete = &changes[4];
        assert_eq!(delete["op"], "delete");
        assert_eq!(delete["key"], json!({"id": 3}));
        assert_eq!(delete["old"], json!({"id": 3}));
        assert_eq!(delete["new"], Value::Null);

        // One transaction: one commit LSN and xid, ordinals 0.. in order, stable ids.
        // (The shape announced first takes no ordinal: its id is the first change's plus ":schema".)
        let first = &lines[0];
        assert_eq!(first["id"], format!("{}:0:schema", first["commit_lsn"].as_str().expect("lsn")));
        let in_first: Vec<&Value> =
            lines.iter().filter(|l| l["commit_lsn"] == first["commit_lsn"] && l["op"] != "schema").collect();
        for (ordinal, line) in in_first.into_iter().enumerate() {
            assert_eq!(line["id"], format!("{}:{ordinal}", first["commit_lsn"].as_str().expect("lsn")));
            assert_eq!(line["xid"], first["xid"]);
            assert!(line["commit_time"].as_str().is_some_and(|t| t.ends_with('Z')));
        }
    }
}

#[test]
fn replica_identity_full_gives_the_whole_old_row() {
    for cluster in clusters() {
        let db = setup(
            cluster,
            "full",
            "CREATE TABLE people (id int PRIMARY KEY, name text, age int); \
             ALTER TABLE people REPLICA IDENTITY FULL; INSERT INTO people VALUES (1, 'ann', 30);",
        );
        cluster.psql(&db, "UPDATE people SET age = 31 WHERE id = 1; DELETE FROM people WHERE id = 1;");
        let lines = tail_to(cluster, &db, &db, &db, &cluster.current_lsn(&db));
        let changes = changes_of(&lines, "public.people");
        assert_eq!(changes.len(), 2, "{lines:#?}");
        assert_eq!(changes[0]["key"], json!({"id": 1}), "the primary key, not the whole row");
        assert_eq!(changes[0]["old"], json!({"id": 1, "name": "ann", "age": 30}));
        assert_eq!(changes[0]["new"], json!({"id": 1, "name": "ann", "age": 31}));
        assert_eq!(changes[1]["key"], json!({"id": 1}));
        assert_eq!(changes[1]["old"], json!({"id": 1, "name": "ann", "age": 31}));
        assert_eq!(changes[1]["new"], Value::Null);
    }
}

#[test]
fn unchanged_toast_is_named_and_left_out() {
    for cluster in clusters() {
        let db = setup(
            cluster,
            "toast",
            "CREATE TABLE docs (id int PRIMARY KEY, title text, body text); \
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL; \
             INSERT INTO docs SELECT 1, 'first', string_agg(md5(i::text), '') FROM generate_series(1, 400) i;",
        );
        cluster.psql(&db, "UPDATE docs SET title = 'second' WHERE id = 1");
        let lines = tail_to(cluster, &db, &db, &db, &cluster.current_lsn(&db));
        let changes = changes_of(&lines, "public.docs");
        assert_eq!(changes.len(), 1, "{lines:#?}");
        let update = &changes[0];
        assert_eq!(update["new"], json!({"id": 1, "title": "second"}));
        assert_eq!(update["unchanged_toast"], json!(["body"]));
        assert!(update["new"].get("body").is_none(), "never null or a placeholder");
    }
}

#[test]
fn truncates_and_logical_messages_arrive() {
    for cluster in clusters() {
        let db = setup(
            cluster,
            "truncmsg",
            "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);",
        );
        cluster.psql(
            &db,
            "INSERT INTO a VALUES (1); TRUNCATE a, b; \
             SELECT pg_logical_emit_message(true, 'app', 'in a transaction'); \
             SELECT pg_logical_emit_message(false, 'audit', 'outside'); \
             SELECT pg_logical_emit_message(true, 'bin', '\\xff00'::bytea);",
        );
        let lines = tail_to(cluster, &db, &db, &db, &cluster.current_lsn(&db));
        let truncated: Vec<_> =
            lines.iter().filter(|l| l["op"] == "truncate").map(|l| l["table"].clone()).collect();
        assert_eq!(truncated, vec![json!("public.a"), json!("public.b")], "{lines:#?}");
        let messages: Vec<_> = lines.iter().filter(|l| l["op"] == "message").collect();
        assert_eq!(messages.len(), 3, "{lines:#?}");
        let by_prefix = |prefix: &str| *messages.iter().find(|m| m["prefix"] == prefix).expect("message");
        assert_eq!(by_prefix("app")["content"], "in a transaction");
        assert_eq!(by_prefix("app")["transactional"], true);
        assert_eq!(by_prefix("audit")["content"], "outside");
        assert_eq!(by_prefix("audit")["transactional"], false);
        assert_eq!(by_prefix("audit")["xid"], Value::Null);
        assert_eq!(by_prefix("bin")["content"], "\\xff00");
    }
}

#[test]
fn rolled_back_work_never_appears() {
    for cluster in clusters() {
        let db = setup(cluster, "rollback", "CREATE TABLE r (id int PRIMARY KEY, note text)");
        let sessions = [
            "BEGIN; INSERT INTO r VALUES (100, 'rolled back'); ROLLBACK;",
            "BEGIN; INSERT INTO r VALUES (1, 'kept'); SAVEPOINT s; INSERT INTO r VALUES (101, 'sub rolled back'); \
             ROLLBACK TO s; INSERT INTO r VALUES (2, 'kept'); COMMIT;",
        ];
        for sql in sessions {
            cluster.psql(&db, sql);
        }
        let lines = tail_to(cluster, &db, &db, &db, &cluster.current_lsn(&db));
        let ids: Vec<i64> =
            changes_of(&lines, "public.r").iter().map(|l| l["new"]["id"].as_i64().expect("id")).collect();
        assert_eq!(ids, vec![1, 2], "{lines:#?}");
    }
}

/// A backlog of one-row transactions is read with the socket gathering
/// bytes and the reads spaced (src/source/postgres/read_pacing.rs), through
/// the fixed receive buffer of a source on this host: every change arrives,
/// in order, and the stream's end (below the gathering mark) is read and
/// ended when asked.
#[test]
fn a_backlog_of_small_transactions_is_gathered_and_read_whole() {
    for cluster in clusters() {
        let db = setup(cluster, "small_backlog", "CREATE TABLE small (id int PRIMARY KEY)");
        cluster.psql(
            &db,
            "DO $$ BEGIN FOR id IN 1..3000 LOOP INSERT INTO small VALUES (id); COMMIT; END LOOP; END $$",
        );
        // The stream starts after this: the BEGINs it sends are at least
        // 100 ms behind their commits, a backlog.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (lines, log) = tail_logged(cluster, &db, &db, &db, &cluster.current_lsn(&db), "walpipe=debug");
        let ids: Vec<i64> =
            changes_of(&lines, "public.small").iter().map(|l| l["new"]["id"].as_i64().expect("id")).collect();
        assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "PG{}", cluster.major);
        assert!(
            log.contains("the socket gathers bytes before waking walpipe: the stream is a backlog"),
            "PG{}: {log}",
            cluster.major
        );
        assert!(
            log.contains("the replication socket's receive buffer is fixed: the source is on this host"),
            "PG{}: {log}",
            cluster.major
        );
    }
}

#[test]
fn streamed_transactions_keep_only_committed_work() {
    for cluster in clusters() {
        let db = setup(cluster, "streamed", "CREATE TABLE s (id int PRIMARY KEY, pad text)");
        // Make every transaction over 64 kB stream while in progress.
        cluster.psql(&db, &format!("ALTER DATABASE {db} SET logical_decoding_work_mem = '64kB'"));
        cluster.psql(
            &db,
            "BEGIN; INSERT INTO s SELECT i, repeat('x', 100) FROM generate_series(100000, 103000) i; ROLLBACK;",
        );
        cluster.psql(
            &db,
            "BEGIN; \
             INSERT INTO s SELECT i, repeat('a', 100) FROM generate_series(1, 3000) i; \
             SAVEPOINT sp; INSERT INTO s SELECT i, repeat('b', 100) FROM generate_series(200000, 203000) i; \
             ROLLBACK TO sp; \
             SAVEPOINT sp2; INSERT INTO s SELECT i, repeat('c', 100) FROM generate_series(3001, 6000) i; RELEASE sp2; \
             COMMIT;",
        );
        let (lines, log) = tail_logged(cluster, &db, &db, &db, &cluster.current_lsn(&db), "walpipe=debug");
        let ids: Vec<i64> =
            changes_of(&lines, "public.s").iter().map(|l| l["new"]["id"].as_i64().expect("id")).collect();
        assert_eq!(ids, (1..=6000).collect::<Vec<_>>(), "exactly the committed rows, in order");
        // The stream's first message is a Stream Start: its block gathers (read_pacing.rs).
        assert!(
            log.contains(
                "gathers bytes before waking walpipe: inside a block of a transaction still in progress"
            ),
            "PG{}: {log}",
            cluster.major
        );
        let commit = lines[0]["commit_lsn"].as_str().expect("commit lsn").to_string();
        assert_eq!(lines[0]["id"], format!("{commit}:0:schema"), "the shape, announced inside the stream");
        // (The server may announce the shape again inside the stream; that takes no ordinal.)
        for (ordinal, line) in lines.iter().filter(|l| l["op"] != "schema").enumerate() {
            assert_eq!(line["id"], format!("{commit}:{ordinal}"));
        }
        let streamed: i64 = cluster
            .psql(&db, &format!("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = '{db}'"))
            .parse()
            .unwrap_or(0);
        assert!(
            streamed >= 1,
            "PG{}: the server streamed the transactions (stream_txns = {streamed})",
            cluster.major
        );
    }
}
