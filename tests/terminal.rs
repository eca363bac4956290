//! walpipe in a terminal, driven through tmux: copy progress bars of
//! `walpipe run` on a TTY, `walpipe jobs watch` following a job live and
//! quitting on Ctrl-C; and the shell completions and man page from clap.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, http_request, serving_worker, wait_for};

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

/// A tmux server of the test's own (its own socket), killed with the test.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a new 160x40 session.
    fn start(name: &str, command: &str) -> Tmux {
        let tmux = Tmux { socket: format!("walpipe-{name}-{}", std::process::id()) };
        let status = tmux.run(&["new-session", "-d", "-s", name, "-x", "160", "-y", "40", command]);
        assert!(status.success(), "tmux starts (scripts/test.sh installs it)");
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).status().expect("run tmux")
    }

    /// The screen and its scrollback, as text.
    fn screen(&self) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-S", "-200"])
            .output()
            .expect("capture the pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn wait_screen(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        wait_for(Duration::from_secs(90), what, || check(&self.screen()));
        self.screen()
    }

    /// Whether the session's command is still running.
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn walpipe_binary() -> &'static str {
    env!("CARGO_BIN_EXE_walpipe")
}

#[test]
fn walpipe_run_on_a_terminal_draws_each_copy_as_a_bar_instead_of_log_lines() {
    let source = cluster().fresh_db("bars_source");
    let sink = cluster().fresh_db("bars_sink");
    cluster().psql(
        &source,
        "CREATE TABLE big (id int PRIMARY KEY, note text); \
         INSERT INTO big SELECT g, repeat('x', 40) FROM generate_series(1, 200000) g; ANALYZE big",
    );
    let job = format!("bars_{}", std::process::id());
    let command = format!(
        "env WALPIPE_SOURCE_URL='{}' WALPIPE_SINK_URL='{}' WALPIPE_JOB_NAME={job} WALPIPE_HTTP_ADDR=127.0.0.1:0 {} run",
        cluster().url(&source),
        cluster().url(&sink),
        walpipe_binary()
    );
    let tmux = Tmux::start("bars", &command);
    let screen = tmux.wait_screen("the copy's finished bar", |s| s.contains("rows copied in"));
    let line = screen.lines().find(|l| l.contains("rows copied in")).unwrap_or_default();
    assert!(
        line.starts_with("public.big") && line.contains("[###") && line.contains("200000 rows"),
        "{screen}"
    );
    assert!(
        !screen.contains("snapshot public.big: 200000/200000 rows"),
        "on a terminal the bar replaces the progress lines: {screen}"
    );
    // Off a terminal the same copy logs its lines (tests/sidecar.rs and the
    // other tests read them from a file).
    drop(tmux);
}

#[test]
fn jobs_watch_follows_a_job_live_and_quits_on_ctrl_c() {
    let state = cluster().fresh_db("watch_state");
    let source = cluster().fresh_db("watch_source");
    let sink = cluster().fresh_db("watch_sink");
    cluster().psql(&source, "CREATE TABLE orders (id int PRIMARY KEY)");
    let label = format!("watch-{}", std::process::id());
    let (mut worker, addr) = serving_worker(cluster(), &state, &label, &[], None);
    let job = serde_json::json!({"name": "watched", "source_url": cluster().url(&source), "sink_url": cluster().url(&sink)});
    assert_eq!(http_request(&addr, "POST", "/api/v1/jobs", Some(&job.to_string()), None).0, 201);
    let (status, started) = http_request(&addr, "POST", "/api/v1/jobs/watched/start?wait=60s", None, None);
    assert_eq!(status, 200, "{started}");

    let tmux = Tmux::start(
        "watch",
        &format!("env WALPIPE_HTTP_ADDR={addr} {} jobs watch watched", walpipe_binary()),
    );
    let screen = tmux.wait_screen("the job running", |s| s.contains("watched  running"));
    assert!(screen.contains("lag bytes") && screen.contains("Ctrl-C to quit"), "{screen}");
    let (status, paused) = http_request(&addr, "POST", "/api/v1/jobs/watched/pause?wait=60s", None, None);
    assert_eq!(status, 200, "{paused}");
    let screen = tmux.wait_screen("the pause seen", |s| s.contains("watched  paused"));
    assert!(screen.contains("warning: paused"), "{screen}");
    tmux.run(&["send-keys", "-t", "watch", "C-c"]);
    wait_for(Duration::from_secs(30), "watch to quit on Ctrl-C", || !tmux.alive());

    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    assert!(worker.wait().expect("the worker stops").success());
}

#[test]
fn completions_load_in_bash_and_the_man_page_is_roff() {
    let script = Command::new(walpipe_binary()).args(["completions", "bash"]).output().expect("completions");
    assert!(script.status.success());
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source /dev/stdin <<'EOF'\n{}\nEOF\ncomplete -p walpipe",
            String::from_utf8_lossy(&script.stdout)
        ))
        .output()
        .expect("bash");
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("-F _walpipe walpipe"), "{loaded:?}");
    for shell in ["zsh", "fish"] {
        let script =
            Command::new(walpipe_binary()).args(["completions", shell]).output().expect("completions");
        assert!(
            script.status.success() && String::from_utf8_lossy(&script.stdout).contains("walpipe"),
            "{shell}"
        );
    }
    let man = Command::new(walpipe_binary()).arg("man").output().expect("man");
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success() && page.contains(".TH walpipe 1"), "{page}");
    for command in ["run", "check", "tail", "jobs", "completions"] {
        assert!(page.contains(&format!("walpipe\\-{command}")), "the man page lists {command}: {page}");
    }
}
