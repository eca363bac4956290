//! Standby status updates on a real server: a quiet database's slot still
//! advances when other databases write, neither an idle `tail` nor one whose
//! stdout nobody reads is dropped at a short `wal_sender_timeout`, and
//! SIGTERM exits cleanly.

mod common;

use common::{ClusterOptions, RunningTail, lsn, publication_and_slot, wait_for};
use std::time::{Duration, Instant};

fn cluster() -> &'static common::Cluster {
    common::pg15_with(&ClusterOptions {
        settings: vec![("wal_sender_timeout", "2s".into())],
        ..ClusterOptions::default()
    })
}

fn clusters() -> Vec<&'static common::Cluster> {
    let options =
        ClusterOptions { settings: vec![("wal_sender_timeout", "2s".into())], ..ClusterOptions::default() };
    let mut all = vec![cluster()];
    all.extend(common::pg18_with(&options));
    all
}

/// The slot's walsender process id ("" while inactive).
fn active_pid(cluster: &common::Cluster, slot: &str) -> String {
    cluster.psql(
        "postgres",
        &format!(
            "SELECT coalesce(active_pid::text, '') FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
}

/// Waits for the slot to become active and returns its walsender's pid.
fn walsender_of(cluster: &common::Cluster, slot: &str) -> String {
    wait_for(Duration::from_secs(10), "the slot to become active", || !active_pid(cluster, slot).is_empty());
    active_pid(cluster, slot)
}

fn confirmed(cluster: &common::Cluster, slot: &str) -> u64 {
    lsn(&cluster.psql(
        "postgres",
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    ))
}

#[test]
fn a_quiet_database_slot_advances_while_another_database_writes() {
    for cluster in clusters() {
        let quiet = cluster.fresh_db("quiet");
        let busy = cluster.fresh_db("busy");
        cluster.psql(&quiet, "CREATE TABLE untouched (id int PRIMARY KEY)");
        publication_and_slot(cluster, &quiet, &quiet);
        cluster.psql(&busy, "CREATE TABLE churn (id int, pad text)");
        let tail = RunningTail::start(cluster, &quiet, &quiet, &quiet, false);
        let before = confirmed(cluster, &quiet);

        for _ in 0..5 {
            cluster
                .psql(&busy, "INSERT INTO churn SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i");
        }
        let written_elsewhere = lsn(&cluster.current_lsn(&busy));
        assert!(written_elsewhere > before + 1_000_000, "the other database wrote WAL");
        wait_for(Duration::from_secs(30), "the quiet slot to confirm past the other database's WAL", || {
            confirmed(cluster, &quiet) >= written_elsewhere
        });
        assert_eq!(tail.lines(), 0, "nothing of the other database is printed");
        let (status, stderr, _) = tail.stop();
        assert!(status.success(), "SIGTERM is a clean stop: {stderr}");
    }
}

#[test]
fn an_idle_tail_survives_a_two_second_wal_sender_timeout() {
    for cluster in clusters() {
        let db = cluster.fresh_db("idle");
        cluster.psql(&db, "CREATE TABLE t (id int PRIMARY KEY)");
        publication_and_slot(cluster, &db, &db);
        let mut tail = RunningTail::start(cluster, &db, &db, &db, true);
        let walsender = walsender_of(cluster, &db);

        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            assert!(tail.is_running(), "walpipe tail exited while idle");
            assert_eq!(
                active_pid(cluster, &db),
                walsender,
                "the walsender was replaced: the session was dropped"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Still streaming after the idle spell.
        cluster.psql(&db, "INSERT INTO t VALUES (1)");
        wait_for(Duration::from_secs(10), "the insert to arrive", || tail.lines() == 1);
        let (status, stderr, lines) = tail.stop();
        assert!(status.success(), "{stderr}");
        assert_eq!(lines[0]["new"]["id"], 1);
        assert!(
            !cluster.log().contains("terminating walsender process due to replication timeout"),
            "the server timed the walsender out"
        );
    }
}

#[test]
fn a_tail_whose_output_is_not_read_keeps_its_session_and_confirms_nothing_unwritten() {
    for cluster in clusters() {
        let db = cluster.fresh_db("stalled");
        cluster.psql(&db, "CREATE TABLE t (id int PRIMARY KEY, pad text)");
        publication_and_slot(cluster, &db, &db);
        let start = confirmed(cluster, &db);
        let mut tail = RunningTail::start_stalled(cluster, &db, &db, &db, false);
        let walsender = walsender_of(cluster, &db);
        // Far more than the pipe and walpipe's buffers hold, in many transactions.
        for _ in 0..20 {
            cluster.psql(&db, "INSERT INTO t SELECT i, repeat('p', 200) FROM generate_series((SELECT coalesce(max(id), 0) + 1 FROM t), (SELECT coalesce(max(id), 0) + 5000 FROM t)) i");
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            assert!(tail.is_running(), "walpipe tail exited while its output was stalled");
            assert_eq!(
                active_pid(cluster, &db),
                walsender,
                "the session was dropped while the output was stalled"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let end = lsn(&cluster.current_lsn(&db));
        assert!(confirmed(cluster, &db) < end, "what was not written out is not confirmed");
        assert!(confirmed(cluster, &db) >= start);

        tail.resume_reading();
        wait_for(Duration::from_secs(60), "every row to arrive", || tail.lines() == 100_000);
        wait_for(Duration::from_secs(10), "the end to be confirmed", || confirmed(cluster, &db) >= end);
        let (status, stderr, _) = tail.stop();
        assert!(status.success(), "{stderr}");
        assert!(!cluster.log().contains("terminating walsender process due to replication timeout"));
    }
}
