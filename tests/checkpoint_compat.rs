//! A job resumes from the state the release before the Source seam wrote:
//! its `walpipe.*` tables in that release's form (`tests/golden/
//! state-schema.sql`, `pg_dump --schema-only` of a sink that release set
//! up), holding its checkpoint and copy progress. After the upgrade the
//! checkpoint is read (the schema brought up to date if its form changed),
//! nothing is copied again, and the changes made while walpipe was down
//! arrive once.
//!
//! To write the schema file again, with the earlier release's binary:
//! `WALPIPE_WRITE_GOLDEN=1 TEST_WALPIPE_BIN=<old walpipe> cargo test --test checkpoint_compat`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, fingerprint, options, pg15_with, run_log, start_run, stop_run, wait_for};

fn schema_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/state-schema.sql")
}

fn converged(cluster: &Cluster, source: &str, sink: &str) -> bool {
    let of = |db: &str| fingerprint(cluster, db, "items", "id, note", "id");
    of(source).is_some() && of(source) == of(sink)
}

/// `walpipe.*` as `pg_dump` prints it, without psql's meta-commands.
fn dump_state_schema(cluster: &Cluster, db: &str) -> String {
    let output = Command::new(cluster.bindir.join("pg_dump"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &cluster.port.to_string()])
        .args(["--schema-only", "--no-owner", "--schema", "walpipe", db])
        .output()
        .expect("pg_dump");
    assert!(output.status.success(), "pg_dump: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with('\\') && !line.starts_with("--"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Replaces the sink's `walpipe` schema by the earlier release's form,
/// keeping every row in the columns both forms have.
fn reform_state(cluster: &Cluster, sink: &str, schema: &str) {
    let tables = cluster.psql(
        sink,
        "SELECT string_agg(relname, ' ' ORDER BY (SELECT count(*) FROM pg_constraint \
         WHERE conrelid = c.oid AND contype = 'f'), relname) FROM pg_class c \
         WHERE relnamespace = 'walpipe'::regnamespace AND relkind = 'r'",
    );
    cluster.psql(sink, "CREATE SCHEMA kept");
    for table in tables.split_whitespace() {
        cluster.psql(sink, &format!("CREATE TABLE kept.{table} AS SELECT * FROM walpipe.{table}"));
    }
    cluster.psql(sink, "DROP SCHEMA walpipe CASCADE");
    cluster.psql(sink, schema);
    // Referenced tables first, so the foreign keys hold as the rows go back.
    for table in tables.split_whitespace() {
        let columns = cluster.psql(
            sink,
            &format!(
                "SELECT string_agg(quote_ident(a.attname), ', ') FROM pg_attribute a JOIN pg_attribute k \
                 ON k.attname = a.attname AND k.attrelid = 'kept.{table}'::regclass AND k.attnum > 0 \
                 WHERE a.attrelid = to_regclass('walpipe.{table}') AND a.attnum > 0 AND NOT a.attisdropped"
            ),
        );
        if !columns.is_empty() {
            cluster.psql(
                sink,
                &format!("INSERT INTO walpipe.{table} ({columns}) SELECT {columns} FROM kept.{table}"),
            );
        }
    }
    cluster.psql(sink, "DROP SCHEMA kept CASCADE");
}

#[test]
fn a_checkpoint_in_the_previous_release_form_is_resumed_from() {
    let cluster = pg15_with(&options());
    let source = cluster.fresh_db("compat_src");
    let sink = cluster.fresh_db("compat_sink");
    cluster.psql(
        &source,
        "CREATE TABLE items (id int PRIMARY KEY, note text); \
         INSERT INTO items SELECT i, 'row ' || i FROM generate_series(1, 500) i",
    );
    let job = format!("compat_{}", std::process::id());
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_for(Duration::from_secs(90), "the copy and a checkpoint", || {
        converged(cluster, &source, &sink)
            && cluster
                .try_psql(&sink, &format!("SELECT 1 FROM walpipe.checkpoints WHERE job_name = '{job}'"))
                .is_some_and(|found| found == "1")
    });
    cluster.psql(&source, "UPDATE items SET note = 'streamed' WHERE id <= 10");
    wait_for(Duration::from_secs(60), "the streamed update", || converged(cluster, &source, &sink));
    assert!(stop_run(child).success(), "{}", run_log(&job));
    if std::env::var_os("WALPIPE_WRITE_GOLDEN").is_some() {
        std::fs::write(schema_file(), dump_state_schema(cluster, &sink)).expect("write the schema");
        return;
    }

    let schema = std::fs::read_to_string(schema_file()).expect("tests/golden/state-schema.sql");
    reform_state(cluster, &sink, &schema);
    let before = cluster
        .psql(&sink, &format!("SELECT applied_lsn::text FROM walpipe.checkpoints WHERE job_name = '{job}'"));
    assert!(!before.is_empty(), "the checkpoint survived the change of form");
    cluster.psql(
        &source,
        "INSERT INTO items SELECT i, 'while down ' || i FROM generate_series(501, 550) i; \
         UPDATE items SET note = 'changed while down' WHERE id BETWEEN 100 AND 120; \
         DELETE FROM items WHERE id BETWEEN 200 AND 204",
    );
    let child = start_run(cluster, &source, &sink, &job, &[]);
    wait_for(Duration::from_secs(90), "the changes made while down", || converged(cluster, &source, &sink));
    assert!(stop_run(child).success(), "{}", run_log(&job));
    let log = run_log(&job);
    assert!(
        log.contains("resuming from the checkpoint") && log.contains(&format!("applied={before}")),
        "resumed from the old checkpoint {before}: {log}"
    );
    assert!(
        !log.contains("created the slot") && !log.contains("snapshot public.items"),
        "nothing copied again: {log}"
    );
    assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM items"), "545");
}
