//! A throwaway MariaDB server for the MySQL source's tests: Debian's
//! `mariadbd`, in a temporary data directory, with the binlog settings
//! walpipe needs, started on first use and killed by a watchdog when the
//! test binary exits. `scripts/test.sh` installs `mariadb-server`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub struct Mariadb {
    pub port: u16,
    pub dir: PathBuf,
}

/// The walpipe user's name and password on every test server.
pub const USER: &str = "walpipe";
pub const PASSWORD: &str = "walpipe-secret";

static SERVER: OnceLock<Mariadb> = OnceLock::new();
static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The server this test binary's tests share (a test that changes the
/// server's binlog starts its own with [`Mariadb::start`]).
pub fn server() -> &'static Mariadb {
    SERVER.get_or_init(|| Mariadb::start(&[]))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

impl Mariadb {
    pub fn start(settings: &[&str]) -> Mariadb {
        let dir =
            std::env::temp_dir().join(format!("walpipe-mariadb-{}-{}", std::process::id(), super::unique()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the MariaDB directory");
        let user = if is_root() { "mysql" } else { "" };
        if is_root() {
            let status = Command::new("chown").args(["-R", "mysql"]).arg(&dir).status().expect("chown");
            assert!(status.success(), "chown the MariaDB directory");
        }
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !user.is_empty() {
            install.arg(format!("--user={user}"));
        }
        // Two at once in one process trip over each other's bootstrap: one at a time.
        let installed = {
            let _one_at_a_time = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            install.output().expect("mariadb-install-db (apt-get install mariadb-server)")
        };
        assert!(
            installed.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // `setsid -f` forks the server into its own session and returns at once;
        // the watchdog finds it by its pid file.
        let mut server = Command::new("setsid");
        server
            .args(["-f", "mariadbd"])
            .arg("--no-defaults")
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--server-id=1",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=0",
                "--sync-binlog=0",
                "--skip-name-resolve",
            ])
            .arg(format!("--log-bin={}", dir.join("data/binlog").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !user.is_empty() {
            server.arg(format!("--user={user}"));
        }
        let started = server.status().expect("start mariadbd");
        assert!(started.success(), "setsid failed to start mariadbd");
        spawn_watchdog(&dir);
        let server = Mariadb { port, dir };
        super::wait_for(Duration::from_secs(60), "MariaDB to accept connections", || {
            server.try_sql_as_root("SELECT 1").is_some()
        });
        server.sql_as_root(&format!(
            "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'"
        ));
        server
    }

    /// `mysql://` URL of database `db` for the walpipe user.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    fn client(&self, db: &str) -> Command {
        let mut command = Command::new("mariadb");
        command.arg("--no-defaults").arg(format!("--socket={}", self.dir.join("sock").display())).args([
            "-uroot",
            "--batch",
            "--skip-column-names",
            "--raw",
            "--default-character-set=utf8mb4",
        ]);
        if !db.is_empty() {
            command.arg(db);
        }
        command
    }

    fn try_sql_as_root(&self, sql: &str) -> Option<String> {
        let output = self.client("").args(["-e", sql]).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim_end().to_string())
    }

    fn sql_as_root(&self, sql: &str) -> String {
        self.sql("", sql)
    }

    /// Runs `sql` in `db` (as root); its output, tab-separated.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let output = self.client(db).args(["-e", sql]).output().expect("run mariadb");
        assert!(output.status.success(), "{sql} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim_end().to_string()
    }

    /// A new database for `test`.
    pub fn fresh_db(&self, test: &str) -> String {
        let db = format!("{test}_{}", super::unique());
        self.sql("", &format!("CREATE DATABASE {db}"));
        db
    }
}

/// Kills the server and removes its directory once this test process is gone.
fn spawn_watchdog(dir: &Path) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -9 $(cat '{dir}/pid') 2>/dev/null; sleep 1; rm -rf '{dir}'",
        parent = std::process::id(),
        dir = dir.display()
    );
    super::detach(&script, "the MariaDB watchdog");
}
