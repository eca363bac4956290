//! One job's page: the six live indicators with their last hour, retained
//! WAL against the cap, copy progress, tables waiting for a re-copy, the
//! last error, the actions the state allows, and the history of runs.
//!
//! Invariants: a button is shown for an action only when the job's state
//! allows it (`allowed_actions` of the API view); a destructive action
//! carries the question the script asks before sending it; a request not
//! reached yet is shown as such, beside the state the job is in.

use maud::{Markup, html};
use serde_json::Value;

use super::charts::{sparkline, wal_gauge};
use super::pages::{bytes, number, seconds, state_badge, text};
use super::samples::Indicators;
use crate::job::store::Instance;

/// The question asked before a destructive action.
fn confirmation(action: &str, job: &str) -> Option<String> {
    match action {
        "stop" => Some(format!("Stop {job}? It stops streaming; its slot stays and retains WAL.")),
        "restart" => Some(format!("Restart {job}? Its worker disconnects and starts again.")),
        "delete" => Some(format!(
            "Delete {job}? Its slot and publication are dropped on the source; the destination tables stay."
        )),
        _ => None,
    }
}

/// The page's live part.
pub fn job_live(job: &Value, indicators: &Indicators, history: &[Instance]) -> Markup {
    let name = text(&job["name"]);
    let last = |series: &[f64]| series.last().copied().map_or(Value::Null, Value::from);
    html! {
        div #live data-job=(name) {
            h1 { (name) " " (state_badge(job)) }
            p.meta {
                "phase " b { (text(&job["phase"])) } " · worker " b { (text(&job["worker"])) }
                " · checkpoint " b { (text(&job["checkpoint_lsn"])) }
            }
            @if let Some(requested) = job["requested"].as_str() {
                p.pending { "Requested: " b { (requested) } ". The job is " (text(&job["state"])) " until its worker acts." }
            }
            @for note in [&job["reason"], &job["warning"]] {
                @if let Some(note) = note.as_str() { p.warning { (note) } }
            }
            @if let Some(error) = job["error"].as_str() {
                section.error-box { h2 { "Last error" } p.error { (error) } }
            }
            section.indicators {
                (indicator("Idle time", &seconds(&job["idle_seconds"]), &indicators.idle_seconds))
                (indicator("Emit event time", &seconds(&job["emit_lag_seconds"]), &indicators.emit_lag_seconds))
                (indicator("Records", &number(&job["records"]), &indicators.records))
                (indicator("Bytes", &bytes(&job["bytes"]), &indicators.bytes))
                (indicator("Records/s", &number(&last(&indicators.records_per_second)), &indicators.records_per_second))
                (indicator("Bytes/s", &bytes(&last(&indicators.bytes_per_second)), &indicators.bytes_per_second))
            }
            section {
                h2 { "WAL" }
                p { "lag " b.lag { (bytes(&job["lag_bytes"])) } " · wal_status " b { (text(&job["wal_status"])) }
                    " · safe_wal_size " b { (bytes(&job["safe_wal_size_bytes"])) } }
                (wal_gauge(
                    job["retained_wal_bytes"].as_f64().unwrap_or(0.0),
                    job["safe_wal_size_bytes"].as_f64(),
                    job["max_slot_wal_keep_size_bytes"].as_f64(),
                ))
            }
            (copies(job))
            (actions(job, &name))
            (runs(history))
        }
    }
}

fn indicator(label: &str, value: &str, series: &[f64]) -> Markup {
    html! {
        div.indicator {
            span.label { (label) }
            span.value { (value) }
            (sparkline(series))
        }
    }
}

fn copies(job: &Value) -> Markup {
    let tables = job["snapshot"].as_array().cloned().unwrap_or_default();
    let marked = job["needs_recopy"].as_array().cloned().unwrap_or_default();
    html! {
        @if !tables.is_empty() {
            section {
                h2 { "Copy" }
                table.copies {
                    thead { tr { th { "Table" } th.num { "Rows" } th { "Progress" } th.num { "Rows/s" } th.num { "ETA" } } }
                    tbody {
                        @for table in &tables {
                            tr {
                                td { (text(&table["table"])) }
                                td.num { (number(&table["rows"])) " / " (number(&table["total"])) }
                                td { progress max="100" value=(table["percent"].as_f64().unwrap_or(0.0)) {} " " (number(&table["percent"])) "%" }
                                td.num { (number(&table["rows_per_second"])) }
                                td.num { (seconds(&table["eta_seconds"])) }
                            }
                        }
                    }
                }
            }
        }
        @if !marked.is_empty() {
            section {
                h2 { "Tables that need a re-copy" }
                ul.recopy {
                    @for table in &marked { li { b { (text(&table["table"])) } ": " (text(&table["reason"])) } }
                }
            }
        }
    }
}

fn actions(job: &Value, name: &str) -> Markup {
    let allowed: Vec<String> = job["allowed_actions"].as_array().into_iter().flatten().map(text).collect();
    let editable = !job["from_environment"].as_bool().unwrap_or(false);
    html! {
        section.actions {
            h2 { "Actions" }
            div.buttons {
                @for action in &allowed {
                    button type="button" data-action=(action) data-confirm=[confirmation(action, name)] { (action) }
                    @if action == "stop" {
                        button type="button" data-action="stop" data-cleanup="true"
                            data-confirm=(format!("Stop {name} and clean up? Its slot and publication are dropped: a later start copies again.")) {
                            "stop and clean up"
                        }
                    }
                }
            }
            form.edit data-edit="snapshot" {
                label { "Copy tables again " input name="tables" placeholder="public.orders, public.items" required; }
                button type="submit" { "copy again" }
            }
            @if editable {
                form.edit data-edit="tables" {
                    label { "Tables " input name="tables" value=(text(&job["definition"]["tables"])) required; }
                    button type="submit" { "set tables" }
                }
            } @else {
                p.hint { "Defined by WALPIPE_* variables: change WALPIPE_TABLES and restart walpipe to add or remove tables." }
            }
        }
    }
}

fn runs(history: &[Instance]) -> Markup {
    html! {
        section {
            h2 { "History" }
            table.history {
                thead { tr { th { "Started" } th { "Worker" } th.num { "Duration" } th { "Status" } th.num { "Records" } th { "Error" } } }
                tbody {
                    @for run in history {
                        tr {
                            td { (run.started_at) } td { (run.worker) }
                            td.num { (seconds(&Value::from(run.duration_seconds))) }
                            td { span class={"state state-" (run.status.replace(' ', "-"))} { (run.status) } }
                            td.num { (number(&Value::from(run.records))) }
                            td { (run.error.as_deref().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_allowed_actions_are_buttons_and_destructive_ones_ask() {
        let job =
            json!({"name": "orders", "state": "paused", "allowed_actions": ["resume", "stop", "restart"]});
        let shown = job_live(&job, &Indicators::default(), &[]).into_string();
        for action in ["resume", "stop", "restart"] {
            assert!(shown.contains(&format!("data-action=\"{action}\"")), "{action}: {shown}");
        }
        assert!(!shown.contains("data-action=\"pause\""), "{shown}");
        assert!(shown.contains("data-cleanup=\"true\""), "{shown}");
        assert!(!shown.contains("data-action=\"resume\" data-confirm"), "resume asks nothing: {shown}");
        assert!(shown.contains("Stop orders?"), "{shown}");
    }

    #[test]
    fn a_request_not_reached_yet_shows_beside_the_state() {
        let job =
            json!({"name": "orders", "state": "pausing", "requested": "pause", "allowed_actions": ["stop"]});
        let shown = job_live(&job, &Indicators::default(), &[]).into_string();
        assert!(shown.contains("state-pausing"), "{shown}");
        assert!(shown.contains("→ pause…"), "{shown}");
        assert!(shown.contains("Requested: <b>pause</b>"), "{shown}");
    }
}
