//! The reference pages of the documentation (`docs/src/reference/`),
//! generated from the code: the configuration from `config::VARIABLES` and
//! the defaults of an empty environment, the metrics from the families the
//! registry holds, the HTTP API from `http::routes::ENDPOINTS`.
//! `tests/docs.rs` fails when a committed page differs from these.

use crate::config::{self, ConfigError};
use crate::http::routes::ENDPOINTS;
use crate::metrics;

const GENERATED: &str = "<!-- Generated from the code by tests/docs.rs (WALPIPE_UPDATE_DOCS=1 cargo test --test docs); do not edit. -->";

/// Each page: its file name in `docs/src/reference/` and its text.
pub fn pages() -> Result<Vec<(&'static str, String)>, ConfigError> {
    Ok(vec![("configuration.md", configuration()?), ("metrics.md", metrics()), ("http-api.md", http_api())])
}

/// A table cell: pipes escaped, one line.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn configuration() -> Result<String, ConfigError> {
    let mut page = format!(
        "{GENERATED}\n\n# Configuration\n\nwalpipe reads its settings from environment variables. Every `WALPIPE_*` \
         variable must be one of these: a misspelt one is an error, not a silent default. The job variables \
         (`WALPIPE_SOURCE_URL` to `WALPIPE_HEARTBEAT_INTERVAL_MS`) define the environment's job; the API and the \
         console take the same names in lower case.\n\n| variable | value | default | what it does |\n|---|---|---|---|\n"
    );
    for variable in config::reference()? {
        let default = variable.default.map_or_else(|| "unset".to_string(), |d| format!("`{d}`"));
        page.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            variable.variable,
            variable.takes,
            cell(&default),
            cell(variable.about)
        ));
    }
    Ok(page)
}

fn metrics() -> String {
    let mut page = format!(
        "{GENERATED}\n\n# Metrics\n\nServed at `/metrics` on `WALPIPE_HTTP_ADDR`, without a token. Names use base units; \
         counters end in `_total`; `job_name` labels everything job-related and `slot` labels slot metrics. A \
         state (`walpipe_job_state`, `walpipe_slot_wal_status`, ...) is a state-set: every value is exported, \
         exactly one is 1.\n\n| metric | type | labels | what it measures |\n|---|---|---|---|\n"
    );
    for family in metrics::global().families() {
        let kind = if family.buckets.is_some() {
            "histogram"
        } else if family.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let labels: Vec<String> = family.labels.iter().map(|label| format!("`{label}`")).collect();
        page.push_str(&format!(
            "| `{}` | {kind} | {} | {} |\n",
            family.name,
            labels.join(", "),
            cell(family.help)
        ));
    }
    page
}

fn http_api() -> String {
    let mut page = format!(
        "{GENERATED}\n\n# HTTP API\n\n`walpipe run` serves on `WALPIPE_HTTP_ADDR`: the console at `/`, `/metrics`, \
         `/healthz` (200 while the process runs), `/readyz` (200 when every job runs connected or is stopped on \
         purpose; 503 naming the others) and the control API below, JSON in and out. With `WALPIPE_API_TOKEN` \
         set, the API needs `Authorization: Bearer <token>`. An error is `{{\"error\": \"<one sentence with the fix>\"}}`; \
         an action the state does not allow is 409 with `state` and `allowed_actions`. Passwords in URLs are \
         never shown.\n\n| method | path | what it does |\n|---|---|---|\n"
    );
    for endpoint in &ENDPOINTS {
        page.push_str(&format!("| {} | `{}` | {} |\n", endpoint.method, endpoint.path, cell(endpoint.what)));
    }
    page
}
