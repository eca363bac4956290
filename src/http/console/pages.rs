//! The console's page frame, the login page and the jobs page, rendered on
//! the server from the API's own view of each job (`api::view`), so the
//! console shows what the API shows and nothing more: URLs arrive redacted.
//!
//! Invariants: every value is escaped by maud; no inline script or style
//! (the Content-Security-Policy forbids both); the live part of a page is
//! one element, `#live`, which the script replaces with the same part
//! rendered again (`?part=live`).

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::charts::bytes_text;

/// A whole page: the frame around `body`. `csrf` is the session's token for
/// the script; `logout` shows the logout button (only with a token).
pub fn page(title: &str, csrf: &str, logout: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(csrf);
                title { (title) " · walpipe" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "walpipe" }
                    nav {
                        a href="/" { "Jobs" }
                        a href="/jobs/new" { "New job" }
                        @if logout {
                            form method="post" action="/logout" { button.link type="submit" { "Log out" } }
                        }
                    }
                    label.refresh { input #autorefresh type="checkbox" checked; " live" }
                }
                main {
                    div #message role="alert" hidden {}
                    (body)
                }
            }
        }
    }
}

/// The token form. `failed`: the last try was wrong.
pub fn login(next: &str, failed: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in · walpipe" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                main.login {
                    h1 { "walpipe" }
                    form method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token (WALPIPE_API_TOKEN)" }
                        input #token type="password" name="token" autocomplete="current-password" autofocus required;
                        button type="submit" { "Log in" }
                    }
                    @if failed {
                        p.error role="alert" { "That is not the token: use the value of WALPIPE_API_TOKEN that this walpipe was started with." }
                    }
                }
            }
        }
    }
}

/// The jobs page's live part: one row per job.
pub fn jobs_live(jobs: &[Value]) -> Markup {
    html! {
        div #live {
            @if jobs.is_empty() {
                p.empty { "No jobs yet. " a href="/jobs/new" { "Create one" } ", or start walpipe with WALPIPE_SOURCE_URL and WALPIPE_SINK_URL." }
            } @else {
                table.jobs {
                    thead { tr {
                        th { "Job" } th { "State" } th { "Phase" } th { "Worker" } th.num { "Events/s" }
                        th.num { "Lag" } th.num { "Retained WAL" } th { "wal_status" } th.num { "Idle time" } th.num { "Emit event time" }
                    } }
                    tbody {
                        @for job in jobs {
                            @let name = text(&job["name"]);
                            tr data-job=(name) {
                                td { a href=(job_href(&name)) { (name) } }
                                td { (state_badge(job)) }
                                td { (text(&job["phase"])) }
                                td { (text(&job["worker"])) }
                                td.num { (number(&job["events_per_second"])) }
                                td.num.lag { (bytes(&job["lag_bytes"])) }
                                td.num { (bytes(&job["retained_wal_bytes"])) }
                                td { (text(&job["wal_status"])) }
                                td.num { (seconds(&job["idle_seconds"])) }
                                td.num { (seconds(&job["emit_lag_seconds"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A job's state as a coloured word, with the request still pending.
pub fn state_badge(job: &Value) -> Markup {
    let state = text(&job["state"]);
    html! {
        span class={"state state-" (state)} { (state) }
        @if let Some(requested) = job["requested"].as_str() {
            " " span.requested title="requested, not reached yet" { "→ " (requested) "…" }
        }
    }
}

/// The path of a job's page.
pub fn job_href(name: &str) -> String {
    format!("/jobs/{}", percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC))
}

/// A JSON value as text; empty for null.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A number with thousands separators; `–` for null.
pub fn number(value: &Value) -> String {
    let Some(number) = value.as_f64() else { return "–".into() };
    let whole = number.trunc().abs() as u64;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let fraction = number.fract().abs();
    let sign = if number < 0.0 { "-" } else { "" };
    if fraction >= 0.05 {
        format!("{sign}{grouped}.{:.0}", fraction * 10.0)
    } else {
        format!("{sign}{grouped}")
    }
}

/// Bytes in binary units; `–` for null.
pub fn bytes(value: &Value) -> String {
    value.as_f64().map_or_else(|| "–".into(), bytes_text)
}

/// Seconds, to the tenth below a minute; `–` for null.
pub fn seconds(value: &Value) -> String {
    let Some(seconds) = value.as_f64() else { return "–".into() };
    match seconds {
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0),
        s => format!("{:.0} h {:.0} min", (s / 3600.0).floor(), (s % 3600.0) / 60.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_read_as_a_person_would_write_them() {
        assert_eq!(number(&json!(1234567)), "1,234,567");
        assert_eq!(number(&json!(12.5)), "12.5");
        assert_eq!(number(&json!(null)), "–");
        assert_eq!(seconds(&json!(75)), "1 min 15 s");
        assert_eq!(seconds(&json!(0.25)), "0.2 s");
        assert_eq!(bytes(&json!(2048)), "2.0 KiB");
    }

    #[test]
    fn the_jobs_table_escapes_what_it_shows() {
        let job = json!({"name": "<b>x</b>", "state": "running", "requested": "pause"});
        let shown = jobs_live(&[job]).into_string();
        assert!(!shown.contains("<b>x</b>"), "{shown}");
        assert!(shown.contains("state-running"), "{shown}");
        assert!(shown.contains("→ pause"), "{shown}");
        assert!(shown.contains("href=\"/jobs/%3Cb%3Ex%3C%2Fb%3E\""), "{shown}");
    }
}
