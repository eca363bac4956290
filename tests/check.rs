//! `walpipe check` on real servers: one line per finding with its fix, exit 1 on an error.

mod common;

use common::{run_with_timeout, walpipe};
use std::time::Duration;

fn check(source: &str, sink: &str) -> (bool, String) {
    let output = run_with_timeout(
        walpipe().arg("check").env("WALPIPE_SOURCE_URL", source).env("WALPIPE_SINK_URL", sink),
        Duration::from_secs(60),
    );
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains("panicked"), "{text}");
    (output.status.success(), text)
}

#[test]
fn a_healthy_setup_passes_with_the_retention_warning() {
    for cluster in common::clusters() {
        let source = cluster.fresh_db("check_ok_src");
        let sink = cluster.fresh_db("check_ok_sink");
        cluster.psql(&source, "CREATE TABLE orders (id int PRIMARY KEY, note text)");
        let (ok, text) = check(&cluster.url(&source), &cluster.url(&sink));
        assert!(ok, "{text}");
        assert!(text.contains("ok      wal_level = logical"), "{text}");
        assert!(text.contains("table public.orders can be replicated (key: id; copied in chunks of that key while streaming)"), "{text}");
        assert!(
            text.contains("warning max_slot_wal_keep_size = -1")
                && text.contains("ALTER SYSTEM SET max_slot_wal_keep_size"),
            "{text}"
        );
        assert!(text.contains("the sink") && text.contains("is reachable"), "{text}");
        assert!(text.contains("renames are known by the source's attribute numbers"), "{text}");
        assert!(text.contains("refuses UPDATE and DELETE on a new table"), "{text}");
        if cluster.major >= 18 {
            assert!(text.contains("idle_replication_slot_timeout"), "{text}");
        }
    }
}

#[test]
fn problems_are_errors_with_their_fix() {
    let cluster = common::pg15_with(&common::options());
    let source = cluster.fresh_db("check_bad_src");
    cluster.psql(
        &source,
        "CREATE TABLE events (at timestamptz, what text); CREATE TABLE fine (id int PRIMARY KEY); \
         CREATE TABLE audit (at int, what text); ALTER TABLE audit REPLICA IDENTITY FULL",
    );
    cluster.psql(&source, "CREATE ROLE check_plain LOGIN");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let plain = format!("postgres://check_plain@127.0.0.1:{}/{source}?sslmode=disable", cluster.port);
    let (ok, text) = check(&plain, &format!("postgres://postgres@127.0.0.1:{closed}/db"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("error   table public.events has no primary key")
            && text.contains("REPLICA IDENTITY FULL"),
        "{text}"
    );
    assert!(text.contains("ok      table public.fine can be replicated"), "{text}");
    // A mirror writes by key; the error names the sinks that do not need one.
    assert!(
        text.contains("error   table public.audit has REPLICA IDENTITY FULL but no primary key")
            && text.contains("WALPIPE_SINK_MODE=changelog"),
        "{text}"
    );
    assert!(
        text.contains("lacks the REPLICATION privilege: run ALTER ROLE check_plain REPLICATION"),
        "{text}"
    );
    assert!(text.contains(&format!("could not connect to the sink at 127.0.0.1:{closed}")), "{text}");
    assert!(text.contains("check(s) failed"), "{text}");
}
