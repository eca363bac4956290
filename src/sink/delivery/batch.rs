//! Cutting change lines into batches with a stable identity. Pure: no I/O.
//!
//! A batch is named by the ids of its first and last change (an id never
//! changes), so the same changes always form a batch with
//! the same key. Two facts from before a restart keep that true across
//! restarts, given that the slot replays, in the same order, every change
//! after the checkpoint:
//! - `delivered_through`: changes up to this id were delivered; replayed,
//!   they are skipped rather than sent again under a new key.
//! - `in_flight`: the batch that was being sent; the first batch after the
//!   restart is cut at exactly its last change, so it is the same batch,
//!   sent again with the same key.
//!
//! Schema lines (a table's shape, announced again after every reconnect)
//! do not name batches: a shape already delivered is skipped, a new one
//! goes out in the batch, and the shapes delivered so far are kept with the
//! ledger, so that a batch formed again after a restart has the same lines.
//!
//! Invariant: lines leave in the order they came; a batch is cut only
//! between lines.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::position::Position;

/// Where a change sits in the stream: the commit LSN of its transaction
/// and its ordinal inside it. Snapshot rows have no stream position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangePosition {
    pub commit_lsn: Position,
    pub ordinal: u64,
}

impl ChangePosition {
    /// `0/1A3E700:3`, or `0/1A3E700:3:schema` (the shape announced before
    /// change 3); `None` for a snapshot id (`0/1A3E700:public.t:3`).
    pub fn parse(id: &str) -> Option<ChangePosition> {
        let (lsn, ordinal) = id.strip_suffix(SCHEMA_SUFFIX).unwrap_or(id).split_once(':')?;
        Some(ChangePosition { commit_lsn: lsn.parse().ok()?, ordinal: ordinal.parse().ok()? })
    }
}

/// How the id of a schema line ends.
const SCHEMA_SUFFIX: &str = ":schema";

/// The shapes delivered so far: by table, the `columns` of its last schema line.
pub type Shapes = BTreeMap<String, String>;

/// `(table, columns)` of a schema line.
fn shape_of(line: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct SchemaLine<'a> {
        table: String,
        #[serde(borrow)]
        columns: &'a serde_json::value::RawValue,
    }
    let parsed: SchemaLine<'_> = serde_json::from_slice(line).ok()?;
    Some((parsed.table, parsed.columns.get().to_string()))
}

/// The `id` of a change line: the line starts with `{"id":"...",`.
pub fn change_id(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(b"{\"id\":\"")?;
    let mut end = 0;
    while end < rest.len() {
        match rest[end] {
            b'\\' => end += 2,
            b'"' => return std::str::from_utf8(&rest[..end]).ok(),
            _ => end += 1,
        }
    }
    None
}

/// A batch that was being sent when walpipe stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InFlight {
    pub first: String,
    pub last: String,
}

/// Change lines cut at a batch boundary.
#[derive(Debug, Clone)]
pub struct Batch {
    pub lines: Vec<Bytes>,
    pub first_id: String,
    pub last_id: String,
    /// The stream position of the last line; `None` for snapshot rows.
    pub last_position: Option<ChangePosition>,
    /// Every table's shape once this batch is delivered, when a line of it announced one.
    pub shapes: Option<Shapes>,
    /// How many of its lines announce a shape (the rest are changes).
    pub shape_lines: usize,
}

impl Batch {
    /// The batch's name for receivers: the same changes, the same key.
    pub fn key(&self, job: &str) -> String {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{job}\n{}\n{}", self.first_id, self.last_id).as_bytes(),
        );
        hex(&digest.as_ref()[..16])
    }

    pub fn in_flight(&self) -> InFlight {
        InFlight { first: self.first_id.clone(), last: self.last_id.clone() }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What became of a line given to [`Batcher::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Delivered before a restart: nothing to send.
    Skipped,
    Added,
}

#[derive(Debug)]
pub struct Batcher {
    max_lines: usize,
    delivered_through: Option<ChangePosition>,
    in_flight: Option<InFlight>,
    lines: Vec<Bytes>,
    first_id: Option<String>,
    last: Option<(String, Option<ChangePosition>)>,
    /// The batch being re-formed reached its last line.
    replayed: bool,
    shapes: Shapes,
    /// Lines of the batch being formed that announced a new shape.
    shape_lines: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("a change line has no readable id at its start: {0}")]
pub struct NoId(String);

impl Batcher {
    pub fn new(
        max_lines: usize,
        delivered_through: Option<&str>,
        in_flight: Option<InFlight>,
        shapes: Shapes,
    ) -> Batcher {
        Batcher {
            max_lines: max_lines.max(1),
            delivered_through: delivered_through.and_then(ChangePosition::parse),
            in_flight,
            lines: Vec::new(),
            first_id: None,
            last: None,
            replayed: false,
            shapes,
            shape_lines: 0,
        }
    }

    pub fn push(&mut self, line: Bytes) -> Result<Pushed, NoId> {
        let id = change_id(&line)
            .ok_or_else(|| NoId(String::from_utf8_lossy(&line[..line.len().min(80)]).into()))?;
        let position = ChangePosition::parse(id);
        if let (Some(done), Some(here)) = (self.delivered_through, position) {
            if here <= done {
                return Ok(Pushed::Skipped);
            }
        }
        if id.ends_with(SCHEMA_SUFFIX) {
            let (table, columns) = shape_of(&line).ok_or_else(|| NoId(id.to_string()))?;
            if self.shapes.get(&table) == Some(&columns) {
                return Ok(Pushed::Skipped);
            }
            self.shapes.insert(table, columns);
            self.shape_lines += 1;
            self.lines.push(line);
            return Ok(Pushed::Added);
        }
        if let Some(in_flight) = &self.in_flight {
            let last = ChangePosition::parse(&in_flight.last);
            if id == in_flight.last {
                self.replayed = true;
            } else if matches!((position, last), (Some(here), Some(last)) if here > last) {
                // Not the batch that was in flight (it cannot be re-formed): cut normally.
                tracing::warn!(in_flight_last = %in_flight.last, got = %id,
                    "the batch in flight before the restart could not be re-formed; its changes go out under a new key");
                self.in_flight = None;
            }
        }
        if self.first_id.is_none() {
            self.first_id = Some(id.to_string());
        }
        self.last = Some((id.to_string(), position));
        self.lines.push(line);
        Ok(Pushed::Added)
    }

    /// The batch must go now: it is full, or it is the re-formed batch.
    pub fn is_full(&self) -> bool {
        match &self.in_flight {
            Some(_) => self.replayed,
            None => self.lines.len() >= self.max_lines,
        }
    }

    /// A batch may be cut now (a flush): it has lines, and it is not a
    /// re-formed batch still missing some.
    pub fn can_cut(&self) -> bool {
        self.first_id.is_some() && (self.in_flight.is_none() || self.replayed)
    }

    /// Cuts the batch; call only when [`Batcher::can_cut`].
    pub fn cut(&mut self) -> Option<Batch> {
        if !self.can_cut() {
            return None;
        }
        let (last_id, last_position) = self.last.take()?;
        self.in_flight = None;
        self.replayed = false;
        let shape_lines = std::mem::take(&mut self.shape_lines);
        Some(Batch {
            lines: std::mem::take(&mut self.lines),
            first_id: self.first_id.take()?,
            last_id,
            last_position,
            shapes: (shape_lines > 0).then(|| self.shapes.clone()),
            shape_lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> Bytes {
        Bytes::from(format!("{{\"id\":\"{id}\",\"op\":\"insert\"}}"))
    }

    fn ids(batch: &Batch) -> Vec<String> {
        batch.lines.iter().map(|l| change_id(l).expect("id").to_string()).collect()
    }

    #[test]
    fn ids_and_positions_are_read_from_the_line() {
        assert_eq!(change_id(br#"{"id":"0/1A:3","lsn":"0/1"}"#), Some("0/1A:3"));
        assert_eq!(change_id(br#"{"id":"0/1A:public.\"t\":3","lsn":"0/1"}"#), Some(r#"0/1A:public.\"t\":3"#));
        assert_eq!(change_id(b"{\"op\":1}"), None);
        assert!(ChangePosition::parse("0/1A:3") < ChangePosition::parse("0/1B:0"));
        assert!(ChangePosition::parse("0/1A:3") < ChangePosition::parse("0/1A:10"));
        assert_eq!(ChangePosition::parse("0/1A:public.t:3"), None);
    }

    #[test]
    fn batches_are_cut_at_the_size_and_keep_the_order() {
        let mut batcher = Batcher::new(2, None, None, Shapes::new());
        for id in ["0/10:0", "0/10:1", "0/20:0"] {
            batcher.push(line(id)).expect("push");
            if batcher.is_full() {
                let batch = batcher.cut().expect("batch");
                assert_eq!(ids(&batch), ["0/10:0", "0/10:1"]);
                assert_eq!(batch.last_position, ChangePosition::parse("0/10:1"));
            }
        }
        let rest = batcher.cut().expect("rest");
        assert_eq!(ids(&rest), ["0/20:0"]);
        assert!(batcher.cut().is_none());
    }

    #[test]
    fn the_same_changes_make_the_same_key() {
        let cut = |ids: &[&str]| {
            let mut batcher = Batcher::new(10, None, None, Shapes::new());
            for id in ids {
                batcher.push(line(id)).expect("push");
            }
            batcher.cut().expect("batch")
        };
        let a = cut(&["0/10:0", "0/10:1"]);
        assert_eq!(a.key("job"), cut(&["0/10:0", "0/10:1"]).key("job"));
        assert_ne!(a.key("job"), cut(&["0/10:0"]).key("job"));
        assert_ne!(a.key("job"), a.key("other"));
        assert_eq!(a.key("job").len(), 32);
    }

    #[test]
    fn after_a_restart_delivered_changes_are_skipped_and_the_batch_in_flight_is_formed_again() {
        let in_flight = InFlight { first: "0/10:2".into(), last: "0/20:1".into() };
        // The checkpoint was at a commit before 0/10; 0/10:0 and :1 were delivered.
        let mut batcher = Batcher::new(2, Some("0/10:1"), Some(in_flight.clone()), Shapes::new());
        let mut pushed = Vec::new();
        let mut cuts = Vec::new();
        for id in ["0/10:0", "0/10:1", "0/10:2", "0/20:0", "0/20:1", "0/30:0"] {
            pushed.push(batcher.push(line(id)).expect("push"));
            // The batch size (2) does not cut the re-formed batch; a flush may not either.
            if id == "0/20:0" {
                assert!(!batcher.is_full() && !batcher.can_cut());
            }
            if batcher.is_full() {
                cuts.push(batcher.cut().expect("batch"));
            }
        }
        assert_eq!(pushed[..2], [Pushed::Skipped, Pushed::Skipped]);
        assert_eq!(ids(&cuts[0]), ["0/10:2", "0/20:0", "0/20:1"]);
        assert_eq!(cuts[0].in_flight(), in_flight);
        assert_eq!(ids(&batcher.cut().expect("rest")), ["0/30:0"]);
    }

    #[test]
    fn a_batch_that_cannot_be_formed_again_is_cut_normally() {
        let in_flight = InFlight { first: "0/10:0".into(), last: "0/10:5".into() };
        let mut batcher = Batcher::new(10, None, Some(in_flight), Shapes::new());
        batcher.push(line("0/10:0")).expect("push");
        assert!(!batcher.can_cut());
        batcher.push(line("0/30:0")).expect("push");
        assert!(batcher.can_cut());
        assert_eq!(ids(&batcher.cut().expect("batch")), ["0/10:0", "0/30:0"]);
    }

    fn schema(id: &str, columns: &str) -> Bytes {
        Bytes::from(format!(r#"{{"id":"{id}","op":"schema","table":"public.t","columns":{columns}}}"#))
    }

    #[test]
    fn shapes_are_sent_once_and_never_name_a_batch() {
        let mut batcher = Batcher::new(10, None, None, Shapes::new());
        assert_eq!(batcher.push(schema("0/10:0:schema", r#"[{"name":"id"}]"#)).expect("push"), Pushed::Added);
        assert!(!batcher.can_cut(), "a shape alone is no batch");
        batcher.push(line("0/10:0")).expect("push");
        let first = batcher.cut().expect("batch");
        assert_eq!(first.first_id, "0/10:0");
        assert_eq!(first.lines.len(), 2);
        let shapes = first.shapes.clone().expect("a new shape");
        assert_eq!(shapes["public.t"], r#"[{"name":"id"}]"#);

        // Announced again (a reconnect): skipped, so the batch is the same as before.
        let mut again = Batcher::new(10, None, None, shapes);
        assert_eq!(again.push(schema("0/20:0:schema", r#"[{"name":"id"}]"#)).expect("push"), Pushed::Skipped);
        again.push(line("0/20:0")).expect("push");
        let batch = again.cut().expect("batch");
        assert_eq!(ids(&batch), ["0/20:0"]);
        assert_eq!(batch.shapes, None);
        assert_eq!(ChangePosition::parse("0/20:0:schema"), ChangePosition::parse("0/20:0"));
    }
}
