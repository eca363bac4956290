//! The MySQL source's way of deleting delivered outbox rows
//! ([`RowDeleter`]): one `DELETE ... WHERE (key columns) IN (...)` per
//! table and batch of keys, the values bound as parameters.
//!
//! A binlog reader has no slot whose confirmed position lags the ledger,
//! so a crash after a chunk's events were recorded delivered and before its
//! rows were deleted leaves those rows in the outbox (never their events
//! undelivered): at most the last chunk's. docs/src/guide/mysql.md says so.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::target::MysqlTarget;
use crate::contract::SinkError;
use crate::source::BoxFuture;
use crate::source::outbox_cleanup::RowDeleter;

/// Keys per statement: well under the server's 65,535 placeholders.
const KEYS_PER_STATEMENT: usize = 1_000;

/// Deletes on its own session to the source, opened at its first delete
/// (and again after a failure).
pub struct Deleter {
    target: MysqlTarget,
    session: Option<Conn>,
}

/// What makes a deleter for `target`, as the outbox stage takes it.
pub fn deleters(target: MysqlTarget) -> Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync> {
    Arc::new(move || Box::new(Deleter { target: target.clone(), session: None }))
}

fn failed(error: mysql_async::Error) -> SinkError {
    SinkError::OutboxCleanup {
        transient: !matches!(error, mysql_async::Error::Server(_)),
        reason: error.to_string(),
    }
}

impl RowDeleter for Deleter {
    fn delete<'a>(&'a mut self, table: &'a str, keys: &'a [String]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for batch in keys.chunks(KEYS_PER_STATEMENT) {
                let Some((sql, values)) = delete_statement(table, batch) else { return Ok(()) };
                if self.session.is_none() {
                    self.session = Some(self.target.connect().await.map_err(failed)?);
                }
                let Some(session) = self.session.as_mut() else { return Ok(()) };
                if let Err(error) = session.exec_drop(sql, values).await {
                    self.session = None;
                    return Err(failed(error));
                }
            }
            Ok(())
        })
    }
}

/// `DELETE FROM table WHERE (key columns) IN ((?, ?), ...)` and its values;
/// `None` for a table name or keys it cannot read.
fn delete_statement(table: &str, keys: &[String]) -> Option<(String, Vec<Value>)> {
    let (schema, name) = table.split_once('.')?;
    let objects: Vec<serde_json::Map<String, serde_json::Value>> =
        keys.iter().filter_map(|key| serde_json::from_str(key).ok()).collect();
    let columns: Vec<String> = objects.first()?.keys().cloned().collect();
    if columns.is_empty() {
        return None;
    }
    let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
    let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
    let sql = format!(
        "DELETE FROM {}.{} WHERE ({}) IN ({})",
        quote(schema),
        quote(name),
        columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "),
        vec![tuple; objects.len()].join(", ")
    );
    let values = objects
        .iter()
        .flat_map(|object| columns.iter().map(move |column| value(object.get(column))))
        .collect();
    Some((sql, values))
}

/// A key value of the change JSON as a parameter of its own type.
fn value(json: Option<&serde_json::Value>) -> Value {
    match json {
        None | Some(serde_json::Value::Null) => Value::NULL,
        Some(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(signed), _) => Value::Int(signed),
            (None, Some(unsigned)) => Value::UInt(unsigned),
            _ => Value::Bytes(n.to_string().into_bytes()),
        },
        Some(serde_json::Value::String(text)) => Value::Bytes(text.clone().into_bytes()),
        Some(other) => Value::Bytes(other.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deleted_by_their_key_columns_with_bound_values() {
        let keys = vec![
            r#"{"id":1,"region":"eu"}"#.to_string(),
            r#"{"id":18446744073709551615,"region":"it's"}"#.to_string(),
        ];
        let (sql, values) = delete_statement("shop.Out`box", &keys).expect("a statement");
        assert_eq!(sql, "DELETE FROM `shop`.`Out``box` WHERE (`id`, `region`) IN ((?, ?), (?, ?))");
        assert_eq!(
            values,
            vec![
                Value::Int(1),
                Value::Bytes(b"eu".to_vec()),
                Value::UInt(u64::MAX),
                Value::Bytes(b"it's".to_vec())
            ]
        );
        assert!(delete_statement("no_schema", &keys).is_none());
        assert!(delete_statement("shop.outbox", &[]).is_none());
    }
}
