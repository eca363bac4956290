//! The HTTP server on `WALPIPE_HTTP_ADDR`: `/metrics`, `/healthz`,
//! `/readyz`, the control API under `/api/v1` (docs/src/reference/http-api.md) and the web console at `/` (`console`).
//!
//! Invariants: it is bound before any job starts, so a taken address is a
//! start-up error rather than a silent absence of metrics; `/metrics`,
//! `/healthz` and `/readyz` answer from memory and are open (probes and
//! scrapers carry no token); the API answers 401 without the bearer token
//! (or the console's session and CSRF token) when `WALPIPE_API_TOKEN` is
//! set, and 503 until the state store is open; a request that changes
//! state from a page of another origin is refused; every answer carries
//! the security headers of [`SECURITY_HEADERS`].

pub mod api;
pub mod console;
mod datasources;
mod edits;
pub mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::job::preflight::Preflight;
use crate::job::store::Store;
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("WALPIPE_HTTP_ADDR={0:?} is not an address: use host:port, e.g. 127.0.0.1:9898")]
    BadAddress(String),
    #[error(
        "could not listen on WALPIPE_HTTP_ADDR={addr} ({source}): stop what uses it or set WALPIPE_HTTP_ADDR to a free address"
    )]
    Bind { addr: String, source: std::io::Error },
}

/// What the handlers share.
pub struct App {
    /// Set once the state store is open.
    pub store: OnceLock<Arc<Store>>,
    /// `WALPIPE_API_TOKEN`.
    pub token: Option<String>,
    pub console: console::Console,
    /// The preflight of `walpipe check`, for `POST /api/v1/check`.
    pub preflight: Option<Preflight>,
}

impl App {
    pub fn new(token: Option<String>, preflight: Option<Preflight>) -> App {
        App { store: OnceLock::new(), console: console::Console::new(token.as_deref()), token, preflight }
    }
}

/// Sent with every answer: no framing, no sniffing, no referrer to other
/// sites (`no-referrer` would make a browser send `Origin: null` on its own
/// forms, which [`same_origin`] refuses), nothing
/// cached, and pages that run only the console's own script and style.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
}

type Reply = Response<Full<Bytes>>;

impl Server {
    pub async fn bind(addr: &str) -> Result<Server, HttpError> {
        let parsed: SocketAddr = addr.parse().map_err(|_| HttpError::BadAddress(addr.to_string()))?;
        let listener = TcpListener::bind(parsed)
            .await
            .map_err(|source| HttpError::Bind { addr: addr.to_string(), source })?;
        Ok(Server { listener })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, app: Arc<App>) {
        let sampler = tokio::spawn(console::sample_jobs(app.clone()));
        let _stop_sampler = AbortOnDrop(sampler);
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!("the HTTP server could not accept a connection: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(route(request, &app).await) }
                });
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("an HTTP connection ended with an error: {error}");
                }
            });
        }
    }
}

/// Ends the console's sampler with the server.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn route(request: Request<Incoming>, app: &App) -> Reply {
    let mut response = if same_origin(&request) {
        dispatch(request, app).await
    } else {
        text(
            StatusCode::FORBIDDEN,
            "a request from a page of another site is refused: use walpipe's own console or the API without a browser\n",
        )
    };
    for (name, value) in SECURITY_HEADERS {
        response.headers_mut().insert(name, hyper::header::HeaderValue::from_static(value));
    }
    response
}

/// A request that can change state (anything but GET and HEAD) is refused
/// when a browser says it comes from a page of another origin. Clients
/// that send no `Origin` (curl, the CLI) are not browsers and pass.
fn same_origin(request: &Request<Incoming>) -> bool {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return true;
    }
    let header =
        |name| request.headers().get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
    match (header(hyper::header::ORIGIN), header(hyper::header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        }
        (Some(_), None) => false,
    }
}

async fn dispatch(request: Request<Incoming>, app: &App) -> Reply {
    let path = request.uri().path().to_string();
    if path.starts_with("/api/") {
        return api::handle(request, app).await;
    }
    if console::serves(&path) {
        return console::handle(request, app).await;
    }
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match path.as_str() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, &metrics::global().render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(),
        _ => text(StatusCode::NOT_FOUND, "not found: try /, /metrics, /healthz, /readyz or /api/v1/jobs\n"),
    }
}

/// 200 when every job is running and connected, or intentionally not
/// running; 503 naming the jobs that are not.
fn readiness() -> Reply {
    let not_ready: Vec<String> = metrics::global()
        .jobs()
        .iter()
        .filter(|job| !job.ready())
        .map(|job| {
            let (state, phase) = job.status.state();
            match phase {
                Some(phase) => format!("{}: {state} ({}), not connected", job.name, phase.as_str()),
                None => format!("{}: {state}", job.name),
            }
        })
        .collect();
    if not_ready.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {}\n", not_ready.join("; ")))
    }
}

fn text(status: StatusCode, body: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
