//! The sinks outside Postgres against local receivers (docs/src/sinks/):
//! a webhook receiver that fails 20% of requests, and a fake StarRocks that
//! follows the Stream Load protocol and fails 20% of loads, each with
//! walpipe killed -9 mid-stream; a refusing webhook and `retry`; outbox
//! events with a contract that survives a schema change.
//!
//! Replaying what a receiver accepted (deduplicated by change id or label,
//! in commit order) must give exactly the source table.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::fakes::{Delivery, FakeStarRocks, Mode, WebhookReceiver};
use common::{
    Cluster, http_addr, http_get, http_request, metric, run_log, spawn_run, start_worker, wait_for,
    wait_for_showing,
};
use serde_json::{Value, json};

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

/// Where a change sits in commit order: (commit LSN, ordinal); snapshot rows first.
fn position(change: &Value) -> (u64, u64) {
    let id = change["id"].as_str().expect("id");
    let (lsn, ordinal) = id.split_once(':').expect("id");
    match ordinal.parse() {
        Ok(ordinal) => (common::lsn(lsn), ordinal),
        Err(_) => (0, 0),
    }
}

/// Every change the receiver accepted, each once (by change id), in commit order.
fn accepted_changes(deliveries: &[Delivery]) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut changes: Vec<Value> = deliveries
        .iter()
        .filter(|d| d.accepted())
        .flat_map(Delivery::changes)
        .filter(|change| seen.insert(change["id"].as_str().expect("id").to_string()))
        .collect();
    changes.sort_by_key(position);
    changes
}

/// The table the changes build, by `id`.
fn replay(changes: &[Value], table: &str) -> BTreeMap<i64, Value> {
    let mut rows = BTreeMap::new();
    for change in changes.iter().filter(|c| c["table"] == table) {
        let id = |row: &Value| row["id"].as_i64().expect("id");
        match change["op"].as_str() {
            Some("insert" | "update" | "snapshot") => {
                rows.insert(id(&change["new"]), change["new"].clone());
            }
            Some("delete") => {
                rows.remove(&id(&change["key"]));
            }
            // A table's shape: a consumer keeping rows by column name needs nothing from it.
            Some("schema") => {}
            other => panic!("unexpected op {other:?}"),
        }
    }
    rows
}

/// The source table as JSON rows, by `id`.
fn source_rows(cluster: &Cluster, db: &str, table: &str) -> BTreeMap<i64, Value> {
    let text = cluster.psql(db, &format!("SELECT coalesce(json_agg(t ORDER BY id), '[]') FROM {table} t"));
    let rows: Vec<Value> = serde_json::from_str(&text).expect("rows");
    rows.into_iter().map(|row| (row["id"].as_i64().expect("id"), row)).collect()
}

/// A fresh database with the table `items` holding one row.
fn items_db(cluster: &Cluster, test: &str) -> String {
    let db = cluster.fresh_db(test);
    cluster.psql(
        &db,
        "CREATE TABLE items (id int PRIMARY KEY, v text, n int); INSERT INTO items VALUES (1, 'a', 0)",
    );
    db
}

/// Replaying what `receiver` accepted gives exactly the source's `items`.
fn receiver_has_the_source(receiver: &WebhookReceiver, cluster: &Cluster, db: &str) -> bool {
    replay(&accepted_changes(&receiver.deliveries()), "public.items") == source_rows(cluster, db, "items")
}

/// A transaction of inserts, updates and deletes on `items` (ids from `base`).
fn churn(cluster: &Cluster, db: &str, base: i64) {
    cluster.psql(
        db,
        &format!(
            "BEGIN; \
             INSERT INTO items SELECT i, 'new ' || i, 0 FROM generate_series({base}, {base} + 9) i; \
             UPDATE items SET n = n + 1, v = v || '+' WHERE id % 7 = {m} AND id < {base}; \
             UPDATE items SET n = n + 10 WHERE id = {base}; \
             DELETE FROM items WHERE id IN (SELECT id FROM items WHERE id < {base} ORDER BY id LIMIT 2); \
             COMMIT;",
            m = base % 7
        ),
    );
}

/// The environment of job `job` from `db` into `sink_url` (flushing every
/// 100 ms), with `extra`; its log starts empty.
fn job_vars(
    cluster: &Cluster,
    db: &str,
    sink_url: &str,
    job: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("walpipe-run-{job}.log")));
    let mut vars = vec![
        ("WALPIPE_SOURCE_URL", cluster.url(db)),
        ("WALPIPE_SINK_URL", sink_url.to_string()),
        ("WALPIPE_JOB_NAME", job.to_string()),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    vars.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    vars
}

/// `walpipe run` for an environment job with `vars`.
fn run(label: &str, vars: &[(&str, String)]) -> std::process::Child {
    spawn_run(label, true, vars, &[])
}

/// SIGTERM, and wait for the exit.
fn stop(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn kill_9(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[test]
fn the_webhook_gets_every_change_once_per_key_in_commit_order_through_failures_and_a_kill_9() {
    let cluster = cluster();
    let db = cluster.fresh_db("hook");
    cluster.psql(
        &db,
        "CREATE TABLE items (id int PRIMARY KEY, v text, n int); \
         INSERT INTO items SELECT i, 'v' || i, 0 FROM generate_series(1, 300) i",
    );
    let receiver = WebhookReceiver::start(Mode::Flaky(0.2));
    let job = format!("hook_{}", std::process::id());
    let vars = job_vars(
        cluster,
        &db,
        &receiver.url,
        &job,
        &[
            ("WALPIPE_TABLES", "public.items"),
            ("WALPIPE_BATCH_SIZE", "40"),
            ("WALPIPE_SINK_SIGNING_SECRET", "s3cret"),
        ],
    );
    let mut walpipe = run(&job, &vars);
    let converged = |what: &str| {
        wait_for(Duration::from_secs(120), what, || receiver_has_the_source(&receiver, cluster, &db))
    };
    converged("the snapshot at the receiver");
    for round in 0..15 {
        churn(cluster, &db, 1000 + round * 10);
    }
    converged("the first changes at the receiver");

    // A batch in flight when walpipe dies: held by the receiver, then kill -9.
    receiver.set_mode(Mode::Hold);
    churn(cluster, &db, 2000);
    wait_for(Duration::from_secs(30), "a request held by the receiver", || !receiver.held().is_empty());
    kill_9(&mut walpipe);
    receiver.set_mode(Mode::Flaky(0.2));
    for round in 0..15 {
        churn(cluster, &db, 3000 + round * 10);
    }
    // A ledger whose batch in flight cannot be read stops the job with the
    // fix, rather than sending that batch under a new key.
    let ledger = |sql: &str| cluster.psql(&db, &format!("{sql} WHERE job_name = '{job}'"));
    let in_flight = ledger("SELECT in_flight::text FROM walpipe.checkpoints");
    assert!(!in_flight.is_empty(), "the held batch is recorded as in flight");
    ledger("UPDATE walpipe.checkpoints SET in_flight = '{\"not\": \"a batch\"}'");
    let mut refused = run(&job, &vars);
    wait_for(Duration::from_secs(60), "the job to fail on the unreadable ledger", || {
        refused.try_wait().ok().flatten().is_some()
    });
    assert!(
        run_log(&job).contains("set walpipe.checkpoints.in_flight to NULL for the job"),
        "{}",
        run_log(&job)
    );
    ledger(&format!("UPDATE walpipe.checkpoints SET in_flight = '{}'", in_flight.replace('\'', "''")));
    let mut walpipe = run(&job, &vars);
    converged("every change at the receiver after the restart");
    stop(&mut walpipe);

    let deliveries = receiver.deliveries();
    let log = run_log(&job);
    // The held batch went out again after the restart, with the same key and body.
    let held = &receiver.held()[0];
    let held_body = &deliveries.iter().find(|d| &d.key == held).expect("the held request").body;
    assert!(
        deliveries.iter().any(|d| &d.key == held && d.accepted() && &d.body == held_body),
        "the batch in flight at the kill was not sent again with its key"
    );
    assert!(log.contains("sending the same batch again, with the same key"), "{log}");
    // Every failed request was sent again with the same key and the same body.
    let failed: Vec<&Delivery> = deliveries.iter().filter(|d| !d.accepted()).collect();
    assert!(!failed.is_empty(), "the receiver failed no request");
    for failure in &failed {
        assert!(
            deliveries.iter().any(|d| d.accepted() && d.key == failure.key && d.body == failure.body),
            "batch {} was not delivered again under its key",
            failure.batch
        );
    }
    // A key names one batch: the same key never came with another body.
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    for delivery in &deliveries {
        let body = bodies.entry(&delivery.key).or_insert(&delivery.body);
        assert_eq!(*body, &delivery.body[..], "key {} with two bodies", delivery.key);
    }
    // Every request is signed with the secret.
    let signing = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    for delivery in &deliveries {
        let expected = walpipe::sink::webhook::signature(&signing, &delivery.body);
        assert_eq!(delivery.signature.as_deref(), Some(expected.as_str()));
    }
    // Per key, the changes were first accepted in commit order.
    let mut seen = HashSet::new();
    let mut last: HashMap<i64, (u64, u64)> = HashMap::new();
    for change in deliveries.iter().filter(|d| d.accepted()).flat_map(Delivery::changes) {
        let unkeyed = change["op"] == "snapshot" || change["op"] == "schema";
        if !seen.insert(change["id"].as_str().expect("id").to_string()) || unkeyed {
            continue;
        }
        let key = change["key"]["id"].as_i64().expect("key");
        let here = position(&change);
        if let Some(before) = last.insert(key, here) {
            assert!(before < here, "key {key}: {here:?} arrived after {before:?}");
        }
    }
    // Nothing lost: every transaction's changes arrived (10 inserts each).
    let inserts = accepted_changes(&deliveries).iter().filter(|c| c["op"] == "insert").count();
    assert_eq!(inserts, 31 * 10, "inserts received");
    assert!(!log.contains("s3cret"), "the secret is in the log");
}

#[test]
fn a_refusing_webhook_fails_the_job_with_its_answer_and_retry_sends_the_same_batch() {
    let cluster = cluster();
    let db = items_db(cluster, "refuse");
    let receiver = WebhookReceiver::start(Mode::Flaky(0.0));
    let label = format!("refuse_worker_{}", std::process::id());
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("walpipe-run-{label}.log")));
    let mut worker = start_worker(cluster, &db, &label, &[]);
    wait_for(Duration::from_secs(20), "the worker's API", || http_addr(&label).is_some());
    let addr = http_addr(&label).expect("address");
    let call = |method: &str, path: &str, body: Option<Value>| {
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(&addr, method, path, body.as_deref(), None);
        (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
    };
    // The API answers 503 until the worker has opened the state store.
    wait_for(Duration::from_secs(20), "the worker's state store is open", || {
        call("GET", "/api/v1/jobs", None).0 == 200
    });
    let name = format!("refuse_{}", std::process::id());
    let (status, created) = call(
        "POST",
        "/api/v1/jobs",
        Some(json!({"name": name, "source_url": cluster.url(&db), "sink_url": receiver.url,
                    "tables": "public.items", "flush_interval_ms": 100})),
    );
    assert_eq!(status, 201, "{created}");
    // 200 once running, 202 if set-up outlasts the call's wait on a slow machine.
    assert!(matches!(call("POST", &format!("/api/v1/jobs/{name}/start"), None).0, 200 | 202));
    let state = |name: &str| call("GET", &format!("/api/v1/jobs/{name}"), None).1;
    wait_for(Duration::from_secs(60), "the snapshot delivered", || {
        receiver.deliveries().iter().any(|d| d.accepted())
    });

    receiver.set_mode(Mode::Refuse(422, "order 7 has no customer_id; expected schema v2".into()));
    cluster.psql(&db, "INSERT INTO items VALUES (2, 'b', 0), (3, 'c', 0)");
    wait_for(Duration::from_secs(60), "the job failed", || state(&name)["state"] == "failed");
    let error = state(&name)["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("422") && error.contains("order 7 has no customer_id"), "{error}");
    assert!(error.contains("retry"), "the error says how to go on: {error}");
    let refused = receiver.deliveries().into_iter().find(|d| d.status == 422).expect("a refused request");

    receiver.set_mode(Mode::Flaky(0.0));
    cluster.psql(&db, "UPDATE items SET n = 5 WHERE id = 2");
    assert!(matches!(call("POST", &format!("/api/v1/jobs/{name}/retry"), None).0, 200 | 202));
    wait_for(Duration::from_secs(60), "every change delivered after the retry", || {
        receiver_has_the_source(&receiver, cluster, &db)
    });
    let deliveries = receiver.deliveries();
    let resent =
        deliveries.iter().find(|d| d.accepted() && d.key == refused.key).expect("the batch sent again");
    assert_eq!(resent.body, refused.body, "the retry sent another batch under the refused batch's key");
    assert!(run_log(&label).contains("resuming from the checkpoint"));
    stop(&mut worker);
}

/// Applies the fake's loads per table, in the order it took them (labels are unique there).
fn replay_loads(fake: &FakeStarRocks, table: &str) -> BTreeMap<i64, Value> {
    let mut rows: BTreeMap<i64, Value> = BTreeMap::new();
    for load in fake.loads().iter().filter(|l| l.table == table) {
        for row in &load.rows {
            let id = row["id"].as_i64().expect("id");
            let mut values = row.as_object().expect("object").clone();
            match values.remove("__op").and_then(|op| op.as_i64()) {
                Some(0) => match rows.get_mut(&id) {
                    Some(Value::Object(existing)) if load.partial => existing.extend(values),
                    _ => {
                        rows.insert(id, Value::Object(values));
                    }
                },
                Some(1) => {
                    rows.remove(&id);
                }
                other => panic!("__op {other:?} in {row}"),
            }
        }
    }
    rows
}

#[test]
fn stream_load_into_a_fake_starrocks_gives_exactly_the_source_through_failures_and_a_kill_9() {
    let cluster = cluster();
    let db = cluster.fresh_db("starrocks");
    cluster.psql(
        &db,
        "CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric); \
         CREATE TABLE order_items (id int PRIMARY KEY, order_id int, qty int); \
         INSERT INTO orders SELECT i, 'new', i * 1.5 FROM generate_series(1, 200) i; \
         INSERT INTO order_items SELECT i, i / 2 + 1, 1 FROM generate_series(1, 300) i",
    );
    let fake = FakeStarRocks::start("loader", "p@ss:word", "analytics", 0.2);
    fake.table("orders", &["id", "status", "total"]);
    fake.table("order_items", &["id", "order_id", "qty"]);
    let url = fake.url.replace("p@ss:word", "p%40ss%3Aword");
    let job = format!("sr_{}", std::process::id());
    let vars = job_vars(cluster, &db, &url, &job, &[("WALPIPE_BATCH_SIZE", "60")]);
    // numeric travels as a string (no precision lost); json_agg prints it as a number.
    let numeric_rows = |_table: &str, rows: BTreeMap<i64, Value>| -> BTreeMap<i64, Value> {
        rows.into_iter()
            .map(|(id, mut row)| {
                let total = match row.get("total") {
                    Some(Value::String(text)) => text.parse::<f64>().ok(),
                    Some(value) => value.as_f64(),
                    None => None,
                };
                if let Some(total) = total {
                    row["total"] = Value::from(total);
                }
                (id, row)
            })
            .collect()
    };
    let same = || {
        ["orders", "order_items"].iter().all(|table| {
            numeric_rows(table, replay_loads(&fake, table))
                == numeric_rows(table, source_rows(cluster, &db, table))
        })
    };
    let mut walpipe = run(&job, &vars);
    wait_for(Duration::from_secs(120), "the snapshot loaded", same);
    // Killed mid-stream, not mid-copy: a copy interrupted starts over with a new slot (see docs/src/sinks/README.md).
    common::wait_running(&job);
    let mut killed = false;
    for round in 0..30 {
        cluster.psql(
            &db,
            &format!(
                "BEGIN; \
                 INSERT INTO orders VALUES ({o}, 'new', {round}); \
                 INSERT INTO order_items SELECT {o} * 10 + i, {o}, i FROM generate_series(1, 3) i; \
                 UPDATE orders SET status = 'paid' WHERE id = {round} + 1; \
                 UPDATE order_items SET qty = qty + 1 WHERE order_id = {round} + 2; \
                 DELETE FROM order_items WHERE id = {round} * 3 + 1; \
                 COMMIT;",
                o = 1000 + round
            ),
        );
        if round == 12 && !killed {
            kill_9(&mut walpipe);
            killed = true;
            walpipe = run(&job, &vars);
        }
    }
    let started = std::time::Instant::now();
    while !same() {
        if started.elapsed() > Duration::from_secs(120) {
            for table in ["orders", "order_items"] {
                let (loaded, source) = (
                    numeric_rows(table, replay_loads(&fake, table)),
                    numeric_rows(table, source_rows(cluster, &db, table)),
                );
                let differ: Vec<_> = source
                    .iter()
                    .filter(|(id, row)| loaded.get(id) != Some(row))
                    .map(|(id, row)| format!("{id}: source {row} loaded {:?}", loaded.get(id)))
                    .chain(
                        loaded
                            .keys()
                            .filter(|id| !source.contains_key(id))
                            .map(|id| format!("{id}: only loaded")),
                    )
                    .take(5)
                    .collect();
                eprintln!("{table}: {differ:#?}");
            }
            panic!("the loads never matched the source:\n{}", run_log(&job));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(&mut walpipe);
    let (requests, failures, label_exists, refused) = fake.counts();
    assert!(refused.is_empty(), "the fake refused requests as off-protocol: {refused:?}");
    assert!(failures >= 2, "only {failures} of {requests} loads failed");
    assert!(label_exists >= 1, "no load met its label again (the first answer is lost on purpose)");
    let loads = fake.loads();
    assert!(loads.iter().all(|l| l.database == "analytics"), "loads went to the URL's database");
    assert!(
        loads.iter().all(|l| l.label.starts_with(&format!("walpipe_{job}_public-"))),
        "labels name job and table"
    );
    assert!(!run_log(&job).contains("p@ss"), "the password is in the log");
}

#[test]
fn a_source_column_the_starrocks_table_lacks_is_left_out_with_the_alter_table_to_run() {
    let cluster = cluster();
    let db = cluster.fresh_db("starrocks_cols");
    cluster
        .psql(&db, "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one')");
    let fake = FakeStarRocks::start("loader", "secret", "analytics", 0.0);
    fake.table("items", &["id", "name"]);
    let job = format!("srcols_{}", std::process::id());
    let mut walpipe = run(&job, &job_vars(cluster, &db, &fake.url, &job, &[]));
    let loaded = |id: i64| replay_loads(&fake, "items").get(&id).cloned();
    wait_for(Duration::from_secs(60), "the copy loaded", || loaded(1).is_some());

    // The source gains a column the destination lacks: the others still load, by name.
    cluster.psql(&db, "ALTER TABLE items ADD COLUMN stock bigint");
    cluster.psql(&db, "INSERT INTO items VALUES (2, 'two', 9); UPDATE items SET name = 'uno' WHERE id = 1");
    wait_for(Duration::from_secs(60), "rows of the new shape loaded without the column", || {
        loaded(2) == Some(json!({"id": 2, "name": "two"}))
            && loaded(1) == Some(json!({"id": 1, "name": "uno"}))
    });
    let alter = "ALTER TABLE `analytics`.`items` ADD COLUMN `stock` BIGINT";
    wait_for(Duration::from_secs(30), "the warning with the ALTER TABLE", || run_log(&job).contains(alter));
    let addr = http_addr(&job).expect("the job's HTTP address");
    let missing = || {
        metric(&http_get(&addr, "/metrics").1, "walpipe_sink_columns_missing", &[("table", "public.items")])
    };
    assert_eq!(missing(), Some(1.0));
    assert!(fake.unknown_columns().is_empty(), "a load named a missing column: {:?}", fake.unknown_columns());

    // The user runs the ALTER TABLE: the next batch loads the column.
    fake.table("items", &["id", "name", "stock"]);
    cluster.psql(&db, "INSERT INTO items VALUES (3, 'three', 3)");
    wait_for(Duration::from_secs(60), "the column loaded once the destination has it", || {
        loaded(3) == Some(json!({"id": 3, "name": "three", "stock": 3}))
    });
    assert_eq!(missing(), Some(0.0));
    assert!(run_log(&job).contains("now has every source column"));
    stop(&mut walpipe);
}

#[test]
fn outbox_rows_and_messages_become_events_whose_contract_survives_a_schema_change() {
    let cluster = cluster();
    let db = cluster.fresh_db("outbox");
    cluster.psql(
        &db,
        "CREATE TABLE orders (id int PRIMARY KEY, status text); \
         CREATE TABLE outbox (id bigserial PRIMARY KEY, aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             event_type text NOT NULL, payload jsonb NOT NULL, occurred_at timestamptz NOT NULL DEFAULT now())",
    );
    let receiver = WebhookReceiver::start(Mode::Flaky(0.1));
    let job = format!("outbox_{}", std::process::id());
    let vars = job_vars(
        cluster,
        &db,
        &receiver.url,
        &job,
        &[
            ("WALPIPE_TABLES", "public.orders,public.outbox"),
            ("WALPIPE_OUTBOX_TABLES", "public.outbox"),
            ("WALPIPE_OUTBOX_PREFIX", "events"),
            ("WALPIPE_OUTBOX_DELETE", "true"),
        ],
    );
    let mut walpipe = run(&job, &vars);
    common::wait_running(&job);
    let place_order = |id: i32, columns: &str, values: &str| {
        cluster.psql(
            &db,
            &format!(
                "BEGIN; INSERT INTO orders ({columns}) VALUES ({values}); \
                 INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) \
                     VALUES ('order', '{id}', 'order.placed', jsonb_build_object('order_id', {id}, 'lines', 2)); \
                 COMMIT;"
            ),
        )
    };
    place_order(1, "id, status", "1, 'new'");
    cluster.psql(
        &db,
        "SELECT pg_logical_emit_message(true, 'events', \
            '{\"event_type\":\"cart.emptied\",\"aggregate_type\":\"cart\",\"aggregate_id\":\"c9\",\"payload\":{\"items\":0}}')",
    );
    // The orders table changes shape; the events do not.
    cluster.psql(
        &db,
        "ALTER TABLE orders RENAME COLUMN status TO state; ALTER TABLE orders ADD COLUMN currency text",
    );
    place_order(2, "id, state, currency", "2, 'new', 'EUR'");

    let events = || -> Vec<Value> {
        let mut seen = HashSet::new();
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.accepted())
            .flat_map(Delivery::changes)
            .filter(|c| c.get("event_type").is_some())
            .filter(|e| seen.insert(e["event_id"].to_string()))
            .collect()
    };
    wait_for(Duration::from_secs(60), "three events", || events().len() == 3);
    wait_for(Duration::from_secs(30), "delivered outbox rows deleted", || {
        cluster.psql(&db, "SELECT count(*) FROM outbox") == "0"
    });
    stop(&mut walpipe);

    let events = events();
    let fields = |event: &Value| event.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
    for event in &events {
        assert_eq!(
            fields(event),
            ["aggregate_id", "aggregate_type", "event_id", "event_type", "occurred_at", "payload", "source"],
            "{event}"
        );
    }
    assert_eq!(events[0]["payload"], json!({"order_id": 1, "lines": 2}));
    assert_eq!(
        (events[0]["aggregate_type"].as_str(), events[0]["aggregate_id"].as_str()),
        (Some("order"), Some("1"))
    );
    assert_eq!(events[1]["event_type"], "cart.emptied");
    assert_eq!(events[1]["source"]["prefix"], "events");
    assert_eq!(events[2]["payload"], json!({"order_id": 2, "lines": 2}));
    assert!(events[0]["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", events[0]);
    // The orders changes are still changes, in the table's new shape; outbox deletes emit nothing.
    let changes: Vec<Value> =
        receiver.deliveries().iter().filter(|d| d.accepted()).flat_map(Delivery::changes).collect();
    assert!(changes.iter().any(|c| c["table"] == "public.orders" && c["new"]["currency"] == "EUR"));
    assert!(!changes.iter().any(|c| c["table"] == "public.outbox"), "raw outbox changes leaked");
}

/// The job deletes a chunk's outbox rows after the sink acknowledged it and
/// before the slot may confirm it, and resumes from the slot's position: a
/// kill -9 anywhere leaves no row behind and loses no event.
#[test]
fn delivered_outbox_rows_are_deleted_and_every_event_arrives_through_kill_9s() {
    let cluster = cluster();
    let db = cluster.fresh_db("outbox_kill");
    cluster.psql(
        &db,
        "CREATE TABLE outbox (id bigserial PRIMARY KEY, aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             event_type text NOT NULL, payload jsonb NOT NULL)",
    );
    let receiver = WebhookReceiver::start(Mode::Flaky(0.1));
    let job = format!("outbox_kill_{}", std::process::id());
    let vars = job_vars(
        cluster,
        &db,
        &receiver.url,
        &job,
        &[
            ("WALPIPE_TABLES", "public.outbox"),
            ("WALPIPE_OUTBOX_TABLES", "public.outbox"),
            ("WALPIPE_OUTBOX_DELETE", "true"),
            ("WALPIPE_BATCH_SIZE", "25"),
        ],
    );
    let events = || -> HashSet<String> {
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.accepted())
            .flat_map(Delivery::changes)
            .filter_map(|event| event["event_id"].as_str().map(str::to_string))
            .collect()
    };
    let mut walpipe = run(&job, &vars);
    common::wait_running(&job);
    for round in 0..3 {
        for _ in 0..10 {
            cluster.psql(
                &db,
                "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) \
                 SELECT 'order', g::text, 'order.placed', jsonb_build_object('n', g) FROM generate_series(1, 10) g",
            );
        }
        wait_for(Duration::from_secs(60), "events of this round arriving", || events().len() > round * 100);
        kill_9(&mut walpipe);
        walpipe = run(&job, &vars);
    }
    wait_for(Duration::from_secs(120), "every event at the receiver", || events().len() == 300);
    wait_for(Duration::from_secs(60), "every delivered outbox row deleted", || {
        cluster.psql(&db, "SELECT count(*) FROM outbox") == "0"
    });
    stop(&mut walpipe);
    let expected: HashSet<String> = (1..=300).map(|id: i32| id.to_string()).collect();
    assert_eq!(events(), expected, "an event was lost or made up");
}

#[test]
fn a_webhook_that_is_down_is_retried_until_it_answers_and_nothing_is_lost() {
    let cluster = cluster();
    let db = items_db(cluster, "hook_down");
    // A port nobody listens on yet.
    let addr =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let job = format!("down_{}", std::process::id());
    let vars =
        job_vars(cluster, &db, &format!("http://{addr}/hook"), &job, &[("WALPIPE_TABLES", "public.items")]);
    let mut walpipe = run(&job, &vars);
    wait_for(Duration::from_secs(30), "a refused connection retried", || {
        run_log(&job).contains("delivery failed, trying again")
    });
    for i in 2..=20 {
        cluster.psql(
            &db,
            &format!("INSERT INTO items VALUES ({i}, 'x', {i}); UPDATE items SET n = n + 1 WHERE id = 1"),
        );
    }
    let receiver = WebhookReceiver::start_on(&addr, Mode::Flaky(0.0));
    wait_for(Duration::from_secs(60), "every change after the receiver came up", || {
        receiver_has_the_source(&receiver, cluster, &db)
    });
    stop(&mut walpipe);
    let log = run_log(&job);
    assert!(log.contains("Connection refused"), "{log}");
    assert!(!log.contains("the job failed"), "{log}");
}

#[test]
fn the_stdout_sink_prints_each_change_once() {
    let cluster = cluster();
    let db = items_db(cluster, "stdout");
    let job = format!("stdout_{}", std::process::id());
    let out = std::env::temp_dir().join(format!("walpipe-stdout-{job}.jsonl"));
    let vars = job_vars(cluster, &db, "stdout:", &job, &[]);
    let mut command = common::walpipe();
    command
        .arg("run")
        .env("WALPIPE_HTTP_ADDR", "127.0.0.1:0")
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(
            std::fs::File::create(std::env::temp_dir().join(format!("walpipe-run-{job}.log"))).expect("log"),
        );
    command.envs(vars);
    let mut walpipe = command.spawn().expect("walpipe run");
    // "streaming" is logged before the copy's chunk is read; a write before
    // the read would land in the chunk too, so the order would depend on timing.
    wait_for(Duration::from_secs(30), "walpipe has read the copy", || {
        run_log(&job).contains("every chunk is read")
    });
    cluster.psql(&db, "INSERT INTO items VALUES (2, 'b', 0); DELETE FROM items WHERE id = 1");
    let changes = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a change per line"))
            .collect()
    };
    wait_for_showing(
        Duration::from_secs(60),
        "the changes on stdout",
        || changes().len() >= 4,
        || format!("stdout:\n{}\nlog:\n{}", std::fs::read_to_string(&out).unwrap_or_default(), run_log(&job)),
    );
    stop(&mut walpipe);
    let ops: Vec<String> =
        changes().iter().map(|c| c["op"].as_str().unwrap_or_default().to_string()).collect();
    // The chunked copy announces the table's shape before its rows; the
    // stream's own announcement of the same shape is nothing new.
    assert_eq!(
        ops,
        ["schema", "snapshot", "insert", "delete"],
        "the table's shape before its first row; log:\n{}",
        run_log(&job)
    );
}

/// Updates, deletes and re-inserts on random keys of `items` (`rows` ids).
const ITEMS_WORKLOAD: &str = r"\set i random(1, :rows)
\set op random(1, 4)
\if :op = 1
UPDATE items SET n = n + 1, v = md5(random()::text) WHERE id = :i;
\elif :op = 2
DELETE FROM items WHERE id = :i;
\elif :op = 3
INSERT INTO items VALUES (:i, 'back', -1) ON CONFLICT (id) DO UPDATE SET n = items.n + 100;
\else
UPDATE items SET n = n - 1 WHERE id BETWEEN :i AND :i + 25;
\endif
";

#[test]
fn a_chunked_copy_under_writes_replays_at_the_webhook_in_arrival_order_to_the_source() {
    const ROWS: u32 = 60_000;
    let cluster = cluster();
    let db = cluster.fresh_db("hook_chunks");
    cluster.psql(
        &db,
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, v text, n int); \
             INSERT INTO items SELECT i, 'v' || i, 0 FROM generate_series(1, {ROWS}) i"
        ),
    );
    // The workload runs over the whole copy: it writes before the copy
    // starts and stops only after the copy's last chunk is in the stream.
    let workload = common::Workload::start(cluster, &db, ITEMS_WORKLOAD, 3, ROWS, 600);
    workload.wait_writing(cluster, &db);
    let receiver = WebhookReceiver::start(Mode::Flaky(0.1));
    let job = format!("hook_chunks_{}", std::process::id());
    let vars = job_vars(cluster, &db, &receiver.url, &job, &[("WALPIPE_BATCH_SIZE", "500")]);
    let mut walpipe = run(&job, &vars);
    wait_for(Duration::from_secs(180), "the copy's last chunk in the stream", || {
        run_log(&job).contains("its last chunk took its place in the stream")
    });
    workload.stop();
    // Everything received, each change once, in the order it first arrived.
    let arrived = || {
        let mut seen = HashSet::new();
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.accepted())
            .flat_map(Delivery::changes)
            .filter(|change| seen.insert(change["id"].as_str().expect("id").to_string()))
            .collect::<Vec<Value>>()
    };
    wait_for(Duration::from_secs(180), "the source, replayed in arrival order", || {
        replay(&arrived(), "public.items") == source_rows(cluster, &db, "items")
    });
    stop(&mut walpipe);
    // Per key, copied rows and changes arrived in commit order: no copied
    // row came after a newer change of its key.
    let mut last: HashMap<i64, (u64, u64)> = HashMap::new();
    let mut copied = 0;
    for change in arrived().iter().filter(|c| c["op"] != "schema") {
        copied += usize::from(change["op"] == "snapshot");
        let key = change["key"]["id"].as_i64().expect("key");
        // A copied row's place is its chunk's transaction (its id names the row, not a place).
        let here = (common::lsn(change["commit_lsn"].as_str().expect("commit_lsn")), position(change).1);
        if let Some(before) = last.insert(key, here) {
            assert!(before < here, "key {key}: {change} arrived after a change at {before:?}");
        }
    }
    let log = run_log(&job);
    assert!(copied > 0 && log.contains("its last chunk took its place in the stream"), "{log}");
}
