//! The keys that streamed transactions changed in the tables being copied,
//! with the transactions' xids: what decides which rows of a chunk are
//! older than the stream (see the merge rule in the module above). Pure:
//! no I/O.
//!
//! Invariants:
//! - A key is recorded only for a transaction that committed: a plain
//!   transaction's changes arrive after its commit; a streamed one's are
//!   held per subtransaction until Stream Commit, and an aborted
//!   (sub)transaction's are dropped, so a rolled-back change never costs a
//!   chunk row.
//! - An entry is forgotten only once a chunk's snapshot saw its
//!   transaction: every later snapshot sees it too, so no later chunk
//!   could need it.

use std::collections::{HashMap, HashSet};

use super::visibility::XidSnapshot;
use crate::chunked::keys::Key;
use crate::chunked::rows::Verdict;

/// What a change did to a table being copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    /// Wrote or deleted the row with this key. `complete`: the stream has
    /// every column of the new version (an update that left a TOASTed value
    /// unchanged does not send it).
    Row {
        key: Key,
        complete: bool,
    },
    Truncate,
}

/// A transaction's change of one key.
#[derive(Debug, Clone, Copy)]
struct Change {
    xid: u32,
    complete: bool,
}

/// What one table's committed transactions touched.
#[derive(Debug, Default)]
struct Touches {
    keys: HashMap<Key, Vec<Change>>,
    /// The xids of transactions that truncated the table.
    truncates: Vec<u32>,
}

/// A change of a streamed transaction, held until it commits.
#[derive(Debug)]
struct Held {
    subxid: u32,
    table: String,
    touch: Touch,
}

/// Which rows of a chunk the stream has made stale.
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    /// A transaction the chunk's snapshot did not see truncated the table.
    All,
    Keys {
        /// Changed by transactions the chunk's snapshot did not see.
        stale: HashSet<Key>,
        /// Of those, the ones an update changed without sending a TOASTed
        /// value: neither the stream nor the chunk has their whole new version.
        incomplete: HashSet<Key>,
    },
}

impl Stale {
    pub fn is_empty(&self) -> bool {
        matches!(self, Stale::Keys { stale, .. } if stale.is_empty())
    }

    pub fn verdict(&self, key: &Key) -> Verdict {
        match self {
            Stale::All => Verdict::LeaveOut,
            Stale::Keys { incomplete, .. } if incomplete.contains(key) => Verdict::Unmergeable,
            Stale::Keys { stale, .. } if stale.contains(key) => Verdict::LeaveOut,
            Stale::Keys { .. } => Verdict::Write,
        }
    }
}

#[derive(Debug, Default)]
pub struct KeyWatch {
    /// By table (`schema.name`), for the tables being copied.
    tables: HashMap<String, Touches>,
    /// By top-level xid: the changes of streamed transactions not committed yet.
    streams: HashMap<u32, Vec<Held>>,
}

impl KeyWatch {
    pub fn new(tables: impl IntoIterator<Item = String>) -> KeyWatch {
        KeyWatch {
            tables: tables.into_iter().map(|t| (t, Touches::default())).collect(),
            streams: HashMap::new(),
        }
    }

    pub fn watches(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// Whether no table is being copied any more.
    pub fn is_done(&self) -> bool {
        self.tables.is_empty()
    }

    /// The table's copy is done: its changes no longer matter.
    pub fn unwatch(&mut self, table: &str) {
        self.tables.remove(table);
    }

    /// A committed (plain) transaction changed `table`.
    pub fn committed(&mut self, xid: u32, table: &str, touch: Touch) {
        if let Some(touches) = self.tables.get_mut(table) {
            match touch {
                Touch::Row { key, complete } => {
                    touches.keys.entry(key).or_default().push(Change { xid, complete })
                }
                Touch::Truncate => touches.truncates.push(xid),
            }
        }
    }

    /// A streamed transaction (top-level `xid`) changed `table` in `subxid`.
    pub fn streamed(&mut self, xid: u32, subxid: u32, table: &str, touch: Touch) {
        if self.watches(table) {
            self.streams.entry(xid).or_default().push(Held { subxid, table: table.to_string(), touch });
        }
    }

    /// A streamed transaction committed: its changes count, under its top-level xid.
    pub fn stream_committed(&mut self, xid: u32) {
        for held in self.streams.remove(&xid).unwrap_or_default() {
            self.committed(xid, &held.table, held.touch);
        }
    }

    /// A streamed (sub)transaction rolled back (`subxid == xid`: all of it).
    pub fn stream_aborted(&mut self, xid: u32, subxid: u32) {
        if subxid == xid {
            self.streams.remove(&xid);
        } else if let Some(held) = self.streams.get_mut(&xid) {
            held.retain(|held| held.subxid != subxid);
        }
    }

    /// The keys of `table` changed by committed transactions that `snapshot` did not see.
    pub fn stale(&self, table: &str, snapshot: &XidSnapshot) -> Stale {
        let (mut stale, mut incomplete) = (HashSet::new(), HashSet::new());
        let Some(touches) = self.tables.get(table) else { return Stale::Keys { stale, incomplete } };
        if touches.truncates.iter().any(|xid| !snapshot.sees(*xid)) {
            return Stale::All;
        }
        for (key, changes) in &touches.keys {
            for change in changes.iter().filter(|change| !snapshot.sees(change.xid)) {
                stale.insert(key.clone());
                if !change.complete {
                    incomplete.insert(key.clone());
                }
            }
        }
        Stale::Keys { stale, incomplete }
    }

    /// Forgets what `snapshot` saw: no later chunk can need it.
    pub fn forget_seen(&mut self, snapshot: &XidSnapshot) {
        for touches in self.tables.values_mut() {
            touches.truncates.retain(|xid| !snapshot.sees(*xid));
            touches.keys.retain(|_, changes| {
                changes.retain(|change| !snapshot.sees(change.xid));
                !changes.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Key {
        crate::chunked::keys::text_key(value)
    }

    fn row(value: &str) -> Touch {
        Touch::Row { key: key(value), complete: true }
    }

    fn snapshot(text: &str) -> XidSnapshot {
        XidSnapshot::parse(text).expect("snapshot")
    }

    #[test]
    fn only_keys_changed_by_transactions_the_chunk_did_not_see_are_stale() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", row("1"));
        watch.committed(105, "public.t", row("2"));
        watch.committed(110, "public.t", row("3"));
        watch.committed(110, "public.other", row("9"));
        // 105 was running and 110 started after: their versions are newer than the chunk's.
        let stale = watch.stale("public.t", &snapshot("105:108:105"));
        assert_eq!(stale.verdict(&key("1")), Verdict::Write);
        assert_eq!(stale.verdict(&key("2")), Verdict::LeaveOut);
        assert_eq!(stale.verdict(&key("3")), Verdict::LeaveOut);
        assert!(watch.stale("public.other", &snapshot("105:108:105")).is_empty());
    }

    #[test]
    fn a_key_changed_by_a_seen_and_an_unseen_transaction_is_stale() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", row("1"));
        watch.committed(120, "public.t", row("1"));
        assert_eq!(watch.stale("public.t", &snapshot("110:110:")).verdict(&key("1")), Verdict::LeaveOut);
    }

    #[test]
    fn an_unseen_truncate_makes_every_row_stale() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", Touch::Truncate);
        assert!(watch.stale("public.t", &snapshot("101:101:")).is_empty());
        assert_eq!(watch.stale("public.t", &snapshot("99:99:")), Stale::All);
    }

    #[test]
    fn streamed_changes_count_once_committed_and_never_when_rolled_back() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        let later = snapshot("100:100:");
        watch.streamed(200, 200, "public.t", row("1"));
        watch.streamed(200, 201, "public.t", row("2"));
        watch.streamed(300, 300, "public.t", row("3"));
        assert!(watch.stale("public.t", &later).is_empty(), "not committed yet");
        watch.stream_aborted(200, 201);
        watch.stream_committed(200);
        watch.stream_aborted(300, 300);
        watch.stream_committed(300);
        let stale = watch.stale("public.t", &later);
        assert_eq!(stale.verdict(&key("1")), Verdict::LeaveOut);
        assert_eq!(stale.verdict(&key("2")), Verdict::Write, "its subtransaction rolled back");
        assert_eq!(stale.verdict(&key("3")), Verdict::Write, "rolled back");
    }

    #[test]
    fn what_a_snapshot_saw_is_forgotten_and_the_rest_kept() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", row("1"));
        watch.committed(200, "public.t", row("2"));
        watch.forget_seen(&snapshot("150:150:"));
        let stale = watch.stale("public.t", &snapshot("50:50:"));
        assert_eq!(stale.verdict(&key("1")), Verdict::Write, "forgotten");
        assert_eq!(stale.verdict(&key("2")), Verdict::LeaveOut);
    }

    #[test]
    fn a_row_an_unseen_update_left_without_its_toasted_value_cannot_be_merged() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", Touch::Row { key: key("1"), complete: false });
        watch.committed(100, "public.t", row("2"));
        assert!(watch.stale("public.t", &snapshot("101:101:")).is_empty(), "seen");
        let stale = watch.stale("public.t", &snapshot("99:99:"));
        assert_eq!(stale.verdict(&key("1")), Verdict::Unmergeable);
        assert_eq!(stale.verdict(&key("2")), Verdict::LeaveOut);
        assert_eq!(stale.verdict(&key("3")), Verdict::Write, "a row the update did not touch");
    }

    #[test]
    fn unwatched_tables_record_nothing() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.unwatch("public.t");
        watch.committed(100, "public.t", row("1"));
        assert!(watch.stale("public.t", &snapshot("50:50:")).is_empty());
    }
}
