//! Named datasources, their tables, and the preflight of a job before it
//! is created:
//!
//! ```text
//!  GET    /api/v1/datasources                 every datasource, its URL redacted
//!  POST   /api/v1/datasources                 {"name":..,"role":"source"|"sink","url":..} -> 201
//!  DELETE /api/v1/datasources/{name}
//!  GET    /api/v1/datasources/{name}/tables   a source's tables with estimated rows
//!  POST   /api/v1/check                       a job definition -> {"findings": [{"level","text"}], "errors": n}
//! ```
//!
//! A job definition (here and in `POST /api/v1/jobs`) may name a datasource
//! as `"source"` or `"sink"` instead of giving `source_url` or `sink_url`:
//! the server puts the saved URL in ([`definition`]).
//!
//! Invariants: a datasource's URL is checked by its role's registry before
//! it is saved; no answer carries a saved URL's password.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::api::{Reply, error, reply, store_error};
use crate::job::spec::{JobDefinition, JobSpec, Naming};
use crate::job::store::{Datasource, Role, Store};
use crate::sink::SinkTarget;
use crate::source::SourceTarget;

pub async fn list(store: &Store) -> Reply {
    match store.datasources().await {
        Ok(all) => reply(
            StatusCode::OK,
            &json!({ "datasources": all.iter().map(Datasource::redacted).collect::<Vec<_>>() }),
        ),
        Err(e) => store_error(&e),
    }
}

pub async fn create(store: &Store, body: &[u8]) -> Reply {
    let usage =
        "send {\"name\": \"orders_db\", \"role\": \"source\" or \"sink\", \"url\": \"postgres://...\"}";
    #[derive(serde::Deserialize)]
    struct Request {
        name: String,
        role: Role,
        url: String,
    }
    let request: Request = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("the datasource is not valid ({e}): {usage}"));
        }
    };
    if request.name.is_empty()
        || !request.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{:?} is not a datasource name: use letters, digits, '_' and '-'", request.name),
        );
    }
    let checked = match request.role {
        Role::Source => SourceTarget::parse(&request.url).map(drop),
        Role::Sink => SinkTarget::parse(&request.url).map(drop),
    };
    if let Err(e) = checked {
        return error(StatusCode::BAD_REQUEST, &format!("the {} URL: {e}", request.role.as_str()));
    }
    let datasource = Datasource { name: request.name, role: request.role, url: request.url };
    match store.create_datasource(&datasource).await {
        Ok(()) => reply(StatusCode::CREATED, &json!(datasource.redacted())),
        Err(e) => store_error(&e),
    }
}

pub async fn delete(store: &Store, name: &str) -> Reply {
    match store.delete_datasource(name).await {
        Ok(()) => reply(StatusCode::OK, &json!({ "deleted": name })),
        Err(e) => store_error(&e),
    }
}

/// A source datasource's tables, with the catalog's estimates.
pub async fn tables(store: &Store, name: &str) -> Reply {
    let datasource = match store.datasource(name).await {
        Ok(datasource) => datasource,
        Err(e) => return store_error(&e),
    };
    if datasource.role != Role::Source {
        return error(StatusCode::BAD_REQUEST, &format!("{name} is a sink: tables are listed for a source"));
    }
    let target = match SourceTarget::parse(&datasource.url) {
        Ok(target) => target,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the source URL of {name}: {e}")),
    };
    match target.offered_tables().await {
        Ok(tables) => reply(StatusCode::OK, &json!({ "datasource": name, "tables": tables })),
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("the tables of {name} could not be read: {e}")),
    }
}

/// `POST /api/v1/check`: the preflight of a job definition, not saved.
pub async fn check(app: &App, store: &Store, body: &[u8]) -> Reply {
    let definition = match definition(store, body).await {
        Ok(definition) => definition,
        Err(refused) => return refused.reply(),
    };
    let mut spec = match JobSpec::from_definition(&definition, Naming::Api) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if !spec.sink.holds_checkpoint() {
        // As a worker would run it: its checkpoint in this state store.
        spec.checkpoint_db = store.info().clone();
    }
    let Some(preflight) = &app.preflight else {
        return error(StatusCode::NOT_IMPLEMENTED, "this server runs no preflight: use walpipe check");
    };
    let findings = preflight(spec).await;
    let errors = findings.iter().filter(|f| f.level == crate::job::preflight::Level::Error).count();
    reply(StatusCode::OK, &json!({ "findings": findings, "errors": errors }))
}

/// Why a request's job definition was refused: the answer to send.
pub struct Refused(StatusCode, String);

impl Refused {
    pub fn reply(self) -> Reply {
        error(self.0, &self.1)
    }
}

fn bad(message: String) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message)
}

/// The job definition of a request body, with `"source"` and `"sink"`
/// datasource names replaced by their saved `source_url` and `sink_url`.
pub async fn definition(store: &Store, body: &[u8]) -> Result<JobDefinition, Refused> {
    let mut request: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not JSON ({e}): send a job definition")))?;
    let Some(fields) = request.as_object_mut() else {
        return Err(bad("the body is not a JSON object: send a job definition".into()));
    };
    for (role, url_field) in [(Role::Source, "source_url"), (Role::Sink, "sink_url")] {
        let Some(name) = fields.remove(role.as_str()) else { continue };
        let Some(name) = name.as_str() else {
            return Err(bad(format!("\"{}\" names a datasource: send a string", role.as_str())));
        };
        if fields.contains_key(url_field) {
            return Err(bad(format!("send either \"{}\" or \"{url_field}\", not both", role.as_str())));
        }
        let datasource = store.datasource(name).await.map_err(|e| bad(e.to_string()))?;
        if datasource.role != role {
            return Err(bad(format!(
                "{name} is a {} datasource, not a {}",
                datasource.role.as_str(),
                role.as_str()
            )));
        }
        fields.insert(url_field.to_string(), Value::String(datasource.url));
    }
    serde_json::from_value(request).map_err(|e| {
        bad(format!(
            "the job definition is not valid ({e}): send JSON with name, source_url (or source) and sink_url (or sink), and optional job settings"
        ))
    })
}
