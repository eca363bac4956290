//! Cutting change lines into batches with a stable identity. Pure: no I/O.
//!
//! A batch is named by the ids of its first and last change (SPEC section
//! 2: an id never changes), so the same changes always form a batch with
//! the same key. Two facts from before a restart keep that true across
//! restarts, given that the slot replays, in the same order, every change
//! after the checkpoint:
//! - `delivered_through`: changes up to this id were delivered; replayed,
//!   they are skipped rather than sent again under a new key.
//! - `in_flight`: the batch that was being sent; the first batch after the
//!   restart is cut at exactly its last change, so it is the same batch,
//!   sent again with the same key.
//!
//! Invariant: lines leave in the order they came; a batch is cut only
//! between lines.

use bytes::Bytes;

use crate::lsn::Lsn;

/// Where a change sits in the stream: the commit LSN of its transaction
/// and its ordinal inside it. Snapshot rows have no stream position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub commit_lsn: Lsn,
    pub ordinal: u64,
}

impl Position {
    /// `0/1A3E700:3`; `None` for a snapshot id (`0/1A3E700:public.t:3`).
    pub fn parse(id: &str) -> Option<Position> {
        let (lsn, ordinal) = id.split_once(':')?;
        Some(Position { commit_lsn: lsn.parse().ok()?, ordinal: ordinal.parse().ok()? })
    }
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
    pub last_position: Option<Position>,
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
    delivered_through: Option<Position>,
    in_flight: Option<InFlight>,
    lines: Vec<Bytes>,
    first_id: Option<String>,
    last: Option<(String, Option<Position>)>,
    /// The batch being re-formed reached its last line.
    replayed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("a change line has no readable id at its start: {0}")]
pub struct NoId(String);

impl Batcher {
    pub fn new(max_lines: usize, delivered_through: Option<&str>, in_flight: Option<InFlight>) -> Batcher {
        Batcher {
            max_lines: max_lines.max(1),
            delivered_through: delivered_through.and_then(Position::parse),
            in_flight,
            lines: Vec::new(),
            first_id: None,
            last: None,
            replayed: false,
        }
    }

    pub fn push(&mut self, line: Bytes) -> Result<Pushed, NoId> {
        let id = change_id(&line)
            .ok_or_else(|| NoId(String::from_utf8_lossy(&line[..line.len().min(80)]).into()))?;
        let position = Position::parse(id);
        if let (Some(done), Some(here)) = (self.delivered_through, position) {
            if here <= done {
                return Ok(Pushed::Skipped);
            }
        }
        if let Some(in_flight) = &self.in_flight {
            let last = Position::parse(&in_flight.last);
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
        !self.lines.is_empty() && (self.in_flight.is_none() || self.replayed)
    }

    /// Cuts the batch; call only when [`Batcher::can_cut`].
    pub fn cut(&mut self) -> Option<Batch> {
        if !self.can_cut() {
            return None;
        }
        let (last_id, last_position) = self.last.take()?;
        self.in_flight = None;
        self.replayed = false;
        Some(Batch {
            lines: std::mem::take(&mut self.lines),
            first_id: self.first_id.take()?,
            last_id,
            last_position,
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
        assert!(Position::parse("0/1A:3") < Position::parse("0/1B:0"));
        assert!(Position::parse("0/1A:3") < Position::parse("0/1A:10"));
        assert_eq!(Position::parse("0/1A:public.t:3"), None);
    }

    #[test]
    fn batches_are_cut_at_the_size_and_keep_the_order() {
        let mut batcher = Batcher::new(2, None, None);
        for id in ["0/10:0", "0/10:1", "0/20:0"] {
            batcher.push(line(id)).expect("push");
            if batcher.is_full() {
                let batch = batcher.cut().expect("batch");
                assert_eq!(ids(&batch), ["0/10:0", "0/10:1"]);
                assert_eq!(batch.last_position, Position::parse("0/10:1"));
            }
        }
        let rest = batcher.cut().expect("rest");
        assert_eq!(ids(&rest), ["0/20:0"]);
        assert!(batcher.cut().is_none());
    }

    #[test]
    fn the_same_changes_make_the_same_key() {
        let cut = |ids: &[&str]| {
            let mut batcher = Batcher::new(10, None, None);
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
        let mut batcher = Batcher::new(2, Some("0/10:1"), Some(in_flight.clone()));
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
        let mut batcher = Batcher::new(10, None, Some(in_flight));
        batcher.push(line("0/10:0")).expect("push");
        assert!(!batcher.can_cut());
        batcher.push(line("0/30:0")).expect("push");
        assert!(batcher.can_cut());
        assert_eq!(ids(&batcher.cut().expect("batch")), ["0/10:0", "0/30:0"]);
    }
}
