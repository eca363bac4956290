//! The control API, JSON over HTTP: the handlers of the endpoints that
//! `routes::ENDPOINTS` lists (and the HTTP reference shows).
//!
//! Invariants: errors are JSON `{"error": "<one sentence with the fix>"}`;
//! an action the state does not allow is 409 with `state` and
//! `allowed_actions`; passwords in job URLs are never shown.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::routes::{self, Route};
use super::{App, datasources, edits};
use crate::job::runner;
use crate::job::spec::{JobSpec, Naming};
use crate::job::store::{JobRow, Store, StoreError};
use crate::lifecycle::{self, Action, State};

/// Request bodies are job definitions: small.
const MAX_BODY: usize = 1024 * 1024;

pub type Reply = Response<Full<Bytes>>;

pub async fn handle(request: Request<Incoming>, app: &App) -> Reply {
    if let Some(token) = &app.token {
        let sent = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        let bearer = sent.is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(expected.as_bytes())));
        if !bearer && !app.console.authorizes(request.headers()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send the header Authorization: Bearer <WALPIPE_API_TOKEN>",
            );
        }
    }
    let Some(store) = app.store.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store is not reachable yet: see walpipe's log",
        );
    };
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let Some(endpoint) = routes::route(&method, &parts) else {
        return error(StatusCode::NOT_FOUND, "no such endpoint: see /api/v1/jobs");
    };
    // The segment after the collection: a job's or a datasource's name.
    let name = parts.get(3).copied().unwrap_or_default();
    match endpoint {
        Route::ListJobs => list(store).await,
        Route::CreateJob => match body(request).await {
            Ok(body) => create(store, &body).await,
            Err(reply) => reply,
        },
        Route::ListDatasources => datasources::list(store).await,
        Route::CreateDatasource => match body(request).await {
            Ok(body) => datasources::create(store, &body).await,
            Err(reply) => reply,
        },
        Route::DeleteDatasource => datasources::delete(store, name).await,
        Route::DatasourceTables => datasources::tables(store, name).await,
        Route::Check => match body(request).await {
            Ok(body) => datasources::check(app, store, &body).await,
            Err(reply) => reply,
        },
        Route::ShowJob => show(store, name).await,
        Route::DeleteJob => delete(store, name).await,
        Route::JobHistory => match store.history(name).await {
            Ok(instances) => match store.get(name).await {
                Ok(_) => reply(StatusCode::OK, &json!({ "job": name, "instances": instances })),
                Err(e) => store_error(&e),
            },
            Err(e) => store_error(&e),
        },
        Route::CopyAgain => match body(request).await {
            Ok(body) => edits::copy_again(store, name, &body).await,
            Err(reply) => reply,
        },
        Route::EditJob => match body(request).await {
            Ok(body) => edits::edit(store, name, &body).await,
            Err(reply) => reply,
        },
        Route::Act => {
            let name = name.to_string();
            let action = parts.get(4).copied().unwrap_or_default();
            let Some(action) = Action::parse(action).filter(|a| *a != Action::Delete) else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("{action:?} is not an action: use start, pause, resume, stop, restart or retry"),
                );
            };
            let wait = match wait_from_query(&query) {
                Ok(wait) => wait,
                Err(message) => return error(StatusCode::BAD_REQUEST, &message),
            };
            match body(request).await {
                Ok(body) => act(store, &name, action, &body, wait).await,
                Err(reply) => reply,
            }
        }
    }
}

async fn body(request: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large (at most 1 MiB)")),
    }
}

async fn list(store: &Store) -> Reply {
    let workers = store.live_workers().await.unwrap_or(0);
    match store.list().await {
        Ok(jobs) => reply(
            StatusCode::OK,
            &json!({ "jobs": jobs.iter().map(|j| view(j, workers)).collect::<Vec<_>>() }),
        ),
        Err(e) => store_error(&e),
    }
}

async fn show(store: &Store, name: &str) -> Reply {
    let workers = store.live_workers().await.unwrap_or(0);
    match store.get(name).await {
        Ok(job) => reply(StatusCode::OK, &view(&job, workers)),
        Err(e) => store_error(&e),
    }
}

async fn create(store: &Store, body: &[u8]) -> Reply {
    let definition = match datasources::definition(store, body).await {
        Ok(definition) => definition,
        Err(refused) => return refused.reply(),
    };
    if let Err(e) = JobSpec::from_definition(&definition, Naming::Api) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    match store.create(&definition).await {
        Ok(job) => reply(StatusCode::CREATED, &view(&job, store.live_workers().await.unwrap_or(0))),
        Err(e) => store_error(&e),
    }
}

/// How long an action's call waits for its state by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// At most this long, whatever `?wait=` asks.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// How often a waiting call looks at the job again.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// `?wait=10s` (also `500ms`, `0`): how long to wait for the action's state.
fn wait_from_query(query: &str) -> Result<Duration, String> {
    let Some(text) = query.split('&').find_map(|pair| pair.strip_prefix("wait=")) else {
        return Ok(DEFAULT_WAIT);
    };
    let bad = || format!("wait={text:?} is not a duration: use for instance wait=10s, wait=500ms or wait=0");
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, Duration::from_millis(1)),
        None => (text.strip_suffix('s').unwrap_or(text), Duration::from_secs(1)),
    };
    let count: u32 = number.parse().map_err(|_| bad())?;
    Ok(unit.saturating_mul(count).min(MAX_WAIT))
}

/// Applies `action`, then waits up to `wait` for the job to reach its state:
/// 200 with the state reached, or 202 with the request still pending.
async fn act(store: &Store, name: &str, action: Action, body: &[u8], wait: Duration) -> Reply {
    let cleanup = if body.is_empty() {
        false
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(options) => options["cleanup"].as_bool().unwrap_or(false),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not JSON ({e}): send {{\"cleanup\": true}} or nothing"),
                );
            }
        }
    };
    if let Err(e) = store.act(name, action, cleanup).await {
        return store_error(&e);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let job = match store.get(name).await {
            Ok(job) => job,
            Err(e) => return store_error(&e),
        };
        let done = lifecycle::reached(action, job.state) && job.requested.is_none();
        if done || tokio::time::Instant::now() >= deadline {
            let status = if done { StatusCode::OK } else { StatusCode::ACCEPTED };
            return reply(status, &view(&job, store.live_workers().await.unwrap_or(0)));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

async fn delete(store: &Store, name: &str) -> Reply {
    let job = match store.act(name, Action::Delete, false).await {
        Ok(job) => job,
        Err(e) => return store_error(&e),
    };
    let naming = if job.from_environment { Naming::Environment } else { Naming::Api };
    if let Ok(spec) = JobSpec::from_definition(&job.definition, naming) {
        if let Err(e) = runner::drop_slot_and_publication(&spec).await {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the job was not deleted: dropping its slot and publication on the source failed ({e}); try again"
                ),
            );
        }
    }
    match store.remove(name).await {
        Ok(()) => reply(StatusCode::OK, &json!({ "deleted": name })),
        Err(e) => store_error(&e),
    }
}

/// The fields of a job's status (its worker's metrics summary) the API shows.
pub const STATUS_FIELDS: [&str; 12] = [
    "records",
    "bytes",
    "events_per_second",
    "lag_bytes",
    "retained_wal_bytes",
    "safe_wal_size_bytes",
    "max_slot_wal_keep_size_bytes",
    "wal_status",
    "idle_seconds",
    "emit_lag_seconds",
    "snapshot",
    "needs_recopy",
];

/// A job as the API shows it: the store's row, its worker's last status, and why it waits.
pub fn view(job: &JobRow, live_workers: i64) -> Value {
    let mut shown = json!({
        "name": job.definition.name,
        "state": job.state.as_str(),
        "phase": job.phase,
        "error": job.error,
        "worker": job.worker_id,
        "allowed_actions": lifecycle::allowed_actions(job.state).iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "requested": job.requested.map(Action::as_str),
        "checkpoint_lsn": job.checkpoint_lsn,
        "from_environment": job.from_environment,
        "definition": job.definition.redacted(),
        "copy_requests": job.copy_requests,
        "revision": job.revision,
    });
    for field in STATUS_FIELDS {
        shown[field] = job.status.get(field).cloned().unwrap_or(Value::Null);
    }
    if job.state == State::Pending && !job.leased {
        shown["reason"] = json!(if live_workers == 0 {
            "no live worker: start `walpipe run` with WALPIPE_STATE_URL pointing at this state store"
                .to_string()
        } else {
            format!("waiting for one of {live_workers} live workers to claim it (within a few seconds)")
        });
    }
    if job.state == State::Paused {
        let retained = job.status.get("retained_wal_bytes").and_then(Value::as_i64).unwrap_or(0);
        shown["warning"] = json!(format!(
            "paused: the slot retains {} MB of WAL on the source, and it grows until the job is resumed or stopped",
            retained / 1_000_000
        ));
    }
    shown
}

pub fn store_error(e: &StoreError) -> Reply {
    match e {
        StoreError::NotFound(_) | StoreError::NoDatasource(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
        StoreError::Exists(_) | StoreError::DatasourceExists(_) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        StoreError::Refused(refused) => reply(
            StatusCode::CONFLICT,
            &json!({
                "error": refused.to_string(),
                "state": refused.state.as_str(),
                "allowed_actions": refused.allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            }),
        ),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

pub fn error(status: StatusCode, message: &str) -> Reply {
    reply(status, &json!({ "error": message }))
}

pub fn reply(status: StatusCode, body: &Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}
