//! The form that creates a job. The script sends it to `POST /api/v1/jobs`
//! and starts the job, so a job made here is the same as one made by the
//! API or the CLI, checked by the same rules.
//!
//! Invariants: the form renders no value that came from a stored job (a
//! URL typed here goes to the API and is never shown back); defaults are
//! the configuration's own (`config::default_*`).

use maud::{Markup, html};

use crate::config;

/// The snapshot modes and strategies a job can take, in the README's order.
const SNAPSHOT_MODES: [&str; 4] = ["initial", "initial_only", "when_needed", "never"];
const SNAPSHOT_STRATEGIES: [&str; 2] = ["chunked", "exported"];

pub fn create_form() -> Markup {
    let mode = config::default_snapshot_mode();
    let strategy = config::default_snapshot_strategy();
    html! {
        h1 { "New job" }
        form #create-job.create {
            fieldset {
                legend { "Source and sink" }
                label { "Name " input name="name" required placeholder="orders_to_warehouse"; }
                label { "Source URL " input name="source_url" type="password" required placeholder="postgres://user:password@host:5432/db or mysql://…"; }
                label { "Sink URL " input name="sink_url" type="password" required placeholder="postgres://…, https://…, starrocks://…, stdout://"; }
                label { "Tables " input name="tables" placeholder="public.orders, public.items (empty: every table)"; }
            }
            fieldset {
                legend { "Settings" }
                label { "Batch size " input name="batch_size" type="number" min="1" value=(config::default_batch_size()); }
                label { "Flush interval (ms) " input name="flush_interval_ms" type="number" min="1" value=(config::default_flush_interval_ms()); }
                label { "Snapshot mode "
                    select name="snapshot_mode" {
                        @for choice in SNAPSHOT_MODES { option value=(choice) selected[choice == mode] { (choice) } }
                    }
                }
                label { "Snapshot strategy "
                    select name="snapshot_strategy" {
                        @for choice in SNAPSHOT_STRATEGIES { option value=(choice) selected[choice == strategy] { (choice) } }
                    }
                }
                p.hint { "The slot and the publication are named after the job." }
            }
            button type="submit" { "Create and start" }
        }
    }
}
