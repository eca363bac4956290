//! The Postgres source's way of deleting delivered outbox rows
//! ([`RowDeleter`]): one `DELETE` per table, the keys as one JSON parameter.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::contract::SinkError;
use crate::names::quote_ident;
use crate::pg::conninfo::ConnInfo;
use crate::source::BoxFuture;
use crate::source::outbox_cleanup::RowDeleter;

/// Deletes on its own session to the source, opened at its first delete
/// (and again when it was closed).
pub struct Deleter {
    source: ConnInfo,
    session: Option<Client>,
}

/// What makes a deleter for `source`, as the outbox stage takes it.
pub fn deleters(source: ConnInfo) -> Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync> {
    Arc::new(move || Box::new(Deleter { source: source.clone(), session: None }))
}

impl RowDeleter for Deleter {
    fn delete<'a>(&'a mut self, table: &'a str, keys: &'a [String]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let Some((sql, keys)) = delete_statement(table, keys) else { return Ok(()) };
            if self.session.as_ref().is_none_or(Client::is_closed) {
                let client = crate::pg::sql::connect(&self.source, "the source").await.map_err(|e| {
                    SinkError::Unavailable {
                        target: "the source (to delete delivered outbox rows)".into(),
                        attempts: 1,
                        reason: e.to_string(),
                        timed_out: false,
                    }
                })?;
                self.session = Some(client);
            }
            let Some(source) = &self.session else { return Ok(()) };
            source.execute(&sql, &[&keys]).await.map_err(|error| SinkError::OutboxCleanup {
                transient: crate::pg::sql::is_transient(&error),
                reason: crate::pg::sql::describe(&error),
            })?;
            Ok(())
        })
    }
}

/// `DELETE FROM table WHERE (key columns) IN (the keys)`, with the keys as
/// its one parameter; `None` for a table name or keys it cannot read.
fn delete_statement(table: &str, keys: &[String]) -> Option<(String, String)> {
    let (schema, name) = table.split_once('.')?;
    let columns: Vec<String> = keys
        .first()
        .and_then(|key| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(key).ok())
        .map(|key| key.keys().map(|c| quote_ident(c)).collect())?;
    if columns.is_empty() {
        return None;
    }
    let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let list = columns.join(", ");
    let sql = format!(
        "DELETE FROM {quoted} WHERE ({list}) IN (SELECT {list} FROM jsonb_populate_recordset(NULL::{quoted}, $1::text::jsonb))"
    );
    Some((sql, format!("[{}]", keys.join(","))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deleted_by_their_key_columns_in_one_statement_per_table() {
        let keys = vec![r#"{"id":1}"#.to_string(), r#"{"id":2}"#.to_string()];
        let (sql, parameter) = delete_statement("public.Outbox", &keys).expect("a statement");
        assert_eq!(
            sql,
            "DELETE FROM \"public\".\"Outbox\" WHERE (\"id\") IN (SELECT \"id\" FROM jsonb_populate_recordset(NULL::\"public\".\"Outbox\", $1::text::jsonb))"
        );
        assert_eq!(parameter, r#"[{"id":1},{"id":2}]"#);
        assert!(delete_statement("no_schema", &keys).is_none());
        assert!(delete_statement("public.outbox", &["not json".to_string()]).is_none());
    }
}
