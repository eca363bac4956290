//! The job's publication on the source: created before the slot (a slot
//! can miss a publication created after it), publishing partitioned tables
//! through their root, and following the job's table list when it is edited.
//!
//! Invariant: when tables are added to an existing publication, every
//! transaction in progress at that moment has ended before `ensure`
//! returns. Such a transaction may be decoded under the catalog it began
//! with, which did not publish the table, so its changes of it may never
//! reach the stream; once it has ended, the table's copy (which starts
//! later) reads them instead.

use tokio_postgres::Client;

use super::catalog::SourceTable;
use crate::names::quote_ident;

/// Creates the publication for the job's tables unless it exists.
///
/// `publish_via_partition_root`: a partitioned table's changes are then
/// published under the root's name, the table the job copies and the sink
/// holds; without it they arrive under each partition's name, which the
/// job does not know. A publication made without it (by an older walpipe)
/// is altered when the job has a partitioned table.
///
/// `whole_schema` (no `WALPIPE_TABLES`): on PostgreSQL 15+, when the source
/// user is a superuser (which that needs), the publication is `FOR TABLES IN
/// SCHEMA public`, so a table created later is captured from its first change.
pub async fn ensure(
    source: &Client,
    publication: &str,
    tables: &[SourceTable],
    whole_schema: bool,
) -> Result<(), tokio_postgres::Error> {
    let via_root = source
        .query_opt("SELECT pubviaroot FROM pg_publication WHERE pubname = $1", &[&publication])
        .await?
        .map(|row| row.get::<_, bool>(0));
    let quoted = quote_ident(publication);
    match via_root {
        None => {
            let row = source
                .query_one(
                    "SELECT current_setting('server_version_num')::int, \
                            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                    &[],
                )
                .await?;
            let (version, superuser): (i32, bool) = (row.get(0), row.get(1));
            // FOR TABLES IN SCHEMA takes a superuser; others list the tables
            // (and a table created later is not captured).
            let what = if whole_schema && version >= 150_000 && superuser {
                "TABLES IN SCHEMA public".to_string()
            } else {
                if whole_schema {
                    tracing::info!(%publication, "the source user is no superuser: the publication lists today's tables of public, and a table created later is not captured (name tables with WALPIPE_TABLES, or create the publication FOR TABLES IN SCHEMA public as a superuser)");
                }
                format!("TABLE {}", tables.iter().map(SourceTable::quoted).collect::<Vec<_>>().join(", "))
            };
            // From PostgreSQL 18 the server can publish stored generated columns.
            let generated = if version >= 180_000 { ", publish_generated_columns = stored" } else { "" };
            source
                .batch_execute(&format!(
                    "CREATE PUBLICATION {quoted} FOR {what} WITH (publish_via_partition_root = true{generated})"
                ))
                .await
                ?;
            tracing::info!(%publication, tables = %what, "created the publication");
        }
        Some(false) if tables.iter().any(|t| t.partitioned) => {
            source
                .batch_execute(&format!("ALTER PUBLICATION {quoted} SET (publish_via_partition_root = true)"))
                .await?;
            tracing::info!(%publication, "the publication now publishes partitioned tables through their root");
        }
        Some(_) => {}
    }
    if !whole_schema && via_root.is_some() {
        follow_table_list(source, publication, tables).await?;
    }
    Ok(())
}

/// Sets the tables of a publication that lists tables to the job's, when
/// they differ; waits out the transactions running when tables were added.
async fn follow_table_list(
    source: &Client,
    publication: &str,
    tables: &[SourceTable],
) -> Result<(), tokio_postgres::Error> {
    let published: Vec<(String, String)> = source
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 \
             AND NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = $1 AND p.puballtables) \
             AND NOT EXISTS (SELECT 1 FROM pg_publication_namespace n JOIN pg_publication p ON p.oid = n.pnpubid WHERE p.pubname = $1)",
            &[&publication],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if published.is_empty() {
        // FOR ALL TABLES, or a schema: not a list to follow (or an empty one, which walpipe never makes).
        return Ok(());
    }
    let wanted: Vec<(String, String)> = tables.iter().map(|t| (t.schema.clone(), t.name.clone())).collect();
    let name = |(schema, table): &(String, String)| format!("{schema}.{table}");
    let added: Vec<String> = wanted.iter().filter(|t| !published.contains(t)).map(name).collect();
    let removed: Vec<String> = published.iter().filter(|t| !wanted.contains(t)).map(name).collect();
    if added.is_empty() && removed.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = tables.iter().map(SourceTable::quoted).collect();
    source
        .batch_execute(&format!(
            "ALTER PUBLICATION {} SET TABLE {}",
            quote_ident(publication),
            list.join(", ")
        ))
        .await?;
    tracing::info!(%publication, ?added, ?removed, "the publication follows the job's tables");
    if !added.is_empty() {
        wait_for_running_transactions(source).await?;
    }
    Ok(())
}

/// Waits until every transaction running now has ended.
async fn wait_for_running_transactions(source: &Client) -> Result<(), tokio_postgres::Error> {
    let snapshot: String = source.query_one("SELECT pg_current_snapshot()::text", &[]).await?.get(0);
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let running: i64 = source
            .query_one(
                "SELECT count(*) FROM pg_snapshot_xip($1::text::pg_snapshot) x WHERE pg_xact_status(x) = 'in progress'",
                &[&snapshot],
            )
            .await?
            .get(0);
        if running == 0 {
            return Ok(());
        }
        if !told && started.elapsed() > std::time::Duration::from_secs(5) {
            told = true;
            tracing::warn!(
                running,
                "waiting for transactions that began before tables were added to the publication to end (see pg_stat_activity)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
