//! `walpipe check`: the preflight of a job's source and sink. Every finding is one
//! line, with its fix; the exit status is 1 when any is an error.

use anyhow::bail;

use crate::config::Config;
use crate::job::preflight::{Finding, Level, Preflight, finding};
use crate::job::spec::{JobSpec, SnapshotStrategy};
use crate::names::quote_literal;
use crate::pg::sql;
use crate::source::SourceTarget;
use crate::source::mysql::chunks::signal::signal_grants;
use crate::source::mysql::setup::requirements as mysql_requirements;
use crate::source::mysql::target::MysqlTarget;
use crate::source::postgres::catalog;

/// Runs every check, prints the findings, and fails when one is an error.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let Some(mut spec) = JobSpec::from_config(config)? else {
        bail!("there is nothing to check: set WALPIPE_SOURCE_URL and WALPIPE_SINK_URL");
    };
    if let (Some(url), false) = (&config.state_url, spec.sink.holds_checkpoint()) {
        spec.checkpoint_db =
            crate::pg::ConnInfo::parse(url).map_err(|e| anyhow::anyhow!("WALPIPE_STATE_URL: {e}"))?;
    }
    let findings = check(&spec).await;
    for f in &findings {
        println!("{} {}", f.level, f.text);
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    if errors > 0 {
        bail!("{errors} check(s) failed: fix the errors above, then run walpipe check again");
    }
    Ok(())
}

/// The checks, for the HTTP layer's `POST /api/v1/check`.
pub fn preflight() -> Preflight {
    std::sync::Arc::new(|spec: JobSpec| Box::pin(async move { check(&spec).await }))
}

pub async fn check(spec: &JobSpec) -> Vec<Finding> {
    let mut findings = Vec::new();
    let source_info = match &spec.source {
        SourceTarget::Postgres(info) => info,
        SourceTarget::Mysql(target) => {
            check_mysql(target, spec.snapshot_strategy == SnapshotStrategy::Chunked, &mut findings).await;
            check_schema_following(spec, &mut findings);
            return findings;
        }
    };
    match sql::connect(source_info, "the source").await {
        Ok(source) => {
            findings.push(finding(Level::Ok, format!("the source {} is reachable", spec.source)));
            check_source(&source, spec, &mut findings).await;
        }
        Err(error) => findings.push(finding(Level::Error, format!("{error}: check WALPIPE_SOURCE_URL"))),
    }
    let role = if spec.sink.holds_checkpoint() {
        "the sink"
    } else {
        findings.push(finding(
            Level::Ok,
            format!("the sink is {}: not probed (walpipe sends it nothing but batches)", spec.sink),
        ));
        "the state store"
    };
    match sql::connect(&spec.checkpoint_db, role).await {
        Ok(sink) => match sink.simple_query("SELECT 1").await {
            Ok(_) => findings.push(finding(Level::Ok, format!("{role} {} is reachable", spec.checkpoint_db))),
            Err(error) => {
                findings.push(finding(Level::Error, format!("{role} answered with an error: {error}")))
            }
        },
        Err(error) => findings.push(finding(Level::Error, format!("{error}: check WALPIPE_SINK_URL"))),
    }
    findings
}

async fn setting(client: &tokio_postgres::Client, name: &str) -> Option<String> {
    let row = client.query_opt("SELECT setting FROM pg_settings WHERE name = $1", &[&name]).await.ok()??;
    Some(row.get(0))
}

/// A MySQL/MariaDB source: reachable, and its binlog settings and privileges.
async fn check_mysql(target: &MysqlTarget, chunked: bool, findings: &mut Vec<Finding>) {
    let mut conn = match mysql_async::Conn::new(target.opts.clone()).await {
        Ok(conn) => conn,
        Err(error) => {
            findings.push(finding(
                Level::Error,
                format!("could not connect to {target}: {error}: check WALPIPE_SOURCE_URL"),
            ));
            return;
        }
    };
    findings.push(finding(Level::Ok, format!("the source {target} is reachable")));
    match mysql_requirements(&mut conn).await {
        Ok(found) => findings.extend(found.into_iter().map(|found| match found {
            Ok(text) => finding(Level::Ok, text),
            Err(fix) => finding(Level::Error, fix),
        })),
        Err(error) => {
            findings.push(finding(Level::Error, format!("could not read the source's settings: {error}")))
        }
    }
    if chunked {
        findings.push(match signal_grants(&mut conn, &target.database).await {
            Ok(text) => finding(Level::Ok, text),
            Err(fix) => finding(Level::Error, fix),
        });
    }
}

async fn check_source(source: &tokio_postgres::Client, spec: &JobSpec, findings: &mut Vec<Finding>) {
    check_access(source, spec, findings).await;
    check_retention(source, findings).await;
    check_slot_and_publication(source, spec, findings).await;
    check_schema_following(spec, findings);
}

/// wal_level, the REPLICATION privilege, and every table's key.
async fn check_access(source: &tokio_postgres::Client, spec: &JobSpec, findings: &mut Vec<Finding>) {
    let wal_level = setting(source, "wal_level").await.unwrap_or_default();
    findings.push(if wal_level == "logical" {
        finding(Level::Ok, "wal_level = logical")
    } else {
        finding(
            Level::Error,
            format!("wal_level = {wal_level}, but logical decoding needs logical: run ALTER SYSTEM SET wal_level = logical on the source and restart it"),
        )
    });

    let user = match &spec.source {
        SourceTarget::Postgres(info) => info.user.as_str(),
        SourceTarget::Mysql(_) => "",
    };
    let privileged = source
        .query_one("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map(|row| row.get::<_, bool>(0))
        .unwrap_or(false);
    findings.push(if privileged {
        finding(Level::Ok, format!("user {} has the REPLICATION privilege", user))
    } else {
        finding(
            Level::Error,
            format!("user {} lacks the REPLICATION privilege: run ALTER ROLE {} REPLICATION", user, user),
        )
    });

    match catalog::table_names(source, &spec.tables).await {
        Ok(names) => {
            for name in names {
                match catalog::table(source, &name.schema, &name.name).await {
                    Ok(table) if table.is_keyless() => findings.push(match catalog::require_keys(std::slice::from_ref(&table)) {
                        Err(error) if spec.needs_keys() => finding(Level::Error, error.to_string()),
                        _ => finding(
                            Level::Ok,
                            format!(
                                "table {} can be replicated (no primary key, REPLICA IDENTITY FULL: each change carries the whole old row; copied under the slot's exported snapshot before streaming, since there is no key to copy in chunks by, and never copied again while streaming)",
                                table.qualified()
                            ),
                        ),
                    }),
                    Ok(table) => findings.push(finding(
                        Level::Ok,
                        format!(
                            "table {} can be replicated (key: {}; {})",
                            table.qualified(),
                            table.key.join(", "),
                            match spec.snapshot_strategy {
                                SnapshotStrategy::Chunked => "copied in chunks of that key while streaming",
                                SnapshotStrategy::Exported => "copied under the slot's exported snapshot",
                            }
                        ),
                    )),
                    Err(error) => findings.push(finding(Level::Error, error.to_string())),
                }
            }
        }
        Err(error) => findings.push(finding(Level::Error, error.to_string())),
    }
}

/// What bounds the WAL a stalled or idle slot keeps.
async fn check_retention(source: &tokio_postgres::Client, findings: &mut Vec<Finding>) {
    match setting(source, "max_slot_wal_keep_size").await.as_deref() {
        Some("-1") => findings.push(finding(
            Level::Warning,
            "max_slot_wal_keep_size = -1: a stalled slot can fill the WAL disk and stop the primary; cap it below the WAL volume's free space, e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB' and SELECT pg_reload_conf()",
        )),
        Some(megabytes) => findings.push(finding(
            Level::Ok,
            format!("max_slot_wal_keep_size = {megabytes} MB: a stalled slot is invalidated before it fills the disk"),
        )),
        None => {}
    }

    if let Some(timeout) = setting(source, "idle_replication_slot_timeout").await {
        findings.push(if timeout == "0" {
            finding(Level::Ok, "idle_replication_slot_timeout = 0: idle slots are not invalidated")
        } else {
            finding(
                Level::Warning,
                format!("idle_replication_slot_timeout = {timeout} s: if walpipe is down longer, the server invalidates its slot at a checkpoint and the job must re-snapshot; raise it or keep walpipe running"),
            )
        });
    }
}

async fn check_slot_and_publication(
    source: &tokio_postgres::Client,
    spec: &JobSpec,
    findings: &mut Vec<Finding>,
) {
    let slot = source
        .query_opt(
            "SELECT plugin, database, wal_status, active_pid::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&spec.slot],
        )
        .await
        .ok()
        .flatten();
    findings.push(match slot {
        None => finding(Level::Ok, format!("slot {} does not exist yet: walpipe run creates it", spec.slot)),
        Some(row) => {
            let (plugin, wal_status, active): (Option<String>, Option<String>, Option<String>) =
                (row.get(0), row.get(2), row.get(3));
            if plugin.as_deref() != Some("pgoutput") {
                finding(Level::Error, format!("slot {} does not use pgoutput: drop it (SELECT pg_drop_replication_slot({})) or choose another WALPIPE_SLOT_NAME", spec.slot, quote_literal(&spec.slot)))
            } else if wal_status.as_deref() == Some("lost") {
                finding(Level::Error, format!("slot {} was invalidated (wal_status = lost): drop it with SELECT pg_drop_replication_slot({}) and let walpipe run re-create it and re-snapshot", spec.slot, quote_literal(&spec.slot)))
            } else if let Some(pid) = active {
                finding(Level::Warning, format!("slot {} is in use by server process {pid}: only one consumer can stream it", spec.slot))
            } else {
                finding(Level::Ok, format!("slot {} exists (wal_status = {})", spec.slot, wal_status.unwrap_or_default()))
            }
        }
    });

    let publication =
        source.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&spec.publication]).await;
    findings.push(match publication {
        Ok(Some(_)) => finding(Level::Ok, format!("publication {} exists", spec.publication)),
        _ => finding(
            Level::Ok,
            format!("publication {} does not exist yet: walpipe run creates it", spec.publication),
        ),
    });
}

/// How schema changes are followed, and what the default table selection implies.
fn check_schema_following(spec: &JobSpec, findings: &mut Vec<Finding>) {
    findings.push(finding(
        Level::Ok,
        "schema changes: a Postgres destination follows added, dropped, renamed and retyped columns; renames are known by the source's attribute numbers, read from its catalog when the change arrives (no DDL event trigger is installed); a change walpipe cannot follow exactly marks the table as needing a re-copy",
    ));
    if spec.tables.is_empty() {
        findings.push(finding(
            Level::Warning,
            "WALPIPE_TABLES is not set: the publication takes every table of schema public (FOR TABLES IN SCHEMA on PostgreSQL 15+ with a superuser source user), so tables created later are captured too, but PostgreSQL then refuses UPDATE and DELETE on a new table of public that has no primary key or replica identity; name the tables with WALPIPE_TABLES if that can happen",
        ));
    }
}
