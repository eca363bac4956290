//! The web console, in a real browser (Debian's chromium through
//! chromedriver) against a real worker and real clusters: log in, create a
//! job and watch it reach running, pause and resume it by its buttons, see
//! the live lag number change, be refused an action with the API's 409
//! message shown; and, without a browser, that nothing of the console
//! answers without the token, that no URL's password is rendered, and that
//! a state-changing request needs the CSRF token and the same origin.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, http_request, serving_worker, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const TOKEN: &str = "console-test-token";
const PASSWORD: &str = "never-shown-pw";

fn cluster() -> &'static Cluster {
    common::pg15_with(&common::options())
}

/// A worker that a failed test does not leave running.
struct Worker(Child);

impl Worker {
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        assert!(self.0.wait().expect("the worker stops").success(), "the worker stops cleanly");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker with the token, its state store in `state_db`.
fn worker(state_db: &str, label: &str) -> (Worker, String) {
    // Each run its own log: an address of an earlier run must not be read.
    let label = &format!("{label}-{}", std::process::id());
    let (child, addr) =
        serving_worker(cluster(), state_db, label, &[("WALPIPE_API_TOKEN", TOKEN)], Some(TOKEN));
    (Worker(child), addr)
}

/// A job definition whose URLs carry a password (the clusters trust local
/// connections, so it is never checked, only carried).
fn definition(name: &str, source_db: &str, sink_db: &str) -> Value {
    let with_password = |db: &str| {
        cluster().url(db).replacen("postgres://postgres@", &format!("postgres://postgres:{PASSWORD}@"), 1)
    };
    json!({"name": name, "source_url": with_password(source_db), "sink_url": with_password(sink_db), "tables": "public.orders", "flush_interval_ms": 100})
}

/// A raw HTTP/1.0 exchange: the status, the headers (lower-cased names) and the body.
fn exchange(addr: &str, request: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_lowercase(), body.to_string())
}

fn get(addr: &str, path: &str, cookie: Option<&str>) -> (u16, String, String) {
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    exchange(addr, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{cookie}\r\n"))
}

/// Logs in with `token`; the session cookie (`name=value`) when it was right.
fn log_in(addr: &str, token: &str) -> Option<String> {
    let form = format!("token={token}&next=%2F");
    let (status, head, _) = exchange(
        addr,
        &format!(
            "POST /login HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    let cookie = head.lines().find_map(|line| line.strip_prefix("set-cookie: "))?;
    (status == 303).then(|| cookie.split(';').next().unwrap_or_default().to_string())
}

#[test]
fn nothing_of_the_console_answers_without_the_token_and_no_password_is_rendered() {
    let state_db = cluster().fresh_db("console_gate_state");
    let source_db = cluster().fresh_db("console_gate_source");
    let sink_db = cluster().fresh_db("console_gate_sink");
    cluster().psql(&source_db, "CREATE TABLE orders (id int PRIMARY KEY, note text)");
    let (worker, addr) = worker(&state_db, "console-gate");
    let (status, created) = http_request(
        &addr,
        "POST",
        "/api/v1/jobs",
        Some(&definition("gate_job", &source_db, &sink_db).to_string()),
        Some(TOKEN),
    );
    assert_eq!(status, 201, "{created}");

    // Without a session: every page sends to the login, a live part is 401,
    // and the API is 401 as before.
    for path in ["/", "/jobs/gate_job", "/jobs/new", "/jobs/nothing"] {
        let (status, head, _) = get(&addr, path, None);
        assert_eq!(status, 303, "{path}: {head}");
        assert!(head.contains("location: /login?next="), "{path}: {head}");
    }
    assert_eq!(get(&addr, "/jobs/gate_job?part=live", None).0, 401);
    assert_eq!(get(&addr, "/?part=live", Some("walpipe_session=forged.0000")).0, 401);
    assert_eq!(get(&addr, "/api/v1/jobs", None).0, 401);
    assert_eq!(get(&addr, "/login", None).0, 200, "the login page itself answers");
    assert_eq!(log_in(&addr, "wrong-token"), None, "a wrong token opens no session");

    let cookie = log_in(&addr, TOKEN).expect("the token opens a session");
    for path in ["/", "/jobs/gate_job", "/jobs/gate_job?part=live", "/?part=live"] {
        let (status, head, body) = get(&addr, path, Some(&cookie));
        assert_eq!(status, 200, "{path}: {head}");
        assert!(body.contains("gate_job"), "{path}: {body}");
        assert!(!body.contains(PASSWORD), "{path} renders a password: {body}");
        assert!(head.contains("content-security-policy: default-src 'none'"), "{path}: {head}");
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
    }

    // The session alone does not move a job: the CSRF token must come with
    // it, and a page of another origin is refused whatever it sends.
    let (_, _, page) = get(&addr, "/", Some(&cookie));
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    let start = |headers: &str| {
        exchange(
            &addr,
            &format!("POST /api/v1/jobs/gate_job/start?wait=0 HTTP/1.0\r\nHost: {addr}\r\nCookie: {cookie}\r\n{headers}Content-Length: 0\r\n\r\n"),
        )
        .0
    };
    assert_eq!(start(""), 401, "a session without the CSRF token");
    assert_eq!(start("X-CSRF-Token: 0123\r\n"), 401, "a wrong CSRF token");
    assert_eq!(
        start(&format!("X-CSRF-Token: {csrf}\r\nOrigin: http://evil.example\r\n")),
        403,
        "another origin"
    );
    let started = start(&format!("X-CSRF-Token: {csrf}\r\nOrigin: http://{addr}\r\n"));
    assert!(started == 200 || started == 202, "the console's own request: {started}");

    // A datasource keeps its URL on the server: listed redacted, its
    // tables read with it, and a job made from it by name.
    let saved = json!({"name": "gate_source", "role": "source", "url": definition("x", &source_db, &sink_db)["source_url"]});
    let (status, answer) =
        http_request(&addr, "POST", "/api/v1/datasources", Some(&saved.to_string()), Some(TOKEN));
    assert_eq!(status, 201, "{answer}");
    assert!(!answer.contains(PASSWORD), "{answer}");
    let (status, listed) = http_request(&addr, "GET", "/api/v1/datasources", None, Some(TOKEN));
    assert!(status == 200 && listed.contains("gate_source") && !listed.contains(PASSWORD), "{listed}");
    let (status, tables) =
        http_request(&addr, "GET", "/api/v1/datasources/gate_source/tables", None, Some(TOKEN));
    assert!(status == 200 && tables.contains("\"public.orders\""), "{status} {tables}");
    let by_name = json!({"name": "by_name", "source": "gate_source", "sink_url": cluster().url(&sink_db)});
    let (status, checked) =
        http_request(&addr, "POST", "/api/v1/check", Some(&by_name.to_string()), Some(TOKEN));
    assert_eq!(status, 200, "{checked}");
    let checked: Value = serde_json::from_str(&checked).expect("JSON");
    assert_eq!(checked["errors"], 0, "{checked}");
    let (status, created) =
        http_request(&addr, "POST", "/api/v1/jobs", Some(&by_name.to_string()), Some(TOKEN));
    assert_eq!(status, 201, "{created}");
    assert!(!created.contains(PASSWORD), "{created}");
    let unknown = json!({"name": "nope", "source": "missing", "sink_url": cluster().url(&sink_db)});
    let (status, refused) =
        http_request(&addr, "POST", "/api/v1/jobs", Some(&unknown.to_string()), Some(TOKEN));
    assert!(status == 400 && refused.contains("no datasource named \\\"missing\\\""), "{status} {refused}");

    worker.stop();
}

/// chromedriver on a free port, ended with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let binary = std::env::var("TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        // A port taken between asking and binding fails the start: try another.
        for _ in 0..5 {
            let port =
                TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            let mut child = Command::new(&binary)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("start {binary} ({e}): install chromium-driver (scripts/test.sh does)")
                });
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                // chromedriver listens once it is ready for sessions.
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Driver { child, url };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = std::env::var("TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver")
}

/// Waits until `check` of the page's text at `css` holds.
async fn wait_text(client: &Client, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if check(&text) {
                    return text;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = client.source().await.unwrap_or_default();
    panic!("timed out waiting for {what}: {css} shows {last:?} on this page:\n{page}");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

async fn fill(client: &Client, name: &str, value: &str) {
    let field = client.find(Locator::Css(&format!("#create-job [name={name}]"))).await.expect("a form field");
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

async fn screenshot(client: &Client, file: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    std::fs::write(dir.join(file), client.screenshot().await.expect("screenshot")).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_job_is_created_watched_paused_resumed_and_refused() {
    let state_db = cluster().fresh_db("console_browser_state");
    let source_db = cluster().fresh_db("console_browser_source");
    let sink_db = cluster().fresh_db("console_browser_sink");
    cluster().psql(
        &source_db,
        "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'row ' || g FROM generate_series(1, 2000) g; ANALYZE orders",
    );
    let (worker, addr) = worker(&state_db, "console-browser");
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;
    let base = format!("http://{addr}");

    // Log in: a wrong token is told so, the right one opens the jobs page.
    client.goto(&format!("{base}/")).await.expect("open the console");
    wait_text(&client, "main.login", "the login page", |t| t.contains("API token")).await;
    client.find(Locator::Css("#token")).await.expect("token field").send_keys("wrong").await.expect("type");
    click(&client, "main.login button").await;
    wait_text(&client, "p.error", "the wrong token refused", |t| t.contains("That is not the token")).await;
    client.find(Locator::Css("#token")).await.expect("token field").send_keys(TOKEN).await.expect("type");
    click(&client, "main.login button").await;
    wait_text(&client, "#live", "the jobs page", |t| t.contains("No jobs yet")).await;

    // Save the source and the sink once, as datasources; the page lists
    // them without their passwords.
    client.goto(&format!("{base}/jobs/new")).await.expect("the form");
    let job = definition("browser_job", &source_db, &sink_db);
    for (name, role, url) in
        [("shop_db", "source", &job["source_url"]), ("warehouse", "sink", &job["sink_url"])]
    {
        let form = |field: &str| format!("#add-datasource [name={field}]");
        client.find(Locator::Css(&form("name"))).await.expect("name").send_keys(name).await.expect("type");
        client
            .find(Locator::Css(&form("role")))
            .await
            .expect("role")
            .select_by_value(role)
            .await
            .expect("choose");
        let url = url.as_str().expect("a URL");
        client.find(Locator::Css(&form("url"))).await.expect("url").send_keys(url).await.expect("type");
        click(&client, "#add-datasource button").await;
        wait_text(&client, "section.datasources table", "the datasource saved", |t| t.contains(name)).await;
    }
    assert!(!client.source().await.expect("page").contains(PASSWORD), "the form page renders a password");

    // The source's tables load by themselves, with their estimated rows;
    // the check runs before the job is created, and the job runs.
    wait_text(&client, "#tables", "the source's tables", |t| t.contains("public.orders (~2,000 rows)")).await;
    fill(&client, "name", "browser_job").await;
    fill(&client, "flush_interval_ms", "100").await;
    click(&client, "#create-job button[type=submit]").await;
    let findings =
        wait_text(&client, "#findings", "the check's findings", |t| t.contains("wal_level = logical")).await;
    assert!(!findings.contains("error:"), "{findings}");
    wait_text(&client, "#create-job button[type=submit]", "the check passed", |t| t == "Create and start")
        .await;
    click(&client, "#create-job button[type=submit]").await;
    wait_text(&client, "#live h1 .state", "the created job running", |t| t == "running").await;
    let page = client.source().await.expect("page source");
    assert!(!page.contains(PASSWORD), "the job page renders a password");

    // Pause by its button: the job reaches paused; while it is paused the
    // slot does not move, so new rows grow the lag the page shows.
    click(&client, "button[data-action=pause]").await;
    wait_text(&client, "#live h1 .state", "paused", |t| t == "paused").await;
    let lag_before = wait_text(&client, "#live .lag", "a lag figure", |t| t != "–").await;
    cluster()
        .psql(&source_db, "INSERT INTO orders SELECT g, 'row ' || g FROM generate_series(2001, 12000) g");
    wait_text(&client, "#live .lag", "the lag number changing", |t| t != lag_before && t != "–").await;
    screenshot(&client, "console-job.png").await;

    // Resume by its button: the job runs and catches up.
    click(&client, "button[data-action=resume]").await;
    wait_text(&client, "#live h1 .state", "running again", |t| t == "running").await;
    let count = || cluster().try_psql(&sink_db, "SELECT count(*) FROM public.orders");
    wait_for(Duration::from_secs(90), "the sink to hold every row", || count().as_deref() == Some("12000"));
    wait_text(&client, "#live .indicator:nth-child(3) .value", "records counted", |t| t != "0" && t != "–")
        .await;

    // Refused: with live refresh off, another operator pauses the job; this
    // page's Pause button is stale, and the API's 409 message is shown.
    click(&client, "#autorefresh").await;
    let (status, paused) =
        http_request(&addr, "POST", "/api/v1/jobs/browser_job/pause?wait=60s", None, Some(TOKEN));
    assert_eq!(status, 200, "{paused}");
    click(&client, "button[data-action=pause]").await;
    wait_text(&client, "#message", "the 409 message", |t| t.contains("cannot pause a job that is paused"))
        .await;

    let (status, resumed) =
        http_request(&addr, "POST", "/api/v1/jobs/browser_job/resume?wait=60s", None, Some(TOKEN));
    assert_eq!(status, 200, "{resumed}");
    client.goto(&format!("{base}/")).await.expect("the jobs page");
    wait_text(&client, "#live tr[data-job=browser_job] .state", "the job in the list", |t| t == "running")
        .await;
    screenshot(&client, "console-jobs.png").await;
    client.close().await.expect("close the browser");

    worker.stop();
}
