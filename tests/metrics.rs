//! `/metrics`, `/healthz` and `/readyz` of a running `walpipe run` on real
//! servers: every metric of docs/src/reference/metrics.md with sane values, a scrape that
//! `promtool check metrics` accepts, and the slot monitor that keeps
//! reporting while the sink is blocked.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, http_addr, http_get, metric, run_log, start_run, stop_run, wait_for};

/// The retention cap the test cluster runs with.
const KEEP_SIZE_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

fn cluster() -> &'static Cluster {
    let mut options = common::options();
    options.settings.push(("max_slot_wal_keep_size", "256MB".into()));
    common::pg15_with(&options)
}

/// Every metric the monitoring guide promises (docs/src/guide/monitoring.md).
const REQUIRED: [&str; 21] = [
    "walpipe_source_events_total",
    "walpipe_source_transactions_total",
    "walpipe_source_bytes_total",
    "walpipe_sink_events_total",
    "walpipe_sink_bytes_total",
    "walpipe_source_idle_seconds",
    "walpipe_emit_event_time_lag_seconds",
    "walpipe_commit_to_sink_seconds_bucket",
    "walpipe_slot_retained_wal_bytes",
    "walpipe_slot_confirmed_lag_bytes",
    "walpipe_slot_safe_wal_size_bytes",
    "walpipe_slot_wal_status",
    "walpipe_slot_active",
    "walpipe_slot_invalidated",
    "walpipe_server_max_slot_wal_keep_size_bytes",
    "walpipe_server_wal_directory_bytes",
    "walpipe_job_state",
    "walpipe_job_phase",
    "walpipe_snapshot_rows_total",
    "walpipe_heartbeat_last_received_timestamp_seconds",
    "walpipe_build_info",
];

fn scrape(job: &str) -> String {
    let addr = http_addr(job).expect("walpipe serves HTTP");
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    body
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// Starts a job on table `t` (100 rows to snapshot) and waits until it streams.
fn start(cluster: &Cluster, test: &str) -> (String, String, String, std::process::Child) {
    let source = cluster.fresh_db(&format!("{test}_src"));
    let sink = cluster.fresh_db(&format!("{test}_sink"));
    cluster.psql(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE other (v text); \
         INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i",
    );
    let job = format!("{test}_{}", std::process::id());
    let child = start_run(
        cluster,
        &source,
        &sink,
        &job,
        &[("WALPIPE_HEARTBEAT_INTERVAL_MS", "500"), ("WALPIPE_TABLES", "public.t")],
    );
    wait_for(Duration::from_secs(30), "the job streams", || {
        http_addr(&job).is_some_and(|addr| {
            metric(&http_get(&addr, "/metrics").1, "walpipe_job_phase", &[("phase", "streaming")])
                == Some(1.0)
        })
    });
    (source, sink, job, child)
}

/// The rows of `t` that the chunked copy writes into the sink as events.
const COPIED: f64 = 100.0;

#[test]
fn every_spec_metric_is_exported_with_sane_values() {
    let cluster = cluster();
    let (source, sink, job, child) = start(cluster, "scrape");
    for statement in [
        "INSERT INTO t SELECT i, 'n' || i FROM generate_series(101, 130) i",
        "UPDATE t SET v = 'u' WHERE id <= 20",
        "DELETE FROM t WHERE id > 120",
    ] {
        cluster.psql(&source, statement);
    }
    wait_for(Duration::from_secs(30), "the changes are applied", || {
        cluster.psql(&sink, "SELECT count(*) FROM t") == "120"
    });
    let job_label = ("job_name", job.as_str());
    wait_for(Duration::from_secs(15), "the counters and a monitor poll", || {
        let body = scrape(&job);
        // The copy's rows reach the sink in the stream too (a chunk of 100 rows).
        metric(&body, "walpipe_sink_events_total", &[job_label, ("result", "ok")]) == Some(COPIED + 60.0)
            && metric(&body, "walpipe_slot_wal_status", &[job_label, ("status", "reserved")]) == Some(1.0)
            && metric(&body, "walpipe_heartbeat_last_received_timestamp_seconds", &[job_label])
                .is_some_and(|at| at > unix_now() - 10.0)
    });
    let body = scrape(&job);
    for name in REQUIRED {
        assert!(
            body.lines().any(|line| line.starts_with(name)),
            "{name} is missing from the scrape:\n{body}"
        );
    }
    let events =
        |op| metric(&body, "walpipe_source_events_total", &[job_label, ("table", "public.t"), ("op", op)]);
    assert_eq!(events("insert"), Some(30.0));
    assert_eq!(events("update"), Some(20.0));
    assert_eq!(events("delete"), Some(10.0));
    assert_eq!(metric(&body, "walpipe_source_transactions_total", &[job_label]), Some(3.0));
    assert!(metric(&body, "walpipe_source_bytes_total", &[job_label]).is_some_and(|b| b > 1000.0));
    assert!(metric(&body, "walpipe_sink_bytes_total", &[job_label]).is_some_and(|b| b > 500.0));
    assert_eq!(
        metric(&body, "walpipe_snapshot_rows_total", &[job_label, ("table", "public.t")]),
        Some(100.0)
    );
    // The three transactions, and the chunk's.
    assert_eq!(metric(&body, "walpipe_commit_to_sink_seconds_count", &[job_label]), Some(4.0));
    assert!(
        metric(&body, "walpipe_emit_event_time_lag_seconds", &[job_label])
            .is_some_and(|s| s > 0.0 && s < 10.0)
    );
    assert_eq!(metric(&body, "walpipe_job_state", &[job_label, ("state", "running")]), Some(1.0));
    assert_eq!(metric(&body, "walpipe_job_state", &[job_label, ("state", "failed")]), Some(0.0));
    let slot = ("slot", &*format!("walpipe_{job}"));
    assert_eq!(metric(&body, "walpipe_slot_active", &[job_label, slot]), Some(1.0));
    assert_eq!(metric(&body, "walpipe_slot_invalidated", &[job_label, slot]), Some(0.0));
    assert_eq!(metric(&body, "walpipe_slot_wal_status", &[job_label, ("status", "lost")]), Some(0.0));
    assert!(metric(&body, "walpipe_slot_safe_wal_size_bytes", &[job_label, slot]).is_some_and(|b| b > 0.0));
    assert!(metric(&body, "walpipe_slot_retained_wal_bytes", &[job_label, slot]).is_some_and(|b| b >= 0.0));
    assert_eq!(
        metric(&body, "walpipe_server_max_slot_wal_keep_size_bytes", &[job_label]),
        Some(KEEP_SIZE_BYTES)
    );
    assert!(metric(&body, "walpipe_server_wal_directory_bytes", &[job_label]).is_some_and(|b| b >= 16e6));
    assert_eq!(metric(&body, "walpipe_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert!(!body.contains("password"), "no secret in the scrape");

    let addr = http_addr(&job).expect("address");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_string()));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install -y prometheus) runs");
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), body.as_bytes()).expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    let findings =
        format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && findings.trim().is_empty(), "promtool check metrics: {findings}");
    assert!(stop_run(child).success(), "{}", run_log(&job));
}

#[test]
fn the_monitor_keeps_reporting_while_the_sink_is_blocked() {
    let cluster = cluster();
    let (source, sink, job, child) = start(cluster, "blocked");
    let job_label = ("job_name", job.as_str());
    let slot = ("slot", &*format!("walpipe_{job}"));
    cluster.psql(&source, "INSERT INTO t VALUES (1000, 'before')");
    wait_for(Duration::from_secs(30), "the row is applied and emitted", || {
        metric(&scrape(&job), "walpipe_sink_events_total", &[job_label, ("result", "ok")])
            == Some(COPIED + 1.0)
    });

    // Hold an exclusive lock on the sink table: applying the next change waits on it.
    let mut locker = Command::new(cluster.bindir.join("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "postgres", "-d", &sink])
        .args(["-c", "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120)"])
        .stdout(Stdio::null())
        .spawn()
        .expect("psql holding the lock");
    wait_for(Duration::from_secs(10), "the lock is held", || {
        cluster.psql(&sink, "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND granted") == "1"
    });
    cluster.psql(&source, "INSERT INTO t VALUES (1001, 'blocked')");
    // Blocked: walpipe's write of the change waits for the lock, the change queued before it.
    // And the monitor has reported the slot at least once.
    let mut before = String::new();
    wait_for(Duration::from_secs(30), "walpipe's write waiting for the lock", || {
        before = scrape(&job);
        cluster.psql(&sink, "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND NOT granted")
            != "0"
            && metric(&before, "walpipe_sink_queue_chunks", &[job_label]).is_some_and(|queued| queued >= 1.0)
            && metric(&before, "walpipe_slot_retained_wal_bytes", &[job_label, slot]).is_some()
    });
    let frozen_lag = metric(&before, "walpipe_emit_event_time_lag_seconds", &[job_label]).expect("emit lag");
    let value = |body: &str, name: &str, labels: &[(&str, &str)]| metric(body, name, labels).expect(name);

    // WAL keeps coming (into a table outside the publication), and nothing
    // is confirmed: written until every gauge shows it, however long that takes.
    let mut after = String::new();
    wait_for(Duration::from_secs(120), "the monitor to report the blocked sink", || {
        cluster.psql(&source, "INSERT INTO other SELECT repeat('x', 500) FROM generate_series(1, 2000)");
        after = scrape(&job);
        value(&after, "walpipe_monitor_last_poll_timestamp_seconds", &[job_label])
            > value(&before, "walpipe_monitor_last_poll_timestamp_seconds", &[job_label]) + 4.0
            && value(&after, "walpipe_slot_retained_wal_bytes", &[job_label, slot])
                > value(&before, "walpipe_slot_retained_wal_bytes", &[job_label, slot]) + 4_000_000.0
            && value(&after, "walpipe_slot_confirmed_lag_bytes", &[job_label, slot]) > 4_000_000.0
            && value(&after, "walpipe_source_idle_seconds", &[job_label])
                > value(&before, "walpipe_source_idle_seconds", &[job_label]) + 6.0
    });
    assert_eq!(
        value(&after, "walpipe_emit_event_time_lag_seconds", &[job_label]),
        frozen_lag,
        "emit lag is frozen"
    );
    // One chunk, or two when the transaction's commit arrived in a read of its own.
    let queued = value(&after, "walpipe_sink_queue_chunks", &[job_label]);
    assert!((1.0..=2.0).contains(&queued), "chunks waiting for the blocked sink: {queued}");
    assert_eq!(value(&after, "walpipe_slot_active", &[job_label, slot]), 1.0);

    cluster.psql(
        &sink,
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE relation = 't'::regclass AND granted AND mode = 'AccessExclusiveLock'",
    );
    let _ = locker.wait();
    wait_for(Duration::from_secs(30), "the blocked change is applied", || {
        cluster.psql(&sink, "SELECT count(*) FROM t WHERE id = 1001") == "1"
    });
    assert!(stop_run(child).success(), "{}", run_log(&job));
}

/// Every query of the dashboard, with Grafana's variables substituted.
fn dashboard_queries() -> Vec<String> {
    fn collect(panels: &serde_json::Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.replace("$job", "orders").replace("$__rate_interval", "1m"));
                }
            }
            collect(&panel["panels"], out);
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/walpipe.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("dashboard JSON");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"job"), "the dashboard has a job variable");
    let mut queries = Vec::new();
    collect(&dashboard["panels"], &mut queries);
    queries
}

/// The metric names an expression uses (identifiers outside quotes that start with `walpipe`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            unquoted.push(c);
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("walpipe"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_dashboard_query_parses_and_names_exported_metrics() {
    let cluster = cluster();
    let (source, _sink, job, child) = start(cluster, "dashboard");
    cluster.psql(&source, "INSERT INTO t VALUES (1000, 'streamed')");
    wait_for(Duration::from_secs(15), "a change applied and a monitor poll", || {
        let body = scrape(&job);
        metric(&body, "walpipe_slot_active", &[("job_name", job.as_str())]) == Some(1.0)
            && metric(&body, "walpipe_sink_events_total", &[("job_name", job.as_str()), ("result", "ok")])
                == Some(COPIED + 1.0)
    });
    let body = scrape(&job);
    assert!(stop_run(child).success(), "{}", run_log(&job));

    let mut known: Vec<String> = Vec::new();
    for line in body.lines().filter(|line| line.starts_with("# TYPE ")) {
        let mut words = line.split(' ').skip(2);
        let (name, kind) = (words.next().expect("name"), words.next().expect("type"));
        known.push(name.to_string());
        if kind == "histogram" {
            known.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")));
        }
    }
    // Families only a MySQL/MariaDB source fills have no series for this
    // Postgres job: they count once walpipe declares them.
    let families = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/families.rs"),
    )
    .expect("families");
    for name in ["walpipe_slot_expires_in_seconds", "walpipe_server_oldest_retained_position_bytes"] {
        assert!(families.contains(&format!("name: \"{name}\"")), "{name} is declared");
        known.push(name.to_string());
    }
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/walpipe.rules.yml"),
    )
    .expect("rules");
    known.extend(rules.lines().filter_map(|line| line.trim().strip_prefix("- record: ")).map(str::to_string));

    let queries = dashboard_queries();
    assert!(queries.len() >= 30, "the dashboard has its panels");
    for query in &queries {
        for name in metric_names(query) {
            assert!(
                known.contains(&name),
                "the dashboard queries {name}, which walpipe does not export: {query}"
            );
        }
    }
    // promtool parses each query as a recording rule.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(query).expect("quote")
        ));
    }
    let path = std::env::temp_dir().join(format!("walpipe-dashboard-{}.rules.yml", std::process::id()));
    std::fs::write(&path, file).expect("write the rules");
    let checked = Command::new("promtool").arg("check").arg("rules").arg(&path).output().expect("promtool");
    let _ = std::fs::remove_file(&path);
    assert!(
        checked.status.success(),
        "a dashboard query does not parse: {}",
        String::from_utf8_lossy(&checked.stdout)
    );
}
