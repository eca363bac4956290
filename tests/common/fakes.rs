//! Local HTTP receivers for the sink tests: a webhook receiver that fails
//! a share of requests, evenly spaced (or refuses, or holds them), and a fake
//! StarRocks that follows the documented Stream Load protocol (FE 307 to a
//! BE, Basic auth, `label`, `format: json`, `strip_outer_array`, `columns`
//! with `__op`, the result JSON with `Status`, `Label Already Exists` for a
//! label that was loaded). StarRocks itself cannot be installed here.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response { status, headers: Vec::new(), body: body.as_bytes().to_vec() }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves HTTP/1.1 (keep-alive, Content-Length bodies) on a free port, a thread per connection.
pub fn serve(handler: Handler) -> SocketAddr {
    serve_on("127.0.0.1:0", handler)
}

/// As [`serve`], on `addr`.
pub fn serve_on(addr: &str, handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind(addr).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || connection(stream, &handler));
        }
    });
    addr
}

fn connection(stream: TcpStream, handler: &Handler) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else { return };
        let mut request =
            Request { method: method.into(), path: path.into(), headers: Vec::new(), body: Vec::new() };
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                request.headers.push((name.trim().to_lowercase(), value.trim().to_string()));
            }
        }
        let length: usize = request.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        request.body = vec![0; length];
        if reader.read_exact(&mut request.body).is_err() {
            return;
        }
        let response = handler(&request);
        let mut head =
            format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\n", response.status, response.body.len());
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&response.body)).is_err() {
            return;
        }
    }
}

/// Which requests a fake fails: exactly `ratio` of them, evenly spaced
/// (request n fails when n * ratio passes a whole number), so that a test
/// counting failures never depends on luck; and, for each failure, which
/// kind, in turn.
struct Dice {
    rolls: u64,
    failures: u64,
}

impl Dice {
    fn new() -> Dice {
        Dice { rolls: 0, failures: 0 }
    }

    /// Whether this request fails.
    fn roll(&mut self, ratio: f64) -> bool {
        self.rolls += 1;
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let share = |n: u64| (n as f64 * ratio).floor() as u64;
        let fails = share(self.rolls) > share(self.rolls - 1);
        self.failures += u64::from(fails);
        fails
    }

    /// The kind of the last failure, cycling through `kinds` of them.
    fn kind(&self, kinds: u64) -> u64 {
        self.failures % kinds
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Fails this share of requests, evenly spaced, with a 500 or a 503 in turn.
    Flaky(f64),
    /// Answers every request with this status and body.
    Refuse(u16, String),
    /// Keeps requests waiting until the mode changes.
    Hold,
}

/// A request the webhook receiver answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: String,
    pub batch: String,
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Delivery {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn changes(&self) -> Vec<Value> {
        serde_json::from_slice(&self.body).expect("a JSON array")
    }
}

#[derive(Default)]
struct Log {
    deliveries: Vec<Delivery>,
    /// Keys of the requests that were held.
    held: Vec<String>,
}

pub struct WebhookReceiver {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    log: Arc<Mutex<Log>>,
}

impl WebhookReceiver {
    pub fn start(mode: Mode) -> WebhookReceiver {
        WebhookReceiver::start_on("127.0.0.1:0", mode)
    }

    /// A receiver on `addr` (to bring one up where walpipe already sends).
    pub fn start_on(addr: &str, mode: Mode) -> WebhookReceiver {
        let mode = Arc::new(Mutex::new(mode));
        let log = Arc::new(Mutex::new(Log::default()));
        let dice = Mutex::new(Dice::new());
        let (current, record) = (mode.clone(), log.clone());
        let addr = serve_on(
            addr,
            Arc::new(move |request: &Request| {
                let mut holding = false;
                while *current.lock().expect("mode") == Mode::Hold {
                    if !holding {
                        let key = request.header("idempotency-key").unwrap_or_default().to_string();
                        record.lock().expect("log").held.push(key);
                        holding = true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mode = current.lock().expect("mode").clone();
                let failed = match mode {
                    Mode::Flaky(ratio) => {
                        let mut dice = dice.lock().expect("dice");
                        dice.roll(ratio).then(|| if dice.kind(2) == 0 { 500 } else { 503 })
                    }
                    _ => None,
                };
                let response = match (mode, failed) {
                    (_, Some(status)) => Response::text(status, "injected failure"),
                    (Mode::Refuse(status, body), None) => Response::text(status, &body),
                    (Mode::Flaky(_) | Mode::Hold, None) => Response::text(204, ""),
                };
                record.lock().expect("log").deliveries.push(Delivery {
                    key: request.header("idempotency-key").unwrap_or_default().to_string(),
                    batch: request.header("x-walpipe-batch").unwrap_or_default().to_string(),
                    signature: request.header("x-walpipe-signature").map(str::to_string),
                    body: request.body.clone(),
                    status: response.status,
                });
                response
            }),
        );
        WebhookReceiver { url: format!("http://{addr}/hook"), mode, log }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Every request answered so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().expect("log").deliveries.clone()
    }

    /// The keys of the requests that were held (see [`Mode::Hold`]).
    pub fn held(&self) -> Vec<String> {
        self.log.lock().expect("log").held.clone()
    }
}

/// One load the fake StarRocks took.
#[derive(Debug, Clone)]
pub struct Load {
    pub label: String,
    pub database: String,
    pub table: String,
    pub partial: bool,
    pub rows: Vec<Value>,
}

#[derive(Default)]
struct StarRocksLog {
    loads: Vec<Load>,
    labels: HashSet<String>,
    requests: usize,
    failures: usize,
    label_exists: usize,
    refused: Vec<String>,
    /// Loads that named columns their table lacks.
    unknown_columns: Vec<String>,
    /// The tables of the fake's database and their columns (lower case).
    tables: HashMap<String, Vec<String>>,
}

pub struct FakeStarRocks {
    /// `starrocks://user:password@fe/db`
    pub url: String,
    log: Arc<Mutex<StarRocksLog>>,
}

impl FakeStarRocks {
    /// A FE and a BE; the BE fails `fail_ratio` of the loads, evenly spaced (a
    /// third of those after loading the rows: the answer is lost), and loses
    /// the answer to the first load.
    pub fn start(user: &str, password: &str, database: &str, fail_ratio: f64) -> FakeStarRocks {
        use base64_basic as b64;
        let auth = format!("Basic {}", b64::encode(format!("{user}:{password}").as_bytes()));
        let log = Arc::new(Mutex::new(StarRocksLog::default()));
        let (record, expected) = (log.clone(), auth.clone());
        let dice = Mutex::new(Dice::new());
        let be = serve(Arc::new(move |request: &Request| {
            let mut log = record.lock().expect("log");
            log.requests += 1;
            let refuse = |log: &mut StarRocksLog, why: String| {
                log.refused.push(why.clone());
                Response::json(200, json!({"Status": "Fail", "Message": format!("denied: {why}")}))
            };
            if request.method != "PUT" {
                return refuse(&mut log, format!("method {}", request.method));
            }
            if request.header("authorization") != Some(expected.as_str()) {
                log.refused.push("no credentials at the BE".into());
                return Response::json(
                    401,
                    json!({"Status": "Fail", "Message": "Access denied: no credentials"}),
                );
            }
            let (Some(label), Some("json"), Some("true"), Some(columns)) = (
                request.header("label"),
                request.header("format"),
                request.header("strip_outer_array"),
                request.header("columns"),
            ) else {
                return refuse(&mut log, "missing label, format, strip_outer_array or columns".into());
            };
            if !columns.split(',').any(|c| c.trim().trim_matches('`') == "__op") {
                return refuse(&mut log, format!("columns without __op: {columns}"));
            }
            let path: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
            let Some(known) = path.get(2).and_then(|table| log.tables.get(*table)).cloned() else {
                return refuse(&mut log, format!("no such table: {}", request.path));
            };
            // As StarRocks: a load naming a column the table lacks fails whole.
            let unknown: Vec<&str> = columns
                .split(',')
                .map(|c| c.trim().trim_matches('`'))
                .filter(|c| *c != "__op" && !known.contains(&c.to_lowercase()))
                .collect();
            if !unknown.is_empty() {
                log.unknown_columns.push(unknown.join(","));
                return Response::json(
                    200,
                    json!({"Status": "Fail", "Message": format!("Unknown column '{}' in the table", unknown[0])}),
                );
            }
            let label = label.to_string();
            if log.labels.contains(&label) {
                log.label_exists += 1;
                return Response::json(
                    200,
                    json!({"Status": "Label Already Exists", "ExistingJobStatus": "FINISHED", "Label": label, "Message": "Label has already been used."}),
                );
            }
            // A third of the failures loads the rows and loses the answer: the retry meets its label.
            let failure = {
                let mut dice = dice.lock().expect("dice");
                dice.roll(fail_ratio).then(|| dice.kind(3))
            };
            match failure {
                Some(0) => {
                    log.failures += 1;
                    return Response::text(500, "injected: BE overloaded");
                }
                Some(1) => {
                    log.failures += 1;
                    return Response::json(
                        200,
                        json!({"Status": "Fail", "Label": label, "Message": "injected: tablet writer busy"}),
                    );
                }
                _ => {}
            }
            let Ok(Value::Array(rows)) = serde_json::from_slice::<Value>(&request.body) else {
                return refuse(&mut log, "the body is not a JSON array".into());
            };
            let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
            let [_, database, table, _] = parts[..] else {
                return refuse(&mut log, format!("path {}", request.path));
            };
            let count = rows.len();
            log.labels.insert(label.clone());
            log.loads.push(Load {
                label: label.clone(),
                database: database.to_string(),
                table: table.to_string(),
                partial: request.header("partial_update") == Some("true"),
                rows,
            });
            // The first load's answer is always lost, so that every run meets a label again.
            if failure.is_some() || log.loads.len() == 1 {
                log.failures += 1;
                return Response::text(502, "injected: the answer was lost");
            }
            Response::json(
                200,
                json!({"TxnId": log.loads.len(), "Label": label, "Status": "Success", "Message": "OK",
                       "NumberTotalRows": count, "NumberLoadedRows": count, "NumberFilteredRows": 0}),
            )
        }));
        let schemas = log.clone();
        let fe = serve(Arc::new(move |request: &Request| {
            if request.header("authorization") != Some(auth.as_str()) {
                return Response::json(401, json!({"Status": "Fail", "Message": "Access denied"}));
            }
            // GET /api/{db}/{table}/_schema, answered as StarRocks' TableSchemaAction does.
            if request.method == "GET" && request.path.ends_with("/_schema") {
                let path: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
                let log = schemas.lock().expect("log");
                return match path.get(2).and_then(|table| log.tables.get(*table)) {
                    Some(columns) => Response::json(
                        200,
                        json!({"status": 200, "properties": columns.iter()
                            .map(|c| json!({"name": c, "type": "VARCHAR", "comment": ""})).collect::<Vec<_>>()}),
                    ),
                    None => Response::json(404, json!({"status": 404, "exception": "Table does not exists"})),
                };
            }
            let mut response = Response::text(307, "");
            response.headers.push(("Location".into(), format!("http://{be}{}", request.path)));
            response
        }));
        FakeStarRocks { url: format!("starrocks://{user}:{password}@{fe}/{database}"), log }
    }

    /// Creates (or alters) `table` with `columns` in the fake's database.
    pub fn table(&self, table: &str, columns: &[&str]) {
        let columns = columns.iter().map(|c| c.to_lowercase()).collect();
        self.log.lock().expect("log").tables.insert(table.to_string(), columns);
    }

    /// The column lists of loads refused for naming a column their table lacks.
    pub fn unknown_columns(&self) -> Vec<String> {
        self.log.lock().expect("log").unknown_columns.clone()
    }

    /// The loads taken, in order.
    pub fn loads(&self) -> Vec<Load> {
        self.log.lock().expect("log").loads.clone()
    }

    /// (requests, injected failures, `Label Already Exists` answers, refusals).
    pub fn counts(&self) -> (usize, usize, usize, Vec<String>) {
        let log = self.log.lock().expect("log");
        (log.requests, log.failures, log.label_exists, log.refused.clone())
    }
}

/// Base64 for the Basic credentials the fake expects.
mod base64_basic {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
