//! Batches that do not depend on timing, and no wait for the flush
//! interval (docs/src/internals/positions.md, "When a batch is cut").
//!
//! - A backlog goes out in full batches: N changes in batches of B take at
//!   most ceil(N/B) requests, plus a small slack for a keepalive the server
//!   may send mid-drain (the state store is the source database, and each
//!   delivery writes to it). Before, a batch was cut whenever the socket
//!   happened to hold no further message, and the same backlog went out in
//!   1,049 to 4,173 requests from one run to the next.
//! - A committed row reaches the sink without waiting for the flush
//!   interval, on a quiet stream and under a write load. The interval is
//!   set to 60 s and each row is waited for at most 30 s, so a pass cannot
//!   come from the interval and a loaded machine cannot fail it.

mod common;

use std::time::{Duration, Instant};

use common::fakes::{Mode, WebhookReceiver};
use common::{
    Cluster, Workload, run_log, spawn_run, start_run, stop_run, wait_for, wait_for_showing, wait_running,
};

const FLUSH_INTERVAL_MS: &str = "60000";
/// Half the flush interval: a row later than this waited for it.
const WELL_BEFORE_THE_INTERVAL: Duration = Duration::from_secs(30);

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

fn webhook_job(
    cluster: &Cluster,
    db: &str,
    job: &str,
    receiver: &WebhookReceiver,
) -> Vec<(&'static str, String)> {
    vec![
        ("WALPIPE_SOURCE_URL", cluster.url(db)),
        ("WALPIPE_SINK_URL", receiver.url.clone()),
        ("WALPIPE_JOB_NAME", job.to_string()),
        ("WALPIPE_BATCH_SIZE", "1000".to_string()),
        ("WALPIPE_FLUSH_INTERVAL_MS", FLUSH_INTERVAL_MS.to_string()),
        ("WALPIPE_TABLES", "public.orders".to_string()),
    ]
}

fn changes_received(receiver: &WebhookReceiver) -> usize {
    let deliveries = receiver.deliveries();
    let accepted = deliveries.iter().filter(|d| d.accepted());
    accepted.flat_map(|d| d.changes()).filter(|change| change["op"] == "insert").count()
}

#[test]
fn a_backlog_goes_out_in_full_batches() {
    const TRANSACTIONS: usize = 200;
    const ROWS: usize = 100;
    const BATCH: usize = 1000;
    let cluster = cluster();
    let db = cluster.fresh_db("backlog_batches");
    cluster.psql(&db, "CREATE TABLE orders (id int PRIMARY KEY, customer int, note text)");
    let receiver = WebhookReceiver::start(Mode::Flaky(0.0));
    let job = format!("batches_{}", std::process::id());
    let vars = webhook_job(cluster, &db, &job, &receiver);
    // The slot and the checkpoint first (no copy: the table is empty),
    // then the backlog while walpipe is stopped.
    let walpipe = spawn_run(&job, false, &vars, &[("WALPIPE_SNAPSHOT_MODE", "never")]);
    wait_running(&job);
    stop_run(walpipe);
    let backlog: String = (0..TRANSACTIONS)
        .map(|t| {
            let first = t * ROWS + 1;
            format!(
                "BEGIN; INSERT INTO orders SELECT i, i % 100, 'order ' || i FROM generate_series({first}, {}) i; COMMIT;\n",
                first + ROWS - 1
            )
        })
        .collect();
    cluster.psql(&db, &backlog);
    let requests_before = receiver.deliveries().len();

    let walpipe = spawn_run(&job, true, &vars, &[("WALPIPE_SNAPSHOT_MODE", "never")]);
    let total = TRANSACTIONS * ROWS;
    wait_for_showing(
        Duration::from_secs(120),
        "the whole backlog at the webhook",
        || changes_received(&receiver) >= total,
        || run_log(&job),
    );
    stop_run(walpipe);
    let deliveries = receiver.deliveries();
    let requests = deliveries.len() - requests_before;
    let sizes: Vec<usize> = deliveries[requests_before..].iter().map(|d| d.changes().len()).collect();
    let full_batches = total.div_ceil(BATCH);
    assert!(
        requests <= full_batches + 2,
        "{total} changes in batches of {BATCH} took {requests} requests (at most {} expected): {sizes:?}",
        full_batches + 2
    );
    assert_eq!(changes_received(&receiver), total, "each change once");
}

/// Inserts `count` marker rows one at a time (`mark` writes marker `i`),
/// each waited for in the sink (`arrived(i)`) before the next.
fn each_marker_arrives_well_before_the_interval(
    what: &str,
    count: i32,
    mut mark: impl FnMut(i32),
    mut arrived: impl FnMut(i32) -> bool,
) {
    for i in 1..=count {
        let started = Instant::now();
        mark(i);
        wait_for(WELL_BEFORE_THE_INTERVAL, &format!("marker {i} in the sink ({what})"), || arrived(i));
        eprintln!("{what}: marker {i} arrived after {:?}", started.elapsed());
    }
}

const LOAD: &str = "INSERT INTO load (v) VALUES (random()::text);\n";

/// Three markers on a quiet stream (ids 1..=3), then three under a pgbench
/// load on `db` (ids 101..=103), each arriving well before the interval.
fn quiet_then_under_load(cluster: &Cluster, db: &str, mark: impl Fn(i32), arrived: impl Fn(i32) -> bool) {
    each_marker_arrives_well_before_the_interval("quiet", 3, &mark, &arrived);
    let load = Workload::start(cluster, db, LOAD, 2, 0, 600);
    load.wait_writing(cluster, db);
    each_marker_arrives_well_before_the_interval("under load", 3, |i| mark(100 + i), |i| arrived(100 + i));
    load.stop();
}

#[test]
fn a_committed_row_reaches_the_postgres_sink_without_waiting_for_the_flush_interval() {
    let cluster = cluster();
    let db = cluster.fresh_db("latency_src");
    let sink = cluster.fresh_db("latency_sink");
    cluster.psql(
        &db,
        "CREATE TABLE marks (id int PRIMARY KEY); CREATE TABLE load (id bigserial PRIMARY KEY, v text)",
    );
    let job = format!("latency_pg_{}", std::process::id());
    let walpipe = start_run(cluster, &db, &sink, &job, &[("WALPIPE_FLUSH_INTERVAL_MS", FLUSH_INTERVAL_MS)]);
    wait_running(&job);
    let mark = |i: i32| {
        cluster.psql(&db, &format!("INSERT INTO marks VALUES ({i})"));
    };
    let arrived = |i: i32| {
        cluster.try_psql(&sink, &format!("SELECT 1 FROM marks WHERE id = {i}")).as_deref() == Some("1")
    };
    quiet_then_under_load(cluster, &db, mark, arrived);
    stop_run(walpipe);
}

#[test]
fn a_committed_row_reaches_the_webhook_without_waiting_for_the_flush_interval() {
    let cluster = cluster();
    let db = cluster.fresh_db("latency_hook");
    cluster.psql(
        &db,
        "CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE load (id bigserial PRIMARY KEY, v text)",
    );
    let receiver = WebhookReceiver::start(Mode::Flaky(0.0));
    let job = format!("latency_hook_{}", std::process::id());
    let walpipe = spawn_run(&job, false, &webhook_job(cluster, &db, &job, &receiver), &[]);
    wait_running(&job);
    let mark = |i: i32| {
        cluster.psql(&db, &format!("INSERT INTO orders VALUES ({i})"));
    };
    let arrived = |i: i32| {
        receiver.deliveries().iter().flat_map(|d| d.changes()).any(|change| change["new"]["id"] == i)
    };
    quiet_then_under_load(cluster, &db, mark, arrived);
    stop_run(walpipe);
}
