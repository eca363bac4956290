//! Outbox routing: change lines of outbox tables, and logical decoding
//! messages with the outbox prefix, become events. Pure: no I/O.
//!
//! The event is a contract of its own, independent of the shape of any
//! table (the point of an outbox):
//!
//! ```json
//! {"event_id":"7b7c...","event_type":"order.paid","aggregate_type":"order","aggregate_id":"42",
//!  "payload":{...},"occurred_at":"2026-11-21T10:30:00.123456Z",
//!  "source":{"change_id":"0/1A3E700:3","table":"public.outbox"}}
//! ```
//!
//! - An outbox table has the columns `aggregate_type`, `aggregate_id`,
//!   `event_type` and `payload` (Debezium's `aggregatetype`, `aggregateid`
//!   and `type` are read too), and optionally `id` (the event id; default
//!   the change id) and `occurred_at` (default the commit time).
//! - An insert (or a snapshot row) of an outbox table is an event; updates
//!   and deletes of outbox rows are not (deleting processed rows must not
//!   emit anything).
//! - A message whose prefix is the outbox prefix carries the same fields
//!   as a JSON object in its content.
//! - `aggregate_id` and `event_id` are always strings; `payload` is passed
//!   as it is (a `jsonb` column gives JSON, a `text` column a string).
//!
//! Invariant: routing never fails the stream. A line that claims to be an
//! event but lacks a field is reported as [`Routed::Rejected`], with the
//! reason, for the caller to count and log.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Which changes are events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxRules {
    /// `schema.table`
    pub tables: HashSet<String>,
    /// Logical decoding messages with this prefix are events.
    pub prefix: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Routed {
    /// Not outbox traffic: sent as the change it is.
    Change,
    /// The event line, and for a table row, the row's key (to delete it once delivered).
    Event { line: Vec<u8>, row: Option<(String, String)> },
    /// Outbox traffic that is not an event (an update or delete of an outbox row).
    Dropped,
    /// Claims to be an event but cannot be one: why.
    Rejected(String),
}

#[derive(Deserialize)]
struct Route<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    table: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    prefix: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Change<'a> {
    id: String,
    #[serde(default)]
    commit_time: Option<String>,
    #[serde(borrow, default)]
    key: Option<&'a RawValue>,
    #[serde(default)]
    new: Option<Map<String, Value>>,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Serialize)]
struct Event<'a> {
    event_id: String,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    payload: &'a Value,
    occurred_at: Option<String>,
    source: Source<'a>,
}

#[derive(Serialize)]
struct Source<'a> {
    change_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<&'a str>,
}

impl OutboxRules {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.prefix.is_none()
    }

    /// Routes one change line (the change JSON).
    pub fn route(&self, line: &[u8]) -> Routed {
        let Ok(route) = serde_json::from_slice::<Route<'_>>(line) else {
            return Routed::Rejected("the change line is not valid change JSON".into());
        };
        let table = route.table.as_deref().filter(|t| self.tables.contains(*t));
        let prefix =
            route.prefix.as_deref().filter(|p| route.op == "message" && Some(*p) == self.prefix.as_deref());
        if table.is_none() && prefix.is_none() {
            return Routed::Change;
        }
        if table.is_some() && route.op != "insert" && route.op != "snapshot" {
            return Routed::Dropped;
        }
        let change: Change<'_> = match serde_json::from_slice(line) {
            Ok(change) => change,
            Err(error) => return Routed::Rejected(format!("the change line cannot be read: {error}")),
        };
        let fields = match (table, &change.new, &change.content) {
            (Some(_), Some(row), _) => row.clone(),
            (Some(_), None, _) => return Routed::Rejected("the outbox row has no new values".into()),
            (None, _, Some(content)) => match serde_json::from_str::<Map<String, Value>>(content) {
                Ok(fields) => fields,
                Err(error) => {
                    return Routed::Rejected(format!(
                        "the outbox message's content is not a JSON object ({error})"
                    ));
                }
            },
            (None, _, None) => return Routed::Rejected("the outbox message has no content".into()),
        };
        let event = match event_from(&fields, &change, table, prefix) {
            Ok(event) => event,
            Err(missing) => {
                let place = table.map_or_else(
                    || format!("the message with prefix {:?}", prefix.unwrap_or_default()),
                    |t| format!("outbox table {t}"),
                );
                return Routed::Rejected(format!(
                    "{place} has no {missing} (an outbox needs aggregate_type, aggregate_id, event_type and payload)"
                ));
            }
        };
        let Ok(line) = serde_json::to_vec(&event) else {
            return Routed::Rejected("the event could not be written as JSON".into());
        };
        let row = table.zip(change.key).map(|(t, key)| (t.to_string(), key.get().to_string()));
        Routed::Event { line, row }
    }
}

/// The event from an outbox row or message content; `Err` names a missing field.
fn event_from<'a>(
    fields: &'a Map<String, Value>,
    change: &'a Change<'_>,
    table: Option<&'a str>,
    prefix: Option<&'a str>,
) -> Result<Event<'a>, &'static str> {
    let field = |names: &[&str]| names.iter().find_map(|name| fields.get(*name)).filter(|v| !v.is_null());
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let required = |names: &[&str], label: &'static str| field(names).map(text).ok_or(label);
    Ok(Event {
        event_id: field(&["id", "event_id"]).map_or_else(|| change.id.clone(), text),
        event_type: required(&["event_type", "type"], "event_type")?,
        aggregate_type: required(&["aggregate_type", "aggregatetype"], "aggregate_type")?,
        aggregate_id: required(&["aggregate_id", "aggregateid"], "aggregate_id")?,
        payload: fields.get("payload").ok_or("payload")?,
        occurred_at: field(&["occurred_at"]).map(text).or_else(|| change.commit_time.clone()),
        source: Source { change_id: &change.id, table, prefix },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> OutboxRules {
        OutboxRules { tables: ["public.outbox".to_string()].into(), prefix: Some("events".into()) }
    }

    fn event(routed: Routed) -> (Value, Option<(String, String)>) {
        match routed {
            Routed::Event { line, row } => (serde_json::from_slice(&line).expect("json"), row),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn an_outbox_insert_becomes_the_event_and_nothing_else() {
        let line = br#"{"id":"0/1A:3","lsn":"0/19","commit_lsn":"0/1A","xid":7,"commit_time":"2026-11-21T10:30:00Z","op":"insert","table":"public.outbox","key":{"id":9},"old":null,"new":{"id":9,"aggregate_type":"order","aggregate_id":42,"event_type":"order.paid","payload":{"total":"10.50"},"internal_note":"x"},"unchanged_toast":[]}"#;
        let (event, row) = event(rules().route(line));
        assert_eq!(
            event,
            serde_json::json!({"event_id":"9","event_type":"order.paid","aggregate_type":"order","aggregate_id":"42",
                "payload":{"total":"10.50"},"occurred_at":"2026-11-21T10:30:00Z",
                "source":{"change_id":"0/1A:3","table":"public.outbox"}})
        );
        assert_eq!(row, Some(("public.outbox".into(), r#"{"id":9}"#.into())));
    }

    #[test]
    fn messages_with_the_prefix_are_events_and_others_stay_changes() {
        let message = br#"{"id":"0/1B:0","lsn":"0/1B","commit_lsn":"0/1B","xid":null,"commit_time":null,"op":"message","table":null,"prefix":"events","content":"{\"event_type\":\"cart.emptied\",\"aggregate_type\":\"cart\",\"aggregate_id\":\"c1\",\"payload\":[1,2],\"occurred_at\":\"2026-11-21T10:00:00Z\"}","transactional":false}"#;
        let (event, row) = event(rules().route(message));
        assert_eq!(event["event_id"], "0/1B:0");
        assert_eq!(event["payload"], serde_json::json!([1, 2]));
        assert_eq!(event["occurred_at"], "2026-11-21T10:00:00Z");
        assert_eq!(event["source"], serde_json::json!({"change_id":"0/1B:0","prefix":"events"}));
        assert_eq!(row, None);
        let other = br#"{"id":"0/1C:0","op":"message","table":null,"prefix":"audit","content":"x"}"#;
        assert_eq!(rules().route(other), Routed::Change);
        let orders = br#"{"id":"0/1D:0","op":"insert","table":"public.orders","new":{"id":1}}"#;
        assert_eq!(rules().route(orders), Routed::Change);
    }

    #[test]
    fn updates_and_deletes_of_outbox_rows_are_not_events() {
        for op in ["update", "delete", "truncate"] {
            let line = format!(r#"{{"id":"0/1A:0","op":"{op}","table":"public.outbox","key":{{"id":1}}}}"#);
            assert_eq!(rules().route(line.as_bytes()), Routed::Dropped, "{op}");
        }
    }

    #[test]
    fn a_broken_event_is_rejected_with_the_reason() {
        let missing = br#"{"id":"0/1A:0","op":"insert","table":"public.outbox","key":{"id":1},"new":{"id":1,"aggregate_type":"order","payload":{}}}"#;
        let Routed::Rejected(reason) = rules().route(missing) else { panic!("accepted") };
        assert!(reason.contains("aggregate_id") && reason.contains("public.outbox"), "{reason}");
        let not_json = br#"{"id":"0/1B:0","op":"message","table":null,"prefix":"events","content":"hello"}"#;
        assert!(matches!(rules().route(not_json), Routed::Rejected(r) if r.contains("JSON object")));
        assert!(matches!(rules().route(b"garbage"), Routed::Rejected(_)));
    }
}
