//! The web console at `/`: the jobs page, a job's page and the form that
//! creates a job, served by `walpipe run` from the binary itself (no
//! Node.js, no files on disk).
//!
//! ```text
//!  GET  /                 every job: state, phase, worker, events/s, lag, WAL, idle and emit event time
//!  GET  /jobs/{name}      one job: indicators with their last hour, WAL gauge, copies, actions, history
//!  GET  /jobs/new         create a job
//!  GET  /login, POST /login, POST /logout   the token, when WALPIPE_API_TOKEN is set
//!  GET  /assets/console.js, /assets/console.css
//! ```
//!
//! A page's live part is the same URL with `?part=live`, which the script
//! fetches every 2 s. Actions and forms go to the control API (`api`).
//!
//! Invariants: with `WALPIPE_API_TOKEN` set, nothing but the login page and
//! the two assets answers without a session cookie (`session`): a page
//! redirects to the login, a live part answers 401; the console reads jobs
//! through `api::view`, so URLs are redacted as in the API; a
//! state-changing request needs the session's CSRF token and a same-origin
//! `Origin` (`super::same_origin`).

mod charts;
mod create_page;
mod job_page;
mod pages;
pub mod samples;
pub mod session;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use maud::Markup;

use super::{App, api};
use samples::{Sample, Samples};
use session::Sessions;

/// The console's state: its sessions and the jobs' last hour.
pub struct Console {
    pub sessions: Sessions,
    pub samples: Samples,
}

impl Console {
    pub fn new(token: Option<&str>) -> Console {
        Console { sessions: Sessions::new(token), samples: Samples::default() }
    }

    /// Whether an API request from the console's script is authorized: a
    /// session cookie with its CSRF token in the header.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let cookie = headers.get(hyper::header::COOKIE).and_then(|v| v.to_str().ok());
        let sent = headers.get(session::CSRF_HEADER).and_then(|v| v.to_str().ok());
        self.sessions
            .from_cookie_header(cookie)
            .is_some_and(|session| self.sessions.csrf_matches(&session, sent))
    }
}

/// Whether `path` is the console's.
pub fn serves(path: &str) -> bool {
    path == "/"
        || path == "/login"
        || path == "/logout"
        || path.starts_with("/jobs")
        || path.starts_with("/assets/")
}

pub async fn handle(request: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let live = request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair == "part=live"));
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/assets/console.js") => {
            return asset(include_str!("assets/console.js"), "text/javascript");
        }
        (&Method::GET, "/assets/console.css") => {
            return asset(include_str!("assets/console.css"), "text/css");
        }
        (&Method::GET, "/login") => {
            let next = query_value(request.uri().query(), "next").unwrap_or_else(|| "/".into());
            return html(StatusCode::OK, pages::login(&safe_next(&next), false), None);
        }
        (&Method::POST, "/login") => return login(request, app).await,
        (&Method::POST, "/logout") => return redirect("/login", Some(session::closed_cookie())),
        _ => {}
    }
    let cookie = request.headers().get(hyper::header::COOKIE).and_then(|v| v.to_str().ok());
    let (session, new_cookie) = match app.console.sessions.from_cookie_header(cookie) {
        Some(session) => (session, None),
        None if app.token.is_some() => {
            if live {
                return plain(StatusCode::UNAUTHORIZED, "log in again: the session ended");
            }
            return redirect(&format!("/login?next={}", encode(&path)), None);
        }
        // Without a token there is nothing to prove: a session is opened
        // only to carry the CSRF token.
        None => {
            let (session, cookie) = app.console.sessions.open();
            (session, Some(cookie))
        }
    };
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let Some(store) = app.store.get() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store is not reachable yet: see walpipe's log",
        );
    };
    let body = match path.trim_end_matches('/') {
        "" => {
            let workers = store.live_workers().await.unwrap_or(0);
            match store.list().await {
                Ok(jobs) => {
                    pages::jobs_live(&jobs.iter().map(|job| api::view(job, workers)).collect::<Vec<_>>())
                }
                Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        "/jobs/new" => match store.datasources().await {
            Ok(datasources) => create_page::create_page(&datasources),
            Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
        other => {
            let Some(name) = other.strip_prefix("/jobs/").map(decode) else {
                return plain(StatusCode::NOT_FOUND, "not found: the console's pages are / and /jobs/{name}");
            };
            let job = match store.get(&name).await {
                Ok(job) => job,
                Err(e) => return plain(StatusCode::NOT_FOUND, &e.to_string()),
            };
            let workers = store.live_workers().await.unwrap_or(0);
            let history = store.history(&name).await.unwrap_or_default();
            job_page::job_live(&api::view(&job, workers), &app.console.samples.indicators(&name), &history)
        }
    };
    if live {
        return html(StatusCode::OK, body, new_cookie);
    }
    let title = if path == "/" { "Jobs".to_string() } else { decode(path.trim_start_matches("/jobs/")) };
    let csrf = app.console.sessions.csrf(&session);
    html(StatusCode::OK, pages::page(&title, &csrf, app.token.is_some(), body), new_cookie)
}

/// `POST /login`: the token from the form opens a session.
async fn login(request: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    let form = match Limited::new(request.into_body(), 16 * 1024).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"),
    };
    let field = |name: &str| {
        url::form_urlencoded::parse(&form).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    };
    let next = safe_next(&field("next").unwrap_or_else(|| "/".into()));
    let Some(token) = &app.token else {
        return redirect(&next, None);
    };
    let given = field("token").unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes())) {
        return html(StatusCode::UNAUTHORIZED, pages::login(&next, true), None);
    }
    let (_, cookie) = app.console.sessions.open();
    redirect(&next, Some(cookie))
}

/// Samples every job's status into the console's last hour, forever.
pub async fn sample_jobs(app: Arc<App>) {
    let mut ticks = tokio::time::interval(samples::INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(store) = app.store.get() else { continue };
        let Ok(jobs) = store.list().await else { continue };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        for job in &jobs {
            let figure =
                |field: &str| job.status.get(field).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
            app.console.samples.record(
                &job.definition.name,
                Sample {
                    at_seconds: now.as_secs_f64(),
                    records: figure("records"),
                    bytes: figure("bytes"),
                    idle_seconds: figure("idle_seconds"),
                    emit_lag_seconds: figure("emit_lag_seconds"),
                },
            );
        }
        app.console.samples.retain(&jobs.iter().map(|job| job.definition.name.as_str()).collect::<Vec<_>>());
    }
}

/// A redirect target from a form or a query: a path of this site, never
/// another host (`//host`, `/\host`).
fn safe_next(next: &str) -> String {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local { next.to_string() } else { "/".into() }
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn html(status: StatusCode, markup: Markup, cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut response = respond(status, markup.into_string(), "text/html; charset=utf-8");
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(hyper::header::SET_COOKIE, cookie);
    }
    response
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut response = html(StatusCode::SEE_OTHER, maud::html! {}, cookie);
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(hyper::header::LOCATION, location);
    }
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, body.to_string(), content_type)
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, format!("{message}\n"), "text/plain; charset=utf-8")
}

fn respond(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn a_login_sends_back_only_to_this_site() {
        assert_eq!(safe_next("/jobs/orders"), "/jobs/orders");
        for elsewhere in ["//evil.example/x", "https://evil.example", "/\\evil.example", "jobs"] {
            assert_eq!(safe_next(elsewhere), "/", "{elsewhere}");
        }
    }
}
