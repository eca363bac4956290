//! A large transaction is applied into the Postgres sink while the source
//! still decodes it (the server streams it in blocks before it commits):
//! nothing of it is visible in the sink before its commit, a kill -9 in
//! the middle loses and shows nothing, an abort leaves nothing behind, and
//! a transaction that something else interleaves with comes whole at its commit.
//!
//! The proof that a transaction is being applied early is durable: the
//! sink's backend holds a lock on the destination while the source's
//! transaction is still open (without early apply the sink would not touch
//! it before the commit).

mod common;

use std::time::Duration;

use common::{Cluster, fingerprint, run_log, spawn_run, start_run, wait_for, wait_running};

const ROWS: usize = 20_000;

/// One test at a time: a test's open source transaction holds up the slot
/// another test creates in the same cluster (a slot waits for every running
/// transaction), long enough to time out on a loaded machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A source and a sink with a `big` and a `small` table, streaming large
/// transactions early (64 kB of decoding memory on the source).
fn set_up(test: &str) -> (&'static Cluster, String, String, String) {
    let cluster = common::pg15_with(&common::options());
    let source = cluster.fresh_db(&format!("{test}_src"));
    let sink = cluster.fresh_db(&format!("{test}_sink"));
    cluster.psql(
        &source,
        "CREATE TABLE big (id int PRIMARY KEY, note text); CREATE TABLE small (id int PRIMARY KEY)",
    );
    cluster.psql(&source, &format!("ALTER DATABASE {source} SET logical_decoding_work_mem = '64kB'"));
    (cluster, source, sink, format!("{test}_{}", std::process::id()))
}

/// Env for the runs: small sink batches, so rows are written as they come.
const EXTRA: &[(&str, &str)] = &[("WALPIPE_BATCH_SIZE", "500")];

/// Waits until a sink backend has written into `big` inside a transaction
/// it has not committed (it holds the table's row-exclusive lock).
fn wait_applying_early(cluster: &Cluster, sink: &str) {
    wait_for(Duration::from_secs(120), "the sink applying the open transaction", || {
        cluster
            .try_psql(
                sink,
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'big' AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()",
            )
            .is_some_and(|count| count != "0")
    });
}

/// A job running from a fresh source into a fresh sink, and a source
/// session with a large transaction open that the sink is applying.
struct Open {
    cluster: &'static Cluster,
    source: String,
    sink: String,
    job: String,
    run: std::process::Child,
    client: tokio_postgres::Client,
}

async fn open_large_transaction(test: &str) -> Open {
    let (cluster, source, sink, job) = set_up(test);
    let run = start_run(cluster, &source, &sink, &job, EXTRA);
    wait_running(&job);
    // Not before both tables' copies are in: no transaction is applied
    // early while a table is copied in chunks.
    wait_for(Duration::from_secs(120), "both tables copied", || {
        run_log(&job).matches("its last chunk took its place in the stream").count() >= 2
    });
    let client = cluster.client(&source).await;
    client
        .batch_execute(&format!(
            "BEGIN; INSERT INTO big SELECT i, 'row ' || i FROM generate_series(1, {ROWS}) i"
        ))
        .await
        .expect("the open transaction");
    wait_applying_early(cluster, &sink);
    Open { cluster, source, sink, job, run, client }
}

fn count(cluster: &Cluster, db: &str, table: &str) -> usize {
    cluster.try_psql(db, &format!("SELECT count(*) FROM {table}")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Whether `table` (its columns `id` and `note`) holds the same rows in both.
fn same(cluster: &Cluster, source: &str, sink: &str) -> bool {
    let print = |db| fingerprint(cluster, db, "big", "id, note", "id");
    let sunk = print(sink);
    sunk.is_some() && sunk == print(source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_a_transaction_applied_early_shows_nothing_and_loses_nothing() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Open { cluster, source, sink, job, mut run, client } = open_large_transaction("early_kill").await;
    assert_eq!(count(cluster, &sink, "big"), 0, "nothing of an open transaction is visible in the sink");
    run.kill().expect("kill -9");
    run.wait().expect("reaped");
    assert_eq!(count(cluster, &sink, "big"), 0, "nothing of it survives the kill");

    client
        .batch_execute(&format!(
            "UPDATE big SET note = 'changed' WHERE id % 7 = 0; DELETE FROM big WHERE id % 11 = 0; \
             INSERT INTO big SELECT i, 'row ' || i FROM generate_series({}, {}) i; COMMIT",
            ROWS + 1,
            2 * ROWS
        ))
        .await
        .expect("the second half and the commit");
    let vars = [
        ("WALPIPE_SOURCE_URL", cluster.url(&source)),
        ("WALPIPE_SINK_URL", cluster.url(&sink)),
        ("WALPIPE_JOB_NAME", job.clone()),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    let run = spawn_run(&job, true, &vars, EXTRA);
    wait_for(Duration::from_secs(180), "the sink equal to the source", || same(cluster, &source, &sink));
    assert!(common::stop_run(run).success());
    let log = run_log(&job);
    assert!(log.contains("applying a streamed transaction while it is decoded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transaction_that_aborts_leaves_nothing_behind() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Open { cluster, source, sink, job, run, client } = open_large_transaction("early_abort").await;
    // Changes that need the destination's staging table, which is made
    // inside the transaction the abort rolls back.
    client
        .batch_execute("UPDATE big SET note = 'changed' WHERE id % 7 = 0; DELETE FROM big WHERE id % 11 = 0")
        .await
        .expect("updates and deletes in the open transaction");
    // The sink made its staging table inside its open transaction: it holds
    // the new table's exclusive lock (the table itself is not visible yet).
    wait_for(Duration::from_secs(120), "the sink making its staging table", || {
        cluster
            .try_psql(
                &sink,
                "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND l.pid <> pg_backend_pid()",
            )
            .is_some_and(|count| count != "0")
    });
    client.batch_execute("ROLLBACK").await.expect("rolled back");
    // A later transaction reaching the sink shows the abort was passed.
    cluster.psql(&source, "INSERT INTO small VALUES (1)");
    wait_for(Duration::from_secs(120), "the later transaction in the sink", || {
        count(cluster, &sink, "small") == 1
    });
    assert_eq!(count(cluster, &sink, "big"), 0, "nothing of the aborted transaction");
    // Later updates and deletes need the staging table again: made anew,
    // since the one made in the aborted transaction is gone with it.
    cluster.psql(&source, "INSERT INTO big SELECT i, 'again' FROM generate_series(1, 100) i");
    cluster.psql(&source, "UPDATE big SET note = 'later' WHERE id % 2 = 0; DELETE FROM big WHERE id % 3 = 0");
    wait_for(Duration::from_secs(120), "the later changes of big in the sink", || {
        same(cluster, &source, &sink)
    });
    assert!(common::stop_run(run).success());
    let log = run_log(&job);
    assert!(log.contains("rolled back a transaction applied while it was decoded"), "{log}");
    assert!(!log.contains("cannot be applied"), "no table was isolated: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_another_one_interleaves_with_comes_whole_at_its_commit() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Open { cluster, source, sink, job, run, client } = open_large_transaction("early_interleaved").await;
    // Committed while the large one is open: it comes between its blocks.
    cluster.psql(&source, "INSERT INTO small VALUES (1), (2)");
    wait_for(Duration::from_secs(120), "the small transaction in the sink", || {
        count(cluster, &sink, "small") == 2
    });
    assert_eq!(count(cluster, &sink, "big"), 0, "nothing of the open transaction");
    client
        .batch_execute(&format!(
            "SAVEPOINT part; INSERT INTO big SELECT i, 'gone' FROM generate_series({}, {}) i; ROLLBACK TO SAVEPOINT part; \
             UPDATE big SET note = 'changed' WHERE id % 5 = 0; COMMIT",
            ROWS + 1,
            2 * ROWS
        ))
        .await
        .expect("the rest and the commit");
    wait_for(Duration::from_secs(180), "the sink equal to the source", || same(cluster, &source, &sink));
    assert!(common::stop_run(run).success());
    let log = run_log(&job);
    assert!(log.contains("so it is applied from its spill file at its commit"), "{log}");
}

/// A column renamed inside the transaction: the sink cannot read that in
/// the source's catalog before the commit, so the section is void and the
/// transaction comes whole, with the column followed by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_inside_a_transaction_applied_early_is_followed_at_its_commit() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Open { cluster, source, sink, job, run, client } = open_large_transaction("early_ddl").await;
    client
        .batch_execute(&format!(
            "ALTER TABLE big RENAME COLUMN note TO remark; ALTER TABLE big ADD COLUMN grade int; \
             INSERT INTO big SELECT i, 'later ' || i, i % 3 FROM generate_series({}, {}) i; COMMIT",
            ROWS + 1,
            2 * ROWS
        ))
        .await
        .expect("the schema change and the commit");
    let print = |db| fingerprint(cluster, db, "big", "id, remark, grade", "id");
    wait_for(Duration::from_secs(180), "the sink equal to the source", || {
        let sunk = print(&sink);
        sunk.is_some() && sunk == print(&source)
    });
    assert!(common::stop_run(run).success());
    let log = run_log(&job);
    assert!(log.contains("so it is applied from its spill file at its commit"), "{log}");
}
