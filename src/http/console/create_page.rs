//! The page that creates a job, as a portal does it: sources and sinks are
//! saved once as named datasources (their URLs stay on the server) and
//! chosen from a list; the source's tables load as checkboxes with their
//! estimated rows; the preflight (`POST /api/v1/check`) runs before the job
//! is created, and its findings are shown with their fixes.
//!
//! Invariants: the page renders datasources redacted, never a saved URL;
//! the script sends datasource names, which the server resolves; defaults
//! are the configuration's own (`config::default_*`).

use maud::{Markup, html};

use crate::config;
use crate::job::store::{Datasource, Role};

/// The snapshot modes and strategies a job can take, in the configuration reference's order.
const SNAPSHOT_MODES: [&str; 4] = ["initial", "initial_only", "when_needed", "never"];
const SNAPSHOT_STRATEGIES: [&str; 2] = ["chunked", "exported"];

pub fn create_page(datasources: &[Datasource]) -> Markup {
    let named = |role: Role| datasources.iter().filter(move |d| d.role == role);
    let mode = config::default_snapshot_mode();
    let strategy = config::default_snapshot_strategy();
    html! {
        h1 { "New job" }
        section.datasources {
            h2 { "Datasources" }
            @if datasources.is_empty() {
                p.hint { "Save a source and a sink first: their URLs are kept by walpipe and never shown again." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Role" } th { "URL" } } }
                    tbody {
                        @for datasource in datasources {
                            @let shown = datasource.redacted();
                            tr { td { (shown.name) } td { (shown.role.as_str()) } td { code { (shown.url) } } }
                        }
                    }
                }
            }
            form #add-datasource.inline {
                input name="name" required placeholder="name, e.g. orders_db";
                select name="role" { option value="source" { "source" } option value="sink" { "sink" } }
                input name="url" type="password" required placeholder="postgres://user:password@host:5432/db, mysql://…, https://…";
                button type="submit" { "Save datasource" }
            }
        }
        form #create-job.create {
            fieldset {
                legend { "Source and sink" }
                label { "Job name " input name="name" required placeholder="orders_to_warehouse"; }
                label { "Source "
                    select name="source" required {
                        @for datasource in named(Role::Source) { option value=(datasource.name) { (datasource.name) } }
                    }
                }
                div #tables.tables { p.hint { "The source's tables load here." } }
                label { "Sink "
                    select name="sink" required {
                        @for datasource in named(Role::Sink) { option value=(datasource.name) { (datasource.name) } }
                    }
                }
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
            ul #findings.findings {}
            button type="submit" { "Check" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_urls_are_shown_redacted_and_offered_by_name() {
        let datasources = [
            Datasource {
                name: "orders_db".into(),
                role: Role::Source,
                url: "postgres://app:hunter2@db/orders".into(),
            },
            Datasource {
                name: "warehouse".into(),
                role: Role::Sink,
                url: "postgres://w:s3cret@wh/dw".into(),
            },
        ];
        let page = create_page(&datasources).into_string();
        assert!(!page.contains("hunter2") && !page.contains("s3cret"), "{page}");
        assert!(page.contains("<option value=\"orders_db\">"), "{page}");
        assert!(page.contains("<option value=\"warehouse\">"), "{page}");
    }
}
