//! The API's edits of a job that take effect while it runs:
//!
//! ```text
//!  POST  /api/v1/jobs/{name}/snapshot   {"tables": ["public.orders", ...]}  copy tables again -> 202
//!  PATCH /api/v1/jobs/{name}            {"tables": "public.a, public.b"} (or a list)  -> 200
//! ```
//!
//! Invariants: a request is checked (names, membership of the job, a
//! definition that still holds) before the store records it; the running
//! job picks it up by revision (`job::store::edits`), so the answer does
//! not wait for a copy.

use serde_json::Value;

use super::api::{Reply, error, reply, store_error, view};
use crate::job::spec::{JobSpec, Naming};
use crate::job::store::Store;
use crate::names::{self, TableName};
use hyper::StatusCode;

/// `POST /api/v1/jobs/{name}/snapshot`: copies `tables` again while the job streams.
pub async fn copy_again(store: &Store, name: &str, body: &[u8]) -> Reply {
    let usage = "send {\"tables\": [\"schema.table\", ...]} naming tables of the job";
    let Some(listed) = tables_of(body) else {
        return error(StatusCode::BAD_REQUEST, &format!("the body names no tables: {usage}"));
    };
    let requested = match listed.iter().map(|t| TableName::parse(t)).collect::<Result<Vec<_>, _>>() {
        Ok(tables) => tables,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{e}: {usage}")),
    };
    let job = match store.get(name).await {
        Ok(job) => job,
        Err(e) => return store_error(&e),
    };
    // A job without a table list captures every table of its schemas: the job checks the names itself.
    if let Some(captured) = job.definition.tables.as_deref().and_then(|t| names::parse_list(t).ok()) {
        if let Some(stranger) = requested.iter().find(|t| !captured.contains(t)) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "{} is not one of the job's tables: add it with PATCH /api/v1/jobs/{name} (walpipe jobs edit), which copies it",
                    stranger.qualified()
                ),
            );
        }
    }
    let tables: Vec<String> = requested.iter().map(TableName::qualified).collect();
    match store.request_copies(name, &tables).await {
        Ok(job) => reply(StatusCode::ACCEPTED, &view(&job, store.live_workers().await.unwrap_or(0))),
        Err(e) => store_error(&e),
    }
}

/// `PATCH /api/v1/jobs/{name}`: replaces the job's tables. Added tables are
/// copied while the job streams; removed ones stop, their destinations stay.
pub async fn edit(store: &Store, name: &str, body: &[u8]) -> Reply {
    let usage = "send {\"tables\": \"schema.a, schema.b\"} or {\"tables\": [\"schema.a\", \"schema.b\"]}";
    let fields = serde_json::from_slice::<Value>(body).ok();
    if let Some(other) =
        fields.as_ref().and_then(Value::as_object).and_then(|o| o.keys().find(|k| *k != "tables"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "{other:?} cannot be edited on a job: only \"tables\" can; for other settings delete the job and create it again"
            ),
        );
    }
    let Some(tables) = tables_of(body).filter(|t| !t.is_empty()).map(|t| t.join(", ")) else {
        return error(StatusCode::BAD_REQUEST, &format!("the body names no tables: {usage}"));
    };
    let mut job = match store.get(name).await {
        Ok(job) => job,
        Err(e) => return store_error(&e),
    };
    if job.from_environment {
        return error(
            StatusCode::CONFLICT,
            "this job is defined by WALPIPE_* variables: change WALPIPE_TABLES and restart walpipe",
        );
    }
    job.definition.tables = Some(tables.clone());
    if let Err(e) = JobSpec::from_definition(&job.definition, Naming::Api) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    match store.edit_tables(name, &tables).await {
        Ok(job) => reply(StatusCode::OK, &view(&job, store.live_workers().await.unwrap_or(0))),
        Err(e) => store_error(&e),
    }
}

/// `"tables"` as a list of names, or a comma-separated string of them.
fn tables_of(body: &[u8]) -> Option<Vec<String>> {
    let tables = serde_json::from_slice::<Value>(body).ok()?.get("tables")?.clone();
    match tables {
        Value::String(list) => names::split_outside_quotes(&list, ',').ok(),
        Value::Array(items) => items.iter().map(|t| t.as_str().map(str::to_string)).collect(),
        _ => None,
    }
    .map(|names| names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
    .filter(|names: &Vec<String>| !names.is_empty())
}

#[cfg(test)]
mod tests {
    use super::tables_of;

    #[test]
    fn tables_come_as_a_list_or_a_comma_separated_string() {
        assert_eq!(tables_of(br#"{"tables": ["public.a", "\"Sales\".\"B, c\""]}"#).map(|t| t.len()), Some(2));
        assert_eq!(
            tables_of(br#"{"tables": "public.a, \"Sales\".\"B, c\""}"#),
            Some(vec!["public.a".to_string(), "\"Sales\".\"B, c\"".to_string()])
        );
        assert_eq!(tables_of(br#"{"tables": []}"#), None);
        assert_eq!(tables_of(br#"{"tables": [1]}"#), None);
        assert_eq!(tables_of(b"not json"), None);
    }
}
