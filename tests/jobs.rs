//! Jobs through the control API, on real servers: every transition of
//! docs/src/guide/jobs.md and every refusal, pause and resume, two workers and a
//! takeover after kill -9, a sink outage, a permanent error and retry, the
//! history, the webhook, and the token.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, fingerprint, http_addr, http_request, run_log, start_worker, wait_for};
use serde_json::{Value, json};
use walpipe::lifecycle::{self, ALL_ACTIONS, Action, State};

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

/// A worker and how to talk to its API.
struct Worker {
    child: Child,
    addr: String,
    label: String,
    token: Option<String>,
}

impl Worker {
    fn start(cluster: &Cluster, state_db: &str, label: &str, extra: &[(&str, &str)]) -> Worker {
        let child = start_worker(cluster, state_db, label, extra);
        let token = extra.iter().find(|(k, _)| *k == "WALPIPE_API_TOKEN").map(|(_, v)| v.to_string());
        wait_for(Duration::from_secs(20), "the worker serves its API", || http_addr(label).is_some());
        let addr = http_addr(label).expect("address");
        let worker = Worker { child, addr, label: label.to_string(), token };
        // The API answers 503 until the worker has opened the state store.
        wait_for(Duration::from_secs(20), "the worker's state store is open", || {
            worker.call("GET", "/api/v1/jobs", None).0 == 200
        });
        worker
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(&self.addr, method, path, body.as_deref(), self.token.as_deref());
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn job(&self, name: &str) -> Value {
        let (status, job) = self.call("GET", &format!("/api/v1/jobs/{name}"), None);
        assert_eq!(status, 200, "{job}");
        job
    }

    /// An action; 200 (its state reached) or, on a slow machine, 202 (still
    /// pending): callers wait for the state they need.
    fn act(&self, name: &str, action: &str, body: Option<Value>) -> Value {
        let (status, job) = self.call("POST", &format!("/api/v1/jobs/{name}/{action}"), body);
        assert!(status == 200 || status == 202, "{action} {name}: {status} {job}");
        job
    }

    fn wait_state(&self, name: &str, state: &str) {
        wait_for(Duration::from_secs(60), &format!("{name} {state}"), || {
            let job = self.job(name);
            job["state"] == state && (state != "running" || job["phase"] == "streaming")
        });
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("wait for the worker");
        assert!(status.success(), "{}", run_log(&self.label));
    }
}

/// A failed test must not leave its workers running.
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Source and sink databases with a table `t`, and a job definition for them.
fn setup(cluster: &Cluster, test: &str) -> (String, String, String, Value) {
    let source = cluster.fresh_db(&format!("{test}_src"));
    let sink = cluster.fresh_db(&format!("{test}_sink"));
    cluster.psql(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i",
    );
    let name = format!("{test}_{}", std::process::id());
    let definition = json!({
        "name": name,
        "source_url": cluster.url(&source),
        "sink_url": cluster.url(&sink),
        "flush_interval_ms": 100,
        "heartbeat_interval_ms": 1000,
    });
    (source, sink, name, definition)
}

fn same(cluster: &Cluster, source: &str, sink: &str) -> bool {
    let source_rows = fingerprint(cluster, source, "t", "id, v", "id");
    source_rows.is_some() && source_rows == fingerprint(cluster, sink, "t", "id, v", "id")
}

fn slot_exists(cluster: &Cluster, db: &str, job: &str) -> bool {
    cluster.psql(db, &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walpipe_{job}'"))
        == "1"
}

/// Every action the table does not allow from `state` is refused with 409,
/// naming the state and exactly the allowed actions.
fn refusals(worker: &Worker, name: &str, state: State) {
    let allowed = lifecycle::allowed_actions(state);
    for action in ALL_ACTIONS.into_iter().filter(|a| !allowed.contains(a)) {
        let (status, body) = match action {
            Action::Delete => worker.call("DELETE", &format!("/api/v1/jobs/{name}"), None),
            _ => worker.call("POST", &format!("/api/v1/jobs/{name}/{}", action.as_str()), None),
        };
        assert_eq!(status, 409, "{action:?} from {state}: {body}");
        assert_eq!(body["state"], state.as_str(), "{body}");
        let listed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
        assert_eq!(body["allowed_actions"], json!(listed), "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("cannot")), "{body}");
    }
}

/// A local webhook receiver: the JSON bodies it was sent.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(event) = serde_json::from_slice(&body) {
                    store.lock().expect("lock").push(event);
                }
            }
            let _ = std::io::Write::write_all(
                reader.get_mut(),
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    (url, received)
}

#[test]
fn every_transition_works_and_every_refusal_names_the_allowed_actions() {
    let cluster = cluster();
    let (source, sink, name, definition) = setup(cluster, "lifecycle");
    let (hook, events) = webhook_receiver();
    let worker = Worker::start(cluster, &sink, &name, &[("WALPIPE_WEBHOOK_URL", &hook)]);

    let (status, created) = worker.call("POST", "/api/v1/jobs", Some(definition.clone()));
    assert_eq!((status, created["state"].as_str()), (201, Some("created")), "{created}");
    assert_eq!(
        worker.call("POST", "/api/v1/jobs", Some(definition.clone())).0,
        409,
        "a second job of that name"
    );
    let (status, bad) = worker.call("POST", "/api/v1/jobs", Some(json!({"name": "x", "source_url": "nope"})));
    assert_eq!(status, 400, "{bad}");
    refusals(&worker, &name, State::Created);

    // start (created), pause, resume, stop (running), start (stopped), stop (paused) with cleanup.
    worker.act(&name, "start", None);
    worker.wait_state(&name, "running");
    wait_for(Duration::from_secs(30), "the snapshot", || same(cluster, &source, &sink));
    refusals(&worker, &name, State::Running);
    worker.act(&name, "pause", None);
    worker.wait_state(&name, "paused");
    refusals(&worker, &name, State::Paused);
    worker.act(&name, "resume", None);
    worker.wait_state(&name, "running");
    worker.act(&name, "stop", None);
    worker.wait_state(&name, "stopped");
    wait_for(Duration::from_secs(20), "the worker lets go", || worker.job(&name)["worker"].is_null());
    assert!(slot_exists(cluster, &source, &name), "stop keeps the slot");
    refusals(&worker, &name, State::Stopped);
    worker.act(&name, "start", None);
    worker.wait_state(&name, "running");
    worker.act(&name, "pause", None);
    worker.wait_state(&name, "paused");
    worker.act(&name, "stop", Some(json!({"cleanup": true})));
    wait_for(Duration::from_secs(20), "the cleanup", || {
        worker.job(&name)["worker"].is_null() && !slot_exists(cluster, &source, &name)
    });
    let publications = cluster
        .psql(&source, &format!("SELECT count(*) FROM pg_publication WHERE pubname = 'walpipe_{name}'"));
    assert_eq!(publications, "0", "stop with cleanup drops the publication");

    // restart from stopped, running and paused: a new slot and a new copy each time.
    worker.act(&name, "restart", None);
    worker.wait_state(&name, "running");
    cluster.psql(&source, "INSERT INTO t VALUES (1000, 'after restart')");
    wait_for(Duration::from_secs(30), "streaming after the restart", || same(cluster, &source, &sink));
    worker.act(&name, "restart", None);
    worker.wait_state(&name, "running");
    worker.act(&name, "pause", None);
    worker.wait_state(&name, "paused");
    worker.act(&name, "restart", None);
    worker.wait_state(&name, "running");
    assert!(run_log(&name).matches("restart: forgetting the checkpoint").count() >= 3, "{}", run_log(&name));
    cluster.psql(&source, "UPDATE t SET v = 'last' WHERE id = 1");
    wait_for(Duration::from_secs(30), "streaming after the restarts", || same(cluster, &source, &sink));

    // delete from stopped: slot and publication gone, the destination table kept.
    worker.act(&name, "stop", None);
    worker.wait_state(&name, "stopped");
    wait_for(Duration::from_secs(20), "the worker lets go", || worker.job(&name)["worker"].is_null());
    let (status, deleted) = worker.call("DELETE", &format!("/api/v1/jobs/{name}"), None);
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(worker.call("GET", &format!("/api/v1/jobs/{name}"), None).0, 404);
    assert!(!slot_exists(cluster, &source, &name));
    assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM t"), "101", "delete keeps the destination table");

    // delete from created; succeeded (initial_only), then delete from succeeded.
    let mut other = definition.clone();
    other["name"] = json!(format!("{name}_once"));
    other["snapshot_mode"] = json!("initial_only");
    other["sink_url"] = json!(cluster.url(&cluster.fresh_db("lifecycle_once")));
    let once = other["name"].as_str().expect("name").to_string();
    assert_eq!(worker.call("POST", "/api/v1/jobs", Some(other.clone())).0, 201);
    assert_eq!(worker.call("DELETE", &format!("/api/v1/jobs/{once}"), None).0, 200, "delete from created");
    assert_eq!(worker.call("POST", "/api/v1/jobs", Some(other)).0, 201);
    worker.act(&once, "start", None);
    worker.wait_state(&once, "succeeded");
    refusals(&worker, &once, State::Succeeded);
    assert_eq!(worker.call("DELETE", &format!("/api/v1/jobs/{once}"), None).0, 200, "delete from succeeded");

    // The webhook saw the changes, in order.
    wait_for(Duration::from_secs(10), "the last webhook", || {
        events
            .lock()
            .expect("lock")
            .iter()
            .any(|e| e["job"] == once.as_str() && e["new_state"] == "succeeded")
    });
    let seen: Vec<(String, String)> = events
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| {
            e["job"] == name.as_str() && e["event"] == "job.state_changed" && e["timestamp"].is_string()
        })
        .map(|e| {
            (
                e["previous_state"].as_str().unwrap_or("-").to_string(),
                e["new_state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected_start = [
        ("-", "created"),
        ("created", "pending"),
        ("pending", "starting"),
        ("starting", "running"),
        ("running", "pausing"),
        ("pausing", "paused"),
        ("paused", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
    ];
    for (i, (from, to)) in expected_start.iter().enumerate() {
        assert_eq!((seen[i].0.as_str(), seen[i].1.as_str()), (*from, *to), "webhook event {i}: {seen:?}");
    }
    worker.stop();
}

#[test]
fn a_paused_job_holds_its_position_and_resumes_without_loss() {
    let cluster = cluster();
    let (source, sink, name, definition) = setup(cluster, "pause");
    let worker = Worker::start(cluster, &sink, &name, &[]);
    assert_eq!(worker.call("POST", "/api/v1/jobs", Some(definition)).0, 201);
    worker.act(&name, "start", None);
    worker.wait_state(&name, "running");
    cluster.psql(&source, "INSERT INTO t VALUES (101, 'before the pause')");
    wait_for(Duration::from_secs(30), "applied", || same(cluster, &source, &sink));

    // The CLI pauses it.
    let paused = common::walpipe()
        .args(["jobs", "--url", &format!("http://{}", worker.addr), "pause", &name])
        .output()
        .expect("walpipe jobs pause");
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    assert!(String::from_utf8_lossy(&paused.stdout).contains("paused"));
    let slot = format!("walpipe_{name}");
    wait_for(Duration::from_secs(20), "the slot is released", || {
        cluster.psql(&source, &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"))
            == "f"
    });
    let confirmed = |c: &Cluster| {
        c.psql(
            &source,
            &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
    };
    let before = confirmed(cluster);
    cluster.psql(&source, "INSERT INTO t SELECT i, 'while paused' FROM generate_series(200, 299) i");
    // The worker has had every chance to act: it ran its loop twice since.
    wait_for_renewals(cluster, &sink, &name, 2);
    assert_eq!(confirmed(cluster), before, "confirmed_flush_lsn does not move while paused");
    assert_eq!(
        pending_changes(cluster, &source, &name),
        "100",
        "the slot still holds every change made while paused"
    );
    assert_eq!(
        cluster.psql(&sink, "SELECT count(*) FROM t WHERE id >= 200"),
        "0",
        "nothing is applied while paused"
    );
    let job = worker.job(&name);
    assert!(job["warning"].as_str().is_some_and(|w| w.contains("retains")), "{job}");
    assert!(job["retained_wal_bytes"].as_i64().is_some(), "{job}");

    worker.act(&name, "resume", None);
    wait_for(Duration::from_secs(30), "the changes made while paused arrive", || {
        same(cluster, &source, &sink)
    });

    // History: a run per start (the first start, and the resume), with records and bytes.
    worker.act(&name, "stop", None);
    worker.wait_state(&name, "stopped");
    wait_for(Duration::from_secs(20), "the run is recorded", || {
        let (_, history) = worker.call("GET", &format!("/api/v1/jobs/{name}/history"), None);
        history["instances"]
            .as_array()
            .is_some_and(|runs| runs.len() == 2 && runs.iter().all(|r| r["status"] != "running"))
    });
    let (_, history) = worker.call("GET", &format!("/api/v1/jobs/{name}/history"), None);
    let runs = history["instances"].as_array().expect("instances");
    assert_eq!(runs[1]["status"], "paused", "{history}");
    assert_eq!(runs[0]["status"], "stopped", "{history}");
    assert_eq!(runs[0]["records"], 100, "the resumed run applied the 100 changes: {history}");
    assert!(
        runs.iter()
            .all(|r| r["bytes"].as_i64().is_some_and(|b| b > 0) && r["duration_seconds"].as_f64().is_some()),
        "{history}"
    );
    let listed = common::walpipe()
        .args(["jobs", "--url", &format!("http://{}", worker.addr), "history", &name])
        .output()
        .expect("walpipe jobs history");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("stopped"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    worker.stop();
}

#[test]
fn two_workers_share_a_job_and_one_takes_over_after_kill_9() {
    let cluster = cluster();
    let (source, sink, name, definition) = setup(cluster, "workers");
    let a = Worker::start(cluster, &sink, &format!("{name}_a"), &[]);
    let b = Worker::start(cluster, &sink, &format!("{name}_b"), &[]);
    assert_eq!(a.call("POST", "/api/v1/jobs", Some(definition)).0, 201);
    a.act(&name, "start", None);
    a.wait_state(&name, "running");
    // Both workers have run their loop twice since: either could have claimed it.
    for _ in 0..2 {
        let since = cluster.psql(&sink, "SELECT now()");
        wait_for(Duration::from_secs(30), "both workers' heartbeats", || {
            cluster
                .psql(&sink, &format!("SELECT count(*) FROM walpipe.workers WHERE heartbeat_at > '{since}'"))
                == "2"
        });
    }
    let owner = a.job(&name)["worker"].as_str().expect("an owner").to_string();
    let claimed_by = |w: &Worker| run_log(&w.label).contains(&format!("claimed the job job={name}"));
    assert!(claimed_by(&a) ^ claimed_by(&b), "exactly one worker claimed the job");
    let (mut owner_worker, other) = if claimed_by(&a) { (a, b) } else { (b, a) };
    let owner_pid = owner_worker.child.id();
    assert!(owner.contains(&owner_pid.to_string()), "{owner}");
    let walsenders = cluster.psql(&source, &format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walpipe' AND pid IN (SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'walpipe_{name}')"));
    assert_eq!(walsenders, "1");

    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (writing, source) = (writing.clone(), source.clone());
        std::thread::spawn(move || {
            let mut i = 1000;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                cluster.psql(
                    &source,
                    &format!(
                        "INSERT INTO t VALUES ({i}, 'w'); UPDATE t SET v = 'u{i}' WHERE id = {}",
                        i % 100 + 1
                    ),
                );
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let written_by_the_writer =
        || cluster.psql(&sink, "SELECT count(*) FROM t WHERE id >= 1000").parse::<u32>().unwrap_or(0);
    wait_for(Duration::from_secs(30), "the writer's rows applied", || written_by_the_writer() >= 5);
    let _ = owner_worker.child.kill();
    let _ = owner_worker.child.wait();
    let killed = Instant::now();
    wait_for(Duration::from_secs(60), "the other worker takes the job over", || {
        let job = other.job(&name);
        job["worker"].as_str().is_some_and(|w| w != owner)
            && job["state"] == "running"
            && job["phase"] == "streaming"
    });
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(60), "took {takeover:?}");
    eprintln!("takeover after kill -9: {:.1} s", takeover.as_secs_f64());
    let at_takeover = cluster.psql(&source, "SELECT max(id) FROM t");
    wait_for(Duration::from_secs(30), "a row written after the takeover applied by the new owner", || {
        cluster.psql(&sink, &format!("SELECT count(*) FROM t WHERE id > {at_takeover}")) != "0"
    });
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    wait_for(Duration::from_secs(60), "the sink equals the source", || same(cluster, &source, &sink));
    other.stop();
}

/// Waits until the job's owner has renewed its lease `times` times from
/// now: it has run its loop (and could have acted) since.
fn wait_for_renewals(cluster: &Cluster, state_db: &str, job: &str, times: usize) {
    let lease =
        || cluster.psql(state_db, &format!("SELECT lease_until FROM walpipe.jobs WHERE name = '{job}'"));
    let mut seen = lease();
    for _ in 0..times {
        wait_for(Duration::from_secs(30), "the owner to renew the job's lease", || {
            let now = lease();
            let renewed = now != seen;
            seen = now;
            renewed
        });
    }
}

/// How many inserts the job's slot still holds unconfirmed (peeked: the
/// slot must be free, which it is while the job is paused).
fn pending_changes(cluster: &Cluster, db: &str, job: &str) -> String {
    cluster.psql(
        db,
        &format!(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('walpipe_{job}', NULL, NULL, \
             'proto_version', '1', 'publication_names', 'walpipe_{job}') WHERE get_byte(data, 0) = 73"
        ),
    )
}

/// Whether a walsender holds the job's slot.
fn slot_active(cluster: &Cluster, db: &str, job: &str) -> bool {
    cluster.psql(db, &format!("SELECT active FROM pg_replication_slots WHERE slot_name = 'walpipe_{job}'"))
        == "t"
}

#[test]
fn an_action_answers_with_the_state_reached_and_its_session_has_ended() {
    let cluster = cluster();
    let (source, sink, name, definition) = setup(cluster, "truth");
    let a = Worker::start(cluster, &sink, &format!("{name}_a"), &[]);
    let b = Worker::start(cluster, &sink, &format!("{name}_b"), &[]);
    assert_eq!(a.call("POST", "/api/v1/jobs", Some(definition.clone())).0, 201);
    a.act(&name, "start", None);
    a.wait_state(&name, "running");
    wait_for(Duration::from_secs(30), "the slot in use", || slot_active(cluster, &source, &name));
    // Ask the worker that does not run the job: it reaches the owner through LISTEN/NOTIFY.
    let owner = a.job(&name)["worker"].as_str().expect("an owner").to_string();
    let other = if owner.contains(&a.child.id().to_string()) { &b } else { &a };

    let asked = Instant::now();
    let (status, paused) = other.call("POST", &format!("/api/v1/jobs/{name}/pause"), None);
    let answered = Instant::now();
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    assert!(paused["requested"].is_null(), "{paused}");
    // The session ended before the answer: the first look after it finds the
    // slot free (the owner reports `paused` only once START_REPLICATION has
    // ended, and the server releases the slot before it says so).
    let held = slot_active(cluster, &source, &name);
    let looked = answered.elapsed();
    eprintln!(
        "pause: answered after {} ms; the replication session had ended at the answer (seen {} ms after it)",
        (answered - asked).as_millis(),
        looked.as_millis()
    );
    assert!(!held, "the replication session still held the slot {looked:?} after the answer");
    let confirmed = || {
        cluster.psql(
            &source,
            &format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walpipe_{name}'"
            ),
        )
    };
    let at_pause = confirmed();
    cluster.psql(&source, "INSERT INTO t VALUES (500, 'after the answer')");
    wait_for_renewals(cluster, &sink, &name, 2);
    assert_eq!(confirmed(), at_pause, "nothing is confirmed to the slot after the answer");
    assert_eq!(pending_changes(cluster, &source, &name), "1", "the slot still holds the change");

    // wait=0: 202 with the request pending; the job shows it until it runs.
    let (status, resuming) = other.call("POST", &format!("/api/v1/jobs/{name}/resume?wait=0"), None);
    assert_eq!(status, 202, "{resuming}");
    assert_eq!(resuming["requested"], "resume", "{resuming}");
    a.wait_state(&name, "running");
    assert!(a.job(&name)["requested"].is_null());
    let (status, bad) = a.call("POST", &format!("/api/v1/jobs/{name}/pause?wait=soon"), None);
    assert_eq!(status, 400, "{bad}");

    // stop waits for the end: the slot is free when it answers.
    let (status, stopped) = other.call("POST", &format!("/api/v1/jobs/{name}/stop"), None);
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")), "{stopped}");
    assert!(!slot_active(cluster, &source, &name), "stopped, and the session still holds the slot");

    // A job stuck in set-up (its source refuses connections) is `starting`:
    // pause and stop are accepted there too, and reached.
    let mut stuck = definition.clone();
    let stuck_name = format!("{name}_stuck");
    stuck["name"] = json!(stuck_name);
    stuck["source_url"] = json!("postgres://postgres@127.0.0.1:9/nowhere?sslmode=disable&connect_timeout=2");
    assert_eq!(a.call("POST", "/api/v1/jobs", Some(stuck)).0, 201);
    let (status, starting) = a.call("POST", &format!("/api/v1/jobs/{stuck_name}/start?wait=0"), None);
    assert_eq!(status, 202, "{starting}");
    a.wait_state(&stuck_name, "starting");
    let (status, paused) = a.call("POST", &format!("/api/v1/jobs/{stuck_name}/pause"), None);
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "pause from starting: {paused}");
    let (status, stopped) = a.call("POST", &format!("/api/v1/jobs/{stuck_name}/stop"), None);
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")), "stop from paused: {stopped}");
    a.stop();
    b.stop();
}

#[test]
fn a_sink_outage_of_20_seconds_is_retried_and_nothing_is_lost() {
    let cluster = cluster();
    let (source, sink, name, mut definition) = setup(cluster, "outage");
    let state = cluster.fresh_db("outage_state");
    let role = format!("sink_{}", std::process::id());
    cluster.psql(&sink, &format!("CREATE ROLE {role} LOGIN; ALTER DATABASE {sink} OWNER TO {role}; ALTER SCHEMA public OWNER TO {role}"));
    definition["sink_url"] = json!(cluster.url(&sink).replacen("postgres@", &format!("{role}@"), 1));
    let worker = Worker::start(cluster, &state, &name, &[]);
    assert_eq!(worker.call("POST", "/api/v1/jobs", Some(definition)).0, 201);
    worker.act(&name, "start", None);
    worker.wait_state(&name, "running");

    cluster.psql(&sink, &format!("ALTER ROLE {role} CONNECTION LIMIT 0; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"));
    let outage = Instant::now();
    let mut i = 1000;
    while outage.elapsed() < Duration::from_secs(20) {
        cluster.psql(
            &source,
            &format!("INSERT INTO t VALUES ({i}, 'during the outage'); DELETE FROM t WHERE id = {}", i - 950),
        );
        assert_ne!(worker.job(&name)["state"], "failed", "a transient outage does not fail the job");
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.psql(&sink, &format!("ALTER ROLE {role} CONNECTION LIMIT -1"));
    wait_for(Duration::from_secs(60), "recovered with nothing lost", || same(cluster, &source, &sink));
    assert!(run_log(&name).contains("transient failure, retrying"), "{}", run_log(&name));
    let (_, scrape) = common::http_get(&worker.addr, "/metrics");
    let by_kind = [("job_name", name.as_str()), ("kind", "other")];
    assert!(
        common::metric(&scrape, "walpipe_job_retries_total", &by_kind).is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    assert!(common::metric(&scrape, "walpipe_job_errors_total", &by_kind).is_some_and(|n| n >= 1.0));
    assert_eq!(worker.job(&name)["state"], "running");
    worker.stop();
}

#[test]
fn a_permanent_error_fails_the_job_and_retry_resumes_from_the_checkpoint() {
    let cluster = cluster();
    let (source, sink, name, mut definition) = setup(cluster, "revoked");
    let user = format!("reader_{}", std::process::id());
    cluster.psql(
        &source,
        &format!("CREATE ROLE {user} LOGIN REPLICATION; ALTER TABLE t OWNER TO {user}; GRANT CREATE ON DATABASE {source} TO {user}"),
    );
    definition["source_url"] = json!(cluster.url(&source).replacen("postgres@", &format!("{user}@"), 1));
    let worker = Worker::start(cluster, &sink, &name, &[]);
    assert_eq!(worker.call("POST", "/api/v1/jobs", Some(definition)).0, 201);
    worker.act(&name, "start", None);
    worker.wait_state(&name, "running");
    wait_for(Duration::from_secs(30), "the snapshot", || same(cluster, &source, &sink));

    cluster.psql(&source, &format!("REVOKE SELECT ON t FROM {user}"));
    cluster.psql(&source, "INSERT INTO t VALUES (500, 'while failing')");
    // Cut the replication session: the next attempt finds the privilege gone.
    cluster.psql(&source, &format!("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walpipe_{name}'"));
    worker.wait_state(&name, "failed");
    let job = worker.job(&name);
    assert!(job["error"].as_str().is_some_and(|e| e.contains("GRANT SELECT ON")), "{job}");
    assert_eq!(job["allowed_actions"], json!(["restart", "retry", "delete"]));
    refusals(&worker, &name, State::Failed);

    cluster.psql(&source, &format!("GRANT SELECT ON t TO {user}"));
    // A fresh start creates a slot (and copies the tables, in chunks or under its snapshot).
    let copies_before = run_log(&name).matches(&format!("created the slot slot=walpipe_{name} ")).count();
    worker.act(&name, "retry", None);
    worker.wait_state(&name, "running");
    wait_for(Duration::from_secs(30), "the change made while failed arrives", || {
        same(cluster, &source, &sink)
    });
    assert_eq!(
        run_log(&name).matches(&format!("created the slot slot=walpipe_{name} ")).count(),
        copies_before,
        "retry resumed from the checkpoint without a copy"
    );
    assert!(run_log(&name).contains("resuming from the checkpoint"));
    let (_, history) = worker.call("GET", &format!("/api/v1/jobs/{name}/history"), None);
    assert!(
        history["instances"]
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["status"] == "failed" && r["error"].is_string()),
        "{history}"
    );

    // The other ways out of failed: restart (a new slot and a new copy) and delete.
    let fail = || {
        cluster.psql(&source, &format!("REVOKE SELECT ON t FROM {user}"));
        cluster.psql(&source, &format!("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walpipe_{name}'"));
        worker.wait_state(&name, "failed");
        cluster.psql(&source, &format!("GRANT SELECT ON t TO {user}"));
    };
    fail();
    worker.act(&name, "restart", None);
    worker.wait_state(&name, "running");
    assert_eq!(
        run_log(&name).matches(&format!("created the slot slot=walpipe_{name} ")).count(),
        copies_before + 1,
        "restart copied again"
    );
    fail();
    wait_for(Duration::from_secs(20), "the worker lets go", || worker.job(&name)["worker"].is_null());
    assert_eq!(worker.call("DELETE", &format!("/api/v1/jobs/{name}"), None).0, 200, "delete from failed");
    assert!(!slot_exists(cluster, &source, &name));
    worker.stop();
}

#[test]
fn several_jobs_run_in_one_process() {
    let cluster = cluster();
    let (source_a, sink_a, a, definition_a) = setup(cluster, "multi_a");
    let (source_b, sink_b, b, definition_b) = setup(cluster, "multi_b");
    let worker = Worker::start(cluster, &sink_a, &a, &[]);
    for (name, definition) in [(&a, definition_a), (&b, definition_b)] {
        assert_eq!(worker.call("POST", "/api/v1/jobs", Some(definition)).0, 201);
        worker.act(name, "start", None);
    }
    worker.wait_state(&a, "running");
    worker.wait_state(&b, "running");
    cluster.psql(&source_a, "INSERT INTO t VALUES (1000, 'a')");
    cluster.psql(&source_b, "DELETE FROM t WHERE id < 50");
    wait_for(Duration::from_secs(30), "both jobs stream", || {
        same(cluster, &source_a, &sink_a) && same(cluster, &source_b, &sink_b)
    });
    let active = |db: &str, job: &str| {
        cluster
            .psql(db, &format!("SELECT active FROM pg_replication_slots WHERE slot_name = 'walpipe_{job}'"))
    };
    assert_eq!(
        (active(&source_a, &a), active(&source_b, &b)),
        ("t".to_string(), "t".to_string()),
        "a slot each"
    );
    let (_, listed) = worker.call("GET", "/api/v1/jobs", None);
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(2), "{listed}");
    worker.stop();
}

#[test]
fn the_api_answers_401_without_the_token() {
    let cluster = cluster();
    let state = cluster.fresh_db("token_state");
    let label = format!("token_{}", std::process::id());
    let worker = Worker::start(cluster, &state, &label, &[("WALPIPE_API_TOKEN", "s3cret-token")]);
    let (status, body) = http_request(&worker.addr, "GET", "/api/v1/jobs", None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"));
    assert_eq!(http_request(&worker.addr, "GET", "/api/v1/jobs", None, Some("wrong")).0, 401);
    assert_eq!(worker.call("GET", "/api/v1/jobs", None).0, 200);
    for open in ["/metrics", "/healthz"] {
        assert_eq!(common::http_get(&worker.addr, open).0, 200, "{open} stays open");
    }
    let listed = common::walpipe()
        .args(["jobs", "--url", &format!("http://{}", worker.addr), "list"])
        .output()
        .expect("walpipe jobs list");
    assert!(!listed.status.success(), "the CLI without the token is refused");
    assert!(String::from_utf8_lossy(&listed.stderr).contains("401"));
    assert!(!run_log(&label).contains("s3cret-token"), "the token never reaches the log");
    worker.stop();
}

#[test]
fn a_pending_job_without_a_live_worker_says_why() {
    let cluster = cluster();
    let state = cluster.fresh_db("noworker_state");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let info = walpipe::pg::ConnInfo::parse(&cluster.url(&state)).expect("url");
        let store = walpipe::job::store::Store::open(info, walpipe::job::notify::Notifier::new(None))
            .await
            .expect("store");
        let definition: walpipe::job::spec::JobDefinition = serde_json::from_value(json!({
            "name": "lonely", "source_url": cluster.url(&state), "sink_url": cluster.url(&state)
        }))
        .expect("definition");
        store.create(&definition).await.expect("create");
        store.act("lonely", Action::Start, false).await.expect("start");
        let job = store.get("lonely").await.expect("job");
        assert_eq!(store.live_workers().await.expect("workers"), 0);
        let shown = walpipe::http::api::view(&job, 0);
        assert_eq!(shown["state"], "pending");
        assert!(
            shown["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no live worker") && r.contains("WALPIPE_STATE_URL")),
            "{shown}"
        );
        assert!(
            walpipe::http::api::view(&job, 2)["reason"]
                .as_str()
                .is_some_and(|r| r.contains("waiting for one of 2"))
        );
    });
}

/// Writes to `t` on random keys of 1..=:rows: updates, deletes, re-inserts.
const T_WORKLOAD: &str = "\\set id random(1, :rows)
BEGIN;
UPDATE t SET v = 'w' || :id || '-' || now() WHERE id = :id;
DELETE FROM t WHERE id = :id + 1;
INSERT INTO t VALUES (:id + 1, 'back') ON CONFLICT (id) DO UPDATE SET v = 'again';
END;
";

fn walpipe_jobs(worker: &Worker, args: &[&str]) -> String {
    let output = common::walpipe()
        .args(["jobs", "--url", &format!("http://{}", worker.addr)])
        .args(args)
        .output()
        .expect("walpipe jobs");
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_running_job_copies_a_table_again_takes_an_added_table_and_lets_one_go_while_streaming() {
    let cluster = cluster();
    let (source, sink, name, mut definition) = setup(cluster, "edits");
    cluster.psql(&source, "INSERT INTO t SELECT i, 'v' || i FROM generate_series(101, 3000) i");
    cluster.psql(
        &source,
        "CREATE TABLE u (id int PRIMARY KEY, v text); INSERT INTO u SELECT i, 'u' || i FROM generate_series(1, 5000) i",
    );
    definition["tables"] = json!("public.t");
    let worker = Worker::start(cluster, &sink, &name, &[]);
    assert_eq!(worker.call("POST", "/api/v1/jobs", Some(definition)).0, 201);
    worker.act(&name, "start", None);
    worker.wait_state(&name, "running");
    wait_for(Duration::from_secs(30), "the first copy", || same(cluster, &source, &sink));

    // Edited by hand in the sink: a changed value, missing rows, a row the source never had.
    cluster.psql(
        &sink,
        "UPDATE t SET v = 'by hand' WHERE id <= 10; DELETE FROM t WHERE id BETWEEN 11 AND 20; \
         INSERT INTO t VALUES (100000, 'stray')",
    );
    // Bad requests are refused with the fix, and change nothing.
    let (status, refused) =
        worker.call("POST", &format!("/api/v1/jobs/{name}/snapshot"), Some(json!({"tables": ["public.u"]})));
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains("not one of the job's tables")),
        "{refused}"
    );
    let (status, refused) =
        worker.call("PATCH", &format!("/api/v1/jobs/{name}"), Some(json!({"batch_size": 5})));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(worker.call("POST", &format!("/api/v1/jobs/{name}/snapshot"), Some(json!({}))).0, 400);

    // The copy again runs while writes go on; the CLI asks for it.
    // The workload runs over the whole copy: it writes before the copy is
    // asked for and stops only after the copy has ended.
    let workload = common::Workload::start(cluster, &source, T_WORKLOAD, 2, 3000, 600);
    workload.wait_writing(cluster, &source);
    assert!(walpipe_jobs(&worker, &["snapshot", &name, "public.t"]).contains(&name));
    wait_for(Duration::from_secs(90), "the copy's end", || {
        run_log(&name).contains("snapshot public.t: removed")
    });
    workload.stop();
    wait_for(Duration::from_secs(90), "the hand-edited table copied again", || same(cluster, &source, &sink));
    let log = run_log(&name);
    assert!(
        log.contains("snapshot public.t: copying it in chunks while streaming, because a copy was requested")
    );
    assert!(log.contains("snapshot public.t: removed 1 rows the source no longer has"), "the stray row");
    assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM t WHERE v = 'by hand'"), "0");

    // Added: its destination is created and it is copied while t streams.
    let edited = walpipe_jobs(&worker, &["edit", &name, "--tables", "public.t, public.u"]);
    assert!(edited.contains(&name), "{edited}");
    cluster
        .psql(&source, "UPDATE u SET v = 'changed' WHERE id % 7 = 0; INSERT INTO t VALUES (5000, 'during')");
    let same_u = || {
        let rows = fingerprint(cluster, &source, "u", "id, v", "id");
        rows.is_some() && rows == fingerprint(cluster, &sink, "u", "id, v", "id")
    };
    wait_for(Duration::from_secs(90), "the added table", || same_u() && same(cluster, &source, &sink));
    assert!(run_log(&name).contains(
        "snapshot public.u: copying it in chunks while streaming, because it was added to the job"
    ));
    let publication = |c: &Cluster| {
        c.psql(&source, &format!("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'walpipe_{name}'"))
    };
    assert_eq!(publication(cluster), "t,u");

    // Removed: its changes stop, its destination stays; t goes on.
    let (status, job) =
        worker.call("PATCH", &format!("/api/v1/jobs/{name}"), Some(json!({"tables": ["public.t"]})));
    assert_eq!(status, 200, "{job}");
    wait_for(Duration::from_secs(30), "the publication without u", || publication(cluster) == "t");
    cluster.psql(
        &source,
        "INSERT INTO u VALUES (900000, 'not captured'); INSERT INTO t VALUES (900000, 'after')",
    );
    wait_for(Duration::from_secs(30), "t after the removal", || same(cluster, &source, &sink));
    assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM u WHERE id = 900000"), "0", "u's changes stopped");
    assert_eq!(cluster.psql(&sink, "SELECT count(*) FROM u"), "5000", "u's destination is kept");

    // The same slot throughout: other tests share the cluster, so the job's own slot, and one fresh start.
    assert!(slot_exists(cluster, &source, &name));
    assert_eq!(run_log(&name).matches("created the slot").count(), 1, "never a fresh start");
    worker.wait_state(&name, "running");
    worker.stop();
}
