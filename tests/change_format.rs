//! The change JSON and the changelog rows a Postgres source gives are fixed
//! byte for byte: one workload of every operation, typed value, old-row
//! form, unchanged TOAST, truncate, message and rename, compared with what
//! the release before the Source seam wrote (`tests/golden/`). The PG18
//! change lines were written again in `d415a7a`: the old ones had recorded
//! a backlog described with today's columns (see
//! `changelog_rows_are_unchanged_byte_for_byte`).
//!
//! What the server assigns anew on every run (LSNs, xids, commit times) is
//! replaced: commit LSNs, xids and times by the order of their first
//! appearance (`C1`, `X1`, `T1`), so the comparison keeps which lines share
//! a transaction, and each line's own LSN by `L`. To write the
//! files again, from a build whose output is right: `WALPIPE_WRITE_GOLDEN=1
//! cargo test --test change_format`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{
    Cluster, clusters, publication_and_slot, run_with_timeout, start_run, stop_run, wait_for, walpipe,
};

const DDL: &str = "CREATE TABLE typed (id int8 PRIMARY KEY, i2 int2, i4 int4, f4 float4, f8 float8, \
     num numeric(30,9), b bool, t text, vc varchar(20), j json, jb jsonb, ai int4[], at text[], af float8[], \
     ts timestamp, tstz timestamptz, d date, tm time, u uuid, by bytea, iv interval, m money); \
     CREATE TABLE full_row (id int PRIMARY KEY, name text, age int); ALTER TABLE full_row REPLICA IDENTITY FULL; \
     CREATE TABLE toasted (id int PRIMARY KEY, big text, n int); ALTER TABLE toasted ALTER big SET STORAGE EXTERNAL; \
     CREATE TABLE renamed (id int PRIMARY KEY, v text);";

const WORKLOAD: &str = r#"
    INSERT INTO typed VALUES (1, -32768, 2147483647, 1.5, 0.1, 123456789.123456789, true,
        E'line1\nline2 "q" \\ é \t tab', 'short', '{"a": [1, 2], "b": {"c": null}}', '{"k": "v", "n": 1.50}',
        '{1,NULL,3}', '{"a b","c,d",NULL}', '{1.25,NaN,-Infinity}', '2026-11-21 10:30:00.123456',
        '2026-11-21 10:30:00.123456+02', '2026-11-21', '10:30:00.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '\x0a1bff', '1 day 02:00:00', 12.34);
    INSERT INTO typed (id, f8) VALUES (2, 'NaN');
    BEGIN; UPDATE typed SET t = 'changed' WHERE id = 2; UPDATE typed SET id = 3 WHERE id = 2; COMMIT;
    DELETE FROM typed WHERE id = 3;
    INSERT INTO full_row VALUES (1, 'ann', 30), (2, 'bob', 40);
    UPDATE full_row SET age = 31 WHERE id = 1;
    DELETE FROM full_row WHERE id = 2;
    INSERT INTO toasted VALUES (1, repeat('x', 10000), 1);
    UPDATE toasted SET n = 2 WHERE id = 1;
    SELECT pg_logical_emit_message(false, 'app', 'not in a transaction');
    BEGIN; SELECT pg_logical_emit_message(true, 'app', 'in a transaction'); INSERT INTO renamed VALUES (1, 'a'); COMMIT;
    ALTER TABLE renamed RENAME TO renamed_now;
    INSERT INTO renamed_now VALUES (2, 'b');
    ALTER TABLE renamed_now ADD COLUMN extra int DEFAULT 7;
    INSERT INTO renamed_now VALUES (3, 'c');
    TRUNCATE full_row;
"#;

/// Replaces what the server assigns anew on every run, keeping which values are equal.
struct Normalizer {
    seen: HashMap<String, String>,
    counts: HashMap<char, usize>,
}

impl Normalizer {
    fn new() -> Normalizer {
        Normalizer { seen: HashMap::new(), counts: HashMap::new() }
    }

    fn stand_in(&mut self, class: char, value: &str) -> String {
        if let Some(known) = self.seen.get(&format!("{class}{value}")) {
            return known.clone();
        }
        let count = self.counts.entry(class).or_default();
        *count += 1;
        let name = format!("{class}{count}");
        self.seen.insert(format!("{class}{value}"), name.clone());
        name
    }

    /// A line's own position (`lsn`, `_walpipe_lsn`) becomes `L`, since it
    /// may equal another by chance; commit LSNs (`commit_lsn`, ids), xids and
    /// commit times are numbered by first appearance.
    fn line(&mut self, line: &str) -> String {
        let own = regex_lite::Regex::new(r#"("lsn": ?|"_walpipe_lsn": ?)"[0-9A-F]{1,8}/[0-9A-F]{1,8}""#)
            .expect("regex");
        let line = own.replace_all(line, r#"${1}"L""#);
        let commit = regex_lite::Regex::new(r"\b[0-9A-F]{1,8}/[0-9A-F]{1,8}\b").expect("regex");
        let line =
            commit.replace_all(&line, |c: &regex_lite::Captures<'_>| self.stand_in('C', &c[0])).into_owned();
        let xid = regex_lite::Regex::new(r#"("xid": ?|"_walpipe_xid": ?)(\d+)"#).expect("regex");
        let line = xid.replace_all(&line, |c: &regex_lite::Captures<'_>| {
            format!("{}{}", &c[1], self.stand_in('X', &c[2]))
        });
        let time = regex_lite::Regex::new(r#""commit_time":"([^"]+)""#).expect("regex");
        let line = time.replace_all(&line, |c: &regex_lite::Captures<'_>| {
            format!("\"commit_time\":\"{}\"", self.stand_in('T', &c[1]))
        });
        line.into_owned()
    }
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Compares `got` with the golden file `name`, or writes it when asked to.
fn compare(name: &str, got: &str) {
    let path = golden(name);
    if std::env::var_os("WALPIPE_WRITE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (n, (want, got)) in want.lines().zip(got.lines()).enumerate() {
        assert_eq!(got, want, "{name}, line {}", n + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count(), "{name}: the number of lines");
}

fn source(cluster: &Cluster, test: &str) -> String {
    let db = cluster.fresh_db(test);
    cluster.psql(&db, DDL);
    db
}

#[test]
fn change_lines_are_unchanged_byte_for_byte() {
    for cluster in clusters() {
        let db = source(cluster, "golden_lines");
        publication_and_slot(cluster, &db, &db);
        cluster.psql(&db, WORKLOAD);
        let end = cluster.current_lsn(&db);
        let output = run_with_timeout(
            walpipe()
                .args(["tail", "--slot", &db, "--publication", &db, "--endpos", &end, "--source"])
                .arg(cluster.url(&db)),
            Duration::from_secs(120),
        );
        assert!(output.status.success(), "walpipe tail: {}", String::from_utf8_lossy(&output.stderr));
        let mut normalizer = Normalizer::new();
        let lines: String = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .map(|line| normalizer.line(line) + "\n")
            .collect();
        compare(&format!("change-lines.pg{}.jsonl", cluster.major), &lines);
    }
}

/// The workload is committed while the job is stopped: the stream resumes
/// with a backlog whose shapes have changed since, the case where a
/// walsender that had opened the tables before streaming described old
/// rows with today's columns.
#[test]
fn changelog_rows_are_unchanged_byte_for_byte() {
    for cluster in clusters() {
        let db = source(cluster, "golden_changelog_src");
        let sink = cluster.fresh_db("golden_changelog_sink");
        let job = format!("golden_changelog_{}_{}", cluster.major, std::process::id());
        let settings = [("WALPIPE_SINK_MODE", "changelog"), ("WALPIPE_SNAPSHOT_MODE", "never")];
        let first = start_run(cluster, &db, &sink, &job, &settings);
        wait_for(Duration::from_secs(60), "the job's first checkpoint", || {
            cluster
                .try_psql(&sink, &format!("SELECT 1 FROM walpipe.checkpoints WHERE job_name = '{job}'"))
                .is_some_and(|found| found == "1")
        });
        assert!(stop_run(first).success());
        cluster.psql(&db, WORKLOAD);
        let child = start_run(cluster, &db, &sink, &job, &settings);
        let end = cluster.current_lsn(&db);
        wait_for(Duration::from_secs(120), "the workload in the changelog", || {
            cluster
                .try_psql(
                    &sink,
                    &format!("SELECT 1 FROM walpipe.checkpoints WHERE job_name = '{job}' AND applied_lsn >= '{end}'"),
                )
                .is_some_and(|found| found == "1")
        });
        assert!(stop_run(child).success());
        let tables = ["typed", "full_row", "toasted", "renamed", "renamed_now"];
        let mut normalizer = Normalizer::new();
        let mut rows = String::new();
        for table in tables {
            let Some(text) = cluster.try_psql(
                &sink,
                &format!(
                    "SELECT to_jsonb(c) - '_walpipe_commit_time' FROM {table} c ORDER BY _walpipe_lsn, _walpipe_id"
                ),
            ) else {
                continue;
            };
            rows.push_str(&format!("-- {table}\n"));
            for line in text.lines() {
                rows.push_str(&normalizer.line(line));
                rows.push('\n');
            }
        }
        compare(&format!("changelog-rows.pg{}.jsonl", cluster.major), &rows);
    }
}
