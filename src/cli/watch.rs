//! `walpipe jobs watch NAME`: one job, redrawn in the terminal every second
//! until Ctrl-C: its state, the request pending, the live figures, copy
//! progress per table, tables waiting for a re-copy and the last error.
//!
//! Invariants: the view is whole on every redraw (the screen is cleared
//! first), so a terminal never shows figures of two moments; an API that
//! cannot be reached is shown in the view, not a reason to quit.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use super::jobs::{Api, text};

const EVERY: Duration = Duration::from_secs(1);

pub async fn watch(api: &Api, name: &str) -> anyhow::Result<()> {
    let colour = std::io::stdout().is_terminal();
    let path = format!("/api/v1/jobs/{name}");
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let view = match api.call(reqwest::Method::GET, &path, None).await {
            Ok(job) => render(&job, colour),
            Err(error) => format!("{name}: {error}\n"),
        };
        let now = chrono_free_time();
        let mut out = std::io::stdout().lock();
        // Home, clear: the whole view, every time.
        write!(out, "\x1b[H\x1b[2J{view}\nwalpipe jobs watch {name} · {now} · every 1 s · Ctrl-C to quit\n")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// The time of day, UTC, without a date crate: `12:04:05`.
fn chrono_free_time() -> String {
    let seconds =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", seconds / 3600 % 24, seconds / 60 % 60, seconds % 60)
}

/// The job as a screen.
pub fn render(job: &Value, colour: bool) -> String {
    let state = text(&job["state"]);
    let painted = match (colour, state.as_str()) {
        (false, _) => state.clone(),
        (true, "running" | "succeeded") => format!("\x1b[32m{state}\x1b[0m"),
        (true, "failed") => format!("\x1b[31m{state}\x1b[0m"),
        (true, "paused" | "stopped") => format!("\x1b[90m{state}\x1b[0m"),
        (true, _) => format!("\x1b[33m{state}\x1b[0m"),
    };
    let mut screen = format!("{}  {painted}", text(&job["name"]));
    if let Some(requested) = job["requested"].as_str() {
        screen.push_str(&format!("  (requested: {requested})"));
    }
    screen.push_str(&format!(
        "\nphase {}  worker {}  checkpoint {}\n\n",
        text(&job["phase"]),
        text(&job["worker"]),
        text(&job["checkpoint_lsn"])
    ));
    let figures = [
        ("records", "records"),
        ("bytes", "bytes"),
        ("events/s", "events_per_second"),
        ("lag bytes", "lag_bytes"),
        ("retained WAL bytes", "retained_wal_bytes"),
        ("safe_wal_size bytes", "safe_wal_size_bytes"),
        ("wal_status", "wal_status"),
        ("idle time s", "idle_seconds"),
        ("emit event time s", "emit_lag_seconds"),
    ];
    for (label, field) in figures {
        screen.push_str(&format!("  {label:<22} {}\n", text(&job[field])));
    }
    for table in job["snapshot"].as_array().into_iter().flatten() {
        let percent = table["percent"].as_f64().unwrap_or(0.0).clamp(0.0, 100.0);
        let filled = (percent / 5.0).round() as usize;
        screen.push_str(&format!(
            "\n  copy {:<28} [{}{}] {:>3.0}%  {}/{} rows  {} rows/s  ETA {} s",
            text(&table["table"]),
            "#".repeat(filled),
            ".".repeat(20 - filled),
            percent,
            text(&table["rows"]),
            text(&table["total"]),
            text(&table["rows_per_second"]),
            text(&table["eta_seconds"])
        ));
    }
    for table in job["needs_recopy"].as_array().into_iter().flatten() {
        screen.push_str(&format!(
            "\n  needs a re-copy: {}: {}",
            text(&table["table"]),
            text(&table["reason"])
        ));
    }
    for note in ["warning", "reason", "error"] {
        if let Some(note_text) = job[note].as_str() {
            screen.push_str(&format!("\n\n{note}: {note_text}"));
        }
    }
    screen.push('\n');
    screen
}

#[cfg(test)]
mod tests {
    use super::render;
    use serde_json::json;

    #[test]
    fn a_job_reads_as_one_screen() {
        let job = json!({
            "name": "orders", "state": "running", "requested": "pause", "phase": "streaming",
            "records": 1200, "lag_bytes": 4096,
            "snapshot": [{"table": "public.orders", "percent": 50.0, "rows": 5, "total": 10, "rows_per_second": 1, "eta_seconds": 5}],
            "error": null,
        });
        let screen = render(&job, false);
        assert!(screen.starts_with("orders  running  (requested: pause)"), "{screen}");
        assert!(screen.contains("[##########..........]  50%"), "{screen}");
        assert!(screen.contains("lag bytes"), "{screen}");
        assert!(!screen.contains("\x1b["), "no colour without a terminal: {screen}");
        assert!(render(&job, true).contains("\x1b[32mrunning"));
    }
}
