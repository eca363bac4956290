//! `walpipe jobs ...`: the control API's client. Tables for people, the
//! API's JSON with `--json`. The API is at `--url`, by default
//! `http://$WALPIPE_HTTP_ADDR`; `WALPIPE_API_TOKEN` is sent as the bearer
//! token.

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    /// The API's base URL (default: http://$WALPIPE_HTTP_ADDR).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Every job, a line each.
    List,
    /// One job: state, phase, error, worker, records, bytes, events/s, lag, snapshot progress.
    Show { name: String },
    /// A new job (state created), from settings like source_url=... sink_url=... tables=public.orders.
    Create {
        name: String,
        /// Job settings as key=value (the WALPIPE_ job variables in lower case, without the prefix).
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// created or stopped -> pending -> running.
    Start { name: String },
    /// running -> paused: stop consuming, keep the slot and the position.
    Pause { name: String },
    /// paused -> running.
    Resume { name: String },
    /// running or paused -> stopped, committing what is pending.
    Stop {
        name: String,
        /// Also drop the slot and the publication.
        #[arg(long)]
        cleanup: bool,
    },
    /// Start over: a new slot and a new snapshot.
    Restart { name: String },
    /// failed -> pending: resume from the last checkpoint.
    Retry { name: String },
    /// Drop the slot and the publication and forget the job (the destination tables stay).
    Delete { name: String },
    /// The job's runs: start, duration, final status, records and bytes.
    History { name: String },
    /// A live view of one job in the terminal, redrawn every second until Ctrl-C.
    Watch { name: String },
    /// Copy tables again while the job streams (a deleted source row also leaves a Postgres mirror).
    Snapshot {
        name: String,
        /// Tables of the job, as in WALPIPE_TABLES (schema.table, "Quoted"."Names").
        #[arg(required = true)]
        tables: Vec<String>,
    },
    /// Replace the job's tables: added ones are copied while it streams, removed ones stop (their destinations stay).
    Edit {
        name: String,
        /// The new table list, as in WALPIPE_TABLES.
        #[arg(long, required = true)]
        tables: String,
    },
}

/// Settings whose values are numbers in the API's JSON.
const NUMERIC: [&str; 4] = ["batch_size", "flush_interval_ms", "parallel_tables", "heartbeat_interval_ms"];

pub async fn run(args: JobsArgs, http_addr: &str, token: Option<String>) -> anyhow::Result<()> {
    let base = args.url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
    let api = Api { base: base.trim_end_matches('/').to_string(), token, client: reqwest::Client::new() };
    let jobs = "/api/v1/jobs";
    if let JobsCommand::Watch { name } = &args.command {
        return super::watch::watch(&api, name).await;
    }
    let (answer, print): (Value, fn(&Value)) = match args.command {
        JobsCommand::List => (api.call(reqwest::Method::GET, jobs, None).await?, print_list),
        JobsCommand::Show { name } => {
            (api.call(reqwest::Method::GET, &format!("{jobs}/{name}"), None).await?, print_job)
        }
        JobsCommand::Create { name, settings } => {
            let mut definition = json!({ "name": name });
            for setting in settings {
                let (key, value) = setting.split_once('=').ok_or_else(|| {
                    anyhow!("{setting:?} is not a setting: write key=value, e.g. sink_url=postgres://...")
                })?;
                definition[key] = match value.parse::<u64>() {
                    Ok(number) if NUMERIC.contains(&key) => json!(number),
                    _ => json!(value),
                };
            }
            (api.call(reqwest::Method::POST, jobs, Some(definition)).await?, print_job)
        }
        JobsCommand::Start { name } => (api.action(&name, "start", None).await?, print_job),
        JobsCommand::Pause { name } => (api.action(&name, "pause", None).await?, print_job),
        JobsCommand::Resume { name } => (api.action(&name, "resume", None).await?, print_job),
        JobsCommand::Stop { name, cleanup } => {
            (api.action(&name, "stop", Some(json!({ "cleanup": cleanup }))).await?, print_job)
        }
        JobsCommand::Restart { name } => (api.action(&name, "restart", None).await?, print_job),
        JobsCommand::Retry { name } => (api.action(&name, "retry", None).await?, print_job),
        JobsCommand::Delete { name } => {
            (api.call(reqwest::Method::DELETE, &format!("{jobs}/{name}"), None).await?, print_deleted)
        }
        JobsCommand::Snapshot { name, tables } => {
            (api.action(&name, "snapshot", Some(json!({ "tables": tables }))).await?, print_job)
        }
        JobsCommand::Edit { name, tables } => {
            let path = format!("{jobs}/{name}");
            (api.call(reqwest::Method::PATCH, &path, Some(json!({ "tables": tables }))).await?, print_job)
        }
        JobsCommand::History { name } => {
            (api.call(reqwest::Method::GET, &format!("{jobs}/{name}/history"), None).await?, print_history)
        }
        JobsCommand::Watch { .. } => return Ok(()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print(&answer);
    }
    Ok(())
}

/// The control API, as the CLI calls it.
pub struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    async fn action(&self, name: &str, action: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, &format!("/api/v1/jobs/{name}/{action}"), body).await
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "could not reach the walpipe API at {} ({}): start `walpipe run` or pass --url",
                self.base,
                e.without_url()
            )
        })?;
        let status = response.status();
        let answer: Value = response.json().await.context("the API's answer is not JSON")?;
        if !status.is_success() {
            let message = answer["error"].as_str().unwrap_or("the API refused the request");
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(answer)
    }
}

pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_list(answer: &Value) {
    println!(
        "{:<24} {:<10} {:<10} {:<32} {:>10} {:>12}  ERROR",
        "NAME", "STATE", "PHASE", "WORKER", "RECORDS", "LAG BYTES"
    );
    for job in answer["jobs"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<10} {:<10} {:<32} {:>10} {:>12}  {}",
            text(&job["name"]),
            text(&job["state"]),
            text(&job["phase"]),
            text(&job["worker"]),
            text(&job["records"]),
            text(&job["lag_bytes"]),
            text(&job["error"])
        );
    }
}

fn print_job(job: &Value) {
    let status = crate::http::api::STATUS_FIELDS.into_iter().filter(|f| *f != "snapshot");
    let fields = ["name", "state", "requested", "phase", "error", "worker"]
        .into_iter()
        .chain(status)
        .chain(["checkpoint_lsn", "reason", "warning"]);
    for field in fields {
        let empty = job[field].is_null() || job[field].as_array().is_some_and(Vec::is_empty);
        if !empty || matches!(field, "name" | "state") {
            println!("{:<30} {}", format!("{field}:"), text(&job[field]));
        }
    }
    let actions: Vec<String> = job["allowed_actions"].as_array().into_iter().flatten().map(text).collect();
    println!("{:<30} {}", "allowed actions:", actions.join(", "));
    for table in job["snapshot"].as_array().into_iter().flatten() {
        println!(
            "snapshot {}: {}/{} rows ({:.0}%), {} rows/s, ETA {} s",
            text(&table["table"]),
            text(&table["rows"]),
            text(&table["total"]),
            table["percent"].as_f64().unwrap_or(0.0),
            text(&table["rows_per_second"]),
            text(&table["eta_seconds"])
        );
    }
}

fn print_deleted(answer: &Value) {
    println!("deleted {} (its destination tables are kept)", text(&answer["deleted"]));
}

fn print_history(answer: &Value) {
    println!(
        "{:>6} {:<26} {:>10} {:<10} {:>10} {:>12}  WORKER",
        "ID", "STARTED", "SECONDS", "STATUS", "RECORDS", "BYTES"
    );
    for run in answer["instances"].as_array().into_iter().flatten() {
        println!(
            "{:>6} {:<26} {:>10.1} {:<10} {:>10} {:>12}  {}",
            text(&run["id"]),
            text(&run["started_at"]),
            run["duration_seconds"].as_f64().unwrap_or(0.0),
            text(&run["status"]),
            text(&run["records"]),
            text(&run["bytes"]),
            text(&run["worker"])
        );
    }
}
