//! The Postgres source's [`ColumnHistory`]: `pg_attribute`, where a
//! column keeps its attribute number across renames and a dropped one
//! stays (marked dropped) until the table is rewritten.

use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::names::TableName;
use crate::pg::conninfo::ConnInfo;
use crate::source::BoxFuture;
use crate::source::table::{ColumnHistory, Existing, SourceAttribute};

/// Reads the catalog on its own session: the set-up's SQL session once the
/// stream starts ([`CatalogHistory::adopt`]), else one opened at the first
/// question (and again when it was closed).
pub struct CatalogHistory {
    source: ConnInfo,
    session: Mutex<Option<Client>>,
}

impl CatalogHistory {
    pub fn new(source: ConnInfo) -> CatalogHistory {
        CatalogHistory { source, session: Mutex::new(None) }
    }

    /// Takes `session` for the questions to come, unless one is open: the
    /// first question after a start then needs no new connection.
    pub async fn adopt(&self, session: Client) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_none_or(Client::is_closed) {
            *current = Some(session);
        }
    }
}

impl ColumnHistory for CatalogHistory {
    fn columns_now<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<Vec<SourceAttribute>, String>> {
        Box::pin(async move {
            let mut session = self.session.lock().await;
            if session.as_ref().is_none_or(Client::is_closed) {
                let client = crate::pg::sql::connect(&self.source, "the source")
                    .await
                    .map_err(|error| error.to_string())?;
                *session = Some(client);
            }
            let Some(source) = session.as_ref() else { return Ok(Vec::new()) };
            let rows = source
                .query(
                    "SELECT a.attname::text, a.attnum, a.atthasmissing, a.attmissingval::text, \
                            d.adbin IS NOT NULL, a.attgenerated <> '', a.atttypid, a.attisdropped \
                     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0",
                    &[&table.quoted()],
                )
                .await
                .map_err(|error| crate::pg::sql::describe(&error))?;
            Ok(rows.iter().map(attribute).collect())
        })
    }
}

fn attribute(row: &tokio_postgres::Row) -> SourceAttribute {
    let (has_missing, missing, has_default, generated): (bool, Option<String>, bool, bool) =
        (row.get(2), row.get(3), row.get(4), row.get(5));
    let existing = match (generated, has_missing, missing, has_default) {
        (true, ..) => Existing::Unknown,
        (false, true, Some(value), _) => Existing::Value(value),
        (false, false, _, false) => Existing::Null,
        _ => Existing::Unknown,
    };
    SourceAttribute {
        name: row.get(0),
        attnum: row.get(1),
        type_oid: row.get(6),
        dropped: row.get(7),
        existing,
    }
}
