//! The job's publication on the source: created before the slot (a slot
//! can miss a publication created after it), publishing partitioned tables
//! through their root.

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
    Ok(())
}
