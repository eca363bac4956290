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

/// A row's key: its key columns' text values, each with its length in front.
pub type Key = Vec<u8>;

/// Appends one key column's text value to `key`.
pub fn push_key_value(key: &mut Key, value: &[u8]) {
    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
    key.extend_from_slice(value);
}

/// What one table's committed transactions touched.
#[derive(Debug, Default)]
struct Touches {
    keys: HashMap<Key, Vec<u32>>,
    /// The xids of transactions that truncated the table.
    truncates: Vec<u32>,
}

/// A change of a streamed transaction, held until it commits.
#[derive(Debug)]
struct Held {
    subxid: u32,
    table: String,
    /// `None`: a truncate.
    key: Option<Key>,
}

/// Which rows of a chunk the stream has made stale.
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    /// A transaction the chunk's snapshot did not see truncated the table.
    All,
    Keys(HashSet<Key>),
}

impl Stale {
    pub fn contains(&self, key: &Key) -> bool {
        match self {
            Stale::All => true,
            Stale::Keys(keys) => keys.contains(key),
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

    /// The table's copy is done: its changes no longer matter.
    pub fn unwatch(&mut self, table: &str) {
        self.tables.remove(table);
    }

    /// A committed (plain) transaction changed `key` (`None`: truncated the table).
    pub fn committed(&mut self, xid: u32, table: &str, key: Option<Key>) {
        if let Some(touches) = self.tables.get_mut(table) {
            match key {
                Some(key) => touches.keys.entry(key).or_default().push(xid),
                None => touches.truncates.push(xid),
            }
        }
    }

    /// A streamed transaction (top-level `xid`) changed `key` in `subxid`.
    pub fn streamed(&mut self, xid: u32, subxid: u32, table: &str, key: Option<Key>) {
        if self.watches(table) {
            self.streams.entry(xid).or_default().push(Held { subxid, table: table.to_string(), key });
        }
    }

    /// A streamed transaction committed: its changes count, under its top-level xid.
    pub fn stream_committed(&mut self, xid: u32) {
        for held in self.streams.remove(&xid).unwrap_or_default() {
            self.committed(xid, &held.table, held.key);
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
        let Some(touches) = self.tables.get(table) else { return Stale::Keys(HashSet::new()) };
        if touches.truncates.iter().any(|xid| !snapshot.sees(*xid)) {
            return Stale::All;
        }
        Stale::Keys(
            touches
                .keys
                .iter()
                .filter(|(_, xids)| xids.iter().any(|xid| !snapshot.sees(*xid)))
                .map(|(key, _)| key.clone())
                .collect(),
        )
    }

    /// Forgets what `snapshot` saw: no later chunk can need it.
    pub fn forget_seen(&mut self, snapshot: &XidSnapshot) {
        for touches in self.tables.values_mut() {
            touches.truncates.retain(|xid| !snapshot.sees(*xid));
            touches.keys.retain(|_, xids| {
                xids.retain(|xid| !snapshot.sees(*xid));
                !xids.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Key {
        let mut key = Key::new();
        push_key_value(&mut key, value.as_bytes());
        key
    }

    fn snapshot(text: &str) -> XidSnapshot {
        XidSnapshot::parse(text).expect("snapshot")
    }

    #[test]
    fn only_keys_changed_by_transactions_the_chunk_did_not_see_are_stale() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", Some(key("1")));
        watch.committed(105, "public.t", Some(key("2")));
        watch.committed(110, "public.t", Some(key("3")));
        watch.committed(110, "public.other", Some(key("9")));
        // 105 was running and 110 started after: their versions are newer than the chunk's.
        let stale = watch.stale("public.t", &snapshot("105:108:105"));
        assert!(!stale.contains(&key("1")));
        assert!(stale.contains(&key("2")));
        assert!(stale.contains(&key("3")));
        assert!(!watch.stale("public.other", &snapshot("105:108:105")).contains(&key("9")));
    }

    #[test]
    fn a_key_changed_by_a_seen_and_an_unseen_transaction_is_stale() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", Some(key("1")));
        watch.committed(120, "public.t", Some(key("1")));
        assert!(watch.stale("public.t", &snapshot("110:110:")).contains(&key("1")));
    }

    #[test]
    fn an_unseen_truncate_makes_every_row_stale() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", None);
        assert_eq!(watch.stale("public.t", &snapshot("101:101:")), Stale::Keys(HashSet::new()));
        assert_eq!(watch.stale("public.t", &snapshot("99:99:")), Stale::All);
    }

    #[test]
    fn streamed_changes_count_once_committed_and_never_when_rolled_back() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        let later = snapshot("100:100:");
        watch.streamed(200, 200, "public.t", Some(key("1")));
        watch.streamed(200, 201, "public.t", Some(key("2")));
        watch.streamed(300, 300, "public.t", Some(key("3")));
        assert!(!watch.stale("public.t", &later).contains(&key("1")), "not committed yet");
        watch.stream_aborted(200, 201);
        watch.stream_committed(200);
        watch.stream_aborted(300, 300);
        watch.stream_committed(300);
        let stale = watch.stale("public.t", &later);
        assert!(stale.contains(&key("1")));
        assert!(!stale.contains(&key("2")), "its subtransaction rolled back");
        assert!(!stale.contains(&key("3")), "rolled back");
    }

    #[test]
    fn what_a_snapshot_saw_is_forgotten_and_the_rest_kept() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.committed(100, "public.t", Some(key("1")));
        watch.committed(200, "public.t", Some(key("2")));
        watch.forget_seen(&snapshot("150:150:"));
        let stale = watch.stale("public.t", &snapshot("50:50:"));
        assert!(!stale.contains(&key("1")), "forgotten");
        assert!(stale.contains(&key("2")));
    }

    #[test]
    fn unwatched_tables_record_nothing() {
        let mut watch = KeyWatch::new(["public.t".to_string()]);
        watch.unwatch("public.t");
        watch.committed(100, "public.t", Some(key("1")));
        assert!(!watch.stale("public.t", &snapshot("50:50:")).contains(&key("1")));
    }
}
