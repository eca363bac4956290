//! A transaction of a million rows is streamed by the server while it is
//! still in progress, held by walpipe in bounded memory (spilled to disk),
//! and printed only at commit; the process stays under 64 MiB throughout.

mod common;

use common::{RunningTail, publication_and_slot, wait_for};
use std::time::Duration;

const ROWS: usize = 1_000_000;
const RSS_LIMIT_KB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_streams_in_bounded_memory() {
    let cluster = common::pg15_with(&common::options());
    let db = cluster.fresh_db("million");
    cluster.psql(&db, "CREATE TABLE big (id int PRIMARY KEY, note text, amount numeric, at timestamptz)");
    // Stream (rather than spill on the server) once 4 MB of changes are pending.
    cluster.psql(&db, &format!("ALTER DATABASE {db} SET logical_decoding_work_mem = '4MB'"));
    publication_and_slot(cluster, &db, &db);
    let tail = RunningTail::start(cluster, &db, &db, &db, false);

    let client = cluster.client(&db).await;
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .batch_execute(&format!(
            "INSERT INTO big SELECT i, 'row ' || i, i * 1.5, now() FROM generate_series(1, {ROWS}) i"
        ))
        .await
        .expect("insert a million rows");

    // In progress: the server has streamed it, walpipe has printed nothing.
    let stream_bytes = || {
        cluster
            .psql(
                "postgres",
                &format!("SELECT stream_bytes FROM pg_stat_replication_slots WHERE slot_name = '{db}'"),
            )
            .parse::<u64>()
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(120), "the server to stream the open transaction", || {
        stream_bytes() > 50_000_000
    });
    assert_eq!(tail.lines(), 0, "nothing is printed before the commit");

    let mut peak_rss = 0;
    let mut sample = |tail: &RunningTail| {
        if let Some(rss) = tail.proc_status_kb("VmRSS:") {
            peak_rss = peak_rss.max(rss);
        }
    };
    sample(&tail);
    client.batch_execute("COMMIT").await.expect("commit");
    let started = std::time::Instant::now();
    while tail.lines() < ROWS {
        assert!(started.elapsed() < Duration::from_secs(300), "only {} of {ROWS} rows arrived", tail.lines());
        sample(&tail);
        std::thread::sleep(Duration::from_millis(50));
    }
    let high_water = tail.proc_status_kb("VmHWM:").expect("VmHWM");
    peak_rss = peak_rss.max(high_water);
    eprintln!("walpipe tail peak RSS while streaming {ROWS} rows: {} KiB", peak_rss);
    assert!(peak_rss < RSS_LIMIT_KB, "peak RSS {peak_rss} KiB is over {RSS_LIMIT_KB} KiB");
    assert_eq!(tail.lines(), ROWS);
    let (status, stderr, _) = tail.stop();
    assert!(status.success(), "{stderr}");
}

/// The same through `walpipe run` into a Postgres sink: the million rows
/// are applied, and walpipe's memory stays bounded.
#[test]
fn a_million_row_transaction_is_applied_in_bounded_memory() {
    let cluster = common::pg15_with(&common::options());
    let source = cluster.fresh_db("million_src");
    let sink = cluster.fresh_db("million_sink");
    cluster.psql(&source, "CREATE TABLE big (id int PRIMARY KEY, note text, amount numeric, at timestamptz)");
    cluster.psql(&source, &format!("ALTER DATABASE {source} SET logical_decoding_work_mem = '4MB'"));
    let job = format!("million_{}", std::process::id());
    let child = common::start_run(cluster, &source, &sink, &job, &[]);
    let pid = child.id();
    let rss = || -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
    };
    common::wait_running(&job);
    cluster.psql(
        &source,
        &format!("INSERT INTO big SELECT i, 'row ' || i, i * 1.5, now() FROM generate_series(1, {ROWS}) i"),
    );
    let count = || cluster.psql(&sink, "SELECT count(*) FROM big").parse::<usize>().unwrap_or(0);
    wait_for(Duration::from_secs(300), "every row in the sink", || count() == ROWS);
    let peak = rss().expect("VmHWM");
    eprintln!("walpipe run peak RSS applying {ROWS} rows: {peak} KiB");
    assert!(peak < RSS_LIMIT_KB, "peak RSS {peak} KiB is over {RSS_LIMIT_KB} KiB");
    assert!(common::stop_run(child).success());
}
