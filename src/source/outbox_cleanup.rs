//! Deleting delivered outbox rows on the source (`WALPIPE_OUTBOX_DELETE`):
//! a stage the job puts between the driver and the sink. Which rows is
//! decided here, from the change lines; each source deletes them its own
//! way ([`RowDeleter`]).
//!
//! ```text
//!  driver ──chunk──> stage: note the chunk's outbox rows ──chunk──> sink
//!  driver <─receipt── stage: delete the rows of the chunks acknowledged <─receipt── sink
//! ```
//!
//! Invariants:
//! - A chunk's outbox rows are deleted after the sink acknowledged the
//!   chunk (its events delivered and recorded) and before the driver may
//!   confirm its position to the slot.
//! - So after a crash in between, the slot's confirmed position lies
//!   before those rows. A job that deletes outbox rows therefore resumes
//!   from the slot's position, not the ledger's (`runner`): the delivery
//!   skips the replayed changes it had delivered (same ids), and this stage
//!   deletes their rows again, which is harmless.
//! - Rows are known by the key of their insert: an update of an outbox row
//!   is not an event, and a row already gone is not an error.

use std::collections::{HashMap, VecDeque};

use std::sync::Arc;

use super::BoxFuture;
use crate::change::outbox::{OutboxRules, Routed};
use crate::contract::SinkError;
use crate::contract::{Chunk, DriverEnds, Receipt, Settled, SinkEnds};

/// Outbox rows to delete, by table `schema.name`: each a JSON object of key columns.
pub type OutboxRows = HashMap<String, Vec<String>>;
type Rows = OutboxRows;

/// Also used by the initial copy (`snapshot`): an outbox row copied is an
/// event too, and is deleted once its table's copy was delivered.
pub struct OutboxCleanup {
    rules: OutboxRules,
    open: Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync>,
    deleter: Box<dyn RowDeleter>,
}

/// Deletes rows of a source table by their keys: the source's own statement.
pub trait RowDeleter: Send + Sync {
    /// Deletes the rows of `table` (`schema.name`) whose keys (each a JSON
    /// object of key columns) are `keys`; a row already gone is no error.
    fn delete<'a>(&'a mut self, table: &'a str, keys: &'a [String]) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// A clone has its own deleter (its own session to the source).
impl Clone for OutboxCleanup {
    fn clone(&self) -> OutboxCleanup {
        OutboxCleanup { rules: self.rules.clone(), open: self.open.clone(), deleter: (self.open)() }
    }
}

impl OutboxCleanup {
    /// `open` makes a deleter; it connects when it first deletes.
    pub fn new(
        rules: OutboxRules,
        open: Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync>,
    ) -> OutboxCleanup {
        OutboxCleanup { rules, deleter: open(), open }
    }

    /// Passes chunks from `upstream` (the driver) to `downstream` (the
    /// sink), and acknowledgements back once the rows are deleted; ends
    /// when either side does.
    pub async fn run(mut self, mut upstream: SinkEnds, mut downstream: DriverEnds) -> Result<(), SinkError> {
        // Per chunk in the sink's hands, oldest first: its receipt upstream, its rows.
        let mut in_sink: VecDeque<(Receipt, Rows)> = VecDeque::new();
        let mut upstream_open = true;
        loop {
            tokio::select! {
                chunk = upstream.next(), if upstream_open => match chunk {
                    Some(Chunk { lines, confirm, commit_times, caught_up, copied, tentative, receipt }) => {
                        // Outbox rows are read from change JSON; tentative lines
                        // come only in mirror records, which name no outbox row.
                        let rows = self.rows_in(&lines);
                        let Some(slot) = downstream.reserve().await else { return Ok(()) };
                        slot.send(lines, confirm, commit_times, copied, caught_up, tentative);
                        in_sink.push_back((receipt, rows));
                    }
                    None => {
                        upstream_open = false;
                        downstream.close();
                    }
                },
                settled = downstream.acknowledged() => {
                    let Some(Settled { chunks, .. }) = settled else { return Ok(()) };
                    let mut rows = Rows::new();
                    let mut last = None;
                    for (receipt, chunk_rows) in in_sink.drain(..chunks.min(in_sink.len())) {
                        for (table, keys) in chunk_rows {
                            rows.entry(table).or_default().extend(keys);
                        }
                        last = Some(receipt);
                    }
                    self.delete(rows).await?;
                    if let Some(receipt) = last {
                        upstream.acknowledge(receipt);
                    }
                }
            }
        }
    }

    /// The outbox rows whose inserts are in `lines`.
    fn rows_in(&self, lines: &[u8]) -> Rows {
        let mut rows = Rows::new();
        for line in lines.split(|b| *b == b'\n') {
            self.note(line, &mut rows);
        }
        rows
    }

    /// Adds the outbox row whose insert (or copy) is `line`, if it is one.
    pub fn note(&self, line: &[u8], rows: &mut OutboxRows) {
        if line.is_empty() {
            return;
        }
        if let Routed::Event { row: Some((table, key)), .. } = self.rules.route(line) {
            rows.entry(table).or_default().push(key);
        }
    }

    /// Deletes rows by their keys, table by table.
    pub async fn delete(&mut self, rows: Rows) -> Result<(), SinkError> {
        for (table, keys) in rows {
            self.deleter.delete(&table, &keys).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;
    use crate::position::Position;

    struct NoRows;

    impl RowDeleter for NoRows {
        fn delete<'a>(&'a mut self, table: &'a str, _: &'a [String]) -> BoxFuture<'a, Result<(), SinkError>> {
            panic!("nothing of {table} is to be deleted")
        }
    }

    #[tokio::test]
    async fn a_chunk_is_acknowledged_upstream_only_after_the_sink_acknowledged_it() {
        let (mut driver, stage_up) = contract::channel();
        let (stage_down, mut sink) = contract::channel();
        let rules = OutboxRules { tables: ["public.outbox".to_string()].into(), prefix: None };
        let stage =
            tokio::spawn(OutboxCleanup::new(rules, Arc::new(|| Box::new(NoRows))).run(stage_up, stage_down));
        // A change of another table: nothing to delete.
        let line = br#"{"id":"0/10:0","op":"insert","table":"public.orders","key":{"id":1},"new":{"id":1}}"#;
        driver.reserve().await.expect("open").send(
            line.to_vec(),
            Some(Position::new(0x20)),
            Vec::new(),
            Default::default(),
            true,
            crate::contract::Tentative::No,
        );
        let chunk = sink.next().await.expect("passed on");
        assert_eq!((chunk.lines.as_slice(), chunk.confirm), (&line[..], Some(Position::new(0x20))));
        assert_eq!(driver.unacknowledged(), 1, "not acknowledged before the sink did");
        sink.acknowledge(chunk.receipt);
        assert_eq!(
            driver.acknowledged().await,
            Some(Settled { chunks: 1, confirm: Some(Position::new(0x20)) })
        );
        driver.close();
        assert!(sink.next().await.is_none(), "the end is passed on");
        drop(sink);
        stage.await.expect("joined").expect("ended well");
    }
}
